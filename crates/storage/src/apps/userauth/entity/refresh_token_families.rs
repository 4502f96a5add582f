use sea_orm::entity::prelude::*;

/// A session: the family of refresh tokens rotated out of one log-in.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_token_families")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub family_id: String,
    pub user_id: String,
    /// When the session began (the log-in), Unix milliseconds.
    pub created_at: i64,
    /// How many times a token of the family was exchanged for a new pair.
    pub rotations: i64,
    /// When the family was revoked (log out, or a replay detected); no rotation after that.
    pub revoked_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
