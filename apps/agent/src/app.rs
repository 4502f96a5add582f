//! Start-up and shutdown: connects and migrates the database, reaches (or starts) the broker,
//! and runs the relay, the consumer and the HTTP API under one cancellation token.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use smartflow_bus::{ConsumerRunner, EventBus, PublishConfig, Relay, RelayConfig};
use smartflow_kafka::{EmbeddedBroker, KafkaConsumer, KafkaProducer};
use smartflow_service::{
    connect_with_retries, prepare_broker, release_clients, stop_tasks, supervise, BrokerSettings,
    DatabaseSettings, RunningService, Task,
};
use smartflow_storage::connect::redact;
use smartflow_storage::outbox::OutboxTable;
use smartflow_userauth_contracts::UserauthClient;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::AgentConfig;
use crate::events::{self, OUTBOX_TABLE};
use crate::handlers;
use crate::http::{self, ApiState};

/// How long the agent waits for userauth's verdict on a token.
const USERAUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most characters of content a MySQL/MariaDB `TEXT` column (65,535 bytes) is sure to hold,
/// at four bytes per character.
const MYSQL_TEXT_MAX_CHARS: usize = 65_535 / 4;

/// The agent service. [`Agent::start`] brings it up in this process; `main` is a thin wrapper
/// around it, and tests and benchmarks call it directly.
pub struct Agent;

impl Agent {
    /// Starts everything, in the order that lets each step fail with a clear message before
    /// anything runs in the background: database (validated, connected, migrated), broker
    /// (reached or started, topic created), bus, HTTP listener. Only then are the relay, the
    /// consumer and the HTTP server spawned.
    pub async fn start(config: AgentConfig) -> anyhow::Result<RunningAgent> {
        tracing::info!(?config, "starting the agent");
        config
            .reliability
            .validate()
            .context("the reliability settings do not fit together")?;
        if config.max_content_chars == 0 {
            bail!("SMARTFLOW_MAX_CONTENT_CHARS must be at least 1");
        }
        let routes = events::routes(&config.topic, &config.notification_topic)
            .with_context(|| format!("SMARTFLOW_TOPIC `{}` is not a usable topic", config.topic))?;
        let route = events::route(&config.topic)?;

        let db = connect_with_retries(DatabaseSettings {
            url: &config.database_url,
            schema: config.database_schema.as_deref(),
            wait_secs: config.database_wait_secs,
            limits: config.reliability.session_limits(),
        })
        .await?;
        smartflow_migrations::run_migrator::<smartflow_migrations::agent::Migrator>(&db)
            .await
            .context("running the database migrations")?;
        if db.get_database_backend() == DbBackend::MySql
            && config.max_content_chars > MYSQL_TEXT_MAX_CHARS
        {
            bail!(
                "SMARTFLOW_MAX_CONTENT_CHARS={} is more than the MySQL chat history column holds \
                 ({MYSQL_TEXT_MAX_CHARS} characters)",
                config.max_content_chars
            );
        }

        if let Some(brokers) = config.brokers() {
            tracing::info!(%brokers, wait_secs = config.broker_wait_secs, "connecting to Kafka");
        }
        let (mut kafka, broker) = prepare_broker(BrokerSettings {
            brokers: config.brokers(),
            topic: &config.topic,
            partitions: config.kafka_partitions,
            replication: config.kafka_replication,
            wait_secs: config.broker_wait_secs,
            client_id: "smartflow-agent",
        })
        .await?;
        config.reliability.apply_to_kafka(&mut kafka, "agent");
        if let Some(broker) = &broker {
            tracing::info!(bootstrap = %broker.bootstrap_servers(), "embedded Kafka broker started");
        }

        let bus = EventBus::new(
            events::SERVICE,
            routes,
            PublishConfig {
                max_payload_bytes: config.max_payload_bytes,
                ..PublishConfig::default()
            },
        )
        .context("building the event bus")?;
        let handlers = handlers::registry(bus.clone()).context("registering the event handlers")?;
        // The agent's consumer marks only the events it handles itself; its other events (token
        // usage) are for other services and end `published` once Kafka has them.
        let consumed_here: BTreeSet<String> = handlers
            .event_types()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let producer = KafkaProducer::new(&kafka).context("creating the Kafka producer")?;
        let relay = Relay::new(
            db.clone(),
            OUTBOX_TABLE,
            Arc::new(producer.clone()),
            RelayConfig {
                consumed_here: Some(consumed_here.clone()),
                ..config.reliability.relay()
            },
            bus.wake_signal(),
            bus.metrics().clone(),
        )
        .context("building the relay")?;
        if broker.is_some() {
            // The embedded broker is new and empty: what the last run published but did not get
            // consumed exists only in the outbox now.
            relay
                .republish_all_published()
                .await
                .context("re-queueing rows published to the previous embedded broker")?;
        }
        let consumer = Arc::new(
            KafkaConsumer::new(&kafka, &route.consumer_group, &[route.topic.as_str()])
                .context("creating the Kafka consumer")?,
        );
        let runner = ConsumerRunner::for_route(
            db.clone(),
            &route,
            handlers,
            consumer.clone(),
            config.reliability.consumer(),
            bus.metrics().clone(),
        )
        .context("building the consumer")?
        .only_event_types(consumed_here.iter().map(String::as_str));

        let listener = TcpListener::bind(config.http_addr).await.with_context(|| {
            format!("cannot listen on SMARTFLOW_HTTP_ADDR {}", config.http_addr)
        })?;
        let local_addr = listener
            .local_addr()
            .context("reading the HTTP listener's address")?;
        let auth = match &config.userauth_url {
            Some(url) => Some(
                UserauthClient::new(url, USERAUTH_TIMEOUT)
                    .with_context(|| format!("SMARTFLOW_USERAUTH_URL {url}"))?,
            ),
            None => {
                tracing::warn!(
                    "SMARTFLOW_USERAUTH_URL is not set: requests are not authenticated and anyone \
                     may post as any user; set it outside local development"
                );
                None
            }
        };
        let router = http::router(ApiState {
            db: db.clone(),
            bus: bus.clone(),
            outbox: OutboxTable::new(OUTBOX_TABLE)?,
            max_content_chars: config.max_content_chars,
            auth,
        });

        let shutdown = CancellationToken::new();
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let tasks = vec![
            supervise("relay", AGENT, &shutdown, relay.run(shutdown.clone())),
            supervise("consumer", AGENT, &shutdown, runner.run(shutdown.clone())),
            supervise("http", AGENT, &shutdown, async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "the HTTP server failed");
                }
            }),
        ];
        tracing::info!(
            http = %local_addr,
            database = %redact(&config.database_url),
            brokers = %kafka.brokers,
            embedded_broker = broker.is_some(),
            topic = %route.topic,
            "agent started"
        );
        Ok(RunningAgent {
            local_addr,
            db,
            bus,
            kafka_brokers: kafka.brokers.clone(),
            cancel_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            tasks,
            grace: config.shutdown_grace(),
            producer,
            consumer,
            broker,
        })
    }
}

