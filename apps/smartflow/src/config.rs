//! The all-in-one configuration, read once by `main` from flags and `SMARTFLOW_*` variables, and
//! turned into the three services' own configurations.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use smartflow_agent::AgentConfig;
use smartflow_notification::NotificationConfig;
use smartflow_service::{Secret, ServiceSettings, LOOPBACK_ANY_PORT};
use smartflow_userauth::config::SigningKeySettings;
use smartflow_userauth::jwt::SigningKey;
use smartflow_userauth::UserauthConfig;
use smartflow_userauth_contracts::PublicKey;

pub const DEFAULT_AGENT_ADDR: SocketAddr = smartflow_agent::config::DEFAULT_HTTP_ADDR;
pub const DEFAULT_NOTIFICATION_ADDR: SocketAddr = smartflow_notification::config::DEFAULT_HTTP_ADDR;
pub const DEFAULT_USERAUTH_ADDR: SocketAddr = smartflow_userauth::config::DEFAULT_HTTP_ADDR;
pub const DEFAULT_OPERATOR_TOKEN_FILE: &str = "smartflow-operator.token";
/// The name of the credential the agent checks tokens at userauth with; reserved here.
pub const AGENT_CREDENTIAL: &str = "agent";

/// What the all-in-one process needs: one database and one Kafka for all three services (with
/// the start-up waits, the stop's grace and the reliability settings every service takes), an
/// HTTP address for each, and the few service settings the walkthrough needs. Every other
/// setting of a service keeps that service's default; run the services' own binaries to tune
/// them.
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
    /// Address of the agent's HTTP API (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_AGENT_ADDR", default_value_t = DEFAULT_AGENT_ADDR)]
    pub agent_addr: SocketAddr,

    /// Address of the notification service's HTTP API (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_NOTIFICATION_ADDR", default_value_t = DEFAULT_NOTIFICATION_ADDR)]
    pub notification_addr: SocketAddr,

    /// Address of userauth's HTTP API (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_USERAUTH_ADDR", default_value_t = DEFAULT_USERAUTH_ADDR)]
    pub userauth_addr: SocketAddr,

    /// Where userauth's signing key comes from; the agent is given its public key. Absent: a
    /// new key per start, so tokens do not survive a restart.
    #[command(flatten)]
    pub signing: SigningKeySettings,

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

    /// Where the generated `operator` service credential is written (mode 0600) when
    /// SMARTFLOW_SERVICE_TOKENS is unset: send its contents in `X-Smartflow-Service-Token` to
    /// `/metrics` and `/v1/notifications`. Overwritten at every start.
    #[arg(long, env = "SMARTFLOW_OPERATOR_TOKEN_FILE", default_value = DEFAULT_OPERATOR_TOKEN_FILE)]
    pub operator_token_file: Option<PathBuf>,

    /// The database and the Kafka cluster of all three services (absent brokers: one embedded
    /// broker runs in this process and all three use it), start-up waits, the stop's grace and
    /// the bus's reliability.
    #[command(flatten)]
    pub service: ServiceSettings,
}

impl AllConfig {
    /// The command line's defaults with another database and OS-chosen HTTP ports, without
    /// reading the environment: what a test wants.
    pub fn embedded(database_url: impl Into<String>) -> Self {
        Self {
            agent_addr: LOOPBACK_ANY_PORT,
            notification_addr: LOOPBACK_ANY_PORT,
            userauth_addr: LOOPBACK_ANY_PORT,
            signing: SigningKeySettings::default(),
            default_token_quota: None,
            feishu_webhook_url: None,
            feishu_secret: None,
            feishu_allowed_targets: None,
            operator_token_file: None,
            service: ServiceSettings::on_database(database_url),
        }
    }

    /// The settings every service gets: these, on the cluster at `brokers`; `new_broker` when
    /// this process started it empty.
    pub fn service_on(&self, brokers: &str, new_broker: bool) -> ServiceSettings {
        ServiceSettings {
            kafka_brokers: Some(brokers.to_owned()),
            new_broker,
            ..self.service.clone()
        }
    }

    /// Userauth's configuration, reading the agent's topic, signing with `signing_key`.
    pub fn userauth(&self, service: ServiceSettings, signing_key: &SigningKey) -> UserauthConfig {
        let defaults = UserauthConfig::default();
        UserauthConfig {
            http_addr: self.userauth_addr,
            agent_topic: smartflow_agent::events::DEFAULT_TOPIC.to_owned(),
            signing: SigningKeySettings::with_key(signing_key),
            default_token_quota: self
                .default_token_quota
                .unwrap_or(defaults.default_token_quota),
            service,
            ..defaults
        }
    }

