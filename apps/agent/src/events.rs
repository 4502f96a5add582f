//! The agent's events and where they travel.

use serde::{Deserialize, Serialize};
use smartflow_domain::{DomainError, EventContract, RouteRegistry, ServiceRoute};

/// The service name under which the agent's route is registered.
pub const SERVICE: &str = "agent";
/// The outbox table the migrations create for the agent.
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

/// A message was appended to a conversation. Published by the HTTP API, handled by the agent's
/// own consumer, which stores it in the chat history.
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

/// The agent's route: its outbox table, `topic` and consumer group, with every agent event type
/// registered to it.
pub fn routes(topic: &str, notification_topic: &str) -> Result<RouteRegistry, DomainError> {
    let builder = RouteRegistry::builder()
        .service(agent_route(topic)?)
        .event(ChatMessageAppended::EVENT_TYPE, SERVICE)
        .event(
            smartflow_userauth::events::TokenUsageRecorded::EVENT_TYPE,
            SERVICE,
        );
    // The agent publishes notification requests into the notification service's outbox; that
    // service's relay and consumer take them from there.
    smartflow_notification::register(builder, notification_topic)?.build()
}

/// The agent's service route alone, as the consumer runner wants it.
pub fn agent_route(topic: &str) -> Result<ServiceRoute, DomainError> {
    ServiceRoute::new(SERVICE, OUTBOX_TABLE, topic, CONSUMER_GROUP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_resolves_to_the_agent_route() {
        let registry =
            routes(DEFAULT_TOPIC, smartflow_notification::events::DEFAULT_TOPIC).unwrap();
        let route = registry.resolve(ChatMessageAppended::EVENT_TYPE).unwrap();
        assert_eq!(route.outbox_table, OUTBOX_TABLE);
        assert_eq!(route.topic, DEFAULT_TOPIC);
        assert_eq!(route.consumer_group, CONSUMER_GROUP);
    }

    #[test]
    fn an_illegal_topic_is_refused() {
        assert!(routes(
            "no spaces allowed",
            smartflow_notification::events::DEFAULT_TOPIC
        )
        .is_err());
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
}
