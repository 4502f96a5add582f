use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use smartflow_domain::{EventHeaders, OutboundMessage, OutboundTransport, TransportError};
use smartflow_storage::outbox::{ClaimedRow, PublishFailure, Settlement};

/// Sends the claimed rows as one concurrent batch and sorts the outcomes into a settlement:
/// acknowledged rows are published, rows the broker rejected fail (and die), rows the broker
/// was unavailable for are released untouched. Published rows of a type outside `consumed_here`
/// (when given) are handed off: no consumer of this database will mark them. The rows are handed
/// back into `keep` (without payloads) so the claim can still be settled. Returns the first
/// unavailability's reason, and how many messages were acknowledged after an earlier message of
/// their key in this batch failed (transports promise that never happens; see
/// [`OutboundTransport::send_batch`]).
pub(super) async fn publish(
    transport: &dyn OutboundTransport,
    rows: Vec<ClaimedRow>,
    keep: &mut Vec<ClaimedRow>,
    deadline: Duration,
    consumed_here: Option<&BTreeSet<String>>,
) -> (Settlement, Option<String>, u64) {
    let mut messages = Vec::with_capacity(rows.len());
    let mut spans = Vec::with_capacity(rows.len());
    keep.reserve(rows.len());
    for mut row in rows {
        // One span per row, in the trace its publish started, open while the batch is sent.
        let span = tracing::info_span!(
            "send",
            event_id = %row.event_id,
            event_type = %row.event_type,
            topic = %row.topic,
        );
        crate::trace::continue_trace(&span, row.traceparent.as_deref());
        spans.push(span);
        messages.push(OutboundMessage::event(
            std::mem::take(&mut row.topic),
            row.message_key.clone(),
            std::mem::take(&mut row.payload),
            EventHeaders {
                event_id: row.event_id.clone(),
                event_type: row.event_type.clone(),
                version: row.event_version.into(),
                traceparent: row.traceparent.take(),
            },
        ));
        keep.push(row);
    }
    let outcomes = transport.send_batch(messages, deadline).await;
    drop(spans);
    let order_breaks = acknowledged_after_a_failure(keep, &outcomes);
    let mut settlement = Settlement::default();
    let mut unavailable = None;
    for (row, outcome) in keep.iter().zip(outcomes) {
        match outcome {
            Ok(()) if consumed_here.is_some_and(|types| !types.contains(&row.event_type)) => {
                settlement.handed_off.push(row.id)
            }
            Ok(()) => settlement.published.push(row.id),
            Err(e) if e.is_unavailable() => {
                settlement.unavailable.push(row.id);
                unavailable.get_or_insert(e.message);
            }
            Err(e) => settlement.failed.push(PublishFailure {
                id: row.id,
                error: e.message,
                retryable: false,
            }),
        }
    }
    if order_breaks > 0 {
        tracing::error!(
            order_breaks,
            "the transport acknowledged messages after failing an earlier message of the same key: \
             those keys may be out of order"
        );
    }
    (settlement, unavailable, order_breaks)
}

/// Messages acknowledged although an earlier message of the same key in the batch was not
/// delivered (unavailable; a rejected message is `dead`, and the later ones may go on).
fn acknowledged_after_a_failure(
    rows: &[ClaimedRow],
    outcomes: &[Result<(), TransportError>],
) -> u64 {
    let mut broken: HashSet<&str> = HashSet::new();
    let mut breaks = 0;
    for (row, outcome) in rows.iter().zip(outcomes) {
        match outcome {
            Ok(()) if broken.contains(row.message_key.as_str()) => breaks += 1,
            Err(e) if e.is_unavailable() => {
                broken.insert(row.message_key.as_str());
            }
            _ => {}
        }
    }
    breaks
}
