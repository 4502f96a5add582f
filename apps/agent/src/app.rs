//! Start-up and shutdown: connects and migrates the database, reaches (or starts) the broker,
//! and runs the relay, the consumer and the HTTP API under one cancellation token.

use smartflow_userauth::client::UserauthClient;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::FutureExt as _;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use smartflow_bus::{ConsumerConfig, ConsumerRunner, EventBus, PublishConfig, Relay, RelayConfig};
use smartflow_domain::route::check_sql_identifier;
use smartflow_kafka::{
    ensure_topics, wait_for_broker, EmbeddedBroker, KafkaConfig, KafkaConsumer, KafkaProducer,
};
use smartflow_storage::connect::{redact, validate_url};
use smartflow_storage::outbox::OutboxTable;
use smartflow_storage::{connect, ConnectConfig, StorageError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::AgentConfig;
use crate::events::{self, OUTBOX_TABLE};
use crate::handlers;
use crate::http::{self, ApiState};

/// Pause between two attempts to reach an unreachable database at start-up.
const DATABASE_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long the agent waits for userauth's verdict on a token.
const USERAUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stop waits for the producer to deliver what the relay handed it.
const PRODUCER_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
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
        if config.max_content_chars == 0 {
            bail!("SMARTFLOW_MAX_CONTENT_CHARS must be at least 1");
        }
        let routes = events::routes(&config.topic, &config.notification_topic)
            .with_context(|| format!("SMARTFLOW_TOPIC `{}` is not a usable topic", config.topic))?;
        let route = events::agent_route(&config.topic)?;

        let db = connect_database(&config).await?;
        smartflow_migrations::run(&db)
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

        let (kafka, broker) = prepare_broker(&config).await?;

        let bus = EventBus::new(
            routes,
            PublishConfig {
                max_payload_bytes: config.max_payload_bytes,
                ..PublishConfig::default()
            },
        )
        .context("building the event bus")?;
        let producer = KafkaProducer::new(&kafka).context("creating the Kafka producer")?;
        let relay = Relay::new(
            db.clone(),
            OUTBOX_TABLE,
            Arc::new(producer.clone()),
            RelayConfig::default(),
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
            handlers::registry(bus.clone()).context("registering the event handlers")?,
            consumer.clone(),
            ConsumerConfig::default(),
            bus.metrics().clone(),
        )
        .context("building the consumer")?;

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
            supervise("relay", &shutdown, relay.run(shutdown.clone())),
            supervise("consumer", &shutdown, runner.run(shutdown.clone())),
            supervise("http", &shutdown, async move {
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

struct Task {
    name: &'static str,
    handle: JoinHandle<()>,
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
            mut tasks,
            grace,
            producer,
            consumer,
            broker,
            ..
        } = self;
        tracing::info!("stopping the agent");
        drop(cancel_on_drop);
        shutdown.cancel();

        let all = futures::future::join_all(tasks.iter_mut().map(|t| &mut t.handle));
        if tokio::time::timeout(grace, all).await.is_err() {
            for task in &tasks {
                if !task.handle.is_finished() {
                    tracing::warn!(
                        task = task.name,
                        grace_secs = grace.as_secs(),
                        "did not stop in time; abandoning it"
                    );
                    task.handle.abort();
                }
            }
            for task in tasks {
                // An aborted task answers at once; its result says nothing more worth logging.
                let _ = task.handle.await;
            }
        }

        if let Err(e) = producer.flush(PRODUCER_FLUSH_TIMEOUT).await {
            tracing::warn!(error = %e, "the Kafka producer did not flush");
        }
        // Dropping librdkafka clients joins their threads, so it happens off the runtime threads.
        blocking_drop(producer).await;
        match Arc::try_unwrap(consumer) {
            Ok(consumer) => consumer.close().await,
            Err(still_shared) => blocking_drop(still_shared).await,
        }
        if let Err(e) = db.close().await {
            tracing::warn!(error = %e, "closing the database pool failed");
        }
        if let Some(broker) = broker {
            blocking_drop(broker).await;
        }
        tracing::info!("agent stopped");
    }
}

/// Runs one long-lived part of the agent. If it ends before shutdown was asked for, or panics,
/// the whole agent stops: half an agent (say, accepting messages nobody relays) is worse than
/// none, because it looks healthy.
fn supervise<F>(name: &'static str, shutdown: &CancellationToken, work: F) -> Task
where
    F: Future<Output = ()> + Send + 'static,
{
    let shutdown = shutdown.clone();
    let handle = tokio::spawn(async move {
        let outcome = AssertUnwindSafe(work).catch_unwind().await;
        match (outcome.is_err(), shutdown.is_cancelled()) {
            (true, _) => tracing::error!(task = name, "panicked; stopping the agent"),
            (false, false) => tracing::error!(task = name, "ended on its own; stopping the agent"),
            (false, true) => {
                tracing::debug!(task = name, "stopped");
                return;
            }
        }
        shutdown.cancel();
    });
    Task { name, handle }
}

async fn blocking_drop<T: Send + 'static>(value: T) {
    if let Err(e) = tokio::task::spawn_blocking(move || drop(value)).await {
        tracing::warn!(error = %e, "releasing a client failed");
    }
}

/// Validates the URL, then connects, retrying an unreachable server (not a SQLite file, whose
/// failures do not go away by waiting) for up to `SMARTFLOW_DATABASE_WAIT_SECS`.
async fn connect_database(config: &AgentConfig) -> anyhow::Result<DatabaseConnection> {
    let url = &config.database_url;
    validate_url(url).context("SMARTFLOW_DATABASE_URL is malformed")?;
    let is_postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut connect_config = ConnectConfig::new(url.clone());
    if let Some(schema) = &config.database_schema {
        if !is_postgres {
            bail!("SMARTFLOW_DATABASE_SCHEMA applies to PostgreSQL only, but the database URL is not a postgres:// URL");
        }
        // The schema name ends up in a `SET search_path` statement.
        check_sql_identifier("database schema", schema)
            .context("SMARTFLOW_DATABASE_SCHEMA is not a usable schema name")?;
        connect_config.pg_schema = Some(schema.clone());
    }
    if url.starts_with("sqlite:") {
        // A SQLite file's failures (missing directory, permissions) do not go away by waiting.
        return connect(&connect_config)
            .await
            .context("connecting to the database");
    }
    let deadline = Instant::now() + config.database_wait();
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        // sea-orm hands `connect_timeout` to sqlx as the acquire timeout and then overrides it
        // with `acquire_timeout` (30 s), so one attempt at an unreachable server would wait that
        // long; bounding the attempt here keeps the retries (and their warnings) coming.
        let budget = if attempt == 1 {
            connect_config.connect_timeout
        } else {
            connect_config
                .connect_timeout
                .min(deadline.saturating_duration_since(Instant::now()))
        };
        let failure = match tokio::time::timeout(budget, connect(&connect_config)).await {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(StorageError::Connect { source, .. })) => source.to_string(),
            Ok(Err(e)) => return Err(e).context("connecting to the database"),
            Err(_) => format!("no answer within {} ms", budget.as_millis()),
        };
        if Instant::now() + DATABASE_RETRY_PAUSE >= deadline {
            bail!(
                "cannot connect to the database at {} within {} s (check SMARTFLOW_DATABASE_URL, \
                 or raise SMARTFLOW_DATABASE_WAIT_SECS): {failure}",
                redact(url),
                config.database_wait_secs
            );
        }
        tracing::warn!(
            database = %redact(url),
            attempt,
            error = %failure,
            "database not reachable yet; retrying"
        );
        tokio::time::sleep(DATABASE_RETRY_PAUSE).await;
    }
}

