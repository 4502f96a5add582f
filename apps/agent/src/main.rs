//! The `smartflow-agent` binary: reads the configuration, starts the agent and stops it on
//! SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use smartflow_agent::{Agent, AgentConfig};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = AgentConfig::parse();
    match run(config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smartflow-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: AgentConfig) -> anyhow::Result<ExitCode> {
    // Installed before start-up, so a stop request during a long wait for the database or the
    // broker ends the wait instead of being held until the agent is up.
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let agent = tokio::select! {
        started = Agent::start(config) => started?,
        _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
        _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
    };
    let failed = tokio::select! {
        _ = terminate.recv() => { tracing::info!("SIGTERM received"); false }
        _ = interrupt.recv() => { tracing::info!("SIGINT received"); false }
        // A background task failed; the agent has already begun to stop.
        _ = agent.stopped() => true,
    };
    agent.shutdown().await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
