use std::time::Duration;

use smartflow_kafka::{
    ensure_topics, wait_for_broker, EmbeddedBroker, KafkaConfig, KafkaConsumer, KafkaError,
    KafkaProducer,
};

#[tokio::test]
async fn empty_brokers_are_a_config_error_everywhere() {
    let config = KafkaConfig::new("");
    assert!(matches!(config.validate(), Err(KafkaError::Config(_))));
    assert!(matches!(
        KafkaProducer::new(&config),
        Err(KafkaError::Config(_))
    ));
    assert!(matches!(
        KafkaConsumer::new(&config, "group", &["topic"]),
        Err(KafkaError::Config(_))
    ));
    assert!(matches!(
        ensure_topics(&config, &[("topic", 1)], 1).await,
        Err(KafkaError::Config(_))
    ));
    assert!(matches!(
        wait_for_broker(&config, Duration::from_secs(1)).await,
        Err(KafkaError::Config(_))
    ));
}

#[test]
fn a_cluster_needs_a_broker() {
    assert!(matches!(
        EmbeddedBroker::start(0),
        Err(KafkaError::Config(_))
    ));
}

#[test]
fn adapters_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<EmbeddedBroker>();
    shareable::<KafkaProducer>();
    shareable::<KafkaConsumer>();
    shareable::<KafkaError>();
}
