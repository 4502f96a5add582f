//! The `smartflow-userauth` binary: reads the configuration, starts userauth and stops it on
//! SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use smartflow_userauth::{Userauth, UserauthConfig};
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
    let config = UserauthConfig::parse();
    match run(config).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smartflow-userauth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: UserauthConfig) -> anyhow::Result<ExitCode> {
    // Installed before start-up, so a stop request during a long wait for the database or the
    // broker ends the wait.
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let userauth = tokio::select! {
        started = Userauth::start(config) => started?,
        _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
        _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
    };
    let failed = tokio::select! {
        _ = terminate.recv() => { tracing::info!("SIGTERM received"); false }
        _ = interrupt.recv() => { tracing::info!("SIGINT received"); false }
        _ = userauth.stopped() => true,
    };
    userauth.shutdown().await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
