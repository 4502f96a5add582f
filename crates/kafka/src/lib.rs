//! The Kafka adapter: implements the domain's transport ports on librdkafka (through `rdkafka`),
//! plus what start-up and tests need around them. This is the only crate that names `rdkafka`.
//!
//! - [`KafkaProducer`] implements `OutboundTransport` with an idempotent, `acks=all` producer.
//! - [`KafkaConsumer`] implements `InboundTransport` for one consumer group, committing only the
//!   offsets it is given.
//! - [`ensure_topics`] and [`wait_for_broker`] prepare a cluster at start-up.
//! - [`EmbeddedBroker`] is an in-process Kafka-protocol broker (librdkafka's mock cluster) with
//!   fault injection, for development and tests.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod embedded;
pub mod error;
pub mod producer;

pub use admin::{ensure_topics, wait_for_broker};
pub use config::KafkaConfig;
pub use consumer::KafkaConsumer;
pub use embedded::{EmbeddedBroker, ProduceFault};
pub use error::KafkaError;
pub use producer::KafkaProducer;
