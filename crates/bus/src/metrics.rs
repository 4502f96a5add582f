//! What the bus did in this process, as Prometheus metrics (`prometheus-client`), and the health
//! of its relays and consumers. Every metric's name, type, labels and meaning are listed in
//! `docs/operations.md` ("Metrics").

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use smartflow_domain::PartitionLag;

use crate::health::Health;

/// The content type of what [`Metrics::encode`] writes: the Prometheus text format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A label whose values are a fixed set of words: bounded, so its series stay few.
macro_rules! label_words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in the order declared.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The label's value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_words! {
    /// Why an event became `dead`.
    DeadReason {
        /// The broker refused the message for good (too large, invalid topic, invalid record).
        Rejected => "rejected",
        /// A retryable failure ran out of retries.
        RetriesExhausted => "retries_exhausted",
        /// A handler's permanent error.
        Permanent => "permanent",
        /// The message was not an envelope.
        Undecodable => "undecodable",
        /// No handler is registered for the event type.
        UnknownType => "unknown_type",
    }
}

label_words! {
    /// Where an event died.
    Stage {
        /// The relay gave up sending it.
        Publish => "publish",
        /// A consumer gave up applying it.
        Consume => "consume",
    }
}

label_words! {
    /// What kept the relay from publishing.
    PublishErrorKind {
        /// Rows released untouched because the broker was unavailable.
        Unavailable => "unavailable",
        /// Rows the broker rejected.
        Rejected => "rejected",
        /// Rounds that failed on the database.
        Database => "database",
    }
}

label_words! {
    /// How a message failed its consumer.
    HandlerErrorKind {
        /// A handler's retryable error.
        Retryable => "retryable",
        /// A handler's permanent error.
        Permanent => "permanent",
        /// The message was not an envelope.
        Undecodable => "undecodable",
        /// No handler is registered for the event type.
        UnknownType => "unknown_type",
    }
}

