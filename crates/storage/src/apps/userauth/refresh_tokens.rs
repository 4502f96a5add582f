//! Userauth's refresh tokens, stored only as SHA-256 hashes. Every token rotated out of one login
//! shares a family id; rotation retires the presented token with a conditional update, so of two
//! concurrent rotations of one token exactly one wins on every backend.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QuerySelect,
};

pub use super::entity::refresh_tokens::Model as RefreshToken;

use super::entity::refresh_tokens::{ActiveModel, Column, Entity};
use crate::StorageError;

/// A refresh token to store, with the access token issued alongside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    pub access_jti: String,
    pub access_expires_at: i64,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// What a stored token is worth at a given time. Revocation outranks retirement, which outranks
/// expiry: a revoked family stays revoked whatever else is true of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTokenState {
    Active,
    Retired,
    Revoked,
    Expired,
}

impl RefreshToken {
    pub fn state(&self, now: i64) -> RefreshTokenState {
        if self.revoked_at.is_some() {
            RefreshTokenState::Revoked
        } else if self.retired_at.is_some() {
            RefreshTokenState::Retired
        } else if self.expires_at <= now {
            RefreshTokenState::Expired
        } else {
            RefreshTokenState::Active
        }
    }
}

/// An access token issued with some token of a family and not expired yet.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct LiveAccessToken {
    pub jti: String,
    pub user_id: String,
    pub expires_at: i64,
}

/// Stores a refresh token. The hash is unique; a collision of 256-bit random tokens does not
/// happen, so a unique violation here is a bug worth surfacing.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    token: &NewRefreshToken,
) -> Result<(), StorageError> {
    let row = ActiveModel {
        token_hash: Set(token.token_hash.clone()),
        family_id: Set(token.family_id.clone()),
        user_id: Set(token.user_id.clone()),
        access_jti: Set(token.access_jti.clone()),
        access_expires_at: Set(token.access_expires_at),
        issued_at: Set(token.issued_at),
        expires_at: Set(token.expires_at),
        ..Default::default()
    };
    Entity::insert(row).exec_without_returning(conn).await?;
    Ok(())
}

/// The stored token with this hash, whatever its state.
pub async fn find<C: ConnectionTrait>(
    conn: &C,
    token_hash: &str,
) -> Result<Option<RefreshToken>, StorageError> {
    Ok(Entity::find()
        .filter(Column::TokenHash.eq(token_hash))
        .one(conn)
        .await?)
}

/// Retires an active token:
/// `UPDATE refresh_tokens SET retired_at = now WHERE token_hash = ? AND retired_at IS NULL AND
/// revoked_at IS NULL AND expires_at > now`. Returns whether this call retired it. The guard makes
/// the update the arbiter between concurrent rotations: the row lock (PostgreSQL, MySQL) or the
/// single writer (SQLite) lets exactly one of them match.
pub async fn retire<C: ConnectionTrait>(
    conn: &C,
    token_hash: &str,
    now: i64,
) -> Result<bool, StorageError> {
    let result = Entity::update_many()
        .col_expr(Column::RetiredAt, Expr::val(now).into())
        .filter(Column::TokenHash.eq(token_hash))
        .filter(Column::RetiredAt.is_null())
        .filter(Column::RevokedAt.is_null())
        .filter(Column::ExpiresAt.gt(now))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Revokes every token of a family that is not revoked yet; returns how many.
pub async fn revoke_family<C: ConnectionTrait>(
    conn: &C,
    family_id: &str,
    now: i64,
) -> Result<u64, StorageError> {
    let result = Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::val(now).into())
        .filter(Column::FamilyId.eq(family_id))
        .filter(Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// The access tokens issued within a family that have not expired by `now`.
pub async fn live_access_tokens<C: ConnectionTrait>(
    conn: &C,
    family_id: &str,
    now: i64,
) -> Result<Vec<LiveAccessToken>, StorageError> {
    Ok(Entity::find()
        .select_only()
        .column_as(Column::AccessJti, "jti")
        .column(Column::UserId)
        .column_as(Column::AccessExpiresAt, "expires_at")
        .filter(Column::FamilyId.eq(family_id))
        .filter(Column::AccessExpiresAt.gt(now))
        .into_model::<LiveAccessToken>()
        .all(conn)
        .await?)
}

/// Deletes tokens that expired before `before`; they can no longer be exchanged, so presenting
/// one afterwards is simply an unknown token. Returns how many were deleted.
pub async fn delete_expired<C: ConnectionTrait>(
    conn: &C,
    before: i64,
) -> Result<u64, StorageError> {
    let result = Entity::delete_many()
        .filter(Column::ExpiresAt.lt(before))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}
