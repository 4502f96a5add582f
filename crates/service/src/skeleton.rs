//! The one start-up and shutdown of every service: database (validated, connected with
//! retries) -> migrations -> broker (reached or started, topic created) -> bus -> consumers ->
//! relay (built once the consumers say which of the outbox's events they mark) -> HTTP
//! listener (and the admin one, when configured), served within the HTTP limits -> supervised
//! tasks, and a [`Running`] handle whose shutdown stops
//! the tasks and then releases the clients in the order that loses nothing.
//!
//! A service calls [`ServiceStart::begin`] with its [`ServicePlan`], builds what is its own from
//! the database and the bus (handlers, workers, its HTTP routes), adds its consumers and tasks,
//! and ends with [`ServiceStart::serve`]. Each step fails with a message naming the setting to
//! check before anything runs in the background. This is the one place that calls the bus's
//! constructors.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use smartflow_bus::{
    ConsumerConfig, ConsumerRunner, EventBus, HandlerRegistry, InboxRetention, Metrics,
    PublishConfig, Relay, RelayConfig,
};
use smartflow_domain::{KeyOrder, RouteRegistry, ServiceRoute};
use smartflow_kafka::{EmbeddedBroker, KafkaConfig, KafkaConsumer, KafkaProducer};
use smartflow_storage::connect::redact;
use smartflow_storage::inbox::InboxTable;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::admin::AdminTables;
use crate::broker::prepare_broker;
use crate::credentials::{ServiceCredentials, SERVICE_TOKENS_SETTING};
use crate::database::connect_with_retries;
use crate::endpoints::{with_service_endpoints, Gauges, Observed};
use crate::http_server::{serve_http, HttpLimits};
use crate::openapi::{self, OpenApiRouter};
use crate::run::RunningService;
use crate::settings::ServiceSettings;
use crate::tasks::{release_clients, stop_tasks, supervise, Task};

/// The service's migrations: creates what is missing, safe to run concurrently and repeatedly.
pub type Migrations = for<'a> fn(&'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>>;

/// What a service tells the skeleton before anything starts.
pub struct ServicePlan<'a> {
    /// The service's name: in logs, as the owner of the outbox its bus publishes into (its
    /// routes' service), in its Kafka clients' id `smartflow-{name}`, and with static
    /// membership at the end of its consumer's instance id.
    pub name: &'static str,
    pub settings: &'a ServiceSettings,
    /// Where its HTTP API listens (`SMARTFLOW_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// The topic start-up makes sure of: the service's own, or the one it reads.
    pub topic: &'a str,
    /// More topics start-up makes sure of (a service that reads one topic and publishes onto
    /// another).
    pub also_topics: Vec<&'a str>,
    /// The service's outbox, when it publishes: the bus and a relay are built for it.
    pub outbox: Option<OutboxPlan>,
}

impl<'a> ServicePlan<'a> {
    /// A service without an outbox.
    pub fn new(
        name: &'static str,
        settings: &'a ServiceSettings,
        http_addr: SocketAddr,
        topic: &'a str,
    ) -> Self {
        Self {
            name,
            settings,
            http_addr,
            topic,
            also_topics: Vec::new(),
            outbox: None,
        }
    }

    /// Start-up makes sure of `topic` too.
    pub fn also_topic(mut self, topic: &'a str) -> Self {
        self.also_topics.push(topic);
        self
    }

    /// The service publishes by `routes`, into the outbox table of its own route there.
    pub fn with_outbox(mut self, routes: RouteRegistry, publish: PublishConfig) -> Self {
        self.outbox = Some(OutboxPlan { routes, publish });
        self
    }
}

/// A service's outbox: the routes its bus publishes by; its own route names the table the bus
/// writes and the relay sends from.
pub struct OutboxPlan {
    pub routes: RouteRegistry,
    pub publish: PublishConfig,
}

/// How a consumer knows what it already applied.
enum Dedupe {
    /// The service's own route: its outbox rows are marked `consumed`.
    OwnRoute(ServiceRoute),
    /// Another service's topic: deduplicated through this service's inbox as `consumer`.
    Inbox {
        consumer: String,
        group: String,
        topic: String,
    },
}

/// One consumer group a service runs, and the bus features it switches on.
pub struct ConsumerPlan {
    dedupe: Dedupe,
    handlers: HandlerRegistry,
    only_event_types: Option<Vec<String>>,
    only_handled: bool,
    wake_on_commit: Option<Arc<Notify>>,
    inbox_table: Option<String>,
}

