use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use smartflow_bus::domain::{
    Delivery, Envelope, EventContract, InboundTransport, IncomingMessage, KeyOrder, RetryPolicy,
    RouteRegistry, ServiceRoute,
};
use smartflow_bus::{
    ConsumerConfig, ConsumerRunner, DatabaseConnection, DatabaseTransaction, EventBus,
    HandlerError, HandlerRegistry, PublishConfig, Relay, RelayConfig, TypedHandler,
};
use smartflow_kafka::{EmbeddedBroker, KafkaConfig, KafkaConsumer, KafkaProducer};
use smartflow_storage::chat_history::{self, NewChatMessage};
use smartflow_storage::outbox::{OutboxStats, OutboxTable};
use smartflow_testkit::TestDb;

/// The event every scenario publishes: the content decides how the test handler behaves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Said {
    pub conversation: String,
    pub content: String,
}

impl EventContract for Said {
    const EVENT_TYPE: &'static str = "test.said";
}

/// An event type that is routed but has no handler on the consumer side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unhandled {
    pub x: u32,
}

impl EventContract for Unhandled {
    const EVENT_TYPE: &'static str = "test.unhandled";
}

/// Stores a chat row per event; content `retry` fails retryably, `poison` permanently.
pub struct StoreSaid;

#[async_trait]
impl TypedHandler<Said> for StoreSaid {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: Said,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        chat_history::insert(
            txn,
            &NewChatMessage {
                event_id: envelope.event_id.to_string(),
                conversation_id: event.conversation.clone(),
                user_id: "u".into(),
                role: "user".into(),
                content: event.content.clone(),
                created_at: envelope.occurred_at.timestamp_millis(),
            },
        )
        .await?;
        match event.content.as_str() {
            "retry" => Err(HandlerError::Retryable("downstream busy".into())),
            "poison" => Err(HandlerError::Permanent("content is poison".into())),
            _ => Ok(()),
        }
    }
}

pub fn handlers() -> HandlerRegistry {
    HandlerRegistry::builder()
        .on::<Said, _>(StoreSaid)
        .build()
        .unwrap()
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        max_retry: 3,
    }
}

/// One test's world: its database, its broker, its topic and group, and a bus on them.
pub struct World {
    pub t: TestDb,
    pub broker: EmbeddedBroker,
    pub route: ServiceRoute,
    pub bus: EventBus,
    pub kafka: KafkaConfig,
}

impl World {
    pub async fn new(t: TestDb) -> World {
        Self::ordered(t, KeyOrder::Block).await
    }

    /// A world whose route has the ordering policy `key_order`.
    pub async fn ordered(t: TestDb, key_order: KeyOrder) -> World {
        Self::with_route(t, |route| route.with_key_order(key_order)).await
    }

    /// A world whose route is `Delivery::Direct`, with a bus that sends through a producer.
    pub async fn direct(t: TestDb) -> World {
        let mut w = Self::with_route(t, |route| route.with_delivery(Delivery::Direct)).await;
        // The bus's producer gets a production-sized message timeout rather than the 1 s the
        // other worlds' relays use: a direct send is acknowledged or fails within it, and a
        // fresh producer's first connection on a loaded machine can take longer than 1 s.
        let mut kafka = w.kafka.clone();
        kafka.message_timeout = Duration::from_secs(10);
        let producer = Arc::new(KafkaProducer::new(&kafka).unwrap());
        w.bus = w.bus.clone().with_transport(producer);
        w
    }

    /// A world whose route is `shape`'s change of the default one.
    async fn with_route(t: TestDb, shape: impl FnOnce(ServiceRoute) -> ServiceRoute) -> World {
        let broker = EmbeddedBroker::start(1).unwrap();
        let topic = t.unique("topic");
        broker.create_topic(&topic, 3).unwrap();
        let route =
            shape(ServiceRoute::new("agent", "agent_outbox", topic, t.unique("group")).unwrap());
        let routes = RouteRegistry::builder()
            .service(route.clone())
            .event(Said::EVENT_TYPE, "agent")
            .event(Unhandled::EVENT_TYPE, "agent")
            .build()
            .unwrap();
        let bus = EventBus::new(
            "agent",
            routes,
            PublishConfig {
                max_payload_bytes: 4096,
                max_retry: 3,
            },
        )
        .unwrap();
        let mut kafka = KafkaConfig::new(broker.bootstrap_servers());
        kafka.message_timeout = Duration::from_secs(1);
        kafka
            .extra
            .push(("session.timeout.ms".into(), "6000".into()));
        World {
            t,
            broker,
            route,
            bus,
            kafka,
        }
    }

