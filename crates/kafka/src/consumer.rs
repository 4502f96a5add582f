use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use rdkafka::{Message, Offset, TopicPartitionList};
use smartflow_domain::{InboundTransport, IncomingMessage, PartitionLag, TransportError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::time::Instant;

use crate::config::{millis, KafkaConfig};
use crate::error::KafkaError;

/// A member of one consumer group that hands out batches and commits only what it is told to.
///
/// Offsets are never committed or stored automatically: a message is redelivered (to this or
/// another member) until [`InboundTransport::commit`] has covered it, which gives at-least-once
/// delivery with the commit placed after the handler's effects are durable.
pub struct KafkaConsumer {
    // Shared with the blocking-pool task that runs synchronous commits.
    consumer: Arc<StreamConsumer<PauseAware>>,
    /// Whether the caller asked for fetching to be paused (shared with the rebalance hooks).
    paused: Arc<AtomicBool>,
    /// The lag per partition at librdkafka's last statistics (shared with the context).
    lag: Arc<Mutex<Vec<PartitionLag>>>,
}

/// Keeps a pause from blocking a rebalance. librdkafka cannot finish revoking partitions that
/// are paused (the group then waits for this member until its rebalance timeout, and every
/// commit meanwhile fails with `RebalanceInProgress`), so revoked partitions are resumed before
/// they go, and the partitions assigned next are paused again while the caller wants a pause.
///
/// It also keeps the lag per partition from librdkafka's statistics.
struct PauseAware {
    paused: Arc<AtomicBool>,
    lag: Arc<Mutex<Vec<PartitionLag>>>,
}

impl ClientContext for PauseAware {
    fn stats(&self, statistics: Statistics) {
        let lags = partition_lags(&statistics);
        *self
            .lag
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = lags;
    }
}

/// The lag of every partition the statistics say this member fetches: the high watermark less
/// the committed offset, or, before anything of the partition was committed, less the next
/// offset to fetch.
fn partition_lags(statistics: &Statistics) -> Vec<PartitionLag> {
    let mut lags: Vec<PartitionLag> = statistics
        .topics
        .values()
        .flat_map(|topic| {
            topic
                .partitions
                .values()
                // Partition -1 is librdkafka's internal "unassigned" queue.
                .filter(|p| p.partition >= 0 && p.desired && p.hi_offset >= 0)
                .filter_map(|p| {
                    let lag = if p.consumer_lag >= 0 {
                        p.consumer_lag
                    } else if p.next_offset >= 0 {
                        (p.hi_offset - p.next_offset).max(0)
                    } else {
                        return None;
                    };
                    Some(PartitionLag {
                        topic: topic.topic.clone(),
                        partition: p.partition,
                        lag,
                    })
                })
        })
        .collect();
    lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    lags
}

impl ConsumerContext for PauseAware {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            if let Err(e) = consumer.resume(revoked) {
                tracing::warn!(error = %e, "resuming revoked partitions failed");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            if self.paused.load(Ordering::Acquire) {
                if let Err(e) = consumer.pause(assigned) {
                    tracing::warn!(error = %e, "pausing newly assigned partitions failed");
                }
            }
        }
    }
}

impl KafkaConsumer {
    /// Creates the consumer, joins `group_id` and subscribes to `topics`. A group with no committed
    /// offset starts from the earliest retained message, so nothing published before the first
    /// start is skipped. Joining happens in the background: the first `recv_batch` may wait for
    /// the group's rebalance. Must be called inside a Tokio runtime.
    pub fn new(config: &KafkaConfig, group_id: &str, topics: &[&str]) -> Result<Self, KafkaError> {
        if group_id.trim().is_empty() {
            return Err(KafkaError::Config("group id must not be empty".to_owned()));
        }
        if topics.is_empty() {
            return Err(KafkaError::Config(format!(
                "consumer group `{group_id}` must subscribe to at least one topic"
            )));
        }
        let mut client = config.base_client_config()?;
        client
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            // Storing offsets as messages are handed out would let a later commit cover messages
            // whose effects are not durable yet; commits name explicit offsets instead.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", millis(config.fetch_wait))
            // A member that died (SIGKILL, a lost host) holds its partitions until its session
            // times out; a short session hands them to a restarted or surviving member quickly.
            // Heartbeats come from librdkafka's own thread, so a busy handler cannot miss them.
            .set("session.timeout.ms", millis(config.session_timeout))
            .set("heartbeat.interval.ms", millis(config.session_timeout / 4))
            .set("statistics.interval.ms", millis(config.lag_interval));
        if let Some(instance) = &config.group_instance_id {
            // Static membership: a restarted member with the same id takes its partitions back
            // at once, without waiting for its old session to expire or a rebalance.
            client.set("group.instance.id", instance);
        }
        let paused = Arc::new(AtomicBool::new(false));
        let lag = Arc::new(Mutex::new(Vec::new()));
        let consumer: StreamConsumer<PauseAware> = config
            .finish(client)
            .create_with_context(PauseAware {
                paused: paused.clone(),
                lag: lag.clone(),
            })
            .map_err(|e| KafkaError::client("creating Kafka consumer", e))?;
        consumer
            .subscribe(topics)
            .map_err(|e| KafkaError::client(format!("subscribing to {}", topics.join(", ")), e))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            paused,
            lag,
        })
    }

    /// Leaves the group, so its partitions move to the remaining members at once instead of after
    /// the session timeout, and returns when librdkafka has closed the consumer. Uncommitted
    /// messages are redelivered to whoever gets their partitions. Dropping the consumer does the
    /// same, but blocks the dropping thread meanwhile; this runs it on the blocking pool.
    pub async fn close(self) {
        // A commit still running holds the other reference; the close then happens when it ends.
        let consumer = self.consumer;
        if let Err(e) = tokio::task::spawn_blocking(move || drop(consumer)).await {
            tracing::error!(error = %e, "closing the Kafka consumer failed");
        }
    }

    async fn next(&self) -> Result<IncomingMessage, RdKafkaError> {
        self.consumer.recv().await.map(|m| to_incoming(&m))
    }

    fn assignment(&self) -> Result<TopicPartitionList, TransportError> {
        self.consumer
            .assignment()
            .map_err(|e| TransportError::unavailable(format!("reading the assignment failed: {e}")))
    }
}

