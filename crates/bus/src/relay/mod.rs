//! The relay: claims due outbox rows, publishes them, and records the outcome.

mod publish_batch;

pub use publish_batch::{EVENT_ID_HEADER, EVENT_TYPE_HEADER, EVENT_VERSION_HEADER};

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use smartflow_domain::{OutboundTransport, RetryPolicy};
use smartflow_storage::now_millis;
use smartflow_storage::outbox::{ClaimMode, ClaimRequest, OutboxTable};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{BusError, Metrics};

/// How a relay works; the defaults suit the embedded setup and a real cluster alike.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Names this relay in leases and logs.
    pub owner: String,
    /// Never-attempted rows claimed per round.
    pub batch_size: u64,
    /// Due retries claimed per round, a separate budget so failing rows never starve new ones.
    pub retry_batch_size: u64,
    /// Rounds run at once; with row locks they never overlap.
    pub workers: usize,
    /// The fallback poll when no wake-up arrives.
    pub poll_interval: Duration,
    /// How long a claim may be held before another relay may take its rows.
    pub claim_timeout: Duration,
    /// A published row not consumed within this time is published again; `None` never checks
    /// (for routes whose consumers live in another database and cannot mark rows consumed).
    pub republish_after: Option<Duration>,
    /// How often overdue published rows are looked for.
    pub republish_check_interval: Duration,
    pub retry: RetryPolicy,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            owner: format!(
                "relay-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
            batch_size: 1000,
            retry_batch_size: 200,
            workers: 2,
            poll_interval: Duration::from_millis(250),
            claim_timeout: Duration::from_secs(60),
            republish_after: Some(Duration::from_secs(15 * 60)),
            republish_check_interval: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayRound {
    pub claimed: usize,
    pub published: u64,
    pub retrying: u64,
    pub dead: u64,
}

/// Moves one service's outbox rows to the broker.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    table: OutboxTable,
    mode: ClaimMode,
    transport: Arc<dyn OutboundTransport>,
    config: RelayConfig,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Relay {
    pub fn new(
        db: DatabaseConnection,
        outbox_table: &str,
        transport: Arc<dyn OutboundTransport>,
        config: RelayConfig,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BusError> {
        config.retry.validated()?;
        if config.batch_size == 0 || config.workers == 0 {
            return Err(BusError::Config(
                "relay batch_size and workers must be above zero".into(),
            ));
        }
        let mode = ClaimMode::for_backend(db.get_database_backend());
        Ok(Self {
            inner: Arc::new(Inner {
                table: OutboxTable::new(outbox_table)?,
                db,
                mode,
                transport,
                config,
                wake,
                metrics,
            }),
        })
    }

    /// One round: claim, publish concurrently, settle with one statement per outcome group.
    #[tracing::instrument(skip_all, fields(table = %self.inner.table.name()))]
    pub async fn run_once(&self) -> Result<RelayRound, BusError> {
        let i = &*self.inner;
        let req = ClaimRequest {
            owner: i.config.owner.clone(),
            fresh_limit: i.config.batch_size,
            retry_limit: i.config.retry_batch_size,
            hold_for: i.config.claim_timeout,
            now: now_millis(),
        };
        let mut claim = i.table.claim(&i.db, i.mode, &req).await?;
        if claim.rows.is_empty() {
            return Ok(RelayRound::default());
        }
        let claimed = claim.rows.len();
        let rows = std::mem::take(&mut claim.rows);
        // The claim must be settled while it is still ours: past `claim_timeout` another relay
        // may take the rows (lease) or the server ends our session (row locks).
        let deadline = i.config.claim_timeout.mul_f32(0.75);
        let settlement =
            publish_batch::publish(&*i.transport, rows, &mut claim.rows, deadline).await;
        let report = i
            .table
            .settle(
                &i.db,
                claim,
                settlement,
                &i.config.retry,
                i.config.republish_after,
            )
            .await?;
        Metrics::add(&i.metrics.published, report.published);
        Metrics::add(&i.metrics.publish_retries, report.retrying);
        Metrics::add(&i.metrics.publish_dead, report.dead);
        if report.retrying + report.dead > 0 {
            tracing::warn!(
                retrying = report.retrying,
                dead = report.dead,
                "relay could not publish every row"
            );
        }
        Ok(RelayRound {
            claimed,
            published: report.published,
            retrying: report.retrying,
            dead: report.dead,
        })
    }

    /// Moves overdue `published` rows back to `pending`; returns how many moved.
    pub async fn republish_overdue(&self) -> Result<u64, BusError> {
        let moved = self
            .inner
            .table
            .requeue_unconsumed(&self.inner.db, now_millis())
            .await?;
        if moved > 0 {
            tracing::warn!(moved, "published rows not consumed in time go out again");
            Metrics::add(&self.inner.metrics.republished_unconsumed, moved);
        }
        Ok(moved)
    }

    /// Sends every `published` row again: call it at start-up when the broker is the in-memory
    /// embedded one, whose messages did not survive the restart. Returns how many rows moved.
    pub async fn republish_all_published(&self) -> Result<u64, BusError> {
        let moved = self
            .inner
            .table
            .requeue_all_published(&self.inner.db)
            .await?;
        if moved > 0 {
            tracing::info!(
                moved,
                "published rows go out again to the new embedded broker"
            );
            Metrics::add(&self.inner.metrics.republished_unconsumed, moved);
        }
        Ok(moved)
    }

    /// Runs `workers` round loops until `shutdown`; a round under way when it fires finishes and
    /// settles its rows before the loop ends. Database or broker failures are logged and retried.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..self.inner.config.workers {
            let relay = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { relay.worker_loop(worker, shutdown).await });
        }
        if self.inner.config.republish_after.is_some() {
            let relay = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { relay.republish_loop(shutdown).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn worker_loop(&self, worker: usize, shutdown: CancellationToken) {
        let i = &*self.inner;
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            // Registered before the claim, so a commit during an empty round is not missed.
            let notified = i.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.run_once().await {
                Ok(round) => {
                    failures = 0;
                    if round.claimed as u64 >= i.config.batch_size {
                        continue;
                    }
                    if round.claimed > 0 {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(i.config.poll_interval) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = i
                        .config
                        .retry
                        .delay_after(failures)
                        .min(Duration::from_secs(5));
                    tracing::error!(worker, error = %e, retry_in_ms = wait.as_millis() as u64, "relay round failed");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
        tracing::debug!(worker, "relay worker stopped");
    }

    async fn republish_loop(&self, shutdown: CancellationToken) {
        let every = self.inner.config.republish_check_interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.republish_overdue().await {
                tracing::error!(error = %e, "checking for unconsumed published rows failed");
            }
        }
    }
}