/// Reaches the configured cluster and makes sure the topic exists, or starts the embedded
/// broker with the topic created. The embedded broker is returned so it lives as long as the
/// agent.
async fn prepare_broker(
    config: &AgentConfig,
) -> anyhow::Result<(KafkaConfig, Option<EmbeddedBroker>)> {
    let (mut kafka, broker) = match config.brokers() {
        None => {
            // Starting it waits for its thread to come up; that wait stays off the runtime.
            let broker = tokio::task::spawn_blocking(|| EmbeddedBroker::start(1))
                .await
                .context("starting the embedded Kafka broker")?
                .context("starting the embedded Kafka broker")?;
            // The mock cluster cannot serve CreateTopics, so the topic is made directly.
            broker
                .create_topic(&config.topic, config.kafka_partitions)
                .with_context(|| {
                    format!("creating topic `{}` on the embedded broker", config.topic)
                })?;
            tracing::info!(bootstrap = %broker.bootstrap_servers(), "embedded Kafka broker started");
            (KafkaConfig::new(broker.bootstrap_servers()), Some(broker))
        }
        Some(brokers) => {
            let kafka = KafkaConfig::new(brokers);
            tracing::info!(%brokers, wait_secs = config.broker_wait_secs, "connecting to Kafka");
            wait_for_broker(&kafka, config.broker_wait())
                .await
                .with_context(|| {
                    format!(
                    "cannot reach Kafka at {brokers} within {} s (check SMARTFLOW_KAFKA_BROKERS, \
                     or raise SMARTFLOW_BROKER_WAIT_SECS)",
                    config.broker_wait_secs
                )
                })?;
            ensure_topics(
                &kafka,
                &[(config.topic.as_str(), config.kafka_partitions)],
                config.kafka_replication,
            )
            .await
            .with_context(|| format!("creating Kafka topic `{}`", config.topic))?;
            (kafka, None)
        }
    };
    kafka.client_id = "smartflow-agent".to_owned();
    Ok((kafka, broker))
}
