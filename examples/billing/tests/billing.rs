//! Billing end to end, on every backend: the agent's side (its own database, outbox and relay)
//! publishes usage events; billing, started as its binary starts it, on a database of its own,
//! charges each one once, through its own inbox, and publishes `billing.invoice.paid` from its
//! own outbox onto its own topic.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{EntityTrait, PaginatorTrait};
use smartflow_agent_contracts::{ChatMessageAppended, Role, TokenUsageRecorded};
use smartflow_bus::domain::{
    Envelope, EventContract, InboundTransport, OutboxStatus, RouteRegistry,
};
use smartflow_bus::{EventBus, Metrics, PublishConfig, Relay, RelayConfig};
use smartflow_example_billing::invoices::{self, CENTS_PER_TOKEN};
use smartflow_example_billing::{Billing, BillingConfig, InvoicePaid, INBOX_TABLE, OUTBOX_TABLE};
use smartflow_kafka::{EmbeddedBroker, KafkaConfig, KafkaConsumer, KafkaProducer};
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::outbox::OutboxTable;
use smartflow_testkit::{on_every_backend, wait_until, TestDb};

const USAGE_EVENTS: usize = 5;

/// The agent's side of the test: a database of its own with the agent's outbox, its bus and
/// its relay, as the agent runs them.
struct AgentSide {
    t: TestDb,
    bus: EventBus,
    relay: Relay,
}

impl AgentSide {
    async fn new(backend: smartflow_testkit::Backend, kafka: &KafkaConfig, topic: &str) -> Self {
        let t = TestDb::new(backend).await;
        let routes = smartflow_agent_contracts::register(RouteRegistry::builder(), topic)
            .unwrap()
            .build()
            .unwrap();
        let bus = EventBus::new("agent", routes, PublishConfig::default()).unwrap();
        let relay = Relay::new(
            t.db.clone(),
            smartflow_agent_contracts::OUTBOX_TABLE,
            Arc::new(KafkaProducer::new(kafka).unwrap()),
            RelayConfig {
                consumed_here: Some(BTreeSet::new()),
                ..RelayConfig::default()
            },
            bus.wake_signal(),
            Arc::new(Metrics::default()),
        )
        .unwrap();
        Self { t, bus, relay }
    }

    async fn publish<E: EventContract>(&self, event: &E) -> String {
        let txn = self.bus.begin(&self.t.db).await.unwrap();
        let id = self.bus.publish(&txn, "user-1", event).await.unwrap();
        self.bus.commit(txn).await.unwrap();
        id.to_string()
    }

    async fn relay_all(&self) {
        let outbox = OutboxTable::new(smartflow_agent_contracts::OUTBOX_TABLE).unwrap();
        wait_until("the agent's relay sends everything", || async {
            self.relay.run_once().await.unwrap();
            outbox.stats(&self.t.db).await.unwrap().pending == 0
        })
        .await;
    }
}

