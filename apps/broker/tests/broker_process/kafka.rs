use std::time::Duration;

use smartflow_domain::{InboundTransport, OutboundMessage, OutboundTransport};
use smartflow_kafka::{KafkaConsumer, KafkaProducer};
use tokio::time::Instant;

use crate::fixture::{unique, BrokerProcess, PATIENCE};

fn message(topic: &str, payload: &str) -> OutboundMessage {
    OutboundMessage {
        topic: topic.to_owned(),
        key: "key".to_owned(),
        payload: payload.to_owned(),
        headers: Vec::new(),
    }
}

/// The `within` of sends bounded by the producer's own message timeout only.
const SEND_WITHIN: Duration = Duration::from_secs(60);

/// Receives until a message with `payload` arrives; panics after `PATIENCE`.
async fn receive(consumer: &KafkaConsumer, payload: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "`{payload}` never arrived");
        let batch = consumer
            .recv_batch(10, Duration::from_secs(1), Duration::from_millis(50))
            .await;
        if let Ok(batch) = batch {
            if batch
                .iter()
                .any(|m| m.payload.as_deref() == Some(payload.as_bytes()))
            {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_goes_through_the_broker_process() {
    let topic = unique("roundtrip");
    let broker = BrokerProcess::start(&["--topic", &format!("{topic}:3")]).await;
    assert_eq!(
        broker.stdout_line,
        format!("SMARTFLOW_KAFKA_BROKERS={}", broker.info.bootstrap_servers)
    );
    let config = broker.client_config();
    let producer = KafkaProducer::new(&config).unwrap();
    let outcome = producer
        .send_batch(vec![message(&topic, "hello")], SEND_WITHIN)
        .await;
    assert!(outcome[0].is_ok(), "{outcome:?}");
    let consumer = KafkaConsumer::new(&config, &unique("group"), &[topic.as_str()]).unwrap();
    receive(&consumer, "hello").await;
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_created_through_the_control_api_is_usable() {
    let broker = BrokerProcess::start(&["--brokers", "3"]).await;
    let topic = unique("created");
    let (status, body) = broker
        .post(
            "/topics",
            Some(serde_json::json!({"name": topic, "partitions": 2})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let config = broker.client_config();
    let producer = KafkaProducer::new(&config).unwrap();
    let outcome = producer
        .send_batch(vec![message(&topic, "made here")], SEND_WITHIN)
        .await;
    assert!(outcome[0].is_ok(), "{outcome:?}");
    let consumer = KafkaConsumer::new(&config, &unique("group"), &[topic.as_str()]).unwrap();
    receive(&consumer, "made here").await;
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_fails_while_the_brokers_are_down_and_succeeds_after_up() {
    let topic = unique("outage");
    let broker = BrokerProcess::start(&["--topic", &format!("{topic}:1")]).await;
    let mut config = broker.client_config();
    config.message_timeout = Duration::from_secs(2);
    let producer = KafkaProducer::new(&config).unwrap();
    let outcome = producer
        .send_batch(vec![message(&topic, "before")], SEND_WITHIN)
        .await;
    assert!(outcome[0].is_ok(), "{outcome:?}");

    let (status, body) = broker.post("/brokers/-1/down", None).await;
    assert_eq!(status, 200, "{body}");
    let (_, health) = broker.request(reqwest::Method::GET, "/healthz").await;
    assert_eq!(health["down"], serde_json::json!([1]), "{health}");
    let outcome = producer
        .send_batch(vec![message(&topic, "during")], SEND_WITHIN)
        .await;
    let err = outcome[0]
        .as_ref()
        .expect_err("a produce to a down broker fails");
    assert!(
        err.is_unavailable(),
        "a down broker is the infrastructure's failure: {err:?}"
    );

    let (status, body) = broker.post("/brokers/-1/up", None).await;
    assert_eq!(status, 200, "{body}");
    // The producer reconnects with backoff; keep sending until one gets through.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let outcome = producer
            .send_batch(vec![message(&topic, "after")], SEND_WITHIN)
            .await;
        if outcome[0].is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "produce never succeeded after up: {outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_permanent_produce_errors_fail_deliveries_until_cleared() {
    let topic = unique("faults");
    let broker = BrokerProcess::start(&["--topic", &format!("{topic}:1")]).await;
    let mut config = broker.client_config();
    config.message_timeout = Duration::from_secs(5);
    let producer = KafkaProducer::new(&config).unwrap();
    let outcome = producer
        .send_batch(vec![message(&topic, "warm-up")], SEND_WITHIN)
        .await;
    assert!(outcome[0].is_ok(), "{outcome:?}");

    let (status, body) = broker
        .post(
            "/produce-errors",
            Some(serde_json::json!({"count": 1000, "fault": "message_too_large"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let outcome = producer
        .send_batch(vec![message(&topic, "refused")], SEND_WITHIN)
        .await;
    let err = outcome[0]
        .as_ref()
        .expect_err("an injected error fails the delivery");
    assert!(
        !err.is_unavailable(),
        "message_too_large rejects the message: {err:?}"
    );

    let (status, body) = broker
        .request(reqwest::Method::DELETE, "/produce-errors")
        .await;
    assert_eq!(status, 200, "{body}");
    let outcome = producer
        .send_batch(vec![message(&topic, "accepted")], SEND_WITHIN)
        .await;
    assert!(outcome[0].is_ok(), "{outcome:?}");
}
