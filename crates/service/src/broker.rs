//! Reaching the broker at start-up, or starting the embedded one.

use std::time::Duration;

use anyhow::Context as _;
use smartflow_kafka::{ensure_topics, wait_for_broker, EmbeddedBroker, KafkaConfig};

/// The broker part of a service's configuration, and the topics start-up must make sure of.
#[derive(Clone)]
pub struct BrokerSettings<'a> {
    /// `SMARTFLOW_KAFKA_BROKERS` with a blank value already counted as absent; `None` starts the
    /// embedded broker.
    pub brokers: Option<&'a str>,
    pub topics: &'a [&'a str],
    /// Further librdkafka properties (TLS, SASL) for every client of a real cluster.
    pub options: Vec<(String, String)>,
    pub partitions: i32,
    pub replication: i32,
    /// `SMARTFLOW_BROKER_WAIT_SECS`.
    pub wait_secs: u64,
    /// The Kafka `client.id` the service's clients use.
    pub client_id: &'a str,
}

/// Reaches the configured cluster (waiting up to `wait_secs`) and makes sure the topic exists,
/// or starts the embedded broker with the topic created. The embedded broker is returned so the
/// caller keeps it alive as long as its clients.
pub async fn prepare_broker(
    settings: BrokerSettings<'_>,
) -> anyhow::Result<(KafkaConfig, Option<EmbeddedBroker>)> {
    let topics = settings.topics;
    let (mut kafka, broker) = match settings.brokers {
        None => {
            // Starting it waits for its thread to come up; that wait stays off the runtime.
            let broker = tokio::task::spawn_blocking(|| EmbeddedBroker::start(1))
                .await
                .context("starting the embedded Kafka broker")?
                .context("starting the embedded Kafka broker")?;
            // The mock cluster cannot serve CreateTopics, so the topic is made directly.
            for topic in topics {
                broker
                    .create_topic(topic, settings.partitions)
                    .with_context(|| format!("creating topic `{topic}` on the embedded broker"))?;
            }
            (broker.client_config(), Some(broker))
        }
        Some(brokers) => {
            let mut kafka = KafkaConfig::new(brokers);
            kafka.extra = settings.options.clone();
            wait_for_broker(&kafka, Duration::from_secs(settings.wait_secs))
                .await
                .with_context(|| {
                    format!(
                        "cannot reach Kafka at {brokers} within {} s (check SMARTFLOW_KAFKA_BROKERS, \
                         or raise SMARTFLOW_BROKER_WAIT_SECS)",
                        settings.wait_secs
                    )
                })?;
            let wanted: Vec<(&str, i32)> =
                topics.iter().map(|t| (*t, settings.partitions)).collect();
            ensure_topics(&kafka, &wanted, settings.replication)
                .await
                .with_context(|| format!("creating Kafka topics {}", topics.join(", ")))?;
            (kafka, None)
        }
    };
    settings.client_id.clone_into(&mut kafka.client_id);
    Ok((kafka, broker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kafka_options_reach_librdkafka() {
        let broker = EmbeddedBroker::start(1).unwrap();
        broker.create_topic("t", 1).unwrap();
        let bootstrap = broker.bootstrap_servers();
        let settings = |options: Vec<(String, String)>| BrokerSettings {
            brokers: Some(&bootstrap),
            topics: &["t"],
            options,
            partitions: 1,
            replication: 1,
            wait_secs: 5,
            client_id: "smartflow-test",
        };
        let (kafka, _) = prepare_broker(settings(vec![("client.rack".into(), "r1".into())]))
            .await
            .unwrap();
        assert_eq!(kafka.extra, [("client.rack".to_owned(), "r1".to_owned())]);
        let Err(err) =
            prepare_broker(settings(vec![("no.such.property".into(), "1".into())])).await
        else {
            panic!("an unknown librdkafka property must fail start-up");
        };
        assert!(
            format!("{err:#}").contains("no.such.property"),
            "librdkafka names the unknown property: {err:#}"
        );
        tokio::task::spawn_blocking(move || drop(broker))
            .await
            .unwrap();
    }
}
