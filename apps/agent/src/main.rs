//! The `smartflow-agent` binary: reads the configuration, starts the agent and stops it on
//! SIGINT or SIGTERM.

use std::process::ExitCode;

use smartflow_agent::{Agent, AgentConfig};

#[tokio::main]
async fn main() -> ExitCode {
    smartflow_service::run_service::<AgentConfig, _, _, _>("smartflow-agent", Agent::start).await
}
