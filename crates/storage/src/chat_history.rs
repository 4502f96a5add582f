//! The agent's chat history: the business table its consumer fills from outbox events.

use sea_orm::sea_query::{Expr, Func, Order, Query};
use sea_orm::ConnectionTrait;

use crate::schema::ChatHistories;
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

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: i64,
    pub event_id: String,
    pub conversation_id: String,
    pub user_id: String,
    pub role: String,
    pub content: String,
    pub created_at: i64,
}

/// Inserts one message. `event_id` is unique, so the same event can never store twice.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    msg: &NewChatMessage,
) -> Result<(), StorageError> {
    let stmt = Query::insert()
        .into_table(ChatHistories::Table)
        .columns([
            ChatHistories::EventId,
            ChatHistories::ConversationId,
            ChatHistories::UserId,
            ChatHistories::Role,
            ChatHistories::Content,
            ChatHistories::CreatedAt,
        ])
        .values_panic([
            msg.event_id.clone().into(),
            msg.conversation_id.clone().into(),
            msg.user_id.clone().into(),
            msg.role.clone().into(),
            msg.content.clone().into(),
            msg.created_at.into(),
        ])
        .to_owned();
    conn.execute(conn.get_database_backend().build(&stmt))
        .await?;
    Ok(())
}

/// A conversation's messages, oldest first, at most `limit`.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    conversation_id: &str,
    limit: u64,
) -> Result<Vec<ChatMessage>, StorageError> {
    let stmt = Query::select()
        .columns([
            ChatHistories::Id,
            ChatHistories::EventId,
            ChatHistories::ConversationId,
            ChatHistories::UserId,
            ChatHistories::Role,
            ChatHistories::Content,
            ChatHistories::CreatedAt,
        ])
        .from(ChatHistories::Table)
        .and_where(Expr::col(ChatHistories::ConversationId).eq(conversation_id))
        .order_by(ChatHistories::CreatedAt, Order::Asc)
        .order_by(ChatHistories::Id, Order::Asc)
        .limit(limit)
        .to_owned();
    let rows = conn
        .query_all(conn.get_database_backend().build(&stmt))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ChatMessage {
                id: r.try_get("", "id")?,
                event_id: r.try_get("", "event_id")?,
                conversation_id: r.try_get("", "conversation_id")?,
                user_id: r.try_get("", "user_id")?,
                role: r.try_get("", "role")?,
                content: r.try_get("", "content")?,
                created_at: r.try_get("", "created_at")?,
            })
        })
        .collect()
}

/// How many messages are stored in all.
pub async fn count<C: ConnectionTrait>(conn: &C) -> Result<u64, StorageError> {
    let stmt = Query::select()
        .expr_as(
            Func::count(Expr::col(ChatHistories::Id)),
            sea_orm::sea_query::Alias::new("n"),
        )
        .from(ChatHistories::Table)
        .to_owned();
    let row = conn
        .query_one(conn.get_database_backend().build(&stmt))
        .await?;
    let n: i64 = match row {
        Some(r) => r.try_get("", "n")?,
        None => 0,
    };
    Ok(n.max(0) as u64)
}
