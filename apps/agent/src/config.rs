//! The agent's configuration, read once by `main` from flags and `SMARTFLOW_*` variables.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;

use crate::events::DEFAULT_TOPIC;

pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_DATABASE_URL: &str = "sqlite://smartflow.db?mode=rwc";
pub const DEFAULT_DATABASE_WAIT_SECS: u64 = 60;
pub const DEFAULT_KAFKA_PARTITIONS: i32 = 3;
pub const DEFAULT_KAFKA_REPLICATION: i32 = 1;
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 900 * 1024;
pub const DEFAULT_MAX_CONTENT_CHARS: usize = 16_000;
pub const DEFAULT_BROKER_WAIT_SECS: u64 = 60;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;

/// Everything the agent needs to start. Defaults run embedded: a SQLite file next to the process
/// and an in-process Kafka-protocol broker; pointing the URL and brokers elsewhere is all it takes
/// to run against PostgreSQL/MySQL and a real cluster.
///
/// `Debug` redacts the database password, so the struct can be logged whole.
#[derive(Clone, Parser)]
#[command(
    name = "smartflow-agent",
    version,
    about = "The smartflow chat agent service"
)]
pub struct AgentConfig {
    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_HTTP_ADDR", default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// Database URL: sqlite://FILE?mode=rwc, postgres://USER:PASS@HOST:PORT/DB or mysql://...
    // Hidden from `--help` because the value may hold a password.
    #[arg(long, env = "SMARTFLOW_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// PostgreSQL only: the schema to create and use the tables in (default: the search path's).
    #[arg(long, env = "SMARTFLOW_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,

    /// How long start-up keeps retrying an unreachable PostgreSQL/MySQL server, in seconds.
    #[arg(long, env = "SMARTFLOW_DATABASE_WAIT_SECS", default_value_t = DEFAULT_DATABASE_WAIT_SECS)]
    pub database_wait_secs: u64,

    /// Kafka bootstrap servers (host:port,...). Absent: an embedded broker runs in this process.
    #[arg(long, env = "SMARTFLOW_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Partitions of the agent topic when start-up creates it.
    #[arg(long, env = "SMARTFLOW_KAFKA_PARTITIONS", default_value_t = DEFAULT_KAFKA_PARTITIONS,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub kafka_partitions: i32,

    /// Replication factor of the agent topic when start-up creates it on a real cluster.
    #[arg(long, env = "SMARTFLOW_KAFKA_REPLICATION", default_value_t = DEFAULT_KAFKA_REPLICATION,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub kafka_replication: i32,

    /// The Kafka topic of the agent's events.
    #[arg(long, env = "SMARTFLOW_TOPIC", default_value = DEFAULT_TOPIC)]
    pub topic: String,

    /// The userauth service (e.g. http://127.0.0.1:8082). Set: every request needs a userauth
    /// access token (`Authorization: Bearer`) and new messages are refused at the user's quota.
    /// Absent: no authentication, for local development only.
    #[arg(long, env = "SMARTFLOW_USERAUTH_URL")]
    pub userauth_url: Option<String>,

    /// The notification service's topic, where first-message notification requests go.
    #[arg(long, env = "SMARTFLOW_NOTIFICATION_TOPIC", default_value = smartflow_notification_contracts::DEFAULT_TOPIC)]
    pub notification_topic: String,

    /// The largest event envelope accepted, in bytes; keep it under the broker's message.max.bytes.
    #[arg(long, env = "SMARTFLOW_MAX_PAYLOAD_BYTES", default_value_t = DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,

    /// The longest message content accepted, in characters.
    #[arg(long, env = "SMARTFLOW_MAX_CONTENT_CHARS", default_value_t = DEFAULT_MAX_CONTENT_CHARS)]
    pub max_content_chars: usize,

    /// How long start-up keeps retrying an unreachable Kafka cluster, in seconds.
    #[arg(long, env = "SMARTFLOW_BROKER_WAIT_SECS", default_value_t = DEFAULT_BROKER_WAIT_SECS)]
    pub broker_wait_secs: u64,

