//! The consumer runner: receives envelopes of one consumer group and applies each exactly once.

mod decorate;
mod dispatch;
pub mod subscription;
pub mod wake_on_commit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::DatabaseConnection;
use smartflow_domain::{
    Delivery, Envelope, InboundTransport, IncomingMessage, KeyOrder, RetryPolicy, ServiceRoute,
    TransportError, EVENT_ID_HEADER,
};
use smartflow_storage::inbox::InboxTable;
use smartflow_storage::outbox::OutboxTable;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use dispatch::BatchReport;
pub use subscription::SubscribedEvents;
pub use wake_on_commit::WakeOnCommit;

use crate::health::Transition;
use crate::{BusError, HandlerRegistry, Metrics};

/// How the runner knows an event was already applied.
#[derive(Debug, Clone)]
pub enum Dedupe {
    /// The consumer of a service's own topic. Events from the service's own outbox (the
    /// envelope's source is this service, or names none) move their outbox row to `consumed` in
    /// the handler's transaction; a retryable failure is tried again in place (the route's
    /// `KeyOrder::Block`) or sends the row back to `pending` (`KeyOrder::Skip`), and a permanent
    /// one makes it `dead`.
    /// Events another service published onto the topic (a request addressed to this service)
    /// are deduplicated through this service's inbox under the service's name, as in `Inbox`.
    Owner {
        outbox: OutboxTable,
        service: String,
        inbox: InboxTable,
    },
    /// A consumer of another service's events: an inbox row `(consumer, event_id)` is inserted in
    /// the handler's transaction. A retryable failure holds the partition at that event and tries
    /// it again with backoff (outside any transaction) until `retry` runs out; a permanent one,
    /// or running out, is recorded in the inbox as `dead` with its reason.
    Inbox { consumer: String, inbox: InboxTable },
}

/// Where one event's dedupe mark goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark<'a> {
    Outbox(&'a OutboxTable),
    Inbox {
        table: &'a InboxTable,
        consumer: &'a str,
    },
}

impl Dedupe {
    /// The mark for an event published by `source` (`None`: the envelope does not say, as with
    /// rows written before envelopes carried their source).
    pub(crate) fn mark_for(&self, source: Option<&str>) -> Mark<'_> {
        match self {
            Dedupe::Owner {
                outbox, service, ..
            } if source.is_none_or(|s| s == service) => Mark::Outbox(outbox),
            _ => {
                let (table, consumer) = self.inbox();
                Mark::Inbox { table, consumer }
            }
        }
    }

    /// The inbox table and the consumer name its rows are kept under.
    pub(crate) fn inbox(&self) -> (&InboxTable, &str) {
        match self {
            Dedupe::Owner { service, inbox, .. } => (inbox, service),
            Dedupe::Inbox { consumer, inbox } => (inbox, consumer),
        }
    }

    fn set_inbox(&mut self, table: InboxTable) {
        match self {
            Dedupe::Owner { inbox, .. } | Dedupe::Inbox { inbox, .. } => *inbox = table,
        }
    }
}

/// How the runner batches and retries.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Messages applied in one database transaction (each in its own savepoint).
    pub batch_max: usize,
    /// How long to wait for more messages once one has arrived.
    pub linger: Duration,
    /// How long one poll waits for a first message; the loop polls at least this often, which
    /// keeps the group membership alive and the health check's poll time fresh.
    pub poll_wait: Duration,
    /// Retries of a retryable handler error: attempts in place (the partition held at the event)
    /// for inbox events and under `KeyOrder::Block`, rows sent back to `pending` under
    /// `KeyOrder::Skip`.
    pub retry: RetryPolicy,
    /// Backoff while a batch cannot be applied at all (database down, lock waits, the broker
    /// refusing commits): the partitions are paused and polled meanwhile, so the consumer stays
    /// in its group, and no event's retries are spent. `max_retry` is not used.
    pub stall: RetryPolicy,
    /// Try each batch whole first (set-based marks, `handle_batch`), one event at a time only
    /// when that fails (on by default). Off, every event is applied on its own, four statements
    /// each (savepoint, mark, handler, release): for handlers whose `handle_batch` must not be
    /// used.
    pub whole_batches: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            batch_max: 500,
            linger: Duration::from_millis(2),
            poll_wait: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            stall: RetryPolicy {
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(10),
                max_retry: u32::MAX,
            },
            whole_batches: true,
        }
    }
}

