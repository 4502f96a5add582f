//! Userauth's refresh tokens, stored only as SHA-256 hashes. Every token rotated out of one login
//! shares a family id; rotation retires the presented token with a conditional update, so of two
//! concurrent rotations of one token exactly one wins on every backend.

use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ConnectionTrait, QueryResult};

use crate::schema::RefreshTokens;
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

/// A stored refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    let stmt = Query::insert()
        .into_table(RefreshTokens::Table)
        .columns([
            RefreshTokens::TokenHash,
            RefreshTokens::FamilyId,
            RefreshTokens::UserId,
            RefreshTokens::AccessJti,
            RefreshTokens::AccessExpiresAt,
            RefreshTokens::IssuedAt,
            RefreshTokens::ExpiresAt,
        ])
        .values_panic([
            token.token_hash.clone().into(),
            token.family_id.clone().into(),
            token.user_id.clone().into(),
            token.access_jti.clone().into(),
            token.access_expires_at.into(),
            token.issued_at.into(),
            token.expires_at.into(),
        ])
        .to_owned();
    conn.execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(())
}

/// The stored token with this hash, whatever its state.
pub async fn find<C: ConnectionTrait>(
    conn: &C,
    token_hash: &str,
) -> Result<Option<RefreshToken>, StorageError> {
    let stmt = Query::select()
        .columns([
            RefreshTokens::TokenHash,
            RefreshTokens::FamilyId,
            RefreshTokens::UserId,
            RefreshTokens::AccessJti,
            RefreshTokens::AccessExpiresAt,
            RefreshTokens::IssuedAt,
            RefreshTokens::ExpiresAt,
            RefreshTokens::RetiredAt,
            RefreshTokens::RevokedAt,
        ])
        .from(RefreshTokens::Table)
        .and_where(Expr::col(RefreshTokens::TokenHash).eq(token_hash))
        .to_owned();
    let Some(row) = conn
        .query_one(conn.get_database_backend().build(&stmt))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(RefreshToken {
        token_hash: get(&row, "token_hash")?,
        family_id: get(&row, "family_id")?,
        user_id: get(&row, "user_id")?,
        access_jti: get(&row, "access_jti")?,
        access_expires_at: get(&row, "access_expires_at")?,
        issued_at: get(&row, "issued_at")?,
        expires_at: get(&row, "expires_at")?,
        retired_at: get(&row, "retired_at")?,
        revoked_at: get(&row, "revoked_at")?,
    }))
}

fn get<T: sea_orm::TryGetable>(row: &QueryResult, col: &str) -> Result<T, StorageError> {
    row.try_get::<T>("", col)
        .map_err(|e| StorageError::Corrupt {
            table: "refresh_tokens".to_owned(),
            reason: format!("column {col}: {e}"),
        })
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
    let stmt = Query::update()
        .table(RefreshTokens::Table)
        .value(RefreshTokens::RetiredAt, now)
        .and_where(Expr::col(RefreshTokens::TokenHash).eq(token_hash))
        .and_where(Expr::col(RefreshTokens::RetiredAt).is_null())
        .and_where(Expr::col(RefreshTokens::RevokedAt).is_null())
        .and_where(Expr::col(RefreshTokens::ExpiresAt).gt(now))
        .to_owned();
    let result = conn
        .execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Revokes every token of a family that is not revoked yet; returns how many.
pub async fn revoke_family<C: ConnectionTrait>(
    conn: &C,
    family_id: &str,
    now: i64,
) -> Result<u64, StorageError> {
    let stmt = Query::update()
        .table(RefreshTokens::Table)
        .value(RefreshTokens::RevokedAt, now)
        .and_where(Expr::col(RefreshTokens::FamilyId).eq(family_id))
        .and_where(Expr::col(RefreshTokens::RevokedAt).is_null())
        .to_owned();
    let result = conn
        .execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(result.rows_affected())
}

/// The access tokens issued within a family that have not expired by `now`.
pub async fn live_access_tokens<C: ConnectionTrait>(
    conn: &C,
    family_id: &str,
    now: i64,
) -> Result<Vec<LiveAccessToken>, StorageError> {
    let stmt = Query::select()
        .columns([
            RefreshTokens::AccessJti,
            RefreshTokens::UserId,
            RefreshTokens::AccessExpiresAt,
        ])
        .from(RefreshTokens::Table)
        .and_where(Expr::col(RefreshTokens::FamilyId).eq(family_id))
        .and_where(Expr::col(RefreshTokens::AccessExpiresAt).gt(now))
        .to_owned();
    let rows = conn
        .query_all(conn.get_database_backend().build(&stmt))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(LiveAccessToken {
                jti: get(row, "access_jti")?,
                user_id: get(row, "user_id")?,
                expires_at: get(row, "access_expires_at")?,
            })
        })
        .collect()
}

/// Deletes tokens that expired before `before`; they can no longer be exchanged, so presenting
/// one afterwards is simply an unknown token. Returns how many were deleted.
pub async fn delete_expired<C: ConnectionTrait>(
    conn: &C,
    before: i64,
) -> Result<u64, StorageError> {
    let stmt = Query::delete()
        .from_table(RefreshTokens::Table)
        .and_where(Expr::col(RefreshTokens::ExpiresAt).lt(before))
        .to_owned();
    let result = conn
        .execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(result.rows_affected())
}