/// A started agent. Stop it with [`RunningAgent::shutdown`]; merely dropping it cancels the
/// background work without waiting for it.
pub struct RunningAgent {
    local_addr: SocketAddr,
    db: DatabaseConnection,
    bus: EventBus,
    kafka_brokers: String,
    shutdown: CancellationToken,
    cancel_on_drop: DropGuard,
    tasks: Vec<Task>,
    grace: Duration,
    producer: KafkaProducer,
    consumer: Arc<KafkaConsumer>,
    // Last, so that on a plain drop the clients above go before the broker they talk to.
    broker: Option<EmbeddedBroker>,
}

impl RunningAgent {
    /// The address the HTTP API listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR`, the prefix of every API URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// The bootstrap servers in use: the configured ones, or the embedded broker's.
    pub fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
    }

    /// Resolves once the agent is stopping: after `shutdown`, or when a background task ended
    /// on its own (a failure, already logged), which stops the rest too.
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await
    }

    /// Stops gracefully: the HTTP server stops accepting and finishes its requests, the relay
    /// finishes and settles its round, the consumer commits what it handled. Work still running
    /// after the grace period is abandoned (it is redone after a restart: the outbox and the
    /// uncommitted offsets still hold it). Then the Kafka clients, the pool and the embedded
    /// broker are closed.
    pub async fn shutdown(self) {
        let RunningAgent {
            db,
            shutdown,
            cancel_on_drop,
            tasks,
            grace,
            producer,
            consumer,
            broker,
            ..
        } = self;
        tracing::info!("stopping the agent");
        drop(cancel_on_drop);
        shutdown.cancel();

        stop_tasks(tasks, grace).await;
        release_clients(Some(producer), consumer, db, broker).await;
        tracing::info!("agent stopped");
    }
}

/// How the supervised tasks name the agent when one of them stops it.
const AGENT: &str = "the agent";

impl RunningService for RunningAgent {
    fn stopped(&self) -> impl Future<Output = ()> {
        RunningAgent::stopped(self)
    }

    fn shutdown(self) -> impl Future<Output = ()> {
        RunningAgent::shutdown(self)
    }
}