impl ConsumerPlan {
    /// The consumer of the service's own route.
    pub fn own_route(route: ServiceRoute, handlers: HandlerRegistry) -> Self {
        Self::with(Dedupe::OwnRoute(route), handlers)
    }

    /// A consumer of another service's `topic` in `group`, deduplicating through the inbox as
    /// `consumer`.
    pub fn inbox(consumer: &str, group: &str, topic: &str, handlers: HandlerRegistry) -> Self {
        let dedupe = Dedupe::Inbox {
            consumer: consumer.to_owned(),
            group: group.to_owned(),
            topic: topic.to_owned(),
        };
        Self::with(dedupe, handlers)
    }

    fn with(dedupe: Dedupe, handlers: HandlerRegistry) -> Self {
        Self {
            dedupe,
            handlers,
            only_event_types: None,
            only_handled: false,
            wake_on_commit: None,
            inbox_table: None,
        }
    }

    /// Deduplicates through the inbox table `table` (created by the service's own migration
    /// with `create_inbox_table`) instead of the default `inbox`.
    pub fn with_inbox(mut self, table: &str) -> Self {
        self.inbox_table = Some(table.to_owned());
        self
    }

    /// Only these event types reach the handlers; the topic's others are skipped.
    pub fn only_event_types<'a>(mut self, event_types: impl IntoIterator<Item = &'a str>) -> Self {
        self.only_event_types = Some(event_types.into_iter().map(str::to_owned).collect());
        self
    }

    /// The owner's consumer takes only the event types its handlers know: the service's other
    /// events are for other services, so its relay leaves their rows `published` (no
    /// consumption deadline, no re-sends) and its consumer skips them.
    pub fn only_handled_event_types(mut self) -> Self {
        self.only_handled = true;
        self
    }

    /// `signal` fires after every batch's commit.
    pub fn wake_on_commit(mut self, signal: Arc<Notify>) -> Self {
        self.wake_on_commit = Some(signal);
        self
    }

    fn group_and_topic(&self) -> (&str, &str) {
        match &self.dedupe {
            Dedupe::OwnRoute(route) => (&route.consumer_group, &route.topic),
            Dedupe::Inbox { group, topic, .. } => (group, topic),
        }
    }
}

/// A service part-way through start-up: connected, migrated, its broker reached and its bus
/// built, nothing running yet.
pub struct ServiceStart {
    name: &'static str,
    http_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    http_limits: HttpLimits,
    credentials: ServiceCredentials,
    topic: String,
    database_url: String,
    grace: Duration,
    db: DatabaseConnection,
    kafka: KafkaConfig,
    consumer_config: ConsumerConfig,
    relay_config: RelayConfig,
    /// How long the consumers' handled inbox entries stay (`None`: kept).
    inbox_retention: Option<Duration>,
    /// The broker is new and empty: the relay sends again what an earlier one got.
    new_broker: bool,
    bus: Option<EventBus>,
    metrics: Arc<Metrics>,
    producer: Option<KafkaProducer>,
    consumers: Vec<Arc<KafkaConsumer>>,
    runners: Vec<ConsumerRunner>,
    extra_tasks: Vec<(&'static str, BoxFuture<'static, ()>)>,
    gauges: Option<Arc<dyn Gauges>>,
    /// The inbox its consumers record other services' events in, for the admin API.
    inbox: Option<InboxTable>,
    shutdown: CancellationToken,
    // Last, so that on a plain drop the clients above go before the broker they talk to.
    broker: Option<EmbeddedBroker>,
}

