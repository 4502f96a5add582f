//! What the smartflow service binaries (agent, notification, userauth) share at start-up and at
//! run time: connecting to the database, preparing the broker, supervising background tasks and
//! releasing clients at shutdown, the `main()` skeleton, the JSON error body of the HTTP APIs,
//! the health check, and the reliability settings every binary takes.
//!
//! This crate is for the service crates only: like them it speaks `anyhow` at start-up, because
//! a start-up failure is reported to an operator, never decided on. It reads no environment
//! variables; the services parse their configuration and hand the values in.

pub mod broker;
pub mod database;
pub mod error_body;
pub mod health;
pub mod reliability;
pub mod run;
pub mod tasks;

pub use broker::{prepare_broker, BrokerSettings};
pub use database::{connect_config, connect_with_retries, DatabaseSettings};
pub use error_body::{database_answers, error_response, ErrorBody, ErrorChain, ErrorDetail};
pub use health::{health_check, HealthBody};
pub use reliability::ReliabilitySettings;
pub use run::{run_service, RunningService};
pub use tasks::{blocking_drop, release_clients, stop_tasks, supervise, Task};
