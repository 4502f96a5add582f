//! What the scenarios share: a local stand-in for a Feishu custom-bot webhook, and a world of
//! one test database, a bus that writes notification requests into its outbox, and consumers
//! and dispatchers on it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use smartflow_bus::{
    ConsumerConfig, ConsumerRunner, DatabaseConnection, EventBus, Metrics, PublishConfig,
};
use smartflow_domain::{
    IncomingMessage, RetryPolicy, ServiceRoute, EVENT_ID_HEADER, EVENT_TYPE_HEADER,
};
use smartflow_notification::events::{self, NotificationRequested};
use smartflow_notification::handler::{self, RecordNotification};
use smartflow_notification::provider::{FeishuConfig, FeishuWebhook, Providers, TargetPolicy};
use smartflow_notification::{Channel, DispatchConfig, Dispatcher};
use smartflow_storage::notification::{self, NotificationRecord};
use smartflow_storage::outbox::OutboxTable;
use smartflow_testkit::TestDb;
use tokio_util::sync::CancellationToken;

/// Bound on waiting for background work; reached only when a test fails. No test asserts how
/// long anything took.
pub use smartflow_testkit::PATIENCE;

/// How the fake webhook answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// HTTP 200, `code: 0`.
    Success,
    /// This HTTP status with a plain-text body.
    Status(u16),
    /// HTTP 200 (or the given status) with a non-zero Feishu `code`.
    Code(u16, i64, &'static str),
    /// Waits this long, then succeeds: the caller has given up by then.
    Hang(Duration),
}

struct FakeState {
    script: Mutex<VecDeque<Answer>>,
    otherwise: Mutex<Answer>,
    requests: Mutex<Vec<Value>>,
    secret: Option<String>,
}

/// A local HTTP server answering like a Feishu custom bot, recording every request it gets
/// (before answering, so a request the caller timed out on is counted too).
pub struct FakeFeishu {
    addr: SocketAddr,
    state: Arc<FakeState>,
    stop: CancellationToken,
}

impl FakeFeishu {
    pub async fn start(secret: Option<&str>) -> FakeFeishu {
        let state = Arc::new(FakeState {
            script: Mutex::new(VecDeque::new()),
            otherwise: Mutex::new(Answer::Success),
            requests: Mutex::new(Vec::new()),
            secret: secret.map(str::to_owned),
        });
        let app = Router::new()
            .route("/open-apis/bot/v2/hook/{token}", post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await;
        });
        FakeFeishu { addr, state, stop }
    }

    /// The allowed-target prefix covering this server's webhooks.
    pub fn prefix(&self) -> String {
        format!("http://{}/open-apis/bot/v2/hook/", self.addr)
    }

    /// A webhook URL on this server.
    pub fn url(&self) -> String {
        format!("{}test-token", self.prefix())
    }

    /// The next requests get these answers, in order; after them, [`answer_otherwise`].
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    pub fn answer_otherwise(&self, answer: Answer) {
        *self.state.otherwise.lock().unwrap() = answer;
    }

    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The message text of every request received, in arrival order.
    pub fn texts(&self) -> Vec<String> {
        self.requests().iter().map(message_text).collect()
    }

    /// How many requests carried `text`.
    pub fn count(&self, text: &str) -> usize {
        self.texts().iter().filter(|t| t.as_str() == text).count()
    }
}

