//! The notification service's contracts: the request it accepts, its route, and the checks a
//! request must pass. Other services depend on this crate to ask for a notification: they add
//! [`register`] to their route registry and publish [`NotificationRequested`] in their own
//! transaction, into their own outbox; the route takes it to the notification topic.

use serde::{Deserialize, Serialize};
use smartflow_domain::{
    DomainError, EventContract, RouteRegistry, RouteRegistryBuilder, ServiceRoute,
};

/// The service name under which the notification route is registered.
pub const SERVICE: &str = "notification";
/// The outbox table the migrations create for notification requests.
pub const OUTBOX_TABLE: &str = "notification_outbox";
/// The topic used unless `SMARTFLOW_NOTIFICATION_TOPIC` names another. Publishers and the
/// service must agree on it: the publisher's route decides the topic a row is relayed to.
pub const DEFAULT_TOPIC: &str = "smartflow.notification.events";
/// The consumer group that records and sends notifications.
pub const CONSUMER_GROUP: &str = "smartflow-notification";

/// The longest dedupe key, matching the column that stores it.
pub const MAX_DEDUPE_KEY_CHARS: usize = 255;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_TEXT_CHARS: usize = 16_000;
pub const MAX_NAME_CHARS: usize = 128;
pub const MAX_TARGET_CHARS: usize = 1024;

/// Where a notification goes. An enum so that the handler refuses a channel it has no provider
/// for, with that reason, instead of storing a record nobody can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A Feishu / Lark custom-bot webhook.
    Feishu,
}

impl Channel {
    pub const ALL: [Channel; 1] = [Channel::Feishu];

    /// The one spelling used on the wire, in the database and in the HTTP API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Feishu => "feishu",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A service asks for a notification. Handled by the notification service's consumer, which
/// records it once per `(channel, dedupe_key)` and then sends it. `Debug` hides the target: a
/// webhook URL carries the bot's token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRequested {
    /// `feishu`; anything else ends the event `dead` with the reason.
    pub channel: String,
    /// The webhook URL. Absent or empty: the service's configured default webhook, which keeps
    /// the webhook's token out of other services' events.
    #[serde(default)]
    pub target: Option<String>,
    pub title: String,
    pub text: String,
    /// Requests with the same channel and key make one notification.
    pub dedupe_key: String,
    /// The service that asked, for people reading the records.
    pub requested_by: String,
    #[serde(default)]
    pub user_id: Option<String>,
}

impl std::fmt::Debug for NotificationRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationRequested")
            .field("channel", &self.channel)
            .field("target", &self.target.as_ref().map(|_| "<hidden>"))
            .field("title", &self.title)
            .field("text", &self.text)
            .field("dedupe_key", &self.dedupe_key)
            .field("requested_by", &self.requested_by)
            .field("user_id", &self.user_id)
            .finish()
    }
}

impl EventContract for NotificationRequested {
    const EVENT_TYPE: &'static str = "notification.feishu.requested";
}

/// Why a request cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

impl NotificationRequested {
    /// The Kafka message key: one dedupe key's requests stay in order on one partition. The
    /// dedupe key alone, because it may fill the outbox's 255-character key column by itself.
    pub fn message_key(&self) -> String {
        self.dedupe_key.clone()
    }

