use sea_orm::{DatabaseTransaction, TransactionTrait};
use smartflow_domain::{Envelope, IncomingMessage};
use smartflow_storage::inbox::{self, InboxStatus};
use smartflow_storage::outbox::FailureOutcome;

use super::{ConsumerRunner, Dedupe};
use crate::relay::EVENT_ID_HEADER;
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
}

impl ConsumerRunner {
    /// Applies a batch in one database transaction: each message in its own savepoint, where the
    /// dedupe mark and the handler's writes commit together or not at all. Failures are recorded
    /// in the same transaction. Offsets are the caller's to commit once this returns `Ok`.
    #[tracing::instrument(skip_all, fields(messages = batch.len()))]
    pub async fn process_batch(&self, batch: &[IncomingMessage]) -> Result<BatchReport, BusError> {
        let txn = self.db.begin().await?;
        let mut report = BatchReport::default();
        for message in batch {
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
            self.apply_one(&txn, &envelope, &mut report).await?;
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
    ) -> Result<(), BusError> {
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
            return self
                .fail(txn, envelope, HandlerError::Permanent(reason), report)
                .await;
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let savepoint = txn.begin().await?;
            let fresh = match &self.dedupe {
                Dedupe::OutboxMark(table) => table.mark_consumed(&savepoint, &event_id).await?,
                Dedupe::Inbox { consumer } => {
                    inbox::record(
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
                return Ok(());
            }
            match handler.handle(&savepoint, envelope).await {
                Ok(()) => {
                    savepoint.commit().await?;
                    report.applied += 1;
                    return Ok(());
                }
                Err(error) => {
                    savepoint.rollback().await?;
                    let in_place = matches!(self.dedupe, Dedupe::Inbox { .. })
                        && error.is_retryable()
                        && attempt < self.config.inbox_attempts;
                    if in_place {
                        let wait = self.config.inbox_retry.delay_after(attempt);
                        tracing::warn!(%error, attempt, "handler failed; trying again in place");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return self.fail(txn, envelope, error, report).await;
                }
            }
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
        match &self.dedupe {
            Dedupe::OutboxMark(table) => {
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
                    FailureOutcome::Untouched => {
                        report.duplicates += 1;
                        tracing::debug!("event already settled; failure not recorded");
                    }
                }
            }
            Dedupe::Inbox { consumer } => {
                let recorded = inbox::record(
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
        let dead = match &self.dedupe {
            Dedupe::OutboxMark(table) => {
                table
                    .record_failure(txn, event_id, &reason, false, &self.config.retry)
                    .await?
                    == FailureOutcome::Dead
            }
            Dedupe::Inbox { consumer } => {
                let event_type = message
                    .header(crate::relay::EVENT_TYPE_HEADER)
                    .unwrap_or("<unknown>");
                inbox::record(
                    txn,
                    consumer,
                    event_id,
                    event_type,
                    InboxStatus::Dead,
                    Some(&reason),
                )
                .await?
            }
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