impl Drop for FakeFeishu {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The text of a Feishu message body: `content.text`, or the rich-text paragraphs joined by
/// newlines.
pub fn message_text(body: &Value) -> String {
    if let Some(text) = body["content"]["text"].as_str() {
        return text.to_owned();
    }
    body["content"]["post"]["zh_cn"]["content"]
        .as_array()
        .map(|paragraphs| {
            paragraphs
                .iter()
                .map(|p| p[0]["text"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

async fn hook(State(state): State<Arc<FakeState>>, Json(body): Json<Value>) -> Response {
    state.requests.lock().unwrap().push(body.clone());
    if let Some(secret) = &state.secret {
        // Checked the way the real bot does: the signature of the request's own timestamp.
        let timestamp = body["timestamp"].as_str().unwrap_or("");
        let mut mac =
            Hmac::<Sha256>::new_from_slice(format!("{timestamp}\n{secret}").as_bytes()).unwrap();
        mac.update(b"");
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        if body["sign"].as_str() != Some(expected.as_str()) {
            return Json(json!({"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"})).into_response();
        }
    }
    let answer = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(*state.otherwise.lock().unwrap());
    match answer {
        Answer::Success => Json(json!({"code": 0, "msg": "success", "data": {}})).into_response(),
        Answer::Status(status) => (
            StatusCode::from_u16(status).unwrap(),
            format!("fake answers {status}"),
        )
            .into_response(),
        Answer::Code(status, code, msg) => (
            StatusCode::from_u16(status).unwrap(),
            Json(json!({"code": code, "msg": msg, "data": {}})),
        )
            .into_response(),
        Answer::Hang(wait) => {
            tokio::time::sleep(wait).await;
            Json(json!({"code": 0, "msg": "success", "data": {}})).into_response()
        }
    }
}

/// Backoff short enough for tests to see retries come due.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        max_retry: 3,
    }
}

pub fn fast_dispatch() -> DispatchConfig {
    DispatchConfig {
        lease: Duration::from_secs(10),
        retry: fast_retry(),
        scan_interval: Duration::from_millis(50),
        pending_grace: Duration::ZERO,
        ..DispatchConfig::default()
    }
}

/// One test's world: its database, a fake webhook, and a bus writing notification requests.
pub struct World {
    pub t: TestDb,
    pub fake: FakeFeishu,
    pub route: ServiceRoute,
    pub bus: EventBus,
    pub max_attempts: u32,
}

impl World {
    pub async fn new(t: TestDb) -> World {
        let fake = FakeFeishu::start(None).await;
        let topic = t.unique("notifications");
        let route = events::route(&topic).unwrap();
        let bus = EventBus::new(
            events::SERVICE,
            events::routes(&topic).unwrap(),
            PublishConfig::default(),
        )
        .unwrap();
        World {
            t,
            fake,
            route,
            bus,
            max_attempts: 3,
        }
    }

    pub fn targets(&self) -> TargetPolicy {
        TargetPolicy::new(vec![self.fake.prefix()], Some(self.fake.url())).unwrap()
    }

    pub fn providers(&self, timeout: Duration) -> Providers {
        let feishu = FeishuWebhook::new(FeishuConfig {
            targets: self.targets(),
            secret: None,
            timeout,
        })
        .unwrap();
        Providers::default().with(Channel::Feishu, Arc::new(feishu))
    }

    pub fn dispatcher_on(&self, db: DatabaseConnection, config: DispatchConfig) -> Dispatcher {
        Dispatcher::new(db, self.providers(Duration::from_secs(5)), config).unwrap()
    }

    pub fn dispatcher(&self) -> Dispatcher {
        self.dispatcher_on(self.t.db.clone(), fast_dispatch())
    }

    /// The notification consumer, driven by hand through `process_batch`.
    pub fn runner_on(&self, db: DatabaseConnection) -> ConsumerRunner {
        let handlers = handler::registry(RecordNotification {
            targets: self.targets(),
            max_attempts: self.max_attempts,
        })
        .unwrap();
        ConsumerRunner::for_route(
            db,
            &self.route,
            handlers,
            Arc::new(smartflow_testkit::Unplugged),
            ConsumerConfig {
                retry: fast_retry(),
                ..ConsumerConfig::default()
            },
            Arc::new(Metrics::default()),
        )
        .unwrap()
    }

    pub fn runner(&self) -> ConsumerRunner {
        self.runner_on(self.t.db.clone())
    }

    pub fn outbox(&self) -> OutboxTable {
        OutboxTable::new(events::OUTBOX_TABLE).unwrap()
    }

    /// Publishes a request and commits it; returns the event id.
    pub async fn publish(&self, event: &NotificationRequested) -> String {
        let txn = self.bus.begin(&self.t.db).await.unwrap();
        let id = self
            .bus
            .publish(&txn, &event.message_key(), event)
            .await
            .unwrap();
        self.bus.commit(txn).await.unwrap();
        id.to_string()
    }

    /// Publishes a request for `key` whose message is `text`; returns the event id.
    pub async fn request(&self, key: &str, text: &str) -> String {
        self.publish(&request(key, text)).await
    }

    /// The published rows of these events, as the consumer would receive them from Kafka.
    pub async fn as_delivered(&self, event_ids: &[String]) -> Vec<IncomingMessage> {
        let mut batch = Vec::new();
        for (offset, id) in event_ids.iter().enumerate() {
            let row = self.outbox().find(&self.t.db, id).await.unwrap().unwrap();
            batch.push(IncomingMessage {
                topic: self.route.topic.clone(),
                partition: 0,
                offset: offset as i64,
                key: Some(row.message_key.into_bytes()),
                payload: Some(row.payload.into_bytes()),
                headers: vec![
                    (EVENT_ID_HEADER.to_owned(), id.clone().into_bytes()),
                    (EVENT_TYPE_HEADER.to_owned(), row.event_type.into_bytes()),
                ],
            });
        }
        batch
    }

    /// Publishes requests and has the consumer handle them in one batch.
    pub async fn request_and_handle(&self, requests: &[(&str, &str)]) -> Vec<String> {
        let mut ids = Vec::new();
        for (key, text) in requests {
            ids.push(self.request(key, text).await);
        }
        let report = self
            .runner()
            .process_batch(&self.as_delivered(&ids).await)
            .await
            .unwrap();
        assert_eq!(report.applied as usize, ids.len(), "{report:?}");
        ids
    }

    pub async fn record(&self, key: &str) -> NotificationRecord {
        notification::find(&self.t.db, "feishu", key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no record for {key}"))
    }

    pub async fn finish(self) {
        self.t.cleanup().await;
    }
}

/// A request for `key` with `text` as its message, to the default webhook.
pub fn request(key: &str, text: &str) -> NotificationRequested {
    NotificationRequested {
        channel: "feishu".into(),
        target: None,
        title: String::new(),
        text: text.into(),
        dedupe_key: key.into(),
        requested_by: "tests".into(),
        user_id: None,
    }
}

pub use smartflow_testkit::wait_until;
