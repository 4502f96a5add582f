//! Start-up and shutdown: connects and migrates the database, reaches (or starts) the broker,
//! and runs the relay, the consumer, the dispatcher and the HTTP API under one cancellation
//! token.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures::FutureExt as _;
use sea_orm::DatabaseConnection;
use smartflow_bus::{ConsumerConfig, ConsumerRunner, EventBus, PublishConfig, Relay, RelayConfig};
use smartflow_domain::route::check_sql_identifier;
use smartflow_domain::InboundTransport;
use smartflow_kafka::{
    ensure_topics, wait_for_broker, EmbeddedBroker, KafkaConfig, KafkaConsumer, KafkaProducer,
};
use smartflow_storage::connect::{redact, validate_url};
use smartflow_storage::{connect, ConnectConfig, StorageError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::NotificationConfig;
use crate::dispatch::Dispatcher;
use crate::events::{self, Channel, OUTBOX_TABLE};
use crate::handler::{self, RecordNotification};
use crate::http::{self, ApiState};
use crate::provider::{FeishuConfig, FeishuWebhook, Providers, TargetPolicy};
use crate::wake_on_commit::WakeOnCommit;

const DATABASE_RETRY_PAUSE: Duration = Duration::from_secs(1);
const PRODUCER_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The notification service. [`Notification::start`] brings it up in this process; `main` is a
/// thin wrapper around it, and tests call it directly.
pub struct Notification;

impl Notification {
    /// Starts everything, in the order that lets each step fail with a clear message before
    /// anything runs in the background: configuration, database (connected, migrated), broker
    /// (reached or started, topic created), bus, provider, HTTP listener. Only then are the
    /// relay, the consumer, the dispatcher and the HTTP server spawned.
    pub async fn start(config: NotificationConfig) -> anyhow::Result<RunningNotification> {
        tracing::info!(?config, "starting the notification service");
        config.check().map_err(|e| anyhow!(e))?;
        let routes = events::routes(&config.topic).with_context(|| {
            format!(
                "SMARTFLOW_NOTIFICATION_TOPIC `{}` is not a usable topic",
                config.topic
            )
        })?;
        let route = events::route(&config.topic)?;
        let targets =
            TargetPolicy::new(config.allowed_targets(), config.feishu_webhook_url.clone())
                .context("SMARTFLOW_FEISHU_ALLOWED_TARGETS / SMARTFLOW_FEISHU_WEBHOOK_URL")?;
        let feishu = FeishuWebhook::new(FeishuConfig {
            targets: targets.clone(),
            secret: config.secret(),
            timeout: config.feishu_timeout(),
        })
        .map_err(|e| anyhow!("building the Feishu provider: {e}"))?;
        let providers = Providers::default().with(Channel::Feishu, Arc::new(feishu));

        let db = connect_database(&config).await?;
        smartflow_migrations::run(&db)
            .await
            .context("running the database migrations")?;

        let (kafka, broker) = prepare_broker(&config).await?;

        let bus =
            EventBus::new(routes, PublishConfig::default()).context("building the event bus")?;
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

        let dispatcher = Dispatcher::new(db.clone(), providers, config.dispatch())
            .context("building the dispatcher")?;
        let consumer = Arc::new(
            KafkaConsumer::new(&kafka, &route.consumer_group, &[route.topic.as_str()])
                .context("creating the Kafka consumer")?,
        );
        let transport: Arc<dyn InboundTransport> = Arc::new(WakeOnCommit::new(
            consumer.clone(),
            dispatcher.wake_signal(),
        ));
        let handlers = handler::registry(RecordNotification {
            targets: targets.clone(),
            max_attempts: config.max_attempts,
        })
        .context("registering the event handlers")?;
        let runner = ConsumerRunner::for_route(
            db.clone(),
            &route,
            handlers,
            transport,
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
        let router = http::router(ApiState {
            db: db.clone(),
            bus: bus.clone(),
            targets,
        });

        let shutdown = CancellationToken::new();
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let tasks = vec![
            supervise("relay", &shutdown, relay.run(shutdown.clone())),
            supervise("consumer", &shutdown, runner.run(shutdown.clone())),
            supervise(
                "dispatcher",
                &shutdown,
                dispatcher.clone().run(shutdown.clone()),
            ),
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
            "notification service started"
        );
        Ok(RunningNotification {
            local_addr,
            db,
            bus,
            dispatcher,
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

/// A started notification service. Stop it with [`RunningNotification::shutdown`]; merely
/// dropping it cancels the background work without waiting for it.
pub struct RunningNotification {
    local_addr: SocketAddr,
    db: DatabaseConnection,
    bus: EventBus,
    dispatcher: Dispatcher,
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

impl RunningNotification {
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

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The bootstrap servers of the embedded broker, when one runs.
    pub fn embedded_brokers(&self) -> Option<String> {
        self.broker.as_ref().map(EmbeddedBroker::bootstrap_servers)
    }

    /// Resolves once the service is stopping: after `shutdown`, or when a background task
    /// ended on its own (a failure, already logged), which stops the rest too.
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await
    }

    /// Stops gracefully: the HTTP server finishes its requests, the relay settles its round,
    /// the consumer commits what it handled, the dispatcher finishes its provider calls and
    /// records their results. Work still running after the grace period is abandoned; what it
    /// held is redone after a restart (outbox rows, uncommitted offsets, leases that run out).
    pub async fn shutdown(self) {
        let RunningNotification {
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
        tracing::info!("stopping the notification service");
        drop(cancel_on_drop);
        shutdown.cancel();
        let all = futures::future::join_all(tasks.iter_mut().map(|t| &mut t.handle));
        if tokio::time::timeout(grace, all).await.is_err() {
            for task in &tasks {
                if !task.handle.is_finished() {
                    tracing::warn!(task = task.name, "did not stop in time; abandoning it");
                    task.handle.abort();
                }
            }
            for task in tasks {
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
        tracing::info!("notification service stopped");
    }
}

/// Runs one long-lived part of the service. If it ends before shutdown was asked for, or
/// panics, the whole service stops: half a service looks healthy while doing nothing.
fn supervise<F>(name: &'static str, shutdown: &CancellationToken, work: F) -> Task
where
    F: Future<Output = ()> + Send + 'static,
{
    let shutdown = shutdown.clone();
    let handle = tokio::spawn(async move {
        let outcome = AssertUnwindSafe(work).catch_unwind().await;
        match (outcome.is_err(), shutdown.is_cancelled()) {
            (true, _) => tracing::error!(task = name, "panicked; stopping the service"),
            (false, false) => {
                tracing::error!(task = name, "ended on its own; stopping the service")
            }
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

/// Validates the URL, then connects, retrying an unreachable server (not a SQLite file) for up
/// to `SMARTFLOW_DATABASE_WAIT_SECS`.
async fn connect_database(config: &NotificationConfig) -> anyhow::Result<DatabaseConnection> {
    let url = &config.database_url;
    validate_url(url).context("SMARTFLOW_DATABASE_URL is malformed")?;
    let is_postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut connect_config = ConnectConfig::new(url.clone());
    if let Some(schema) = &config.database_schema {
        if !is_postgres {
            bail!("SMARTFLOW_DATABASE_SCHEMA applies to PostgreSQL only, but the database URL is not a postgres:// URL");
        }
        check_sql_identifier("database schema", schema)
            .context("SMARTFLOW_DATABASE_SCHEMA is not a usable schema name")?;
        connect_config.pg_schema = Some(schema.clone());
    }
    let retry = !url.starts_with("sqlite:");
    let deadline = Instant::now() + config.database_wait();
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        match connect(&connect_config).await {
            Ok(db) => return Ok(db),
            Err(StorageError::Connect { url: shown, source })
                if retry && Instant::now() + DATABASE_RETRY_PAUSE < deadline =>
            {
                tracing::warn!(database = %shown, attempt, error = %source, "database not reachable yet; retrying");
                tokio::time::sleep(DATABASE_RETRY_PAUSE).await;
            }
            Err(e) => return Err(e).context("connecting to the database"),
        }
    }
}

/// Reaches the configured cluster and makes sure the topic exists, or starts the embedded
/// broker with the topic created.
async fn prepare_broker(
    config: &NotificationConfig,
) -> anyhow::Result<(KafkaConfig, Option<EmbeddedBroker>)> {
    let (mut kafka, broker) = match config.brokers() {
        None => {
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
            (KafkaConfig::new(broker.bootstrap_servers()), Some(broker))
        }
        Some(brokers) => {
            let kafka = KafkaConfig::new(brokers);
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
    kafka.client_id = "smartflow-notification".to_owned();
    Ok((kafka, broker))
}
