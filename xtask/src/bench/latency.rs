//! Figure c: time from the publisher's commit to the consumer's commit, at a steady rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use sea_orm::DatabaseConnection;
use serde::Serialize;
use smartflow_bus::{ConsumerConfig, ConsumerRunner, EventBus, HandlerRegistry, Metrics};
use smartflow_domain::{Envelope, InboundTransport, OutboxStatus};
use smartflow_storage::outbox::OutboxTable;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::fixture::{wait_until, ChatMessageAppended, Fixture, StoreChatMessage};
use super::relay_process::RelayProcess;

/// How the publisher's ticker treats ticks it was too slow for.
pub const TICK_BEHAVIOUR: &str = "Burst";

/// Publishing transactions allowed in flight at once.
const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Whether the relay ran in a process of its own (woken across processes), not beside the
    /// publisher.
    pub relay_apart: bool,
    pub target_events_per_s: u64,
    pub seconds: u64,
    /// `tokio::time::MissedTickBehavior` of the publisher's 1 ms ticker.
    pub missed_tick_behaviour: &'static str,
    /// Each tick's transaction runs as its own task, at most this many at once.
    pub max_in_flight: usize,
    pub published: usize,
    /// Publishing transactions that failed (and the first error), e.g. SQLite's lock timeout.
    pub publish_errors: usize,
    pub first_publish_error: Option<String>,
    pub achieved_events_per_s: f64,
    /// Events whose consumer commit was seen (the rest were still in flight at the end).
    pub measured: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// How long the consumer group took to get its partitions (the warm-up event's latency).
    pub group_join_s: f64,
    /// Where the time goes: publisher commit -> `recv_batch` returned it (relay, producer,
    /// broker, consumer fetch).
    pub to_receive_p50_ms: f64,
    pub to_receive_p99_ms: f64,
    /// Row written (`created_at`, before the publisher's commit) -> relay marked it published
    /// (`published_at`, after the broker's ack), from the rows' own millisecond timestamps.
    pub relay_lag_p50_ms: f64,
    pub relay_lag_p99_ms: f64,
    /// `recv_batch` returned it -> `process_batch` committed it (the consumer's database work).
    pub apply_p50_ms: f64,
    pub apply_p99_ms: f64,
    pub consumer_batches: usize,
    pub consumer_mean_batch: f64,
    pub process_batch_mean_ms: f64,
    pub process_batch_max_ms: f64,
    pub offset_commit_mean_ms: f64,
}

/// When the consumer loop got an event from `recv_batch` and when `process_batch` had committed it.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    received: Instant,
    applied: Instant,
}

type Seen = Arc<Mutex<HashMap<Uuid, Arrival>>>;

/// One batch of the consumer loop: its size, `process_batch`'s time, the offset commit's time.
struct BatchTiming {
    messages: usize,
    process: Duration,
    offset_commit: Duration,
}

/// Where the relay runs.
enum RunningRelay {
    /// Beside the publisher, woken by its commits.
    Task(tokio::task::JoinHandle<()>),
    /// In a process of its own.
    Apart(RelayProcess),
}

