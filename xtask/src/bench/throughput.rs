//! Figure b: how fast the producer alone moves messages, and how fast the relay drains a backlog.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sea_orm::sea_query::{Alias, Expr, Order, Query};
use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait};
use serde::Serialize;
use smartflow_bus::{Metrics, RelayConfig, Retention};
use smartflow_domain::{
    Envelope, EventContract, OutboundMessage, OutboundTransport, RetryPolicy, TransportError,
    EVENT_ID_HEADER, EVENT_TYPE_HEADER, EVENT_VERSION_HEADER, TRACEPARENT_HEADER,
};
use smartflow_kafka::KafkaProducer;
use smartflow_storage::now_millis;
use smartflow_storage::outbox::{ClaimMode, ClaimRequest, OutboxTable, Settlement};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fixture::{wait_until, ChatMessageAppended, Fixture};

/// Messages per `send_batch` call, as the relay sends a full batch.
pub const PRODUCER_BATCH: usize = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct ProducerThroughput {
    pub messages: usize,
    pub batch: usize,
    pub message_bytes: usize,
    pub seconds: f64,
    pub messages_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayThroughput {
    pub rows: usize,
    pub batch_size: u64,
    pub workers: usize,
    /// From `Relay::run` starting to the last row `published`.
    pub seconds: f64,
    pub rows_per_s: f64,
    /// The backlog was written with real `bus.publish` calls, this many per transaction.
    pub preload_rows_per_tx: usize,
    pub preload_rows_per_s: f64,
}

/// One relay round taken apart (claim, send, settle), timed over a few sequential rounds with the
/// storage and transport calls the relay makes, so slow figures can be pinned on a step.
#[derive(Debug, Clone, Serialize)]
pub struct RoundBreakdown {
    pub rounds: usize,
    pub rows_per_round: f64,
    pub claim_ms: f64,
    pub send_ms: f64,
    pub settle_ms: f64,
    /// rows / (claim + send + settle): one worker's ceiling.
    pub rows_per_s: f64,
}

/// `send_batch` of `messages` messages shaped like the relay's, `PRODUCER_BATCH` per call.
pub async fn producer(fx: &Fixture, messages: usize) -> Result<ProducerThroughput> {
    let producer = KafkaProducer::new(&fx.kafka)?;
    let make = |n: usize| -> Vec<OutboundMessage> {
        (0..n)
            .map(|i| {
                let event = ChatMessageAppended::sized(i % 64);
                let mut envelope =
                    Envelope::for_event(&event.conversation_id, &event).expect("serializes");
                let traceparent = format!("00-{i:032x}-{i:016x}-01");
                envelope
                    .headers
                    .insert(TRACEPARENT_HEADER.to_owned(), traceparent.clone());
                outbound(&fx.route.topic, &envelope, &traceparent)
            })
            .collect()
    };
    // Metadata and connections first, outside the clock.
    send_all(&producer, make(10))
        .await
        .context("warm-up send")?;
    let batches: Vec<Vec<OutboundMessage>> = (0..messages.div_ceil(PRODUCER_BATCH))
        .map(|b| make(PRODUCER_BATCH.min(messages - b * PRODUCER_BATCH)))
        .collect();
    let message_bytes = batches
        .first()
        .and_then(|b| b.first())
        .map_or(0, |m| m.payload.len());
    let started = Instant::now();
    for batch in batches {
        send_all(&producer, batch).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(ProducerThroughput {
        messages,
        batch: PRODUCER_BATCH,
        message_bytes,
        seconds,
        messages_per_s: messages as f64 / seconds,
    })
}

/// Writes `rows` pending rows with `bus.publish_all` (one multi-row insert per thousand),
/// `per_tx` per transaction; returns rows/s.
pub async fn preload(fx: &Fixture, rows: usize, per_tx: usize) -> Result<f64> {
    let started = Instant::now();
    let mut written = 0;
    while written < rows {
        let n = per_tx.min(rows - written);
        let events: Vec<ChatMessageAppended> = (0..n)
            .map(|i| ChatMessageAppended::sized((written + i) % 64))
            .collect();
        let keyed: Vec<(&str, &ChatMessageAppended)> = events
            .iter()
            .map(|e| (e.conversation_id.as_str(), e))
            .collect();
        let txn = fx.db().begin().await?;
        fx.bus.publish_all(&txn, &keyed).await?;
        txn.commit().await?;
        written += n;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// Preloads `rows` rows, then times `Relay::run` until every one is `published`.
pub async fn relay(
    fx: &Fixture,
    rows: usize,
    batch_size: u64,
    workers: usize,
) -> Result<RelayThroughput> {
    let producer = warmed_producer(fx).await?;
    relay_through(
        fx,
        rows,
        batch_size,
        workers,
        Arc::new(producer),
        Retention::default(),
    )
    .await
}

/// A producer that has sent one message: its first waits for metadata, which is not the relay's
/// cost.
pub async fn warmed_producer(fx: &Fixture) -> Result<KafkaProducer> {
    let producer = KafkaProducer::new(&fx.kafka)?;
    let warm = ChatMessageAppended::sized(0);
    let warm = Envelope::for_event("warm-up", &warm)?;
    send_all(
        &producer,
        vec![outbound(&fx.route.topic, &warm, "00-0-0-01")],
    )
    .await?;
    Ok(producer)
}

/// A transport that acknowledges every message at once and sends nothing: the relay's own cost,
/// with the broker's removed.
struct Discard;

#[async_trait::async_trait]
impl OutboundTransport for Discard {
    async fn send_batch(
        &self,
        messages: Vec<OutboundMessage>,
        _within: Duration,
    ) -> Vec<Result<(), TransportError>> {
        messages.iter().map(|_| Ok(())).collect()
    }

    fn delivery_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// As [`relay`], through a transport that discards the messages.
pub async fn relay_discarding(
    fx: &Fixture,
    rows: usize,
    batch_size: u64,
    workers: usize,
) -> Result<RelayThroughput> {
    relay_through(
        fx,
        rows,
        batch_size,
        workers,
        Arc::new(Discard),
        Retention::default(),
    )
    .await
}

/// The seeds' relay, as a baseline: pending rows read in id order, and for each one a publish,
/// the wait for its acknowledgement and an `UPDATE` of that one row. Returns rows/s.
pub async fn seeds_baseline(fx: &Fixture, rows: usize) -> Result<f64> {
    preload(fx, rows, 1000).await?;
    let producer = KafkaProducer::new(&fx.kafka)?;
    let warm = Envelope::for_event("warm-up", &ChatMessageAppended::sized(0))?;
    send_all(
        &producer,
        vec![outbound(&fx.route.topic, &warm, "00-0-0-01")],
    )
    .await?;
    let table = Alias::new(fx.route.outbox_table.as_str());
    let backend = fx.db().get_database_backend();
    let started = Instant::now();
    let mut done = 0;
    while done < rows {
        let select = Query::select()
            .columns(
                [
                    "id",
                    "event_id",
                    "event_type",
                    "event_version",
                    "message_key",
                    "topic",
                    "payload",
                    "traceparent",
                ]
                .map(Alias::new),
            )
            .from(table.clone())
            .and_where(Expr::col(Alias::new("status")).eq("pending"))
            .order_by(Alias::new("id"), Order::Asc)
            .limit(100)
            .to_owned();
        let pending = PendingRow::find_by_statement(backend.build(&select))
            .all(fx.db())
            .await?;
        ensure!(
            !pending.is_empty(),
            "the baseline ran out of rows after {done}"
        );
        for row in pending {
            let mut headers = vec![
                (EVENT_ID_HEADER.to_owned(), row.event_id),
                (EVENT_TYPE_HEADER.to_owned(), row.event_type),
                (
                    EVENT_VERSION_HEADER.to_owned(),
                    row.event_version.to_string(),
                ),
            ];
            if let Some(tp) = row.traceparent {
                headers.push((TRACEPARENT_HEADER.to_owned(), tp));
            }
            let message = OutboundMessage {
                topic: row.topic,
                key: row.message_key,
                payload: row.payload,
                headers,
            };
            send_all(&producer, vec![message]).await?;
            let update = Query::update()
                .table(table.clone())
                .value(Alias::new("status"), "published")
                .value(Alias::new("published_at"), now_millis())
                .and_where(Expr::col(Alias::new("id")).eq(row.id))
                .to_owned();
            fx.db().execute(backend.build(&update)).await?;
            done += 1;
        }
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

#[derive(FromQueryResult)]
struct PendingRow {
    id: i64,
    event_id: String,
    event_type: String,
    event_version: i32,
    message_key: String,
    topic: String,
    payload: String,
    traceparent: Option<String>,
}

/// Preloads `rows` rows, then times a relay of `workers` x `batch_size` through `transport` (with
/// `retention` running beside it) until every one is `published`.
pub async fn relay_through(
    fx: &Fixture,
    rows: usize,
    batch_size: u64,
    workers: usize,
    transport: Arc<dyn OutboundTransport>,
    retention: Retention,
) -> Result<RelayThroughput> {
    const PER_TX: usize = 1000;
    let table = OutboxTable::new(&fx.route.outbox_table)?;
    let before = table.stats(fx.db()).await?.published;
    let preload_rows_per_s = preload(fx, rows, PER_TX).await?;

    let metrics = Arc::new(Metrics::default());
    let config = RelayConfig {
        batch_size,
        workers,
        retention,
        ..RelayConfig::default()
    };
    let relay = fx.relay(Some(transport), config, metrics.clone())?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(relay.run(stop.clone()));
    let target = rows as u64;
    let waited = wait_until(
        "the relay to publish the backlog",
        Duration::from_secs(900),
        Duration::from_millis(2),
        || metrics.published.load(Ordering::Relaxed) >= target,
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    running.await?;
    waited?;
    let stats = table.stats(fx.db()).await?;
    ensure!(
        stats.pending == 0 && stats.published == before + target && stats.dead == 0,
        "after the relay run the outbox holds {stats:?}, expected {} published",
        before + target
    );
    Ok(RelayThroughput {
        rows,
        batch_size,
        workers,
        seconds,
        rows_per_s: rows as f64 / seconds,
        preload_rows_per_tx: PER_TX,
        preload_rows_per_s,
    })
}

/// Preloads `rounds * batch_size` more rows and runs that many rounds by hand, one at a time,
/// timing the claim, the send and the settle the relay's `run_once` does.
pub async fn round_breakdown(
    fx: &Fixture,
    rounds: usize,
    batch_size: u64,
) -> Result<RoundBreakdown> {
    preload(fx, rounds * batch_size as usize, 1000).await?;
    let producer = KafkaProducer::new(&fx.kafka)?;
    let table = OutboxTable::new(&fx.route.outbox_table)?;
    let mode = ClaimMode::for_backend(fx.db().get_database_backend());
    let policy = RetryPolicy::default();
    let (mut claim_s, mut send_s, mut settle_s, mut rows) = (0f64, 0f64, 0f64, 0usize);
    for _ in 0..rounds {
        let req = ClaimRequest::new("bench-breakdown", batch_size, 200, Duration::from_secs(60));
        let t = Instant::now();
        let claim = table.claim(fx.db(), mode, &req).await?;
        claim_s += t.elapsed().as_secs_f64();
        ensure!(
            !claim.rows.is_empty(),
            "the preloaded rows were not claimed"
        );
        rows += claim.rows.len();
        let messages = claim
            .rows
            .iter()
            .map(|r| {
                let mut headers = vec![
                    (EVENT_ID_HEADER.to_owned(), r.event_id.clone()),
                    (EVENT_TYPE_HEADER.to_owned(), r.event_type.clone()),
                    (EVENT_VERSION_HEADER.to_owned(), r.event_version.to_string()),
                ];
                if let Some(tp) = &r.traceparent {
                    headers.push((TRACEPARENT_HEADER.to_owned(), tp.clone()));
                }
                OutboundMessage {
                    topic: r.topic.clone(),
                    key: r.message_key.clone(),
                    payload: r.payload.clone(),
                    headers,
                }
            })
            .collect();
        let t = Instant::now();
        let outcomes = producer.send_batch(messages, Duration::from_secs(30)).await;
        send_s += t.elapsed().as_secs_f64();
        let mut settlement = Settlement::default();
        for (row, outcome) in claim.rows.iter().zip(outcomes) {
            outcome.with_context(|| format!("row {} was not delivered", row.id))?;
            settlement.published.push(row.id);
        }
        let t = Instant::now();
        table
            .settle(
                fx.db(),
                claim,
                settlement,
                &policy,
                Some(Duration::from_secs(900)),
            )
            .await?;
        settle_s += t.elapsed().as_secs_f64();
    }
    let per = |s: f64| s * 1000.0 / rounds as f64;
    Ok(RoundBreakdown {
        rounds,
        rows_per_round: rows as f64 / rounds as f64,
        claim_ms: per(claim_s),
        send_ms: per(send_s),
        settle_ms: per(settle_s),
        rows_per_s: rows as f64 / (claim_s + send_s + settle_s),
    })
}

/// A message as the relay builds it from a row.
fn outbound(topic: &str, envelope: &Envelope, traceparent: &str) -> OutboundMessage {
    OutboundMessage {
        topic: topic.to_owned(),
        key: envelope.message_key.clone(),
        payload: envelope.to_json(),
        headers: vec![
            (EVENT_ID_HEADER.to_owned(), envelope.event_id.to_string()),
            (
                EVENT_TYPE_HEADER.to_owned(),
                ChatMessageAppended::EVENT_TYPE.to_owned(),
            ),
            (
                EVENT_VERSION_HEADER.to_owned(),
                envelope.version.to_string(),
            ),
            (TRACEPARENT_HEADER.to_owned(), traceparent.to_owned()),
        ],
    }
}

async fn send_all(producer: &KafkaProducer, messages: Vec<OutboundMessage>) -> Result<()> {
    for (i, outcome) in producer
        .send_batch(messages, Duration::from_secs(30))
        .await
        .into_iter()
        .enumerate()
    {
        outcome.with_context(|| format!("message {i} of the batch was not delivered"))?;
    }
    Ok(())
}
