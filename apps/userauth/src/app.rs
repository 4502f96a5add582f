//! Start-up and shutdown: connects and migrates the database, reaches (or starts) the broker,
//! and runs the token-usage consumer, the pruning sweep and the HTTP API under one cancellation
//! token.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rand::RngCore as _;
use sea_orm::DatabaseConnection;
use smartflow_bus::{ConsumerRunner, Metrics};
use smartflow_domain::ServiceRoute;
use smartflow_kafka::{EmbeddedBroker, KafkaConsumer};
use smartflow_service::{
    connect_with_retries, prepare_broker, release_clients, stop_tasks, supervise, BrokerSettings,
    DatabaseSettings, RunningService, Task,
};
use smartflow_storage::connect::redact;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::{UserauthConfig, MIN_JWT_SECRET_BYTES};
use crate::events::{CONSUMER_GROUP, INBOX_CONSUMER, SUBSCRIBED_EVENT_TYPES};
use crate::http;
use crate::jwt::AccessTokens;
use crate::passwords::PasswordHasher;
use crate::service::{AuthService, AuthSettings};
use crate::usage;

/// How the supervised tasks name userauth when one of them stops it.
const USERAUTH: &str = "userauth";
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
        config
            .reliability
            .validate()
            .context("the reliability settings do not fit together")?;
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

        let db = connect_with_retries(DatabaseSettings {
            url: &config.database_url,
            schema: config.database_schema.as_deref(),
            wait_secs: config.database_wait_secs,
            limits: config.reliability.session_limits(),
        })
        .await?;
        smartflow_migrations::run_migrator::<smartflow_migrations::userauth::Migrator>(&db)
            .await
            .context("running the database migrations")?;

        // The agent topic is made sure of here too, so start order does not matter.
        let (mut kafka, broker) = prepare_broker(BrokerSettings {
            brokers: config.brokers(),
            topic: &config.agent_topic,
            partitions: config.kafka_partitions,
            replication: config.kafka_replication,
            wait_secs: config.broker_wait_secs,
            client_id: "smartflow-userauth",
        })
        .await?;
        config.reliability.apply_to_kafka(&mut kafka, "userauth");
        if let Some(broker) = &broker {
            tracing::warn!(
                bootstrap = %broker.bootstrap_servers(),
                "SMARTFLOW_KAFKA_BROKERS is not set: an embedded broker runs in this process, and \
                 only an agent pointed at it delivers token usage here"
            );
        }
        let consumer = Arc::new(
            KafkaConsumer::new(&kafka, CONSUMER_GROUP, &[config.agent_topic.as_str()])
                .context("creating the Kafka consumer")?,
        );
        let metrics = Arc::new(Metrics::default());
        let runner = ConsumerRunner::for_subscriber(
            db.clone(),
            INBOX_CONSUMER,
            usage::registry().context("registering the event handlers")?,
            consumer.clone(),
            config.reliability.consumer(),
            metrics.clone(),
        )
        .context("building the consumer")?
        .only_event_types(SUBSCRIBED_EVENT_TYPES);

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
        let server = axum::serve(listener, http::router(service.clone(), metrics.clone()))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let tasks = vec![
            supervise(
                "consumer",
                USERAUTH,
                &shutdown,
                runner.run(shutdown.clone()),
            ),
            supervise(
                "prune",
                USERAUTH,
                &shutdown,
                prune(service.clone(), shutdown.clone()),
            ),
            supervise("http", USERAUTH, &shutdown, async move {
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
            tasks,
            grace,
            consumer,
            broker,
            ..
        } = self;
        tracing::info!("stopping userauth");
        drop(cancel_on_drop);
        shutdown.cancel();
        stop_tasks(tasks, grace).await;
        release_clients(None, consumer, db, broker).await;
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

impl RunningService for RunningUserauth {
    fn stopped(&self) -> impl Future<Output = ()> {
        RunningUserauth::stopped(self)
    }

    fn shutdown(self) -> impl Future<Output = ()> {
        RunningUserauth::shutdown(self)
    }
}
