use std::time::Duration;

use smartflow_domain::{OutboundMessage, OutboundTransport, TransportError, TRACEPARENT_HEADER};
use smartflow_storage::outbox::{ClaimedRow, PublishFailure, Settlement};

/// Headers every published message carries, so consumers can route and trace without parsing
/// the value.
pub const EVENT_ID_HEADER: &str = "event_id";
pub const EVENT_TYPE_HEADER: &str = "event_type";
pub const EVENT_VERSION_HEADER: &str = "event_version";

/// Sends the claimed rows as one concurrent batch and sorts the outcomes into a settlement.
/// The rows are handed back into `keep` (without payloads) so the claim can still be settled.
pub(super) async fn publish(
    transport: &dyn OutboundTransport,
    rows: Vec<ClaimedRow>,
    keep: &mut Vec<ClaimedRow>,
    deadline: Duration,
) -> Settlement {
    let mut messages = Vec::with_capacity(rows.len());
    keep.reserve(rows.len());
    for mut row in rows {
        let mut headers = vec![
            (EVENT_ID_HEADER.to_owned(), row.event_id.clone()),
            (EVENT_TYPE_HEADER.to_owned(), row.event_type.clone()),
            (
                EVENT_VERSION_HEADER.to_owned(),
                row.event_version.to_string(),
            ),
        ];
        if let Some(tp) = row.traceparent.take() {
            headers.push((TRACEPARENT_HEADER.to_owned(), tp));
        }
        messages.push(OutboundMessage {
            topic: std::mem::take(&mut row.topic),
            key: std::mem::take(&mut row.message_key),
            payload: std::mem::take(&mut row.payload),
            headers,
        });
        keep.push(row);
    }
    let outcomes = match tokio::time::timeout(deadline, transport.send_batch(messages)).await {
        Ok(outcomes) => outcomes,
        // Unacknowledged messages may still arrive; consumers drop the duplicates.
        Err(_) => vec![
            Err(TransportError::retryable(format!(
                "the broker did not acknowledge within {} ms",
                deadline.as_millis()
            )));
            keep.len()
        ],
    };
    let mut settlement = Settlement::default();
    for (row, outcome) in keep.iter().zip(outcomes) {
        match outcome {
            Ok(()) => settlement.published.push(row.id),
            Err(e) => settlement.failed.push(PublishFailure {
                id: row.id,
                error: e.message,
                retryable: e.retryable,
            }),
        }
    }
    settlement
}