    /// The agent's configuration, verifying tokens with `userauth_key` and checking them with
    /// the userauth at `userauth_url` with the credential `userauth_token`.
    pub fn agent(
        &self,
        service: ServiceSettings,
        userauth_url: String,
        userauth_token: Secret,
        userauth_key: &PublicKey,
    ) -> AgentConfig {
        AgentConfig {
            http_addr: self.agent_addr,
            userauth_url: Some(userauth_url),
            userauth_token: Some(userauth_token),
            userauth_public_key: Some(userauth_key.to_pem()),
            service,
            ..AgentConfig::default()
        }
    }

    /// The notification service's configuration.
    pub fn notification(&self, service: ServiceSettings) -> NotificationConfig {
        let defaults = NotificationConfig::default();
        NotificationConfig {
            http_addr: self.notification_addr,
            feishu_webhook_url: self.feishu_webhook_url.clone(),
            feishu_secret: self.feishu_secret.clone(),
            feishu_allowed_targets: self
                .feishu_allowed_targets
                .clone()
                .unwrap_or(defaults.feishu_allowed_targets.clone()),
            service,
            ..defaults
        }
    }
}

impl fmt::Debug for AllConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("AllConfig")
            .field("agent_addr", &self.agent_addr)
            .field("notification_addr", &self.notification_addr)
            .field("userauth_addr", &self.userauth_addr)
            .field("signing", &self.signing)
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
            .field("operator_token_file", &self.operator_token_file)
            .field("service", &self.service)
            .finish()
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
            "smartflow",
            &AllConfig::command(),
            Some(&smartflow_service::ServiceSettings::command()),
        );
    }

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
            "--shutdown-grace-secs",
            "7",
        ])
        .unwrap();
        let service = config.service_on("k:9092", false);
        let key = SigningKey::generate();
        let agent = config.agent(
            service.clone(),
            "http://127.0.0.1:9002".into(),
            Secret::new("x".repeat(32)),
            key.public_key(),
        );
        let notification = config.notification(service.clone());
        let userauth = config.userauth(service, &key);
        let signing = userauth.signing.signing_key.as_ref().unwrap().expose();
        assert_eq!(
            SigningKey::parse(signing).unwrap().public_key(),
            key.public_key()
        );
        let verifying = agent.userauth_public_key.as_deref().unwrap();
        assert_eq!(&PublicKey::parse(verifying).unwrap(), key.public_key());
        assert_eq!(agent.http_addr.port(), 9000);
        assert_eq!(notification.http_addr.port(), 9001);
        assert_eq!(userauth.http_addr.port(), 9002);
        assert_eq!(agent.userauth_url.as_deref(), Some("http://127.0.0.1:9002"));
        for service in [&agent.service, &notification.service, &userauth.service] {
            assert_eq!(service.database_url, "postgres://u:pw@db:5432/app");
            assert_eq!(service.database_schema.as_deref(), Some("flow"));
            assert_eq!(service.brokers(), Some("k:9092"));
            assert_eq!(service.shutdown_grace_secs, 7);
        }
        assert_eq!(userauth.agent_topic, agent.topic);
        assert_eq!(agent.notification_topic, notification.topic);
        assert_eq!(userauth.default_token_quota, 5);
    }

    #[test]
    fn unset_options_keep_the_services_defaults() {
        let config = AllConfig::try_parse_from(["smartflow"]).unwrap();
        let service = config.service_on("k:9092", true);
        assert!(service.new_broker);
        let notification = config.notification(service.clone());
        assert_eq!(
            notification.feishu_allowed_targets,
            NotificationConfig::default().feishu_allowed_targets
        );
        assert_eq!(
            config
                .userauth(service, &SigningKey::generate())
                .default_token_quota,
            UserauthConfig::default().default_token_quota
        );
        assert_eq!(AllConfig::embedded("sqlite::memory:").agent_addr.port(), 0);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = AllConfig::embedded("postgres://app:pw-s3cret@db:5432/app");
        config.signing.signing_key = Some(Secret::new("key-s3cret"));
        config.feishu_secret = Some("sign-s3cret".into());
        config.feishu_webhook_url =
            Some("https://open.feishu.cn/open-apis/bot/v2/hook/token-s3cret".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
