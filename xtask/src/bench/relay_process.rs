//! The relay in a process of its own, for the latency measured with the relay apart from the
//! publisher: `cargo xtask bench-relay` (hidden) runs one relay of a benchmark fixture's outbox
//! until its standard input closes, so it finds new rows as a relay in another process does (on
//! PostgreSQL woken by the publishers' `NOTIFY`, elsewhere by polling).

use std::io::{BufRead, BufReader, Read};
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result};
use smartflow_bus::{Metrics, Relay};
use smartflow_kafka::{KafkaConfig, KafkaProducer};
use smartflow_storage::ConnectConfig;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::fixture::{relay_config, Fixture};
use crate::processes::{Owned, START_PATIENCE};

/// The line the relay process prints once its relay runs.
const READY: &str = "relay running";

/// What `bench-relay` needs of the fixture: where its outbox and broker are, and the relay's
/// tuning.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayProcessArgs {
    /// The database URL.
    #[arg(long)]
    url: String,
    /// PostgreSQL only: the fixture's schema.
    #[arg(long)]
    pg_schema: Option<String>,
    /// The outbox table.
    #[arg(long)]
    table: String,
    /// The broker's bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// A librdkafka property, as KEY=VALUE (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::key_value)]
    kafka_set: Vec<(String, String)>,
    #[arg(long)]
    batch_size: u64,
    #[arg(long)]
    workers: usize,
}

/// `cargo xtask bench-relay`: runs the relay until standard input closes.
pub fn main(args: RelayProcessArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    runtime.block_on(run(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn run(args: RelayProcessArgs) -> Result<()> {
    let mut connect = ConnectConfig::new(&args.url);
    connect.pg_schema = args.pg_schema;
    let db = smartflow_storage::connect(&connect)
        .await
        .context("the relay process connecting to the database")?;
    let mut kafka = KafkaConfig::new(args.brokers);
    kafka.extra = args.kafka_set;
    let producer = Arc::new(KafkaProducer::new(&kafka)?);
    let relay = Relay::new(
        db,
        &args.table,
        producer,
        relay_config(args.batch_size, args.workers),
        Arc::new(Notify::new()),
        Arc::new(Metrics::default()),
    )?;
    let stop = CancellationToken::new();
    // The parent closes our standard input to stop us (and it closes when the parent dies).
    std::thread::spawn({
        let stop = stop.clone();
        move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.cancel();
        }
    });
    let running = tokio::spawn(relay.run(stop));
    println!("{READY}");
    running.await?;
    Ok(())
}

/// A relay process of a fixture's outbox; killed when dropped.
pub struct RelayProcess {
    process: Owned,
    stdin: ChildStdin,
}

impl RelayProcess {
    /// Starts `cargo xtask bench-relay` (this executable) on `fx`'s outbox and broker (with the
    /// fixture's librdkafka properties) and waits until its relay runs.
    pub async fn start(fx: &Fixture, batch_size: u64, workers: usize) -> Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("bench-relay")
            .args(["--url", &fx.testdb.config.url])
            .args(["--table", &fx.route.outbox_table])
            .args(["--brokers", &fx.kafka.brokers])
            .args(["--batch-size", &batch_size.to_string()])
            .args(["--workers", &workers.to_string()]);
        if let Some(schema) = &fx.testdb.config.pg_schema {
            command.args(["--pg-schema", schema]);
        }
        for (key, value) in &fx.kafka.extra {
            command.args(["--kafka-set", &format!("{key}={value}")]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the relay process")?;
        let stdin = child.stdin.take().context("the relay process's stdin")?;
        let stdout = child.stdout.take().context("the relay process's stdout")?;
        let ready = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line == READY)
        });
        let mut process = Owned { child };
        match tokio::time::timeout(START_PATIENCE, ready).await {
            Ok(Ok(true)) => Ok(Self { process, stdin }),
            _ => {
                let status = process.exited();
                anyhow::bail!("the relay process did not start (exit status: {status:?})")
            }
        }
    }

    /// Closes the process's standard input, so its relay settles what it has in flight and
    /// stops, and waits for it to exit.
    pub async fn stop(self) -> Result<()> {
        let Self { mut process, stdin } = self;
        drop(stdin);
        let status = tokio::task::spawn_blocking(move || process.wait()).await??;
        anyhow::ensure!(status.success(), "the relay process failed: {status}");
        Ok(())
    }
}
