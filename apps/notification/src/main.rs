//! The `smartflow-notification` binary: reads the configuration, starts the service and stops
//! it on SIGINT or SIGTERM.

use std::process::ExitCode;

use smartflow_notification::{Notification, NotificationConfig};

#[tokio::main]
async fn main() -> ExitCode {
    smartflow_service::run_service::<NotificationConfig, _, _, _>(
        "smartflow-notification",
        Notification::start,
    )
    .await
}
