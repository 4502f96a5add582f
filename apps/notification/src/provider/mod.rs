//! Providers deliver a notification to the outside world. The dispatcher sees only the
//! [`NotificationProvider`] trait; [`feishu::FeishuWebhook`] is the real implementation.

pub mod feishu;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Url;
use thiserror::Error;

use smartflow_notification_contracts::Channel;

pub use feishu::{FeishuConfig, FeishuWebhook};

/// One notification as a provider sends it. `Debug` hides the webhook's token.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingNotification {
    /// The webhook URL, or `None` for the provider's configured default.
    pub target: Option<String>,
    pub title: String,
    pub text: String,
}

impl std::fmt::Debug for OutgoingNotification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingNotification")
            .field("target", &ShownTarget(self.target.as_deref()))
            .field("title", &self.title)
            .field("text", &self.text)
            .finish()
    }
}

/// A webhook target in `Debug` output: [`redact_target`]ed, `None` for the default.
pub struct ShownTarget<'a>(pub Option<&'a str>);

impl std::fmt::Debug for ShownTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(target) => write!(f, "Some({:?})", redact_target(target)),
            None => f.write_str("None"),
        }
    }
}

/// What the provider answered when it accepted a notification, kept in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub response: String,
}

/// A failed delivery, and the decision it carries: a retryable error sends the record to
/// `failed` with backoff; a permanent one makes it `dead`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProviderError {
    #[error("{reason}")]
    Retryable {
        reason: String,
        /// The provider's answer, when there was one.
        response: Option<String>,
    },
    #[error("{reason}")]
    Permanent {
        reason: String,
        response: Option<String>,
    },
}

impl ProviderError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        ProviderError::Retryable {
            reason: reason.into(),
            response: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        ProviderError::Permanent {
            reason: reason.into(),
            response: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Retryable { .. })
    }

    pub fn reason(&self) -> &str {
        match self {
            ProviderError::Retryable { reason, .. } | ProviderError::Permanent { reason, .. } => {
                reason
            }
        }
    }

    pub fn response(&self) -> Option<&str> {
        match self {
            ProviderError::Retryable { response, .. }
            | ProviderError::Permanent { response, .. } => response.as_deref(),
        }
    }
}

/// Delivers notifications of one channel.
#[async_trait]
pub trait NotificationProvider: Send + Sync {
    /// Delivers one notification, at most once per call, within the provider's own timeout
    /// (which must stay below the dispatcher's lease). `Ok` means the provider accepted it;
    /// an error says whether a later attempt may succeed.
    async fn send(&self, notification: &OutgoingNotification) -> Result<Receipt, ProviderError>;
}

/// The immutable map `channel -> provider`, built once at start-up.
#[derive(Clone, Default)]
pub struct Providers {
    by_channel: HashMap<Channel, Arc<dyn NotificationProvider>>,
}

impl Providers {
    /// Adds (or replaces) the provider of a channel; used while building, before sharing.
    pub fn with(mut self, channel: Channel, provider: Arc<dyn NotificationProvider>) -> Self {
        self.by_channel.insert(channel, provider);
        self
    }

    /// The provider of a channel; `None` is an error for the caller to record, never a skip.
    pub fn get(&self, channel: Channel) -> Option<&Arc<dyn NotificationProvider>> {
        self.by_channel.get(&channel)
    }
}

/// Which webhook URLs notifications may be sent to, and the default one. Requests name their
/// target, so without this list the service would POST to any address a caller chooses.
/// `Debug` shows the prefixes and hides the default webhook's token.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetPolicy {
    allowed: Vec<Url>,
    default: Option<Url>,
}

impl std::fmt::Debug for TargetPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let allowed: Vec<&str> = self.allowed.iter().map(Url::as_str).collect();
        f.debug_struct("TargetPolicy")
            .field("allowed", &allowed)
            .field(
                "default",
                &ShownTarget(self.default.as_ref().map(Url::as_str)),
            )
            .finish()
    }
}

/// A target or prefix that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct TargetError(pub String);

