//! Token-usage accounting: events from the agent's outbox through the broker into the ledger,
//! redelivery changing nothing, and the quota boundary.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use smartflow_bus::domain::{
    Envelope, EventContract, IncomingMessage, OutboundMessage, OutboundTransport, RouteRegistry,
    ServiceRoute, EVENT_ID_HEADER, EVENT_TYPE_HEADER,
};
use smartflow_bus::{
    ConsumerConfig, ConsumerRunner, EventBus, Metrics, PublishConfig, Relay, RelayConfig,
};
use smartflow_kafka::{EmbeddedBroker, KafkaConfig, KafkaProducer};
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::outbox::OutboxTable;
use smartflow_storage::token_usage::{self, Recorded, UsageEntry};
use smartflow_storage::TransactionTrait as _;
use smartflow_testkit::{on_every_backend, TestDb};
use smartflow_userauth::events::{TokenUsageRecorded, INBOX_CONSUMER};
use smartflow_userauth::http::AuthorizeResponse;
use smartflow_userauth::{usage, AuthorizeError, RunningUserauth};

use crate::support::*;

/// Another agent event on the same topic, which userauth does not subscribe to.
#[derive(Debug, Serialize, Deserialize)]
struct ChatMessageAppended {
    conversation_id: String,
    content: String,
}

impl EventContract for ChatMessageAppended {
    const EVENT_TYPE: &'static str = "agent.chat.message.appended";
}

/// The agent's half, made of the real bus: its outbox, its relay and its topic on a broker that
/// the userauth under test is pointed at.
struct Agent {
    bus: EventBus,
    relay: Relay,
    producer: KafkaProducer,
    table: OutboxTable,
    topic: String,
    // Last: the clients above go before the broker.
    _broker: EmbeddedBroker,
}

impl Agent {
    /// Starts a broker with the agent topic, and userauth reading that topic there.
    async fn with_userauth(t: &TestDb) -> (Agent, RunningUserauth) {
        let broker = EmbeddedBroker::start(1).unwrap();
        let topic = t.unique("agent-events");
        broker.create_topic(&topic, 3).unwrap();
        let kafka = KafkaConfig::new(broker.bootstrap_servers());
        let route =
            ServiceRoute::new("agent", "agent_outbox", &topic, t.unique("agent-group")).unwrap();
        let routes = RouteRegistry::builder()
            .service(route)
            .event(TokenUsageRecorded::EVENT_TYPE, "agent")
            .event(ChatMessageAppended::EVENT_TYPE, "agent")
            .build()
            .unwrap();
        let bus = EventBus::new("agent", routes, PublishConfig::default()).unwrap();
        let producer = KafkaProducer::new(&kafka).unwrap();
        let relay = Relay::new(
            t.db.clone(),
            "agent_outbox",
            Arc::new(producer.clone()),
            RelayConfig {
                poll_interval: Duration::from_millis(50),
                ..RelayConfig::default()
            },
            bus.wake_signal(),
            bus.metrics().clone(),
        )
        .unwrap();
        let mut config = config_for(t);
        config.service.kafka_brokers = Some(broker.bootstrap_servers());
        config.agent_topic = topic.clone();
        let app = start(config).await;
        let agent = Agent {
            bus,
            relay,
            producer,
            table: OutboxTable::new("agent_outbox").unwrap(),
            topic,
            _broker: broker,
        };
        (agent, app)
    }

    /// Publishes one event through the outbox and relays it; returns its event id.
    async fn publish<E: EventContract>(&self, t: &TestDb, key: &str, event: &E) -> String {
        let txn = self.bus.begin(&t.db).await.unwrap();
        let id = self.bus.publish(&txn, key, event).await.unwrap();
        self.bus.commit(txn).await.unwrap();
        wait_until("the relay publishes the event", || async {
            self.relay.run_once().await.unwrap();
            self.table.stats(&t.db).await.unwrap().pending == 0
        })
        .await;
        id.to_string()
    }

