//! `smartflow`, the all-in-one entry point: userauth, the agent and the notification service in
//! one process, on one database and one Kafka (an embedded broker unless brokers are configured).
//!
//! A library so tests can run the whole system in-process with [`start_all`]; `main.rs` only
//! adds configuration parsing and signal handling. With a subcommand (`smartflow outbox ...`,
//! `smartflow inbox ...`) the binary is an operator's tool instead ([`admin`]).

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;

pub use app::{start_all, RunningAll};
pub use cli::Cli;
pub use config::AllConfig;