impl ConsumerConfig {
    /// Checks the settings; the runner refuses a configuration that fails this.
    pub fn validate(&self) -> Result<(), BusError> {
        self.retry.validated()?;
        self.stall.validated()?;
        if self.batch_max == 0 {
            return Err(BusError::Config(
                "the consumer's batch size must be above zero".into(),
            ));
        }
        if self.poll_wait.is_zero() || self.stall.max_delay > MAX_POLL_GAP {
            return Err(BusError::Config(format!(
                "the consumer must poll at least every {} s: poll_wait must be above zero and the \
                 stall backoff's max_delay at most that",
                MAX_POLL_GAP.as_secs()
            )));
        }
        Ok(())
    }
}

/// The pause after a receive error before polling again.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The longest the loop may go without polling; well inside Kafka's `max.poll.interval.ms`
/// (5 min by default), past which a member is thrown out of its group.
const MAX_POLL_GAP: Duration = Duration::from_secs(60);

/// Runs one consumer group's loop.
pub struct ConsumerRunner {
    pub(crate) db: DatabaseConnection,
    pub(crate) transport: Arc<dyn InboundTransport>,
    pub(crate) handlers: Arc<HandlerRegistry>,
    pub(crate) dedupe: Dedupe,
    pub(crate) config: ConsumerConfig,
    pub(crate) metrics: Arc<Metrics>,
    /// The route's ordering policy: under `Block` a retryable handler error of the service's own
    /// event holds the partition at the event (later events of its key wait), under `Skip` it
    /// sends the row back to `pending` and the later events go on. Inbox events always hold.
    pub(crate) key_order: KeyOrder,
    /// Failed attempts of the event the loop is holding a partition at.
    pub(crate) attempts: Mutex<HashMap<String, u32>>,
    health_name: String,
}

