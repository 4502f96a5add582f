//! The relay: claims due outbox rows, publishes them, and records the outcome.

mod publish_batch;
mod retention;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection};
use smartflow_domain::{OutboundTransport, RetryPolicy};
use smartflow_storage::now_millis;
use smartflow_storage::outbox::{ClaimMode, ClaimRequest, OutboxTable, KEY_SHARDS};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use retention::{InboxRetention, Retention, RetentionReport, DEFAULT_RETENTION};

use crate::health::Transition;
use crate::metrics::{DeadReason, PublishErrorKind, Stage};
use crate::{BusError, Metrics};

/// The share of `claim_timeout` a round may spend waiting for the broker, so that it always
/// settles while the claim is still its own.
const PUBLISH_SHARE: f64 = 0.75;

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
    /// The longest wait between polls while the outbox stays empty and no wake-up arrives.
    /// Rows committed in this process wake the relay at once, and on PostgreSQL so do rows
    /// committed by other processes (`LISTEN`/`NOTIFY`); elsewhere those are found by polling.
    pub poll_interval: Duration,
    /// The first wait after a round that found rows; each empty round doubles it up to
    /// `poll_interval`, so a relay polls often while rows keep coming and seldom while idle.
    pub min_poll_interval: Duration,
    /// How long a claim may be held before another relay may take its rows.
    pub claim_timeout: Duration,
    /// A published row not consumed within this time is published again; `None` never checks
    /// (for routes whose consumers live in another database and cannot mark rows consumed).
    pub republish_after: Option<Duration>,
    /// How often overdue published rows are looked for.
    pub republish_check_interval: Duration,
    /// Topics whose routes use `KeyOrder::Skip`: a row of theirs waiting for a retry does not
    /// hold back the later rows of its key. On every other topic it does (`KeyOrder::Block`).
    pub skip_topics: BTreeSet<String>,
    /// The event types this service's own consumer marks `consumed`. Published rows of any other
    /// type are for other services, whose consumers deduplicate through inboxes in their own
    /// databases and never mark these rows: they end `published`, with no consumption deadline
    /// and no re-sends. `None`: every type is consumed here.
    pub consumed_here: Option<BTreeSet<String>>,
    /// What `settle` does with a failure that counts against a row. The relay reports only the
    /// broker's rejections as such, and those are `dead` at once whatever this says; rows a
    /// consumer sent back follow the consumer's own policy.
    pub retry: RetryPolicy,
    /// While the broker or the database is unavailable the relay pauses as a whole: it waits
    /// `base_delay` doubling up to `max_delay` between probes (`max_retry` is not used: a pause
    /// lasts as long as the outage), and no row's retries are spent.
    pub pause: RetryPolicy,
    /// What the relay deletes once the bus is done with it, and how often (consumed rows after
    /// seven days by default).
    pub retention: Retention,
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
            min_poll_interval: Duration::from_millis(10),
            claim_timeout: Duration::from_secs(60),
            republish_after: Some(Duration::from_secs(15 * 60)),
            republish_check_interval: Duration::from_secs(30),
            consumed_here: None,
            skip_topics: BTreeSet::new(),
            retry: RetryPolicy::default(),
            pause: RetryPolicy {
                base_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(30),
                max_retry: u32::MAX,
            },
            retention: Retention::default(),
        }
    }
}

