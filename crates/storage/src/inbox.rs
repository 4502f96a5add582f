//! The inbox: which events a consumer of another service's events has already handled. Its insert
//! runs in the transaction of the handler's effect, so a duplicate delivery finds the row and
//! changes nothing.

use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use crate::error_text::truncate;
use crate::schema::Inbox;
use crate::{now_millis, StorageError};

/// Whether the consumer applied the event or gave up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxStatus {
    Handled,
    Dead,
}

impl InboxStatus {
    /// The one spelling of each inbox status, as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            InboxStatus::Handled => "handled",
            InboxStatus::Dead => "dead",
        }
    }
}

/// One inbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    pub consumer: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub last_error: Option<String>,
    pub handled_at: i64,
}

/// Records that `consumer` settled `event_id`. Returns `false`, changing nothing, when the event
/// was already recorded. The insert runs in a savepoint so a duplicate leaves `txn` usable.
pub async fn record(
    txn: &DatabaseTransaction,
    consumer: &str,
    event_id: &str,
    event_type: &str,
    status: InboxStatus,
    error: Option<&str>,
) -> Result<bool, StorageError> {
    let stmt = Query::insert()
        .into_table(Inbox::Table)
        .columns([
            Inbox::Consumer,
            Inbox::EventId,
            Inbox::EventType,
            Inbox::Status,
            Inbox::LastError,
            Inbox::HandledAt,
        ])
        .values_panic([
            consumer.into(),
            event_id.into(),
            event_type.into(),
            status.as_str().into(),
            error.map(truncate).into(),
            now_millis().into(),
        ])
        .to_owned();
    let savepoint = txn.begin().await?;
    let result = savepoint
        .execute(savepoint.get_database_backend().build(&stmt))
        .await
        .map_err(StorageError::from);
    match result {
        Ok(_) => {
            savepoint.commit().await?;
            Ok(true)
        }
        Err(e) if e.is_unique_violation() => {
            savepoint.rollback().await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The inbox row of one event for one consumer.
pub async fn find<C: ConnectionTrait>(
    conn: &C,
    consumer: &str,
    event_id: &str,
) -> Result<Option<InboxEntry>, StorageError> {
    let stmt = Query::select()
        .columns([
            Inbox::Consumer,
            Inbox::EventId,
            Inbox::EventType,
            Inbox::Status,
            Inbox::LastError,
            Inbox::HandledAt,
        ])
        .from(Inbox::Table)
        .and_where(Expr::col(Inbox::Consumer).eq(consumer))
        .and_where(Expr::col(Inbox::EventId).eq(event_id))
        .to_owned();
    let Some(row) = conn
        .query_one(conn.get_database_backend().build(&stmt))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(InboxEntry {
        consumer: row.try_get("", "consumer")?,
        event_id: row.try_get("", "event_id")?,
        event_type: row.try_get("", "event_type")?,
        status: row.try_get("", "status")?,
        last_error: row.try_get("", "last_error")?,
        handled_at: row.try_get("", "handled_at")?,
    }))
}
