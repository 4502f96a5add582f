//! Who owns each conversation: the user whose post started it. Only the owner's requests may
//! read or extend a conversation, so ownership is settled synchronously, in the transaction that
//! accepts a message (and publishes its event), not later by the consumer that stores it.

use std::collections::HashSet;

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

use super::entity::conversations::{ActiveModel, Column, Entity};
use crate::StorageError;

/// Whose a conversation is, as seen by the user who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The user owns it (it was theirs already, or this call started it for them).
    Owner,
    /// Another user started it.
    SomeoneElse,
}

/// Starts `conversation_id` for `user_id` unless it exists, then says whether it is theirs.
///
/// Two transactions claiming the same new id concurrently leave one owner: the insert is
/// if-absent on the primary key, so the second waits for the first to end and then reads its
/// row (a locking read, which sees the latest committed row under MySQL's repeatable read too).
/// Run it in the transaction whose commit should make the claim, before anything else of that
/// transaction depends on it. The locked row also serializes concurrent posts to one
/// conversation until their transactions end.
pub async fn claim<C: ConnectionTrait>(
    conn: &C,
    conversation_id: &str,
    user_id: &str,
    now: i64,
) -> Result<Ownership, StorageError> {
    insert_if_absent(conn, conversation_id, user_id, now).await?;
    let owner = Entity::find_by_id(conversation_id)
        .select_only()
        .column(Column::OwnerUserId)
        .lock_exclusive()
        .into_tuple::<String>()
        .one(conn)
        .await?
        .ok_or_else(|| StorageError::Corrupt {
            table: "conversations".to_owned(),
            reason: format!("conversation {conversation_id} is missing right after its insert"),
        })?;
    Ok(if owner == user_id {
        Ownership::Owner
    } else {
        Ownership::SomeoneElse
    })
}

/// Records `user_id` as the owner of `conversation_id` unless it has one. Says nothing about
/// who owns it afterwards; [`claim`] does.
pub async fn insert_if_absent<C: ConnectionTrait>(
    conn: &C,
    conversation_id: &str,
    user_id: &str,
    now: i64,
) -> Result<(), StorageError> {
    let row = ActiveModel {
        id: Set(conversation_id.to_owned()),
        owner_user_id: Set(user_id.to_owned()),
        created_at: Set(now),
    };
    Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::Id)
                .do_nothing_on([Column::Id])
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// The owner of `conversation_id`, or `None` if nobody started it.
pub async fn owner<C: ConnectionTrait>(
    conn: &C,
    conversation_id: &str,
) -> Result<Option<String>, StorageError> {
    Ok(Entity::find_by_id(conversation_id)
        .select_only()
        .column(Column::OwnerUserId)
        .into_tuple::<String>()
        .one(conn)
        .await?)
}

/// Which of `conversation_ids` exist (have an owner).
pub async fn existing<C: ConnectionTrait>(
    conn: &C,
    conversation_ids: &[&str],
) -> Result<HashSet<String>, StorageError> {
    let mut found = HashSet::new();
    for chunk in conversation_ids.chunks(1000) {
        let ids: Vec<String> = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::Id.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(conn)
            .await?;
        found.extend(ids);
    }
    Ok(found)
}

/// How many conversations exist.
pub async fn count<C: ConnectionTrait>(conn: &C) -> Result<u64, StorageError> {
    use sea_orm::PaginatorTrait;
    Ok(Entity::find().count(conn).await?)
}
