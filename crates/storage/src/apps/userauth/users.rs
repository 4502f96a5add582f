//! Userauth's accounts: email, password hash, token quota and the usage counted against it.

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

pub use super::entity::users::Model as User;

use super::entity::users::{ActiveModel, Column, Entity};
use crate::{now_millis, StorageError};

/// An account to create. `email` must already be normalized (trimmed, lowercased): the unique
/// index compares it byte for byte on every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub token_quota: i64,
}

impl User {
    /// Whether the user may spend no more tokens: usage has reached the quota.
    pub fn is_over_quota(&self) -> bool {
        self.token_usage >= self.token_quota
    }
}

/// Inserts an account with no usage. An email already taken is a unique violation
/// ([`StorageError::is_unique_violation`]), which is how concurrent sign-ups with one email are
/// told apart: exactly one insert succeeds.
pub async fn insert<C: ConnectionTrait>(conn: &C, user: &NewUser) -> Result<(), StorageError> {
    let now = now_millis();
    let row = ActiveModel {
        id: Set(user.id.clone()),
        email: Set(user.email.clone()),
        password_hash: Set(user.password_hash.clone()),
        token_quota: Set(user.token_quota),
        token_usage: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Entity::insert(row).exec_without_returning(conn).await?;
    Ok(())
}

/// The account with this (normalized) email.
pub async fn find_by_email<C: ConnectionTrait>(
    conn: &C,
    email: &str,
) -> Result<Option<User>, StorageError> {
    Ok(Entity::find()
        .filter(Column::Email.eq(email))
        .one(conn)
        .await?)
}

/// The account with this id.
pub async fn find_by_id<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> Result<Option<User>, StorageError> {
    Ok(Entity::find_by_id(id).one(conn).await?)
}

/// Adds `tokens` to the user's usage with one atomic `SET token_usage = token_usage + n`, so
/// concurrent additions never lose one another. Returns `false` when no such user exists.
pub async fn add_usage<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    tokens: i64,
) -> Result<bool, StorageError> {
    let result = Entity::update_many()
        .col_expr(
            Column::TokenUsage,
            Expr::col(Column::TokenUsage).add(tokens),
        )
        .col_expr(Column::UpdatedAt, Expr::val(now_millis()).into())
        .filter(Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Sets the user's token quota. Returns `false` when no such user exists.
pub async fn set_quota<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    quota: i64,
) -> Result<bool, StorageError> {
    let result = Entity::update_many()
        .col_expr(Column::TokenQuota, Expr::val(quota).into())
        .col_expr(Column::UpdatedAt, Expr::val(now_millis()).into())
        .filter(Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Takes the account's row lock for a change to its sessions, if its password hash is still
/// `password_hash` (the one a log-in just verified): `UPDATE users SET updated_at = now WHERE
/// id = ? AND password_hash = ?`. Returns whether it matched. A password change takes the same
/// lock, so a log-in with the old password either commits its session before the change
/// (which then revokes it) or finds the hash changed and opens nothing.
pub async fn lock_if_password_is<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    password_hash: &str,
) -> Result<bool, StorageError> {
    let result = Entity::update_many()
        .col_expr(Column::UpdatedAt, Expr::val(now_millis()).into())
        .filter(Column::Id.eq(user_id))
        .filter(Column::PasswordHash.eq(password_hash))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Replaces the password hash, if it is still `current_hash` (the one the change verified
/// against), taking the account's row lock. Returns whether it did.
pub async fn replace_password_hash<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    current_hash: &str,
    new_hash: &str,
) -> Result<bool, StorageError> {
    let result = Entity::update_many()
        .col_expr(Column::PasswordHash, Expr::val(new_hash).into())
        .col_expr(Column::UpdatedAt, Expr::val(now_millis()).into())
        .filter(Column::Id.eq(user_id))
        .filter(Column::PasswordHash.eq(current_hash))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}
