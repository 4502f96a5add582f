//! The notification service's configuration, read once by `main` from flags and `SMARTFLOW_*`
//! variables.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;
use smartflow_domain::RetryPolicy;
use smartflow_service::{ServiceSettings, LOOPBACK_ANY_PORT};

use crate::dispatch::DispatchConfig;
use crate::events::DEFAULT_TOPIC;

pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);
pub const DEFAULT_ALLOWED_TARGETS: &str =
    "https://open.feishu.cn/open-apis/bot/v2/hook/,https://open.larksuite.com/open-apis/bot/v2/hook/";

/// Everything the notification service needs to start. Defaults run embedded (a SQLite file and
/// an in-process broker) and send to real Feishu/Lark webhooks only.
///
/// `Debug` redacts the database password, the signing secret and the default webhook's token.
#[derive(Clone, Parser)]
#[command(
    name = "smartflow-notification",
    version,
    about = "The smartflow notification service"
)]
pub struct NotificationConfig {
    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_HTTP_ADDR", default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// The topic of notification requests; publishers must use the same one.
    #[arg(long, env = "SMARTFLOW_NOTIFICATION_TOPIC", default_value = DEFAULT_TOPIC)]
    pub topic: String,

    /// The webhook used when a request names no target.
    #[arg(long, env = "SMARTFLOW_FEISHU_WEBHOOK_URL", hide_env_values = true)]
    pub feishu_webhook_url: Option<String>,

    /// The custom bot's signing secret; requests are signed when it is set.
    #[arg(long, env = "SMARTFLOW_FEISHU_SECRET", hide_env_values = true)]
    pub feishu_secret: Option<String>,

    /// Comma-separated URL prefixes that targets must start with.
    #[arg(long, env = "SMARTFLOW_FEISHU_ALLOWED_TARGETS", default_value = DEFAULT_ALLOWED_TARGETS)]
    pub feishu_allowed_targets: String,

    /// Timeout of one webhook call, in milliseconds.
    #[arg(long, env = "SMARTFLOW_FEISHU_TIMEOUT_MS", default_value_t = 10_000)]
    pub feishu_timeout_ms: u64,

    /// Provider calls allowed per notification before it is dead.
    #[arg(long, env = "SMARTFLOW_NOTIFY_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// Backoff before the first retry, in milliseconds; it doubles per attempt.
    #[arg(long, env = "SMARTFLOW_NOTIFY_RETRY_BASE_MS", default_value_t = 5_000)]
    pub notify_retry_base_ms: u64,

    /// The longest backoff, in milliseconds.
    #[arg(long, env = "SMARTFLOW_NOTIFY_RETRY_MAX_MS", default_value_t = 600_000)]
    pub notify_retry_max_ms: u64,

    /// How long a sender holds a notification it is sending, in milliseconds; at least twice
    /// the webhook timeout. A sender that dies mid-call releases it when this runs out.
    #[arg(long, env = "SMARTFLOW_NOTIFY_LEASE_MS", default_value_t = 60_000)]
    pub lease_ms: u64,

    /// How often the retry scanner runs, in milliseconds.
    #[arg(
        long,
        env = "SMARTFLOW_NOTIFY_SCAN_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub scan_interval_ms: u64,

    /// Provider calls under way at once.
    #[arg(long, env = "SMARTFLOW_NOTIFY_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// The database (this service's own: services that request notifications write into their
    /// own outboxes, and the requests reach this one through the broker), the broker, start-up
    /// waits, the stop's grace and the bus's reliability.
    #[command(flatten)]
    pub service: ServiceSettings,
}

impl Default for NotificationConfig {
    /// The command line's defaults, without reading the environment, so tests and in-process
    /// embedders get a hermetic starting point (a test checks the two agree).
    fn default() -> Self {
        Self {
            http_addr: DEFAULT_HTTP_ADDR,
            topic: DEFAULT_TOPIC.to_owned(),
            feishu_webhook_url: None,
            feishu_secret: None,
            feishu_allowed_targets: DEFAULT_ALLOWED_TARGETS.to_owned(),
            feishu_timeout_ms: 10_000,
            max_attempts: 5,
            notify_retry_base_ms: 5_000,
            notify_retry_max_ms: 600_000,
            lease_ms: 60_000,
            scan_interval_ms: 1_000,
            concurrency: 8,
            service: ServiceSettings::default(),
        }
    }
}

impl NotificationConfig {
    /// The defaults with another database and an OS-chosen HTTP port: what a test wants.
    pub fn embedded(database_url: impl Into<String>) -> Self {
        Self {
            http_addr: LOOPBACK_ANY_PORT,
            service: ServiceSettings::on_database(database_url),
            ..Self::default()
        }
    }

