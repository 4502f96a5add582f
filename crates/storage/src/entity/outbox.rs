//! The columns of every service's outbox. Each service names its own table, so statements name it
//! at run time ([`OutboxTable`](crate::outbox::OutboxTable)) and take only the columns, the row
//! type and the status from here; `table_name` is a placeholder no statement uses.

use sea_orm::entity::prelude::*;
use smartflow_domain::OutboxStatus;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub event_version: i32,
    pub message_key: String,
    /// The key's shard ([`key_shard`](crate::outbox::key_shard)), written with the row.
    pub shard: i16,
    /// On PostgreSQL the id of the transaction that wrote the row (its place in the commit
    /// cursor's order); 0 elsewhere and for rows written before the cursor existed.
    pub txid: i64,
    pub topic: String,
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub traceparent: Option<String>,
    pub status: Status,
    pub retry_count: i32,
    pub max_retry: i32,
    pub next_retry_at: Option<i64>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub locked_by: Option<String>,
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub published_at: Option<i64>,
    pub consumed_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// [`OutboxStatus`] as stored: the one spelling of each status. The domain type stays free of
/// sea-orm; the two convert one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Status {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "published")]
    Published,
    #[sea_orm(string_value = "consumed")]
    Consumed,
    #[sea_orm(string_value = "dead")]
    Dead,
    #[sea_orm(string_value = "stored")]
    Stored,
}

impl From<OutboxStatus> for Status {
    fn from(status: OutboxStatus) -> Self {
        match status {
            OutboxStatus::Pending => Status::Pending,
            OutboxStatus::Published => Status::Published,
            OutboxStatus::Consumed => Status::Consumed,
            OutboxStatus::Dead => Status::Dead,
            OutboxStatus::Stored => Status::Stored,
        }
    }
}

impl From<Status> for OutboxStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Pending => OutboxStatus::Pending,
            Status::Published => OutboxStatus::Published,
            Status::Consumed => OutboxStatus::Consumed,
            Status::Dead => OutboxStatus::Dead,
            Status::Stored => OutboxStatus::Stored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Iterable;

    #[test]
    fn every_domain_status_has_its_own_stored_spelling_and_comes_back() {
        let mut spellings = std::collections::BTreeSet::new();
        for status in OutboxStatus::ALL {
            let stored = Status::from(status);
            assert!(spellings.insert(stored.to_value()), "{status:?}");
            assert_eq!(OutboxStatus::from(stored), status);
        }
        assert_eq!(spellings.len(), Status::iter().count());
    }
}
