//! `cargo xtask bench`: the outbox's cost to a business transaction, producer and relay
//! throughput, and end-to-end latency at a steady rate, on SQLite, PostgreSQL and MariaDB against
//! an in-process broker. See `docs/benchmarks.md` for what each figure means and the last run.
//!
//! It always measures a release build: run from a debug build (as `cargo xtask` is), it re-runs
//! itself with `cargo run --release -p xtask -- bench ...`, because debug builds of sqlx, serde and
//! the bus give figures that say nothing about production.

mod consumer;
mod fixture;
mod latency;
mod outbox_cost;
pub mod relay_process;
mod report;
mod retention;
mod scale;
mod sustained;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::ValueEnum;

use crate::backends::{BackendArg, BackendsArg};
use crate::process::{cargo, exit_code, run};
use report::Figures;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    #[command(flatten)]
    backends: BackendsArg,
    /// Seconds of the steady-rate end-to-end latency run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events per second the latency run's publisher commits.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of each outbox-cost measurement (plain and with outbox, per writer count).
    #[arg(long, default_value_t = 4.0)]
    cost_seconds: f64,
    /// Concurrent writers of the second outbox-cost measurement (the first has one).
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Messages sent in the raw producer measurement.
    #[arg(long, default_value_t = 100_000)]
    producer_messages: usize,
    /// Outbox rows preloaded for the relay measurement on PostgreSQL and MariaDB.
    #[arg(long, default_value_t = 100_000)]
    relay_rows: usize,
    /// Outbox rows preloaded for the relay measurement on SQLite.
    #[arg(long, default_value_t = 100_000)]
    sqlite_relay_rows: usize,
    /// Rows the seeds' per-row relay (the baseline) publishes.
    #[arg(long, default_value_t = 1_000)]
    baseline_rows: usize,
    /// The relay's batch size (`RelayConfig::batch_size`).
    #[arg(long, default_value_t = 1000)]
    relay_batch: u64,
    /// The relay's concurrent round loops (`RelayConfig::workers`).
    #[arg(long, default_value_t = 2)]
    relay_workers: usize,
    /// Partitions of each benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Seconds the sustained phase's writers commit for.
    #[arg(long, default_value_t = 60)]
    sustained_seconds: u64,
    /// The backlogs of the scale phase, drained one after another on one table.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    scale_rows: Vec<usize>,
    /// Which measurements to run, comma-separated (`scale` and `sustained` only when named:
    /// they drain over a million rows and run a minute per backend).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cost,throughput,latency,consumer,retention"
    )]
    phases: Vec<Phase>,
    /// A librdkafka property for every client, as KEY=VALUE (repeatable), to try a tuning.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    kafka_set: Vec<(String, String)>,
    /// Measure even in a debug build (the figures are then meaningless; for checking the harness).
    #[arg(long)]
    allow_debug: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Figure a: business transaction with and without the outbox row.
    Cost,
    /// Figure b: raw producer and relay throughput.
    Throughput,
    /// Figure c: end-to-end latency at a steady rate.
    Latency,
    /// Figure c with the relay in a process of its own (`cargo xtask bench-relay`), as a relay
    /// beside other publishing processes runs: woken by `NOTIFY` on PostgreSQL, polling elsewhere.
    LatencyApart,
    /// Figure d: a consumer applying a backlog, with batch and per-event handlers.
    Consumer,
    /// Figure e: the relay's rate with retention deleting beside it, and without.
    Retention,
    /// Figure f: the relay's rate at growing backlogs on one growing table, with peak RSS.
    Scale,
    /// Figure g: `--writers` writers committing as fast as they can for `--sustained-seconds`,
    /// with the relay and a consumer running: the rates and whether the backlog stayed bounded.
    Sustained,
}

impl BenchArgs {
    /// The backlog the relay and consumer measurements preload on `backend`.
    fn backlog_rows(&self, backend: BackendArg) -> usize {
        if backend == BackendArg::Sqlite {
            self.sqlite_relay_rows
        } else {
            self.relay_rows
        }
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

pub fn main(args: BenchArgs) -> Result<ExitCode> {
    if cfg!(debug_assertions) && !args.allow_debug {
        println!("bench: debug builds give misleading figures; re-running as a release build");
        let status = run(cargo()
            .args(["run", "--release", "--package", "xtask", "--"])
            .args(std::env::args_os().skip(1)))?;
        return Ok(exit_code(status));
    }
    if args.backends.need_servers() {
        crate::services::ensure_databases()?;
    }
    // `RUST_LOG=sqlx::query=debug` shows every statement with its time, to pin a slow figure.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    let figures = runtime.block_on(run_all(&args));
    println!("\n{}", report::table(&figures));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report::json(&args, &figures))?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    let failed = figures.iter().filter(|f| !f.errors.is_empty()).count();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        println!("{failed} backend(s) had failures; see above");
        ExitCode::FAILURE
    })
}

