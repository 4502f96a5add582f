//! An agent behind an in-process userauth, on one test database and one embedded broker: what
//! the tests of authenticated requests share.

use reqwest::StatusCode;
use serde_json::{json, Value};
use smartflow_agent::{AgentConfig, RunningAgent};
use smartflow_kafka::EmbeddedBroker;
use smartflow_testkit::TestDb;
use smartflow_userauth::jwt::SigningKey;
use smartflow_userauth::{RunningUserauth, Userauth, UserauthConfig};

use crate::support::*;

/// Userauth and an agent that checks tokens with it.
/// The credential the agent checks tokens at userauth with.
pub const AGENT_AT_USERAUTH: &str = "the-agents-credential-at-userauth-0123456";

pub struct Stack {
    pub broker: EmbeddedBroker,
    pub userauth: RunningUserauth,
    pub agent: RunningAgent,
}

impl Stack {
    /// Starts userauth and an agent pointed at it on `t`; `configure` adjusts the agent's
    /// configuration before it starts.
    pub async fn start(t: &TestDb, configure: impl FnOnce(&mut AgentConfig)) -> Stack {
        let broker = EmbeddedBroker::start(1).unwrap();
        let topic = t.unique("agent-events");
        broker.create_topic(&topic, 3).unwrap();

        let mut userauth_config = UserauthConfig::embedded(t.config.url.clone());
        userauth_config.service.database_schema = t.config.pg_schema.clone();
        userauth_config.service.kafka_brokers = Some(broker.bootstrap_servers());
        userauth_config.agent_topic = topic.clone();
        let key = SigningKey::generate();
        userauth_config.signing.signing_key = Some(Secret::new(key.to_pem()));
        userauth_config.service.service_tokens =
            Some(Secret::new(format!("agent={AGENT_AT_USERAUTH}")));
        // These tests log in many users from one address; the limits have tests of their own.
        userauth_config.auth_address_attempts_per_minute = 0;
        userauth_config.auth_account_attempts_per_minute = 0;
        let userauth = Userauth::start(userauth_config)
            .await
            .unwrap_or_else(|e| panic!("userauth: {e:#}"));

        let mut agent_config = AgentConfig::embedded(t.config.url.clone());
        agent_config.service.database_schema = t.config.pg_schema.clone();
        agent_config.service.kafka_brokers = Some(broker.bootstrap_servers());
        agent_config.topic = topic;
        agent_config.userauth_url = Some(userauth.base_url());
        agent_config.userauth_token = Some(Secret::new(AGENT_AT_USERAUTH));
        agent_config.userauth_public_key = Some(key.public_key().to_pem());
        configure(&mut agent_config);
        let agent = start(agent_config).await;
        Stack {
            broker,
            userauth,
            agent,
        }
    }

    /// Registers `email`, logs in and returns the access token and the user's id.
    pub async fn login(&self, email: &str) -> (String, String) {
        let credentials = json!({"email": email, "password": "correct horse 9"});
        let (status, body) = call(
            reqwest::Method::POST,
            format!("{}/v1/auth/register", self.userauth.base_url()),
            None,
            Some(credentials.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let user_id = body["user_id"].as_str().unwrap().to_owned();
        let (status, body) = call(
            reqwest::Method::POST,
            format!("{}/v1/auth/login", self.userauth.base_url()),
            None,
            Some(credentials),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (body["access_token"].as_str().unwrap().to_owned(), user_id)
    }

    /// Posts `body` into `conversation` with `token`: the status and the JSON body.
    pub async fn post(&self, conversation: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let url = messages_url(&self.agent, conversation);
        send(client().post(url).bearer_auth(token).json(&body)).await
    }

    /// Reads `conversation`'s newest page with `token`: the status and the JSON body.
    pub async fn read(&self, conversation: &str, token: &str) -> (StatusCode, Value) {
        let url = messages_url(&self.agent, conversation);
        send(client().get(url).bearer_auth(token)).await
    }

    /// `token`'s view of `conversation`'s newest page, once it holds `count` messages.
    pub async fn wait_for_history(
        &self,
        conversation: &str,
        token: &str,
        count: usize,
    ) -> Vec<Value> {
        eventually(&format!("{count} messages in {conversation}"), || async {
            let (status, body) = self.read(conversation, token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let messages = body["messages"].as_array().unwrap().clone();
            (messages.len() >= count).then_some(messages)
        })
        .await
    }

    pub async fn stop(self) {
        stop(self.agent).await;
        self.userauth.shutdown().await;
        drop(self.broker);
    }
}

/// Sends a request with an optional bearer token and JSON body; the status and the JSON body
/// (`null` if there is none).
pub async fn call(
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

/// Sends `request`; the status and the JSON body (`null` if there is none).
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
