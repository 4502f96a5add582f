//! The `smartflow-userauth` binary: reads the configuration, starts userauth and stops it on
//! SIGINT or SIGTERM.

use std::process::ExitCode;

use smartflow_userauth::{Userauth, UserauthConfig};

#[tokio::main]
async fn main() -> ExitCode {
    smartflow_service::run_service::<UserauthConfig, _, _, _>("smartflow-userauth", Userauth::start)
        .await
}
