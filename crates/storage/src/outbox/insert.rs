use sea_orm::sea_query::Query;
use sea_orm::ConnectionTrait;
use smartflow_domain::{Envelope, OutboxStatus};

use super::{key_shard, stored, OutboxTable};
use crate::entity::outbox::Column as Outbox;
use crate::{now_millis, StorageError};

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

    /// As [`insert_encoded`](Self::insert_encoded), the row `stored` instead of `pending`: kept
    /// for the record (a `Delivery::StoreOnly` route), never claimed by a relay (every claim
    /// reads `pending` or `published` rows only) and moved by no writer.
    pub async fn insert_stored<C: ConnectionTrait>(
        &self,
        conn: &C,
        envelope: &Envelope,
        encoded: String,
        topic: &str,
    ) -> Result<(), StorageError> {
        self.insert_as(conn, envelope, encoded, topic, 0, OutboxStatus::Stored)
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
        self.insert_as(
            conn,
            envelope,
            encoded,
            topic,
            max_retry,
            OutboxStatus::Pending,
        )
        .await
    }

    async fn insert_as<C: ConnectionTrait>(
        &self,
        conn: &C,
        envelope: &Envelope,
        encoded: String,
        topic: &str,
        max_retry: u32,
        status: OutboxStatus,
    ) -> Result<(), StorageError> {
        let now = now_millis();
        let stmt = Query::insert()
            .into_table(self.alias())
            .columns([
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
            ])
            .values_panic([
                envelope.event_id.to_string().into(),
                envelope.event_type.clone().into(),
                (envelope.version as i32).into(),
                envelope.message_key.clone().into(),
                key_shard(&envelope.message_key).into(),
                topic.into(),
                encoded.into(),
                envelope.traceparent().map(str::to_owned).into(),
                stored(status).into(),
                0i32.into(),
                (max_retry.min(i32::MAX as u32) as i32).into(),
                now.into(),
                now.into(),
            ])
            .to_owned();
        conn.execute(conn.get_database_backend().build(&stmt))
            .await?;
        Ok(())
    }
}