impl TargetPolicy {
    /// `allowed` are URL prefixes (scheme, host, port and a path prefix), e.g.
    /// `https://open.feishu.cn/open-apis/bot/v2/hook/`. The default, if any, must match one.
    pub fn new(allowed: Vec<String>, default: Option<String>) -> Result<Self, TargetError> {
        let mut parsed = Vec::new();
        for prefix in allowed {
            let prefix = prefix.trim();
            if prefix.is_empty() {
                continue;
            }
            let url = parse_http_url(prefix)
                .map_err(|e| TargetError(format!("allowed target prefix `{prefix}`: {e}")))?;
            parsed.push(url);
        }
        if parsed.is_empty() {
            return Err(TargetError(
                "at least one allowed target prefix is needed".to_owned(),
            ));
        }
        let mut policy = Self {
            allowed: parsed,
            default: None,
        };
        if let Some(default) = default
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty())
        {
            let url = policy
                .check(&default)
                .map_err(|e| TargetError(format!("the default webhook: {e}")))?;
            policy.default = Some(url);
        }
        Ok(policy)
    }

    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The URL of a target if it is allowed.
    pub fn check(&self, target: &str) -> Result<Url, TargetError> {
        let url = parse_http_url(target.trim())?;
        let allowed = self.allowed.iter().any(|prefix| {
            prefix.scheme() == url.scheme()
                && prefix.host_str() == url.host_str()
                && prefix.port_or_known_default() == url.port_or_known_default()
                && url.path().starts_with(prefix.path())
        });
        if !allowed {
            return Err(TargetError(format!(
                "target {} is not an allowed webhook (see SMARTFLOW_FEISHU_ALLOWED_TARGETS)",
                redact_target(target)
            )));
        }
        Ok(url)
    }

    /// The URL to send to: the explicit target if allowed, else the default.
    pub fn resolve(&self, target: Option<&str>) -> Result<Url, TargetError> {
        match target.map(str::trim).filter(|t| !t.is_empty()) {
            Some(target) => self.check(target),
            None => self.default.clone().ok_or_else(|| {
                TargetError("no target given and no default webhook configured".to_owned())
            }),
        }
    }
}