    /// How long a stop waits for in-flight work before abandoning it, in seconds.
    #[arg(long, env = "SMARTFLOW_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Retry policy, deadlines, timeouts and batch sizes of the bus (see `--help`).
    #[command(flatten)]
    pub reliability: smartflow_service::ReliabilitySettings,
}

impl Default for AgentConfig {
    /// The same values as the command line's defaults, without reading the environment, so tests
    /// and in-process embedders get a hermetic starting point.
    fn default() -> Self {
        Self {
            http_addr: DEFAULT_HTTP_ADDR,
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            database_schema: None,
            database_wait_secs: DEFAULT_DATABASE_WAIT_SECS,
            kafka_brokers: None,
            kafka_partitions: DEFAULT_KAFKA_PARTITIONS,
            kafka_replication: DEFAULT_KAFKA_REPLICATION,
            topic: DEFAULT_TOPIC.to_owned(),
            notification_topic: smartflow_notification_contracts::DEFAULT_TOPIC.to_owned(),
            userauth_url: None,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_content_chars: DEFAULT_MAX_CONTENT_CHARS,
            broker_wait_secs: DEFAULT_BROKER_WAIT_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            reliability: smartflow_service::ReliabilitySettings::default(),
        }
    }
}

impl AgentConfig {
    /// The defaults with another database, an OS-chosen HTTP port and the embedded broker: what
    /// a test or an in-process benchmark wants.
    pub fn embedded(database_url: impl Into<String>) -> Self {
        Self {
            http_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            database_url: database_url.into(),
            ..Self::default()
        }
    }

    /// The brokers to connect to, or `None` for the embedded broker. A blank value counts as
    /// absent, since `SMARTFLOW_KAFKA_BROKERS=` in a compose file usually means "not set".
    pub fn brokers(&self) -> Option<&str> {
        self.kafka_brokers
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
    }

    pub fn database_wait(&self) -> Duration {
        Duration::from_secs(self.database_wait_secs)
    }

    pub fn broker_wait(&self) -> Duration {
        Duration::from_secs(self.broker_wait_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("http_addr", &self.http_addr)
            .field(
                "database_url",
                &smartflow_storage::connect::redact(&self.database_url),
            )
            .field("database_schema", &self.database_schema)
            .field("database_wait_secs", &self.database_wait_secs)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_partitions", &self.kafka_partitions)
            .field("kafka_replication", &self.kafka_replication)
            .field("topic", &self.topic)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("max_content_chars", &self.max_content_chars)
            .field("broker_wait_secs", &self.broker_wait_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("reliability", &self.reliability)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        AgentConfig::command().debug_assert();
    }

    #[test]
    fn flags_override_defaults() {
        let config = AgentConfig::try_parse_from([
            "smartflow-agent",
            "--http-addr",
            "0.0.0.0:9000",
            "--kafka-partitions",
            "6",
            "--database-url",
            "postgres://u:pw@db:5432/app",
            "--kafka-brokers",
            "k1:9092,k2:9092",
        ])
        .unwrap();
        assert_eq!(config.http_addr.port(), 9000);
        assert_eq!(config.kafka_partitions, 6);
        assert_eq!(config.brokers(), Some("k1:9092,k2:9092"));
    }

    #[test]
    fn zero_partitions_are_refused() {
        assert!(
            AgentConfig::try_parse_from(["smartflow-agent", "--kafka-partitions", "0"]).is_err()
        );
    }

    #[test]
    fn debug_output_hides_the_password() {
        let config = AgentConfig::embedded("postgres://app:s3cret@db:5432/app");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@db"), "{shown}");
    }

    #[test]
    fn blank_brokers_mean_embedded() {
        let config = AgentConfig {
            kafka_brokers: Some("  ".into()),
            ..AgentConfig::default()
        };
        assert_eq!(config.brokers(), None);
    }
}
