//! The event bus: publishing in the caller's transaction, the relay that moves outbox rows to the
//! broker, and the consumer runner that applies each event exactly once. It talks to the database
//! through `smartflow-storage` and to the broker through the transport ports of
//! `smartflow-domain`; it names neither SQL nor rdkafka.

pub mod consumer;
pub mod error;
pub mod handler;
pub mod health;
pub mod metrics;
pub mod publish;
pub mod relay;
pub mod trace;

pub use consumer::{ConsumerConfig, ConsumerRunner, Dedupe, SubscribedEvents, WakeOnCommit};
pub use error::BusError;
pub use handler::{
    EventHandler, HandlerError, HandlerRegistry, HandlerRegistryBuilder, TypedHandler,
};
pub use health::{ComponentReport, Health};
pub use metrics::Metrics;
pub use publish::{EventBus, PublishConfig};
pub use relay::{
    InboxRetention, Relay, RelayConfig, RelayRound, Retention, RetentionReport, DEFAULT_RETENTION,
};

pub use sea_orm::{DatabaseConnection, DatabaseTransaction, TransactionTrait};
pub use smartflow_domain as domain;