    /// Sends an already relayed event to the broker once more, exactly as the relay sent it:
    /// what a relay crash after the send but before its mark leads to.
    async fn redeliver(&self, t: &TestDb, event_id: &str) {
        let row = self.table.find(&t.db, event_id).await.unwrap().unwrap();
        let outcome = self
            .producer
            .send_batch(
                vec![OutboundMessage {
                    topic: self.topic.clone(),
                    key: row.message_key,
                    payload: row.payload,
                    headers: vec![
                        (EVENT_ID_HEADER.to_owned(), event_id.to_owned()),
                        (EVENT_TYPE_HEADER.to_owned(), row.event_type),
                    ],
                }],
                Duration::from_secs(10),
            )
            .await;
        outcome.into_iter().for_each(|r| r.unwrap());
    }
}

fn usage_event(user_id: &str, tokens: u64) -> TokenUsageRecorded {
    TokenUsageRecorded {
        user_id: user_id.to_owned(),
        conversation_id: "conv-1".to_owned(),
        tokens,
    }
}

async fn usage_of(app: &RunningUserauth, access_token: &str) -> i64 {
    me(app, access_token).await.token_usage
}

/// End to end: usage events leave the agent's outbox, cross the broker, and land in the ledger
/// once each; a redelivered copy and chat events on the same topic change nothing.
async fn usage_events_are_counted_once_each(t: TestDb) {
    let (agent, app) = Agent::with_userauth(&t).await;
    let address = email(&t, "ada");
    let user = register(&app, &address).await;
    let tokens = login(&app, &address).await;
    // One message key for all, so they share a partition and arrive in publish order.
    let key = user.user_id.as_str();

    let first = agent
        .publish(&t, key, &usage_event(&user.user_id, 10))
        .await;
    let chat = agent
        .publish(
            &t,
            key,
            &ChatMessageAppended {
                conversation_id: "conv-1".into(),
                content: "hi".into(),
            },
        )
        .await;
    let second = agent
        .publish(&t, key, &usage_event(&user.user_id, 20))
        .await;
    wait_until("both usage events are counted", || async {
        usage_of(&app, &tokens.access_token).await == 30
    })
    .await;

    agent.redeliver(&t, &first).await;
    // The sentinel comes after the duplicate on the same partition: once it is counted, the
    // duplicate has been handled.
    let sentinel = agent.publish(&t, key, &usage_event(&user.user_id, 5)).await;
    wait_until("the sentinel is counted", || async {
        token_usage::find(app.db(), &sentinel)
            .await
            .unwrap()
            .is_some()
    })
    .await;

    assert_eq!(
        usage_of(&app, &tokens.access_token).await,
        35,
        "the duplicate added nothing"
    );
    assert_eq!(
        token_usage::totals_for_user(app.db(), &user.user_id)
            .await
            .unwrap(),
        (3, 35),
        "the usage is the ledger's sum"
    );
    let entry = token_usage::find(app.db(), &second).await.unwrap().unwrap();
    assert_eq!(
        (
            entry.user_id.as_str(),
            entry.conversation_id.as_str(),
            entry.tokens
        ),
        (key, "conv-1", 20)
    );
    for id in [&first, &second, &sentinel] {
        let row = InboxTable::default()
            .find(app.db(), INBOX_CONSUMER, id)
            .await
            .unwrap()
            .expect("inbox row");
        assert_eq!(row.status, InboxStatus::Handled);
    }
    assert!(
        InboxTable::default()
            .find(app.db(), INBOX_CONSUMER, &chat)
            .await
            .unwrap()
            .is_none(),
        "chat events are skipped, not recorded as dead"
    );
    // The counters move just after the batch's commit, so the sentinel's row can be visible a
    // moment before its count is.
    let counter = |name: &str| {
        app.metrics()
            .snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    };
    wait_until("the sentinel's batch is counted", || async {
        counter("consumed") >= Some(3)
    })
    .await;
    assert_eq!(
        counter("consumed"),
        Some(3),
        "three events applied, never one twice"
    );
    assert!(
        counter("duplicates") >= Some(1),
        "the redelivered copy was seen and skipped"
    );
    finish(app, t).await;
}

