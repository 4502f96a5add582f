//! `cargo xtask chaos`: real processes under real faults. One `smartflow-broker` process, then
//! per backend two `smartflow-agent` processes on a fresh database, concurrent writers posting
//! chat messages over HTTP, and faults injected during the load (SIGKILL + restart, broker
//! outage, produce errors, database connections cut, SIGSTOP/SIGCONT, SIGTERM + restart). Then
//! the faults stop, the outbox is drained, and the figures say what was committed, applied,
//! lost, applied twice or stored out of order. See `docs/reliability.md` for the last run.
//!
//! Everything runs from [`run`], which the short SQLite test at the bottom calls too.

mod database;
mod faults;
mod load;
mod rng;
mod verdict;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::time::Instant;

use crate::backends::{BackendArg, BackendsArg};
use crate::process::{target_dir, BuildArgs};
use crate::processes::{self, BrokerProcess, ServiceProcess};
use database::ChaosDb;
use faults::{FaultKind, FaultRecord, FaultSettings, Targets};
use rng::Rng;
use verdict::Figures;

/// Partitions of each run's agent topic. The mock broker keeps only about the last 5 MB of each
/// partition, so more partitions hold more unconsumed messages while a fault stalls consumers.
const PARTITIONS: i32 = 12;
const PARTITIONS_TEXT: &str = "12";
/// The agents' graceful-stop grace.
const AGENT_GRACE: Duration = Duration::from_secs(10);
/// How often the drain wait reads the outbox.
const DRAIN_POLL: Duration = Duration::from_millis(250);

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    #[command(flatten)]
    backends: BackendsArg,
    /// A quick run: 30 s of load, 4 writers, 10 conversations, every fault once (explicit
    /// flags still win).
    #[arg(long)]
    short: bool,
    /// Seconds of load per backend [default: 180; --short: 30].
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Concurrent HTTP writers [default: 16; --short: 4].
    #[arg(long)]
    writers: Option<usize>,
    /// Conversations the writers spread over [default: 50; --short: 10].
    #[arg(long)]
    conversations: Option<usize>,
    /// Posts per second of all writers together, 0 for as fast as they go [default: 100;
    /// --short: 50]. Bounded by default so the mock broker's per-partition retention (about
    /// 5 MB) holds what piles up while a fault stalls the consumers.
    #[arg(long)]
    rate: Option<u64>,
    /// How many times each fault is injected [default: 2; --short: 1].
    #[arg(long)]
    fault_rounds: Option<usize>,
    /// Which faults to inject, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// Seconds the brokers stay down in a broker outage.
    #[arg(long, default_value_t = 6)]
    outage_secs: u64,
    /// Seconds an agent stays SIGSTOPped.
    #[arg(long, default_value_t = 6)]
    pause_secs: u64,
    /// Retryable (`not_leader`) Produce errors per produce-errors fault.
    #[arg(long, default_value_t = 50)]
    retryable_produce_errors: usize,
    /// Permanent (`message_too_large`) Produce errors per produce-errors fault; each fails one
    /// Produce request, so its rows are expected to end `dead` (reported, not judged).
    #[arg(long, default_value_t = 2)]
    permanent_produce_errors: usize,
    /// Seconds to wait for the outbox to drain after the load before calling it stuck.
    #[arg(long, default_value_t = 300)]
    drain_timeout_secs: u64,
    /// Seed of the fault timing and the writers' choices [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Keep each backend's database instead of dropping it.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    build: BuildArgs,
}

/// Everything a run needs, resolved from the arguments (or built by a test).
#[derive(Debug, Clone)]
pub struct Settings {
    pub backends: Vec<BackendArg>,
    pub duration: Duration,
    pub writers: usize,
    pub conversations: usize,
    /// Posts per second of all writers together; 0 for unbounded.
    pub rate: u64,
    /// One round of faults; each round injects these in a seeded random order.
    pub faults: Vec<FaultKind>,
    pub rounds: usize,
    /// Shuffle each round (the CLI always does); a test may want its faults in the given order.
    pub shuffle_faults: bool,
    pub fault: FaultSettings,
    pub drain_timeout: Duration,
    pub seed: u64,
    pub keep: bool,
    /// Where `smartflow-agent` and `smartflow-broker` are.
    pub bin_dir: PathBuf,
    /// Where the processes' logs go.
    pub run_dir: PathBuf,
}