impl RelayConfig {
    /// Checks the settings together; `delivery_timeout` is the transport's own per-message
    /// bound, which must end before the relay's share of the claim window does.
    pub fn validate(&self, delivery_timeout: Duration) -> Result<(), BusError> {
        self.retry.validated()?;
        self.pause.validated()?;
        self.retention.validate()?;
        if self.min_poll_interval.is_zero() || self.min_poll_interval > self.poll_interval {
            return Err(BusError::Config(
                "the relay's min_poll_interval must be above zero and at most poll_interval".into(),
            ));
        }
        if self.batch_size == 0 || self.workers == 0 {
            return Err(BusError::Config(
                "relay batch_size and workers must be above zero".into(),
            ));
        }
        if self.claim_timeout < Duration::from_secs(1) {
            return Err(BusError::Config(
                "the relay's claim timeout must be at least 1 s".into(),
            ));
        }
        let window = self.publish_window();
        if delivery_timeout >= window {
            return Err(BusError::Config(format!(
                "the producer's message timeout ({} ms) must be below {}% of the relay's claim \
                 timeout ({} ms of {} ms): otherwise a round gives up on messages the producer is \
                 still sending; lower the message timeout or raise the claim timeout",
                delivery_timeout.as_millis(),
                (PUBLISH_SHARE * 100.0) as u32,
                window.as_millis(),
                self.claim_timeout.as_millis()
            )));
        }
        if self.republish_after.is_some_and(|d| d.is_zero()) {
            return Err(BusError::Config(
                "republish_after must be above zero (or None to never re-send)".into(),
            ));
        }
        Ok(())
    }

    /// How long a round waits for the broker's answers.
    fn publish_window(&self) -> Duration {
        self.claim_timeout.mul_f64(PUBLISH_SHARE)
    }
}

