//! The `main()` of every service binary: logging, configuration, start, wait for a stop
//! request or a failure, stop.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use crate::logging::{self, LogSettings};

/// A started service as `main` drives it.
pub trait RunningService {
    /// Resolves once the service is stopping: after a shutdown, or when a background task
    /// ended on its own (a failure, already logged), which stops the rest too.
    fn stopped(&self) -> impl Future<Output = ()>;

    /// Stops gracefully, waiting at most the configured grace period for the background work.
    fn shutdown(self) -> impl Future<Output = ()>;
}

/// Initialises logging to stderr (`RUST_LOG`, `info` by default; `SMARTFLOW_LOG_FORMAT`) and
/// the trace export (`OTEL_EXPORTER_OTLP_ENDPOINT`, [`crate::logging`]), parses `C` from the
/// command line and environment, starts the service, and stops it on SIGINT or SIGTERM or when it stops
/// on its own. Exits with failure when start-up failed (the error is printed after `binary`) or
/// a background task failed.
pub async fn run_service<C, S, F, Fut>(binary: &str, start: F) -> ExitCode
where
    C: Parser,
    S: RunningService,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<S>>,
{
    let tracing =
        match LogSettings::from_env().and_then(|settings| logging::init(&settings, binary)) {
            Ok(tracing) => tracing,
            Err(e) => {
                eprintln!("{binary}: {e}");
                return ExitCode::FAILURE;
            }
        };
    let config = C::parse();
    let code = match run(config, start).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{binary}: {e:#}");
            ExitCode::FAILURE
        }
    };
    tracing.shutdown().await;
    code
}

async fn run<C, S, F, Fut>(config: C, start: F) -> anyhow::Result<ExitCode>
where
    S: RunningService,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<S>>,
{
    // Installed before start-up, so a stop request during a long wait for the database or the
    // broker ends the wait instead of being held until the service is up.
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let service = tokio::select! {
        started = start(config) => started?,
        _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
        _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
    };
    let failed = tokio::select! {
        _ = terminate.recv() => { tracing::info!("SIGTERM received"); false }
        _ = interrupt.recv() => { tracing::info!("SIGINT received"); false }
        // A background task failed; the service has already begun to stop.
        _ = service.stopped() => true,
    };
    service.shutdown().await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
