//! What every benchmark phase starts from: an isolated migrated database, an in-process broker
//! with its own topic, the route of the agent's outbox and an event bus over it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use sea_orm::{DatabaseConnection, DatabaseTransaction};
use serde::{Deserialize, Serialize};
use smartflow_bus::{
    EventBus, HandlerError, Metrics, PublishConfig, Relay, RelayConfig, TypedHandler,
};
use smartflow_domain::{
    Envelope, EventContract, OutboundTransport, RouteRegistry, ServiceRoute, TRACEPARENT_HEADER,
};
use smartflow_kafka::{EmbeddedBroker, KafkaConfig, KafkaConsumer, KafkaProducer};
use smartflow_storage::chat_history::{self, NewChatMessage};
use smartflow_storage::now_millis;
use smartflow_testkit::{Backend, TestDb};

/// The chat message's text. The envelope's own fields (ids, type, time, trace context) already
/// take about 340 bytes, so a message of this text is about 410 bytes as stored and sent.
const CONTENT_CHARS: usize = 64;

/// The benchmark's event: a chat message, as the agent publishes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessageAppended {
    pub conversation_id: String,
    pub user_id: String,
    pub role: String,
    pub content: String,
}

impl EventContract for ChatMessageAppended {
    const EVENT_TYPE: &'static str = "bench.chat.message.appended";
}

impl ChatMessageAppended {
    /// The message of conversation `n` (writers and keys spread over a few conversations).
    pub fn sized(n: usize) -> Self {
        Self {
            conversation_id: format!("conv-{n}"),
            user_id: format!("user-{n}"),
            role: "user".to_owned(),
            content: "x".repeat(CONTENT_CHARS),
        }
    }

    /// The business row this event stands for.
    pub fn business_row(&self, event_id: String) -> NewChatMessage {
        NewChatMessage {
            event_id,
            conversation_id: self.conversation_id.clone(),
            user_id: self.user_id.clone(),
            role: self.role.clone(),
            content: self.content.clone(),
            created_at: now_millis(),
        }
    }
}

/// The JSON size of the event's envelope once `publish` has added its trace context.
pub fn envelope_bytes(event: &ChatMessageAppended) -> usize {
    let mut envelope = Envelope::for_event(&event.conversation_id, event).expect("serializes");
    envelope.headers.insert(
        TRACEPARENT_HEADER.to_owned(),
        format!("00-{:032x}-{:016x}-01", 0u128, 0u64),
    );
    envelope.to_json().len()
}

/// The consumer's effect: the chat message is stored, as the agent's consumer does.
pub struct StoreChatMessage;

#[async_trait]
impl TypedHandler<ChatMessageAppended> for StoreChatMessage {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: ChatMessageAppended,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        chat_history::insert(txn, &event.business_row(envelope.event_id.to_string())).await?;
        Ok(())
    }

    /// As the agent's handler does: a batch's messages in one multi-row insert.
    async fn handle_batch(
        &self,
        txn: &DatabaseTransaction,
        events: Vec<(ChatMessageAppended, &Envelope)>,
    ) -> Result<(), HandlerError> {
        let rows: Vec<NewChatMessage> = events
            .iter()
            .map(|(event, envelope)| event.business_row(envelope.event_id.to_string()))
            .collect();
        chat_history::insert_all(txn, &rows).await?;
        Ok(())
    }
}

/// One phase's world. Build with [`Fixture::new`]; always end with [`Fixture::cleanup`].
pub struct Fixture {
    pub testdb: TestDb,
    // Dropped after everything that talks to it (fields drop in order; it is last).
    pub kafka: KafkaConfig,
    pub route: ServiceRoute,
    pub bus: EventBus,
    pub broker: EmbeddedBroker,
}

impl Fixture {
    /// A relay of the fixture's outbox through `transport` (a new producer of its own when
    /// `None`), woken by the bus's commits: `batch_size` x `workers`, the rest of `config`.
    pub fn relay(
        &self,
        transport: Option<Arc<dyn OutboundTransport>>,
        config: RelayConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Relay> {
        let transport = match transport {
            Some(transport) => transport,
            None => Arc::new(KafkaProducer::new(&self.kafka)?),
        };
        Ok(Relay::new(
            self.db().clone(),
            &self.route.outbox_table,
            transport,
            config,
            self.bus.wake_signal(),
            metrics,
        )?)
    }

    /// A relay of the fixture's outbox through a producer of its own: `batch_size` x `workers`,
    /// the rest of `RelayConfig::default()`.
    pub fn default_relay(
        &self,
        batch_size: u64,
        workers: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Relay> {
        self.relay(None, relay_config(batch_size, workers), metrics)
    }

    /// A consumer of the fixture's topic in the route's consumer group.
    pub fn consumer(&self) -> Result<Arc<KafkaConsumer>> {
        Ok(Arc::new(KafkaConsumer::new(
            &self.kafka,
            &self.route.consumer_group,
            &[&self.route.topic],
        )?))
    }

    /// `kafka_extra` goes to every Kafka client's configuration (`KafkaConfig::extra`).
    pub async fn new(
        backend: Backend,
        partitions: i32,
        kafka_extra: &[(String, String)],
    ) -> Result<Self> {
        let testdb = TestDb::new(backend).await;
        let broker = tokio::task::spawn_blocking(|| EmbeddedBroker::start(1))
            .await?
            .context("starting the embedded broker")?;
        let topic = testdb.unique("bench");
        broker
            .create_topic(&topic, partitions)
            .context("creating the benchmark topic")?;
        let route =
            ServiceRoute::new("agent", "agent_outbox", topic, testdb.unique("bench-group"))?;
        let routes = RouteRegistry::builder()
            .service(route.clone())
            .event(ChatMessageAppended::EVENT_TYPE, "agent")
            .build()?;
        let bus = EventBus::new("agent", routes, PublishConfig::default())?;
        let mut kafka = broker.client_config();
        kafka.extra = kafka_extra.to_vec();
        Ok(Self {
            testdb,
            kafka,
            route,
            bus,
            broker,
        })
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.testdb.db
    }

    /// Drops the database and stops the broker.
    pub async fn cleanup(self) {
        let Self { testdb, broker, .. } = self;
        testdb.cleanup().await;
        // Stopping the mock cluster joins its thread; keep that off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || drop(broker)).await;
    }
}

/// The benchmark relay's configuration, in this process or in one of its own:
/// `batch_size` x `workers`, the rest of `RelayConfig::default()`.
pub fn relay_config(batch_size: u64, workers: usize) -> RelayConfig {
    RelayConfig {
        batch_size,
        workers,
        ..RelayConfig::default()
    }
}

/// Waits until `done` holds, checking every `every`, for at most `patience`.
pub async fn wait_until(
    what: &str,
    patience: Duration,
    every: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    while !done() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "gave up after {} s waiting for {what}",
            patience.as_secs()
        );
        tokio::time::sleep(every).await;
    }
    Ok(())
}
