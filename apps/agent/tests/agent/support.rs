use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;
pub use smartflow_agent::http::SERVICE_TOKEN_HEADER;
use smartflow_agent::http::{Accepted, MessageList, MessageView};
use smartflow_agent::{Agent, AgentConfig, RunningAgent};
pub use smartflow_service::Secret;
use smartflow_testkit::TestDb;

/// Bound on waiting for something the agent does in the background (the embedded broker's group
/// join alone takes about 3 s); reached only when a test fails, so it is generous for a loaded
/// machine. No test asserts how long anything took.
pub use smartflow_testkit::PATIENCE;

/// A directory of this test's own, removed when the test ends.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("smartflow-agent-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A SQLite URL for a file in this directory.
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.0.join("agent.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The service credential the tests' agents accept (`SMARTFLOW_SERVICE_TOKENS`, as
/// `assistant`).
pub const SERVICE_TOKEN: &str = "the-agent-tests-service-credential-0123";

/// Configures [`SERVICE_TOKEN`] as the credential of the `assistant` service.
pub fn with_service_token(config: &mut AgentConfig) {
    config.service.service_tokens = Some(Secret::new(format!("assistant={SERVICE_TOKEN}")));
}

/// An agent on a SQLite file of its own, with an embedded broker, a free port and the tests'
/// service credential.
pub fn sqlite_config(dir: &TempDir) -> AgentConfig {
    smartflow_testkit::init_tracing();
    let mut config = AgentConfig::embedded(dir.sqlite_url());
    with_service_token(&mut config);
    config
}

/// The same for a test database: the URL, plus the schema on PostgreSQL.
pub fn config_for(test_db: &TestDb) -> AgentConfig {
    let mut config = AgentConfig::embedded(test_db.config.url.clone());
    config.service.database_schema = test_db.config.pg_schema.clone();
    with_service_token(&mut config);
    config
}

pub async fn start(config: AgentConfig) -> RunningAgent {
    match Agent::start(config).await {
        Ok(agent) => agent,
        Err(e) => panic!("the agent did not start: {e:#}"),
    }
}

/// Stops the agent; a hang fails the test instead of stalling the run.
pub async fn stop(agent: RunningAgent) {
    tokio::time::timeout(PATIENCE, agent.shutdown())
        .await
        .expect("shutdown returns");
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub fn messages_url(agent: &RunningAgent, conversation: &str) -> String {
    format!(
        "{}/v1/conversations/{conversation}/messages",
        agent.base_url()
    )
}

/// Posts a message as `user_id` (the agent runs without authentication) and returns its event
/// id, failing the test unless it was accepted. Roles other than `user` carry the service
/// credential.
pub async fn post_message(
    agent: &RunningAgent,
    conversation: &str,
    user_id: &str,
    role: &str,
    content: &str,
) -> String {
    let mut request = client()
        .post(messages_url(agent, conversation))
        .json(&serde_json::json!({"user_id": user_id, "role": role, "content": content}));
    if role != "user" {
        request = request.header(SERVICE_TOKEN_HEADER, SERVICE_TOKEN);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let accepted: Accepted = serde_json::from_str(&text).unwrap();
    uuid::Uuid::parse_str(&accepted.event_id).expect("the event id is a UUID");
    accepted.event_id
}

/// A page of `user_id`'s conversation (the agent runs without authentication): the newest one,
/// or the one before `before`.
pub async fn history_page(
    agent: &RunningAgent,
    conversation: &str,
    user_id: &str,
    query: &[(&str, &str)],
) -> MessageList {
    let response = client()
        .get(messages_url(agent, conversation))
        .query(&[("user_id", user_id)])
        .query(query)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The newest page of `user_id`'s conversation.
pub async fn list_messages(
    agent: &RunningAgent,
    conversation: &str,
    user_id: &str,
) -> Vec<MessageView> {
    history_page(agent, conversation, user_id, &[])
        .await
        .messages
}

/// Polls `user_id`'s conversation until its newest page holds at least `count` messages.
pub async fn wait_for_messages(
    agent: &RunningAgent,
    conversation: &str,
    user_id: &str,
    count: usize,
) -> Vec<MessageView> {
    eventually(&format!("{count} messages in {conversation}"), || async {
        let messages = list_messages(agent, conversation, user_id).await;
        (messages.len() >= count).then_some(messages)
    })
    .await
}

pub use smartflow_testkit::eventually;

/// The status and the `error.code` of an error response.
pub async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("error bodies are JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
        .to_owned();
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, code)
}
