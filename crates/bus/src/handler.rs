use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use sea_orm::DatabaseTransaction;
use smartflow_domain::{Envelope, EventContract};
use thiserror::Error;

/// A handler's failure, and the decision it carries: a retryable error sends the event back to
/// be delivered again later; a permanent one makes it `dead` with the reason kept.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum HandlerError {
    #[error("retryable: {0}")]
    Retryable(String),
    #[error("permanent: {0}")]
    Permanent(String),
}

impl HandlerError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::Retryable(_))
    }

    /// The reason alone, as stored in `last_error`.
    pub fn reason(&self) -> &str {
        match self {
            HandlerError::Retryable(r) | HandlerError::Permanent(r) => r,
        }
    }
}

impl From<smartflow_storage::StorageError> for HandlerError {
    /// A database error inside a handler is worth another try; constraint violations are not.
    fn from(e: smartflow_storage::StorageError) -> Self {
        if e.is_unique_violation() {
            HandlerError::Permanent(e.to_string())
        } else {
            HandlerError::Retryable(e.to_string())
        }
    }
}

/// Applies one event's effect.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Writes the event's effect through `txn` and nothing else: the bus commits those writes
    /// together with the event's `consumed` mark, or rolls both back when this returns an error.
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        envelope: &Envelope,
    ) -> Result<(), HandlerError>;

    /// Applies several events of this handler's type at once, in the order given (a run of
    /// consecutive events of one batch; each one not applied before). The default applies them
    /// one by one with [`handle`](Self::handle); a handler overrides it to write them with
    /// set-based statements. An error rolls back every event of the call, and the bus then
    /// applies them again one by one, each in its own savepoint, to find out which one failed:
    /// the writes of one call must depend on nothing but `txn`.
    async fn handle_batch(
        &self,
        txn: &DatabaseTransaction,
        envelopes: &[&Envelope],
    ) -> Result<(), HandlerError> {
        for envelope in envelopes {
            self.handle(txn, envelope).await?;
        }
        Ok(())
    }
}

/// A handler for one typed event; the registry decodes the payload before calling it.
#[async_trait]
pub trait TypedHandler<E: EventContract>: Send + Sync {
    /// As [`EventHandler::handle`], with the payload already decoded.
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: E,
        envelope: &Envelope,
    ) -> Result<(), HandlerError>;

    /// As [`EventHandler::handle_batch`], with the payloads already decoded.
    async fn handle_batch(
        &self,
        txn: &DatabaseTransaction,
        events: Vec<(E, &Envelope)>,
    ) -> Result<(), HandlerError> {
        for (event, envelope) in events {
            self.handle(txn, event, envelope).await?;
        }
        Ok(())
    }
}

struct Decoding<E, H> {
    handler: H,
    _event: PhantomData<fn() -> E>,
}

#[async_trait]
impl<E: EventContract, H: TypedHandler<E>> EventHandler for Decoding<E, H> {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        self.handler.handle(txn, decode(envelope)?, envelope).await
    }

    async fn handle_batch(
        &self,
        txn: &DatabaseTransaction,
        envelopes: &[&Envelope],
    ) -> Result<(), HandlerError> {
        let events = envelopes
            .iter()
            .map(|envelope| Ok((decode(envelope)?, *envelope)))
            .collect::<Result<Vec<_>, HandlerError>>()?;
        self.handler.handle_batch(txn, events).await
    }
}

fn decode<E: EventContract>(envelope: &Envelope) -> Result<E, HandlerError> {
    envelope
        .decode::<E>()
        .map_err(|e| HandlerError::Permanent(format!("undecodable payload: {e}")))
}

/// The immutable map `event_type -> handler`, built once at start-up.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: HashMap<String, Arc<dyn EventHandler>>,
}

impl HandlerRegistry {
    pub fn builder() -> HandlerRegistryBuilder {
        HandlerRegistryBuilder::default()
    }

    /// The handler of an event type; `None` is an error for the caller to report, never a skip.
    pub fn get(&self, event_type: &str) -> Option<&Arc<dyn EventHandler>> {
        self.handlers.get(event_type)
    }

    /// The registered event types, sorted.
    pub fn event_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

#[derive(Default)]
pub struct HandlerRegistryBuilder {
    handlers: HashMap<String, Arc<dyn EventHandler>>,
    duplicates: Vec<String>,
}

impl HandlerRegistryBuilder {
    /// Registers a typed handler for `E::EVENT_TYPE`.
    pub fn on<E: EventContract, H: TypedHandler<E> + 'static>(self, handler: H) -> Self {
        self.on_type(
            E::EVENT_TYPE,
            Arc::new(Decoding::<E, H> {
                handler,
                _event: PhantomData,
            }),
        )
    }

    /// Registers an untyped handler for an event type.
    pub fn on_type(mut self, event_type: &str, handler: Arc<dyn EventHandler>) -> Self {
        if self
            .handlers
            .insert(event_type.to_owned(), handler)
            .is_some()
        {
            self.duplicates.push(event_type.to_owned());
        }
        self
    }

    /// The registry, or an error naming any event type registered twice.
    pub fn build(self) -> Result<HandlerRegistry, crate::BusError> {
        if !self.duplicates.is_empty() {
            return Err(crate::BusError::Config(format!(
                "event types with two handlers: {}",
                self.duplicates.join(", ")
            )));
        }
        Ok(HandlerRegistry {
            handlers: self.handlers,
        })
    }
}
