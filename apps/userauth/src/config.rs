//! Userauth's configuration, read once by `main` from flags and `SMARTFLOW_*` variables.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;

use crate::events::DEFAULT_AGENT_TOPIC;

pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8082);
pub const DEFAULT_DATABASE_URL: &str = "sqlite://smartflow.db?mode=rwc";
pub const DEFAULT_DATABASE_WAIT_SECS: u64 = 60;
pub const DEFAULT_KAFKA_PARTITIONS: i32 = 3;
pub const DEFAULT_KAFKA_REPLICATION: i32 = 1;
pub const DEFAULT_BROKER_WAIT_SECS: u64 = 60;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
pub const DEFAULT_ACCESS_TOKEN_TTL_SECS: u64 = 15 * 60;
pub const DEFAULT_REFRESH_TOKEN_TTL_SECS: u64 = 30 * 24 * 60 * 60;
pub const DEFAULT_TOKEN_QUOTA: i64 = 100_000;
/// OWASP's recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
pub const DEFAULT_PASSWORD_HASH_MEMORY_KIB: u32 = 19 * 1024;
pub const DEFAULT_PASSWORD_HASH_ITERATIONS: u32 = 2;
/// The shortest signing secret accepted: HS256 wants at least as many bytes as the hash.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Everything userauth needs to start. Defaults run embedded: a SQLite file next to the process
/// (the same file the agent uses by default) and an in-process Kafka-protocol broker.
///
/// `Debug` hides the signing secret and the database password, so the struct can be logged whole.
#[derive(Clone, Parser)]
#[command(
    name = "smartflow-userauth",
    version,
    about = "The smartflow user/auth service"
)]
pub struct UserauthConfig {
    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_HTTP_ADDR", default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// Database URL: sqlite://FILE?mode=rwc, postgres://USER:PASS@HOST:PORT/DB or mysql://...
    #[arg(long, env = "SMARTFLOW_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// PostgreSQL only: the schema to create and use the tables in (default: the search path's).
    #[arg(long, env = "SMARTFLOW_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,

    /// How long start-up keeps retrying an unreachable PostgreSQL/MySQL server, in seconds.
    #[arg(long, env = "SMARTFLOW_DATABASE_WAIT_SECS", default_value_t = DEFAULT_DATABASE_WAIT_SECS)]
    pub database_wait_secs: u64,

    /// Kafka bootstrap servers (host:port,...), the agent's. Absent: an embedded broker runs in
    /// this process, which only an agent in this same process can reach.
    #[arg(long, env = "SMARTFLOW_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Partitions of the agent topic if start-up has to create it.
    #[arg(long, env = "SMARTFLOW_KAFKA_PARTITIONS", default_value_t = DEFAULT_KAFKA_PARTITIONS,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub kafka_partitions: i32,

    /// Replication factor of the agent topic if start-up has to create it on a real cluster.
    #[arg(long, env = "SMARTFLOW_KAFKA_REPLICATION", default_value_t = DEFAULT_KAFKA_REPLICATION,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub kafka_replication: i32,

    /// The agent's topic, where its `agent.token.usage.recorded` events arrive.
    #[arg(long, env = "SMARTFLOW_AGENT_TOPIC", default_value = DEFAULT_AGENT_TOPIC)]
    pub agent_topic: String,

    /// How long start-up keeps retrying an unreachable Kafka cluster, in seconds.
    #[arg(long, env = "SMARTFLOW_BROKER_WAIT_SECS", default_value_t = DEFAULT_BROKER_WAIT_SECS)]
    pub broker_wait_secs: u64,

    /// The HS256 secret that signs access tokens, at least 32 bytes. Absent: a random one is made
    /// at start-up, so tokens do not survive a restart and other instances cannot verify them.
    #[arg(long, env = "SMARTFLOW_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "SMARTFLOW_ACCESS_TOKEN_TTL_SECS", default_value_t = DEFAULT_ACCESS_TOKEN_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub access_token_ttl_secs: u64,

    /// Lifetime of a refresh token, in seconds. Each refresh issues a new one with a full lifetime.
    #[arg(long, env = "SMARTFLOW_REFRESH_TOKEN_TTL_SECS", default_value_t = DEFAULT_REFRESH_TOKEN_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub refresh_token_ttl_secs: u64,

    /// The token quota a new account gets.
    #[arg(long, env = "SMARTFLOW_DEFAULT_TOKEN_QUOTA", default_value_t = DEFAULT_TOKEN_QUOTA,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub default_token_quota: i64,

