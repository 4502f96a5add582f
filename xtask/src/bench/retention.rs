//! Figure e: what retention costs the relay. The relay drains a backlog twice, on a table that
//! holds as many old consumed rows as the backlog: once with retention deleting them beside it
//! (every 50 ms, 1,000 rows a statement), once with retention off.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use sea_orm::{ConnectionTrait, DbBackend};
use serde::Serialize;
use smartflow_bus::Retention;
use smartflow_storage::now_millis;
use smartflow_storage::outbox::OutboxTable;

use super::fixture::Fixture;
use super::throughput::{preload, relay_through, warmed_producer, RelayThroughput};

#[derive(Debug, Clone, Serialize)]
pub struct RetentionCost {
    /// Old consumed rows in the table when each drain starts.
    pub old_rows: usize,
    /// Of them, deleted by retention while the relay drained.
    pub deleted_during_drain: u64,
    pub with_retention: RelayThroughput,
    pub without_retention: RelayThroughput,
    /// `1 - with / without`: the share of the relay's rate retention took.
    pub slowdown: f64,
}

/// Makes every row of the table a consumed row last changed two days ago (called before a
/// drain's backlog is written), and on PostgreSQL vacuums, so both drains start from the same
/// kind of table.
async fn age_everything_as_consumed(fx: &Fixture) -> Result<()> {
    let table = &fx.route.outbox_table;
    let two_days_ago = now_millis() - 48 * 3_600_000;
    fx.db()
        .execute_unprepared(&format!(
            "UPDATE {table} SET status = 'consumed', next_retry_at = NULL, \
             updated_at = {two_days_ago}"
        ))
        .await?;
    if fx.db().get_database_backend() == DbBackend::Postgres {
        fx.db()
            .execute_unprepared(&format!("VACUUM ANALYZE {table}"))
            .await?;
    }
    Ok(())
}

pub async fn measure(
    fx: &Fixture,
    rows: usize,
    batch_size: u64,
    workers: usize,
) -> Result<RetentionCost> {
    let table = OutboxTable::new(&fx.route.outbox_table)?;
    let producer = Arc::new(warmed_producer(fx).await?);
    // The rows retention is to delete.
    preload(fx, rows, 1000).await?;
    age_everything_as_consumed(fx).await?;
    let consumed_before = table.stats(fx.db()).await?.consumed;
    let retention = Retention {
        outbox: Some(Duration::from_secs(3600)),
        interval: Duration::from_millis(50),
        ..Retention::default()
    };
    let with_retention =
        relay_through(fx, rows, batch_size, workers, producer.clone(), retention).await?;
    let consumed_after = table.stats(fx.db()).await?.consumed;
    let deleted_during_drain = consumed_before.saturating_sub(consumed_after);
    ensure!(
        deleted_during_drain > 0,
        "retention deleted nothing while the relay drained"
    );
    // The drained rows become the old consumed rows of the second drain: as many.
    age_everything_as_consumed(fx).await?;
    let without_retention = relay_through(
        fx,
        rows,
        batch_size,
        workers,
        producer,
        Retention {
            outbox: None,
            ..Retention::default()
        },
    )
    .await?;
    Ok(RetentionCost {
        old_rows: rows,
        deleted_during_drain,
        slowdown: 1.0 - with_retention.rows_per_s / without_retention.rows_per_s,
        with_retention,
        without_retention,
    })
}
