//! The faults a chaos run injects, one at a time, at seeded random moments of the load.

use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;
use tokio::time::Instant;

use super::database::ChaosDb;
use super::rng::Rng;
use crate::processes::{BrokerProcess, ServiceProcess};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultKind {
    /// SIGKILL an agent, restart it a moment later.
    Kill,
    /// Every broker of the cluster down for `--outage-secs`, then up.
    BrokerOutage,
    /// Retryable (`not_leader`) then permanent (`message_too_large`) Produce errors.
    ProduceErrors,
    /// Terminate the agents' database connections (PostgreSQL, MariaDB; nothing to cut on SQLite).
    DbConnections,
    /// SIGSTOP an agent for `--pause-secs`, then SIGCONT.
    Pause,
    /// SIGTERM an agent in the middle of the load (a graceful stop), restart it.
    GracefulStop,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::BrokerOutage,
        FaultKind::ProduceErrors,
        FaultKind::DbConnections,
        FaultKind::Pause,
        FaultKind::GracefulStop,
    ];
}

/// How strong the faults are.
#[derive(Debug, Clone)]
pub struct FaultSettings {
    pub outage: Duration,
    pub pause: Duration,
    pub retryable_produce_errors: usize,
    pub permanent_produce_errors: usize,
}

/// One injected fault, for the report.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// Seconds since the load started.
    pub started: f64,
    pub ended: f64,
    pub detail: String,
}

/// What a fault acts on.
pub struct Targets<'a> {
    pub agents: &'a mut [ServiceProcess],
    pub broker: &'a mut BrokerProcess,
    pub db: &'a ChaosDb,
}

/// The moments (seconds after the load starts) at which the faults of `plan` begin: evenly
/// spread over 10%..80% of the load, each jittered within the first 40% of its slot, so the
/// last fault is over well before the load ends.
pub fn schedule(plan: &[FaultKind], load: Duration, rng: &mut Rng) -> Vec<f64> {
    let (start, end) = (load.as_secs_f64() * 0.10, load.as_secs_f64() * 0.80);
    let slot = (end - start) / plan.len().max(1) as f64;
    (0..plan.len())
        .map(|i| start + slot * i as f64 + slot * 0.4 * rng.unit())
        .collect()
}

/// Injects one fault and undoes it; returns what was done.
pub async fn inject(
    kind: FaultKind,
    targets: &mut Targets<'_>,
    settings: &FaultSettings,
    rng: &mut Rng,
) -> Result<String> {
    match kind {
        FaultKind::Kill => {
            let agent = &mut targets.agents[rng.below(targets.agents.len())];
            agent.kill();
            let down = Duration::from_millis(500 + rng.below(2000) as u64);
            tokio::time::sleep(down).await;
            let since = Instant::now();
            agent.start().await?;
            Ok(format!(
                "SIGKILL {}, restarted after {:.1} s (healthy {:.1} s later)",
                agent.name,
                down.as_secs_f64(),
                since.elapsed().as_secs_f64()
            ))
        }
        FaultKind::BrokerOutage => {
            targets.broker.set_all(false).await?;
            tokio::time::sleep(settings.outage).await;
            targets.broker.set_all(true).await?;
            Ok(format!(
                "every broker down for {:.1} s, then up",
                settings.outage.as_secs_f64()
            ))
        }
        FaultKind::ProduceErrors => {
            let mut done = Vec::new();
            if settings.retryable_produce_errors > 0 {
                targets
                    .broker
                    .inject_produce_errors(settings.retryable_produce_errors, "not_leader")
                    .await?;
                done.push(format!("{} not_leader", settings.retryable_produce_errors));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            if settings.permanent_produce_errors > 0 {
                targets
                    .broker
                    .inject_produce_errors(settings.permanent_produce_errors, "message_too_large")
                    .await?;
                done.push(format!(
                    "{} message_too_large",
                    settings.permanent_produce_errors
                ));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            targets.broker.clear_produce_errors().await?;
            Ok(format!(
                "Produce errors injected: {}; the unused ones cleared",
                if done.is_empty() {
                    "none".to_owned()
                } else {
                    done.join(", ")
                }
            ))
        }
        FaultKind::DbConnections => {
            let first = targets.db.kill_agent_connections().await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let second = targets.db.kill_agent_connections().await?;
            Ok(match (first, second) {
                (Some(a), Some(b)) => {
                    format!("agents' database connections cut twice, 1 s apart: {a} then {b}")
                }
                _ => "database connections: nothing to cut on SQLite (skipped)".to_owned(),
            })
        }
        FaultKind::Pause => {
            let agent = &targets.agents[rng.below(targets.agents.len())];
            agent.pause()?;
            tokio::time::sleep(settings.pause).await;
            agent.resume()?;
            Ok(format!(
                "SIGSTOP {} for {:.1} s, then SIGCONT",
                agent.name,
                settings.pause.as_secs_f64()
            ))
        }
        FaultKind::GracefulStop => {
            let agent = &mut targets.agents[rng.below(targets.agents.len())];
            let since = Instant::now();
            let ended = agent.terminate().await?;
            let stopping = since.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(500)).await;
            agent.start().await?;
            Ok(format!(
                "SIGTERM {}: {ended} after {stopping:.1} s; restarted",
                agent.name
            ))
        }
    }
}

/// Undoes anything a failed or interrupted fault may have left: brokers up, no injected
/// errors, every agent continued and running. Errors are printed, not returned: this runs on
/// the way to the verdict.
pub async fn heal(targets: &mut Targets<'_>) {
    if let Err(e) = targets.broker.set_all(true).await {
        println!("  heal: bringing the brokers up failed: {e:#}");
    }
    if let Err(e) = targets.broker.clear_produce_errors().await {
        println!("  heal: clearing produce errors failed: {e:#}");
    }
    for agent in targets.agents.iter_mut() {
        if agent.is_running() {
            // SIGCONT to a process that is not stopped does nothing.
            let _ = agent.resume();
        } else if let Err(e) = agent.start().await {
            println!("  heal: restarting {} failed: {e:#}", agent.name);
        }
    }
}
