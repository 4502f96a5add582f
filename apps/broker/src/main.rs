//! The `smartflow-broker` binary: reads the configuration, runs the development broker and
//! stops it on SIGINT or SIGTERM (exit 0).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use smartflow_broker::BrokerConfig;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in a log file or a collector's pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = BrokerConfig::parse();
    // Installed before start-up, so a stop request during start-up is not missed.
    let (mut terminate, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("smartflow-broker: cannot install the signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    };
    match smartflow_broker::run(config, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smartflow-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
