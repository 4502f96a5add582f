//! What the notification consumer does with a request: records it once per
//! `(channel, dedupe_key)`, in the bus's transaction, so the record and the event's `consumed`
//! mark commit together. Sending happens after that commit, in the dispatcher: a provider call
//! never holds a database transaction open.

use async_trait::async_trait;
use sea_orm::DatabaseTransaction;
use serde::{Deserialize, Serialize};
use smartflow_bus::{BusError, HandlerError, HandlerRegistry, TypedHandler};
use smartflow_domain::Envelope;
use smartflow_storage::notification::{self, NewNotification, RequestOutcome};
use smartflow_storage::now_millis;

use crate::events::{NotificationRequested, Validate};
use crate::provider::{redact_target, OutgoingNotification, ShownTarget, TargetPolicy};

/// What a record's `payload` column holds: the message and where it goes. `Debug` hides the
/// webhook's token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNotification {
    #[serde(default)]
    pub target: Option<String>,
    pub title: String,
    pub text: String,
    pub requested_by: String,
    #[serde(default)]
    pub user_id: Option<String>,
}

impl std::fmt::Debug for StoredNotification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredNotification")
            .field("target", &ShownTarget(self.target.as_deref()))
            .field("title", &self.title)
            .field("text", &self.text)
            .field("requested_by", &self.requested_by)
            .field("user_id", &self.user_id)
            .finish()
    }
}

impl StoredNotification {
    pub fn from_event(event: &NotificationRequested) -> Self {
        Self {
            target: event.explicit_target().map(str::to_owned),
            title: event.title.clone(),
            text: event.text.clone(),
            requested_by: event.requested_by.clone(),
            user_id: event.user_id.clone(),
        }
    }

    pub fn outgoing(&self) -> OutgoingNotification {
        OutgoingNotification {
            target: self.target.clone(),
            title: self.title.clone(),
            text: self.text.clone(),
        }
    }

    /// The target as it may be shown: the webhook's token hidden, `None` for the default.
    pub fn shown_target(&self) -> Option<String> {
        self.target.as_deref().map(redact_target)
    }
}

/// Records requested notifications.
#[derive(Debug, Clone)]
pub struct RecordNotification {
    pub targets: TargetPolicy,
    /// Provider calls allowed per notification before it is `dead`.
    pub max_attempts: u32,
}

#[async_trait]
impl TypedHandler<NotificationRequested> for RecordNotification {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: NotificationRequested,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        // A request that can never be sent is refused here, where the bus keeps the reason on
        // the event's outbox row, rather than recorded and left to fail at the provider.
        let channel = event
            .validate(&self.targets)
            .map_err(|e| HandlerError::Permanent(e.0))?;
        let payload = serde_json::to_string(&StoredNotification::from_event(&event))
            .map_err(|e| HandlerError::Permanent(format!("cannot encode the record: {e}")))?;
        let new = NewNotification {
            channel: channel.as_str().to_owned(),
            dedupe_key: event.dedupe_key.clone(),
            payload,
            source_event_id: Some(envelope.event_id.to_string()),
            max_attempts: self.max_attempts,
        };
        match notification::request(txn, &new, now_millis()).await? {
            RequestOutcome::Created(record) => {
                tracing::debug!(record_id = record.id, dedupe_key = %event.dedupe_key, "notification recorded");
            }
            RequestOutcome::Existing { record, retry_now } => {
                tracing::info!(
                    record_id = record.id,
                    dedupe_key = %event.dedupe_key,
                    status = %record.status,
                    retry_now,
                    "a notification with this key exists; the request adds nothing"
                );
            }
        }
        Ok(())
    }
}

/// Every handler of the notification consumer.
pub fn registry(handler: RecordNotification) -> Result<HandlerRegistry, BusError> {
    HandlerRegistry::builder()
        .on::<NotificationRequested, _>(handler)
        .build()
}
