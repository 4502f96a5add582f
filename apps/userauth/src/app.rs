//! Start-up and shutdown: connects and migrates the database, reaches (or starts) the broker,
//! and runs the token-usage consumer, the pruning sweep and the HTTP API under one cancellation
//! token.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::FutureExt as _;
use rand::RngCore as _;
use sea_orm::DatabaseConnection;
use smartflow_bus::{ConsumerConfig, ConsumerRunner, Metrics};
use smartflow_domain::route::check_sql_identifier;
use smartflow_domain::ServiceRoute;
use smartflow_kafka::{ensure_topics, wait_for_broker, EmbeddedBroker, KafkaConfig, KafkaConsumer};
use smartflow_storage::connect::{redact, validate_url};
use smartflow_storage::{connect, ConnectConfig, StorageError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{UserauthConfig, MIN_JWT_SECRET_BYTES};
use crate::events::{CONSUMER_GROUP, INBOX_CONSUMER, SUBSCRIBED_EVENT_TYPES};
use crate::http;
use crate::jwt::AccessTokens;
use crate::passwords::PasswordHasher;
use crate::service::{AuthService, AuthSettings};
use crate::subscription::SubscribedEvents;
use crate::usage;

const DATABASE_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How often expired blacklist entries and refresh tokens are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// The userauth service. [`Userauth::start`] brings it up in this process; `main` is a thin
/// wrapper around it, and tests call it directly.
pub struct Userauth;

impl Userauth {
    /// Starts everything, each step failing with a clear message before anything runs in the
    /// background: configuration, database (connected, migrated), broker (reached or started,
    /// the agent topic present), HTTP listener. Then the consumer, the sweep and the HTTP server
    /// are spawned.
    pub async fn start(config: UserauthConfig) -> anyhow::Result<RunningUserauth> {
        tracing::info!(?config, "starting userauth");
        // Checked up front: a bad topic must fail start-up, not the consumer later.
        ServiceRoute::new("agent", "agent_outbox", &config.agent_topic, CONSUMER_GROUP)
            .with_context(|| {
                format!(
                    "SMARTFLOW_AGENT_TOPIC `{}` is not a usable topic",
                    config.agent_topic
                )
            })?;
        let secret = signing_secret(&config)?;
        let passwords = PasswordHasher::new(
            config.password_hash_memory_kib,
            config.password_hash_iterations,
        )
        .map_err(|e| anyhow::anyhow!("{e}: check SMARTFLOW_PASSWORD_HASH_*"))?;

        let db = connect_database(&config).await?;
        smartflow_migrations::run(&db)
            .await
            .context("running the database migrations")?;

        let (kafka, broker) = prepare_broker(&config).await?;
        let consumer = Arc::new(
            KafkaConsumer::new(&kafka, CONSUMER_GROUP, &[config.agent_topic.as_str()])
                .context("creating the Kafka consumer")?,
        );
        let metrics = Arc::new(Metrics::default());
        let runner = ConsumerRunner::for_subscriber(
            db.clone(),
            INBOX_CONSUMER,
            usage::registry().context("registering the event handlers")?,
            Arc::new(SubscribedEvents::new(
                consumer.clone(),
                SUBSCRIBED_EVENT_TYPES,
            )),
            ConsumerConfig::default(),
            metrics.clone(),
        )
        .context("building the consumer")?;

        let service = AuthService::new(
            db.clone(),
            AuthSettings {
                access_tokens: AccessTokens::new(&secret, config.access_token_ttl()),
                passwords,
                refresh_token_ttl: config.refresh_token_ttl(),
                default_token_quota: config.default_token_quota,
            },
        );

        let listener = TcpListener::bind(config.http_addr).await.with_context(|| {
            format!("cannot listen on SMARTFLOW_HTTP_ADDR {}", config.http_addr)
        })?;
        let local_addr = listener
            .local_addr()
            .context("reading the HTTP listener's address")?;

        let shutdown = CancellationToken::new();
        let server = axum::serve(listener, http::router(service.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let tasks = vec![
            supervise("consumer", &shutdown, runner.run(shutdown.clone())),
            supervise("prune", &shutdown, prune(service.clone(), shutdown.clone())),
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
            agent_topic = %config.agent_topic,
            "userauth started"
        );
        Ok(RunningUserauth {
            local_addr,
            db,
            service,
            kafka_brokers: kafka.brokers.clone(),
            metrics,
            cancel_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            tasks,
            grace: config.shutdown_grace(),
            consumer,
            broker,
        })
    }
}

/// A started userauth. Stop it with [`RunningUserauth::shutdown`]; dropping it cancels the
/// background work without waiting for it.
pub struct RunningUserauth {
    local_addr: SocketAddr,
    db: DatabaseConnection,
    service: AuthService,
    kafka_brokers: String,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    cancel_on_drop: DropGuard,
    tasks: Vec<Task>,
    grace: Duration,
    consumer: Arc<KafkaConsumer>,
    // Last, so that on a plain drop the client above goes before the broker it talks to.
    broker: Option<EmbeddedBroker>,
}

struct Task {
    name: &'static str,
    handle: JoinHandle<()>,
}

impl RunningUserauth {
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

    /// The use cases, as the HTTP API calls them.
    pub fn service(&self) -> &AuthService {
        &self.service
    }

    /// The bootstrap servers in use: the configured ones, or the embedded broker's.
    pub fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
    }

    /// The consumer's counters (applied, duplicates, dead, ...).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Resolves once userauth is stopping: after `shutdown`, or when a background task ended on
    /// its own (a failure, already logged), which stops the rest too.
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await
    }

    /// Stops gracefully: the HTTP server finishes its requests, the consumer commits what it
    /// applied; work still running after the grace period is abandoned (uncommitted events are
    /// delivered again after a restart). Then the Kafka client, the pool and the embedded broker
    /// are closed.
    pub async fn shutdown(self) {
        let RunningUserauth {
            db,
            shutdown,
            cancel_on_drop,
            mut tasks,
            grace,
            consumer,
            broker,
            ..
        } = self;
        tracing::info!("stopping userauth");
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
        tracing::info!("userauth stopped");
    }
}

/// The configured signing secret, or a random one with a warning when none is configured.
fn signing_secret(config: &UserauthConfig) -> anyhow::Result<Vec<u8>> {
    match config.jwt_secret.as_deref() {
        Some(secret) if secret.len() >= MIN_JWT_SECRET_BYTES => Ok(secret.as_bytes().to_vec()),
        Some(_) => bail!("SMARTFLOW_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes"),
        None => {
            tracing::warn!(
                "SMARTFLOW_JWT_SECRET is not set: signing with a random secret, so access tokens \
                 stop working at restart and no other instance can verify them"
            );
            let mut secret = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            Ok(secret)
        }
    }
}

/// Deletes expired blacklist entries and refresh tokens now and every `PRUNE_INTERVAL`.
async fn prune(service: AuthService, shutdown: CancellationToken) {
    loop {
        match service.prune_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "pruned expired tokens"),
            Err(e) => tracing::warn!(error = %e, "pruning expired tokens failed; will try again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// Runs one long-lived part of userauth; if it ends before shutdown was asked for, or panics,
/// everything stops, rather than running half a service that looks healthy.
fn supervise<F>(name: &'static str, shutdown: &CancellationToken, work: F) -> Task
where
    F: Future<Output = ()> + Send + 'static,
{
    let shutdown = shutdown.clone();
    let handle = tokio::spawn(async move {
        let outcome = AssertUnwindSafe(work).catch_unwind().await;
        match (outcome.is_err(), shutdown.is_cancelled()) {
            (true, _) => tracing::error!(task = name, "panicked; stopping userauth"),
            (false, false) => tracing::error!(task = name, "ended on its own; stopping userauth"),
            (false, true) => return,
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
async fn connect_database(config: &UserauthConfig) -> anyhow::Result<DatabaseConnection> {
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

/// Reaches the configured cluster and makes sure the agent topic exists (so start order does not
/// matter), or starts an embedded broker with the topic created.
async fn prepare_broker(
    config: &UserauthConfig,
) -> anyhow::Result<(KafkaConfig, Option<EmbeddedBroker>)> {
    let topic = config.agent_topic.as_str();
    let (mut kafka, broker) = match config.brokers() {
        None => {
            let broker = tokio::task::spawn_blocking(|| EmbeddedBroker::start(1))
                .await
                .context("starting the embedded Kafka broker")?
                .context("starting the embedded Kafka broker")?;
            broker
                .create_topic(topic, config.kafka_partitions)
                .with_context(|| format!("creating topic `{topic}` on the embedded broker"))?;
            tracing::warn!(
                bootstrap = %broker.bootstrap_servers(),
                "SMARTFLOW_KAFKA_BROKERS is not set: an embedded broker runs in this process, and \
                 only an agent pointed at it delivers token usage here"
            );
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
                &[(topic, config.kafka_partitions)],
                config.kafka_replication,
            )
            .await
            .with_context(|| format!("making sure Kafka topic `{topic}` exists"))?;
            (kafka, None)
        }
    };
    kafka.client_id = "smartflow-userauth".to_owned();
    Ok((kafka, broker))
}