impl ServiceStart {
    /// Checks the reliability settings, connects to the database, runs the service's
    /// `migrations`, prepares the broker and, for a service with an outbox, builds the bus and
    /// the relay (re-queueing what an earlier broker got but the new, empty one did not).
    pub async fn begin(plan: ServicePlan<'_>, migrations: Migrations) -> anyhow::Result<Self> {
        let ServicePlan {
            name,
            settings,
            http_addr,
            topic,
            also_topics,
            outbox,
        } = plan;
        let reliability = &settings.reliability;
        reliability
            .validate()
            .context("the reliability settings do not fit together")?;
        let credentials = settings
            .credentials()
            .with_context(|| format!("{SERVICE_TOKENS_SETTING} is not usable"))?;
        if settings.admin_addr == Some(http_addr) && http_addr.port() != 0 {
            anyhow::bail!(
                "SMARTFLOW_ADMIN_ADDR {http_addr} is SMARTFLOW_HTTP_ADDR too; give it another address"
            );
        }

        let db = connect_with_retries(settings.database()).await?;
        migrations(&db)
            .await
            .context("running the database migrations")?;

        if let Some(brokers) = settings.brokers() {
            tracing::info!(%brokers, wait_secs = settings.broker_wait_secs, "connecting to Kafka");
        }
        let client_id = format!("smartflow-{name}");
        let topics: Vec<&str> = std::iter::once(topic).chain(also_topics).collect();
        let (mut kafka, broker) = prepare_broker(settings.broker(&topics, &client_id)).await?;
        reliability.apply_to_kafka(&mut kafka, name);
        if let Some(broker) = &broker {
            tracing::info!(bootstrap = %broker.bootstrap_servers(), "embedded Kafka broker started");
        }

        let mut start = Self {
            name,
            http_addr,
            admin_addr: settings.admin_addr,
            http_limits: settings.http,
            credentials,
            topic: topic.to_owned(),
            database_url: settings.database_url.clone(),
            grace: settings.shutdown_grace(),
            db,
            kafka,
            consumer_config: reliability.consumer(),
            inbox_retention: reliability.inbox_retention(),
            // Until its own consumer says what it marks: nothing, so a service that only
            // publishes for others gives its rows up at Kafka's ack instead of re-sending them.
            relay_config: RelayConfig {
                consumed_here: Some(BTreeSet::new()),
                ..reliability.relay()
            },
            new_broker: settings.new_broker || broker.is_some(),
            bus: None,
            metrics: Arc::new(Metrics::for_service(name)),
            producer: None,
            consumers: Vec::new(),
            runners: Vec::new(),
            extra_tasks: Vec::new(),
            gauges: None,
            inbox: None,
            shutdown: CancellationToken::new(),
            broker,
        };
        if let Some(outbox) = outbox {
            // Rows bound for a route that lets a failing event's key go on do not hold back
            // their key while they wait for a retry.
            // Routes that keep their rows for a time of their own.
            start.relay_config.retention.outbox_topics = outbox
                .routes
                .routes()
                .filter_map(|route| Some((route.topic.clone(), route.retention?)))
                .collect();
            start.relay_config.skip_topics = outbox
                .routes
                .routes()
                .filter(|route| route.key_order == KeyOrder::Skip)
                .map(|route| route.topic.clone())
                .collect();
            let producer =
                KafkaProducer::new(&start.kafka).context("creating the Kafka producer")?;
            // One producer for the relay and the bus's direct sends (`Delivery::Direct`).
            let bus = EventBus::new(name, outbox.routes, outbox.publish)
                .context("building the event bus")?
                .with_transport(Arc::new(producer.clone()));
            start.metrics = bus.metrics().clone();
            start.bus = Some(bus);
            start.producer = Some(producer);
        }
        Ok(start)
    }

    /// The relay of the service's outbox, built once its consumers say which of its events
    /// they mark themselves; on a new broker it first re-queues what an earlier one got.
    async fn relay(&mut self) -> anyhow::Result<Option<Relay>> {
        let (Some(bus), Some(producer)) = (&self.bus, &self.producer) else {
            return Ok(None);
        };
        let outbox = bus.outbox();
        let relay = Relay::new(
            self.db.clone(),
            outbox.name(),
            Arc::new(producer.clone()),
            self.relay_config.clone(),
            bus.wake_signal(),
            bus.metrics().clone(),
        )
        .context("building the relay")?;
        relay
            .check_schema()
            .await
            .context("checking the outbox table")?;
        if self.new_broker {
            // The broker is new and empty: what an earlier run published but did not get
            // consumed exists only in the outbox now.
            let moved = relay
                .republish_all_published()
                .await
                .context("re-queueing rows published to an earlier broker")?;
            if moved > 0 {
                tracing::info!(
                    table = outbox.name(),
                    moved,
                    "published rows go out again to the new broker"
                );
            }
        }
        Ok(Some(relay))
    }

    /// The service credentials the service accepts (`SMARTFLOW_SERVICE_TOKENS`), for its own
    /// routes that only services may call.
    pub fn credentials(&self) -> &ServiceCredentials {
        &self.credentials
    }

    /// The migrated database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The bus, for a service with an outbox.
    pub fn bus(&self) -> Option<&EventBus> {
        self.bus.as_ref()
    }

    /// The embedded broker, when no brokers were configured.
    pub fn embedded_broker(&self) -> Option<&EmbeddedBroker> {
        self.broker.as_ref()
    }