fn subscriber(t: &TestDb, consumer: &str) -> ConsumerRunner {
    ConsumerRunner::for_subscriber(
        t.db.clone(),
        consumer,
        usage::registry().unwrap(),
        Arc::new(smartflow_testkit::Unplugged),
        ConsumerConfig::default(),
        Arc::new(Metrics::default()),
    )
    .unwrap()
}

fn delivered(envelopes: &[&Envelope]) -> Vec<IncomingMessage> {
    envelopes
        .iter()
        .enumerate()
        .map(|(i, envelope)| IncomingMessage {
            topic: "agent".into(),
            partition: 0,
            offset: i as i64,
            key: Some(envelope.message_key.clone().into_bytes()),
            payload: Some(envelope.to_json().into_bytes()),
            headers: vec![
                (
                    EVENT_ID_HEADER.into(),
                    envelope.event_id.to_string().into_bytes(),
                ),
                (
                    EVENT_TYPE_HEADER.into(),
                    envelope.event_type.clone().into_bytes(),
                ),
            ],
        })
        .collect()
}

/// Redelivery of the same batch changes nothing; and the ledger key holds on its own: a consumer
/// under another inbox name (as after an inbox purge) applies the event but adds no usage.
async fn redelivery_changes_nothing_even_without_the_inbox(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "bob");
    let user = register(&app, &address).await;
    let tokens = login(&app, &address).await;
    let a = Envelope::for_event(&user.user_id, &usage_event(&user.user_id, 7)).unwrap();
    let b = Envelope::for_event(&user.user_id, &usage_event(&user.user_id, 11)).unwrap();
    let batch = delivered(&[&a, &b]);

    let runner = subscriber(&t, INBOX_CONSUMER);
    let first = runner.process_batch(&batch).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (2, 0));
    let again = runner.process_batch(&batch).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 2));
    assert_eq!(usage_of(&app, &tokens.access_token).await, 18);

    let fresh_inbox = subscriber(&t, "userauth-replay");
    let replay = fresh_inbox.process_batch(&batch).await.unwrap();
    assert_eq!(replay.dead, 0);
    assert_eq!(
        usage_of(&app, &tokens.access_token).await,
        18,
        "the ledger key refused both"
    );
    assert_eq!(
        token_usage::totals_for_user(app.db(), &user.user_id)
            .await
            .unwrap(),
        (2, 18)
    );

    // The storage call says so directly, and leaves the transaction usable.
    let txn = t.db.begin().await.unwrap();
    let entry = UsageEntry {
        event_id: a.event_id.to_string(),
        user_id: user.user_id.clone(),
        conversation_id: "conv-1".into(),
        tokens: 7,
        occurred_at: 0,
    };
    assert_eq!(
        token_usage::record(&txn, &entry).await.unwrap(),
        Recorded::Duplicate
    );
    let other = UsageEntry {
        event_id: uuid::Uuid::new_v4().to_string(),
        tokens: 1,
        ..entry
    };
    assert_eq!(
        token_usage::record(&txn, &other).await.unwrap(),
        Recorded::Added
    );
    txn.commit().await.unwrap();
    assert_eq!(usage_of(&app, &tokens.access_token).await, 19);
    finish(app, t).await;
}

