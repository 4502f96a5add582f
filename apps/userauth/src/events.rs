//! The events userauth consumes, and where it finds them.
//!
//! `agent.token.usage.recorded` is the agent's event (its contracts crate defines it),
//! published through the agent's outbox onto the agent's topic; userauth reads that topic with
//! an inbox consumer in its own database.

pub use smartflow_agent_contracts::TokenUsageRecorded;
use smartflow_domain::EventContract;

/// The agent's topic unless `SMARTFLOW_AGENT_TOPIC` names another; the agent's default.
pub const DEFAULT_AGENT_TOPIC: &str = smartflow_agent_contracts::DEFAULT_TOPIC;
/// The consumer group userauth reads the agent's topic in.
pub const CONSUMER_GROUP: &str = "smartflow-userauth";
/// The name of userauth's inbox: `(consumer, event_id)` rows in the `inbox` table.
pub const INBOX_CONSUMER: &str = "userauth";

/// Every event type userauth handles; anything else on the agent's topic is skipped.
pub const SUBSCRIBED_EVENT_TYPES: [&str; 1] = [TokenUsageRecorded::EVENT_TYPE];
