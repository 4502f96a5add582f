//! The all-in-one configuration, read once by `main` from flags and `SMARTFLOW_*` variables, and
//! turned into the three services' own configurations.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::Parser;
use smartflow_agent::AgentConfig;
use smartflow_notification::NotificationConfig;
use smartflow_userauth::UserauthConfig;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://smartflow.db?mode=rwc";
pub const DEFAULT_AGENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
pub const DEFAULT_NOTIFICATION_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);
pub const DEFAULT_USERAUTH_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8082);

/// What the all-in-one process needs: one database and one Kafka for all three services, and an
/// HTTP address for each. Every other setting of a service keeps that service's default; run the
/// services' own binaries to tune them.
///
/// `Debug` hides the database password, the signing secrets and the webhook's token.
#[derive(Clone, Parser)]
#[command(
    name = "smartflow",
    version,
    about = "All smartflow services in one process: agent, notification and userauth",
    long_about = None
)]
pub struct AllConfig {
    /// Database URL shared by all three services: sqlite://FILE?mode=rwc,
    /// postgres://USER:PASS@HOST:PORT/DB or mysql://...
    // Hidden from `--help` because the value may hold a password.
    #[arg(long, env = "SMARTFLOW_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// PostgreSQL only: the schema to create and use the tables in (default: the search path's).
    #[arg(long, env = "SMARTFLOW_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,

    /// Kafka bootstrap servers (host:port,...). Absent: one embedded broker runs in this process
    /// and all three services use it.
    #[arg(long, env = "SMARTFLOW_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Address of the agent's HTTP API (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_AGENT_ADDR", default_value_t = DEFAULT_AGENT_ADDR)]
    pub agent_addr: SocketAddr,

    /// Address of the notification service's HTTP API (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_NOTIFICATION_ADDR", default_value_t = DEFAULT_NOTIFICATION_ADDR)]
    pub notification_addr: SocketAddr,

    /// Address of userauth's HTTP API (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_USERAUTH_ADDR", default_value_t = DEFAULT_USERAUTH_ADDR)]
    pub userauth_addr: SocketAddr,

    /// The HS256 secret that signs access tokens, at least 32 bytes. Absent: a random one per
    /// start, so tokens do not survive a restart.
    #[arg(long, env = "SMARTFLOW_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// The token quota a new account gets (default: userauth's).
    #[arg(long, env = "SMARTFLOW_DEFAULT_TOKEN_QUOTA",
          value_parser = clap::value_parser!(i64).range(0..))]
    pub default_token_quota: Option<i64>,

    /// The Feishu/Lark webhook notifications go to. Absent: notification requests cannot be sent
    /// and end `dead` with the reason.
    #[arg(long, env = "SMARTFLOW_FEISHU_WEBHOOK_URL", hide_env_values = true)]
    pub feishu_webhook_url: Option<String>,

    /// The custom bot's signing secret; requests are signed when it is set.
    #[arg(long, env = "SMARTFLOW_FEISHU_SECRET", hide_env_values = true)]
    pub feishu_secret: Option<String>,

    /// Comma-separated URL prefixes webhooks must start with (default: the notification
    /// service's, the Feishu and Lark custom-bot hooks).
    #[arg(long, env = "SMARTFLOW_FEISHU_ALLOWED_TARGETS")]
    pub feishu_allowed_targets: Option<String>,

    /// Retry policy, deadlines, timeouts and batch sizes of the bus, for all three services.
    #[command(flatten)]
    pub reliability: smartflow_service::ReliabilitySettings,
}

impl AllConfig {
    /// The command line's defaults with another database and OS-chosen HTTP ports, without
    /// reading the environment: what a test wants.
    pub fn embedded(database_url: impl Into<String>) -> Self {
        let any_port = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Self {
            database_url: database_url.into(),
            database_schema: None,
            kafka_brokers: None,
            agent_addr: any_port,
            notification_addr: any_port,
            userauth_addr: any_port,
            jwt_secret: None,
            default_token_quota: None,
            feishu_webhook_url: None,
            feishu_secret: None,
            feishu_allowed_targets: None,
            reliability: smartflow_service::ReliabilitySettings::default(),
        }
    }

    /// The brokers to connect to, or `None` for the embedded broker. A blank value counts as
    /// absent, as in the services.
    pub fn brokers(&self) -> Option<&str> {
        self.kafka_brokers
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
    }

    /// Userauth's configuration, reading the agent's topic on `brokers`.
    pub fn userauth(&self, brokers: &str) -> UserauthConfig {
        let defaults = UserauthConfig::default();
        UserauthConfig {
            http_addr: self.userauth_addr,
            database_url: self.database_url.clone(),
            database_schema: self.database_schema.clone(),
            kafka_brokers: Some(brokers.to_owned()),
            agent_topic: smartflow_agent::events::DEFAULT_TOPIC.to_owned(),
            jwt_secret: self.jwt_secret.clone(),
            default_token_quota: self
                .default_token_quota
                .unwrap_or(defaults.default_token_quota),
            reliability: self.reliability.clone(),
            ..defaults
        }
    }