pub async fn measure(
    fx: &Fixture,
    rate: u64,
    seconds: u64,
    batch_size: u64,
    workers: usize,
    relay_apart: bool,
) -> Result<Latency> {
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());

    let relay = if relay_apart {
        RunningRelay::Apart(RelayProcess::start(fx, batch_size, workers).await?)
    } else {
        let relay = fx.default_relay(batch_size, workers, metrics.clone())?;
        RunningRelay::Task(tokio::spawn(relay.run(stop.clone())))
    };

    let consumer = fx.consumer()?;
    let handlers = HandlerRegistry::builder()
        .on::<ChatMessageAppended, _>(StoreChatMessage)
        .build()?;
    let config = ConsumerConfig::default();
    let (batch_max, linger) = (config.batch_max, config.linger);
    let runner = ConsumerRunner::for_route(
        fx.db().clone(),
        &fx.route,
        handlers,
        consumer.clone(),
        config,
        metrics,
    )?;
    let consumed: Seen = Arc::default();
    let consumer_task = tokio::spawn({
        let consumer = consumer.clone();
        let consumed = consumed.clone();
        let stop = stop.clone();
        async move {
            let mut timings = Vec::new();
            loop {
                let batch = tokio::select! {
                    _ = stop.cancelled() => break,
                    batch = consumer.recv_batch(batch_max, Duration::from_secs(1), linger) => batch,
                };
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        // Errors while the group is joining are expected and retryable.
                        tracing::debug!(error = %e, "receive failed; retrying");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                if batch.is_empty() {
                    continue;
                }
                let received = Instant::now();
                runner.process_batch(&batch).await?;
                let applied = Instant::now();
                {
                    let mut seen = consumed.lock().expect("no panics while held");
                    for message in &batch {
                        if let Some(Ok(envelope)) =
                            message.payload.as_deref().map(Envelope::from_slice)
                        {
                            seen.entry(envelope.event_id)
                                .or_insert(Arrival { received, applied });
                        }
                    }
                }
                let committing = Instant::now();
                consumer.commit(&batch).await?;
                timings.push(BatchTiming {
                    messages: batch.len(),
                    process: applied - received,
                    offset_commit: committing.elapsed(),
                });
            }
            anyhow::Ok(timings)
        }
    });

    let outcome = publish_and_wait(fx, &consumed, rate, seconds).await;
    stop.cancel();
    match relay {
        RunningRelay::Task(task) => task.await?,
        RunningRelay::Apart(process) => process.stop().await?,
    }
    let timings = consumer_task.await?.context("the consumer loop failed")?;
    if let Ok(consumer) = Arc::try_unwrap(consumer) {
        consumer.close().await;
    }
    let Published {
        events: published,
        seconds: publish_seconds,
        group_join_s,
        failures,
    } = outcome?;

    let mut relay_lag: Vec<f64> = OutboxTable::new(&fx.route.outbox_table)?
        .list(
            fx.db(),
            OutboxStatus::Consumed,
            (published.len() + 1) as u64,
        )
        .await?
        .iter()
        .filter_map(|row| row.published_at.map(|p| (p - row.created_at) as f64))
        .collect();
    relay_lag.sort_by(f64::total_cmp);
    let consumed = consumed.lock().expect("no panics while held");
    let arrivals: Vec<(Instant, Arrival)> = published
        .iter()
        .filter_map(|(id, committed)| consumed.get(id).map(|a| (*committed, *a)))
        .collect();
    let sorted_ms = |f: &dyn Fn(&(Instant, Arrival)) -> Duration| {
        let mut ms: Vec<f64> = arrivals
            .iter()
            .map(|a| f(a).as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let ms = sorted_ms(&|(c, a)| a.applied.saturating_duration_since(*c));
    let to_receive = sorted_ms(&|(c, a)| a.received.saturating_duration_since(*c));
    let apply = sorted_ms(&|(_, a)| a.applied - a.received);
    // The warm-up event's batch waited for the group to join; it says nothing about the loop.
    let steady = timings.get(1..).unwrap_or_default();
    let mean = |f: &dyn Fn(&BatchTiming) -> f64| {
        steady.iter().map(f).sum::<f64>() / steady.len().max(1) as f64
    };
    Ok(Latency {
        relay_apart,
        target_events_per_s: rate,
        seconds,
        missed_tick_behaviour: TICK_BEHAVIOUR,
        max_in_flight: MAX_IN_FLIGHT,
        published: published.len(),
        publish_errors: failures.count,
        first_publish_error: failures.first,
        achieved_events_per_s: published.len() as f64 / publish_seconds,
        measured: ms.len(),
        p50_ms: percentile(&ms, 0.50),
        p90_ms: percentile(&ms, 0.90),
        p99_ms: percentile(&ms, 0.99),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        mean_ms: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        group_join_s,
        to_receive_p50_ms: percentile(&to_receive, 0.50),
        to_receive_p99_ms: percentile(&to_receive, 0.99),
        relay_lag_p50_ms: percentile(&relay_lag, 0.50),
        relay_lag_p99_ms: percentile(&relay_lag, 0.99),
        apply_p50_ms: percentile(&apply, 0.50),
        apply_p99_ms: percentile(&apply, 0.99),
        consumer_batches: steady.len(),
        consumer_mean_batch: mean(&|t| t.messages as f64),
        process_batch_mean_ms: mean(&|t| t.process.as_secs_f64() * 1000.0),
        process_batch_max_ms: steady
            .iter()
            .map(|t| t.process.as_secs_f64() * 1000.0)
            .fold(0.0, f64::max),
        offset_commit_mean_ms: mean(&|t| t.offset_commit.as_secs_f64() * 1000.0),
    })
}

/// Waits for the consumer group with a warm-up event, publishes at `rate` for `seconds`, then
/// waits for the consumer to catch up. Returns each event's commit instant, the seconds the
/// publishing took and the warm-up's latency.
async fn publish_and_wait(
    fx: &Fixture,
    consumed: &Seen,
    rate: u64,
    seconds: u64,
) -> Result<Published> {
    let seen = |id: &Uuid| {
        consumed
            .lock()
            .expect("no panics while held")
            .contains_key(id)
    };

    let warm_up = Instant::now();
    let id = publish_one(&fx.bus, fx.db(), 0).await?;
    wait_until(
        "the warm-up event (the consumer group's assignment)",
        Duration::from_secs(90),
        Duration::from_millis(10),
        || seen(&id),
    )
    .await?;
    let group_join_s = warm_up.elapsed().as_secs_f64();

    // Open loop: each tick starts its event's transaction as a task of its own, so one slow
    // commit (an fsync) does not hold back the schedule; a single sequential publisher tops out
    // at one commit per fsync, below 1,000/s on this machine. A cap on transactions in flight
    // keeps a stalled database from piling up tasks; while it is reached the ticker waits, and
    // `Burst` then catches up on the missed ticks.
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut published = Vec::with_capacity((rate * seconds) as usize);
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut n = 0usize;
    let mut failures = PublishFailures::default();
    loop {
        ticker.tick().await;
        if Instant::now() >= end {
            break;
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let (bus, db) = (fx.bus.clone(), fx.db().clone());
        n += 1;
        tasks.spawn(async move {
            let outcome = publish_one(&bus, &db, n).await;
            let committed = Instant::now();
            drop(permit);
            outcome.map(|id| (id, committed))
        });
        while let Some(done) = tasks.try_join_next() {
            record(done?, &mut published, &mut failures);
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(done?, &mut published, &mut failures);
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    let drained = wait_until(
        "the consumer to commit every event",
        Duration::from_secs(60),
        Duration::from_millis(10),
        || {
            let consumed = consumed.lock().expect("no panics while held");
            published.iter().all(|(id, _)| consumed.contains_key(id))
        },
    )
    .await;
    if let Err(e) = drained {
        println!("    warning: {e:#}; reporting the events that arrived");
    }
    Ok(Published {
        events: published,
        seconds: publish_seconds,
        group_join_s,
        failures,
    })
}

/// What the steady-rate publisher did.
struct Published {
    /// Each committed event and the instant its commit returned.
    events: Vec<(Uuid, Instant)>,
    seconds: f64,
    group_join_s: f64,
    failures: PublishFailures,
}

/// Publishing transactions that failed: counted and reported, not fatal, because a failed
/// commit under load is itself a finding.
#[derive(Default)]
struct PublishFailures {
    count: usize,
    first: Option<String>,
}

fn record(
    outcome: Result<(Uuid, Instant)>,
    published: &mut Vec<(Uuid, Instant)>,
    failures: &mut PublishFailures,
) {
    match outcome {
        Ok(event) => published.push(event),
        Err(e) => {
            failures.count += 1;
            failures.first.get_or_insert_with(|| format!("{e:#}"));
        }
    }
}

/// One event in its own transaction: begin, publish, commit (which wakes the relay).
async fn publish_one(bus: &EventBus, db: &DatabaseConnection, n: usize) -> Result<Uuid> {
    let event = ChatMessageAppended::sized(n % 64);
    let txn = bus.begin(db).await?;
    let id = bus.publish(&txn, &event.conversation_id, &event).await?;
    bus.commit(txn).await?;
    Ok(id)
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.50), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
