//! The agent's chat history: the business table its consumer fills from outbox events.

use std::collections::HashSet;

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

pub use super::entity::chat_histories::Model as ChatMessage;

use super::entity::chat_histories::{ActiveModel, Column, Entity};
use crate::StorageError;

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChatMessage {
    pub event_id: String,
    pub conversation_id: String,
    pub user_id: String,
    pub role: String,
    pub content: String,
    pub created_at: i64,
}

impl NewChatMessage {
    fn row(&self) -> ActiveModel {
        ActiveModel {
            event_id: Set(self.event_id.clone()),
            conversation_id: Set(self.conversation_id.clone()),
            user_id: Set(self.user_id.clone()),
            role: Set(self.role.clone()),
            content: Set(self.content.clone()),
            created_at: Set(self.created_at),
            ..Default::default()
        }
    }
}

/// Inserts one message. `event_id` is unique, so the same event can never store twice.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    msg: &NewChatMessage,
) -> Result<(), StorageError> {
    Entity::insert(msg.row())
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Rows per multi-row insert: 7 parameters a row, well inside every backend's limit.
const ROWS_PER_INSERT: usize = 1000;

/// Inserts the messages in the order given, with one multi-row statement per thousand.
pub async fn insert_all<C: ConnectionTrait>(
    conn: &C,
    messages: &[NewChatMessage],
) -> Result<(), StorageError> {
    for chunk in messages.chunks(ROWS_PER_INSERT) {
        Entity::insert_many(chunk.iter().map(NewChatMessage::row))
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// Which of `conversation_ids` have at least one stored message.
pub async fn conversations_with_messages<C: ConnectionTrait>(
    conn: &C,
    conversation_ids: &[&str],
) -> Result<HashSet<String>, StorageError> {
    let mut found = HashSet::new();
    for chunk in conversation_ids.chunks(ROWS_PER_INSERT) {
        let ids: Vec<String> = Entity::find()
            .select_only()
            .column(Column::ConversationId)
            .distinct()
            .filter(Column::ConversationId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(conn)
            .await?;
        found.extend(ids);
    }
    Ok(found)
}

/// A conversation's messages, oldest first, at most `limit`.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    conversation_id: &str,
    limit: u64,
) -> Result<Vec<ChatMessage>, StorageError> {
    Ok(Entity::find()
        .filter(Column::ConversationId.eq(conversation_id))
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Where a message stands in its conversation's history, which is ordered by `created_at` and,
/// among messages of the same millisecond, by the order they were stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPosition {
    pub created_at: i64,
    pub id: i64,
}

impl HistoryPosition {
    /// The position of a stored message.
    pub fn of(message: &ChatMessage) -> Self {
        Self {
            created_at: message.created_at,
            id: message.id,
        }
    }
}

/// A conversation's newest messages, newest first, at most `limit`: all of them, or only those
/// before `before`. Paging backwards from the newest message costs the same at any depth: the
/// `(conversation_id, created_at)` index is read from the position on.
pub async fn newest_before<C: ConnectionTrait>(
    conn: &C,
    conversation_id: &str,
    before: Option<HistoryPosition>,
    limit: u64,
) -> Result<Vec<ChatMessage>, StorageError> {
    let mut query = Entity::find().filter(Column::ConversationId.eq(conversation_id));
    if let Some(before) = before {
        query = query.filter(
            Condition::any()
                .add(Column::CreatedAt.lt(before.created_at))
                .add(
                    Condition::all()
                        .add(Column::CreatedAt.eq(before.created_at))
                        .add(Column::Id.lt(before.id)),
                ),
        );
    }
    Ok(query
        .order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::Id)
        .limit(limit)
        .all(conn)
        .await?)
}

/// How many messages are stored in all.
pub async fn count<C: ConnectionTrait>(conn: &C) -> Result<u64, StorageError> {
    Ok(Entity::find().count(conn).await?)
}
