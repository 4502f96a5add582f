//! The settings that decide reliability, shared by every service binary as one flattened set of
//! flags (each with its `SMARTFLOW_*` variable), and checked together at start-up: a combination
//! that cannot work (a producer that keeps trying longer than the relay's claim lasts) is an
//! error that says which settings to change, never a silent misbehaviour in production.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use smartflow_bus::{ConsumerConfig, RelayConfig, Retention, DEFAULT_RETENTION};
use smartflow_domain::RetryPolicy;
use smartflow_kafka::KafkaConfig;
use smartflow_storage::connect::SessionLimits;

/// Retry policy, deadlines, timeouts and batch sizes of the relay, the consumer, the Kafka
/// clients and the database sessions.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct ReliabilitySettings {
    /// First backoff after an event's own failure (a retryable handler error), in ms; doubles
    /// per failure.
    #[arg(long, env = "SMARTFLOW_RETRY_BASE_MS", default_value_t = 1_000)]
    pub retry_base_ms: u64,

    /// Longest backoff between an event's attempts, in ms.
    #[arg(long, env = "SMARTFLOW_RETRY_MAX_MS", default_value_t = 300_000)]
    pub retry_max_ms: u64,

    /// Attempts of an event (its own failures only) before it is dead.
    #[arg(long, env = "SMARTFLOW_RETRY_MAX_ATTEMPTS", default_value_t = 20)]
    pub retry_max_attempts: u32,

    /// A published event not consumed within this many ms is sent again (the interval then
    /// grows with the event's age; it never spends a retry). 0: never re-send.
    #[arg(long, env = "SMARTFLOW_REPUBLISH_AFTER_MS", default_value_t = 900_000)]
    pub republish_after_ms: u64,

    /// How long a relay's claim on a batch lasts, in ms; its wait for the broker gets 3/4.
    #[arg(long, env = "SMARTFLOW_CLAIM_TIMEOUT_MS", default_value_t = 60_000)]
    pub claim_timeout_ms: u64,

    /// How long the producer keeps trying one message, in ms; must fit in the claim's 3/4.
    #[arg(
        long,
        env = "SMARTFLOW_KAFKA_MESSAGE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub kafka_message_timeout_ms: u64,

    /// Consumer group session timeout, in ms: how soon a dead member's partitions move.
    #[arg(
        long,
        env = "SMARTFLOW_KAFKA_SESSION_TIMEOUT_MS",
        default_value_t = 6_000
    )]
    pub kafka_session_timeout_ms: u64,

    /// Static group membership: a stable id unique to this instance (e.g. the pod name), so a
    /// restarted instance gets its partitions back at once. Absent: dynamic membership.
    #[arg(long, env = "SMARTFLOW_CONSUMER_INSTANCE_ID")]
    pub consumer_instance_id: Option<String>,

    /// New outbox rows a relay claims per round.
    #[arg(long, env = "SMARTFLOW_RELAY_BATCH_SIZE", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub relay_batch_size: u64,

    /// Relay rounds run at once in this process.
    #[arg(long, env = "SMARTFLOW_RELAY_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub relay_workers: u64,

    /// Hours a consumed outbox row (or one handed off to other services) stays before the
    /// relay deletes it; a route may keep its rows for a time of its own. 0: keep them.
    #[arg(long, env = "SMARTFLOW_OUTBOX_RETENTION_HOURS", default_value_t = 168)]
    pub outbox_retention_hours: u64,

    /// Hours a handled inbox entry stays before the relay deletes it; keep it at least as long
    /// as the topics it deduplicates keep their messages. 0: keep them.
    #[arg(long, env = "SMARTFLOW_INBOX_RETENTION_HOURS", default_value_t = 168)]
    pub inbox_retention_hours: u64,

    /// Messages a consumer applies in one database transaction.
    #[arg(long, env = "SMARTFLOW_CONSUMER_BATCH_SIZE", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub consumer_batch_size: u64,

    /// The longest one database statement may run, in ms.
    #[arg(
        long,
        env = "SMARTFLOW_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub db_statement_timeout_ms: u64,

    /// The longest a statement waits for a row lock, in ms.
    #[arg(long, env = "SMARTFLOW_DB_LOCK_WAIT_MS", default_value_t = 10_000)]
    pub db_lock_wait_ms: u64,

    /// The longest a transaction may sit idle holding locks before the server ends its session,
    /// in ms; must be above the claim's 3/4.
    #[arg(
        long,
        env = "SMARTFLOW_DB_IDLE_TRANSACTION_MS",
        default_value_t = 120_000
    )]
    pub db_idle_transaction_ms: u64,
}