label_words! {
    /// Why a direct event was not sent.
    DirectErrorKind {
        /// The broker (or the way to it) was not working.
        Unavailable => "unavailable",
        /// The broker refused the message for good.
        Rejected => "rejected",
        /// The bus had no transport to send it through.
        NoTransport => "no_transport",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectErrorLabels {
    kind: DirectErrorKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishErrorLabels {
    kind: PublishErrorKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerErrorLabels {
    kind: HandlerErrorKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLabels {
    stage: Stage,
    reason: DeadReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabel {
    consumer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    consumer: String,
    topic: String,
    partition: i32,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Relay rounds take from a millisecond to about half a minute (a claim, a broker round trip,
/// the settle): 1 ms doubling to 32 s.
fn round_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Rows per round, 1 doubling to 4096 (the batch size's order of magnitude).
fn batch_rows() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// From commit to consumption: a few milliseconds while everything runs, hours after an
/// outage: 1 ms doubling to about 4.7 hours.
fn end_to_end_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

/// Creates the series of `family` for each of `labels`, at 0.
fn at_zero<S, M, C>(family: &Family<S, M, C>, labels: impl IntoIterator<Item = S>)
where
    S: Clone + std::hash::Hash + Eq,
    C: MetricConstructor<M>,
{
    for label in labels {
        let _ = family.get_or_create(&label);
    }
}

/// The metrics whose values `prometheus-client` keeps (histograms and labelled families).
#[derive(Debug)]
struct Families {
    relay_round: HistogramFamily<TableLabel>,
    relay_batch: HistogramFamily<TableLabel>,
    publish_errors: Family<PublishErrorLabels, Counter>,
    handler_errors: Family<HandlerErrorLabels, Counter>,
    dead: Family<DeadLabels, Counter>,
    consumer_lag: Family<PartitionLabels, Gauge>,
    end_to_end: HistogramFamily<ConsumerLabel>,
    retention_deleted: Family<TableLabel, Counter>,
    direct_sent: Counter,
    direct_errors: Family<DirectErrorLabels, Counter>,
    /// The partitions each consumer last reported a lag for, so those it lost leave the gauge.
    lag_partitions: Mutex<HashMap<String, Vec<PartitionLabels>>>,
}

impl Families {
    fn new() -> Self {
        Self {
            relay_round: Family::new_with_constructor(round_seconds),
            relay_batch: Family::new_with_constructor(batch_rows),
            publish_errors: Family::default(),
            handler_errors: Family::default(),
            dead: Family::default(),
            consumer_lag: Family::default(),
            end_to_end: Family::new_with_constructor(end_to_end_seconds),
            retention_deleted: Family::default(),
            direct_sent: Counter::default(),
            direct_errors: Family::default(),
            lag_partitions: Mutex::new(HashMap::new()),
        }
    }

    /// Creates, at 0, every series of the families whose labels are a fixed set, so that each
    /// is there (and `rate()` over it works) before its first event.
    fn with_known_series(self) -> Self {
        at_zero(
            &self.publish_errors,
            PublishErrorKind::ALL
                .iter()
                .map(|&kind| PublishErrorLabels { kind }),
        );
        at_zero(
            &self.handler_errors,
            HandlerErrorKind::ALL
                .iter()
                .map(|&kind| HandlerErrorLabels { kind }),
        );
        at_zero(
            &self.direct_errors,
            DirectErrorKind::ALL
                .iter()
                .map(|&kind| DirectErrorLabels { kind }),
        );
        let publish = [(Stage::Publish, DeadReason::Rejected)];
        let consume = [
            DeadReason::RetriesExhausted,
            DeadReason::Permanent,
            DeadReason::Undecodable,
            DeadReason::UnknownType,
        ]
        .map(|reason| (Stage::Consume, reason));
        at_zero(
            &self.dead,
            publish
                .into_iter()
                .chain(consume)
                .map(|(stage, reason)| DeadLabels { stage, reason }),
        );
        self
    }

    fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "smartflow_relay_round_duration",
            "Time of one relay round that claimed rows: claim, send, settle",
            Unit::Seconds,
            self.relay_round.clone(),
        );
        registry.register(
            "smartflow_relay_batch_rows",
            "Rows one relay round claimed (rounds that claimed none are not counted)",
            self.relay_batch.clone(),
        );
        registry.register(
            "smartflow_publish_errors",
            "What kept the relay from publishing: rows the broker was unavailable for or \
             rejected, rounds that failed on the database",
            self.publish_errors.clone(),
        );
        registry.register(
            "smartflow_handler_errors",
            "Messages that failed their consumer, by kind",
            self.handler_errors.clone(),
        );
        registry.register(
            "smartflow_dead",
            "Events that became dead, by stage and reason",
            self.dead.clone(),
        );
        registry.register(
            "smartflow_consumer_lag",
            "Messages of a partition after the consumer's committed offset (its position before \
             its first commit), at its last poll",
            self.consumer_lag.clone(),
        );
        registry.register_with_unit(
            "smartflow_end_to_end_latency",
            "From an event's occurred_at (set when it was published) to its consumer's offset \
             commit",
            Unit::Seconds,
            self.end_to_end.clone(),
        );
        registry.register(
            "smartflow_direct_sent",
            "Direct events (`Delivery::Direct`) the broker acknowledged",
            self.direct_sent.clone(),
        );
        registry.register(
            "smartflow_direct_send_errors",
            "Direct events that were not sent, by kind: lost, since nothing keeps them",
            self.direct_errors.clone(),
        );
        registry.register(
            "smartflow_retention_deleted_rows",
            "Rows the retention deleted, per table",
            self.retention_deleted.clone(),
        );
    }
}

/// Counters of what the bus did in this process, for logs and a metrics endpoint, and the
/// health of its relays and consumers.
///
/// The counters below are plain atomics (the loops bump them, tests and the benchmark read
/// them); [`Metrics::encode`] exports them as `smartflow_bus_NAME_total`. The histograms and the
/// labelled families live in a `prometheus-client` registry whose every metric carries the
/// `service` label of [`Metrics::for_service`].
#[derive(Debug)]
pub struct Metrics {
    pub health: Health,
    /// Times a relay paused because the broker or the database was unavailable.
    pub relay_pauses: AtomicU64,
    /// Times a consumer stalled: it could not apply a batch, or the broker was unavailable.
    pub consumer_stalls: AtomicU64,
    pub published: AtomicU64,
    pub publish_retries: AtomicU64,
    /// Rows the relay gave up publishing.
    pub publish_dead: AtomicU64,
    /// Events a consumer gave up handling.
    pub handler_dead: AtomicU64,
    pub consumed: AtomicU64,
    pub duplicates: AtomicU64,
    pub handler_retries: AtomicU64,
    pub republished_unconsumed: AtomicU64,
    /// Rows a relay left for a later round because an earlier row of their key waits for a
    /// retry (`KeyOrder::Block`).
    pub held_back: AtomicU64,
    /// Times a transport acknowledged a message after failing an earlier message of the same key
    /// in one batch: the one way a key's order could break, which the transports promise never
    /// to do. Watched so a broken promise is seen.
    pub order_breaks: AtomicU64,
    /// Consumer batches applied whole: one savepoint, set-based dedupe marks, handlers called
    /// once per run of one event type.
    pub batches_whole: AtomicU64,
    /// Consumer batches applied one event at a time, each in its own savepoint: a batch with an
    /// undecodable message, an unknown type or a single message, or one whose whole attempt
    /// failed (a handler error) and was rolled back.
    pub batches_one_by_one: AtomicU64,
    /// Rows retention deleted: outbox rows the bus was done with and handled inbox entries.
    pub retention_deleted: AtomicU64,
    families: Families,
    registry: Registry,
    /// The labels every metric carries (`service`, when named).
    labels: Vec<(Cow<'static, str>, Cow<'static, str>)>,
}

impl Default for Metrics {
    /// Metrics with no `service` label (tests, tools).
    fn default() -> Self {
        Self::with_labels(Vec::new())
    }
}

impl Metrics {
    /// The metrics of service `service`: every metric carries `service="<service>"`, so the
    /// services of one process (the all-in-one binary) and of many report the same names.
    pub fn for_service(service: &str) -> Self {
        Self::with_labels(vec![("service".into(), service.to_owned().into())])
    }

    fn with_labels(labels: Vec<(Cow<'static, str>, Cow<'static, str>)>) -> Self {
        let families = Families::new().with_known_series();
        let mut registry = Registry::with_labels(labels.clone().into_iter());
        families.register(&mut registry);
        Self {
            health: Health::default(),
            relay_pauses: AtomicU64::new(0),
            consumer_stalls: AtomicU64::new(0),
            published: AtomicU64::new(0),
            publish_retries: AtomicU64::new(0),
            publish_dead: AtomicU64::new(0),
            handler_dead: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            handler_retries: AtomicU64::new(0),
            republished_unconsumed: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
            order_breaks: AtomicU64::new(0),
            batches_whole: AtomicU64::new(0),
            batches_one_by_one: AtomicU64::new(0),
            retention_deleted: AtomicU64::new(0),
            families,
            registry,
            labels,
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records that retention deleted `rows` rows of `table`
    /// (`smartflow_retention_deleted_rows_total{table}`).
    pub fn retention_deleted(&self, table: &str, rows: u64) {
        self.families
            .retention_deleted
            .get_or_create(&TableLabel {
                table: table.to_owned(),
            })
            .inc_by(rows);
    }

    /// A direct event the broker acknowledged.
    pub(crate) fn direct_sent(&self) {
        self.families.direct_sent.inc();
    }

    /// A direct event that was not sent.
    pub(crate) fn direct_error(&self, kind: DirectErrorKind) {
        self.families
            .direct_errors
            .get_or_create(&DirectErrorLabels { kind })
            .inc();
    }

    /// One relay round of `table` that claimed `rows` rows and took `took`.
    pub(crate) fn relay_round(&self, table: &str, rows: usize, took: Duration) {
        let label = TableLabel {
            table: table.to_owned(),
        };
        self.families
            .relay_round
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        self.families
            .relay_batch
            .get_or_create(&label)
            .observe(rows as f64);
    }

    pub(crate) fn publish_error(&self, kind: PublishErrorKind, n: u64) {
        if n > 0 {
            self.families
                .publish_errors
                .get_or_create(&PublishErrorLabels { kind })
                .inc_by(n);
        }
    }

    pub(crate) fn handler_error(&self, kind: HandlerErrorKind) {
        self.families
            .handler_errors
            .get_or_create(&HandlerErrorLabels { kind })
            .inc();
    }

    pub(crate) fn dead(&self, stage: Stage, reason: DeadReason, n: u64) {
        if n > 0 {
            self.families
                .dead
                .get_or_create(&DeadLabels { stage, reason })
                .inc_by(n);
        }
    }

    /// The lag of each partition `consumer` owns, as its transport last saw it; partitions it no
    /// longer reports are dropped from the gauge.
    pub(crate) fn consumer_lag(&self, consumer: &str, lags: &[PartitionLag]) {
        let family = &self.families.consumer_lag;
        let labels = |lag: &PartitionLag| PartitionLabels {
            consumer: consumer.to_owned(),
            topic: lag.topic.clone(),
            partition: lag.partition,
        };
        let current: Vec<PartitionLabels> = lags.iter().map(labels).collect();
        for (label, lag) in current.iter().zip(lags) {
            family.get_or_create(label).set(lag.lag);
        }
        let mut reported = self
            .families
            .lag_partitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = reported.insert(consumer.to_owned(), current.clone());
        for gone in before.iter().flatten().filter(|l| !current.contains(l)) {
            family.remove(gone);
        }
    }

    /// `consumer` committed an event that occurred `age` ago.
    pub(crate) fn end_to_end(&self, consumer: &str, ages: impl IntoIterator<Item = Duration>) {
        let histogram = self.families.end_to_end.get_or_create(&ConsumerLabel {
            consumer: consumer.to_owned(),
        });
        for age in ages {
            histogram.observe(age.as_secs_f64());
        }
    }

    /// An empty registry for gauges read at scrape time (a service's backlog), with the labels
    /// every metric of these metrics carries; hand it to [`Metrics::encode`].
    pub fn scrape_registry(&self) -> Registry {
        Registry::with_labels(self.labels.clone().into_iter())
    }

    /// Every metric in the Prometheus text format 0.0.4 ([`PROMETHEUS_CONTENT_TYPE`]): the
    /// counters as `smartflow_bus_NAME_total`, `smartflow_component_healthy{component}` (1
    /// healthy, 0 paused or stalled), the families, then what `scrape` holds.
    pub fn encode(&self, scrape: &Registry) -> String {
        let mut now = self.scrape_registry();
        now.register_collector(Box::new(Snapshot {
            counters: self.snapshot(),
            health: self
                .health
                .report()
                .into_iter()
                .map(|c| (c.name, c.healthy))
                .collect(),
        }));
        let mut out = String::new();
        for registry in [&now, &self.registry, scrape] {
            // Writing to a String cannot fail, and the metrics encode themselves without error.
            let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
        }
        out
    }

    /// [`Metrics::encode`] with nothing read at scrape time.
    pub fn prometheus_text(&self) -> String {
        self.encode(&Registry::default())
    }

    /// A snapshot as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        [
            ("published", &self.published),
            ("publish_retries", &self.publish_retries),
            ("publish_dead", &self.publish_dead),
            ("handler_dead", &self.handler_dead),
            ("consumed", &self.consumed),
            ("duplicates", &self.duplicates),
            ("handler_retries", &self.handler_retries),
            ("republished_unconsumed", &self.republished_unconsumed),
            ("held_back", &self.held_back),
            ("order_breaks", &self.order_breaks),
            ("batches_whole", &self.batches_whole),
            ("batches_one_by_one", &self.batches_one_by_one),
            ("retention_deleted", &self.retention_deleted),
            ("relay_pauses", &self.relay_pauses),
            ("consumer_stalls", &self.consumer_stalls),
        ]
        .into_iter()
        .map(|(name, counter)| (name, counter.load(Ordering::Relaxed)))
        .collect()
    }
}

/// The atomic counters and the health at one scrape.
#[derive(Debug)]
struct Snapshot {
    counters: Vec<(&'static str, u64)>,
    health: Vec<(String, bool)>,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, value) in &self.counters {
            let counter = ConstCounter::new(*value);
            let full_name = format!("smartflow_bus_{name}");
            let metric = encoder.encode_descriptor(
                &full_name,
                &format!("Bus counter `{name}` since this process started"),
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
        }
        let mut healthy = encoder.encode_descriptor(
            "smartflow_component_healthy",
            "Whether a relay or consumer works (0: paused or stalled)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (component, ok) in &self.health {
            let labels = [("component", component.as_str())];
            ConstGauge::new(i64::from(*ok)).encode(healthy.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_counters_and_one_health_gauge_per_component() {
        let m = Metrics::for_service("agent");
        Metrics::add(&m.published, 3);
        m.health.register("relay agent_outbox");
        m.health.fault("relay agent_outbox", "paused");
        let text = m.prometheus_text();
        assert!(
            text.contains("smartflow_bus_published_total{service=\"agent\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "smartflow_component_healthy{service=\"agent\",component=\"relay agent_outbox\"} 0"
            ),
            "{text}"
        );
    }

    #[test]
    fn retention_deletes_are_counted_per_table() {
        let m = Metrics::for_service("agent");
        m.retention_deleted("agent_outbox", 40);
        m.retention_deleted("agent_outbox", 2);
        m.retention_deleted("inbox", 5);
        let text = m.prometheus_text();
        for expected in [
            "# TYPE smartflow_retention_deleted_rows_total counter",
            "smartflow_retention_deleted_rows_total{service=\"agent\",table=\"agent_outbox\"} 42",
            "smartflow_retention_deleted_rows_total{service=\"agent\",table=\"inbox\"} 5",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }

    #[test]
    fn direct_sends_and_their_failures_are_counted_per_service() {
        let m = Metrics::for_service("agent");
        m.direct_sent();
        m.direct_sent();
        m.direct_error(DirectErrorKind::Unavailable);
        let text = m.prometheus_text();
        for expected in [
            "# TYPE smartflow_direct_sent_total counter",
            "smartflow_direct_sent_total{service=\"agent\"} 2",
            "smartflow_direct_send_errors_total{service=\"agent\",kind=\"unavailable\"} 1",
            "smartflow_direct_send_errors_total{service=\"agent\",kind=\"rejected\"} 0",
            "smartflow_direct_send_errors_total{service=\"agent\",kind=\"no_transport\"} 0",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }

    #[test]
    fn a_partition_the_consumer_no_longer_reports_leaves_the_lag_gauge() {
        let m = Metrics::default();
        let lag = |partition, lag| PartitionLag {
            topic: "t".into(),
            partition,
            lag,
        };
        m.consumer_lag("c", &[lag(0, 5), lag(1, 7)]);
        m.consumer_lag("other", &[lag(0, 1)]);
        m.consumer_lag("c", &[lag(1, 2)]);
        let text = m.prometheus_text();
        assert!(
            text.contains("smartflow_consumer_lag{consumer=\"c\",topic=\"t\",partition=\"1\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("smartflow_consumer_lag{consumer=\"c\",topic=\"t\",partition=\"0\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "smartflow_consumer_lag{consumer=\"other\",topic=\"t\",partition=\"0\"} 1"
            ),
            "{text}"
        );
    }
}
