//! The three services as an HTTP client sees them: only their public APIs.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

/// The base URLs of the services and one client for all of them.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub userauth: String,
    pub agent: String,
    pub notification: String,
}

impl Api {
    pub fn new(userauth: String, agent: String, notification: String) -> Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            userauth,
            agent,
            notification,
        })
    }

    /// Registers `email` and logs in; returns the user id and an access token.
    pub async fn register_and_login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<(String, String)> {
        let credentials = json!({"email": email, "password": password});
        let register = format!("{}/v1/auth/register", self.userauth);
        let registered = self
            .post(
                &register,
                None,
                &credentials,
                StatusCode::CREATED,
                "registering",
            )
            .await?;
        let login = format!("{}/v1/auth/login", self.userauth);
        let logged_in = self
            .post(&login, None, &credentials, StatusCode::OK, "logging in")
            .await?;
        Ok((
            field(&registered, "user_id")?,
            field(&logged_in, "access_token")?,
        ))
    }

    /// Posts one user message to `conversation`; the agent must accept it (202).
    pub async fn post_message(&self, token: &str, conversation: &str, content: &str) -> Result<()> {
        let message = json!({"role": "user", "content": content});
        let url = self.messages_url(conversation);
        self.post(
            &url,
            Some(token),
            &message,
            StatusCode::ACCEPTED,
            "posting a message",
        )
        .await?;
        Ok(())
    }

    /// The contents of `conversation`'s history, oldest first.
    pub async fn history(&self, token: &str, conversation: &str) -> Result<Vec<String>> {
        let body = self
            .get(
                &self.messages_url(conversation),
                token,
                "reading the history",
            )
            .await?;
        body["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .with_context(|| format!("no `messages` in the history: {body}"))
    }

    /// The user's token usage as userauth counts it (`GET /v1/auth/me`).
    pub async fn token_usage(&self, token: &str) -> Result<i64> {
        let url = format!("{}/v1/auth/me", self.userauth);
        let body = self.get(&url, token, "reading the account").await?;
        body["token_usage"]
            .as_i64()
            .with_context(|| format!("no `token_usage` in {body}"))
    }

    /// A bus counter of the notification process (`smartflow_bus_NAME_total` on `/metrics`),
    /// counted since that process started.
    pub async fn notification_counter(&self, name: &str) -> Result<u64> {
        let response = self
            .http
            .get(format!("{}/metrics", self.notification))
            .header(
                "x-smartflow-service-token",
                super::scenario::OPERATOR_CREDENTIAL,
            )
            .send()
            .await
            .context("GET /metrics of notification")?;
        let text = response.error_for_status()?.text().await?;
        // `smartflow_bus_NAME_total{service="notification"} 3` (or with no labels).
        let metric = format!("smartflow_bus_{name}_total");
        text.lines()
            .filter_map(|line| line.strip_prefix(&metric))
            .find(|rest| rest.starts_with(['{', ' ']))
            .and_then(|rest| rest.rsplit(' ').next())
            .and_then(|value| value.trim().parse().ok())
            .with_context(|| format!("no `{metric}` sample on notification's /metrics"))
    }

    /// `POST url` with a JSON body (and the access token, if any); the JSON answer, which must
    /// come with `status`.
    async fn post(
        &self,
        url: &str,
        token: Option<&str>,
        body: &Value,
        status: StatusCode,
        what: &str,
    ) -> Result<Value> {
        let mut request = self.http.post(url).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{what}: POST {url}"))?;
        body_if(response, status, what).await
    }

    /// `GET url` with the access token; the JSON body of a 200.
    async fn get(&self, url: &str, token: &str, what: &str) -> Result<Value> {
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("{what}: GET {url}"))?;
        body_if(response, StatusCode::OK, what).await
    }

    fn messages_url(&self, conversation: &str) -> String {
        format!("{}/v1/conversations/{conversation}/messages", self.agent)
    }
}

/// The JSON body of `response` if it has `status`; else an error with what came instead.
async fn body_if(response: Response, status: StatusCode, what: &str) -> Result<Value> {
    let got = response.status();
    let text = response.text().await.unwrap_or_default();
    if got != status {
        bail!("{what}: expected HTTP {status}, got {got}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON: {text}"))
}

fn field(body: &Value, name: &str) -> Result<String> {
    body[name]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no `{name}` in {body}"))
}
