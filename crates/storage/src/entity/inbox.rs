//! The columns of an inbox. Like the outbox, an inbox table may have any name
//! ([`InboxTable`](crate::inbox::InboxTable)); `table_name` is the default one.

use sea_orm::entity::prelude::*;

/// One inbox row: `consumer` settled `event_id`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub consumer: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: String,
    pub event_type: String,
    pub status: InboxStatus,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub handled_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Whether the consumer applied the event or gave up on it, with the one stored spelling of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum InboxStatus {
    #[sea_orm(string_value = "handled")]
    Handled,
    #[sea_orm(string_value = "dead")]
    Dead,
}