async fn run_all(args: &BenchArgs) -> Vec<Figures> {
    let mut all = Vec::new();
    let mut seen = Vec::new();
    for backend in args.backends.chosen() {
        if seen.contains(&backend) {
            continue;
        }
        seen.push(backend);
        let mut figures = Figures::new(backend.label(), backend.key());
        println!(
            "\n== {} == (load average {})",
            backend.label(),
            figures.load_before
        );
        for &phase in &args.phases {
            let result = match phase {
                Phase::Cost => cost_phase(args, backend, &mut figures).await,
                Phase::Throughput => throughput_phase(args, backend, &mut figures).await,
                Phase::Latency => latency_phase(args, backend, false, &mut figures).await,
                Phase::LatencyApart => latency_phase(args, backend, true, &mut figures).await,
                Phase::Consumer => consumer_phase(args, backend, &mut figures).await,
                Phase::Retention => retention_phase(args, backend, &mut figures).await,
                Phase::Scale => scale_phase(args, backend, &mut figures).await,
                Phase::Sustained => sustained_phase(args, backend, &mut figures).await,
            };
            if let Err(e) = result {
                println!("  {phase:?} FAILED: {e:#}");
                figures.errors.push(format!("{phase:?}: {e:#}"));
            }
        }
        figures.load_after = report::load_average();
        all.push(figures);
    }
    all
}

/// Runs `body` on a fresh fixture and always cleans the fixture up.
async fn with_fixture<T>(
    args: &BenchArgs,
    backend: BackendArg,
    body: impl AsyncFnOnce(&fixture::Fixture) -> Result<T>,
) -> Result<T> {
    with_partitions(args, backend, args.partitions, body).await
}

async fn with_partitions<T>(
    args: &BenchArgs,
    backend: BackendArg,
    partitions: i32,
    body: impl AsyncFnOnce(&fixture::Fixture) -> Result<T>,
) -> Result<T> {
    let fx = fixture::Fixture::new(backend.backend(), partitions, &args.kafka_set).await?;
    let result = body(&fx).await;
    fx.cleanup().await;
    result
}

async fn cost_phase(args: &BenchArgs, backend: BackendArg, figures: &mut Figures) -> Result<()> {
    with_fixture(args, backend, async |fx| {
        for writers in [1, args.writers] {
            let cost = outbox_cost::measure(fx, writers, args.cost_seconds).await?;
            println!(
                "  outbox cost, {writers} writer(s): plain {:.0} tx/s, with outbox {:.0} tx/s, cost {:.2}x",
                cost.plain_tx_per_s, cost.outbox_tx_per_s, cost.cost
            );
            figures.outbox_cost.push(cost);
        }
        Ok(())
    })
    .await
}

async fn throughput_phase(
    args: &BenchArgs,
    backend: BackendArg,
    figures: &mut Figures,
) -> Result<()> {
    let rows = args.backlog_rows(backend);
    with_fixture(args, backend, async |fx| {
        let producer = throughput::producer(fx, args.producer_messages).await?;
        println!(
            "  producer: {} messages of {} B in {:.2} s: {:.0} msg/s",
            producer.messages, producer.message_bytes, producer.seconds, producer.messages_per_s
        );
        figures.producer = Some(producer);
        let relay = throughput::relay(fx, rows, args.relay_batch, args.relay_workers).await?;
        println!(
            "  relay: {} rows in {:.2} s: {:.0} rows/s (preload {:.0} rows/s)",
            relay.rows, relay.seconds, relay.rows_per_s, relay.preload_rows_per_s
        );
        figures.relay = Some(relay);
        let rounds = throughput::round_breakdown(fx, 10, args.relay_batch).await?;
        println!(
            "  relay round by hand: claim {:.1} ms, send {:.1} ms, settle {:.1} ms per {:.0} rows ({:.0} rows/s)",
            rounds.claim_ms, rounds.send_ms, rounds.settle_ms, rounds.rows_per_round, rounds.rows_per_s
        );
        figures.relay_round = Some(rounds);
        let discard =
            throughput::relay_discarding(fx, rows, args.relay_batch, args.relay_workers).await?;
        println!(
            "  relay through a transport that discards: {} rows in {:.2} s: {:.0} rows/s",
            discard.rows, discard.seconds, discard.rows_per_s
        );
        figures.relay_discard = Some(discard);
        let baseline = throughput::seeds_baseline(fx, args.baseline_rows).await?;
        println!(
            "  the seeds' relay (per row: publish, await the ack, UPDATE the row): {} rows at {:.0} rows/s",
            args.baseline_rows, baseline
        );
        figures.seeds_baseline_rows_per_s = Some(baseline);
        Ok(())
    })
    .await
}

