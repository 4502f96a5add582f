//! Retention: the relay deletes, in bounded batches, what the bus is done with once it is old
//! enough: its outbox's consumed (and handed-off) rows, and the inbox entries of this service's
//! consumers.

use std::collections::BTreeMap;
use std::time::Duration;

use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::inbox_admin::InboxFilter;
use smartflow_storage::outbox::Topics;

use super::Relay;
use smartflow_storage::now_millis;
use smartflow_storage::outbox::MAX_BATCH;
use smartflow_storage::StorageError;
use tokio::time::Instant;

use crate::{BusError, Metrics};

/// What the relay deletes, and how often it looks.
#[derive(Debug, Clone)]
pub struct Retention {
    /// How long rows the bus is done with (`consumed`, or `published` to other services'
    /// consumers with no deadline) stay in the outbox; `None` keeps them. `pending`, `dead` and
    /// `stored` rows are never deleted by retention (an operator purges those).
    pub outbox: Option<Duration>,
    /// Topics whose routes keep their rows for a time of their own (`ServiceRoute::retention`).
    pub outbox_topics: BTreeMap<String, Duration>,
    /// Inbox entries of this service's consumers, deleted once handled longer ago than their
    /// `keep` (`dead` entries stay for an operator). Keep them at least as long as the topics
    /// they dedupe keep their messages, or a redelivery after that would apply an event again.
    pub inboxes: Vec<InboxRetention>,
    /// How often the relay deletes what is due.
    pub interval: Duration,
    /// Rows per delete statement; each statement is short and on its own.
    pub batch: u64,
    /// While the relay is saturated (a round filled its batch within the last second), the
    /// share of the time retention may spend deleting: after a batch that took `t` it waits
    /// `t * (1 - share) / share`, so it takes at most about this share of the database from the
    /// relay, and catches up once the relay has room. 1.0: never wait.
    pub busy_share: f64,
}

/// The handled entries of one consumer in one inbox table, kept `keep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRetention {
    pub table: InboxTable,
    pub consumer: String,
    pub keep: Duration,
}

/// Seven days: Kafka's default topic retention, so an inbox entry outlives every redelivery
/// of a topic kept as long.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for Retention {
    fn default() -> Self {
        Self {
            outbox: Some(DEFAULT_RETENTION),
            outbox_topics: BTreeMap::new(),
            inboxes: Vec::new(),
            interval: Duration::from_secs(60),
            batch: 1000,
            busy_share: 0.1,
        }
    }
}

impl Retention {
    pub(super) fn validate(&self) -> Result<(), BusError> {
        if self.interval.is_zero() || self.batch == 0 {
            return Err(BusError::Config(
                "the retention's interval and batch must be above zero".into(),
            ));
        }
        if !(self.busy_share > 0.0 && self.busy_share <= 1.0) {
            return Err(BusError::Config(format!(
                "the retention's busy_share must be above 0 and at most 1, not {}",
                self.busy_share
            )));
        }
        Ok(())
    }

    fn runs(&self) -> bool {
        self.outbox.is_some() || !self.outbox_topics.is_empty() || !self.inboxes.is_empty()
    }
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub outbox_rows: u64,
    pub inbox_rows: u64,
}

fn cutoff(now: i64, keep: Duration) -> i64 {
    now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
}

/// How long a full round keeps the relay counted as saturated.
const BUSY_FOR: Duration = Duration::from_secs(1);

impl Relay {
    /// One retention pass: deletes every row that is due now, in batches of `Retention::batch`,
    /// paced by `Retention::busy_share` while the relay is saturated.
    pub async fn retain_once(&self) -> Result<RetentionReport, BusError> {
        let i = &*self.inner;
        let r = &i.config.retention;
        let now = now_millis();
        let mut report = RetentionReport::default();
        for (topic, keep) in &r.outbox_topics {
            let before = cutoff(now, *keep);
            report.outbox_rows += self
                .paced(i.table.name(), || {
                    i.table
                        .delete_done(&i.db, Topics::Only(topic), before, r.batch)
                })
                .await?;
        }
        if let Some(keep) = r.outbox {
            let own: Vec<String> = r.outbox_topics.keys().cloned().collect();
            let before = cutoff(now, keep);
            report.outbox_rows += self
                .paced(i.table.name(), || {
                    i.table
                        .delete_done(&i.db, Topics::AllBut(&own), before, r.batch)
                })
                .await?;
        }
        for inbox in &r.inboxes {
            let filter = InboxFilter {
                status: Some(InboxStatus::Handled),
                consumer: Some(inbox.consumer.clone()),
                handled_before: Some(cutoff(now, inbox.keep)),
                ..InboxFilter::default()
            };
            report.inbox_rows += self
                .paced(inbox.table.name(), || {
                    inbox.table.purge_one_batch(&i.db, &filter, r.batch)
                })
                .await?;
        }
        if report.outbox_rows + report.inbox_rows > 0 {
            tracing::debug!(
                outbox_rows = report.outbox_rows,
                inbox_rows = report.inbox_rows,
                "retention deleted what the bus is done with"
            );
        }
        Ok(report)
    }

    /// Runs `batch` (one delete batch: rows found, rows deleted) until it finds fewer rows than
    /// a batch, waiting after each one while the relay is saturated; returns the rows deleted
    /// (counted per `table` in the metrics).
    async fn paced<F, Fut>(&self, table: &str, mut batch: F) -> Result<u64, BusError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(u64, u64), StorageError>>,
    {
        let i = &*self.inner;
        let r = &i.config.retention;
        let mut deleted = 0;
        loop {
            let started = Instant::now();
            let (found, went) = batch().await?;
            deleted += went;
            Metrics::add(&i.metrics.retention_deleted, went);
            i.metrics.retention_deleted(table, went);
            if found < r.batch.clamp(1, MAX_BATCH) {
                return Ok(deleted);
            }
            if self.saturated_within(BUSY_FOR) && r.busy_share < 1.0 {
                let took = started.elapsed().as_secs_f64();
                let wait = took * (1.0 - r.busy_share) / r.busy_share;
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            }
        }
    }

    pub(super) async fn retention_loop(&self, shutdown: tokio_util::sync::CancellationToken) {
        let retention = &self.inner.config.retention;
        if !retention.runs() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(retention.interval) => {}
                _ = shutdown.cancelled() => return,
            }
            let pass = tokio::select! {
                pass = self.retain_once() => pass,
                _ = shutdown.cancelled() => return,
            };
            if let Err(e) = pass {
                tracing::warn!(error = %e, "retention could not delete what is due; trying again later");
            }
        }
    }
}