    /// The agent's configuration on `brokers`, checking tokens with the userauth at
    /// `userauth_url`.
    pub fn agent(&self, brokers: &str, userauth_url: String) -> AgentConfig {
        AgentConfig {
            http_addr: self.agent_addr,
            database_url: self.database_url.clone(),
            database_schema: self.database_schema.clone(),
            kafka_brokers: Some(brokers.to_owned()),
            userauth_url: Some(userauth_url),
            reliability: self.reliability.clone(),
            ..AgentConfig::default()
        }
    }

    /// The notification service's configuration on `brokers`.
    pub fn notification(&self, brokers: &str) -> NotificationConfig {
        let defaults = NotificationConfig::default();
        NotificationConfig {
            http_addr: self.notification_addr,
            database_url: self.database_url.clone(),
            database_schema: self.database_schema.clone(),
            kafka_brokers: Some(brokers.to_owned()),
            feishu_webhook_url: self.feishu_webhook_url.clone(),
            feishu_secret: self.feishu_secret.clone(),
            feishu_allowed_targets: self
                .feishu_allowed_targets
                .clone()
                .unwrap_or(defaults.feishu_allowed_targets.clone()),
            reliability: self.reliability.clone(),
            ..defaults
        }
    }
}

impl fmt::Debug for AllConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("AllConfig")
            .field(
                "database_url",
                &smartflow_storage::connect::redact(&self.database_url),
            )
            .field("database_schema", &self.database_schema)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("agent_addr", &self.agent_addr)
            .field("notification_addr", &self.notification_addr)
            .field("userauth_addr", &self.userauth_addr)
            .field("jwt_secret", &hidden(&self.jwt_secret))
            .field("default_token_quota", &self.default_token_quota)
            .field(
                "feishu_webhook_url",
                &self
                    .feishu_webhook_url
                    .as_deref()
                    .map(smartflow_notification::provider::redact_target),
            )
            .field("feishu_secret", &hidden(&self.feishu_secret))
            .field("feishu_allowed_targets", &self.feishu_allowed_targets)
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
        AllConfig::command().debug_assert();
    }

    #[test]
    fn flags_reach_every_service() {
        let config = AllConfig::try_parse_from([
            "smartflow",
            "--database-url",
            "postgres://u:pw@db:5432/app",
            "--database-schema",
            "flow",
            "--agent-addr",
            "0.0.0.0:9000",
            "--notification-addr",
            "0.0.0.0:9001",
            "--userauth-addr",
            "0.0.0.0:9002",
            "--default-token-quota",
            "5",
        ])
        .unwrap();
        let agent = config.agent("k:9092", "http://127.0.0.1:9002".into());
        let notification = config.notification("k:9092");
        let userauth = config.userauth("k:9092");
        assert_eq!(agent.http_addr.port(), 9000);
        assert_eq!(notification.http_addr.port(), 9001);
        assert_eq!(userauth.http_addr.port(), 9002);
        assert_eq!(agent.userauth_url.as_deref(), Some("http://127.0.0.1:9002"));
        for (url, schema) in [
            (&agent.database_url, &agent.database_schema),
            (&notification.database_url, &notification.database_schema),
            (&userauth.database_url, &userauth.database_schema),
        ] {
            assert_eq!(url, "postgres://u:pw@db:5432/app");
            assert_eq!(schema.as_deref(), Some("flow"));
        }
        assert_eq!(agent.brokers(), Some("k:9092"));
        assert_eq!(notification.brokers(), Some("k:9092"));
        assert_eq!(userauth.brokers(), Some("k:9092"));
        assert_eq!(userauth.agent_topic, agent.topic);
        assert_eq!(agent.notification_topic, notification.topic);
        assert_eq!(userauth.default_token_quota, 5);
    }

    #[test]
    fn unset_options_keep_the_services_defaults() {
        let config = AllConfig::try_parse_from(["smartflow"]).unwrap();
        let notification = config.notification("k:9092");
        assert_eq!(
            notification.feishu_allowed_targets,
            NotificationConfig::default().feishu_allowed_targets
        );
        assert_eq!(
            config.userauth("k:9092").default_token_quota,
            UserauthConfig::default().default_token_quota
        );
        assert_eq!(AllConfig::embedded("sqlite::memory:").agent_addr.port(), 0);
    }

    #[test]
    fn blank_brokers_mean_embedded() {
        let mut config = AllConfig::embedded("sqlite::memory:");
        config.kafka_brokers = Some(" ".into());
        assert_eq!(config.brokers(), None);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = AllConfig::embedded("postgres://app:pw-s3cret@db:5432/app");
        config.jwt_secret = Some("jwt-s3cret-jwt-s3cret-jwt-s3cret-jwt".into());
        config.feishu_secret = Some("sign-s3cret".into());
        config.feishu_webhook_url =
            Some("https://open.feishu.cn/open-apis/bot/v2/hook/token-s3cret".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