    pub fn allowed_targets(&self) -> Vec<String> {
        self.feishu_allowed_targets
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    }

    pub fn secret(&self) -> Option<String> {
        self.feishu_secret.clone().filter(|s| !s.trim().is_empty())
    }

    pub fn feishu_timeout(&self) -> Duration {
        Duration::from_millis(self.feishu_timeout_ms)
    }

    pub fn dispatch(&self) -> DispatchConfig {
        DispatchConfig {
            lease: Duration::from_millis(self.lease_ms),
            concurrency: self.concurrency as usize,
            retry: RetryPolicy {
                base_delay: Duration::from_millis(self.notify_retry_base_ms),
                max_delay: Duration::from_millis(self.notify_retry_max_ms),
                max_retry: self.max_attempts,
            },
            scan_interval: Duration::from_millis(self.scan_interval_ms),
            ..DispatchConfig::default()
        }
    }

    /// Checks what clap cannot: the lease must outlive a webhook call with room to record it.
    pub fn check(&self) -> Result<(), String> {
        if self.feishu_timeout_ms == 0 {
            return Err("SMARTFLOW_FEISHU_TIMEOUT_MS must be above zero".to_owned());
        }
        if self.lease_ms < self.feishu_timeout_ms.saturating_mul(2) {
            return Err(format!(
                "SMARTFLOW_NOTIFY_LEASE_MS ({}) must be at least twice SMARTFLOW_FEISHU_TIMEOUT_MS ({})",
                self.lease_ms, self.feishu_timeout_ms
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for NotificationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationConfig")
            .field("http_addr", &self.http_addr)
            .field("topic", &self.topic)
            .field(
                "feishu_webhook_url",
                &self
                    .feishu_webhook_url
                    .as_deref()
                    .map(crate::provider::redact_target),
            )
            .field("feishu_secret", &self.feishu_secret.as_ref().map(|_| "***"))
            .field("feishu_allowed_targets", &self.feishu_allowed_targets)
            .field("feishu_timeout_ms", &self.feishu_timeout_ms)
            .field("max_attempts", &self.max_attempts)
            .field("notify_retry_base_ms", &self.notify_retry_base_ms)
            .field("notify_retry_max_ms", &self.notify_retry_max_ms)
            .field("lease_ms", &self.lease_ms)
            .field("scan_interval_ms", &self.scan_interval_ms)
            .field("concurrency", &self.concurrency)
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
            "notification",
            &NotificationConfig::command(),
            Some(&smartflow_service::ServiceSettings::command()),
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        NotificationConfig::command().debug_assert();
        // The command line's defaults (environment aside) and `Default` agree.
        let mut parsed = NotificationConfig::command();
        let matches = parsed
            .try_get_matches_from_mut(["smartflow-notification"])
            .unwrap();
        for arg in ["database_url", "topic", "feishu_allowed_targets"] {
            if matches.value_source(arg) == Some(clap::parser::ValueSource::DefaultValue) {
                let value: &String = matches.get_one(arg).unwrap();
                let default = NotificationConfig::default();
                let expected = match arg {
                    "database_url" => default.service.database_url,
                    "topic" => default.topic,
                    _ => default.feishu_allowed_targets,
                };
                assert_eq!(value, &expected, "{arg}");
            }
        }
        let defaults = NotificationConfig::default();
        assert_eq!(defaults.http_addr, DEFAULT_HTTP_ADDR);
        assert_eq!(defaults.topic, DEFAULT_TOPIC);
        assert_eq!(defaults.allowed_targets().len(), 2);
        defaults.check().unwrap();
    }

    #[test]
    fn secrets_never_reach_debug_output() {
        let mut config = NotificationConfig::embedded("postgres://app:pw-s3cret@db:5432/app");
        config.feishu_secret = Some("sign-s3cret".into());
        config.feishu_webhook_url =
            Some("https://open.feishu.cn/open-apis/bot/v2/hook/token-s3cret".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_lease_shorter_than_two_timeouts_is_refused() {
        let config = NotificationConfig::try_parse_from([
            "smartflow-notification",
            "--feishu-timeout-ms",
            "10000",
            "--lease-ms",
            "15000",
        ])
        .unwrap();
        assert!(config.check().unwrap_err().contains("LEASE"));
        assert!(NotificationConfig::try_parse_from([
            "smartflow-notification",
            "--max-attempts",
            "0"
        ])
        .is_err());
    }
}
