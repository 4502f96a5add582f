//! `smartflow`, the all-in-one entry point: userauth, the agent and the notification service in
//! one process, on one database and one Kafka (an embedded broker unless brokers are configured).
//!
//! A library so tests can run the whole system in-process with [`start_all`]; `main.rs` only
//! adds configuration parsing and signal handling.

pub mod app;
pub mod config;

pub use app::{start_all, RunningAll};
pub use config::AllConfig;
