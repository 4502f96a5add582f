use sea_orm::{DatabaseTransaction, TransactionTrait};
use smartflow_domain::{Envelope, IncomingMessage, KeyOrder, EVENT_ID_HEADER, EVENT_TYPE_HEADER};
use smartflow_storage::inbox::InboxStatus;
use smartflow_storage::outbox::FailureOutcome;

use super::{ConsumerRunner, Mark};
use crate::{BusError, HandlerError, Metrics};

/// What applying one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub applied: u64,
    pub duplicates: u64,
    pub retrying: u64,
    pub dead: u64,
    /// Messages that were not envelopes and carried no event id: nothing to mark, logged.
    pub rejected: u64,
    /// The index of a message whose handler failed retryably and is tried again in place (inbox
    /// mode, or `KeyOrder::Block`). The messages before
    /// it are applied and committed; it and those after it are not, and are to be tried again.
    pub stopped_at: Option<usize>,
}

/// What applying one message did to the batch.
enum Applied {
    Done,
    /// A retryable handler error tried again in place, with retries left: stop the batch here.
    TryAgainLater,
}

impl ConsumerRunner {
    /// Applies a batch in one database transaction: each message in its own savepoint, where the
    /// dedupe mark and the handler's writes commit together or not at all. Failures are recorded
    /// in the same transaction. Offsets are the caller's to commit once this returns `Ok`.
    #[tracing::instrument(skip_all, fields(messages = batch.len()))]
    pub async fn process_batch(&self, batch: &[IncomingMessage]) -> Result<BatchReport, BusError> {
        let txn = self.db.begin().await?;
        let mut report = BatchReport::default();
        for (index, message) in batch.iter().enumerate() {
            let envelope = match message.payload.as_deref().map(Envelope::from_slice) {
                Some(Ok(envelope)) => envelope,
                other => {
                    let reason = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "message has no value".to_owned(),
                    };
                    self.poison(&txn, message, &reason, &mut report).await?;
                    continue;
                }
            };
            if let Applied::TryAgainLater = self.apply_one(&txn, &envelope, &mut report).await? {
                report.stopped_at = Some(index);
                break;
            }
        }
        txn.commit().await?;
        let m = &self.metrics;
        Metrics::add(&m.consumed, report.applied);
        Metrics::add(&m.duplicates, report.duplicates);
        Metrics::add(&m.handler_retries, report.retrying);
        Metrics::add(&m.handler_dead, report.dead);
        Ok(report)
    }

    async fn apply_one(
        &self,
        txn: &DatabaseTransaction,
        envelope: &Envelope,
        report: &mut BatchReport,
    ) -> Result<Applied, BusError> {
        let event_id = envelope.event_id.to_string();
        let span = tracing::info_span!(
            "handle",
            event_type = %envelope.event_type,
            event_id = %event_id,
            traceparent = envelope.traceparent().unwrap_or(""),
        );
        let _guard = span.enter();
        let Some(handler) = self.handlers.get(&envelope.event_type) else {
            let reason = format!(
                "no handler is registered for event type `{}`",
                envelope.event_type
            );
            self.fail(txn, envelope, HandlerError::Permanent(reason), report)
                .await?;
            return Ok(Applied::Done);
        };
        let mark = self.dedupe.mark_for(envelope.source());
        let savepoint = txn.begin().await?;
        let fresh = match mark {
            Mark::Outbox(table) => table.mark_consumed(&savepoint, &event_id).await?,
            Mark::Inbox { table, consumer } => {
                table
                    .record(
                        &savepoint,
                        consumer,
                        &event_id,
                        &envelope.event_type,
                        InboxStatus::Handled,
                        None,
                    )
                    .await?
            }
        };
        if !fresh {
            savepoint.rollback().await?;
            report.duplicates += 1;
            tracing::debug!("already applied; skipped");
            return Ok(Applied::Done);
        }
        match handler.handle(&savepoint, envelope).await {
            Ok(()) => {
                savepoint.commit().await?;
                report.applied += 1;
                self.forget_attempts(&event_id);
                Ok(Applied::Done)
            }
            Err(mut error) => {
                savepoint.rollback().await?;
                // An inbox event cannot be sent back to an outbox of this database, and under
                // `KeyOrder::Block` a later event of the key must not be applied before this
                // one: both try again in place, holding the partition at the event.
                let in_place =
                    matches!(mark, Mark::Inbox { .. }) || self.key_order == KeyOrder::Block;
                if in_place && error.is_retryable() {
                    let failures = self.count_attempt(&event_id);
                    if self
                        .config
                        .retry
                        .after_failure(failures, None, true)
                        .is_some()
                    {
                        tracing::warn!(%error, failures, "handler failed; the partition waits and tries again");
                        report.retrying += 1;
                        return Ok(Applied::TryAgainLater);
                    }
                    self.forget_attempts(&event_id);
                    error = HandlerError::Permanent(format!(
                        "gave up after {failures} attempts: {}",
                        error.reason()
                    ));
                }
                self.fail(txn, envelope, error, report).await?;
                Ok(Applied::Done)
            }
        }
    }

    /// Counts one more failed attempt of an inbox event; returns the count.
    fn count_attempt(&self, event_id: &str) -> u32 {
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = attempts.entry(event_id.to_owned()).or_insert(0);
        *n += 1;
        *n
    }

    fn forget_attempts(&self, event_id: &str) {
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !attempts.is_empty() {
            attempts.remove(event_id);
        }
    }

    /// Records a failed event: for the owning service, back to `pending` (republished later) or
    /// `dead`; for an inbox consumer, `dead` in the inbox with the reason.
    async fn fail(
        &self,
        txn: &DatabaseTransaction,
        envelope: &Envelope,
        error: HandlerError,
        report: &mut BatchReport,
    ) -> Result<(), BusError> {
        let event_id = envelope.event_id.to_string();
        match self.dedupe.mark_for(envelope.source()) {
            Mark::Outbox(table) => {
                let outcome = table
                    .record_failure(
                        txn,
                        &event_id,
                        error.reason(),
                        error.is_retryable(),
                        &self.config.retry,
                    )
                    .await?;
                match outcome {
                    FailureOutcome::Retrying { next_retry_at } => {
                        report.retrying += 1;
                        tracing::warn!(%error, next_retry_at, "handler failed; the event will be delivered again");
                    }
                    FailureOutcome::Dead => {
                        report.dead += 1;
                        tracing::error!(%error, "event is dead");
                    }
                    FailureOutcome::StillDead => {
                        report.dead += 1;
                        tracing::error!(%error, "a dead event was delivered and failed again; it stays dead");
                    }
                    FailureOutcome::Untouched => {
                        report.duplicates += 1;
                        tracing::debug!("event already settled; failure not recorded");
                    }
                }
            }
            Mark::Inbox { table, consumer } => {
                let recorded = table
                    .record(
                        txn,
                        consumer,
                        &event_id,
                        &envelope.event_type,
                        InboxStatus::Dead,
                        Some(error.reason()),
                    )
                    .await?;
                if recorded {
                    report.dead += 1;
                    tracing::error!(%error, "event is dead for this consumer");
                } else {
                    report.duplicates += 1;
                }
            }
        }
        Ok(())
    }

    /// A message that is not an envelope: dead with the reason when its event id header names a
    /// row, otherwise logged as rejected (it did not come from a smartflow relay).
    async fn poison(
        &self,
        txn: &DatabaseTransaction,
        message: &IncomingMessage,
        reason: &str,
        report: &mut BatchReport,
    ) -> Result<(), BusError> {
        let reason = format!("undecodable message: {reason}");
        let Some(event_id) = message.header(EVENT_ID_HEADER) else {
            report.rejected += 1;
            tracing::error!(
                topic = %message.topic,
                partition = message.partition,
                offset = message.offset,
                %reason,
                "rejected a message with no event id"
            );
            return Ok(());
        };
        // Undecodable, so the envelope cannot say where it came from: the outbox's row if it
        // has one, else the inbox (it came from another service, or was never an event).
        let in_outbox = match self.dedupe.mark_for(None) {
            Mark::Outbox(table) => {
                table
                    .record_failure(txn, event_id, &reason, false, &self.config.retry)
                    .await?
                    != FailureOutcome::Untouched
            }
            Mark::Inbox { .. } => false,
        };
        let dead = in_outbox || {
            let (table, consumer) = self.dedupe.inbox();
            let event_type = message.header(EVENT_TYPE_HEADER).unwrap_or("<unknown>");
            table
                .record(
                    txn,
                    consumer,
                    event_id,
                    event_type,
                    InboxStatus::Dead,
                    Some(&reason),
                )
                .await?
        };
        if dead {
            report.dead += 1;
            tracing::error!(event_id, %reason, "poison message is dead");
        } else {
            report.duplicates += 1;
        }
        Ok(())
    }
}
