//! The pure core of smartflow: statuses and their transitions, the event envelope, typed event
//! contracts, routes, the retry policy and the transport port traits. No I/O lives here.

pub mod contract;
pub mod credential;
pub mod envelope;
pub mod error;
pub mod retry;
pub mod route;
pub mod status;
pub mod transport;

pub use contract::EventContract;
pub use credential::SERVICE_TOKEN_HEADER;
pub use envelope::{
    Envelope, EVENT_ID_HEADER, EVENT_TYPE_HEADER, EVENT_VERSION_HEADER, SOURCE_HEADER,
    TRACEPARENT_HEADER,
};
pub use error::DomainError;
pub use retry::RetryPolicy;
pub use route::{Delivery, KeyOrder, RouteRegistry, RouteRegistryBuilder, ServiceRoute};
pub use status::OutboxStatus;
pub use transport::{
    EventHeaders, InboundTransport, IncomingMessage, OutboundMessage, OutboundTransport,
    PartitionLag, TransportError, TransportFault,
};
