//! The agent's business table.

pub mod chat_history;
mod entity;
