//! The agent's contracts: the events it publishes onto its topic and its route. A service that
//! consumes the agent's events depends on this crate, never on `smartflow-agent`.

use serde::{Deserialize, Serialize};
use smartflow_domain::{DomainError, EventContract, RouteRegistryBuilder, ServiceRoute};

/// The service name under which the agent's route is registered, and the source its events
/// carry.
pub const SERVICE: &str = "agent";
/// The agent's outbox table (in the agent's database).
pub const OUTBOX_TABLE: &str = "agent_outbox";
/// The topic used unless `SMARTFLOW_TOPIC` names another.
pub const DEFAULT_TOPIC: &str = "smartflow.agent.events";
/// The consumer group that writes the agent's chat history.
pub const CONSUMER_GROUP: &str = "smartflow-agent";

/// Who wrote a chat message. An enum rather than a string so that an event carrying any other
/// role cannot be decoded, and ends `dead` with that reason instead of storing nonsense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Assistant, Role::System];

    /// The one spelling used on the wire, in the database and in the HTTP API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }

    /// The role of a spelling, if it is one of [`Role::ALL`].
    pub fn parse(s: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|role| role.as_str() == s)
    }
}

/// A message was appended to a conversation. Published by the agent's HTTP API, handled by the
/// agent's own consumer, which stores it in the chat history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessageAppended {
    pub conversation_id: String,
    pub user_id: String,
    pub role: Role,
    pub content: String,
    /// When the API accepted the message (Unix milliseconds); the history is ordered by it.
    pub occurred_at_ms: i64,
}

impl EventContract for ChatMessageAppended {
    const EVENT_TYPE: &'static str = "agent.chat.message.appended";
}

/// The agent stored a message and spent `tokens` on it for `user_id`. Published in the same
/// transaction that stores the message, so it exists exactly when the message does; consumers
/// (userauth's usage ledger) key it by the envelope's event id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsageRecorded {
    /// The userauth user id: the `sub` of the access token the message was posted with.
    pub user_id: String,
    pub conversation_id: String,
    /// Tokens to add to the user's usage.
    pub tokens: u64,
}

impl EventContract for TokenUsageRecorded {
    const EVENT_TYPE: &'static str = "agent.token.usage.recorded";
}

/// The tokens a message costs, the `tokens` of its [`TokenUsageRecorded`]: about four characters
/// a token, at least one.
pub fn tokens_of(content: &str) -> u64 {
    (content.chars().count() as u64).div_ceil(4).max(1)
}

/// The notification dedupe key the agent requests a conversation's first-message notification
/// under: one notification per conversation.
pub fn first_message_dedupe_key(conversation_id: &str) -> String {
    format!("agent.conversation.first_message:{conversation_id}")
}

/// The agent's route: its outbox table, `topic` and consumer group.
pub fn route(topic: &str) -> Result<ServiceRoute, DomainError> {
    ServiceRoute::new(SERVICE, OUTBOX_TABLE, topic, CONSUMER_GROUP)
}

/// Adds the agent's route and every event type it publishes to a registry: what a consumer of
/// the agent's topic (or the agent itself) calls while building its routes.
pub fn register(
    builder: RouteRegistryBuilder,
    topic: &str,
) -> Result<RouteRegistryBuilder, DomainError> {
    Ok(builder
        .service(route(topic)?)
        .event(ChatMessageAppended::EVENT_TYPE, SERVICE)
        .event(TokenUsageRecorded::EVENT_TYPE, SERVICE))
}

#[cfg(test)]
mod tests {
    use smartflow_domain::RouteRegistry;

    use super::*;

    #[test]
    fn every_agent_event_resolves_to_the_agent_route() {
        let registry = register(RouteRegistry::builder(), DEFAULT_TOPIC)
            .unwrap()
            .build()
            .unwrap();
        for event_type in [
            ChatMessageAppended::EVENT_TYPE,
            TokenUsageRecorded::EVENT_TYPE,
        ] {
            let route = registry.resolve(event_type).unwrap();
            assert_eq!(route.outbox_table, OUTBOX_TABLE);
            assert_eq!(route.topic, DEFAULT_TOPIC);
            assert_eq!(route.consumer_group, CONSUMER_GROUP);
        }
        assert!(route("no spaces allowed").is_err());
    }

    #[test]
    fn roles_have_one_spelling_and_unknown_roles_do_not_decode() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            let json = serde_json::to_value(role).unwrap();
            assert_eq!(json, serde_json::json!(role.as_str()));
        }
        assert_eq!(Role::parse("admin"), None);
        let bad = serde_json::json!({
            "conversation_id": "c", "user_id": "u", "role": "admin",
            "content": "x", "occurred_at_ms": 1
        });
        assert!(serde_json::from_value::<ChatMessageAppended>(bad).is_err());
    }

    #[test]
    fn the_usage_wire_form_is_stable() {
        let event = TokenUsageRecorded {
            user_id: "u".into(),
            conversation_id: "c".into(),
            tokens: 7,
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({"user_id": "u", "conversation_id": "c", "tokens": 7})
        );
        let negative = serde_json::json!({"user_id": "u", "conversation_id": "c", "tokens": -1});
        assert!(serde_json::from_value::<TokenUsageRecorded>(negative).is_err());
    }
}
