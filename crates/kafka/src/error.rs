use thiserror::Error;

/// Failures of the Kafka adapter outside the per-message transport path (which reports
/// `smartflow_domain::TransportError` instead, because there the caller needs a retry decision).
#[derive(Debug, Error)]
pub enum KafkaError {
    /// The configuration can never work, whatever the broker does.
    #[error("invalid Kafka configuration: {0}")]
    Config(String),

    /// librdkafka refused an operation; `context` says which one.
    #[error("{context}: {source}")]
    Client {
        context: String,
        // In the message only: marking it `#[source]` too would print it twice in error chains.
        source: rdkafka::error::KafkaError,
    },

    /// No broker answered a metadata request before the deadline.
    #[error("cannot reach Kafka brokers at {brokers}: {reason}")]
    Unreachable { brokers: String, reason: String },

    /// Creating or inspecting topics failed.
    #[error("Kafka topic administration failed: {0}")]
    Admin(String),

    /// A blocking librdkafka call run off the async runtime panicked or was cancelled.
    #[error("background Kafka task failed: {0}")]
    Task(String),

    /// The embedded (librdkafka mock) broker failed or is gone.
    #[error("embedded Kafka broker: {0}")]
    Mock(String),
}

impl KafkaError {
    pub(crate) fn client(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Client {
            context: context.into(),
            source,
        }
    }
}
