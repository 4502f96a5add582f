use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use sea_orm::{DatabaseTransaction, TransactionTrait};
use smartflow_domain::{
    Delivery, DomainError, Envelope, EventContract, EventHeaders, OutboundMessage,
    OutboundTransport, RouteRegistry, TransportError, TransportFault, SOURCE_HEADER,
    TRACEPARENT_HEADER,
};
use smartflow_storage::outbox::{EncodedRow, OutboxTable};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::metrics::DirectErrorKind;
use crate::{BusError, Metrics};

/// How often at most a bus sends relays in other processes a wake-up (`pg_notify` in the
/// publishing transaction, PostgreSQL): the publishes in between rely on the relay polling
/// again soon after a round that found rows. If the transaction that carried the wake-up rolls
/// back, the rows committed in that window wait for the relay's next poll (at most
/// `poll_interval`).
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);

/// How much longer than the transport's own delivery timeout a direct send waits, so that the
/// transport's verdict (with the broker's reason) comes before the bus stops waiting.
const DIRECT_GRACE: Duration = Duration::from_secs(1);

/// Limits applied when publishing.
#[derive(Debug, Clone, Copy)]
pub struct PublishConfig {
    /// The largest envelope (as JSON bytes) accepted; larger ones are refused at publish time,
    /// where the caller can still react, instead of dying later at the broker.
    pub max_payload_bytes: usize,
    /// How many failed attempts a row may have before it is `dead`.
    pub max_retry: u32,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 900 * 1024,
            max_retry: 20,
        }
    }
}

/// The entry point for services: writes events into the publishing service's own outbox inside
/// the caller's transaction and wakes the relays of this process when that transaction commits.
/// The route of an event's type picks only the topic: a service never writes into another
/// service's outbox, so services need not share a database.
///
/// The route's `Delivery` decides which method an event is given to, and the bus refuses the
/// other: [`publish`](Self::publish) for `Outbox` and `StoreOnly` routes (a row, in the
/// caller's transaction), [`send_direct`](Self::send_direct) for `Direct` routes (no row, sent
/// at once through the transport of [`with_transport`](Self::with_transport)).
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    routes: RouteRegistry,
    table: OutboxTable,
    config: PublishConfig,
    wake: Arc<Notify>,
    /// When this bus last sent relays in other processes a wake-up (see [`ANNOUNCE_EVERY`]).
    announced: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
    /// What direct events are sent through, shared by every clone of the bus; `None`: a direct
    /// send is an error.
    transport: RwLock<Option<Arc<dyn OutboundTransport>>>,
}

