//! The smartflow chat agent: an HTTP API that accepts chat messages as events in its outbox, a
//! relay that moves them to Kafka, and a consumer that stores them in the chat history.
//!
//! A library so that tests and the xtask benchmark can run the whole service in-process with
//! [`Agent::start`]; `main.rs` only adds configuration parsing and signal handling.

pub mod app;
pub mod config;
pub mod events;
pub mod handlers;
pub mod http;

pub use app::{Agent, RunningAgent};
pub use config::AgentConfig;
pub use events::{ChatMessageAppended, Role};
pub use handlers::PersistChatMessage;
