use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use smartflow_agent::http::{Accepted, MessageList, MessageView};
use smartflow_agent::{Agent, AgentConfig, RunningAgent};
use tokio::time::Instant;

/// Bound on waiting for something the agent does in the background (the embedded broker's group
/// join alone takes about 3 s); reached only when a test fails, so it is generous for a loaded
/// machine. No test asserts how long anything took.
pub const PATIENCE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

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

/// An agent on a SQLite file of its own, with an embedded broker and a free port.
pub fn sqlite_config(dir: &TempDir) -> AgentConfig {
    smartflow_testkit::init_tracing();
    AgentConfig::embedded(dir.sqlite_url())
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

/// Posts a message and returns its event id, failing the test unless it was accepted.
pub async fn post_message(
    agent: &RunningAgent,
    conversation: &str,
    user_id: &str,
    role: &str,
    content: &str,
) -> String {
    let response = client()
        .post(messages_url(agent, conversation))
        .json(&serde_json::json!({"user_id": user_id, "role": role, "content": content}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let accepted: Accepted = serde_json::from_str(&text).unwrap();
    uuid::Uuid::parse_str(&accepted.event_id).expect("the event id is a UUID");
    accepted.event_id
}

pub async fn list_messages(agent: &RunningAgent, conversation: &str) -> Vec<MessageView> {
    let response = client()
        .get(messages_url(agent, conversation))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<MessageList>().await.unwrap().messages
}

/// Polls the history until it holds at least `count` messages.
pub async fn wait_for_messages(
    agent: &RunningAgent,
    conversation: &str,
    count: usize,
) -> Vec<MessageView> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let messages = list_messages(agent, conversation).await;
        if messages.len() >= count {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "conversation {conversation} still has {} of {count} messages: {messages:?}",
            messages.len()
        );
        tokio::time::sleep(POLL).await;
    }
}

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
