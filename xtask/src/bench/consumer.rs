//! Figure d: how fast a consumer applies a backlog that waits on its topic, with the handler
//! applying a batch at once (`handle_batch`, one multi-row insert) and, in the same run, with a
//! handler that only has the one-event `handle` (the bus's set-based marks still apply).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use serde::Serialize;
use smartflow_bus::{
    ConsumerConfig, ConsumerRunner, HandlerError, HandlerRegistry, Metrics, TypedHandler,
};
use smartflow_domain::{Envelope, EventContract};
use smartflow_kafka::KafkaConsumer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fixture::{wait_until, ChatMessageAppended, Fixture, StoreChatMessage};
use super::throughput;

#[derive(Debug, Clone, Serialize)]
pub struct ConsumerApply {
    pub events: usize,
    pub batch_max: usize,
    /// The handler's `handle_batch` stores a batch's messages with one multi-row insert.
    pub batched_events_per_s: f64,
    /// The same messages through a handler with only `handle` (one insert per event).
    pub per_event_events_per_s: f64,
    /// Batches applied whole / one by one, in the batched run.
    pub batches_whole: u64,
    pub batches_one_by_one: u64,
}

/// `StoreChatMessage` without its `handle_batch`: the bus calls `handle` once per event.
struct StoreOneByOne;

#[async_trait]
impl TypedHandler<ChatMessageAppended> for StoreOneByOne {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: ChatMessageAppended,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        StoreChatMessage.handle(txn, event, envelope).await
    }
}

/// Publishes and relays `events` events, then times two consumer groups applying them.
/// Also returns the relay's figures for the backlog it published.
pub async fn measure(
    fx: &Fixture,
    events: usize,
    relay_batch: u64,
    relay_workers: usize,
) -> Result<(ConsumerApply, throughput::RelayThroughput)> {
    let relay = throughput::relay(fx, events, relay_batch, relay_workers).await?;
    let batched = HandlerRegistry::builder()
        .on::<ChatMessageAppended, _>(StoreChatMessage)
        .build()?;
    let (batched_events_per_s, metrics) = apply(fx, events, batched).await?;
    // The same backlog again for the second group: the rows unmarked, the messages unstored.
    fx.db()
        .execute_unprepared(&format!(
            "UPDATE {} SET status = 'published', consumed_at = NULL",
            fx.route.outbox_table
        ))
        .await?;
    fx.db()
        .execute_unprepared("DELETE FROM chat_histories")
        .await?;
    let one_by_one = HandlerRegistry::builder()
        .on::<ChatMessageAppended, _>(StoreOneByOne)
        .build()?;
    let (per_event_events_per_s, _) = apply(fx, events, one_by_one).await?;
    let apply = ConsumerApply {
        events,
        batch_max: ConsumerConfig::default().batch_max,
        batched_events_per_s,
        per_event_events_per_s,
        batches_whole: metrics.batches_whole.load(Ordering::Relaxed),
        batches_one_by_one: metrics.batches_one_by_one.load(Ordering::Relaxed),
    };
    Ok((apply, relay))
}

/// A new consumer group reads the topic from the start; timed from its first applied event to
/// its last (the group's join is not the handler's cost). Returns events/s and its counters.
async fn apply(
    fx: &Fixture,
    events: usize,
    handlers: HandlerRegistry,
) -> Result<(f64, Arc<Metrics>)> {
    let group = fx.testdb.unique("bench-apply");
    let transport = Arc::new(KafkaConsumer::new(&fx.kafka, &group, &[&fx.route.topic])?);
    let metrics = Arc::new(Metrics::default());
    let runner = ConsumerRunner::for_route(
        fx.db().clone(),
        &fx.route,
        handlers,
        transport.clone(),
        ConsumerConfig {
            whole_batches: true,
            ..ConsumerConfig::default()
        },
        metrics.clone(),
    )?;
    let stop = CancellationToken::new();
    let running = tokio::spawn(runner.run(stop.clone()));
    let consumed = || metrics.consumed.load(Ordering::Relaxed);
    wait_until(
        "the consumer's first event",
        Duration::from_secs(120),
        Duration::from_millis(1),
        || consumed() > 0,
    )
    .await?;
    let (started, first) = (Instant::now(), consumed());
    let target = events as u64;
    let waited = wait_until(
        "the consumer to apply the backlog",
        Duration::from_secs(900),
        Duration::from_millis(2),
        || consumed() >= target,
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    running.await?;
    // The runner, and its share of the consumer, ended with its task.
    if let Ok(transport) = Arc::try_unwrap(transport) {
        transport.close().await;
    }
    waited?;
    let stored = smartflow_storage::chat_history::count(fx.db()).await?;
    ensure!(
        stored == target,
        "the consumer stored {stored} messages, expected {target} ({} event type)",
        ChatMessageAppended::EVENT_TYPE
    );
    Ok(((target - first) as f64 / seconds, metrics))
}