impl Settings {
    fn from_args(args: &ChaosArgs, bin_dir: PathBuf, run_dir: PathBuf, seed: u64) -> Self {
        let (duration, writers, conversations, rounds, rate) = if args.short {
            (30, 4, 10, 1, 50)
        } else {
            (180, 16, 50, 2, 100)
        };
        Self {
            backends: args.backends.chosen(),
            duration: Duration::from_secs(args.duration_secs.unwrap_or(duration)),
            writers: args.writers.unwrap_or(writers).max(1),
            conversations: args.conversations.unwrap_or(conversations).max(1),
            rate: args.rate.unwrap_or(rate),
            faults: if args.faults.is_empty() {
                FaultKind::ALL.to_vec()
            } else {
                args.faults.clone()
            },
            rounds: args.fault_rounds.unwrap_or(rounds),
            shuffle_faults: true,
            fault: FaultSettings {
                outage: Duration::from_secs(args.outage_secs),
                pause: Duration::from_secs(args.pause_secs),
                retryable_produce_errors: args.retryable_produce_errors,
                permanent_produce_errors: args.permanent_produce_errors,
            },
            drain_timeout: Duration::from_secs(args.drain_timeout_secs),
            seed,
            keep: args.keep,
            bin_dir,
            run_dir,
        }
    }
}

