//! The `smartflow` binary: with no subcommand, reads the configuration, starts every service and
//! stops them on SIGINT or SIGTERM, or when one of them stops on its own; with `outbox` or
//! `inbox`, runs that admin command and exits.

use std::process::ExitCode;

use clap::Parser;
use smartflow_cli::{admin, start_all, AllConfig, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(command) => admin::run(command, &cli.run.service).await,
        // The skeleton parses the same arguments again as `AllConfig`; without a subcommand
        // they are exactly its own, so it reads what `Cli` just accepted.
        None => smartflow_service::run_service::<AllConfig, _, _, _>("smartflow", start_all).await,
    }
}