impl Default for ReliabilitySettings {
    /// The command line's defaults, without reading the environment.
    fn default() -> Self {
        let relay = RelayConfig::default();
        let limits = SessionLimits::default();
        let retry = RetryPolicy::default();
        let kafka = KafkaConfig::new("defaults only");
        let ms = |d: Duration| d.as_millis() as u64;
        let hours = |d: Option<Duration>| d.map_or(0, |d| d.as_secs() / 3600);
        Self {
            retry_base_ms: ms(retry.base_delay),
            retry_max_ms: ms(retry.max_delay),
            retry_max_attempts: retry.max_retry,
            republish_after_ms: relay.republish_after.map_or(0, ms),
            claim_timeout_ms: ms(relay.claim_timeout),
            kafka_message_timeout_ms: ms(kafka.message_timeout),
            kafka_session_timeout_ms: ms(kafka.session_timeout),
            consumer_instance_id: None,
            relay_batch_size: relay.batch_size,
            relay_workers: relay.workers as u64,
            consumer_batch_size: ConsumerConfig::default().batch_max as u64,
            outbox_retention_hours: hours(relay.retention.outbox),
            inbox_retention_hours: hours(Some(DEFAULT_RETENTION)),
            db_statement_timeout_ms: ms(limits.statement),
            db_lock_wait_ms: ms(limits.lock_wait),
            db_idle_transaction_ms: ms(limits.idle_in_transaction),
        }
    }
}

/// A retention setting in hours: 0 keeps the rows.
fn retention(hours: u64) -> Option<Duration> {
    (hours > 0).then(|| Duration::from_secs(hours.saturating_mul(3600)))
}

