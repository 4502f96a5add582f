//! The Feishu / Lark custom-bot webhook.
//!
//! The bot takes `POST <webhook>` with a JSON message: `msg_type: "text"` for a plain text, or
//! `msg_type: "post"` (rich text) when there is a title. A bot with signature verification also
//! wants `timestamp` (Unix seconds, as a string) and `sign`: the Base64 of an HMAC-SHA256 whose
//! key is `"{timestamp}\n{secret}"` and whose message is empty. It answers
//! `{"code": 0, "msg": "success"}` (older deployments: `StatusCode`/`StatusMessage`); a non-zero
//! code is a failure even under HTTP 200.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use super::{
    redact_target, NotificationProvider, OutgoingNotification, ProviderError, Receipt, TargetPolicy,
};

/// Rate limits: the tenant-wide message limit and the per-chat one. Worth another try later.
const RATE_LIMIT_CODES: [i64; 2] = [11232, 230020];
/// The request is wrong and will stay wrong: bad request, invalid token, empty message, bad
/// signature or stale timestamp, IP not allowed, keyword missing.
const PERMANENT_CODES: [i64; 6] = [9499, 19001, 19002, 19021, 19022, 19024];

/// How the webhook provider is set up.
#[derive(Clone)]
pub struct FeishuConfig {
    pub targets: TargetPolicy,
    /// The bot's signing secret; `None` sends unsigned requests.
    pub secret: Option<String>,
    /// The whole request, connect to last byte of the answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for FeishuConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuConfig")
            .field("targets", &self.targets)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends notifications to Feishu custom-bot webhooks.
#[derive(Clone)]
pub struct FeishuWebhook {
    client: reqwest::Client,
    config: FeishuConfig,
}

impl FeishuWebhook {
    pub fn new(config: FeishuConfig) -> Result<Self, ProviderError> {
        if config.timeout.is_zero() {
            return Err(ProviderError::permanent(
                "the Feishu request timeout must be above zero",
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect could lead the request away from the allowed targets.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "smartflow-notification/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| ProviderError::permanent(format!("building the HTTP client: {e}")))?;
        Ok(Self { client, config })
    }

    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }
}

/// The `sign` field for a timestamp in Unix seconds.
pub fn sign(secret: &str, timestamp_secs: i64) -> String {
    let key = format!("{timestamp_secs}\n{secret}");
    // HMAC accepts keys of any length, so this cannot fail.
    let mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The message body: plain text without a title, rich text (one paragraph per line) with one,
/// plus `timestamp` and `sign` when `signature` is given as `(timestamp_secs, sign)`.
pub fn body(title: &str, text: &str, signature: Option<(i64, String)>) -> Value {
    let mut body = if title.trim().is_empty() {
        json!({"msg_type": "text", "content": {"text": text}})
    } else {
        let paragraphs: Vec<Value> = text
            .lines()
            .map(|line| json!([{"tag": "text", "text": line}]))
            .collect();
        json!({
            "msg_type": "post",
            "content": {"post": {"zh_cn": {"title": title, "content": paragraphs}}}
        })
    };
    if let Some((timestamp, sign)) = signature {
        body["timestamp"] = json!(timestamp.to_string());
        body["sign"] = json!(sign);
    }
    body
}

/// Reads the webhook's answer: HTTP status first (5xx and 429 retryable, other non-2xx
/// permanent unless the body names a rate limit), then the body's `code`.
pub fn classify(status: StatusCode, text: &str) -> Result<Receipt, ProviderError> {
    let response = Some(text.to_owned());
    let parsed: Option<(i64, String)> = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        let code = v.get("code").or_else(|| v.get("StatusCode"))?.as_i64()?;
        let msg = v
            .get("msg")
            .or_else(|| v.get("StatusMessage"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Some((code, msg))
    });
    let retryable = |reason: String| ProviderError::Retryable {
        reason,
        response: response.clone(),
    };
    let permanent = |reason: String| ProviderError::Permanent {
        reason,
        response: response.clone(),
    };
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(retryable(format!("the webhook answered HTTP {status}")));
    }
    match parsed {
        Some((0, _)) if status.is_success() => Ok(Receipt {
            response: text.to_owned(),
        }),
        Some((code, msg)) => {
            let rate_limited = RATE_LIMIT_CODES.contains(&code)
                || msg.to_ascii_lowercase().contains("too many request");
            let reason = format!("the webhook answered code {code}: {msg} (HTTP {status})");
            if rate_limited {
                Err(retryable(reason))
            } else if PERMANENT_CODES.contains(&code) || !status.is_success() {
                Err(permanent(reason))
            } else {
                // An undocumented code under HTTP 200 may be passing; attempts are bounded.
                Err(retryable(reason))
            }
        }
        None if status.is_success() => Err(retryable(format!(
            "the webhook answered HTTP {status} without a result code"
        ))),
        None => Err(permanent(format!("the webhook answered HTTP {status}"))),
    }
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[async_trait]
impl NotificationProvider for FeishuWebhook {
    async fn send(&self, notification: &OutgoingNotification) -> Result<Receipt, ProviderError> {
        let url = self
            .config
            .targets
            .resolve(notification.target.as_deref())
            .map_err(|e| ProviderError::permanent(e.to_string()))?;
        let signature = self.config.secret.as_deref().map(|secret| {
            let timestamp = unix_secs();
            (timestamp, sign(secret, timestamp))
        });
        let body = body(&notification.title, &notification.text, signature);
        let shown = redact_target(url.as_str());
        let answer = self.client.post(url).json(&body).send().await;
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                // The token is in the URL; reqwest's message would show it.
                let e = e.without_url();
                let reason = if e.is_timeout() {
                    format!(
                        "the webhook {shown} did not answer within {} ms",
                        self.config.timeout.as_millis()
                    )
                } else if e.is_connect() {
                    format!("cannot connect to the webhook {shown}: {e}")
                } else {
                    format!("calling the webhook {shown} failed: {e}")
                };
                return Err(ProviderError::retryable(reason));
            }
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => {
                let e = e.without_url();
                let reason = if e.is_timeout() {
                    format!(
                        "the webhook {shown} did not finish its answer within {} ms",
                        self.config.timeout.as_millis()
                    )
                } else {
                    format!("reading the answer of the webhook {shown} failed: {e}")
                };
                return Err(ProviderError::retryable(reason));
            }
        };
        classify(status, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_documented_algorithm() {
        // Computed independently: base64(hmac_sha256(key = "1599360473\nsecret", msg = "")).
        assert_eq!(
            sign("secret", 1_599_360_473),
            "q4jswNiMy51J5JuQV566yJat0/lQ/c+22kINzUgKsGU="
        );
        assert_eq!(
            sign("SEC-test", 1_700_000_000),
            "wVkXGs7tnGGdFP0ROb5TA58qvnldaoxe43r/OZmowJ8="
        );
    }

    #[test]
    fn bodies_are_text_without_a_title_and_rich_text_with_one() {
        assert_eq!(
            body("", "hello", None),
            json!({"msg_type": "text", "content": {"text": "hello"}})
        );
        let post = body("Title", "a\nb", Some((1_599_360_473, "s".into())));
        assert_eq!(post["msg_type"], "post");
        assert_eq!(post["content"]["post"]["zh_cn"]["title"], "Title");
        assert_eq!(
            post["content"]["post"]["zh_cn"]["content"],
            json!([[{"tag": "text", "text": "a"}], [{"tag": "text", "text": "b"}]])
        );
        assert_eq!(post["timestamp"], "1599360473");
        assert_eq!(post["sign"], "s");
    }

    #[test]
    fn answers_are_classified() {
        let ok = |s: u16, body: &str| classify(StatusCode::from_u16(s).unwrap(), body);
        assert!(ok(200, r#"{"code":0,"msg":"success","data":{}}"#).is_ok());
        assert!(ok(200, r#"{"StatusCode":0,"StatusMessage":"success"}"#).is_ok());
        for (status, body) in [
            (500, "oops"),
            (503, r#"{"code":0}"#),
            (429, ""),
            (200, r#"{"code":11232,"msg":"frequency limited"}"#),
            (400, r#"{"code":9499,"msg":"too many request"}"#),
            (200, r#"{"code":777,"msg":"something new"}"#),
            (200, "<html>proxy</html>"),
        ] {
            let err = ok(status, body).unwrap_err();
            assert!(err.is_retryable(), "{status} {body}: {err}");
            assert_eq!(err.response(), Some(body));
        }
        for (status, body) in [
            (200, r#"{"code":19021,"msg":"sign match fail"}"#),
            (400, r#"{"code":9499,"msg":"Bad Request"}"#),
            (200, r#"{"code":19024,"msg":"Key Words Not Found"}"#),
            (400, r#"{"code":777,"msg":"x"}"#),
            (404, "not found"),
            (302, ""),
        ] {
            let err = ok(status, body).unwrap_err();
            assert!(!err.is_retryable(), "{status} {body}: {err}");
        }
        let err = ok(200, r#"{"code":19021,"msg":"sign match fail"}"#).unwrap_err();
        assert!(err.reason().contains("19021"), "{err}");
    }
}
