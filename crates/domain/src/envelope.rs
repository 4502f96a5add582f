use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{DomainError, EventContract};

/// Headers every published message carries beside its envelope, so consumers can route and
/// trace without parsing the value.
pub const EVENT_ID_HEADER: &str = "event_id";
/// The event's type (the [`EventContract::EVENT_TYPE`] it was published as).
pub const EVENT_TYPE_HEADER: &str = "event_type";
/// The event type's version.
pub const EVENT_VERSION_HEADER: &str = "event_version";
/// W3C trace-context header carried from the publisher to the consumer.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The envelope header naming the service whose outbox the event was published from. A
/// consumer marks an event in its own outbox only when it came from there; any other source is
/// deduplicated through the consumer's inbox.
pub const SOURCE_HEADER: &str = "source";

/// What travels on the wire for every event: identity, type, version, key, time, headers and the
/// JSON payload. The relay sends it as the Kafka value; the consumer decodes it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    pub event_type: String,
    pub version: u32,
    pub message_key: String,
    pub occurred_at: DateTime<Utc>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub payload: serde_json::Value,
}

impl Envelope {
    /// Builds an envelope for a typed event with a fresh time-ordered event id.
    pub fn for_event<E: EventContract>(
        message_key: impl Into<String>,
        event: &E,
    ) -> Result<Self, DomainError> {
        let payload = serde_json::to_value(event).map_err(|e| DomainError::Payload {
            event_type: E::EVENT_TYPE.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            event_id: Uuid::now_v7(),
            event_type: E::EVENT_TYPE.to_owned(),
            version: E::VERSION,
            message_key: message_key.into(),
            occurred_at: Utc::now(),
            headers: BTreeMap::new(),
            payload,
        })
    }

    /// Decodes the payload as the typed event, refusing an envelope of another event type.
    pub fn decode<E: EventContract>(&self) -> Result<E, DomainError> {
        if self.event_type != E::EVENT_TYPE {
            return Err(DomainError::Payload {
                event_type: self.event_type.clone(),
                reason: format!("expected event type `{}`", E::EVENT_TYPE),
            });
        }
        serde_json::from_value(self.payload.clone()).map_err(|e| DomainError::Payload {
            event_type: self.event_type.clone(),
            reason: e.to_string(),
        })
    }

    /// The envelope as the bytes stored in the outbox and sent to Kafka.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings, numbers and a JSON value cannot fail.
        serde_json::to_string(self).expect("an envelope always serializes")
    }

    /// Parses bytes received from the transport.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DomainError> {
        serde_json::from_slice(bytes).map_err(|e| DomainError::Payload {
            event_type: "<unknown>".to_owned(),
            reason: format!("not an envelope: {e}"),
        })
    }

    /// When the envelope in `bytes` says its event occurred, reading nothing else of it; `None`
    /// when the bytes are not an envelope.
    pub fn occurred_at_of(bytes: &[u8]) -> Option<DateTime<Utc>> {
        #[derive(Deserialize)]
        struct OccurredAt {
            occurred_at: DateTime<Utc>,
        }
        serde_json::from_slice::<OccurredAt>(bytes)
            .ok()
            .map(|o| o.occurred_at)
    }

    /// The service whose outbox this envelope was published from, if it says.
    pub fn source(&self) -> Option<&str> {
        self.headers.get(SOURCE_HEADER).map(String::as_str)
    }

    /// The trace context this envelope carries, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.headers.get(TRACEPARENT_HEADER).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }
    impl EventContract for Ping {
        const EVENT_TYPE: &'static str = "test.ping";
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pong {
        m: String,
    }
    impl EventContract for Pong {
        const EVENT_TYPE: &'static str = "test.pong";
    }

    #[test]
    fn round_trips_through_json() {
        let mut env = Envelope::for_event("k1", &Ping { n: 7 }).unwrap();
        env.headers
            .insert(TRACEPARENT_HEADER.into(), "00-abc-def-01".into());
        let back = Envelope::from_slice(env.to_json().as_bytes()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.decode::<Ping>().unwrap(), Ping { n: 7 });
        assert_eq!(back.traceparent(), Some("00-abc-def-01"));
    }

    /// Found by fuzzing the decoder (`fuzz/`, target `envelope`): without serde_json's
    /// `float_roundtrip` a number could be read one unit in the last place off, so an `f64` in
    /// a payload changed between the publisher's encoding and the consumer's decoding.
    #[test]
    fn numbers_arrive_exactly_as_published() {
        let received = br#"{"event_id": "0190a5f0-0000-7000-8000-000000000001",
            "event_type": "test.ping", "version": 2, "message_key": "c1",
            "occurred_at": "2026-12-01T10:00:00.123Z",
            "payload": {"occurred_at_ms": 17900000e0300, "small": 2.2250738585072011e-308}}"#;
        let envelope = Envelope::from_slice(received).unwrap();
        assert_eq!(envelope.payload["occurred_at_ms"].as_f64(), Some(1.79e307));
        let again = Envelope::from_slice(envelope.to_json().as_bytes()).unwrap();
        assert_eq!(again, envelope);
    }

    #[test]
    fn the_time_of_an_event_is_read_alone_and_garbage_has_none() {
        let env = Envelope::for_event("k1", &Ping { n: 7 }).unwrap();
        assert_eq!(
            Envelope::occurred_at_of(env.to_json().as_bytes()),
            Some(env.occurred_at)
        );
        assert_eq!(Envelope::occurred_at_of(b"{not json"), None);
        assert_eq!(Envelope::occurred_at_of(br#"{"event_id": 1}"#), None);
    }

    #[test]
    fn decoding_as_another_type_or_garbage_is_an_error() {
        let env = Envelope::for_event("k1", &Ping { n: 7 }).unwrap();
        assert!(env.decode::<Pong>().is_err());
        let mut wrong = env.clone();
        wrong.payload = serde_json::json!({"n": "seven"});
        assert!(matches!(
            wrong.decode::<Ping>(),
            Err(DomainError::Payload { .. })
        ));
        assert!(Envelope::from_slice(b"{not json").is_err());
    }
}
