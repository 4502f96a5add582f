use std::collections::HashSet;

use sea_orm::{DatabaseTransaction, TransactionTrait};
use smartflow_domain::{Envelope, IncomingMessage, KeyOrder, EVENT_ID_HEADER, EVENT_TYPE_HEADER};
use smartflow_storage::inbox::InboxStatus;
use smartflow_storage::outbox::FailureOutcome;
use tracing::Instrument;

use super::{ConsumerRunner, Mark};
use crate::metrics::{DeadReason, HandlerErrorKind, Stage};
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

/// A message of the batch, decoded once for both ways of applying it: its envelope, or why it
/// is not one.
type Decoded = Result<Envelope, String>;

/// What applying one message did to the batch.
enum Applied {
    Done,
    /// A retryable handler error tried again in place, with retries left: stop the batch here.
    TryAgainLater,
}

impl ConsumerRunner {
    /// Applies a batch in one database transaction, where each event's dedupe mark and its
    /// handler's writes commit together or not at all, and failures are recorded. Offsets are
    /// the caller's to commit once this returns `Ok`.
    ///
    /// First the whole batch is tried at once in one savepoint: the marks of all its events set
    /// by a few statements (`mark_consumed_all`, `record_handled_all`), then each run of
    /// consecutive events of one type handed to its handler's `handle_batch`. If that cannot
    /// work (an undecodable message, an unknown type) or fails (a handler's error, a concurrent
    /// consumer's mark), it is rolled back, and every message is applied on its own, each in its
    /// own savepoint, which tells the failing event from the others: they are applied once,
    /// never twice and never lost.
    #[tracing::instrument(skip_all, fields(messages = batch.len()))]
    pub async fn process_batch(&self, batch: &[IncomingMessage]) -> Result<BatchReport, BusError> {
        let decoded: Vec<Decoded> = batch
            .iter()
            .map(
                |message| match message.payload.as_deref().map(Envelope::from_slice) {
                    Some(Ok(envelope)) => Ok(envelope),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err("message has no value".to_owned()),
                },
            )
            .collect();
        let txn = self.db.begin().await?;
        let report = match self.apply_whole(&txn, &decoded).await? {
            Some(report) => {
                Metrics::add(&self.metrics.batches_whole, 1);
                report
            }
            None => {
                Metrics::add(&self.metrics.batches_one_by_one, 1);
                self.apply_each(&txn, batch, &decoded).await?
            }
        };
        txn.commit().await?;
        let m = &self.metrics;
        Metrics::add(&m.consumed, report.applied);
        Metrics::add(&m.duplicates, report.duplicates);
        Metrics::add(&m.handler_retries, report.retrying);
        Metrics::add(&m.handler_dead, report.dead);
        Ok(report)
    }

    /// The whole batch at once, in a savepoint of `txn`. `None` (the savepoint rolled back,
    /// nothing written) when it cannot or did not work.
    async fn apply_whole(
        &self,
        txn: &DatabaseTransaction,
        decoded: &[Decoded],
    ) -> Result<Option<BatchReport>, BusError> {
        if !self.config.whole_batches || decoded.len() < 2 {
            return Ok(None);
        }
        let mut envelopes = Vec::with_capacity(decoded.len());
        for envelope in decoded {
            let Ok(envelope) = envelope else {
                return Ok(None);
            };
            if self.handlers.get(&envelope.event_type).is_none() {
                return Ok(None);
            }
            envelopes.push(envelope);
        }
        let savepoint = txn.begin().await?;
        match self.try_whole(&savepoint, &envelopes).await {
            Ok(Some(report)) => {
                savepoint.commit().await?;
                for envelope in &envelopes {
                    self.forget_attempts(&envelope.event_id.to_string());
                }
                Ok(Some(report))
            }
            Ok(None) => {
                savepoint.rollback().await?;
                Ok(None)
            }
            Err(error) => {
                tracing::debug!(%error, "the batch failed as a whole; applying its events one by one");
                savepoint.rollback().await?;
                Ok(None)
            }
        }
    }

