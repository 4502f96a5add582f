//! The `smartflow` binary: reads the configuration, starts every service and stops them on
//! SIGINT or SIGTERM, or when one of them stops on its own.

use std::process::ExitCode;

use smartflow_cli::{start_all, AllConfig};

#[tokio::main]
async fn main() -> ExitCode {
    smartflow_service::run_service::<AllConfig, _, _, _>("smartflow", start_all).await
}