    /// Builds the consumer `plan` describes; it runs from [`ServiceStart::serve`] on.
    pub fn consume(&mut self, plan: ConsumerPlan) -> anyhow::Result<()> {
        let (group, topic) = plan.group_and_topic();
        let mut kafka = self.kafka.clone();
        if !self.consumers.is_empty() {
            // Static membership wants one instance id per consumer of the process; the first
            // keeps the service's, so adding a consumer does not move its partitions.
            kafka.group_instance_id = kafka
                .group_instance_id
                .take()
                .map(|id| format!("{id}-{group}"));
        }
        let consumer = Arc::new(
            KafkaConsumer::new(&kafka, group, &[topic]).context("creating the Kafka consumer")?,
        );
        let config = self.consumer_config.clone();
        let handled: BTreeSet<String> = plan
            .handlers
            .event_types()
            .into_iter()
            .map(str::to_owned)
            .collect();
        // The name its inbox entries are kept under (the owner's consumer: the service's).
        let inbox_consumer = match &plan.dedupe {
            Dedupe::OwnRoute(route) => route.service.clone(),
            Dedupe::Inbox { consumer, .. } => consumer.clone(),
        };
        let runner = match plan.dedupe {
            Dedupe::OwnRoute(route) => {
                // Its own consumer marks exactly the types it handles; the relay gives the rows
                // of every other type up at Kafka's ack.
                self.relay_config.consumed_here = Some(handled.clone());
                ConsumerRunner::for_route(
                    self.db.clone(),
                    &route,
                    plan.handlers,
                    consumer.clone(),
                    config,
                    self.metrics.clone(),
                )
            }
            Dedupe::Inbox { consumer: name, .. } => ConsumerRunner::for_subscriber(
                self.db.clone(),
                &name,
                plan.handlers,
                consumer.clone(),
                config,
                self.metrics.clone(),
            ),
        }
        .context("building the consumer")?;
        let only_event_types = if plan.only_handled {
            Some(handled.into_iter().collect())
        } else {
            plan.only_event_types
        };
        let (runner, inbox) = match plan.inbox_table {
            Some(table) => {
                let inbox =
                    InboxTable::new(&table).with_context(|| format!("inbox table `{table}`"))?;
                self.inbox = Some(inbox.clone());
                (runner.with_inbox(inbox.clone()), inbox)
            }
            None => {
                // Both kinds of consumer record other services' events in the default inbox.
                self.inbox.get_or_insert_with(InboxTable::default);
                (runner, InboxTable::default())
            }
        };
        // The relay deletes this consumer's handled inbox entries once they are old enough.
        if let Some(keep) = self.inbox_retention {
            self.relay_config.retention.inboxes.push(InboxRetention {
                table: inbox,
                consumer: inbox_consumer,
                keep,
            });
        }
        let runner = match only_event_types {
            Some(types) => runner.only_event_types(types.iter().map(String::as_str)),
            None => runner,
        };
        let runner = match plan.wake_on_commit {
            Some(signal) => runner.wake_on_commit(signal),
            None => runner,
        };
        self.consumers.push(consumer);
        self.runners.push(runner);
        Ok(())
    }

    /// Runs `work` (given the service's shutdown token) beside the relay and the consumers,
    /// supervised like them, from [`ServiceStart::serve`] on.
    pub fn run_alongside<F, Fut>(&mut self, task: &'static str, work: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let work = work(self.shutdown.clone());
        self.extra_tasks.push((task, Box::pin(work)));
    }

    /// Adds the service's own gauges to `/metrics`.
    pub fn gauges(&mut self, gauges: impl Gauges) {
        self.gauges = Some(Arc::new(gauges));
    }