    /// Argon2id memory cost per password hash, in KiB.
    #[arg(long, env = "SMARTFLOW_PASSWORD_HASH_MEMORY_KIB", default_value_t = DEFAULT_PASSWORD_HASH_MEMORY_KIB,
          value_parser = clap::value_parser!(u32).range(8..=1_048_576))]
    pub password_hash_memory_kib: u32,

    /// Argon2id passes per password hash.
    #[arg(long, env = "SMARTFLOW_PASSWORD_HASH_ITERATIONS", default_value_t = DEFAULT_PASSWORD_HASH_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub password_hash_iterations: u32,

    /// How long a stop waits for in-flight work before abandoning it, in seconds.
    #[arg(long, env = "SMARTFLOW_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Retry policy, deadlines, timeouts and batch sizes of the bus (see `--help`).
    #[command(flatten)]
    pub reliability: smartflow_service::ReliabilitySettings,
}

impl Default for UserauthConfig {
    /// The command line's defaults, without reading the environment.
    fn default() -> Self {
        Self {
            http_addr: DEFAULT_HTTP_ADDR,
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            database_schema: None,
            database_wait_secs: DEFAULT_DATABASE_WAIT_SECS,
            kafka_brokers: None,
            kafka_partitions: DEFAULT_KAFKA_PARTITIONS,
            kafka_replication: DEFAULT_KAFKA_REPLICATION,
            agent_topic: DEFAULT_AGENT_TOPIC.to_owned(),
            broker_wait_secs: DEFAULT_BROKER_WAIT_SECS,
            jwt_secret: None,
            access_token_ttl_secs: DEFAULT_ACCESS_TOKEN_TTL_SECS,
            refresh_token_ttl_secs: DEFAULT_REFRESH_TOKEN_TTL_SECS,
            default_token_quota: DEFAULT_TOKEN_QUOTA,
            password_hash_memory_kib: DEFAULT_PASSWORD_HASH_MEMORY_KIB,
            password_hash_iterations: DEFAULT_PASSWORD_HASH_ITERATIONS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            reliability: smartflow_service::ReliabilitySettings::default(),
        }
    }
}

impl UserauthConfig {
    /// The defaults with another database, an OS-chosen HTTP port and the embedded broker.
    pub fn embedded(database_url: impl Into<String>) -> Self {
        Self {
            http_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            database_url: database_url.into(),
            ..Self::default()
        }
    }

    /// The brokers to connect to, or `None` for the embedded broker; blank counts as absent.
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

    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs)
    }

    pub fn refresh_token_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_secs)
    }
}

impl fmt::Debug for UserauthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserauthConfig")
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
            .field("agent_topic", &self.agent_topic)
            .field("broker_wait_secs", &self.broker_wait_secs)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("access_token_ttl_secs", &self.access_token_ttl_secs)
            .field("refresh_token_ttl_secs", &self.refresh_token_ttl_secs)
            .field("default_token_quota", &self.default_token_quota)
            .field("password_hash_memory_kib", &self.password_hash_memory_kib)
            .field("password_hash_iterations", &self.password_hash_iterations)
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
        UserauthConfig::command().debug_assert();
    }

    #[test]
    fn flags_override_defaults() {
        let config = UserauthConfig::try_parse_from([
            "smartflow-userauth",
            "--http-addr",
            "0.0.0.0:9001",
            "--agent-topic",
            "custom.agent",
            "--access-token-ttl-secs",
            "60",
            "--default-token-quota",
            "5",
        ])
        .unwrap();
        assert_eq!(config.http_addr.port(), 9001);
        assert_eq!(config.agent_topic, "custom.agent");
        assert_eq!(config.access_token_ttl(), Duration::from_secs(60));
        assert_eq!(config.default_token_quota, 5);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for args in [
            ["--access-token-ttl-secs", "0"],
            ["--default-token-quota", "-1"],
            ["--kafka-partitions", "0"],
            ["--password-hash-iterations", "0"],
        ] {
            let mut argv = vec!["smartflow-userauth"];
            argv.extend(args);
            assert!(UserauthConfig::try_parse_from(argv).is_err(), "{args:?}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = UserauthConfig::embedded("postgres://app:s3cret@db:5432/app");
        config.jwt_secret = Some("the-signing-secret-that-must-not-leak".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("must-not-leak"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