impl EventBus {
    /// The bus of `service`, which publishes into that service's outbox table (its route in
    /// `routes`). `routes` also holds the routes of every other service whose event types this
    /// service publishes (their topics).
    pub fn new(
        service: &str,
        routes: RouteRegistry,
        config: PublishConfig,
    ) -> Result<Self, BusError> {
        if config.max_payload_bytes == 0 || config.max_retry == 0 {
            return Err(BusError::Config(
                "max_payload_bytes and max_retry must be above zero".into(),
            ));
        }
        let Some(own) = routes.service(service) else {
            return Err(BusError::Config(format!(
                "the route registry has no route for the publishing service `{service}`"
            )));
        };
        let table = OutboxTable::new(&own.outbox_table)?;
        Ok(Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                routes,
                table,
                config,
                wake: Arc::new(Notify::new()),
                announced: Mutex::new(None),
                metrics: Arc::new(Metrics::for_service(service)),
                transport: RwLock::new(None),
            }),
        })
    }

    /// The same bus, sending the events of `Delivery::Direct` routes through `transport` (the
    /// service's producer, which its relay uses too). Every clone of the bus shares the
    /// transport, those made before this call too; a later call replaces it for all of them.
    pub fn with_transport(self, transport: Arc<dyn OutboundTransport>) -> Self {
        *self
            .inner
            .transport
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(transport);
        self
    }

    /// The transport of [`with_transport`](Self::with_transport), if the bus has one.
    fn transport(&self) -> Option<Arc<dyn OutboundTransport>> {
        self.inner
            .transport
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The outbox table this bus writes into.
    pub fn outbox(&self) -> &OutboxTable {
        &self.inner.table
    }

    pub fn routes(&self) -> &RouteRegistry {
        &self.inner.routes
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The signal relays of this process wait on between rounds.
    pub fn wake_signal(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    /// Writes a typed event into this service's outbox through `txn`, bound for the topic of its
    /// type's route. Nothing is published unless
    /// `txn` commits. Returns the event id. An event type with no route, or a payload over the
    /// limit, is an error and nothing is written. So is an event of a `Delivery::Direct` route
    /// ([`BusError::DirectInTransaction`]), which has no row: [`send_direct`](Self::send_direct)
    /// sends it, at once and whatever becomes of `txn`.
    pub async fn publish<E: EventContract>(
        &self,
        txn: &DatabaseTransaction,
        message_key: &str,
        event: &E,
    ) -> Result<Uuid, BusError> {
        let envelope = Envelope::for_event(message_key, event)?;
        self.publish_envelope(txn, envelope).await
    }

    /// As [`publish`](Self::publish) for an envelope built by the caller (an untyped event, or
    /// one that carries a trace context of its own). A missing trace context is this call's
    /// span's (`publish_envelope`, a child of the caller's), or a new trace when no
    /// OpenTelemetry layer is installed.
    #[tracing::instrument(skip_all, fields(event_type = %envelope.event_type, event_id = %envelope.event_id))]
    pub async fn publish_envelope(
        &self,
        txn: &DatabaseTransaction,
        envelope: Envelope,
    ) -> Result<Uuid, BusError> {
        let ids = self.publish_envelopes(txn, vec![envelope]).await?;
        Ok(ids[0])
    }

    /// As [`publish`](Self::publish) for several events of one type, `(message_key, event)`, with
    /// as few statements as the database allows (one multi-row insert per thousand rows): for a
    /// handler that applies a batch of events at once. Returns the event ids in order. If any
    /// event cannot be published (no route, too large), nothing is written.
    pub async fn publish_all<E: EventContract>(
        &self,
        txn: &DatabaseTransaction,
        events: &[(&str, &E)],
    ) -> Result<Vec<Uuid>, BusError> {
        let envelopes = events
            .iter()
            .map(|(key, event)| Envelope::for_event(*key, *event))
            .collect::<Result<Vec<_>, _>>()?;
        self.publish_envelopes(txn, envelopes).await
    }

    /// As [`publish_envelope`](Self::publish_envelope) for several envelopes at once.
    pub async fn publish_envelopes(
        &self,
        txn: &DatabaseTransaction,
        envelopes: Vec<Envelope>,
    ) -> Result<Vec<Uuid>, BusError> {
        if envelopes.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = envelopes
            .into_iter()
            .map(|envelope| self.prepare(envelope))
            .collect::<Result<Vec<_>, _>>()?;
        // A direct event has no row: written here, it would seem tied to the transaction.
        if let Some(direct) = prepared.iter().find(|p| p.delivery == Delivery::Direct) {
            return Err(BusError::DirectInTransaction {
                event_type: direct.envelope.event_type.clone(),
                service: direct.service.to_owned(),
            });
        }
        let rows: Vec<EncodedRow<'_>> = prepared
            .iter()
            .map(|p| EncodedRow {
                envelope: &p.envelope,
                encoded: &p.encoded,
                topic: p.topic,
                store_only: p.delivery == Delivery::StoreOnly,
            })
            .collect();
        self.inner
            .table
            .insert_all(txn, &rows, self.inner.config.max_retry)
            .await?;
        // Relays in other processes hear of it when (and only if) `txn` commits. A store-only
        // row is for the record: no relay claims it, so none needs waking.
        if rows.iter().any(|r| !r.store_only) && self.due_to_announce() {
            self.inner.table.announce(txn).await?;
        }
        Ok(prepared.iter().map(|p| p.envelope.event_id).collect())
    }

    /// The envelope as it is stored, its encoding and its topic: the route resolved (unknown
    /// types are an error), the trace context started if missing, the source set, the size
    /// checked.
    fn prepare(&self, mut envelope: Envelope) -> Result<Prepared<'_>, BusError> {
        let route = self.inner.routes.resolve(&envelope.event_type)?;
        envelope
            .headers
            .entry(TRACEPARENT_HEADER.to_owned())
            .or_insert_with(|| crate::trace::current_traceparent().unwrap_or_else(new_traceparent));
        // Always this service: a consumer trusts the source to decide where to mark the event.
        envelope
            .headers
            .insert(SOURCE_HEADER.to_owned(), self.inner.service.clone());
        let encoded = envelope.to_json();
        let size = encoded.len();
        if size > self.inner.config.max_payload_bytes {
            return Err(DomainError::PayloadTooLarge {
                event_type: envelope.event_type,
                size,
                limit: self.inner.config.max_payload_bytes,
            }
            .into());
        }
        Ok(Prepared {
            envelope,
            encoded,
            topic: &route.topic,
            service: &route.service,
            delivery: route.delivery,
        })
    }

    /// Sends a typed event of a `Delivery::Direct` route to the broker now, with no outbox row
    /// and outside any transaction (a transaction the caller has open, committed or rolled back
    /// later, changes nothing about it). Returns the event id once the broker acknowledged the
    /// message; otherwise an error and the event is lost: nothing keeps it, nothing sends it
    /// again ([`BusError::DirectNotSent`], whose `error.fault` says whether the broker was
    /// unavailable or rejected it; [`BusError::NoTransport`] for a bus without a transport).
    /// An event of a route that keeps a row is refused ([`BusError::NotDirect`]), as are an
    /// unrouted type and a payload over the limit. The message is the one the relay would send
    /// (same key, value and headers), so consumers dispatch and deduplicate it the same way.
    pub async fn send_direct<E: EventContract>(
        &self,
        message_key: &str,
        event: &E,
    ) -> Result<Uuid, BusError> {
        let envelope = Envelope::for_event(message_key, event)?;
        self.send_direct_envelope(envelope).await
    }

    /// As [`send_direct`](Self::send_direct) for an envelope built by the caller (an untyped
    /// event, one with a trace context of its own, or the same event id sent again).
    #[tracing::instrument(skip_all, fields(event_type = %envelope.event_type, event_id = %envelope.event_id))]
    pub async fn send_direct_envelope(&self, envelope: Envelope) -> Result<Uuid, BusError> {
        let prepared = self.prepare(envelope)?;
        let event_type = prepared.envelope.event_type.clone();
        if prepared.delivery != Delivery::Direct {
            return Err(BusError::NotDirect {
                event_type,
                service: prepared.service.to_owned(),
                delivery: prepared.delivery,
            });
        }
        let Some(transport) = self.transport() else {
            self.inner
                .metrics
                .direct_error(DirectErrorKind::NoTransport);
            return Err(BusError::NoTransport { event_type });
        };
        let event_id = prepared.envelope.event_id;
        let message = OutboundMessage::event(
            prepared.topic.to_owned(),
            prepared.envelope.message_key.clone(),
            prepared.encoded,
            EventHeaders {
                event_id: event_id.to_string(),
                event_type: event_type.clone(),
                version: prepared.envelope.version.into(),
                traceparent: prepared.envelope.traceparent().map(str::to_owned),
            },
        );
        let within = transport.delivery_timeout() + DIRECT_GRACE;
        let outcome = transport
            .send_batch(vec![message], within)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(TransportError::unavailable("the transport gave no outcome")));
        match outcome {
            Ok(()) => {
                self.inner.metrics.direct_sent();
                Ok(event_id)
            }
            Err(error) => {
                self.inner.metrics.direct_error(match error.fault {
                    TransportFault::Unavailable => DirectErrorKind::Unavailable,
                    TransportFault::Rejected => DirectErrorKind::Rejected,
                });
                tracing::warn!(%error, "a direct event was not sent; it is lost");
                Err(BusError::DirectNotSent {
                    event_type,
                    event_id,
                    error,
                })
            }
        }
    }

    /// Commits `txn` and wakes this process's relays at once, so a new row does not wait for
    /// the next poll.
    pub async fn commit(&self, txn: DatabaseTransaction) -> Result<(), BusError> {
        txn.commit().await?;
        self.wake_relays();
        Ok(())
    }

    /// Whether this publish sends relays in other processes a wake-up: at most once every
    /// [`ANNOUNCE_EVERY`] per bus. PostgreSQL serializes the commits of transactions that sent a
    /// `NOTIFY` (each holds one database-wide lock until its commit record is flushed), so one
    /// in every publishing transaction made commits queue behind each other under load. A
    /// relay woken by one wake-up finds the rows committed just after it too: after a round
    /// that found rows it polls again within `min_poll_interval`.
    fn due_to_announce(&self) -> bool {
        let now = Instant::now();
        let mut announced = self
            .inner
            .announced
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if announced.is_some_and(|at| now.duration_since(at) < ANNOUNCE_EVERY) {
            return false;
        }
        *announced = Some(now);
        true
    }

    /// Tells the relays of this process that new rows may be waiting.
    pub fn wake_relays(&self) {
        self.inner.wake.notify_waiters();
    }

    /// Opens a transaction on `db`; a convenience so services need not import sea-orm's traits.
    pub async fn begin<C: TransactionTrait>(
        &self,
        db: &C,
    ) -> Result<DatabaseTransaction, BusError> {
        Ok(db.begin().await?)
    }
}

/// An envelope ready to be written: as stored, encoded, with its route's topic and delivery.
struct Prepared<'a> {
    envelope: Envelope,
    encoded: String,
    topic: &'a str,
    /// The route's service.
    service: &'a str,
    delivery: Delivery,
}

/// A W3C `traceparent` that starts a new trace: version 00, random trace and span ids, sampled.
fn new_traceparent() -> String {
    let mut rng = rand::thread_rng();
    let trace = ((rng.next_u64() as u128) << 64) | rng.next_u64() as u128;
    let span = rng.next_u64();
    format!("00-{trace:032x}-{span:016x}-01")
}
