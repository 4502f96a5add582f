use sea_orm::entity::prelude::*;

/// A stored refresh token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// SHA-256 of the token, hex; unique.
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    pub access_jti: String,
    pub access_expires_at: i64,
    pub issued_at: i64,
    pub expires_at: i64,
    /// When it was exchanged for a new pair; presenting it again after that is a replay.
    pub retired_at: Option<i64>,
    /// When its family was revoked (log out, or a replay detected).
    pub revoked_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
