use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use smartflow_kafka::{ensure_topics, EmbeddedBroker, KafkaConfig, KafkaError};

use crate::fixture::{config_for, unique};

/// Partition count of `topic`, read the way an operator would: from cluster metadata.
async fn partitions_of(config: &KafkaConfig, topic: &str) -> Option<usize> {
    let brokers = config.brokers.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        // All topics, not `Some(topic)`: naming a missing topic would make the mock create it.
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topics_is_idempotent_and_safe_to_race() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let config = config_for(&broker);
    let topic = unique("ensure");
    // The mock has no CreateTopics; the topic is made the way the embedded broker supports, and
    // `ensure_topics` must then accept it however often and concurrently it is called.
    broker.create_topic(&topic, 3).unwrap();

    let wanted = [(topic.as_str(), 3)];
    ensure_topics(&config, &wanted, 1).await.unwrap();
    ensure_topics(&config, &wanted, 1).await.unwrap();
    let (a, b) = tokio::join!(
        ensure_topics(&config, &wanted, 1),
        ensure_topics(&config, &wanted, 1),
    );
    a.unwrap();
    b.unwrap();
    let (a, b) = tokio::join!(
        tokio::spawn({
            let config = config.clone();
            let topic = topic.clone();
            async move { ensure_topics(&config, &[(&topic, 3)], 1).await }
        }),
        tokio::spawn({
            let config = config.clone();
            let topic = topic.clone();
            async move { ensure_topics(&config, &[(&topic, 3)], 1).await }
        }),
    );
    a.unwrap().unwrap();
    b.unwrap().unwrap();

    assert_eq!(partitions_of(&config, &topic).await, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_on_the_mock_is_a_clear_error_naming_only_it() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let config = config_for(&broker);
    let present = unique("present");
    let missing = unique("missing");
    broker.create_topic(&present, 2).unwrap();

    let err = ensure_topics(&config, &[(&present, 2), (&missing, 2)], 1)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, KafkaError::Admin(_)), "{err:?}");
    assert!(text.contains(&missing), "{text}");
    assert!(!text.contains(&present), "{text}");
    // Asking must not have created it with default settings behind our back.
    assert_eq!(partitions_of(&config, &missing).await, None);
}

#[tokio::test]
async fn nonsense_partition_and_replication_counts_are_config_errors() {
    let config = KafkaConfig::new("127.0.0.1:1");
    assert!(matches!(
        ensure_topics(&config, &[("t", 0)], 1).await,
        Err(KafkaError::Config(_))
    ));
    assert!(matches!(
        ensure_topics(&config, &[("t", 1)], 0).await,
        Err(KafkaError::Config(_))
    ));
}
