//! The agent's business tables: the chat history and the conversations' owners.

pub mod chat_history;
pub mod conversations;
mod entity;
