use serde::de::DeserializeOwned;
use serde::Serialize;

/// A typed event: its wire name and schema version. Publishing and handling go through this
/// trait so that an event type string is written once, next to its payload type.
pub trait EventContract: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The routing key of this event; must be registered in the route registry.
    const EVENT_TYPE: &'static str;
    /// The payload schema version carried in the envelope.
    const VERSION: u32 = 1;
}
