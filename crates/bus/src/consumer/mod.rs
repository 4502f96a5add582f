//! The consumer runner: receives envelopes of one consumer group and applies each exactly once.

mod dispatch;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use smartflow_domain::{InboundTransport, IncomingMessage, RetryPolicy, ServiceRoute};
use smartflow_storage::outbox::OutboxTable;
use tokio_util::sync::CancellationToken;

pub use dispatch::BatchReport;

use crate::{BusError, HandlerRegistry, Metrics};

/// How the runner knows an event was already applied.
#[derive(Debug, Clone)]
pub enum Dedupe {
    /// The owning service's consumer: the outbox row itself moves to `consumed` in the handler's
    /// transaction, and failures send it back to `pending` or to `dead`.
    OutboxMark(OutboxTable),
    /// A consumer of another service's events: an inbox row `(consumer, event_id)` is inserted in
    /// the handler's transaction. Retryable failures are retried in place; a permanent one is
    /// recorded in the inbox as `dead` with its reason.
    Inbox { consumer: String },
}

/// How the runner batches and retries.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Messages applied in one database transaction (each in its own savepoint).
    pub batch_max: usize,
    /// How long to wait for more messages once one has arrived.
    pub linger: Duration,
    /// Backoff for rows sent back to `pending` by a retryable handler error.
    pub retry: RetryPolicy,
    /// Attempts of a retryable handler error in inbox mode before the event is `dead`.
    pub inbox_attempts: u32,
    /// Backoff between in-place attempts in inbox mode and after database failures.
    pub inbox_retry: RetryPolicy,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            batch_max: 500,
            linger: Duration::from_millis(2),
            retry: RetryPolicy::default(),
            inbox_attempts: 5,
            inbox_retry: RetryPolicy {
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(5),
                max_retry: 5,
            },
        }
    }
}

/// Runs one consumer group's loop.
pub struct ConsumerRunner {
    pub(crate) db: DatabaseConnection,
    pub(crate) transport: Arc<dyn InboundTransport>,
    pub(crate) handlers: Arc<HandlerRegistry>,
    pub(crate) dedupe: Dedupe,
    pub(crate) config: ConsumerConfig,
    pub(crate) metrics: Arc<Metrics>,
}

impl ConsumerRunner {
    /// The consumer of a service's own route: marks the service's outbox rows `consumed`.
    pub fn for_route(
        db: DatabaseConnection,
        route: &ServiceRoute,
        handlers: HandlerRegistry,
        transport: Arc<dyn InboundTransport>,
        config: ConsumerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BusError> {
        config.retry.validated()?;
        Ok(Self {
            dedupe: Dedupe::OutboxMark(OutboxTable::new(&route.outbox_table)?),
            db,
            transport,
            handlers: Arc::new(handlers),
            config,
            metrics,
        })
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
        config.inbox_retry.validated()?;
        if consumer.is_empty() {
            return Err(BusError::Config("an inbox consumer needs a name".into()));
        }
        Ok(Self {
            dedupe: Dedupe::Inbox {
                consumer: consumer.to_owned(),
            },
            db,
            transport,
            handlers: Arc::new(handlers),
            config,
            metrics,
        })
    }

    /// Receives and applies batches until `shutdown`. A batch under way when it fires is
    /// finished, committed and its offsets committed before the loop ends. A batch whose
    /// database transaction fails is applied again (nothing is acknowledged before it commits).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                b = self.transport.recv_batch(self.config.batch_max, self.config.linger) => b,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = self.config.inbox_retry.delay_after(failures);
                    tracing::warn!(error = %e, "receiving from the broker failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            failures = 0;
            if !self.apply_until_done(&batch, &shutdown).await {
                break;
            }
        }
        tracing::debug!("consumer stopped");
    }

    /// Applies a batch and commits its offsets, retrying on database or commit failures until it
    /// succeeds or `shutdown` fires. Returns false when stopped before the batch was done.
    async fn apply_until_done(
        &self,
        batch: &[IncomingMessage],
        shutdown: &CancellationToken,
    ) -> bool {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match self.process_batch(batch).await {
                Ok(_) => self.transport.commit(batch).await.map_err(BusError::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return true,
                Err(e) => {
                    let wait = self.config.inbox_retry.delay_after(attempt);
                    tracing::error!(error = %e, attempt, "applying a batch failed; it will be applied again");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return false,
                    }
                }
            }
        }
    }
}
