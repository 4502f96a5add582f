//! The `smartflow` binary: reads the configuration, starts every service and stops them on
//! SIGINT or SIGTERM, or when one of them stops on its own.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use smartflow_cli::{start_all, AllConfig};
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
    let config = AllConfig::parse();
    match run(config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smartflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: AllConfig) -> anyhow::Result<ExitCode> {
    // Installed before start-up, so a stop request during a long wait for the database or the
    // broker ends the wait instead of being held until everything is up.
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let all = tokio::select! {
        started = start_all(config) => started?,
        _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
        _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
    };
    let failed = tokio::select! {
        _ = terminate.recv() => { tracing::info!("SIGTERM received"); false }
        _ = interrupt.recv() => { tracing::info!("SIGINT received"); false }
        service = all.stopped() => {
            tracing::error!(service, "a service stopped on its own; stopping the others");
            true
        }
    };
    all.shutdown().await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
