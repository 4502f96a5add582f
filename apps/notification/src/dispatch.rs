//! The dispatcher: claims recorded notifications and calls their provider, outside any database
//! transaction. Two entry points share one attempt routine:
//!
//! - [`Dispatcher::send_pending`] runs when the consumer has committed a batch: it claims the
//!   new `pending` records (`pending -> sending`) and sends them.
//! - [`Dispatcher::retry_round`] is the retry scanner: `failed` records whose `next_retry_at` is
//!   due, `sending` records whose lease ran out (their sender died mid-call), and `pending`
//!   records older than a grace period (their process died between commit and claim).
//!
//! Every claim is a conditional update that succeeds only if exactly one row changed, so two
//! dispatchers (in this process or others) never send one record twice in a round. The lease
//! outlives the provider's timeout, and only the lease holder may record the result.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use sea_orm::DatabaseConnection;
use smartflow_domain::RetryPolicy;
use smartflow_storage::notification::{self, DeliveryOutcome, NotificationRecord};
use smartflow_storage::{now_millis, StorageError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::events::Channel;
use crate::handler::StoredNotification;
use crate::provider::{ProviderError, Providers};

/// How the dispatcher works.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// How long a claim holds a record. Must outlive the provider's timeout: a sender still
    /// waiting on the provider when its lease ends may see another sender take the record over.
    pub lease: Duration,
    /// Records taken per lane and round.
    pub batch_size: u64,
    /// Provider calls under way at once.
    pub concurrency: usize,
    /// Backoff between attempts (`delay_after(attempts)`); each record's own `max_attempts`
    /// decides when it is `dead`.
    pub retry: RetryPolicy,
    /// How often the retry scanner runs (and once at start-up).
    pub scan_interval: Duration,
    /// `pending` records younger than this are left to the sender woken by their commit.
    pub pending_grace: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            batch_size: 100,
            concurrency: 8,
            retry: RetryPolicy {
                base_delay: Duration::from_secs(5),
                max_delay: Duration::from_secs(600),
                max_retry: 5,
            },
            scan_interval: Duration::from_secs(1),
            pending_grace: Duration::from_secs(5),
        }
    }
}

/// What a round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Records this dispatcher claimed and called the provider for.
    pub claimed: u64,
    /// Records another dispatcher claimed first (or that changed since they were read).
    pub lost: u64,
    pub sent: u64,
    pub failed: u64,
    pub dead: u64,
    /// Attempts whose lease was taken over before their result could be recorded.
    pub lease_lost: u64,
    /// `sending` records buried because their last allowed attempt's sender died.
    pub buried: u64,
}

impl RoundReport {
    fn absorb(&mut self, other: RoundReport) {
        self.claimed += other.claimed;
        self.lost += other.lost;
        self.sent += other.sent;
        self.failed += other.failed;
        self.dead += other.dead;
        self.lease_lost += other.lease_lost;
        self.buried += other.buried;
    }
}

/// A configuration the dispatcher cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid dispatcher configuration: {0}")]
pub struct DispatchConfigError(pub String);

