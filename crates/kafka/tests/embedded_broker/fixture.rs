use std::collections::HashSet;
use std::time::Duration;

use smartflow_domain::{InboundTransport, IncomingMessage, OutboundMessage, OutboundTransport};
use smartflow_kafka::{EmbeddedBroker, KafkaConfig, KafkaConsumer, KafkaProducer};
use tokio::time::Instant;

/// Generous bound for anything the mock cluster does in the background (group joins wait for its
/// 3 s initial-rebalance delay, reconnects back off up to 10 s); only reached when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// The `within` of sends that should be bounded by the producer's own message timeout only.
pub const SEND_WITHIN: Duration = Duration::from_secs(60);

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

pub fn config_for(broker: &EmbeddedBroker) -> KafkaConfig {
    KafkaConfig::new(broker.bootstrap_servers())
}

pub fn message(topic: &str, key: &str, payload: &str, headers: &[(&str, &str)]) -> OutboundMessage {
    OutboundMessage {
        topic: topic.to_owned(),
        key: key.to_owned(),
        payload: payload.to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

pub async fn send_all_ok(producer: &KafkaProducer, messages: Vec<OutboundMessage>) {
    let count = messages.len();
    let outcomes = producer.send_batch(messages, SEND_WITHIN).await;
    assert_eq!(outcomes.len(), count);
    for (i, outcome) in outcomes.into_iter().enumerate() {
        if let Err(e) = outcome {
            panic!("message {i} was not delivered: {e:?}");
        }
    }
}

/// Identifies a message independently of its content.
pub fn position(message: &IncomingMessage) -> (String, i32, i64) {
    (message.topic.clone(), message.partition, message.offset)
}

/// Receives until `done` says the messages so far are enough, retrying receive errors (e.g. while
/// the group is still joining); panics after `PATIENCE`. Duplicates (same position) are dropped.
pub async fn consume_until(
    consumer: &KafkaConsumer,
    mut done: impl FnMut(&[IncomingMessage]) -> bool,
) -> Vec<IncomingMessage> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = HashSet::new();
    let mut received = Vec::new();
    while !done(&received) {
        assert!(
            Instant::now() < deadline,
            "gave up waiting: {} messages received so far",
            received.len()
        );
        match consumer
            .recv_batch(50, Duration::from_secs(1), Duration::from_millis(100))
            .await
        {
            Err(e) => assert!(e.is_unavailable(), "receive errors are unavailable: {e:?}"),
            Ok(batch) => {
                for message in batch {
                    if seen.insert(position(&message)) {
                        received.push(message);
                    }
                }
            }
        }
    }
    received
}
