//! The access-token blacklist: the `jti` of every access token logged out (or caught in a
//! replayed refresh family) before it expired. A row is needed only until the token would have
//! expired anyway; after that it may be pruned.

use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::ConnectionTrait;

use crate::schema::RevokedAccessTokens;
use crate::StorageError;

/// Blacklists `jti` until `expires_at`. Blacklisting a token twice changes nothing.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    jti: &str,
    user_id: &str,
    expires_at: i64,
    now: i64,
) -> Result<(), StorageError> {
    let stmt = Query::insert()
        .into_table(RevokedAccessTokens::Table)
        .columns([
            RevokedAccessTokens::Jti,
            RevokedAccessTokens::UserId,
            RevokedAccessTokens::ExpiresAt,
            RevokedAccessTokens::RevokedAt,
        ])
        .values_panic([jti.into(), user_id.into(), expires_at.into(), now.into()])
        .on_conflict(
            OnConflict::column(RevokedAccessTokens::Jti)
                .do_nothing_on([RevokedAccessTokens::Jti])
                .to_owned(),
        )
        .to_owned();
    conn.execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(())
}

/// Whether `jti` is blacklisted.
pub async fn contains<C: ConnectionTrait>(conn: &C, jti: &str) -> Result<bool, StorageError> {
    let stmt = Query::select()
        .column(RevokedAccessTokens::Jti)
        .from(RevokedAccessTokens::Table)
        .and_where(Expr::col(RevokedAccessTokens::Jti).eq(jti))
        .to_owned();
    Ok(conn
        .query_one(conn.get_database_backend().build(&stmt))
        .await?
        .is_some())
}

/// Deletes entries whose token expired before `before`; returns how many.
pub async fn delete_expired<C: ConnectionTrait>(
    conn: &C,
    before: i64,
) -> Result<u64, StorageError> {
    let stmt = Query::delete()
        .from_table(RevokedAccessTokens::Table)
        .and_where(Expr::col(RevokedAccessTokens::ExpiresAt).lt(before))
        .to_owned();
    let result = conn
        .execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(result.rows_affected())
}
