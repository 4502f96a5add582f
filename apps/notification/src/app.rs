//! Start-up and shutdown: connects and migrates the database, reaches (or starts) the broker,
//! and runs the relay, the consumer, the dispatcher and the HTTP API under one cancellation
//! token.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use sea_orm::DatabaseConnection;
use smartflow_bus::{ConsumerRunner, EventBus, PublishConfig, Relay};
use smartflow_kafka::{EmbeddedBroker, KafkaConsumer, KafkaProducer};
use smartflow_service::{
    connect_with_retries, prepare_broker, release_clients, stop_tasks, supervise, BrokerSettings,
    DatabaseSettings, RunningService, Task,
};
use smartflow_storage::connect::redact;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::NotificationConfig;
use crate::dispatch::Dispatcher;
use crate::events::{self, Channel, OUTBOX_TABLE};
use crate::handler::{self, RecordNotification};
use crate::http::{self, ApiState};
use crate::provider::{FeishuConfig, FeishuWebhook, Providers, TargetPolicy};

/// How the supervised tasks name the service when one of them stops it.
const SERVICE: &str = "the service";

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
        config
            .reliability
            .validate()
            .context("the reliability settings do not fit together")?;
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

        let db = connect_with_retries(DatabaseSettings {
            url: &config.database_url,
            schema: config.database_schema.as_deref(),
            wait_secs: config.database_wait_secs,
            limits: config.reliability.session_limits(),
        })
        .await?;
        smartflow_migrations::run_migrator::<smartflow_migrations::notification::Migrator>(&db)
            .await
            .context("running the database migrations")?;

        let (mut kafka, broker) = prepare_broker(BrokerSettings {
            brokers: config.brokers(),
            topic: &config.topic,
            partitions: config.kafka_partitions,
            replication: config.kafka_replication,
            wait_secs: config.broker_wait_secs,
            client_id: "smartflow-notification",
        })
        .await?;
        config
            .reliability
            .apply_to_kafka(&mut kafka, "notification");

        let bus = EventBus::new(events::SERVICE, routes, PublishConfig::default())
            .context("building the event bus")?;
        let producer = KafkaProducer::new(&kafka).context("creating the Kafka producer")?;
        let relay = Relay::new(
            db.clone(),
            OUTBOX_TABLE,
            Arc::new(producer.clone()),
            config.reliability.relay(),
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
        let handlers = handler::registry(RecordNotification {
            targets: targets.clone(),
            max_attempts: config.max_attempts,
        })
        .context("registering the event handlers")?;
        let runner = ConsumerRunner::for_route(
            db.clone(),
            &route,
            handlers,
            consumer.clone(),
            config.reliability.consumer(),
            bus.metrics().clone(),
        )
        .context("building the consumer")?
        .wake_on_commit(dispatcher.wake_signal());

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
            supervise("relay", SERVICE, &shutdown, relay.run(shutdown.clone())),
            supervise("consumer", SERVICE, &shutdown, runner.run(shutdown.clone())),
            supervise(
                "dispatcher",
                SERVICE,
                &shutdown,
                dispatcher.clone().run(shutdown.clone()),
            ),
            supervise("http", SERVICE, &shutdown, async move {
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
            tasks,
            grace,
            producer,
            consumer,
            broker,
            ..
        } = self;
        tracing::info!("stopping the notification service");
        drop(cancel_on_drop);
        shutdown.cancel();
        stop_tasks(tasks, grace).await;
        release_clients(Some(producer), consumer, db, broker).await;
        tracing::info!("notification service stopped");
    }
}

impl RunningService for RunningNotification {
    fn stopped(&self) -> impl Future<Output = ()> {
        RunningNotification::stopped(self)
    }

    fn shutdown(self) -> impl Future<Output = ()> {
        RunningNotification::shutdown(self)
    }
}
