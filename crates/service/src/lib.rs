//! What the smartflow service binaries (agent, notification, userauth) share at start-up and at
//! run time: the settings every binary takes ([`ServiceSettings`]), the one start-up and
//! shutdown ([`ServiceStart`] -> [`Running`]), the one HTTP server with its limits
//! ([`serve_http`]), service credentials ([`ServiceCredentials`]), the HTTP error type, health
//! check and metrics endpoint of every API, the `main()` skeleton, and a [`ServiceGroup`] for a process that runs
//! several services.
//!
//! Where reading starts: [`ServiceStart::begin`]. The pieces below it (connecting to the
//! database, preparing the broker, supervising tasks, releasing clients) stay public for the
//! tests and tools that need one of them alone.
//!
//! This crate is for the service crates only: like them it speaks `anyhow` at start-up, because
//! a start-up failure is reported to an operator, never decided on. It reads no environment
//! variables; the services parse their configuration and hand the values in.

pub mod admin;
pub mod broker;
pub mod credentials;
pub mod database;
pub mod endpoints;
pub mod error_body;
pub mod group;
pub mod health;
pub mod http_error;
pub mod http_server;
pub mod logging;
pub mod openapi;
pub mod reliability;
pub mod run;
pub mod settings;
pub mod skeleton;
pub mod tasks;

pub use broker::{prepare_broker, BrokerSettings};
pub use credentials::{
    service_credential_required, CredentialError, Secret, ServiceCaller, ServiceCredentials,
    SERVICE_TOKENS_SETTING, SERVICE_TOKEN_HEADER,
};
pub use database::{connect_config, connect_with_retries, DatabaseSettings};
pub use endpoints::{write_gauge, Gauges, Registry as MetricsRegistry, PROMETHEUS_CONTENT_TYPE};
pub use error_body::{database_answers, error_response, ErrorBody, ErrorChain, ErrorDetail};
pub use group::{HostedService, ServiceGroup, ServiceLaunch};
pub use health::{health_check, HealthBody};
pub use http_error::HttpError;
pub use http_server::{serve_http, HttpLimits};
pub use reliability::ReliabilitySettings;
pub use run::{run_service, RunningService};
pub use settings::{KafkaOption, ServiceSettings, LOOPBACK_ANY_PORT};
pub use skeleton::{ConsumerPlan, Migrations, OutboxPlan, Running, ServicePlan, ServiceStart};
pub use tasks::{blocking_drop, release_clients, stop_tasks, supervise, Task};
