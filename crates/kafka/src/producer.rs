use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
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
/// A fatal librdkafka error poisons an idempotent producer for good; this type then builds a new
/// one from the same configuration on the next send, so a relay recovers without a restart.
///
/// Cloning is cheap and shares the same librdkafka producer.
#[derive(Clone)]
pub struct KafkaProducer {
    current: Arc<RwLock<Generation>>,
    client: ClientConfig,
    message_timeout: Duration,
}

/// One librdkafka producer and its place in the sequence of rebuilds.
#[derive(Clone)]
struct Generation {
    producer: FutureProducer,
    number: u64,
    /// Set once a fatal error was seen; the next send replaces this generation.
    poisoned: Arc<AtomicBool>,
}

impl KafkaProducer {
    /// Creates the producer. No connection is made yet: an unreachable cluster shows up as
    /// unavailable delivery errors after `message_timeout` (see `wait_for_broker` to fail fast at
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
        let client = config.finish(client);
        let producer = create(&client)?;
        Ok(Self {
            current: Arc::new(RwLock::new(Generation {
                producer,
                number: 0,
                poisoned: Arc::default(),
            })),
            client,
            message_timeout: config.message_timeout,
        })
    }

    /// How many times a fatal error made this producer build a new librdkafka producer.
    pub fn rebuilds(&self) -> u64 {
        self.generation().number
    }

    /// Waits until every message enqueued so far has been delivered or has failed, or until
    /// `timeout` passes; call it before dropping the producer on a graceful stop, since dropping
    /// purges whatever is still queued. Runs on the blocking pool, so the runtime keeps serving.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.generation().producer;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| KafkaError::Task(format!("flushing Kafka producer: {e}")))?
            .map_err(|e| KafkaError::client("flushing Kafka producer", e))
    }

    fn generation(&self) -> Generation {
        // A poisoned lock only means another thread panicked while swapping; the value is whole.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The producer to send with: the current one, or a new one if the current one hit a fatal
    /// error. A failed rebuild is reported as unavailable, and tried again on the next send.
    fn usable(&self) -> Result<Generation, TransportError> {
        let seen = self.generation();
        if !seen.poisoned.load(Ordering::Acquire) {
            return Ok(seen);
        }
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.number == seen.number {
            let producer = create(&self.client).map_err(|e| {
                TransportError::unavailable(format!(
                    "rebuilding the Kafka producer after a fatal error failed: {e}"
                ))
            })?;
            let old = std::mem::replace(
                &mut *current,
                Generation {
                    producer,
                    number: seen.number + 1,
                    poisoned: Arc::default(),
                },
            );
            tracing::warn!(
                generation = seen.number + 1,
                "built a new Kafka producer after a fatal error"
            );
            // Destroying a librdkafka client waits for its threads; keep that off the runtime.
            drop(tokio::task::spawn_blocking(move || drop(old)));
        }
        Ok(current.clone())
    }

    /// Hands one message to librdkafka's local queue. A full queue is waited out (it drains as
    /// deliveries complete) until `deadline`.
    async fn enqueue(
        producer: &FutureProducer,
        message: &OutboundMessage,
        deadline: Instant,
    ) -> Result<DeliveryFuture, TransportError> {
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
        loop {
            match producer.send_result(record) {
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

fn create(client: &ClientConfig) -> Result<FutureProducer, KafkaError> {
    client
        .create()
        .map_err(|e| KafkaError::client("creating Kafka producer", e))
}

#[async_trait]
impl OutboundTransport for KafkaProducer {
    /// Enqueues every message in input order (so messages with the same key keep their order:
    /// the idempotent producer writes one partition's messages in the order they were enqueued,
    /// across its own retries), then awaits all deliveries together until `within` has passed; one outcome per message, in
    /// input order. Deliveries that were acknowledged by then are `Ok` even if others were not.
    async fn send_batch(
        &self,
        messages: Vec<OutboundMessage>,
        within: Duration,
    ) -> Vec<Result<(), TransportError>> {
        let deadline = Instant::now() + within;
        let generation = match self.usable() {
            Ok(generation) => generation,
            Err(e) => return vec![Err(e); messages.len()],
        };
        let mut pending = Vec::with_capacity(messages.len());
        // A key whose message could not be enqueued sends nothing after it in this batch: a
        // later message of that key must not reach the broker ahead of it.
        let mut refused: HashMap<&str, TransportError> = HashMap::new();
        for message in &messages {
            if let Some(e) = refused.get(message.key.as_str()) {
                pending.push(Err(e.clone()));
                continue;
            }
            let enqueued = Self::enqueue(&generation.producer, message, deadline).await;
            if let Err(e) = &enqueued {
                if e.is_unavailable() {
                    refused.insert(&message.key, e.clone());
                }
            }
            pending.push(enqueued);
        }
        let outcomes = pending.into_iter().zip(&messages).map(|(enqueued, message)| async move {
            let delivery = enqueued?;
            match tokio::time::timeout_at(deadline, delivery).await {
                Ok(Ok(Ok(_))) => Ok(()),
                Ok(Ok(Err((err, _)))) => Err(transport_error(&message.topic, &err)),
                // The delivery channel closes without an answer only when the producer is torn
                // down mid-flight; the message may or may not have been written, and idempotent
                // consumers make a resend harmless.
                Ok(Err(_canceled)) => Err(TransportError::unavailable(format!(
                    "publishing to `{}` was cancelled: the producer shut down before delivery was confirmed",
                    message.topic
                ))),
                Err(_elapsed) => Err(TransportError::unavailable(format!(
                    "the broker did not acknowledge the message to `{}` within {} ms",
                    message.topic,
                    within.as_millis()
                ))),
            }
        });
        let outcomes = join_all(outcomes).await;
        if outcomes.iter().any(Result::is_err) {
            // librdkafka raises a fatal error on the client, not always on the deliveries that
            // caused it; the client is the one to ask.
            if let Some((code, reason)) = generation.producer.client().fatal_error() {
                if !generation.poisoned.swap(true, Ordering::AcqRel) {
                    tracing::error!(?code, %reason, "the Kafka producer hit a fatal error; building a new one");
                }
            }
        }
        outcomes
    }

    fn delivery_timeout(&self) -> Duration {
        self.message_timeout
    }
}

/// Turns a librdkafka produce error into the bus's decision: whose fault it is.
fn transport_error(topic: &str, err: &RdKafkaError) -> TransportError {
    let message = format!("publishing to `{topic}` failed: {err}");
    match err.rdkafka_error_code() {
        Some(code) if is_rejection(code) => TransportError::rejected(message),
        // Everything else, a fatal error included (it poisons the producer, not the message;
        // `send_batch` then rebuilds the producer), is the infrastructure's.
        _ => TransportError::unavailable(message),
    }
}

/// Errors that belong to the message itself, so the outbox row goes to `dead` now instead of
/// waiting for a broker that will never take it.
///
/// - Size errors: the payload does not shrink on retry.
/// - `InvalidTopic`: the topic *name* is illegal (bad characters, too long); no broker will ever
///   accept it.
/// - `InvalidRecord`: the broker's validation rejected this record (e.g. a compacted topic
///   requires a key).
///
/// Everything else is the infrastructure's: timeouts, brokers down, leader changes, unknown
/// topics (created later by `ensure_topics` or an operator), authorization failures (one ACL
/// mistake must not kill a backlog; an operator fixes the ACL and the relay resumes), fatal
/// client errors and unrecognised codes. Those pause the relay and cost no event anything.
fn is_rejection(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_record_errors_reject_the_message() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidMessageSize,
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::InvalidRecord,
        ] {
            let err = transport_error("t", &RdKafkaError::MessageProduction(code));
            assert!(!err.is_unavailable(), "{code:?} should reject the message");
        }
    }

    #[test]
    fn outages_timeouts_acls_and_fatal_errors_are_the_infrastructures() {
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
            RDKafkaErrorCode::Fatal,
        ] {
            let err = transport_error("t", &RdKafkaError::MessageProduction(code));
            assert!(err.is_unavailable(), "{code:?} should be unavailable");
        }
    }
}
