//! The ports the bus talks to a message broker through. The Kafka crate implements them.

use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

/// A broker failure, and whether trying again later may succeed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct TransportError {
    pub message: String,
    /// False when the same message can never succeed (too large, invalid topic): the row is dead.
    pub retryable: bool,
}

impl TransportError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
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

/// Sends messages to the broker.
#[async_trait]
pub trait OutboundTransport: Send + Sync {
    /// Sends every message concurrently and returns one outcome per message, in input order. An
    /// `Ok` means the broker acknowledged the message durably.
    async fn send_batch(&self, messages: Vec<OutboundMessage>) -> Vec<Result<(), TransportError>>;
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
    /// Waits for at least one message, then returns it together with any further messages that
    /// arrive within `linger`, up to `max` in all, in partition order.
    async fn recv_batch(
        &self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<IncomingMessage>, TransportError>;

    /// Commits, for each partition present, the offset after the highest message given; only
    /// called once the messages' effects are durable.
    async fn commit(&self, messages: &[IncomingMessage]) -> Result<(), TransportError>;
}
