//! The operator's work on a service's own outbox and inbox: what the `smartflow outbox|inbox`
//! commands (apps/smartflow) and the admin HTTP API ([`admin_routes`], beside `/metrics`) share:
//! the parsing of filters ([`selection`]), the JSON shapes ([`json`]), and the plans built from
//! storage's queries before a change; and the dashboard page over that API ([`dashboard`]).

mod api;
pub mod dashboard;
pub mod json;
pub mod selection;

use sea_orm::ConnectionTrait;
use smartflow_storage::outbox::{OutboxFilter, OutboxTable};
use smartflow_storage::StorageError;

pub use api::{admin_routes, AdminTables};
pub use dashboard::{dashboard_routes, DASHBOARD_PATH};

/// Rows a change (redrive, purge, unblock) makes without a confirmation: `--confirm-above`'s
/// default in the CLI, and the bound above which the API wants `"confirm": true`.
pub const DEFAULT_CONFIRM_ABOVE: u64 = 10;

/// The `dead` rows of `table` a redrive of `filter` would move, in id order. Refused (also for
/// a dry run, which would otherwise promise what the real run refuses) when there are some and
/// the table has no redrive history.
pub async fn redrive_plan<C: ConnectionTrait>(
    conn: &C,
    table: &OutboxTable,
    filter: &OutboxFilter,
) -> Result<Vec<i64>, StorageError> {
    let ids = table.dead_ids(conn, filter).await?;
    if !ids.is_empty() && !table.has_redrive_history(conn).await? {
        return Err(StorageError::NoRedriveHistory {
            table: table.name().to_owned(),
        });
    }
    Ok(ids)
}