impl ReliabilitySettings {
    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_millis(self.retry_base_ms),
            max_delay: Duration::from_millis(self.retry_max_ms),
            max_retry: self.retry_max_attempts,
        }
    }

    fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_message_timeout_ms)
    }

    /// The relay's configuration (owner, poll and lanes stay the library's defaults).
    pub fn relay(&self) -> RelayConfig {
        RelayConfig {
            batch_size: self.relay_batch_size,
            workers: self.relay_workers as usize,
            claim_timeout: Duration::from_millis(self.claim_timeout_ms),
            republish_after: (self.republish_after_ms > 0)
                .then(|| Duration::from_millis(self.republish_after_ms)),
            retry: self.retry(),
            retention: Retention {
                outbox: retention(self.outbox_retention_hours),
                ..Retention::default()
            },
            ..RelayConfig::default()
        }
    }

    /// How long handled inbox entries stay (`None`: kept).
    pub fn inbox_retention(&self) -> Option<Duration> {
        retention(self.inbox_retention_hours)
    }

    /// The consumer's configuration.
    pub fn consumer(&self) -> ConsumerConfig {
        ConsumerConfig {
            batch_max: self.consumer_batch_size as usize,
            retry: self.retry(),
            ..ConsumerConfig::default()
        }
    }

    /// The bounds every database session gets.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            statement: Duration::from_millis(self.db_statement_timeout_ms),
            lock_wait: Duration::from_millis(self.db_lock_wait_ms),
            idle_in_transaction: Duration::from_millis(self.db_idle_transaction_ms),
        }
    }

    /// Sets the Kafka clients' timeouts and, with static membership, this consumer's instance
    /// id (suffixed with `member`, so several consumers of one process stay distinct).
    pub fn apply_to_kafka(&self, kafka: &mut KafkaConfig, member: &str) {
        kafka.message_timeout = self.message_timeout();
        kafka.session_timeout = Duration::from_millis(self.kafka_session_timeout_ms);
        kafka.group_instance_id = self
            .consumer_instance_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|id| format!("{id}-{member}"));
    }

    /// Checks the settings together; the error names the settings to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.retry().validated().context(
            "SMARTFLOW_RETRY_BASE_MS / SMARTFLOW_RETRY_MAX_MS / SMARTFLOW_RETRY_MAX_ATTEMPTS",
        )?;
        if self.kafka_message_timeout_ms == 0 {
            bail!("SMARTFLOW_KAFKA_MESSAGE_TIMEOUT_MS must be above zero");
        }
        if self.kafka_session_timeout_ms < 1_000 {
            bail!("SMARTFLOW_KAFKA_SESSION_TIMEOUT_MS must be at least 1000");
        }
        if self.db_statement_timeout_ms == 0
            || self.db_lock_wait_ms == 0
            || self.db_idle_transaction_ms == 0
        {
            bail!(
                "SMARTFLOW_DB_STATEMENT_TIMEOUT_MS, SMARTFLOW_DB_LOCK_WAIT_MS and \
                 SMARTFLOW_DB_IDLE_TRANSACTION_MS must be above zero"
            );
        }
        let relay = self.relay();
        relay.validate(self.message_timeout()).with_context(|| {
            format!(
                "SMARTFLOW_KAFKA_MESSAGE_TIMEOUT_MS={} does not fit SMARTFLOW_CLAIM_TIMEOUT_MS={}",
                self.kafka_message_timeout_ms, self.claim_timeout_ms
            )
        })?;
        let publish_wait = self.claim_timeout_ms * 3 / 4;
        if self.db_idle_transaction_ms <= publish_wait {
            bail!(
                "SMARTFLOW_DB_IDLE_TRANSACTION_MS={} must be above 3/4 of \
                 SMARTFLOW_CLAIM_TIMEOUT_MS ({publish_wait} ms): a relay holds its claim's \
                 transaction that long while the broker answers",
                self.db_idle_transaction_ms
            );
        }
        self.consumer()
            .validate()
            .context("SMARTFLOW_CONSUMER_BATCH_SIZE")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: ReliabilitySettings,
    }

    #[test]
    fn the_defaults_are_the_command_lines_and_valid() {
        let parsed = Cli::try_parse_from(["x"]).unwrap().settings;
        assert_eq!(parsed, ReliabilitySettings::default());
        parsed.validate().unwrap();
        assert_eq!(parsed.relay().claim_timeout, Duration::from_secs(60));
        assert_eq!(
            parsed.relay().republish_after,
            Some(Duration::from_secs(900))
        );
    }

    #[test]
    fn retention_is_a_week_by_default_and_zero_keeps_the_rows() {
        let week = Some(Duration::from_secs(7 * 24 * 3600));
        let defaults = ReliabilitySettings::default();
        assert_eq!(defaults.relay().retention.outbox, week);
        assert_eq!(defaults.inbox_retention(), week);
        let settings = Cli::try_parse_from([
            "x",
            "--outbox-retention-hours",
            "0",
            "--inbox-retention-hours",
            "720",
        ])
        .unwrap()
        .settings;
        assert_eq!(settings.relay().retention.outbox, None);
        assert_eq!(
            settings.inbox_retention(),
            Some(Duration::from_secs(720 * 3600))
        );
        assert!(Cli::try_parse_from(["x", "--outbox-retention-hours", "-1"]).is_err());
    }

    #[test]
    fn a_message_timeout_beyond_the_claim_window_is_refused_by_name() {
        let settings = Cli::try_parse_from([
            "x",
            "--kafka-message-timeout-ms",
            "50000",
            "--claim-timeout-ms",
            "60000",
        ])
        .unwrap()
        .settings;
        let err = format!("{:#}", settings.validate().unwrap_err());
        assert!(
            err.contains("SMARTFLOW_KAFKA_MESSAGE_TIMEOUT_MS=50000")
                && err.contains("SMARTFLOW_CLAIM_TIMEOUT_MS=60000"),
            "{err}"
        );
    }

    #[test]
    fn an_idle_bound_shorter_than_the_claim_wait_is_refused() {
        let settings = ReliabilitySettings {
            db_idle_transaction_ms: 30_000,
            ..ReliabilitySettings::default()
        };
        let err = settings.validate().unwrap_err().to_string();
        assert!(
            err.contains("SMARTFLOW_DB_IDLE_TRANSACTION_MS=30000"),
            "{err}"
        );
    }

    #[test]
    fn nonsense_retry_policies_are_refused() {
        let settings = ReliabilitySettings {
            retry_max_attempts: 0,
            ..ReliabilitySettings::default()
        };
        let err = format!("{:#}", settings.validate().unwrap_err());
        assert!(err.contains("SMARTFLOW_RETRY_MAX_ATTEMPTS"), "{err}");
    }

    #[test]
    fn zero_republish_means_never_and_instance_ids_are_per_member() {
        let settings = ReliabilitySettings {
            republish_after_ms: 0,
            consumer_instance_id: Some("pod-7".into()),
            ..ReliabilitySettings::default()
        };
        assert_eq!(settings.relay().republish_after, None);
        let mut kafka = KafkaConfig::new("k:9092");
        settings.apply_to_kafka(&mut kafka, "agent");
        assert_eq!(kafka.group_instance_id.as_deref(), Some("pod-7-agent"));
        assert_eq!(kafka.message_timeout, Duration::from_secs(10));
    }
}
