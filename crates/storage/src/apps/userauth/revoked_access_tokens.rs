//! The access-token blacklist: the `jti` of every access token logged out (or caught in a
//! replayed refresh family) before it expired. A row is needed only until the token would have
//! expired anyway; after that it may be pruned.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use super::entity::revoked_access_tokens::{ActiveModel, Column, Entity};
use crate::StorageError;

/// Blacklists `jti` until `expires_at`. Blacklisting a token twice changes nothing.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    jti: &str,
    user_id: &str,
    expires_at: i64,
    now: i64,
) -> Result<(), StorageError> {
    let row = ActiveModel {
        jti: Set(jti.to_owned()),
        user_id: Set(user_id.to_owned()),
        expires_at: Set(expires_at),
        revoked_at: Set(now),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::Jti)
                .do_nothing_on([Column::Jti])
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Whether `jti` is blacklisted.
pub async fn contains<C: ConnectionTrait>(conn: &C, jti: &str) -> Result<bool, StorageError> {
    Ok(Entity::find_by_id(jti).one(conn).await?.is_some())
}

/// Deletes entries whose token expired before `before`; returns how many.
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
