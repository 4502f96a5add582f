use sea_orm::entity::prelude::*;

/// One usage event in the ledger, keyed by its event id.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "token_usage_ledger")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub event_id: String,
    pub user_id: String,
    pub conversation_id: String,
    pub tokens: i64,
    pub occurred_at: i64,
    pub recorded_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
