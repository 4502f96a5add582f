use smartflow_domain::{Delivery, DomainError, TransportError, TransportFault};
use smartflow_storage::StorageError;
use thiserror::Error;
use uuid::Uuid;

/// Errors of the bus. Publishing errors reach the caller, who decides whether to roll back.
#[derive(Debug, Error)]
pub enum BusError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("broker: {0}")]
    Transport(#[from] TransportError),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `EventBus::publish` (or its siblings) was given an event of a `Delivery::Direct` route,
    /// which has no row to write in a transaction; nothing was written.
    #[error(
        "event type `{event_type}` has the direct route `{service}` (`Delivery::Direct`), which \
         writes no row in a transaction: send it with `EventBus::send_direct`, which sends it to \
         the broker at once, whatever becomes of the transaction"
    )]
    DirectInTransaction { event_type: String, service: String },
    /// `EventBus::send_direct` was given an event whose route keeps a row; nothing was sent.
    #[error(
        "event type `{event_type}` has the route `{service}` with `Delivery::{delivery:?}`: \
         publish it in the caller's transaction with `EventBus::publish`; \
         `EventBus::send_direct` is for `Delivery::Direct` routes only"
    )]
    NotDirect {
        event_type: String,
        service: String,
        delivery: Delivery,
    },
    /// A direct event, and a bus built without a transport to send it through.
    #[error(
        "cannot send the direct event of type `{event_type}`: this bus has no transport \
         (`EventBus::with_transport`; a service's skeleton gives it the Kafka producer)"
    )]
    NoTransport { event_type: String },
    /// The broker did not take a direct event. Nothing keeps it and nothing sends it again:
    /// the caller decides whether to send it again (`error.fault` says whose fault it was).
    #[error(
        "the direct event `{event_id}` of type `{event_type}` was not sent ({}): {error}; \
         nothing keeps it or sends it again",
        fault_words(.error.fault)
    )]
    DirectNotSent {
        event_type: String,
        event_id: Uuid,
        error: TransportError,
    },
}

fn fault_words(fault: TransportFault) -> &'static str {
    match fault {
        TransportFault::Unavailable => "the broker is unavailable",
        TransportFault::Rejected => "the broker rejected it",
    }
}

impl From<sea_orm::DbErr> for BusError {
    fn from(e: sea_orm::DbErr) -> Self {
        BusError::Storage(StorageError::Db(e))
    }
}