/// The pause before listening again after the commit listener failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// The wait after one more empty round: doubled, up to `poll_interval`. A round that finds rows
/// starts it again at `min_poll_interval`.
fn longer_idle_poll(current: Duration, config: &RelayConfig) -> Duration {
    (current * 2).min(config.poll_interval)
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayRound {
    pub claimed: usize,
    /// Rows left for a later round: an earlier row of their key waits for a retry.
    pub held_back: u64,
    pub published: u64,
    pub retrying: u64,
    pub dead: u64,
    /// Rows released untouched because the broker was unavailable.
    pub unavailable: u64,
    /// The broker's reason, when `unavailable > 0`.
    pub broker_error: Option<String>,
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
    /// Shared by the workers: while set, only worker 0 runs rounds (the probes).
    pause: Mutex<Option<Pause>>,
    /// When a round last filled its batch: the relay is saturated, and retention yields.
    last_full_round: Mutex<Option<Instant>>,
    health_name: String,
}

#[derive(Debug, Clone, Copy)]
struct Pause {
    failures: u32,
    until: Instant,
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
        config.validate(transport.delivery_timeout())?;
        let mode = ClaimMode::for_backend(db.get_database_backend());
        let table = OutboxTable::new(outbox_table)?;
        let health_name = format!("relay {}", table.name());
        metrics.health.register(&health_name);
        Ok(Self {
            inner: Arc::new(Inner {
                table,
                db,
                mode,
                transport,
                config,
                wake,
                metrics,
                pause: Mutex::new(None),
                last_full_round: Mutex::new(None),
                health_name,
            }),
        })
    }

    /// One round over every key shard no other round holds: claim, publish concurrently,
    /// settle with one statement per outcome group. Rows the broker was unavailable for are
    /// released untouched and counted in `unavailable`.
    pub async fn run_once(&self) -> Result<RelayRound, BusError> {
        self.round(0, KEY_SHARDS as u64).await
    }

    /// One round of worker `worker`: it takes up to `shards` key shards no other round holds,
    /// starting from its own place in the ring so that the workers of one relay spread over
    /// them, and publishes their rows in id order, so each key's rows reach the producer in the
    /// order they were written, from one round at a time.
    #[tracing::instrument(skip_all, fields(table = %self.inner.table.name(), worker))]
    async fn round(&self, worker: usize, shards: u64) -> Result<RelayRound, BusError> {
        let i = &*self.inner;
        let started = Instant::now();
        let spacing = KEY_SHARDS as usize / i.config.workers.max(1);
        let req = ClaimRequest {
            owner: format!("{}-{worker}", i.config.owner),
            fresh_limit: i.config.batch_size,
            retry_limit: i.config.retry_batch_size,
            hold_for: i.config.claim_timeout,
            now: now_millis(),
            shards,
            first_shard: ((worker * spacing) % KEY_SHARDS as usize) as i16,
            skip_topics: i.config.skip_topics.iter().cloned().collect(),
        };
        let mut claim = i.table.claim(&i.db, i.mode, &req).await?;
        Metrics::add(&i.metrics.held_back, claim.held_back);
        if claim.rows.is_empty() {
            return Ok(RelayRound {
                held_back: claim.held_back,
                ..RelayRound::default()
            });
        }
        let held_back = claim.held_back;
        let claimed = claim.rows.len();
        let rows = std::mem::take(&mut claim.rows);
        // The claim must be settled while it is still ours: past `claim_timeout` another relay
        // may take the rows (lease) or the server ends our session (row locks).
        let (settlement, broker_error, order_breaks) = publish_batch::publish(
            &*i.transport,
            rows,
            &mut claim.rows,
            i.config.publish_window(),
            i.config.consumed_here.as_ref(),
        )
        .await;
        let rejected = settlement.failed.len() as u64;
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
        Metrics::add(&i.metrics.order_breaks, order_breaks);
        Metrics::add(&i.metrics.published, report.published);
        Metrics::add(&i.metrics.publish_retries, report.retrying);
        Metrics::add(&i.metrics.publish_dead, report.dead);
        i.metrics
            .relay_round(i.table.name(), claimed, started.elapsed());
        i.metrics
            .publish_error(PublishErrorKind::Unavailable, report.released);
        i.metrics
            .publish_error(PublishErrorKind::Rejected, rejected);
        i.metrics
            .dead(Stage::Publish, DeadReason::Rejected, report.dead);
        if report.retrying + report.dead > 0 {
            tracing::warn!(
                retrying = report.retrying,
                dead = report.dead,
                "relay could not publish every row"
            );
        }
        Ok(RelayRound {
            claimed,
            held_back,
            published: report.published,
            retrying: report.retrying,
            dead: report.dead,
            unavailable: report.released,
            broker_error,
        })
    }

    /// Checks that the outbox has what the relay needs: the commit cursor's columns
    /// (`smartflow_migrations::add_commit_cursor`). A service starts only if it does.
    pub async fn check_schema(&self) -> Result<(), BusError> {
        let i = &*self.inner;
        Ok(i.table.check_commit_cursor(&i.db).await?)
    }

    /// Sends `dead` rows again, by id (an operator's redrive); returns how many moved.
    pub async fn redrive(&self, ids: &[i64]) -> Result<u64, BusError> {
        let moved = self.inner.table.redrive(&self.inner.db, ids).await?;
        if moved > 0 {
            tracing::info!(moved, "dead rows redriven");
            self.inner.wake.notify_waiters();
        }
        Ok(moved)
    }

    /// Notes that a round filled its batch (see [`saturated_within`](Self::saturated_within)).
    fn note_full_round(&self) {
        *self
            .inner
            .last_full_round
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
    }

    /// Whether a round filled its batch within `window`: the relay has more than it can take.
    fn saturated_within(&self, window: Duration) -> bool {
        self.inner
            .last_full_round
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| at.elapsed() < window)
    }

    /// Whether the relay is paused now because the broker or the database is unavailable.
    pub fn is_paused(&self) -> bool {
        self.pause_state().is_some()
    }

    fn pause_state(&self) -> Option<Pause> {
        *self
            .inner
            .pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Enters (or extends) the pause after an unavailable broker or database, setting when the
    /// next probe is due; logs once per change of state.
    fn paused_by(&self, what: &str, reason: &str) {
        let i = &*self.inner;
        {
            let mut pause = i
                .pause
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let failures = pause.map_or(1, |p| p.failures.saturating_add(1));
            let wait = i.config.pause.delay_after(failures);
            *pause = Some(Pause {
                failures,
                until: Instant::now() + wait,
            });
        }
        let problem = format!("paused: the {what} is unavailable: {reason}");
        if i.metrics.health.fault(&i.health_name, &problem) == Transition::Faulted {
            Metrics::add(&i.metrics.relay_pauses, 1);
            tracing::warn!(
                table = %i.table.name(),
                %what,
                %reason,
                "relay paused: no event's retries are spent while it lasts; probing with backoff"
            );
        }
    }

    /// Leaves the pause after a round that worked; logs once.
    fn resumed(&self) {
        let i = &*self.inner;
        let was = i
            .pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if was.is_some() {
            if let Transition::Recovered(after) = i.metrics.health.recovered(&i.health_name) {
                tracing::warn!(
                    table = %i.table.name(),
                    paused_secs = after.as_secs(),
                    "relay resumed"
                );
            }
        }
    }

    /// Moves overdue `published` rows back to `pending` to be sent again, spending no retry;
    /// returns how many moved.
    pub async fn republish_overdue(&self) -> Result<u64, BusError> {
        let Some(after) = self.inner.config.republish_after else {
            return Ok(0);
        };
        let moved = self
            .inner
            .table
            .requeue_unconsumed(&self.inner.db, now_millis(), after)
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
    /// settles its rows before the loop ends. An unavailable broker or database pauses the
    /// relay (logged once, shown in health) until a probe round works again.
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
        {
            let relay = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { relay.listen_loop(shutdown).await });
        }
        {
            let relay = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { relay.retention_loop(shutdown).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Wakes the workers whenever another process commits a row (PostgreSQL); ends at once on
    /// other backends. A lost connection is listened again after a pause; meanwhile polling
    /// finds the rows.
    async fn listen_loop(&self, shutdown: CancellationToken) {
        let i = &*self.inner;
        loop {
            match i.table.listen(&i.db).await {
                Ok(None) => return,
                Ok(Some(mut listener)) => loop {
                    tokio::select! {
                        heard = listener.next() => match heard {
                            Ok(()) => i.wake.notify_waiters(),
                            Err(e) => {
                                tracing::warn!(error = %e, "lost the commit listener; polling until it is back");
                                break;
                            }
                        },
                        _ = shutdown.cancelled() => return,
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for commits; polling until it can");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(LISTEN_RETRY) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn worker_loop(&self, worker: usize, shutdown: CancellationToken) {
        let i = &*self.inner;
        // Each worker takes its share of the shards a round; shards another relay holds are
        // skipped, and a worker finding none of its own takes what is free.
        let share = (KEY_SHARDS as u64).div_ceil(i.config.workers as u64);
        let mut idle_poll = i.config.min_poll_interval;
        while !shutdown.is_cancelled() {
            // While paused only worker 0 probes; the others wait for the pause to end.
            if let Some(pause) = self.pause_state() {
                let wait = if worker == 0 {
                    pause.until.saturating_duration_since(Instant::now())
                } else {
                    i.config.pause.base_delay
                };
                if !wait.is_zero() || worker != 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            }
            // Registered before the claim, so a commit during an empty round is not missed.
            let notified = i.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.round(worker, share).await {
                Ok(round) if round.unavailable > 0 => {
                    let reason = round.broker_error.as_deref().unwrap_or("no answer");
                    self.paused_by("broker", reason);
                }
                Ok(round) => {
                    self.resumed();
                    if round.claimed > 0 {
                        idle_poll = i.config.min_poll_interval;
                        if round.claimed as u64 >= i.config.batch_size {
                            self.note_full_round();
                            continue;
                        }
                        tokio::task::yield_now().await;
                        continue;
                    }
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(idle_poll) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    idle_poll = longer_idle_poll(idle_poll, &i.config);
                }
                Err(e) => {
                    i.metrics.publish_error(PublishErrorKind::Database, 1);
                    self.paused_by("database", &e.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_is_short_while_rows_come_and_long_while_idle() {
        let config = RelayConfig {
            min_poll_interval: Duration::from_millis(10),
            poll_interval: Duration::from_millis(250),
            ..RelayConfig::default()
        };
        let mut wait = config.min_poll_interval;
        let mut idle = vec![wait.as_millis()];
        for _ in 0..6 {
            wait = longer_idle_poll(wait, &config);
            idle.push(wait.as_millis());
        }
        assert_eq!(idle, [10, 20, 40, 80, 160, 250, 250]);
    }

    #[test]
    fn a_min_poll_above_the_poll_interval_is_refused() {
        let config = RelayConfig {
            min_poll_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(250),
            ..RelayConfig::default()
        };
        assert!(config.validate(Duration::from_secs(5)).is_err());
    }
}