fn parse_http_url(s: &str) -> Result<Url, TargetError> {
    let url = Url::parse(s).map_err(|e| TargetError(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError(
            "only http and https URLs are allowed".to_owned(),
        ));
    }
    if url.host_str().is_none() {
        return Err(TargetError("the URL names no host".to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError("the URL must not carry credentials".to_owned()));
    }
    Ok(url)
}

/// A webhook URL for logs and API answers: the last path segment of a custom-bot webhook is
/// its access token, so it is hidden.
pub fn redact_target(target: &str) -> String {
    match Url::parse(target.trim()) {
        Ok(url) => {
            let path = url.path();
            let shown = match path.rsplit_once('/') {
                Some((head, last)) if !last.is_empty() => format!("{head}/***"),
                _ => path.to_owned(),
            };
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}{shown}",
                url.scheme(),
                url.host_str().unwrap_or("")
            )
        }
        Err(_) => "<not a URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: &str = "https://open.feishu.cn/open-apis/bot/v2/hook/";

    #[test]
    fn no_debug_output_shows_a_webhooks_token() {
        let target = format!("{HOOK}token-s3cret");
        let policy = TargetPolicy::new(vec![HOOK.into()], Some(target.clone())).unwrap();
        let outgoing = OutgoingNotification {
            target: Some(target.clone()),
            title: "t".into(),
            text: "x".into(),
        };
        let event = crate::events::NotificationRequested {
            channel: "feishu".into(),
            target: Some(target.clone()),
            title: "t".into(),
            text: "x".into(),
            dedupe_key: "k".into(),
            requested_by: "agent".into(),
            user_id: None,
        };
        let stored = crate::handler::StoredNotification::from_event(&event);
        let posted: crate::http::PostNotification = serde_json::from_value(serde_json::json!({
            "channel": "feishu", "target": target, "text": "x", "dedupe_key": "k"
        }))
        .unwrap();
        let feishu = FeishuConfig {
            targets: policy.clone(),
            secret: Some("sign-s3cret".into()),
            timeout: std::time::Duration::from_secs(1),
        };
        let recorder = crate::handler::RecordNotification {
            targets: policy.clone(),
            max_attempts: 1,
        };
        for shown in [
            format!("{policy:?}"),
            format!("{outgoing:?}"),
            format!("{event:?}"),
            format!("{stored:?}"),
            format!("{posted:?}"),
            format!("{feishu:?}"),
            format!("{recorder:?}"),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        // What is shown still says where it goes.
        assert!(format!("{outgoing:?}").contains("open.feishu.cn"));
    }

    #[test]
    fn only_targets_under_an_allowed_prefix_pass() {
        let policy = TargetPolicy::new(vec![HOOK.into()], None).unwrap();
        policy.check(&format!("{HOOK}abc-123")).unwrap();
        for bad in [
            "https://open.feishu.cn.evil.example/open-apis/bot/v2/hook/abc",
            "https://open.feishu.cn/open-apis/other/abc",
            "http://open.feishu.cn/open-apis/bot/v2/hook/abc",
            "https://open.feishu.cn:8443/open-apis/bot/v2/hook/abc",
            "https://user:pw@open.feishu.cn/open-apis/bot/v2/hook/abc",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(policy.check(bad).is_err(), "{bad}");
        }
        assert!(policy.resolve(None).is_err());
        // Host spellings and cases an allow-list must not be fooled by; the host is compared
        // as parsed, so only the allowed host itself, in any letter case, passes.
        policy
            .check("https://OPEN.feishu.cn/open-apis/bot/v2/hook/abc")
            .unwrap();
        policy
            .check("https://open.feishu.cn:443/open-apis/bot/v2/hook/abc")
            .unwrap();
        for bad in [
            // userinfo: the allowed host as a user name, the request going to evil.example.
            "https://open.feishu.cn@evil.example/open-apis/bot/v2/hook/abc",
            "https://open.feishu.cn:443@evil.example/open-apis/bot/v2/hook/abc",
            // look-alike hosts.
            "https://open.feishu.cn./open-apis/bot/v2/hook/abc",
            "https://open-feishu.cn/open-apis/bot/v2/hook/abc",
            "https://evil.example/open-apis/bot/v2/hook/?open.feishu.cn",
            "https://open.feishu.cn%2eevil.example/open-apis/bot/v2/hook/abc",
            "https://xn--open-feishu-cn.example/open-apis/bot/v2/hook/abc",
            // loopback, private and IPv6 addresses, however spelled.
            "https://127.0.0.1/open-apis/bot/v2/hook/abc",
            "https://0x7f.1/open-apis/bot/v2/hook/abc",
            "https://2130706433/open-apis/bot/v2/hook/abc",
            "https://[::1]/open-apis/bot/v2/hook/abc",
            "https://[::ffff:127.0.0.1]/open-apis/bot/v2/hook/abc",
            "https://169.254.169.254/open-apis/bot/v2/hook/abc",
            "https://localhost/open-apis/bot/v2/hook/abc",
            // dot segments out of the allowed path, plain and percent-encoded.
            "https://open.feishu.cn/open-apis/bot/v2/hook/../../admin",
            "https://open.feishu.cn/open-apis/bot/v2/hook/%2e%2e/%2E%2E/admin",
        ] {
            assert!(policy.check(bad).is_err(), "{bad}");
        }
        // A loopback webhook allowed by its address is not reached through other spellings.
        let local = TargetPolicy::new(vec!["http://127.0.0.1:8080/hook/".into()], None).unwrap();
        local.check("http://127.0.0.1:8080/hook/x").unwrap();
        for bad in [
            "http://localhost:8080/hook/x",
            "http://[::1]:8080/hook/x",
            "http://127.0.0.2:8080/hook/x",
            "http://0.0.0.0:8080/hook/x",
        ] {
            assert!(local.check(bad).is_err(), "{bad}");
        }
        assert!(TargetPolicy::new(vec![], None).is_err());
        assert!(TargetPolicy::new(vec![HOOK.into()], Some("https://elsewhere/x".into())).is_err());
        let with_default =
            TargetPolicy::new(vec![HOOK.into()], Some(format!("{HOOK}default"))).unwrap();
        assert_eq!(
            with_default.resolve(Some(" ")).unwrap().as_str(),
            format!("{HOOK}default")
        );
    }

    #[test]
    fn tokens_are_hidden_from_shown_targets() {
        assert_eq!(
            redact_target(&format!("{HOOK}s3cret-token")),
            format!("{HOOK}***")
        );
        assert_eq!(
            redact_target("http://127.0.0.1:8080/hook/abc"),
            "http://127.0.0.1:8080/hook/***"
        );
        assert!(!redact_target("garbage s3cret").contains("s3cret"));
    }
}
