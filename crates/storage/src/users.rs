//! Userauth's accounts: email, password hash, token quota and the usage counted against it.

use sea_orm::sea_query::{Expr, Query, SelectStatement};
use sea_orm::{ConnectionTrait, QueryResult};

use crate::schema::Users;
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

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub token_quota: i64,
    pub token_usage: i64,
    pub created_at: i64,
    pub updated_at: i64,
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
    let stmt = Query::insert()
        .into_table(Users::Table)
        .columns([
            Users::Id,
            Users::Email,
            Users::PasswordHash,
            Users::TokenQuota,
            Users::TokenUsage,
            Users::CreatedAt,
            Users::UpdatedAt,
        ])
        .values_panic([
            user.id.clone().into(),
            user.email.clone().into(),
            user.password_hash.clone().into(),
            user.token_quota.into(),
            0i64.into(),
            now.into(),
            now.into(),
        ])
        .to_owned();
    conn.execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(())
}

fn select() -> SelectStatement {
    Query::select()
        .columns([
            Users::Id,
            Users::Email,
            Users::PasswordHash,
            Users::TokenQuota,
            Users::TokenUsage,
            Users::CreatedAt,
            Users::UpdatedAt,
        ])
        .from(Users::Table)
        .to_owned()
}

fn user(row: &QueryResult) -> Result<User, StorageError> {
    let get = |col: &str| -> Result<_, StorageError> {
        row.try_get::<String>("", col).map_err(|e| corrupt(col, e))
    };
    let num = |col: &str| -> Result<i64, StorageError> {
        row.try_get::<i64>("", col).map_err(|e| corrupt(col, e))
    };
    Ok(User {
        id: get("id")?,
        email: get("email")?,
        password_hash: get("password_hash")?,
        token_quota: num("token_quota")?,
        token_usage: num("token_usage")?,
        created_at: num("created_at")?,
        updated_at: num("updated_at")?,
    })
}

fn corrupt(col: &str, e: sea_orm::DbErr) -> StorageError {
    StorageError::Corrupt {
        table: "users".to_owned(),
        reason: format!("column {col}: {e}"),
    }
}

/// The account with this (normalized) email.
pub async fn find_by_email<C: ConnectionTrait>(
    conn: &C,
    email: &str,
) -> Result<Option<User>, StorageError> {
    let stmt = select()
        .and_where(Expr::col(Users::Email).eq(email))
        .to_owned();
    conn.query_one(conn.get_database_backend().build(&stmt))
        .await?
        .map(|r| user(&r))
        .transpose()
}

/// The account with this id.
pub async fn find_by_id<C: ConnectionTrait>(
    conn: &C,
    id: &str,
) -> Result<Option<User>, StorageError> {
    let stmt = select().and_where(Expr::col(Users::Id).eq(id)).to_owned();
    conn.query_one(conn.get_database_backend().build(&stmt))
        .await?
        .map(|r| user(&r))
        .transpose()
}

/// Adds `tokens` to the user's usage with one atomic `SET token_usage = token_usage + n`, so
/// concurrent additions never lose one another. Returns `false` when no such user exists.
pub async fn add_usage<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    tokens: i64,
) -> Result<bool, StorageError> {
    let stmt = Query::update()
        .table(Users::Table)
        .value(Users::TokenUsage, Expr::col(Users::TokenUsage).add(tokens))
        .value(Users::UpdatedAt, now_millis())
        .and_where(Expr::col(Users::Id).eq(user_id))
        .to_owned();
    let result = conn
        .execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Sets the user's token quota. Returns `false` when no such user exists.
pub async fn set_quota<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
    quota: i64,
) -> Result<bool, StorageError> {
    let stmt = Query::update()
        .table(Users::Table)
        .value(Users::TokenQuota, quota)
        .value(Users::UpdatedAt, now_millis())
        .and_where(Expr::col(Users::Id).eq(user_id))
        .to_owned();
    let result = conn
        .execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(result.rows_affected() == 1)
}