pub fn main(args: ChaosArgs) -> Result<ExitCode> {
    let bin_dir = args
        .build
        .binaries(&["smartflow-agent", "smartflow-broker"])?;
    if args.backends.need_servers() {
        crate::services::ensure_databases()?;
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let run_dir = target_dir()
        .join("chaos")
        .join(format!("run-{}", uuid::Uuid::new_v4().simple()));
    let settings = Settings::from_args(&args, bin_dir, run_dir, seed);
    println!(
        "chaos: seed {seed}; {} s of load, {} writers at {} posts/s in all, {} conversations, {} fault round(s) of {:?}; logs in {}",
        settings.duration.as_secs(),
        settings.writers,
        if settings.rate == 0 { "unbounded".to_owned() } else { settings.rate.to_string() },
        settings.conversations,
        settings.rounds,
        settings.faults,
        settings.run_dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    let all = runtime.block_on(run(&settings))?;
    println!("\n{}", verdict::summary(&all));
    Ok(if all.iter().all(Figures::passed) {
        ExitCode::SUCCESS
    } else {
        println!("chaos: FAIL (loss, double effect, no drain, or a harness error; see above)");
        ExitCode::FAILURE
    })
}

/// Starts the broker, runs every backend of `settings` one after another against it, and
/// returns their figures. Fails only when the run cannot start at all (binaries missing, the
/// broker does not come up); a backend's own failure is in its figures.
pub async fn run(settings: &Settings) -> Result<Vec<Figures>> {
    let agent_bin = settings.bin_dir.join("smartflow-agent");
    let broker_bin = settings.bin_dir.join("smartflow-broker");
    for bin in [&agent_bin, &broker_bin] {
        if !bin.exists() {
            bail!("{} is not built", bin.display());
        }
    }
    std::fs::create_dir_all(&settings.run_dir)
        .with_context(|| format!("creating {}", settings.run_dir.display()))?;
    let mut broker = BrokerProcess::start(&broker_bin, &settings.run_dir).await?;
    println!("broker: {}", broker.bootstrap_servers);
    let mut all = Vec::new();
    for (i, &backend) in settings.backends.iter().enumerate() {
        println!("\n== {} ==", backend.label());
        let mut figures = Figures {
            label: backend.label().to_owned(),
            ..Figures::default()
        };
        let seed = settings.seed.wrapping_add(i as u64 * 7919);
        if let Err(e) = run_backend(
            settings,
            backend,
            &mut broker,
            &agent_bin,
            seed,
            &mut figures,
        )
        .await
        {
            println!("  {} FAILED: {e:#}", backend.label());
            figures.errors.push(format!("{e:#}"));
        }
        verdict::print(&figures);
        all.push(figures);
    }
    Ok(all)
}

/// The agents' environment apart from the database: the shared broker, this run's topics,
/// and the time-compressing knobs (variables an agent does not know are ignored).
fn agent_env(
    broker: &BrokerProcess,
    topic: &str,
    notification_topic: &str,
) -> Vec<(String, String)> {
    [
        ("SMARTFLOW_KAFKA_BROKERS", broker.bootstrap_servers.as_str()),
        ("SMARTFLOW_TOPIC", topic),
        ("SMARTFLOW_NOTIFICATION_TOPIC", notification_topic),
        ("SMARTFLOW_KAFKA_PARTITIONS", PARTITIONS_TEXT),
        ("SMARTFLOW_SHUTDOWN_GRACE_SECS", "10"),
        ("SMARTFLOW_BROKER_WAIT_SECS", "60"),
        ("SMARTFLOW_RETRY_BASE_MS", "100"),
        ("SMARTFLOW_RETRY_MAX_MS", "2000"),
        ("SMARTFLOW_RETRY_MAX_ATTEMPTS", "50"),
        ("SMARTFLOW_REPUBLISH_AFTER_MS", "10000"),
        ("SMARTFLOW_CLAIM_TIMEOUT_MS", "5000"),
        ("SMARTFLOW_KAFKA_MESSAGE_TIMEOUT_MS", "3000"),
        ("SMARTFLOW_KAFKA_SESSION_TIMEOUT_MS", "6000"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn run_backend(
    settings: &Settings,
    backend: BackendArg,
    broker: &mut BrokerProcess,
    agent_bin: &Path,
    seed: u64,
    figures: &mut Figures,
) -> Result<()> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let db = ChaosDb::create(backend.backend(), &tag[..12]).await?;
    println!("  database: {}", db.describe());
    let result = drive(
        settings, backend, broker, agent_bin, seed, &db, &tag, figures,
    )
    .await;
    db.cleanup(settings.keep).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    settings: &Settings,
    backend: BackendArg,
    broker: &mut BrokerProcess,
    agent_bin: &Path,
    seed: u64,
    db: &ChaosDb,
    tag: &str,
    figures: &mut Figures,
) -> Result<()> {
    let topic = format!("chaos-{}-{tag}", backend.key());
    broker.create_topic(&topic, PARTITIONS).await?;
    let mut env = agent_env(broker, &topic, &format!("chaos-notifications-{tag}"));
    env.extend(db.agent_env());
    let log_dir = settings.run_dir.join(backend.key());
    std::fs::create_dir_all(&log_dir)?;
    let mut agents = vec![
        ServiceProcess::new("agent-a", agent_bin, &log_dir, env.clone(), AGENT_GRACE)?,
        ServiceProcess::new("agent-b", agent_bin, &log_dir, env, AGENT_GRACE)?,
    ];
    for agent in &mut agents {
        agent.start().await?;
        println!(
            "  {} up on {} (log {})",
            agent.name,
            agent.addr,
            agent.log().display()
        );
    }

    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let load_end = started + settings.duration;
    let urls: Vec<String> = agents.iter().map(ServiceProcess::base_url).collect();
    let writers: Vec<_> = (0..settings.writers)
        .map(|w| {
            tokio::spawn(load::writer(
                w,
                urls.clone(),
                settings.conversations,
                pace(settings),
                load_end,
                rng.next_u64(),
            ))
        })
        .collect();
    println!(
        "  load: {} writers for {} s",
        settings.writers,
        settings.duration.as_secs()
    );

    let mut plan = Vec::new();
    for _ in 0..settings.rounds {
        let mut round = settings.faults.clone();
        if settings.shuffle_faults {
            rng.shuffle(&mut round);
        }
        plan.extend(round);
    }
    let moments = faults::schedule(&plan, settings.duration, &mut rng);
    let mut targets = Targets {
        agents: &mut agents,
        broker,
        db,
    };
    let mut last_fault_end = started;
    for (kind, at) in plan.iter().zip(moments) {
        tokio::time::sleep_until(started + Duration::from_secs_f64(at)).await;
        check_processes(&mut targets, figures).await;
        let begun = started.elapsed().as_secs_f64();
        let outcome = faults::inject(*kind, &mut targets, &settings.fault, &mut rng).await;
        let ended = started.elapsed().as_secs_f64();
        last_fault_end = Instant::now();
        let detail = match outcome {
            Ok(detail) => detail,
            Err(e) => {
                figures.errors.push(format!("fault {kind:?}: {e:#}"));
                format!("FAILED: {e:#}")
            }
        };
        println!("  t={begun:6.1}s..{ended:6.1}s  {kind:?}: {detail}");
        figures.faults.push(FaultRecord {
            kind: *kind,
            started: begun,
            ended,
            detail,
        });
    }
    let mut posts = Vec::new();
    for writer in writers {
        posts.extend(writer.await.context("a writer task panicked")?);
    }
    let load_ended = Instant::now();
    faults::heal(&mut targets).await;
    check_processes(&mut targets, figures).await;
    let accepted = posts
        .iter()
        .filter(|p| p.outcome == load::Outcome::Accepted)
        .count();
    println!(
        "  load over: {} posts, {accepted} accepted; waiting for the outbox to drain",
        posts.len()
    );

    let reader = db.reader().await;
    let deadline = Instant::now() + settings.drain_timeout;
    let mut last_report = Instant::now();
    loop {
        match db.stats(&reader).await {
            Ok(stats) if stats.pending + stats.published == 0 => {
                let now = Instant::now();
                figures.drain_after_last_fault =
                    Some(now.duration_since(last_fault_end).as_secs_f64());
                figures.drain_after_load = Some(now.duration_since(load_ended).as_secs_f64());
                break;
            }
            Ok(stats) => {
                if last_report.elapsed() > Duration::from_secs(10) {
                    println!(
                        "  draining: {} pending, {} published, {} consumed, {} dead",
                        stats.pending, stats.published, stats.consumed, stats.dead
                    );
                    last_report = Instant::now();
                }
                if Instant::now() > deadline {
                    println!(
                        "  NOT DRAINED after {} s: {} pending, {} published",
                        settings.drain_timeout.as_secs(),
                        stats.pending,
                        stats.published
                    );
                    break;
                }
            }
            Err(e) => println!("  reading the outbox failed (retrying): {e:#}"),
        }
        check_processes(&mut targets, figures).await;
        tokio::time::sleep(DRAIN_POLL).await;
    }

    for agent in targets.agents.iter_mut() {
        if agent.is_running() {
            let ended = agent.terminate().await?;
            println!(
                "  {} stopped: {ended} ({} start(s))",
                agent.name,
                agent.starts()
            );
        }
    }
    figures.offset_resets = targets
        .agents
        .iter()
        .map(|a| processes::count_lines(a.log(), "offset reset"))
        .sum();
    let snapshot = db.snapshot(&reader, settings.conversations).await?;
    reader.close().await.ok();
    verdict::judge(figures, &posts, &snapshot);
    Ok(())
}

/// The pause between one writer's posts for the run's total rate, if bounded.
fn pace(settings: &Settings) -> Option<Duration> {
    (settings.rate > 0)
        .then(|| Duration::from_secs_f64(settings.writers as f64 / settings.rate as f64))
}

/// Notices an agent or the broker that died by itself: recorded as a finding, and the agent is
/// restarted so the run goes on.
async fn check_processes(targets: &mut Targets<'_>, figures: &mut Figures) {
    if let Err(e) = targets.broker.check_alive() {
        println!("  UNEXPECTED: {e:#}");
        figures.errors.push(format!("{e:#}"));
    }
    for agent in targets.agents.iter_mut() {
        if let Err(e) = agent.check_alive() {
            println!("  UNEXPECTED: {e:#}");
            figures.unexpected_exits.push(format!("{e:#}"));
            if let Err(e) = agent.start().await {
                figures
                    .errors
                    .push(format!("restarting {}: {e:#}", agent.name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short chaos on SQLite: a few writers for 15 s, one SIGKILL + restart and one broker
    /// outage. Whatever was committed must be applied exactly once. The kill comes first, so the
    /// consumer group's wait for the killed member's session to expire overlaps the load.
    #[test]
    fn a_short_chaos_on_sqlite_loses_nothing_and_applies_nothing_twice() {
        let Some(bin_dir) =
            processes::bin_dir_of_this_test(&["smartflow-agent", "smartflow-broker"])
        else {
            println!(
                "skipping the short chaos run: smartflow-agent and smartflow-broker are not built \
                 next to this test (`cargo build -p smartflow-agent -p smartflow-broker`, or run \
                 `cargo test --workspace`, which builds them)"
            );
            return;
        };
        let run_dir = std::env::temp_dir().join(format!(
            "smartflow-chaos-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let settings = Settings {
            backends: vec![BackendArg::Sqlite],
            duration: Duration::from_secs(15),
            writers: 4,
            conversations: 8,
            rate: 100,
            faults: vec![FaultKind::Kill, FaultKind::BrokerOutage],
            rounds: 1,
            shuffle_faults: false,
            fault: FaultSettings {
                outage: Duration::from_secs(3),
                pause: Duration::from_secs(2),
                retryable_produce_errors: 0,
                permanent_produce_errors: 0,
            },
            // A bound on a hung run, not a threshold: a drain takes what it takes.
            drain_timeout: Duration::from_secs(300),
            seed: 42,
            keep: false,
            bin_dir,
            run_dir: run_dir.clone(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let all = runtime.block_on(run(&settings)).unwrap();
        let f = &all[0];
        assert!(f.errors.is_empty(), "harness errors: {:?}", f.errors);
        assert!(f.accepted > 0, "no post was accepted: {f:?}");
        assert!(
            f.drain_after_load.is_some(),
            "the outbox never drained: {f:?}"
        );
        assert_eq!(f.lost, 0, "committed events were lost: {f:?}");
        assert_eq!(f.acknowledged_not_committed, 0, "{f:?}");
        assert_eq!(f.applied_twice, 0, "events applied twice: {f:?}");
        assert_eq!(f.applied_without_commit, 0, "{f:?}");
        let _ = std::fs::remove_dir_all(&run_dir);
    }
}
