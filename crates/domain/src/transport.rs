//! The ports the bus talks to a message broker through. The Kafka crate implements them.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::{EVENT_ID_HEADER, EVENT_TYPE_HEADER, EVENT_VERSION_HEADER, TRACEPARENT_HEADER};

/// Whose fault a broker failure is, which decides what it may cost the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFault {
    /// The broker, the network or the client is not working (unreachable, timed out, all
    /// brokers down, not authorized, a fatal client error). Says nothing about the message:
    /// the caller pauses as a whole and tries again later, and the event's retries are not spent.
    Unavailable,
    /// This message can never be accepted (too large, invalid topic name, invalid record):
    /// trying again cannot help, so the event is `dead` with the reason kept.
    Rejected,
}

/// A broker failure, and whose fault it is.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct TransportError {
    pub message: String,
    pub fault: TransportFault,
}

impl TransportError {
    /// The broker or the way to it is not working; see [`TransportFault::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            fault: TransportFault::Unavailable,
        }
    }

    /// This one message can never be accepted; see [`TransportFault::Rejected`].
    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            fault: TransportFault::Rejected,
        }
    }

    /// Whether the failure is the infrastructure's, not the message's.
    pub fn is_unavailable(&self) -> bool {
        self.fault == TransportFault::Unavailable
    }
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub topic: String,
    pub key: String,
    pub payload: String,
    pub headers: Vec<(String, String)>,
}

impl OutboundMessage {
    /// One event as the bus sends it, whether the relay sends it from its outbox row or
    /// `EventBus::send_direct` sends it at once: keyed by its message key, the encoded envelope
    /// as its value, and the headers consumers dispatch and deduplicate by. One constructor for
    /// both, so a consumer cannot tell a direct event from a relayed one by its wire form.
    pub fn event(topic: String, key: String, payload: String, event: EventHeaders) -> Self {
        let mut headers = vec![
            (EVENT_ID_HEADER.to_owned(), event.event_id),
            (EVENT_TYPE_HEADER.to_owned(), event.event_type),
            (EVENT_VERSION_HEADER.to_owned(), event.version.to_string()),
        ];
        if let Some(traceparent) = event.traceparent {
            headers.push((TRACEPARENT_HEADER.to_owned(), traceparent));
        }
        Self {
            topic,
            key,
            payload,
            headers,
        }
    }
}

/// What an event's message carries as headers beside its envelope (which holds them too, with
/// the publishing service's `source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeaders {
    pub event_id: String,
    pub event_type: String,
    pub version: i64,
    /// The W3C trace context, sent as `traceparent` when present.
    pub traceparent: Option<String>,
}

/// Sends messages to the broker.
#[async_trait]
pub trait OutboundTransport: Send + Sync {
    /// Sends every message concurrently and returns one outcome per message, in input order,
    /// no later than `within` after the call (a message without an answer by then is reported
    /// [`TransportFault::Unavailable`]; it may still arrive, and consumers drop duplicates). An
    /// `Ok` means the broker acknowledged the message durably.
    ///
    /// Messages with the same key keep their input order: they are written to the broker in that
    /// order, and a message is never acknowledged after an earlier message of its key in the same
    /// batch was reported unavailable (once one fails, the later ones of its key fail too, or are
    /// not sent). The relay relies on this for per-key order, and counts any breach
    /// (`order_breaks`).
    async fn send_batch(
        &self,
        messages: Vec<OutboundMessage>,
        within: Duration,
    ) -> Vec<Result<(), TransportError>>;

    /// The longest the transport itself keeps trying one message before it reports a failure
    /// (the producer's message timeout); the relay checks that it fits in its claim window.
    fn delivery_timeout(&self) -> Duration;
}

/// One message received from the broker, with the position needed to commit past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl IncomingMessage {
    /// The value of a header, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Receives messages of one consumer group and commits its progress.
#[async_trait]
pub trait InboundTransport: Send + Sync {
    /// Waits up to `wait` for a first message (an empty batch when none came), then returns it
    /// together with any further messages that arrive within `linger`, up to `max` in all, in
    /// partition order. Every call counts as a poll that keeps the group membership alive.
    async fn recv_batch(
        &self,
        max: usize,
        wait: Duration,
        linger: Duration,
    ) -> Result<Vec<IncomingMessage>, TransportError>;

    /// Commits, for each partition present, the offset after the highest message given; only
    /// called once the messages' effects are durable. Partitions this member no longer owns are
    /// left out (their new owner redelivers from the last commit).
    async fn commit(&self, messages: &[IncomingMessage]) -> Result<(), TransportError>;

    /// Stops fetching from every assigned partition, so that polls keep the membership alive
    /// without handing out messages while the consumer cannot apply them; `resume` undoes it.
    async fn pause(&self) -> Result<(), TransportError>;

    /// Fetches again from every assigned partition.
    async fn resume(&self) -> Result<(), TransportError>;

    /// Whether this member currently owns `partition` of `topic`; messages of partitions it
    /// lost in a rebalance are dropped rather than applied and committed by a non-owner.
    fn owns(&self, topic: &str, partition: i32) -> bool;

    /// How many partitions are assigned to this member now.
    fn assigned_partitions(&self) -> usize;

    /// How far this member is behind on each partition it owns, as of what it last heard from
    /// the broker, without asking it; a transport that cannot tell reports none.
    fn lag(&self) -> Vec<PartitionLag> {
        Vec::new()
    }
}

/// The messages of one partition after what its consumer committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub lag: i64,
}