async fn consumer_phase(
    args: &BenchArgs,
    backend: BackendArg,
    figures: &mut Figures,
) -> Result<()> {
    let events = args.backlog_rows(backend);
    // The embedded broker keeps the last 5 MB of each partition: a backlog read from the start
    // must fit, with room for the messages' overhead.
    let bytes = events * 4 * fixture::envelope_bytes(&fixture::ChatMessageAppended::sized(0));
    let partitions = args.partitions.max(bytes.div_ceil(5 << 20) as i32);
    with_partitions(args, backend, partitions, async |fx| {
        let (c, relay) =
            consumer::measure(fx, events, args.relay_batch, args.relay_workers).await?;
        println!(
            "  relay (the consumer's backlog): {} rows in {:.2} s: {:.0} rows/s (preload {:.0} rows/s)",
            relay.rows, relay.seconds, relay.rows_per_s, relay.preload_rows_per_s
        );
        figures.relay.get_or_insert(relay);
        println!(
            "  consumer: {} events applied at {:.0} events/s with handle_batch, {:.0} events/s one handle call per event (batches of up to {}; {} applied whole, {} one by one)",
            c.events, c.batched_events_per_s, c.per_event_events_per_s, c.batch_max, c.batches_whole, c.batches_one_by_one
        );
        figures.consumer = Some(c);
        Ok(())
    })
    .await
}

async fn retention_phase(
    args: &BenchArgs,
    backend: BackendArg,
    figures: &mut Figures,
) -> Result<()> {
    let rows = args.backlog_rows(backend);
    with_fixture(args, backend, async |fx| {
        let r = retention::measure(fx, rows, args.relay_batch, args.relay_workers).await?;
        println!(
            "  retention: relay {:.0} rows/s while retention deleted {} of {} old consumed rows beside it, {:.0} rows/s with retention off: {:.1}% slower (target: at most 10%)",
            r.with_retention.rows_per_s,
            r.deleted_during_drain,
            r.old_rows,
            r.without_retention.rows_per_s,
            r.slowdown * 100.0
        );
        figures.retention = Some(r);
        Ok(())
    })
    .await
}

async fn scale_phase(args: &BenchArgs, backend: BackendArg, figures: &mut Figures) -> Result<()> {
    with_fixture(args, backend, async |fx| {
        let points =
            scale::measure(fx, &args.scale_rows, args.relay_batch, args.relay_workers).await?;
        for p in &points {
            println!(
                "  scale: {} rows (table already holding {}) in {:.2} s: {:.0} rows/s, peak RSS {}",
                p.rows,
                p.table_rows_before,
                p.seconds,
                p.rows_per_s,
                p.peak_rss_mib
                    .map_or("unknown".to_owned(), |m| format!("{m:.0} MiB"))
            );
        }
        if let Some(spread) = scale::spread(&points) {
            println!("  scale: slowest / fastest {spread:.2} (target: at least 0.80)");
        }
        figures.scale = points;
        Ok(())
    })
    .await
}

async fn sustained_phase(
    args: &BenchArgs,
    backend: BackendArg,
    figures: &mut Figures,
) -> Result<()> {
    with_fixture(args, backend, async |fx| {
        let s = sustained::measure(
            fx,
            args.writers,
            args.sustained_seconds,
            args.relay_batch,
            args.relay_workers,
        )
        .await?;
        println!(
            "  sustained: {} writers for {} s committed {:.0} tx/s ({} failed), consumed {:.0} events/s; backlog max {}, {} when the writers stopped, drained {}; bounded: {}",
            s.writers,
            s.seconds,
            s.committed_per_s,
            s.commit_errors,
            s.consumed_per_s,
            s.backlog_max,
            s.backlog_at_end,
            s.drained_after_s
                .map_or("not within 120 s".to_owned(), |d| format!("{d:.1} s later")),
            if s.bounded { "yes" } else { "NO" }
        );
        figures.sustained = Some(s);
        Ok(())
    })
    .await
}

async fn latency_phase(
    args: &BenchArgs,
    backend: BackendArg,
    relay_apart: bool,
    figures: &mut Figures,
) -> Result<()> {
    with_fixture(args, backend, async |fx| {
        let l = latency::measure(fx, args.rate, args.seconds, args.relay_batch, args.relay_workers, relay_apart).await?;
        println!(
            "  end-to-end{} at {}/s for {} s: {} published ({:.0}/s), {} measured; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            if relay_apart { " (relay in another process)" } else { "" },
            l.target_events_per_s, l.seconds, l.published, l.achieved_events_per_s, l.measured, l.p50_ms, l.p99_ms, l.max_ms
        );
        println!(
            "    where it goes: row written -> published p50 {:.0} / p99 {:.0} ms; commit -> received p50 {:.1} / p99 {:.1} ms; received -> applied p50 {:.1} / p99 {:.1} ms; {} consumer batches of {:.1} on average, process_batch {:.1} ms mean / {:.1} max, offset commit {:.1} ms mean",
            l.relay_lag_p50_ms,
            l.relay_lag_p99_ms,
            l.to_receive_p50_ms, l.to_receive_p99_ms, l.apply_p50_ms, l.apply_p99_ms, l.consumer_batches, l.consumer_mean_batch, l.process_batch_mean_ms, l.process_batch_max_ms, l.offset_commit_mean_ms
        );
        if let Some(first) = &l.first_publish_error {
            println!(
                "    {} publishing transactions failed; the first: {first}",
                l.publish_errors
            );
        }
        if relay_apart {
            figures.latency_apart = Some(l);
        } else {
            figures.latency = Some(l);
        }
        Ok(())
    })
    .await
}
