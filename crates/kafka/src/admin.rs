use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use tokio::time::Instant;

use crate::config::KafkaConfig;
use crate::error::KafkaError;

/// Bound on one metadata or CreateTopics round trip, so a hung broker cannot stall start-up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest single metadata attempt inside `wait_for_broker`; short, so each failure is logged
/// while the overall deadline is still far.
const PROBE_ATTEMPT: Duration = Duration::from_secs(2);
/// Pause between two `wait_for_broker` attempts.
const PROBE_PAUSE: Duration = Duration::from_millis(500);

/// Creates each topic in `topics` (name, partition count) that does not exist yet, with
/// `replication` replicas. Returns `Ok` once every topic exists: one that already exists, or that
/// another process creates concurrently, counts as success, so start-up code can call this every
/// time. An existing topic is never changed; a partition count other than requested is logged,
/// because adding partitions would move keys to other partitions and break per-key order.
///
/// librdkafka's mock cluster (`EmbeddedBroker`) does not implement CreateTopics: against it, create
/// topics with `EmbeddedBroker::create_topic`, after which this function succeeds.
pub async fn ensure_topics(
    config: &KafkaConfig,
    topics: &[(&str, i32)],
    replication: i32,
) -> Result<(), KafkaError> {
    if let Some((name, partitions)) = topics.iter().find(|(_, partitions)| *partitions < 1) {
        return Err(KafkaError::Config(format!(
            "topic `{name}` needs at least one partition, not {partitions}"
        )));
    }
    if replication < 1 {
        return Err(KafkaError::Config(format!(
            "replication factor must be at least 1, not {replication}"
        )));
    }
    let admin = Arc::new(admin_client(config, DefaultClientContext)?);
    let existing = partition_counts(&admin, REQUEST_TIMEOUT)
        .await
        .map_err(|e| KafkaError::client("reading topic metadata", e))?;

    let mut missing = Vec::new();
    for (name, partitions) in topics {
        match existing.get(*name) {
            None => missing.push(NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(replication),
            )),
            Some(found) if *found != *partitions => tracing::warn!(
                topic = name,
                requested = partitions,
                found,
                "Kafka topic exists with a different partition count; leaving it unchanged"
            ),
            Some(_) => {}
        }
    }
    if missing.is_empty() {
        return Ok(());
    }

    let options = AdminOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .operation_timeout(Some(REQUEST_TIMEOUT));
    let results = match admin.create_topics(&missing, &options).await {
        Ok(results) => results,
        Err(e) => {
            // A timed-out creation may still have completed (or another process may have created
            // the topics meanwhile), so the answer is what the cluster now holds.
            let now = partition_counts(&admin, REQUEST_TIMEOUT)
                .await
                .unwrap_or_default();
            let still_missing: Vec<&str> = missing
                .iter()
                .map(|topic| topic.name)
                .filter(|name| !now.contains_key(*name))
                .collect();
            if still_missing.is_empty() {
                return Ok(());
            }
            let hint = if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut) {
                " (brokers without CreateTopics support, such as librdkafka's mock cluster, \
                 time out like this)"
            } else {
                ""
            };
            return Err(KafkaError::Admin(format!(
                "could not create topics {}: {e}{hint}",
                still_missing.join(", ")
            )));
        }
    };
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|result| match result {
            Ok(name) => {
                tracing::info!(topic = %name, "created Kafka topic");
                None
            }
            // Another process won the race; the topic exists, which is all we promised.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
            Err((name, code)) => Some(format!("`{name}`: {code}")),
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(KafkaError::Admin(format!(
            "could not create topics {}",
            failures.join(", ")
        )))
    }
}