    /// The target to use: `None` for the configured default.
    pub fn explicit_target(&self) -> Option<&str> {
        self.target
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// Checks every field but the target (which only the notification service can judge: see
    /// its `TargetPolicy`). Returns the channel.
    pub fn check_fields(&self) -> Result<Channel, InvalidRequest> {
        let invalid = |m: String| Err(InvalidRequest(m));
        let Some(channel) = Channel::parse(&self.channel) else {
            return invalid(format!(
                "unknown notification channel `{}`; known: feishu",
                self.channel
            ));
        };
        check_text("dedupe_key", &self.dedupe_key, MAX_DEDUPE_KEY_CHARS, false)?;
        check_text("requested_by", &self.requested_by, MAX_NAME_CHARS, false)?;
        if let Some(user) = &self.user_id {
            check_text("user_id", user, MAX_NAME_CHARS, false)?;
        }
        check_text("title", &self.title, MAX_TITLE_CHARS, true)?;
        check_text("text", &self.text, MAX_TEXT_CHARS, true)?;
        if self.title.trim().is_empty() && self.text.trim().is_empty() {
            return invalid("title and text must not both be empty".to_owned());
        }
        if let Some(target) = self.explicit_target() {
            if target.chars().count() > MAX_TARGET_CHARS {
                return invalid(format!(
                    "target must be at most {MAX_TARGET_CHARS} characters"
                ));
            }
        }
        Ok(channel)
    }
}

fn check_text(
    field: &str,
    value: &str,
    max_chars: usize,
    multiline: bool,
) -> Result<(), InvalidRequest> {
    let invalid = |m: String| Err(InvalidRequest(m));
    if !multiline && value.trim().is_empty() {
        return invalid(format!("{field} must not be empty"));
    }
    if value.chars().count() > max_chars {
        return invalid(format!("{field} must be at most {max_chars} characters"));
    }
    // PostgreSQL text cannot hold NUL; single-line fields hold no control characters at all.
    let bad = |c: char| c == '\0' || (!multiline && c.is_control());
    if value.chars().any(bad) {
        return invalid(format!("{field} must not contain control characters"));
    }
    Ok(())
}

/// The notification route: its outbox table, `topic` and consumer group.
pub fn route(topic: &str) -> Result<ServiceRoute, DomainError> {
    ServiceRoute::new(SERVICE, OUTBOX_TABLE, topic, CONSUMER_GROUP)
}

/// Adds the notification route and its event types to a publisher's registry: what another
/// service (the agent) calls while building its own routes.
pub fn register(
    builder: RouteRegistryBuilder,
    topic: &str,
) -> Result<RouteRegistryBuilder, DomainError> {
    Ok(builder
        .service(route(topic)?)
        .event(NotificationRequested::EVENT_TYPE, SERVICE))
}

/// The notification service's own registry.
pub fn routes(topic: &str) -> Result<RouteRegistry, DomainError> {
    register(RouteRegistry::builder(), topic)?.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_webhook_token() {
        let mut request = request();
        request.target = Some("https://open.feishu.cn/open-apis/bot/v2/hook/token-s3cret".into());
        let shown = format!("{request:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<hidden>"), "{shown}");
    }

    fn request() -> NotificationRequested {
        NotificationRequested {
            channel: "feishu".into(),
            target: Some("https://open.feishu.cn/open-apis/bot/v2/hook/xyz".into()),
            title: "New conversation".into(),
            text: "line one\nline two".into(),
            dedupe_key: "conversation:c1".into(),
            requested_by: "agent".into(),
            user_id: Some("u1".into()),
        }
    }

    #[test]
    fn the_event_resolves_to_the_notification_route() {
        let registry = routes(DEFAULT_TOPIC).unwrap();
        let route = registry.resolve(NotificationRequested::EVENT_TYPE).unwrap();
        assert_eq!(route.outbox_table, OUTBOX_TABLE);
        assert_eq!(route.consumer_group, CONSUMER_GROUP);
        assert_eq!(route.topic, DEFAULT_TOPIC);
        assert_eq!(
            NotificationRequested::EVENT_TYPE,
            "notification.feishu.requested"
        );
    }

    #[test]
    fn a_valid_request_passes_and_bad_fields_are_named() {
        assert_eq!(request().check_fields(), Ok(Channel::Feishu));
        type Mutation = Box<dyn Fn(&mut NotificationRequested)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("channel", Box::new(|r| r.channel = "sms".into())),
            ("dedupe_key", Box::new(|r| r.dedupe_key = " ".into())),
            (
                "dedupe_key",
                Box::new(|r| r.dedupe_key = "k".repeat(MAX_DEDUPE_KEY_CHARS + 1)),
            ),
            ("dedupe_key", Box::new(|r| r.dedupe_key = "a\nb".into())),
            ("requested_by", Box::new(|r| r.requested_by = String::new())),
            ("text", Box::new(|r| r.text = "nul\0".into())),
            (
                "title and text",
                Box::new(|r| {
                    r.title = String::new();
                    r.text = " ".into();
                }),
            ),
            (
                "target must be at most",
                Box::new(|r| r.target = Some("h".repeat(MAX_TARGET_CHARS + 1))),
            ),
        ];
        for (needle, mutate) in cases {
            let mut bad = request();
            mutate(&mut bad);
            let err = bad.check_fields().unwrap_err().0;
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn an_event_without_optional_fields_decodes() {
        let json = serde_json::json!({
            "channel": "feishu", "title": "t", "text": "x",
            "dedupe_key": "k", "requested_by": "agent"
        });
        let event: NotificationRequested = serde_json::from_value(json).unwrap();
        assert_eq!(event.target, None);
        assert_eq!(event.user_id, None);
        assert_eq!(event.message_key(), "k");
    }
}
