//! What the agent's consumer does with each of its events.

use async_trait::async_trait;
use sea_orm::DatabaseTransaction;
use smartflow_bus::{BusError, EventBus, HandlerError, HandlerRegistry, TypedHandler};
use smartflow_domain::Envelope;
use smartflow_notification_contracts::NotificationRequested;
use smartflow_storage::chat_history::{self, NewChatMessage};
use smartflow_storage::conversations;

pub use crate::events::{first_message_dedupe_key, tokens_of};
use crate::events::{ChatMessageAppended, TokenUsageRecorded};

/// Stores an appended message in the chat history, in the bus's transaction, so the row and the
/// event's `consumed` mark commit together. The first message of a conversation also requests a
/// notification, in the same transaction, with one dedupe key per conversation.
#[derive(Clone)]
pub struct PersistChatMessage {
    bus: EventBus,
}

impl PersistChatMessage {
    pub fn new(bus: EventBus) -> Self {
        Self { bus }
    }
}

#[async_trait]
impl TypedHandler<ChatMessageAppended> for PersistChatMessage {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: ChatMessageAppended,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let tokens = tokens_of(&event.content);
        let message = NewChatMessage {
            // The event id is unique in the table: a second copy of the same event cannot store twice.
            event_id: envelope.event_id.to_string(),
            conversation_id: event.conversation_id.clone(),
            user_id: event.user_id.clone(),
            role: event.role.as_str().to_owned(),
            content: event.content,
            created_at: event.occurred_at_ms,
        };
        // The post that published this event claimed the conversation already. An event
        // published before conversations had owners (in flight across the upgrade) has none
        // yet: its user started it, unless a newer post claimed it meanwhile.
        if conversations::owner(txn, &event.conversation_id)
            .await?
            .is_none()
        {
            conversations::insert_if_absent(
                txn,
                &event.conversation_id,
                &event.user_id,
                event.occurred_at_ms,
            )
            .await?;
        }
        chat_history::insert(txn, &message).await?;
        // Charged in the transaction that stores the message: exactly once, and only if stored.
        let usage = TokenUsageRecorded {
            user_id: event.user_id.clone(),
            conversation_id: event.conversation_id.clone(),
            tokens,
        };
        self.bus
            .publish(txn, &event.user_id, &usage)
            .await
            .map_err(handler_error)?;
        let first = chat_history::list(txn, &event.conversation_id, 2)
            .await?
            .len()
            == 1;
        if first {
            let request = NotificationRequested {
                channel: "feishu".into(),
                target: None,
                title: "New conversation".into(),
                text: format!(
                    "Conversation {}: first message from {}",
                    event.conversation_id, event.user_id
                ),
                dedupe_key: first_message_dedupe_key(&event.conversation_id),
                requested_by: crate::events::SERVICE.into(),
                user_id: Some(event.user_id.clone()),
            };
            self.bus
                .publish(txn, &request.message_key(), &request)
                .await
                .map_err(handler_error)?;
        }
        Ok(())
    }
}

fn handler_error(e: BusError) -> HandlerError {
    match e {
        BusError::Domain(_) => HandlerError::Permanent(e.to_string()),
        other => HandlerError::Retryable(other.to_string()),
    }
}

/// Every handler of the agent's consumer: the event types it consumes itself. Its other events
/// (`TokenUsageRecorded`) are for other services, which deduplicate them in their own inboxes.
pub fn registry(bus: EventBus) -> Result<HandlerRegistry, BusError> {
    HandlerRegistry::builder()
        .on::<ChatMessageAppended, _>(PersistChatMessage::new(bus))
        .build()
}
