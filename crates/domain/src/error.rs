use thiserror::Error;

/// Errors raised by the pure domain: invalid routes, unknown event types, bad statuses, bad payloads.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DomainError {
    #[error("no route is registered for event type `{0}`")]
    UnknownEventType(String),
    #[error("event type `{event_type}` is already routed to service `{service}`")]
    DuplicateEventType { event_type: String, service: String },
    #[error("service `{0}` is registered twice")]
    DuplicateService(String),
    #[error("event type `{event_type}` names service `{service}`, which has no route")]
    UnknownService { event_type: String, service: String },
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("unknown outbox status `{0}`")]
    UnknownStatus(String),
    #[error("outbox status cannot move from {from} to {to}")]
    IllegalTransition { from: String, to: String },
    #[error("payload of event type `{event_type}` cannot be encoded or decoded: {reason}")]
    Payload { event_type: String, reason: String },
    #[error(
        "payload of event type `{event_type}` is {size} bytes, over the limit of {limit} bytes"
    )]
    PayloadTooLarge {
        event_type: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "topic `{topic}` belongs to the direct route `{direct}` and to the outbox route `{outbox}`: \
         its consumers could not tell which events have an outbox row; give the direct route a \
         topic of its own"
    )]
    DirectTopicShared {
        topic: String,
        direct: String,
        outbox: String,
    },
    #[error("invalid retry policy: {0}")]
    InvalidRetryPolicy(&'static str),
}