    pub fn table(&self) -> OutboxTable {
        OutboxTable::new(&self.route.outbox_table).unwrap()
    }

    pub fn relay_on(&self, db: DatabaseConnection, config: RelayConfig) -> Relay {
        self.relay_through(db, config, self.producer())
    }

    /// A producer of its own on the world's broker.
    pub fn producer(&self) -> Arc<dyn smartflow_bus::domain::OutboundTransport> {
        Arc::new(KafkaProducer::new(&self.kafka).unwrap())
    }

    /// A relay sending through `transport` (a producer of its own, as a relay process has).
    pub fn relay_through(
        &self,
        db: DatabaseConnection,
        config: RelayConfig,
        transport: Arc<dyn smartflow_bus::domain::OutboundTransport>,
    ) -> Relay {
        Relay::new(
            db,
            &self.route.outbox_table,
            transport,
            config,
            self.bus.wake_signal(),
            self.bus.metrics().clone(),
        )
        .unwrap()
    }

    pub fn relay(&self) -> Relay {
        self.relay_on(self.t.db.clone(), relay_config())
    }

    pub fn consumer(&self, registry: HandlerRegistry) -> (ConsumerRunner, Arc<KafkaConsumer>) {
        let transport = Arc::new(
            KafkaConsumer::new(
                &self.kafka,
                &self.route.consumer_group,
                &[&self.route.topic],
            )
            .unwrap(),
        );
        let runner = ConsumerRunner::for_route(
            self.t.db.clone(),
            &self.route,
            registry,
            transport.clone(),
            ConsumerConfig {
                retry: fast_retry(),
                ..ConsumerConfig::default()
            },
            // The bus's, as a service shares one `Metrics` between its relay and consumers.
            self.bus.metrics().clone(),
        )
        .unwrap();
        (runner, transport)
    }

    /// Publishes one event per content in its own committed transaction; returns the event ids.
    pub async fn publish(&self, contents: &[&str]) -> Vec<String> {
        let mut ids = Vec::new();
        for content in contents {
            let txn = self.bus.begin(&self.t.db).await.unwrap();
            let id = self
                .bus
                .publish(
                    &txn,
                    "conv-1",
                    &Said {
                        conversation: "conv-1".into(),
                        content: (*content).into(),
                    },
                )
                .await
                .unwrap();
            self.bus.commit(txn).await.unwrap();
            ids.push(id.to_string());
        }
        ids
    }

    pub async fn stats(&self) -> OutboxStats {
        self.table().stats(&self.t.db).await.unwrap()
    }

    /// Runs relay rounds until nothing is pending or the deadline passes.
    pub async fn relay_until_drained(&self, relay: &Relay) {
        wait_until("relay drains the outbox", || async {
            relay.run_once().await.unwrap();
            self.stats().await.pending == 0
        })
        .await;
    }

    /// Every message on the topic, read by a fresh consumer group, until `count` have arrived.
    pub async fn read_topic(&self, count: usize) -> Vec<IncomingMessage> {
        read_topic(
            &self.kafka,
            &self.t.unique("reader"),
            &self.route.topic,
            count,
        )
        .await
    }

    pub async fn finish(self) {
        self.t.cleanup().await;
    }
}

/// Every message on `topic`, read by the new consumer group `group`, until `count` have arrived
/// (or a minute passed), and whatever arrives in a second more (which would be a duplicate).
pub async fn read_topic(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    count: usize,
) -> Vec<IncomingMessage> {
    let reader = KafkaConsumer::new(kafka, group, &[topic]).unwrap();
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while all.len() < count && Instant::now() < deadline {
        if let Ok(batch) = reader
            .recv_batch(1000, Duration::from_secs(2), Duration::from_millis(20))
            .await
        {
            all.extend(batch);
        }
    }
    if let Ok(batch) = reader
        .recv_batch(1000, Duration::from_secs(1), Duration::from_millis(20))
        .await
    {
        all.extend(batch);
    }
    reader.close().await;
    all
}

pub fn relay_config() -> RelayConfig {
    RelayConfig {
        batch_size: 100,
        retry_batch_size: 50,
        workers: 1,
        poll_interval: Duration::from_millis(50),
        claim_timeout: Duration::from_secs(2),
        retry: fast_retry(),
        ..RelayConfig::default()
    }
}

/// Counts of each event id among messages.
pub fn count_by_event_id(messages: &[IncomingMessage]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for m in messages {
        let env = Envelope::from_slice(m.payload.as_deref().unwrap()).unwrap();
        *counts.entry(env.event_id.to_string()).or_default() += 1;
    }
    counts
}

pub use smartflow_testkit::wait_until;