impl ConsumerRunner {
    /// The consumer of a service's own route: marks the service's outbox rows `consumed`, and
    /// deduplicates what other services published onto the route's topic through the service's
    /// inbox (see [`Dedupe::Owner`]). The consumer of a `Delivery::Direct` route, whose events
    /// have no row, deduplicates them all through the inbox under the service's name.
    pub fn for_route(
        db: DatabaseConnection,
        route: &ServiceRoute,
        handlers: HandlerRegistry,
        transport: Arc<dyn InboundTransport>,
        config: ConsumerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BusError> {
        let dedupe = match route.delivery {
            // A direct route's events have no outbox row to mark, its own included: every
            // event of its topic is deduplicated through the inbox.
            Delivery::Direct => Dedupe::Inbox {
                consumer: route.service.clone(),
                inbox: InboxTable::default(),
            },
            Delivery::Outbox | Delivery::StoreOnly => Dedupe::Owner {
                outbox: OutboxTable::new(&route.outbox_table)?,
                service: route.service.clone(),
                inbox: InboxTable::default(),
            },
        };
        let mut runner = Self::new(
            db,
            format!("consumer {}", route.consumer_group),
            dedupe,
            handlers,
            transport,
            config,
            metrics,
        )?;
        runner.key_order = route.key_order;
        Ok(runner)
    }

    /// A consumer of another service's events, deduplicating through its own inbox.
    pub fn for_subscriber(
        db: DatabaseConnection,
        consumer: &str,
        handlers: HandlerRegistry,
        transport: Arc<dyn InboundTransport>,
        config: ConsumerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BusError> {
        if consumer.is_empty() {
            return Err(BusError::Config("an inbox consumer needs a name".into()));
        }
        let dedupe = Dedupe::Inbox {
            consumer: consumer.to_owned(),
            inbox: InboxTable::default(),
        };
        Self::new(
            db,
            format!("consumer {consumer}"),
            dedupe,
            handlers,
            transport,
            config,
            metrics,
        )
    }

    fn new(
        db: DatabaseConnection,
        health_name: String,
        dedupe: Dedupe,
        handlers: HandlerRegistry,
        transport: Arc<dyn InboundTransport>,
        config: ConsumerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BusError> {
        config.validate()?;
        metrics.health.register_consumer(&health_name);
        Ok(Self {
            db,
            transport,
            handlers: Arc::new(handlers),
            dedupe,
            config,
            metrics,
            key_order: KeyOrder::Block,
            attempts: Mutex::new(HashMap::new()),
            health_name,
        })
    }

    /// Deduplicates through the inbox table `table` instead of the default `inbox` (a service
    /// that created its inbox under its own name with `create_inbox_table`).
    pub fn with_inbox(mut self, table: InboxTable) -> Self {
        self.dedupe.set_inbox(table);
        self
    }

    /// Switches on the event-type filter: only messages of `event_types` (and any without an
    /// event-type header, so they are reported) reach the handlers; the others are skipped and
    /// their offsets committed once no subscribed message before them is still unapplied. See
    /// [`SubscribedEvents`].
    pub fn only_event_types<'a>(mut self, event_types: impl IntoIterator<Item = &'a str>) -> Self {
        self.transport = Arc::new(SubscribedEvents::new(self.transport, event_types));
        self
    }

    /// Fires `signal` after every offset commit, that is after each batch's transaction has
    /// committed, so a worker acting on what the handlers stored need not wait for its next
    /// scan. See [`WakeOnCommit`].
    pub fn wake_on_commit(mut self, signal: Arc<Notify>) -> Self {
        self.transport = Arc::new(WakeOnCommit::new(self.transport, signal));
        self
    }

    /// Receives and applies batches until `shutdown`. A batch under way when it fires is
    /// finished, committed and its offsets committed before the loop ends.
    ///
    /// A batch that cannot be applied (database down, lock waits, commit refused) is held: the
    /// partitions are paused, the loop keeps polling (so the member stays in its group and its
    /// health stays current) and applies the held batch again with backoff, until it works;
    /// messages of partitions lost meanwhile are dropped (their new owner redelivers them).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut held: Vec<IncomingMessage> = Vec::new();
        let mut stalls = 0u32;
        let mut receive_failing = false;
        while !shutdown.is_cancelled() {
            if held.is_empty() {
                if stalls > 0 {
                    stalls = 0;
                    self.resume().await;
                }
                let batch = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    b = self.poll(self.config.poll_wait) => b,
                };
                match batch {
                    Ok(batch) => {
                        if receive_failing {
                            receive_failing = false;
                            self.recovered();
                        }
                        held = batch;
                    }
                    Err(e) => {
                        // librdkafka reports broker trouble as error events on the consumer's
                        // queue, several per outage and often long after it ended. Each one is
                        // news, not a failed poll: note it and poll again at once (a short pause
                        // only keeps a persistent error from spinning), or a backlog of stale
                        // errors would delay the recovery by a backoff each.
                        receive_failing = true;
                        self.stalled("the broker is unavailable", &e.to_string());
                        tokio::select! {
                            _ = tokio::time::sleep(RECEIVE_ERROR_PAUSE) => {}
                            _ = shutdown.cancelled() => break,
                        }
                    }
                }
                if held.is_empty() {
                    continue;
                }
            }
            match self.apply_and_commit(&held).await {
                // The loop's next turn resumes the partitions if they were paused.
                Ok(done) if done == held.len() => held.clear(),
                Ok(done) => {
                    // A retryable handler error tried in place holds the partition at that event.
                    held.drain(..done);
                    let failures = self.head_attempts(&held);
                    if stalls == 0 {
                        self.pause().await;
                    }
                    stalls = stalls.max(1);
                    let wait = self.config.retry.delay_after(failures);
                    if !self.wait_polling(&mut held, wait, &shutdown).await {
                        break;
                    }
                }
                Err(e) => {
                    stalls = stalls.saturating_add(1);
                    if stalls == 1 {
                        self.pause().await;
                    }
                    self.stalled("cannot apply a batch", &e.to_string());
                    let wait = self.config.stall.delay_after(stalls);
                    if !self.wait_polling(&mut held, wait, &shutdown).await {
                        break;
                    }
                }
            }
        }
        tracing::debug!("consumer stopped");
    }