    /// Binds the HTTP listener (and the admin listener, when configured), serves `routes` with
    /// `/healthz`, `/metrics`, `/openapi.json` (documenting `routes`' operations, as their
    /// `#[utoipa::path]`s say, with the skeleton's) and the JSON fallbacks within the HTTP
    /// limits, and spawns the relay, the consumers, the service's tasks and the HTTP server
    /// under one cancellation token. `parts` is what the service keeps for its callers.
    pub async fn serve<P>(
        mut self,
        routes: impl Into<OpenApiRouter>,
        parts: P,
    ) -> anyhow::Result<Running<P>> {
        let (routes, own_api) = routes.into().split_for_parts();
        let relay = self.relay().await?;
        let listener = TcpListener::bind(self.http_addr)
            .await
            .with_context(|| format!("cannot listen on SMARTFLOW_HTTP_ADDR {}", self.http_addr))?;
        let local_addr = listener
            .local_addr()
            .context("reading the HTTP listener's address")?;
        let admin_listener = match self.admin_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on SMARTFLOW_ADMIN_ADDR {addr}"))?,
            ),
            None => None,
        };
        let admin_addr = admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .context("reading the admin listener's address")?;
        let (router, admin_router) = with_service_endpoints(
            routes,
            Observed {
                db: self.db.clone(),
                metrics: self.metrics.clone(),
                outboxes: self.bus.iter().map(|bus| bus.outbox().clone()).collect(),
                gauges: self.gauges,
                openapi: openapi::document(self.name, own_api),
            },
            AdminTables {
                db: self.db.clone(),
                outbox: self.bus.as_ref().map(|bus| bus.outbox().clone()),
                inbox: self.inbox.clone(),
            },
            self.credentials.clone(),
            admin_listener.is_some(),
        );

        let name = self.name;
        let shutdown = self.shutdown;
        let limits = self.http_limits;
        let mut tasks = Vec::new();
        if let Some(relay) = relay {
            tasks.push(supervise(
                "relay",
                name,
                &shutdown,
                relay.run(shutdown.clone()),
            ));
        }
        for runner in self.runners {
            tasks.push(supervise(
                "consumer",
                name,
                &shutdown,
                runner.run(shutdown.clone()),
            ));
        }
        for (task, work) in self.extra_tasks {
            tasks.push(supervise(task, name, &shutdown, work));
        }
        tasks.push(supervise(
            "http",
            name,
            &shutdown,
            serve_http(listener, router, limits, shutdown.clone()),
        ));
        if let (Some(listener), Some(router)) = (admin_listener, admin_router) {
            tasks.push(supervise(
                "admin-http",
                name,
                &shutdown,
                serve_http(listener, router, limits, shutdown.clone()),
            ));
        }
        tracing::info!(
            http = %local_addr,
            admin = ?admin_addr,
            database = %redact(&self.database_url),
            brokers = %self.kafka.brokers,
            embedded_broker = self.broker.is_some(),
            topic = %self.topic,
            "{name} started"
        );
        Ok(Running {
            name,
            local_addr,
            admin_addr,
            db: self.db,
            bus: self.bus,
            metrics: self.metrics,
            kafka_brokers: self.kafka.brokers.clone(),
            cancel_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            tasks,
            grace: self.grace,
            producer: self.producer,
            consumers: self.consumers,
            parts,
            broker: self.broker,
        })
    }
}

/// A started service. Stop it with [`Running::shutdown`]; merely dropping it cancels the
/// background work without waiting for it. It derefs to `P`, what the service itself keeps
/// for its callers (say, its dispatcher).
pub struct Running<P> {
    name: &'static str,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    db: DatabaseConnection,
    bus: Option<EventBus>,
    metrics: Arc<Metrics>,
    kafka_brokers: String,
    shutdown: CancellationToken,
    cancel_on_drop: DropGuard,
    tasks: Vec<Task>,
    grace: Duration,
    producer: Option<KafkaProducer>,
    consumers: Vec<Arc<KafkaConsumer>>,
    parts: P,
    // Last, so that on a plain drop the clients above go before the broker they talk to.
    broker: Option<EmbeddedBroker>,
}

impl<P> Running<P> {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The address the HTTP API listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR`, the prefix of every API URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// `http://ADDR` of the admin listener (`/metrics`, `/healthz`), when one was configured.
    pub fn admin_url(&self) -> Option<String> {
        self.admin_addr.map(|addr| format!("http://{addr}"))
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The bus, for a service with an outbox.
    pub fn bus(&self) -> Option<&EventBus> {
        self.bus.as_ref()
    }

    /// The relay's and the consumers' counters (published, applied, duplicates, dead, ...).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The bootstrap servers in use: the configured ones, or the embedded broker's.
    pub fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
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

    /// Stops gracefully: the HTTP server stops accepting and finishes its requests, the relay
    /// settles its round, the consumers commit what they applied, the service's own tasks
    /// finish. Work still running after the grace period is abandoned; it is redone after a
    /// restart (the outbox and the uncommitted offsets still hold it). Then the producer is
    /// flushed, the consumers and the pool are closed, and the embedded broker goes last.
    pub async fn shutdown(self) {
        let Running {
            name,
            db,
            shutdown,
            cancel_on_drop,
            tasks,
            grace,
            producer,
            consumers,
            broker,
            ..
        } = self;
        tracing::info!("stopping {name}");
        drop(cancel_on_drop);
        shutdown.cancel();
        stop_tasks(tasks, grace).await;
        release_clients(producer, consumers, db, broker).await;
        tracing::info!("{name} stopped");
    }
}

impl<P> Deref for Running<P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.parts
    }
}

impl<P> RunningService for Running<P> {
    fn stopped(&self) -> impl Future<Output = ()> {
        Running::stopped(self)
    }

    fn shutdown(self) -> impl Future<Output = ()> {
        Running::shutdown(self)
    }
}
