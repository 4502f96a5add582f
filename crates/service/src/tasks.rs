//! Supervised background tasks and the ordered release of clients at shutdown.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use sea_orm::DatabaseConnection;
use smartflow_kafka::{EmbeddedBroker, KafkaConsumer, KafkaProducer};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a stop waits for the producer to deliver what the relay handed it.
pub const PRODUCER_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// One spawned long-lived part of a service, named for the logs.
pub struct Task {
    name: &'static str,
    handle: JoinHandle<()>,
}

/// Runs one long-lived part of a service. If it ends before shutdown was asked for, or panics,
/// `shutdown` is cancelled so the whole service stops: half a service (say, accepting messages
/// nobody relays) is worse than none, because it looks healthy. `service` names what stops in
/// the log line ("the agent", "userauth").
pub fn supervise<F>(
    name: &'static str,
    service: &'static str,
    shutdown: &CancellationToken,
    work: F,
) -> Task
where
    F: Future<Output = ()> + Send + 'static,
{
    let shutdown = shutdown.clone();
    let handle = tokio::spawn(async move {
        let outcome = AssertUnwindSafe(work).catch_unwind().await;
        match (outcome.is_err(), shutdown.is_cancelled()) {
            (true, _) => tracing::error!(task = name, "panicked; stopping {service}"),
            (false, false) => tracing::error!(task = name, "ended on its own; stopping {service}"),
            (false, true) => {
                tracing::debug!(task = name, "stopped");
                return;
            }
        }
        shutdown.cancel();
    });
    Task { name, handle }
}

/// Waits up to `grace` for every task to end, then aborts (and awaits) the ones still running,
/// each with a warning. The caller cancels the tasks' token first.
pub async fn stop_tasks(mut tasks: Vec<Task>, grace: Duration) {
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
}

/// Drops `value` on a blocking thread: dropping librdkafka clients joins their threads, which
/// must not happen on the runtime's threads.
pub async fn blocking_drop<T: Send + 'static>(value: T) {
    if let Err(e) = tokio::task::spawn_blocking(move || drop(value)).await {
        tracing::warn!(error = %e, "releasing a client failed");
    }
}

/// Releases what a stopped service held, in the order that loses nothing: the producer is
/// flushed (for up to [`PRODUCER_FLUSH_TIMEOUT`]) and dropped, the consumers closed, the pool
/// closed, and the embedded broker dropped last, after the clients that talk to it.
pub async fn release_clients(
    producer: Option<KafkaProducer>,
    consumers: Vec<Arc<KafkaConsumer>>,
    db: DatabaseConnection,
    broker: Option<EmbeddedBroker>,
) {
    if let Some(producer) = producer {
        if let Err(e) = producer.flush(PRODUCER_FLUSH_TIMEOUT).await {
            tracing::warn!(error = %e, "the Kafka producer did not flush");
        }
        blocking_drop(producer).await;
    }
    for consumer in consumers {
        match Arc::try_unwrap(consumer) {
            Ok(consumer) => consumer.close().await,
            Err(still_shared) => blocking_drop(still_shared).await,
        }
    }
    if let Err(e) = db.close().await {
        tracing::warn!(error = %e, "closing the database pool failed");
    }
    if let Some(broker) = broker {
        blocking_drop(broker).await;
    }
}
