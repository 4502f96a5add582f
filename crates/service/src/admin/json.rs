//! The JSON shapes of the operator's answers, one for the CLI's `--json` and the admin HTTP API
//! (`docs/operations.md` documents them): timestamps in Unix milliseconds, absent values `null`.

use serde_json::{json, Value};
use smartflow_storage::inbox::InboxEntry;
use smartflow_storage::inbox_admin::InboxReport;
use smartflow_storage::outbox::{OutboxRecord, OutboxReport};

/// One table's `outbox stats`, `now` being the instant the ages are measured from.
pub fn outbox_report_json(table: &str, report: &OutboxReport, now: i64) -> Value {
    let c = &report.counts;
    let oldest = c.oldest_pending_created_at;
    json!({
        "table": table,
        "rows": {
            "pending": c.pending,
            "published": c.published,
            "consumed": c.consumed,
            "dead": c.dead,
            "stored": c.stored,
        },
        "oldest_pending_created_at": oldest,
        "oldest_pending_age_ms": oldest.map(|t| (now - t).max(0)),
        "retries": report.retries.iter()
            .map(|(retries, rows)| json!({"retry_count": retries, "rows": rows}))
            .collect::<Vec<_>>(),
        "dead_reasons": reasons_json(&report.dead_reasons),
    })
}

/// One outbox row; the payload only where asked for (`show`).
pub fn outbox_row_json(r: &OutboxRecord, payload: bool) -> Value {
    let row = &r.row;
    let mut value = json!({
        "id": row.id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "event_version": r.event_version,
        "message_key": row.message_key,
        "topic": r.topic,
        "status": row.status.as_str(),
        "retry_count": row.retry_count,
        "max_retry": row.max_retry,
        "next_retry_at": row.next_retry_at,
        "last_error": row.last_error,
        "locked_by": row.locked_by,
        "locked_until": r.locked_until,
        "created_at": row.created_at,
        "published_at": row.published_at,
        "consumed_at": row.consumed_at,
        "updated_at": r.updated_at,
        "redrive_count": r.redrive.map(|h| h.redrive_count),
        "last_redriven_at": r.redrive.and_then(|h| h.last_redriven_at),
        "traceparent": r.traceparent,
    });
    if payload {
        value["payload"] = Value::String(row.payload.clone());
    }
    value
}

/// One table's `inbox stats`.
pub fn inbox_report_json(table: &str, report: &InboxReport) -> Value {
    json!({
        "table": table,
        "consumers": report.counts.iter().map(|(consumer, c)| json!({
            "consumer": consumer,
            "handled": c.handled,
            "dead": c.dead,
            "oldest_handled_at": c.oldest_handled_at,
        })).collect::<Vec<_>>(),
        "dead_reasons": reasons_json(&report.dead_reasons),
    })
}

/// One inbox row.
pub fn inbox_row_json(row: &InboxEntry) -> Value {
    json!({
        "consumer": row.consumer,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": row.status.name(),
        "last_error": row.last_error,
        "handled_at": row.handled_at,
    })
}

/// The most frequent reasons of `dead` rows, `(reason, rows)`.
pub fn reasons_json(reasons: &[(Option<String>, u64)]) -> Value {
    reasons
        .iter()
        .map(|(reason, rows)| json!({"reason": reason, "rows": rows}))
        .collect()
}
