//! What the agent's consumer does with each of its events.

use async_trait::async_trait;
use sea_orm::DatabaseTransaction;
use smartflow_bus::{HandlerError, HandlerRegistry, TypedHandler};
use smartflow_domain::Envelope;
use smartflow_storage::chat_history::{self, NewChatMessage};

use crate::events::ChatMessageAppended;

/// Stores an appended message in the chat history, in the bus's transaction, so the row and the
/// event's `consumed` mark commit together.
#[derive(Debug, Clone, Copy, Default)]
pub struct PersistChatMessage;

#[async_trait]
impl TypedHandler<ChatMessageAppended> for PersistChatMessage {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: ChatMessageAppended,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let message = NewChatMessage {
            // The event id is unique in the table: a second copy of the same event cannot store twice.
            event_id: envelope.event_id.to_string(),
            conversation_id: event.conversation_id,
            user_id: event.user_id,
            role: event.role.as_str().to_owned(),
            content: event.content,
            created_at: event.occurred_at_ms,
        };
        chat_history::insert(txn, &message).await?;
        Ok(())
    }
}

/// Every handler of the agent's consumer.
pub fn registry() -> Result<HandlerRegistry, smartflow_bus::BusError> {
    HandlerRegistry::builder()
        .on::<ChatMessageAppended, _>(PersistChatMessage)
        .build()
}