/// Sends recorded notifications. Cheap to clone; clones share the wake-up signal.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    providers: Providers,
    config: DispatchConfig,
    wake: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(
        db: DatabaseConnection,
        providers: Providers,
        config: DispatchConfig,
    ) -> Result<Self, DispatchConfigError> {
        config
            .retry
            .validated()
            .map_err(|e| DispatchConfigError(e.to_string()))?;
        if config.lease.is_zero() || config.batch_size == 0 || config.concurrency == 0 {
            return Err(DispatchConfigError(
                "lease, batch_size and concurrency must be above zero".to_owned(),
            ));
        }
        if config.scan_interval.is_zero() {
            return Err(DispatchConfigError(
                "scan_interval must be above zero".to_owned(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                providers,
                config,
                wake: Arc::new(Notify::new()),
            }),
        })
    }

    /// The signal that makes [`run`](Self::run) send pending records now; the consumer fires
    /// it after each committed batch. A signal given while a round runs is kept for the next.
    pub fn wake_signal(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    /// Claims and sends the `pending` records, oldest first, up to one batch.
    #[tracing::instrument(skip_all)]
    pub async fn send_pending(&self) -> Result<RoundReport, StorageError> {
        let i = &*self.inner;
        let seen = notification::pending(&i.db, None, i.config.batch_size).await?;
        self.attempt_all(seen).await
    }

    /// One round of the retry scanner: buries `sending` records whose last allowed attempt
    /// died, then claims and sends due `failed` records, `sending` records with an expired lease
    /// and `pending` records older than the grace period.
    #[tracing::instrument(skip_all)]
    pub async fn retry_round(&self) -> Result<RoundReport, StorageError> {
        let i = &*self.inner;
        let now = now_millis();
        let buried = notification::bury_exhausted_leases(&i.db, now).await?;
        if buried > 0 {
            tracing::error!(
                buried,
                "notifications are dead: their last attempt's sender stopped"
            );
        }
        let mut seen = notification::due_for_retry(&i.db, now, i.config.batch_size).await?;
        let grace = millis(i.config.pending_grace);
        seen.extend(
            notification::pending(&i.db, Some(now.saturating_sub(grace)), i.config.batch_size)
                .await?,
        );
        let mut report = self.attempt_all(seen).await?;
        report.buried = buried;
        Ok(report)
    }

    /// Runs until `shutdown`: the retry scanner at start-up and every `scan_interval`, and
    /// [`send_pending`](Self::send_pending) whenever woken. A round under way when `shutdown`
    /// fires is finished (each provider call is bounded by its timeout).
    pub async fn run(self, shutdown: CancellationToken) {
        let i = &*self.inner;
        let mut next_scan = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                match self.retry_round().await {
                    Ok(report) => log_round("retry scan", &report),
                    Err(e) => {
                        tracing::error!(error = %e, "the retry scan failed; it runs again at the next interval")
                    }
                }
                next_scan = Instant::now() + i.config.scan_interval;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = i.wake.notified() => {
                    match self.send_pending().await {
                        Ok(report) => {
                            log_round("send", &report);
                            if report.claimed + report.lost >= i.config.batch_size {
                                // A full batch: more may be waiting.
                                i.wake.notify_one();
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "sending pending notifications failed; the retry scan takes them over"),
                    }
                }
                _ = tokio::time::sleep_until(next_scan) => {}
            }
        }
        tracing::debug!("dispatcher stopped");
    }

    /// Attempts every record at once, up to `concurrency`; each attempt claims its record right
    /// before calling the provider, so a lease only has to outlive one call. Every attempt runs
    /// to its end even if another fails; the first database error is returned.
    async fn attempt_all(
        &self,
        seen: Vec<NotificationRecord>,
    ) -> Result<RoundReport, StorageError> {
        let results: Vec<Result<RoundReport, StorageError>> = futures::stream::iter(seen)
            .map(|record| self.attempt(record))
            .buffer_unordered(self.inner.config.concurrency)
            .collect()
            .await;
        let mut report = RoundReport::default();
        let mut first_error = None;
        for result in results {
            match result {
                Ok(one) => report.absorb(one),
                Err(e) => {
                    tracing::error!(error = %e, "a notification attempt could not be recorded");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    async fn attempt(&self, seen: NotificationRecord) -> Result<RoundReport, StorageError> {
        let i = &*self.inner;
        let mut report = RoundReport::default();
        let now = now_millis();
        let lease_until = now.saturating_add(millis(i.config.lease));
        let Some(claimed) = notification::claim(&i.db, &seen, now, lease_until).await? else {
            report.lost = 1;
            return Ok(report);
        };
        report.claimed = 1;
        let span = tracing::info_span!(
            "deliver",
            record_id = claimed.id,
            channel = %claimed.channel,
            attempt = claimed.attempts,
            max_attempts = claimed.max_attempts,
        );
        let outcome = self.call_provider(&claimed).instrument(span.clone()).await;
        // Instrumented, not entered: a span held entered across an await would be the current
        // span of whatever else the thread polls meanwhile.
        self.record(&claimed, &outcome, report)
            .instrument(span)
            .await
    }

    /// Records a claimed record's outcome and logs it.
    async fn record(
        &self,
        claimed: &NotificationRecord,
        outcome: &DeliveryOutcome,
        mut report: RoundReport,
    ) -> Result<RoundReport, StorageError> {
        if !notification::finish(&self.inner.db, claimed, outcome, now_millis()).await? {
            // Another sender took the record over after our lease ran out; its result counts.
            tracing::warn!(outcome = %outcome.status(), "the lease ran out before the result was recorded");
            report.lease_lost = 1;
            return Ok(report);
        }
        match outcome {
            DeliveryOutcome::Sent { .. } => {
                report.sent = 1;
                tracing::info!("notification sent");
            }
            DeliveryOutcome::Failed {
                error,
                next_retry_at,
                ..
            } => {
                report.failed = 1;
                tracing::warn!(%error, next_retry_at, "notification failed; it will be retried");
            }
            DeliveryOutcome::Dead { error, .. } => {
                report.dead = 1;
                tracing::error!(%error, "notification is dead");
            }
        }
        Ok(report)
    }

    /// The outcome of one provider call for a claimed record.
    async fn call_provider(&self, claimed: &NotificationRecord) -> DeliveryOutcome {
        let i = &*self.inner;
        let dead = |error: String| DeliveryOutcome::Dead {
            error,
            response: None,
        };
        let Some(channel) = Channel::parse(&claimed.channel) else {
            return dead(format!(
                "unknown notification channel `{}`",
                claimed.channel
            ));
        };
        let Some(provider) = i.providers.get(channel) else {
            return dead(format!(
                "no provider is configured for channel `{}`",
                channel.as_str()
            ));
        };
        let stored: StoredNotification = match serde_json::from_str(&claimed.payload) {
            Ok(stored) => stored,
            Err(e) => return dead(format!("the record's payload cannot be decoded: {e}")),
        };
        // The provider bounds its own calls; this bound only guards the lease against a
        // provider that does not.
        let bound = i.config.lease / 2;
        let result = match tokio::time::timeout(bound, provider.send(&stored.outgoing())).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::retryable(format!(
                "the provider did not return within {} ms",
                bound.as_millis()
            ))),
        };
        match result {
            Ok(receipt) => DeliveryOutcome::Sent {
                response: Some(receipt.response),
            },
            Err(e) if e.is_retryable() && claimed.attempts < claimed.max_attempts => {
                let delay = i.config.retry.delay_after(claimed.attempts.max(1) as u32);
                DeliveryOutcome::Failed {
                    error: e.reason().to_owned(),
                    response: e.response().map(str::to_owned),
                    next_retry_at: now_millis().saturating_add(millis(delay)),
                }
            }
            Err(e) if e.is_retryable() => DeliveryOutcome::Dead {
                error: format!(
                    "{} (attempt {} of {}: no attempts left)",
                    e.reason(),
                    claimed.attempts,
                    claimed.max_attempts
                ),
                response: e.response().map(str::to_owned),
            },
            Err(e) => DeliveryOutcome::Dead {
                error: e.reason().to_owned(),
                response: e.response().map(str::to_owned),
            },
        }
    }
}

fn log_round(what: &str, report: &RoundReport) {
    if *report != RoundReport::default() {
        tracing::debug!(round = what, ?report, "dispatch round");
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
