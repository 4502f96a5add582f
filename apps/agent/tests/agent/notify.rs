//! Agent + notification service + webhook together: the first message of each conversation
//! requests one notification, which is sent once to the webhook.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use smartflow_agent::handlers::first_message_dedupe_key;
use smartflow_agent::AgentConfig;
use smartflow_notification::http::Found;
use smartflow_notification::{Notification, NotificationConfig, RunningNotification};
use smartflow_testkit::{on_every_backend, TestDb};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A Feishu-like webhook that records every body and answers success.
struct Webhook {
    url: String,
    prefix: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: CancellationToken,
}

async fn record(
    State(bodies): State<Arc<Mutex<Vec<Value>>>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    bodies.lock().unwrap().push(body);
    Json(json!({"code": 0, "msg": "success", "data": {}}))
}

impl Webhook {
    async fn start() -> Webhook {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/open-apis/bot/v2/hook/{token}", post(record))
            .with_state(bodies.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await;
        });
        let prefix = format!("http://{addr}/open-apis/bot/v2/hook/");
        Webhook {
            url: format!("{prefix}agent-test"),
            prefix,
            bodies,
            stop,
        }
    }

    fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.to_string())
            .collect()
    }
}

/// The credential the test reads notification records with.
const OPERATOR: &str = "the-notification-operator-credential-0123";

async fn status_of(service: &RunningNotification, key: &str) -> Option<String> {
    let response = client()
        .get(format!("{}/v1/notifications", service.base_url()))
        .header(SERVICE_TOKEN_HEADER, OPERATOR)
        .query(&[("channel", "feishu"), ("dedupe_key", key)])
        .send()
        .await
        .unwrap();
    if !response.status().is_success() {
        return None;
    }
    Some(response.json::<Found>().await.unwrap().notification.status)
}

async fn first_messages_notify_once_per_conversation(t: TestDb) {
    let webhook = Webhook::start().await;
    let topic = t.unique("notifications");
    // One broker for both services: the agent publishes the requests from its own outbox onto
    // the notification topic there.
    let broker = smartflow_kafka::EmbeddedBroker::start(1).unwrap();
    let agent_topic = t.unique("agent");
    broker.create_topic(&agent_topic, 2).unwrap();
    broker.create_topic(&topic, 2).unwrap();
    let mut notification_config = NotificationConfig::embedded(t.config.url.clone());
    notification_config.service.database_schema = t.config.pg_schema.clone();
    notification_config.service.kafka_brokers = Some(broker.bootstrap_servers());
    notification_config.topic = topic.clone();
    notification_config.feishu_allowed_targets = webhook.prefix.clone();
    notification_config.feishu_webhook_url = Some(webhook.url.clone());
    notification_config.scan_interval_ms = 100;
    notification_config.service.service_tokens = Some(Secret::new(format!("operator={OPERATOR}")));
    let notifications = Notification::start(notification_config)
        .await
        .unwrap_or_else(|e| panic!("notification service: {e:#}"));
    let mut agent_config = AgentConfig::embedded(t.config.url.clone());
    agent_config.service.database_schema = t.config.pg_schema.clone();
    agent_config.service.kafka_brokers = Some(broker.bootstrap_servers());
    agent_config.topic = agent_topic;
    agent_config.notification_topic = topic;
    let agent = start(agent_config).await;

    let a = t.unique("conv-a");
    let b = t.unique("conv-b");
    post_message(&agent, &a, "alice", "user", "hello").await;
    wait_for_messages(&agent, &a, "alice", 1).await;
    post_message(&agent, &a, "alice", "user", "again").await;
    post_message(&agent, &b, "bob", "user", "hi").await;
    wait_for_messages(&agent, &a, "alice", 2).await;
    wait_for_messages(&agent, &b, "bob", 1).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    for conversation in [&a, &b] {
        let key = first_message_dedupe_key(conversation);
        loop {
            if status_of(&notifications, &key).await.as_deref() == Some("sent") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no notification sent for {conversation}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Give a wrongly repeated send time to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts = webhook.texts();
    assert_eq!(
        texts.len(),
        2,
        "one webhook call per conversation: {texts:?}"
    );
    for conversation in [&a, &b] {
        assert_eq!(
            texts
                .iter()
                .filter(|t| t.contains(conversation.as_str()))
                .count(),
            1,
            "{conversation}: {texts:?}"
        );
    }
    let theirs = smartflow_storage::outbox::OutboxTable::new("notification_outbox")
        .unwrap()
        .stats(agent.db())
        .await
        .unwrap();
    assert_eq!(
        theirs.pending + theirs.published + theirs.consumed + theirs.dead,
        0,
        "the agent never writes into the notification service's outbox"
    );

    stop(agent).await;
    notifications.shutdown().await;
    webhook.stop.cancel();
    drop(broker);
    t.cleanup().await;
}

on_every_backend!(first_messages_notify_once_per_conversation);
