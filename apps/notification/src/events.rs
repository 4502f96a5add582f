//! The notification request (the service's contracts crate) and the check only this service
//! can make of it: whether its target is a webhook this service may call.

pub use smartflow_notification_contracts::*;

use crate::provider::TargetPolicy;

/// A request checked against this service's target policy.
pub trait Validate {
    /// Checks a request; the HTTP API answers 400 with the message, the consumer makes the event
    /// `dead` with it. Returns the channel.
    fn validate(&self, targets: &TargetPolicy) -> Result<Channel, InvalidRequest>;
}

impl Validate for NotificationRequested {
    fn validate(&self, targets: &TargetPolicy) -> Result<Channel, InvalidRequest> {
        let channel = self.check_fields()?;
        match self.explicit_target() {
            Some(target) => {
                targets
                    .check(target)
                    .map_err(|e| InvalidRequest(e.to_string()))?;
            }
            None if !targets.has_default() => {
                return Err(InvalidRequest(
                    "target is required: this service has no default webhook configured".to_owned(),
                ));
            }
            None => {}
        }
        Ok(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(default: bool) -> TargetPolicy {
        TargetPolicy::new(
            vec!["https://open.feishu.cn/open-apis/bot/v2/hook/".into()],
            default.then(|| "https://open.feishu.cn/open-apis/bot/v2/hook/abc".into()),
        )
        .unwrap()
    }

    fn request() -> NotificationRequested {
        serde_json::from_value(serde_json::json!({
            "channel": "feishu", "title": "New conversation", "text": "hello",
            "target": "https://open.feishu.cn/open-apis/bot/v2/hook/xyz",
            "dedupe_key": "conversation:c1", "requested_by": "agent",
        }))
        .unwrap()
    }

    #[test]
    fn the_target_must_be_allowed_or_defaulted() {
        assert_eq!(request().validate(&policy(false)), Ok(Channel::Feishu));
        let mut metadata = request();
        metadata.target = Some("http://169.254.169.254/latest".into());
        let err = metadata.validate(&policy(false)).unwrap_err().0;
        assert!(err.contains("not an allowed webhook"), "{err}");
        let mut missing = request();
        missing.target = None;
        let err = missing.validate(&policy(false)).unwrap_err().0;
        assert!(err.contains("target is required"), "{err}");
        let mut defaulted = request();
        defaulted.target = Some("  ".into());
        assert_eq!(defaulted.validate(&policy(true)), Ok(Channel::Feishu));
        let mut bad_field = request();
        bad_field.channel = "sms".into();
        assert!(
            bad_field.validate(&policy(true)).is_err(),
            "fields are checked too"
        );
    }
}
