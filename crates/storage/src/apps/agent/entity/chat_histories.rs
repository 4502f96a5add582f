use sea_orm::entity::prelude::*;

/// A stored chat message.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chat_histories")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unique: the same event can never store twice.
    pub event_id: String,
    pub conversation_id: String,
    pub user_id: String,
    pub role: String,
    #[sea_orm(column_type = "Text")]
    pub content: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
