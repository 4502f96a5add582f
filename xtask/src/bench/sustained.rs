//! Figure g: sustained load. Writers commit one event per transaction as fast as they can for a
//! while, with the relay and a consumer (`ConsumerRunner::run`, the bench's chat handler)
//! running; the backlog (rows not yet consumed) is sampled every second, and after the writers
//! stop the time until everything is consumed is measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use smartflow_bus::{ConsumerConfig, ConsumerRunner, HandlerRegistry, Metrics};
use smartflow_storage::outbox::OutboxTable;
use smartflow_storage::TransactionTrait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fixture::{ChatMessageAppended, Fixture, StoreChatMessage};

/// How long the drain after the writers stop may take before the run says it did not.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Serialize)]
pub struct Sustained {
    pub writers: usize,
    pub seconds: u64,
    /// Transactions committed, one event each.
    pub committed: u64,
    /// Transactions that failed (SQLite's lock timeouts, say), and the first error.
    pub commit_errors: u64,
    pub first_error: Option<String>,
    pub committed_per_s: f64,
    /// Events consumed while the writers ran, per second.
    pub consumed_per_s: f64,
    /// Rows not yet consumed, sampled each second while the writers ran.
    pub backlog_samples: Vec<u64>,
    pub backlog_max: u64,
    /// The backlog when the writers stopped.
    pub backlog_at_end: u64,
    /// From the writers' stop until every row was consumed (`None`: not within two minutes).
    pub drained_after_s: Option<f64>,
    /// Whether the backlog stayed bounded: the last third's peak no more than 1.5x the first
    /// third's plus one relay batch, and everything consumed within two minutes of the stop.
    pub bounded: bool,
}

async fn backlog(table: &OutboxTable, fx: &Fixture) -> Result<u64> {
    let s = table.stats(fx.db()).await?;
    Ok(s.pending + s.published)
}

pub async fn measure(
    fx: &Fixture,
    writers: usize,
    seconds: u64,
    batch_size: u64,
    workers: usize,
) -> Result<Sustained> {
    let table = OutboxTable::new(&fx.route.outbox_table)?;
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let relay = fx.default_relay(batch_size, workers, metrics.clone())?;
    let relay_task = tokio::spawn(relay.run(stop.clone()));
    let consumer = fx.consumer()?;
    let runner = ConsumerRunner::for_route(
        fx.db().clone(),
        &fx.route,
        HandlerRegistry::builder()
            .on::<ChatMessageAppended, _>(StoreChatMessage)
            .build()?,
        consumer,
        ConsumerConfig::default(),
        metrics.clone(),
    )?;
    let consumer_task = tokio::spawn(runner.run(stop.clone()));

    let committed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let writing = CancellationToken::new();
    let mut writer_tasks = Vec::new();
    for w in 0..writers {
        let (bus, db) = (fx.bus.clone(), fx.db().clone());
        let (committed, errors, first_error, writing) = (
            committed.clone(),
            errors.clone(),
            first_error.clone(),
            writing.clone(),
        );
        writer_tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !writing.is_cancelled() {
                let event = ChatMessageAppended::sized(w * 8 + n % 8);
                n += 1;
                let result = async {
                    let txn = db.begin().await?;
                    bus.publish(&txn, &event.conversation_id, &event).await?;
                    txn.commit().await?;
                    anyhow::Ok(())
                }
                .await;
                match result {
                    Ok(()) => {
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .expect("no panics while held")
                            .get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    let consumed_at_start = metrics.consumed.load(Ordering::Relaxed);
    let mut samples = Vec::with_capacity(seconds as usize);
    for second in 1..=seconds {
        tokio::time::sleep_until(started + Duration::from_secs(second)).await;
        samples.push(backlog(&table, fx).await?);
    }
    writing.cancel();
    for task in writer_tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let consumed = metrics.consumed.load(Ordering::Relaxed) - consumed_at_start;
    let backlog_at_end = backlog(&table, fx).await?;
    let stopped = Instant::now();
    let mut drained_after_s = None;
    while stopped.elapsed() < DRAIN_LIMIT {
        if backlog(&table, fx).await? == 0 {
            drained_after_s = Some(stopped.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    relay_task.await?;
    consumer_task.await?;

    let third = (samples.len() / 3).max(1);
    let peak = |s: &[u64]| s.iter().copied().max().unwrap_or(0);
    let (first, last) = (
        peak(&samples[..third.min(samples.len())]),
        peak(&samples[samples.len().saturating_sub(third)..]),
    );
    let bounded =
        drained_after_s.is_some() && (last as f64) <= 1.5 * first as f64 + batch_size as f64;
    let committed = committed.load(Ordering::Relaxed);
    let first_error = first_error.lock().expect("no panics while held").clone();
    Ok(Sustained {
        writers,
        seconds,
        committed,
        commit_errors: errors.load(Ordering::Relaxed),
        first_error,
        committed_per_s: committed as f64 / elapsed,
        consumed_per_s: consumed as f64 / elapsed,
        backlog_max: peak(&samples),
        backlog_samples: samples,
        backlog_at_end,
        drained_after_s,
        bounded,
    })
}
