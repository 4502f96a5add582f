//! What the agent's consumer does with each of its events.

use std::collections::HashSet;

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
        self.handle_batch(txn, vec![(event, envelope)]).await
    }

    /// The messages of a batch with a few statements whatever its size: one read of which
    /// conversations exist and one of which have messages, one multi-row insert of the messages,
    /// one of their usage events and one of the notification requests.
    async fn handle_batch(
        &self,
        txn: &DatabaseTransaction,
        events: Vec<(ChatMessageAppended, &Envelope)>,
    ) -> Result<(), HandlerError> {
        let mut conversation_ids: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        for (event, _) in &events {
            if seen.insert(event.conversation_id.as_str()) {
                conversation_ids.push(&event.conversation_id);
            }
        }
        // The post that published an event claimed its conversation already. An event
        // published before conversations had owners (in flight across the upgrade) has none
        // yet: its user started it, unless a newer post claimed it meanwhile.
        let mut owned = conversations::existing(txn, &conversation_ids).await?;
        for (event, _) in &events {
            if owned.insert(event.conversation_id.clone()) {
                conversations::insert_if_absent(
                    txn,
                    &event.conversation_id,
                    &event.user_id,
                    event.occurred_at_ms,
                )
                .await?;
            }
        }
        // A conversation with no message stored before these gets its notification with the
        // first of them.
        let mut started = chat_history::conversations_with_messages(txn, &conversation_ids).await?;
        let mut messages = Vec::with_capacity(events.len());
        let mut usages = Vec::with_capacity(events.len());
        let mut requests = Vec::new();
        for (event, envelope) in &events {
            usages.push(TokenUsageRecorded {
                user_id: event.user_id.clone(),
                conversation_id: event.conversation_id.clone(),
                tokens: tokens_of(&event.content),
            });
            if started.insert(event.conversation_id.clone()) {
                requests.push(first_message_request(event));
            }
            messages.push(NewChatMessage {
                // The event id is unique in the table: a second copy of the same event cannot
                // store twice.
                event_id: envelope.event_id.to_string(),
                conversation_id: event.conversation_id.clone(),
                user_id: event.user_id.clone(),
                role: event.role.as_str().to_owned(),
                content: event.content.clone(),
                created_at: event.occurred_at_ms,
            });
        }
        chat_history::insert_all(txn, &messages).await?;
        // Charged in the transaction that stores the messages: exactly once, and only if stored.
        let usages: Vec<(&str, &TokenUsageRecorded)> =
            usages.iter().map(|u| (u.user_id.as_str(), u)).collect();
        self.bus
            .publish_all(txn, &usages)
            .await
            .map_err(handler_error)?;
        let keys: Vec<String> = requests.iter().map(|r| r.message_key()).collect();
        let requests: Vec<(&str, &NotificationRequested)> =
            keys.iter().map(String::as_str).zip(&requests).collect();
        self.bus
            .publish_all(txn, &requests)
            .await
            .map_err(handler_error)?;
        Ok(())
    }
}

/// The notification the first message of a conversation requests, with one dedupe key per
/// conversation.
fn first_message_request(event: &ChatMessageAppended) -> NotificationRequested {
    NotificationRequested {
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