#[async_trait]
impl InboundTransport for KafkaConsumer {
    /// Waits up to `wait` for one message, then gathers whatever else arrives before `linger`
    /// has passed since it, up to `max` (at least one). An error before the first message is
    /// returned as unavailable (broker outages, topics not created yet); an error after it ends
    /// the batch early and is only logged, so the messages already taken are not lost. Only the
    /// wait for the first message can time out, so no message is ever dropped by a timeout.
    async fn recv_batch(
        &self,
        max: usize,
        wait: Duration,
        linger: Duration,
    ) -> Result<Vec<IncomingMessage>, TransportError> {
        let first = match tokio::time::timeout(wait, self.next()).await {
            Err(_nothing_yet) => return Ok(Vec::new()),
            Ok(first) => first.map_err(|e| {
                TransportError::unavailable(format!("receiving from Kafka failed: {e}"))
            })?,
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Err(_lingered) => break,
                Ok(Ok(message)) => batch.push(message),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka consumer error; returning the partial batch");
                    break;
                }
            }
        }
        Ok(batch)
    }

    /// Commits, per partition this member still owns, the offset after the highest message
    /// given, and returns only once the group coordinator has accepted it. Failures are
    /// unavailable: the commit can be repeated.
    async fn commit(&self, messages: &[IncomingMessage]) -> Result<(), TransportError> {
        let offsets = next_offsets(messages);
        if offsets.is_empty() {
            return Ok(());
        }
        let owned = self.assignment()?;
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for ((topic, partition), next) in &offsets {
            if owned.find_partition(topic, *partition).is_none() {
                tracing::debug!(%topic, partition, "not committing a partition this member lost");
                continue;
            }
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| TransportError::rejected(format!("invalid offset to commit: {e}")))?;
        }
        if list.count() == 0 {
            return Ok(());
        }
        // A synchronous commit is the only kind whose outcome we can return: an async commit
        // reports failures later through a callback, after this method would already have said Ok.
        // It waits on a broker round trip, so it runs on the blocking pool, not a runtime thread.
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|e| TransportError::unavailable(format!("Kafka commit task failed: {e}")))?
            .map_err(|e| {
                TransportError::unavailable(format!("committing Kafka offsets failed: {e}"))
            })
    }

    async fn pause(&self) -> Result<(), TransportError> {
        self.paused.store(true, Ordering::Release);
        let assigned = self.assignment()?;
        self.consumer
            .pause(&assigned)
            .map_err(|e| TransportError::unavailable(format!("pausing partitions failed: {e}")))
    }

    async fn resume(&self) -> Result<(), TransportError> {
        self.paused.store(false, Ordering::Release);
        let assigned = self.assignment()?;
        self.consumer
            .resume(&assigned)
            .map_err(|e| TransportError::unavailable(format!("resuming partitions failed: {e}")))
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        self.consumer
            .assignment()
            .map(|assigned| assigned.find_partition(topic, partition).is_some())
            .unwrap_or(false)
    }

    fn assigned_partitions(&self) -> usize {
        self.consumer
            .assignment()
            .map(|assigned| assigned.count())
            .unwrap_or(0)
    }

    /// From librdkafka's last statistics (every `KafkaConfig::lag_interval`): the high watermark
    /// less the committed offset per partition this member fetches.
    fn lag(&self) -> Vec<PartitionLag> {
        self.lag
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The offset to commit per (topic, partition): one past the highest offset seen, since a Kafka
/// commit names the next message to read.
fn next_offsets(messages: &[IncomingMessage]) -> BTreeMap<(String, i32), i64> {
    let mut next = BTreeMap::new();
    for message in messages {
        let entry = next
            .entry((message.topic.clone(), message.partition))
            .or_insert(message.offset + 1);
        *entry = (*entry).max(message.offset + 1);
    }
    next
}

/// Copies a message out of librdkafka's buffer. A header with a null value becomes an empty value,
/// since the port has no way to say "null" and no producer of ours writes one.
fn to_incoming(message: &BorrowedMessage<'_>) -> IncomingMessage {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    IncomingMessage {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, partition: i32, offset: i64) -> IncomingMessage {
        IncomingMessage {
            topic: topic.to_owned(),
            partition,
            offset,
            key: None,
            payload: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn commits_one_past_the_highest_offset_per_partition() {
        let offsets = next_offsets(&[
            message("a", 0, 7),
            message("a", 0, 3),
            message("a", 1, 0),
            message("b", 0, 41),
        ]);
        assert_eq!(
            offsets.into_iter().collect::<Vec<_>>(),
            vec![
                (("a".to_owned(), 0), 8),
                (("a".to_owned(), 1), 1),
                (("b".to_owned(), 0), 42),
            ]
        );
    }

    #[test]
    fn empty_group_id_is_a_config_error() {
        let config = KafkaConfig::new("localhost:9092");
        let err = KafkaConsumer::new(&config, "", &["t"]).err().unwrap();
        assert!(matches!(err, KafkaError::Config(_)), "{err:?}");
    }
}
