//! The agent's configuration, read once by `main` from flags and `SMARTFLOW_*` variables.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Parser;
use smartflow_service::{Secret, ServiceSettings, LOOPBACK_ANY_PORT};

use crate::events::DEFAULT_TOPIC;

pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 900 * 1024;
pub const DEFAULT_MAX_CONTENT_CHARS: usize = 16_000;

/// Everything the agent needs to start. Defaults run embedded: a SQLite file next to the process
/// and an in-process Kafka-protocol broker; pointing the URL and brokers elsewhere is all it takes
/// to run against PostgreSQL/MySQL and a real cluster.
///
/// `Debug` shows the database URL with its password redacted (see [`ServiceSettings`]), so the
/// struct can be logged whole.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "smartflow-agent",
    version,
    about = "The smartflow chat agent service"
)]
pub struct AgentConfig {
    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_HTTP_ADDR", default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// The Kafka topic of the agent's events.
    #[arg(long, env = "SMARTFLOW_TOPIC", default_value = DEFAULT_TOPIC)]
    pub topic: String,

    /// The userauth service (e.g. http://127.0.0.1:8082). Set: every request needs a userauth
    /// access token (`Authorization: Bearer`) and new messages are refused at the user's quota.
    /// Absent: no authentication, for local development only.
    #[arg(long, env = "SMARTFLOW_USERAUTH_URL")]
    pub userauth_url: Option<String>,

    /// The service credential the agent presents to userauth's `GET /v1/auth/authorize` (the
    /// secret of one of userauth's SMARTFLOW_SERVICE_TOKENS). Required with
    /// SMARTFLOW_USERAUTH_URL.
    #[arg(long, env = "SMARTFLOW_USERAUTH_TOKEN", hide_env_values = true)]
    pub userauth_token: Option<Secret>,

    /// Userauth's Ed25519 public key (PEM, as `openssl pkey -pubout` writes it, or base64 of
    /// the DER or of the 32 raw bytes; userauth logs it at start). The agent verifies every
    /// access token's signature, issuer, audience and expiry with it before asking userauth
    /// anything. Required with SMARTFLOW_USERAUTH_URL.
    #[arg(long, env = "SMARTFLOW_USERAUTH_PUBLIC_KEY")]
    pub userauth_public_key: Option<String>,

    /// The notification service's topic, where first-message notification requests go.
    #[arg(long, env = "SMARTFLOW_NOTIFICATION_TOPIC", default_value = smartflow_notification_contracts::DEFAULT_TOPIC)]
    pub notification_topic: String,

    /// The largest event envelope accepted, in bytes; keep it under the broker's message.max.bytes.
    #[arg(long, env = "SMARTFLOW_MAX_PAYLOAD_BYTES", default_value_t = DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,

    /// The longest message content accepted, in characters.
    #[arg(long, env = "SMARTFLOW_MAX_CONTENT_CHARS", default_value_t = DEFAULT_MAX_CONTENT_CHARS)]
    pub max_content_chars: usize,

    /// The database, the broker, start-up waits, the stop's grace and the bus's reliability.
    #[command(flatten)]
    pub service: ServiceSettings,
}

impl Default for AgentConfig {
    /// The same values as the command line's defaults, without reading the environment, so tests
    /// and in-process embedders get a hermetic starting point.
    fn default() -> Self {
        Self {
            http_addr: DEFAULT_HTTP_ADDR,
            topic: DEFAULT_TOPIC.to_owned(),
            notification_topic: smartflow_notification_contracts::DEFAULT_TOPIC.to_owned(),
            userauth_url: None,
            userauth_token: None,
            userauth_public_key: None,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_content_chars: DEFAULT_MAX_CONTENT_CHARS,
            service: ServiceSettings::default(),
        }
    }
}

impl AgentConfig {
    /// The defaults with another database, an OS-chosen HTTP port and the embedded broker: what
    /// a test or an in-process benchmark wants.
    pub fn embedded(database_url: impl Into<String>) -> Self {
        Self {
            http_addr: LOOPBACK_ANY_PORT,
            service: ServiceSettings::on_database(database_url),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_setting_is_in_the_operations_guide() {
        smartflow_testkit::settings_doc::check_operations_guide(
            env!("CARGO_MANIFEST_DIR"),
            "agent",
            &AgentConfig::command(),
            Some(&smartflow_service::ServiceSettings::command()),
        );
    }

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
            "--max-content-chars",
            "10",
        ])
        .unwrap();
        assert_eq!(config.http_addr.port(), 9000);
        assert_eq!(config.service.kafka_partitions, 6);
        assert_eq!(config.service.brokers(), Some("k1:9092,k2:9092"));
        assert_eq!(config.max_content_chars, 10);
    }

    #[test]
    fn debug_output_hides_the_password_and_the_service_tokens() {
        let mut config = AgentConfig::embedded("postgres://app:s3cret@db:5432/app");
        let secret = "the-service-token-that-must-not-leak";
        config.userauth_token = Some(Secret::new(secret));
        config.service.service_tokens = Some(Secret::new(format!("assistant={secret}")));
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("app:***@db"), "{shown}");
    }
}
