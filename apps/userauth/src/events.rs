//! The events userauth consumes, and where it finds them.
//!
//! `agent.token.usage.recorded` is published by the agent, through the agent's outbox and onto
//! the agent's topic; its contract lives here because userauth is the party that must be able to
//! decode it. The agent registers [`TokenUsageRecorded::EVENT_TYPE`] on its own route.

use serde::{Deserialize, Serialize};
use smartflow_domain::EventContract;

/// The agent's topic unless `SMARTFLOW_AGENT_TOPIC` names another; the agent's default.
pub const DEFAULT_AGENT_TOPIC: &str = "smartflow.agent.events";
/// The consumer group userauth reads the agent's topic in.
pub const CONSUMER_GROUP: &str = "smartflow-userauth";
/// The name of userauth's inbox: `(consumer, event_id)` rows in the `inbox` table.
pub const INBOX_CONSUMER: &str = "userauth";

/// The agent stored a message and spent `tokens` on it for `user_id`. The ledger key is the
/// envelope's event id, so the agent must publish this once per stored message, in the same
/// transaction that stores it (then it exists exactly when the message does).
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

/// Every event type userauth handles; anything else on the agent's topic is skipped.
pub const SUBSCRIBED_EVENT_TYPES: [&str; 1] = [TokenUsageRecorded::EVENT_TYPE];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_stable() {
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