/// An event for a user that does not exist can never apply: it is dead in the inbox with the
/// reason, and nothing reaches the ledger.
async fn usage_of_an_unknown_user_is_dead_with_a_reason(t: TestDb) {
    let app = start(config_for(&t)).await;
    let ghost = uuid::Uuid::new_v4().to_string();
    let envelope = Envelope::for_event(&ghost, &usage_event(&ghost, 3)).unwrap();
    let report = subscriber(&t, INBOX_CONSUMER)
        .process_batch(&delivered(&[&envelope]))
        .await
        .unwrap();
    assert_eq!((report.applied, report.dead), (0, 1));
    let row = InboxTable::default()
        .find(app.db(), INBOX_CONSUMER, &envelope.event_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, InboxStatus::Dead);
    assert!(row.last_error.unwrap().contains(&ghost));
    assert!(token_usage::find(app.db(), &envelope.event_id.to_string())
        .await
        .unwrap()
        .is_none());
    finish(app, t).await;
}

async fn add_usage(t: &TestDb, user_id: &str, tokens: i64) {
    let txn = t.db.begin().await.unwrap();
    let entry = UsageEntry {
        event_id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_owned(),
        conversation_id: "conv-1".into(),
        tokens,
        occurred_at: 0,
    };
    assert_eq!(
        token_usage::record(&txn, &entry).await.unwrap(),
        Recorded::Added
    );
    txn.commit().await.unwrap();
}

/// `usage >= quota` is refused: one token under the quota is served, exactly at it is a 429.
async fn usage_exactly_at_the_quota_is_refused(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "quota");
    let user = register(&app, &address).await;
    let tokens = login(&app, &address).await;
    let verifier = userauth_client(&app.base_url());
    set_quota(&app, &user.user_id, 100).await;

    add_usage(&t, &user.user_id, 99).await;
    let response = get_with(&app, "/v1/auth/authorize", &tokens.access_token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let allowed: AuthorizeResponse = response.json().await.unwrap();
    assert_eq!(
        allowed,
        AuthorizeResponse {
            user_id: user.user_id.clone(),
            email: address.clone(),
            token_usage: 99,
            token_quota: 100
        }
    );
    assert_eq!(
        verifier.authorize(&tokens.access_token).await.unwrap(),
        allowed
    );

    add_usage(&t, &user.user_id, 1).await;
    let (status, code, message) =
        error_of(get_with(&app, "/v1/auth/authorize", &tokens.access_token).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded")
    );
    assert_eq!(message, "token quota used up: 100 of 100 tokens");
    assert_eq!(
        verifier.authorize(&tokens.access_token).await,
        Err(AuthorizeError::Rejected {
            status: 429,
            code: "quota_exceeded".into(),
            message
        })
    );
    // The account itself still works: only new work is refused.
    assert_eq!(me(&app, &tokens.access_token).await.token_usage, 100);

    set_quota(&app, &user.user_id, 101).await;
    assert_eq!(
        verifier
            .authorize(&tokens.access_token)
            .await
            .unwrap()
            .token_quota,
        101
    );

    // A quota of zero refuses from the start: 0 >= 0.
    let frugal = email(&t, "frugal");
    let frugal_id = register(&app, &frugal).await.user_id;
    set_quota(&app, &frugal_id, 0).await;
    let frugal_tokens = login(&app, &frugal).await;
    assert!(matches!(
        verifier.authorize(&frugal_tokens.access_token).await,
        Err(AuthorizeError::Rejected { status: 429, .. })
    ));
    finish(app, t).await;
}

/// The verifier reports an unreachable userauth as unavailable, never as a verdict on the token.
async fn an_unreachable_userauth_is_unavailable_not_a_verdict(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "gone");
    register(&app, &address).await;
    let tokens = login(&app, &address).await;
    let base = app.base_url();
    finish(app, t).await;
    let verifier = userauth_client(&base);
    assert!(matches!(
        verifier.authorize(&tokens.access_token).await,
        Err(AuthorizeError::Unavailable(_))
    ));
}

on_every_backend!(
    usage_events_are_counted_once_each,
    redelivery_changes_nothing_even_without_the_inbox,
    usage_of_an_unknown_user_is_dead_with_a_reason,
    usage_exactly_at_the_quota_is_refused,
    an_unreachable_userauth_is_unavailable_not_a_verdict,
);
