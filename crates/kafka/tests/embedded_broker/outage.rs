use std::time::Duration;

use smartflow_domain::OutboundTransport;
use smartflow_kafka::{wait_for_broker, EmbeddedBroker, KafkaConfig, KafkaError, KafkaProducer};
use tokio::time::Instant;

use crate::fixture::{config_for, message, send_all_ok, unique, PATIENCE, SEND_WITHIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_fail_as_unavailable_while_the_broker_is_down_and_recover_after() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("outage");
    broker.create_topic(&topic, 1).unwrap();
    let mut config = config_for(&broker);
    config.message_timeout = Duration::from_millis(1500);
    let producer = KafkaProducer::new(&config).unwrap();
    send_all_ok(&producer, vec![message(&topic, "k", "before", &[])]).await;

    broker.set_broker_down(1).unwrap();
    let batch = (0..10)
        .map(|i| message(&topic, &format!("k{i}"), "during", &[]))
        .collect();
    let outcomes = producer.send_batch(batch, SEND_WITHIN).await;
    assert_eq!(outcomes.len(), 10);
    for outcome in &outcomes {
        let err = outcome.as_ref().expect_err("the only broker is down");
        assert!(err.is_unavailable(), "{err:?}");
    }

    broker.set_broker_up(1).unwrap();
    // librdkafka reconnects with backoff; poll until a send goes through.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let outcomes = producer
            .send_batch(vec![message(&topic, "k", "after", &[])], SEND_WITHIN)
            .await;
        match &outcomes[0] {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_unavailable(), "{e:?}");
                assert!(Instant::now() < deadline, "never recovered: {e:?}");
            }
        }
    }
    let batch = (0..10)
        .map(|i| message(&topic, &format!("k{i}"), "after", &[]))
        .collect();
    send_all_ok(&producer, batch).await;
    producer.flush(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_an_unreachable_broker_ends_in_a_clear_error() {
    let config = KafkaConfig::new("127.0.0.1:1");
    let timeout = Duration::from_secs(2);
    // The outer bound only keeps a broken implementation from hanging the suite.
    let err = tokio::time::timeout(timeout + PATIENCE, wait_for_broker(&config, timeout))
        .await
        .expect("wait_for_broker must give up by itself")
        .unwrap_err();
    assert!(matches!(err, KafkaError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("cannot reach Kafka brokers at 127.0.0.1:1: "),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_running_broker_succeeds() {
    let broker = EmbeddedBroker::start(1).unwrap();
    wait_for_broker(&config_for(&broker), PATIENCE)
        .await
        .unwrap();
}
