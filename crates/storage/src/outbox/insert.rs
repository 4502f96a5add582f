use sea_orm::sea_query::Query;
use sea_orm::ConnectionTrait;
use smartflow_domain::{Envelope, OutboxStatus};

use super::{key_shard, stored, OutboxTable};
use crate::entity::outbox::Column as Outbox;
use crate::{now_millis, StorageError};

/// One row for [`OutboxTable::insert_all`]: the envelope, its encoding (measured by the caller),
/// its topic, and whether it is `pending` (to be published) or `stored` (kept for the record
/// only: a `Delivery::StoreOnly` route; no claim reads it and no writer moves it).
#[derive(Debug, Clone, Copy)]
pub struct EncodedRow<'a> {
    pub envelope: &'a Envelope,
    pub encoded: &'a str,
    pub topic: &'a str,
    pub store_only: bool,
}

/// Rows per `INSERT` statement: well inside every backend's limit on bound parameters (13 per
/// row; SQLite allows 32,766 and PostgreSQL and MySQL 65,535).
const ROWS_PER_INSERT: usize = 1000;

impl OutboxTable {
    /// Inserts one `pending` row for the envelope through `conn`, which is normally the caller's
    /// open transaction: the row exists exactly when that transaction commits.
    pub async fn insert<C: ConnectionTrait>(
        &self,
        conn: &C,
        envelope: &Envelope,
        topic: &str,
        max_retry: u32,
    ) -> Result<(), StorageError> {
        self.insert_encoded(conn, envelope, envelope.to_json(), topic, max_retry)
            .await
    }

    /// As [`insert`](Self::insert), with the envelope already encoded by the caller (who measured
    /// its size) so it is serialized once.
    pub async fn insert_encoded<C: ConnectionTrait>(
        &self,
        conn: &C,
        envelope: &Envelope,
        encoded: String,
        topic: &str,
        max_retry: u32,
    ) -> Result<(), StorageError> {
        let row = EncodedRow {
            envelope,
            encoded: &encoded,
            topic,
            store_only: false,
        };
        self.insert_all(conn, &[row], max_retry).await
    }

    /// Inserts one row per entry (`pending`, or `stored` for a store-only one), in the order
    /// given (so in id order), with as few statements as the backend's parameter limit allows.
    pub async fn insert_all<C: ConnectionTrait>(
        &self,
        conn: &C,
        rows: &[EncodedRow<'_>],
        max_retry: u32,
    ) -> Result<(), StorageError> {
        let now = now_millis();
        let max_retry = max_retry.min(i32::MAX as u32) as i32;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut stmt = Query::insert();
            stmt.into_table(self.alias()).columns([
                Outbox::EventId,
                Outbox::EventType,
                Outbox::EventVersion,
                Outbox::MessageKey,
                Outbox::Shard,
                Outbox::Topic,
                Outbox::Payload,
                Outbox::Traceparent,
                Outbox::Status,
                Outbox::RetryCount,
                Outbox::MaxRetry,
                Outbox::CreatedAt,
                Outbox::UpdatedAt,
            ]);
            for row in chunk {
                let envelope = row.envelope;
                stmt.values_panic([
                    envelope.event_id.to_string().into(),
                    envelope.event_type.clone().into(),
                    (envelope.version as i32).into(),
                    envelope.message_key.clone().into(),
                    key_shard(&envelope.message_key).into(),
                    row.topic.into(),
                    row.encoded.into(),
                    envelope.traceparent().map(str::to_owned).into(),
                    stored(if row.store_only {
                        OutboxStatus::Stored
                    } else {
                        OutboxStatus::Pending
                    })
                    .into(),
                    0i32.into(),
                    (if row.store_only { 0 } else { max_retry }).into(),
                    now.into(),
                    now.into(),
                ]);
            }
            conn.execute(conn.get_database_backend().build(&stmt))
                .await?;
        }
        Ok(())
    }
}
