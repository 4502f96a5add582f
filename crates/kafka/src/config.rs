use std::time::Duration;

use rdkafka::ClientConfig;

use crate::error::KafkaError;

/// How to reach the Kafka cluster and the producer tuning shared by every client this crate builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` bootstrap list.
    pub brokers: String,
    /// Reported to brokers in logs and quotas.
    pub client_id: String,
    /// How long the producer keeps retrying one message before reporting it failed.
    pub message_timeout: Duration,
    /// How long the producer waits to fill a batch before sending it.
    pub linger: Duration,
    /// How long a consumer's fetch may wait at the broker when no data is there yet. A real
    /// broker answers as soon as data arrives; librdkafka's mock broker always waits this long on
    /// an empty fetch, so the embedded broker wants it short (see
    /// [`EmbeddedBroker::client_config`](crate::EmbeddedBroker::client_config)).
    pub fetch_wait: Duration,
    /// How long a consumer group member may go without a heartbeat before the group gives its
    /// partitions to another member (librdkafka's own thread heartbeats, every quarter of it).
    pub session_timeout: Duration,
    /// Static group membership (`group.instance.id`): a member restarted with the same id gets
    /// its partitions back at once. Must be unique per running process.
    pub group_instance_id: Option<String>,
    /// How often a consumer's lag per partition is refreshed, from librdkafka's statistics
    /// (`statistics.interval.ms`); zero turns the statistics, and so the lag, off.
    pub lag_interval: Duration,
    /// Raw librdkafka properties applied last to every client this crate builds, so they override
    /// anything it sets (security settings, `debug`, ...). A property meant for one role (say
    /// `session.timeout.ms`) is ignored, with a logged warning, by clients of the other role.
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A configuration with the defaults: client id `smartflow`, 10 s message timeout, 5 ms
    /// linger, 6 s consumer session (Kafka's smallest by default, so a dead member's partitions
    /// move within seconds).
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: "smartflow".to_owned(),
            message_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(5),
            fetch_wait: Duration::from_millis(100),
            session_timeout: Duration::from_secs(6),
            group_instance_id: None,
            lag_interval: Duration::from_secs(5),
            extra: Vec::new(),
        }
    }

    /// Returns `Ok` only when the configuration can be handed to librdkafka: non-empty brokers and
    /// client id, and a non-zero message timeout (zero would mean "retry forever" in librdkafka,
    /// which would let `send_batch` hang).
    pub fn validate(&self) -> Result<(), KafkaError> {
        if self.brokers.trim().is_empty() {
            return Err(KafkaError::Config("brokers must not be empty".to_owned()));
        }
        if self.client_id.trim().is_empty() {
            return Err(KafkaError::Config("client_id must not be empty".to_owned()));
        }
        if self.message_timeout.is_zero() {
            return Err(KafkaError::Config(
                "message_timeout must be greater than zero".to_owned(),
            ));
        }
        if self.session_timeout < Duration::from_millis(1000) {
            return Err(KafkaError::Config(
                "session_timeout must be at least 1 s (brokers refuse shorter ones: \
                 group.min.session.timeout.ms is 6 s by default)"
                    .to_owned(),
            ));
        }
        if let Some(id) = &self.group_instance_id {
            if id.trim().is_empty() {
                return Err(KafkaError::Config(
                    "group_instance_id must not be blank".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// The librdkafka properties every client shares, after validation; `extra` is applied by
    /// [`KafkaConfig::finish`] so it can override the role-specific settings too.
    pub(crate) fn base_client_config(&self) -> Result<ClientConfig, KafkaError> {
        self.validate()?;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        Ok(config)
    }

    /// Applies `extra` on top of everything else set so far.
    pub(crate) fn finish(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        config
    }
}

/// librdkafka takes durations as whole milliseconds in strings; rounding a sub-millisecond value
/// down to zero would change its meaning (e.g. `linger.ms=0`), so it is rounded up instead.
pub(crate) fn millis(duration: Duration) -> String {
    duration.as_micros().div_ceil(1000).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_brokers_are_rejected() {
        let err = KafkaConfig::new("  ").validate().unwrap_err();
        assert!(matches!(err, KafkaError::Config(_)), "{err:?}");
    }

    #[test]
    fn defaults_are_valid() {
        let config = KafkaConfig::new("localhost:9092");
        config.validate().unwrap();
        assert_eq!(config.message_timeout, Duration::from_secs(10));
        assert_eq!(config.linger, Duration::from_millis(5));
    }

    #[test]
    fn sub_millisecond_durations_round_up() {
        assert_eq!(millis(Duration::from_micros(1500)), "2");
        assert_eq!(millis(Duration::from_millis(5)), "5");
        assert_eq!(millis(Duration::ZERO), "0");
    }
}