    async fn try_whole(
        &self,
        savepoint: &DatabaseTransaction,
        envelopes: &[&Envelope],
    ) -> Result<Option<BatchReport>, HandlerError> {
        let ids: Vec<String> = envelopes.iter().map(|e| e.event_id.to_string()).collect();
        // Each event's mark: its outbox row, or its inbox row (a copy delivered twice in one
        // batch is marked, and applied, once).
        let mut seen = HashSet::new();
        let mut outbox_ids: Vec<&str> = Vec::new();
        let mut inbox_events: Vec<(&str, &str)> = Vec::new();
        let mut outbox_table = None;
        for (envelope, id) in envelopes.iter().zip(&ids) {
            if !seen.insert(id.as_str()) {
                continue;
            }
            match self.dedupe.mark_for(envelope.source()) {
                Mark::Outbox(table) => {
                    outbox_table = Some(table);
                    outbox_ids.push(id);
                }
                Mark::Inbox { .. } => inbox_events.push((id, &envelope.event_type)),
            }
        }
        let mut fresh: HashSet<String> = HashSet::new();
        if let Some(table) = outbox_table {
            match table.mark_consumed_all(savepoint, &outbox_ids).await? {
                Some(marked) => fresh.extend(marked),
                None => return Ok(None),
            }
        }
        if !inbox_events.is_empty() {
            let (table, consumer) = self.dedupe.inbox();
            match table
                .record_handled_all(savepoint, consumer, &inbox_events)
                .await?
            {
                Some(recorded) => fresh.extend(recorded),
                None => return Ok(None),
            }
        }
        let mut report = BatchReport::default();
        let mut applying: Vec<&Envelope> = Vec::with_capacity(envelopes.len());
        for (&envelope, id) in envelopes.iter().zip(&ids) {
            if fresh.remove(id) {
                applying.push(envelope);
            } else {
                report.duplicates += 1;
            }
        }
        for run in applying.chunk_by(|a, b| a.event_type == b.event_type) {
            let event_type = &run[0].event_type;
            let span = tracing::info_span!("handle_batch", %event_type, events = run.len());
            for envelope in run {
                crate::trace::link_trace(&span, envelope.traceparent());
            }
            // Checked above: every event type has its handler.
            if let Some(handler) = self.handlers.get(event_type) {
                handler
                    .handle_batch(savepoint, run)
                    .instrument(span)
                    .await?;
            }
        }
        report.applied = applying.len() as u64;
        Ok(Some(report))
    }

    /// Each message on its own, in its own savepoint.
    async fn apply_each(
        &self,
        txn: &DatabaseTransaction,
        batch: &[IncomingMessage],
        decoded: &[Decoded],
    ) -> Result<BatchReport, BusError> {
        let mut report = BatchReport::default();
        for (index, (message, envelope)) in batch.iter().zip(decoded).enumerate() {
            let envelope = match envelope {
                Ok(envelope) => envelope,
                Err(reason) => {
                    self.poison(txn, message, reason, &mut report).await?;
                    continue;
                }
            };
            if let Applied::TryAgainLater = self.apply_one(txn, envelope, &mut report).await? {
                report.stopped_at = Some(index);
                break;
            }
        }
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
        crate::trace::continue_trace(&span, envelope.traceparent());
        // Instrumented, never entered with a guard: a span held entered across an await would
        // be the current span (and trace) of whatever else the thread polls meanwhile.
        self.apply_in_span(txn, envelope, event_id, report)
            .instrument(span)
            .await
    }

    /// `apply_one`'s work, run inside its `handle` span.
    async fn apply_in_span(
        &self,
        txn: &DatabaseTransaction,
        envelope: &Envelope,
        event_id: String,
        report: &mut BatchReport,
    ) -> Result<Applied, BusError> {
        let Some(handler) = self.handlers.get(&envelope.event_type) else {
            let reason = format!(
                "no handler is registered for event type `{}`",
                envelope.event_type
            );
            self.metrics.handler_error(HandlerErrorKind::UnknownType);
            let error = HandlerError::Permanent(reason);
            self.fail(txn, envelope, error, DeadReason::UnknownType, report)
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
                self.metrics.handler_error(if error.is_retryable() {
                    HandlerErrorKind::Retryable
                } else {
                    HandlerErrorKind::Permanent
                });
                let mut reason = if error.is_retryable() {
                    DeadReason::RetriesExhausted
                } else {
                    DeadReason::Permanent
                };
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
                    reason = DeadReason::RetriesExhausted;
                }
                self.fail(txn, envelope, error, reason, report).await?;
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
    /// `dead` (counted under `reason`); for an inbox consumer, `dead` in the inbox with the reason.
    async fn fail(
        &self,
        txn: &DatabaseTransaction,
        envelope: &Envelope,
        error: HandlerError,
        reason: DeadReason,
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
                        self.metrics.dead(Stage::Consume, reason, 1);
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
                    self.metrics.dead(Stage::Consume, reason, 1);
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
        self.metrics.handler_error(HandlerErrorKind::Undecodable);
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
            self.metrics
                .dead(Stage::Consume, DeadReason::Undecodable, 1);
            tracing::error!(event_id, %reason, "poison message is dead");
        } else {
            report.duplicates += 1;
        }
        Ok(())
    }
}
