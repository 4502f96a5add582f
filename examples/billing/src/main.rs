//! The `smartflow-billing` binary: reads the configuration, starts billing and stops it on
//! SIGINT or SIGTERM.

use std::process::ExitCode;

use smartflow_example_billing::{Billing, BillingConfig};

#[tokio::main]
async fn main() -> ExitCode {
    smartflow_service::run_service::<BillingConfig, _, _, _>("smartflow-billing", Billing::start)
        .await
}