/// Returns `Ok` as soon as a broker of `config.brokers` answers a metadata request. Each failed
/// attempt is logged with `tracing::warn!` and retried until `timeout` has passed; then the error
/// is [`KafkaError::Unreachable`], naming the brokers and the last failure. Returns no later than
/// about `timeout` after it was called.
pub async fn wait_for_broker(config: &KafkaConfig, timeout: Duration) -> Result<(), KafkaError> {
    let errors = ErrorMemory::default();
    // A producer rather than an admin client: only a client whose main queue we poll hands us
    // librdkafka's log lines and error events, which carry the cause of a failure.
    let probe: Arc<BaseProducer<ErrorMemory>> = Arc::new(
        config
            .finish(config.base_client_config()?)
            .create_with_context(errors.clone())
            .map_err(|e| KafkaError::client("creating Kafka probe client", e))?,
    );
    let deadline = Instant::now() + timeout;
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(PROBE_ATTEMPT);
        let probe = Arc::clone(&probe);
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = probe.client().fetch_metadata(None, budget).map(|_| ());
            // Delivers the events queued meanwhile to `ErrorMemory`.
            probe.poll(Duration::ZERO);
            outcome
        })
        .await
        .unwrap_or(Err(RdKafkaError::Canceled));
        let reason = match outcome {
            Ok(()) => return Ok(()),
            // The metadata error alone is a bare code ("broker transport failure", "timed out");
            // librdkafka's last logged problem says why (connection refused, unresolvable name,
            // TLS failure, ...).
            Err(e) => match errors.last() {
                Some(detail) => format!("{e}; last client error: {detail}"),
                None => e.to_string(),
            },
        };
        if Instant::now() + PROBE_PAUSE >= deadline {
            return Err(KafkaError::Unreachable {
                brokers: config.brokers.clone(),
                reason,
            });
        }
        tracing::warn!(
            brokers = %config.brokers,
            attempt,
            %reason,
            "Kafka brokers not reachable yet; retrying"
        );
        tokio::time::sleep(PROBE_PAUSE).await;
    }
}

fn admin_client<C: ClientContext + 'static>(
    config: &KafkaConfig,
    context: C,
) -> Result<AdminClient<C>, KafkaError> {
    let client = config.base_client_config()?;
    config
        .finish(client)
        .create_with_context(context)
        .map_err(|e| KafkaError::client("creating Kafka admin client", e))
}

/// Partition count per topic name, from one cluster-wide metadata request. Asking for all topics,
/// rather than the ones we care about, matters: a metadata request naming a missing topic makes
/// brokers with auto-creation enabled (and the mock cluster) create it with default settings.
async fn partition_counts<C: ClientContext + 'static>(
    admin: &Arc<AdminClient<C>>,
    timeout: Duration,
) -> Result<HashMap<String, i32>, RdKafkaError> {
    let admin = Arc::clone(admin);
    // fetch_metadata blocks its thread for up to `timeout`, so it runs on the blocking pool.
    tokio::task::spawn_blocking(move || {
        let metadata = admin.inner().fetch_metadata(None, timeout)?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|topic| topic.error().is_none())
            .map(|topic| {
                let count = i32::try_from(topic.partitions().len()).unwrap_or(i32::MAX);
                (topic.name().to_owned(), count)
            })
            .collect())
    })
    .await
    .unwrap_or(Err(RdKafkaError::Canceled))
}

/// A client context that remembers librdkafka's most recent problem (a warning or worse from its
/// log, or an error event), so a failure can be explained by its cause. It logs those at debug
/// level: while waiting for a broker they are expected, and `wait_for_broker` reports the latest
/// one once per attempt itself.
#[derive(Clone, Default)]
struct ErrorMemory {
    last: Arc<Mutex<Option<String>>>,
}

impl ErrorMemory {
    fn last(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn remember(&self, problem: String) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(problem);
    }
}

impl ClientContext for ErrorMemory {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, facility, message);
        if matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        ) {
            self.remember(message.to_owned());
        }
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, reason);
        self.remember(format!("{error}: {reason}"));
    }
}

/// The probe never produces; this only satisfies `BaseProducer`'s bound.
impl ProducerContext for ErrorMemory {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}