    /// One poll, recorded for the health check.
    async fn poll(&self, wait: Duration) -> Result<Vec<IncomingMessage>, TransportError> {
        let batch = self
            .transport
            .recv_batch(self.config.batch_max, wait, self.config.linger)
            .await;
        self.metrics
            .health
            .polled(&self.health_name, self.transport.assigned_partitions());
        self.metrics
            .consumer_lag(self.name(), &self.transport.lag());
        batch
    }

    /// The consumer group's (or inbox consumer's) name, as the metrics label it.
    fn name(&self) -> &str {
        self.health_name
            .strip_prefix("consumer ")
            .unwrap_or(&self.health_name)
    }

    /// Applies the batch and commits its offsets. Returns how many messages (from the front)
    /// are done; fewer than all only in inbox mode, when a retryable handler error stopped it.
    async fn apply_and_commit(&self, batch: &[IncomingMessage]) -> Result<usize, BusError> {
        let report = self.process_batch(batch).await?;
        let done = report.stopped_at.unwrap_or(batch.len());
        self.transport.commit(&batch[..done]).await?;
        let committed_at = chrono::Utc::now();
        self.metrics.end_to_end(
            self.name(),
            batch[..done]
                .iter()
                .filter_map(|m| Envelope::occurred_at_of(m.payload.as_deref()?))
                .filter_map(|occurred| (committed_at - occurred).to_std().ok()),
        );
        if report.stopped_at.is_none() {
            self.recovered();
        }
        Ok(done)
    }

    /// Failed attempts so far of the event at the head of the held batch (inbox mode).
    fn head_attempts(&self, held: &[IncomingMessage]) -> u32 {
        let Some(event_id) = held.first().and_then(|m| m.header(EVENT_ID_HEADER)) else {
            return 1;
        };
        self.attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(event_id)
            .copied()
            .unwrap_or(1)
    }

    /// Waits `wait` while polling, so the group membership and the health check stay alive.
    /// Messages that arrive anyway (from partitions assigned meanwhile) join the held batch, and
    /// those of partitions this member no longer owns leave it. False when stopped.
    async fn wait_polling(
        &self,
        held: &mut Vec<IncomingMessage>,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> bool {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let polled = tokio::select! {
                _ = shutdown.cancelled() => return false,
                b = self.poll(left.min(self.config.poll_wait)) => b,
            };
            if let Ok(more) = polled {
                if !more.is_empty() {
                    held.extend(more);
                    // New partitions are not paused yet.
                    self.pause().await;
                }
            }
        }
        held.retain(|m| self.transport.owns(&m.topic, m.partition));
        true
    }

    async fn pause(&self) {
        tracing::debug!("pausing the assigned partitions");
        if let Err(e) = self.transport.pause().await {
            tracing::warn!(error = %e, "pausing the consumer's partitions failed");
        }
    }

    async fn resume(&self) {
        tracing::debug!(
            assigned = self.transport.assigned_partitions(),
            "resuming the assigned partitions"
        );
        if let Err(e) = self.transport.resume().await {
            tracing::warn!(error = %e, "resuming the consumer's partitions failed");
        }
    }

    fn stalled(&self, what: &str, reason: &str) {
        let problem = format!("{what}: {reason}");
        if self.metrics.health.fault(&self.health_name, &problem) == Transition::Faulted {
            Metrics::add(&self.metrics.consumer_stalls, 1);
            tracing::warn!(consumer = %self.health_name, %what, %reason,
                "consumer stalled; it keeps its partitions and polls, and tries again with backoff");
        }
    }

    fn recovered(&self) {
        if let Transition::Recovered(after) = self.metrics.health.recovered(&self.health_name) {
            tracing::warn!(consumer = %self.health_name, stalled_secs = after.as_secs(), "consumer resumed");
        }
    }
}
