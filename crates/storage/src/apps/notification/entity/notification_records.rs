use sea_orm::entity::prelude::*;

/// One stored notification record.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_records")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub channel: String,
    pub dedupe_key: String,
    pub source_event_id: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub status: NotificationStatus,
    /// Provider calls started so far, counted when a sender claims the record.
    pub attempts: i32,
    pub max_attempts: i32,
    /// When a `pending` or `failed` record is due.
    pub next_retry_at: Option<i64>,
    /// The claim token of the sender holding a `sending` record.
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub provider_response: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The delivery state of one notification record, with the one stored spelling of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum NotificationStatus {
    /// Recorded, not yet handed to a provider.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Claimed by a sender holding a lease; the provider call may be under way.
    #[sea_orm(string_value = "sending")]
    Sending,
    /// The provider accepted it. Terminal.
    #[sea_orm(string_value = "sent")]
    Sent,
    /// The last attempt failed with a retryable error; due again at `next_retry_at`.
    #[sea_orm(string_value = "failed")]
    Failed,
    /// Given up: a permanent error or attempts exhausted, with the error kept. Terminal.
    #[sea_orm(string_value = "dead")]
    Dead,
}
