use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use smartflow_domain::{OutboundMessage, OutboundTransport, TransportError};
use tokio::time::Instant;

use crate::config::{millis, KafkaConfig};
use crate::error::KafkaError;

/// How long to wait before re-trying an enqueue that hit a full local queue. Short, because the
/// queue drains at network speed; a sleep rather than a spin, so the runtime thread stays free.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

/// Publishes outbox rows to Kafka with an idempotent producer (`acks=all`), so an `Ok` from
/// [`OutboundTransport::send_batch`] means every in-sync replica has the message exactly once.
///
/// Cloning is cheap and shares the same librdkafka producer.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer,
    message_timeout: Duration,
}

impl KafkaProducer {
    /// Creates the producer. No connection is made yet: an unreachable cluster shows up as
    /// retryable delivery errors after `message_timeout` (see `wait_for_broker` to fail fast at
    /// start-up). Must be called inside a Tokio runtime.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut client = config.base_client_config()?;
        client
            // Idempotence makes librdkafka's internal retries free of duplicates and keeps per-partition
            // order across retries; it requires (and would force) acks=all.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", millis(config.message_timeout))
            .set("linger.ms", millis(config.linger))
            // The Java client's key hashing, so a key lands on the same partition whichever
            // language's producer wrote it (librdkafka's default, crc32-based, would not).
            .set("partitioner", "murmur2_random");
        let producer: FutureProducer = config
            .finish(client)
            .create()
            .map_err(|e| KafkaError::client("creating Kafka producer", e))?;
        Ok(Self {
            producer,
            message_timeout: config.message_timeout,
        })
    }

    /// Waits until every message enqueued so far has been delivered or has failed, or until
    /// `timeout` passes; call it before dropping the producer on a graceful stop, since dropping
    /// purges whatever is still queued. Runs on the blocking pool, so the runtime keeps serving.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| KafkaError::Task(format!("flushing Kafka producer: {e}")))?
            .map_err(|e| KafkaError::client("flushing Kafka producer", e))
    }

    /// Hands one message to librdkafka's local queue. A full queue is waited out (it drains as
    /// deliveries complete) for at most `message_timeout`, the same bound a queued message has.
    async fn enqueue(&self, message: &OutboundMessage) -> Result<DeliveryFuture, TransportError> {
        let headers = message.headers.iter().fold(
            OwnedHeaders::new_with_capacity(message.headers.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                })
            },
        );
        let mut record = FutureRecord::to(&message.topic)
            .key(message.key.as_str())
            .payload(message.payload.as_str())
            .headers(headers);
        let deadline = Instant::now() + self.message_timeout;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((err, returned))
                    if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                        && Instant::now() < deadline =>
                {
                    record = returned;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((err, _)) => return Err(transport_error(&message.topic, &err)),
            }
        }
    }
}

#[async_trait]
impl OutboundTransport for KafkaProducer {
    /// Enqueues every message in input order (so messages with the same key keep their order),
    /// then awaits all deliveries together; one outcome per message, in input order.
    async fn send_batch(&self, messages: Vec<OutboundMessage>) -> Vec<Result<(), TransportError>> {
        let mut pending = Vec::with_capacity(messages.len());
        for message in &messages {
            pending.push(self.enqueue(message).await);
        }
        let outcomes = pending.into_iter().zip(&messages).map(|(enqueued, message)| async move {
            let delivery = enqueued?;
            match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((err, _))) => Err(transport_error(&message.topic, &err)),
                // The delivery channel closes without an answer only when the producer is torn
                // down mid-flight; the message may or may not have been written, and idempotent
                // consumers make a resend harmless.
                Err(_canceled) => Err(TransportError::retryable(format!(
                    "publishing to `{}` was cancelled: the producer shut down before delivery was confirmed",
                    message.topic
                ))),
            }
        });
        join_all(outcomes).await
    }
}

/// Turns a librdkafka produce error into the bus's retry decision.
fn transport_error(topic: &str, err: &RdKafkaError) -> TransportError {
    let message = format!("publishing to `{topic}` failed: {err}");
    match err.rdkafka_error_code() {
        Some(code) if is_permanent(code) => TransportError::permanent(message),
        Some(RDKafkaErrorCode::Fatal) => {
            // A fatal error poisons the whole idempotent producer, not this message: the message is
            // retryable, but only through a new producer, so make it loud.
            tracing::error!(%err, "Kafka producer hit a fatal error; it must be recreated");
            TransportError::retryable(message)
        }
        _ => TransportError::retryable(message),
    }
}

/// Errors that the same message can never get past, so the outbox row should go to `dead` now
/// instead of burning its retries.
///
/// - Size errors: the payload does not shrink on retry.
/// - `InvalidTopic`: the topic *name* is illegal (bad characters, too long); no broker will ever
///   accept it.
/// - `InvalidRecord`: the broker's validation rejected this record (e.g. a compacted topic
///   requires a key).
/// - `TopicAuthorizationFailed`: an ACL change is an operator action; the dead row can be
///   re-driven after it, rather than retried blindly meanwhile.
///
/// Deliberately retryable: unknown topic or partition (`UnknownTopicOrPartition`, local
/// `UnknownTopic`/`UnknownPartition`), because topics are created by `ensure_topics`, by an
/// operator or by auto-creation, possibly after the row was written. Everything not listed here
/// (timeouts, broker down, leader changes, unrecognised codes) is retryable too, because the
/// bus's retry policy bounds the attempts anyway, whereas a wrong "permanent" loses a message.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::TopicAuthorizationFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_authorization_errors_are_permanent() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidTopic,
        ] {
            let err = transport_error("t", &RdKafkaError::MessageProduction(code));
            assert!(!err.retryable, "{code:?} should be permanent");
        }
    }

    #[test]
    fn unknown_topics_and_timeouts_are_retryable() {
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::QueueFull,
        ] {
            let err = transport_error("t", &RdKafkaError::MessageProduction(code));
            assert!(err.retryable, "{code:?} should be retryable");
        }
    }
}
