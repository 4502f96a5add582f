//! Userauth's sessions: one row per refresh-token family, the family's lock.
//!
//! Every rotation and every revocation of a family updates its row first, in the transaction
//! that then touches the family's tokens. The update's row lock (PostgreSQL, MySQL/MariaDB) or
//! the single writer (SQLite) makes them take turns per family, and in read committed each of
//! their later statements reads what the previous holder committed. A revocation therefore sees
//! every token a rotation before it inserted, and a rotation after it finds the family revoked
//! under the same lock and issues nothing; no interleaving leaves a live token in a revoked
//! family.

use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

pub use super::entity::refresh_token_families::Model as RefreshTokenFamily;

use super::entity::refresh_token_families::{ActiveModel, Column, Entity};
use super::entity::refresh_tokens;
use crate::StorageError;

/// Records a new family (a log-in) of `user_id`, in the transaction that stores its first token.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    family_id: &str,
    user_id: &str,
    now: i64,
) -> Result<(), StorageError> {
    let row = ActiveModel {
        family_id: Set(family_id.to_owned()),
        user_id: Set(user_id.to_owned()),
        created_at: Set(now),
        rotations: Set(0),
        revoked_at: Set(None),
    };
    Entity::insert(row).exec_without_returning(conn).await?;
    Ok(())
}

/// The family with this id.
pub async fn find<C: ConnectionTrait>(
    conn: &C,
    family_id: &str,
) -> Result<Option<RefreshTokenFamily>, StorageError> {
    Ok(Entity::find_by_id(family_id).one(conn).await?)
}

/// Takes the family's lock for a rotation, if the family is not revoked and began after
/// `born_after` (the sessions' absolute lifetime): `UPDATE refresh_token_families SET rotations =
/// rotations + 1 WHERE family_id = ? AND revoked_at IS NULL AND created_at > ?`. Returns whether
/// it did; `false` means revoked, too old or no such family ([`find`] tells which), and nothing
/// may be issued in it. Run it first in the rotation's transaction: it waits for a revocation
/// holding the lock and then sees that revocation.
pub async fn lock_for_rotation<C: ConnectionTrait>(
    conn: &C,
    family_id: &str,
    born_after: i64,
) -> Result<bool, StorageError> {
    let result = Entity::update_many()
        .col_expr(Column::Rotations, Expr::col(Column::Rotations).add(1))
        .filter(Column::FamilyId.eq(family_id))
        .filter(Column::RevokedAt.is_null())
        .filter(Column::CreatedAt.gt(born_after))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Marks the family revoked, taking its lock:
/// `UPDATE refresh_token_families SET revoked_at = now WHERE family_id = ? AND revoked_at IS NULL`.
/// Run it first in the revocation's transaction: it waits for a rotation holding the lock, so the
/// statements after it see the token that rotation issued. Returns whether this call revoked it
/// (`false`: revoked already, and no rotation can have issued anything since).
pub async fn revoke<C: ConnectionTrait>(
    conn: &C,
    family_id: &str,
    now: i64,
) -> Result<bool, StorageError> {
    let result = Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::val(now).into())
        .filter(Column::FamilyId.eq(family_id))
        .filter(Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// The ids of `user_id`'s families that are not revoked. Read after taking the account's lock
/// ([`crate::users::lock_if_password_is`], [`crate::users::replace_password_hash`]), it holds
/// every session a log-in can have opened.
pub async fn unrevoked_of_user<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
) -> Result<Vec<String>, StorageError> {
    Ok(Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::RevokedAt.is_null())
        .all(conn)
        .await?
        .into_iter()
        .map(|family| family.family_id)
        .collect())
}

/// Deletes families none of whose tokens are stored any more (every one expired and pruned), so
/// nothing can be rotated or revoked in them; returns how many.
pub async fn delete_without_tokens<C: ConnectionTrait>(conn: &C) -> Result<u64, StorageError> {
    let tokens_of_family = Query::select()
        .expr(Expr::val(1))
        .from(refresh_tokens::Entity)
        .and_where(
            Expr::col((refresh_tokens::Entity, refresh_tokens::Column::FamilyId))
                .equals((Entity, Column::FamilyId)),
        )
        .to_owned();
    let result = Entity::delete_many()
        .filter(Expr::exists(tokens_of_family).not())
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}