async fn usage_is_invoiced_once_and_each_invoice_is_published(t: TestDb) {
    let broker = EmbeddedBroker::start(1).unwrap();
    let agent_topic = t.unique("agent");
    let billing_topic = t.unique("billing");
    broker.create_topic(&agent_topic, 2).unwrap();
    broker.create_topic(&billing_topic, 2).unwrap();
    let kafka = broker.client_config();
    let agent = AgentSide::new(t.backend, &kafka, &agent_topic).await;

    // Billing on its own, empty database: its migration makes its tables.
    let mut config = BillingConfig::embedded(t.config.url.clone());
    config.service.database_schema = t.config.pg_schema.clone();
    config.service.kafka_brokers = Some(broker.bootstrap_servers());
    config.topic = billing_topic.clone();
    config.agent_topic = agent_topic.clone();
    let billing = Billing::start(config)
        .await
        .unwrap_or_else(|e| panic!("billing did not start: {e:#}"));

    let mut usage_ids = Vec::new();
    for n in 1..=USAGE_EVENTS {
        let usage = TokenUsageRecorded {
            user_id: "user-1".into(),
            conversation_id: format!("conv-{n}"),
            tokens: n as u64,
        };
        usage_ids.push(agent.publish(&usage).await);
    }
    // The agent's topic carries other events too; billing subscribes to usage only.
    let chat = agent
        .publish(&ChatMessageAppended {
            conversation_id: "conv-1".into(),
            user_id: "user-1".into(),
            role: Role::User,
            content: "hello".into(),
            occurred_at_ms: 1,
        })
        .await;
    agent.relay_all().await;

    wait_until("every usage event is invoiced", || async {
        invoices::Entity::find().count(&t.db).await.unwrap() == USAGE_EVENTS as u64
    })
    .await;
    let all = invoices::Entity::find().all(&t.db).await.unwrap();
    let charged: BTreeSet<&str> = all.iter().map(|i| i.usage_event_id.as_str()).collect();
    assert_eq!(charged, usage_ids.iter().map(String::as_str).collect());
    for invoice in &all {
        assert_eq!(invoice.amount_cents, invoice.tokens * CENTS_PER_TOKEN);
    }
    let inbox = InboxTable::new(INBOX_TABLE).unwrap();
    for id in &usage_ids {
        let entry = inbox.find(&t.db, "billing", id).await.unwrap();
        assert_eq!(entry.map(|e| e.status), Some(InboxStatus::Handled), "{id}");
    }
    assert!(
        inbox.find(&t.db, "billing", &chat).await.unwrap().is_none(),
        "an event billing does not subscribe to is skipped, not recorded"
    );

    // Each invoice's event leaves billing's own outbox for billing's topic, and ends there:
    // billing does not consume its own events.
    let outbox = OutboxTable::new(OUTBOX_TABLE).unwrap();
    assert!(
        outbox.has_redrive_history(&t.db).await.unwrap(),
        "billing's migration gives its outbox the admin redrive's history"
    );
    wait_until("every invoice event is published", || async {
        let stats = outbox.stats(&t.db).await.unwrap();
        stats.published == USAGE_EVENTS as u64 && stats.pending == 0
    })
    .await;
    let reader =
        KafkaConsumer::new(&kafka, &t.unique("reader"), &[billing_topic.as_str()]).unwrap();
    let mut paid = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while paid.len() < USAGE_EVENTS && Instant::now() < deadline {
        if let Ok(batch) = reader
            .recv_batch(100, Duration::from_secs(1), Duration::from_millis(10))
            .await
        {
            paid.extend(batch);
        }
    }
    reader.close().await;
    assert_eq!(
        paid.len(),
        USAGE_EVENTS,
        "one billing.invoice.paid per invoice"
    );
    for message in &paid {
        let envelope = Envelope::from_slice(message.payload.as_deref().unwrap()).unwrap();
        assert_eq!(envelope.source(), Some("billing"));
        let event: InvoicePaid = envelope.decode().unwrap();
        assert!(all
            .iter()
            .any(|i| i.id == event.invoice_id && i.amount_cents == event.amount_cents));
    }

    // Every usage event delivered again (as after a broker that lost them): nothing is charged
    // twice, and billing's outbox gains nothing.
    let agent_outbox = OutboxTable::new(smartflow_agent_contracts::OUTBOX_TABLE).unwrap();
    assert!(
        agent_outbox
            .requeue_all_published(&agent.t.db)
            .await
            .unwrap()
            > 0
    );
    agent.relay_all().await;
    wait_until("billing sees every copy as a duplicate", || async {
        billing.metrics().duplicates.load(Ordering::Relaxed) >= USAGE_EVENTS as u64
    })
    .await;
    assert_eq!(
        invoices::Entity::find().count(&t.db).await.unwrap(),
        USAGE_EVENTS as u64
    );
    let stats = outbox.stats(&t.db).await.unwrap();
    assert_eq!(stats.published + stats.pending, USAGE_EVENTS as u64);
    let row = outbox
        .find(&t.db, &envelope_id(&paid[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, OutboxStatus::Published);
    assert_eq!(
        row.next_retry_at, None,
        "nobody in billing's database marks it"
    );

    billing.shutdown().await;
    drop(agent.relay);
    agent.t.cleanup().await;
    drop(broker);
    t.cleanup().await;
}

fn envelope_id(message: &smartflow_bus::domain::IncomingMessage) -> String {
    Envelope::from_slice(message.payload.as_deref().unwrap())
        .unwrap()
        .event_id
        .to_string()
}

on_every_backend!(empty: usage_is_invoiced_once_and_each_invoice_is_published);
