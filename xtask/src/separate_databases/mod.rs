//! `cargo xtask separate-databases`: the three services as separate processes, each on a
//! database of its own, sharing only one `smartflow-broker`. Per backend: three fresh databases
//! (a schema, a database or a file each), the broker, userauth, the agent (pointed at userauth)
//! and notification (pointed at a local stand-in for Feishu); a user registers, chats in two
//! conversations over HTTP, and the run waits until the history, the notifications and the
//! token usage are right, then reads every database to see that each service's rows are in its
//! own. A second phase restarts notification while the agent sends every event again, and a
//! new conversation must still be notified exactly once. See [`scenario`] for the steps.
//!
//! Everything runs from [`run`], which the test at the bottom calls too.

mod api;
mod databases;
mod expected;
mod scenario;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::backends::{BackendArg, BackendsArg};
use crate::process::{target_dir, BuildArgs};

/// The binaries a run starts: the packages and their executables share these names.
pub const BINARIES: [&str; 4] = [
    "smartflow-broker",
    "smartflow-userauth",
    "smartflow-agent",
    "smartflow-notification",
];

#[derive(clap::Args, Debug, Clone)]
pub struct SeparateArgs {
    #[command(flatten)]
    build: BuildArgs,
    #[command(flatten)]
    backends: BackendsArg,
    /// Keep each backend's three databases instead of dropping them.
    #[arg(long)]
    keep: bool,
}

/// A run: where the binaries are and the logs go, and on which backends.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the four binaries are.
    pub bin_dir: PathBuf,
    /// Where the processes' logs go, a folder per backend.
    pub run_dir: PathBuf,
    pub backends: Vec<BackendArg>,
    /// Keep the databases instead of dropping them.
    pub keep: bool,
}

/// How one backend's run went.
#[derive(Debug)]
pub struct Outcome {
    pub backend: BackendArg,
    pub took: Duration,
    pub result: Result<()>,
}

pub fn main(args: SeparateArgs) -> Result<ExitCode> {
    let bin_dir = args.build.binaries(&BINARIES)?;
    if args.backends.need_servers() {
        crate::services::ensure_databases()?;
    }
    let run_dir = target_dir()
        .join("separate-databases")
        .join(format!("run-{}", uuid::Uuid::new_v4().simple()));
    let settings = Settings {
        bin_dir,
        run_dir,
        backends: args.backends.chosen(),
        keep: args.keep,
    };
    println!("separate-databases: logs in {}", settings.run_dir.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the Tokio runtime")?;
    let outcomes = runtime.block_on(run(&settings))?;
    println!("\n{}", summary(&outcomes));
    Ok(if outcomes.iter().all(|o| o.result.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the scenario on every backend of `settings`, one after another, each with a broker of
/// its own. Fails only when the run cannot start at all (a binary missing); a backend's own
/// failure is in its outcome.
pub async fn run(settings: &Settings) -> Result<Vec<Outcome>> {
    for bin in BINARIES {
        let path = settings.bin_dir.join(bin);
        anyhow::ensure!(path.exists(), "{} is not built", path.display());
    }
    std::fs::create_dir_all(&settings.run_dir)
        .with_context(|| format!("creating {}", settings.run_dir.display()))?;
    let mut outcomes = Vec::new();
    for &backend in &settings.backends {
        println!("\n== {} ==", backend.label());
        let started = Instant::now();
        let result = scenario::run(settings, backend).await;
        let took = started.elapsed();
        match &result {
            Ok(()) => println!(
                "  {} passed in {:.1} s",
                backend.label(),
                took.as_secs_f64()
            ),
            Err(e) => println!(
                "  {} FAILED after {:.1} s: {e:#}",
                backend.label(),
                took.as_secs_f64()
            ),
        }
        outcomes.push(Outcome {
            backend,
            took,
            result,
        });
    }
    Ok(outcomes)
}

/// One line per backend: passed, or failed with the first line of why (the whole of it, with
/// the log tails, was printed when it happened).
pub fn summary(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| {
            let verdict = match &o.result {
                Ok(()) => "passed".to_owned(),
                Err(e) => {
                    let why = format!("{e:#}");
                    format!("FAILED: {}", why.lines().next().unwrap_or_default())
                }
            };
            format!(
                "separate-databases {}: {verdict} ({:.1} s)",
                o.backend.label(),
                o.took.as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processes::bin_dir_of_this_test;

    /// The services on a database each, sharing one broker, on every backend: chat, usage and
    /// notifications work end to end, each service's rows are in its own database only, and a
    /// notification process restarted while every event is sent again notifies nobody twice.
    #[test]
    fn services_on_their_own_databases_work_together_on_every_backend() {
        let Some(bin_dir) = bin_dir_of_this_test(&BINARIES) else {
            println!(
                "skipping the separate-databases run: {BINARIES:?} are not built next to this \
                 test (`cargo build --workspace`, or run `cargo test --workspace`, which builds \
                 them)"
            );
            return;
        };
        let run_dir = std::env::temp_dir().join(format!(
            "smartflow-separate-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let settings = Settings {
            bin_dir,
            run_dir: run_dir.clone(),
            backends: vec![
                BackendArg::Sqlite,
                BackendArg::Postgres,
                BackendArg::Mariadb,
            ],
            keep: false,
        };
        // A multi-threaded runtime with every driver: what `main` builds too.
        let outcomes = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(run(&settings))
            .unwrap();
        let failures: Vec<String> = outcomes
            .iter()
            .filter_map(|o| {
                o.result
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e:#}", o.backend.label()))
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{}\n\n{}\n(logs in {})",
            summary(&outcomes),
            failures.join("\n\n"),
            run_dir.display()
        );
        let _ = std::fs::remove_dir_all(&run_dir);
    }
}
