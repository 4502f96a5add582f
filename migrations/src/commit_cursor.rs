use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveIden)]
enum Outbox {
    Txid,
}

#[derive(DeriveIden)]
enum Shards {
    SentTxid,
    SentId,
    CheckTxid,
    CheckId,
    CheckAt,
}

/// Adds the commit cursor to an outbox table `name` and its shard table, where missing: what
/// lets the relay publish new rows without writing each of them a second time.
///
/// - `txid` on the outbox (bigint, 0 for the rows that exist): on PostgreSQL the id of the
///   transaction that wrote the row (`pg_current_xact_id()`, PostgreSQL 13+), elsewhere 0.
/// - `sent_txid`, `sent_id` on `<name>_shards`: each shard's cursor, the last `(txid, id)` the
///   relay sent in order; a `pending` row at or below it that was never retried has been sent.
/// - `check_txid`, `check_id`, `check_at`: the cursor as it was at `check_at`, which the relay's
///   re-send of unconsumed rows compares against.
/// - on PostgreSQL and SQLite, the index the cursor reads: `(shard, txid, id)` over the rows
///   never attempted, which replaces the fresh lane's `ix_<name>_fresh` `(id)` over the same
///   rows (dropped: with both, a planner working from statistics older than a burst of inserts
///   picked the `(id)` one and filtered every row of the table per shard, 1.7 s a claim at a
///   100,000-row backlog). MySQL/MariaDB keep the claim that marks each row (no cursor).
///
/// A service's own migration calls this after `create_outbox_table` (which takes this step
/// itself for tables it creates). Only what is missing is added, so the call is idempotent; a
/// service that ran it before the fresh lane's index was dropped here runs it once more in a
/// new migration, as the shipped services' `m20261203_000002_outbox_cursor_index_alone` does.
pub async fn add_commit_cursor(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    if !manager.has_column(name, "txid").await? {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(name))
                    .add_column(
                        ColumnDef::new(Outbox::Txid)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
    }
    if backend == DbBackend::Postgres {
        // Set after the column exists, so existing rows keep 0 (sent first, in id order) and
        // only new rows take their transaction's id.
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "ALTER TABLE {name} ALTER COLUMN txid SET DEFAULT (pg_current_xact_id()::text::bigint)"
            ))
            .await?;
    }
    let shards = format!("{name}_shards");
    for column in [
        Shards::SentTxid,
        Shards::SentId,
        Shards::CheckTxid,
        Shards::CheckId,
        Shards::CheckAt,
    ] {
        let spelled = column.to_string();
        if manager.has_column(&shards, &spelled).await? {
            continue;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(&shards))
                    .add_column(ColumnDef::new(column).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
    }
    if backend != DbBackend::MySql {
        // The status spelling is the domain's `OutboxStatus::Pending` (frozen SQL, as above).
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE INDEX IF NOT EXISTS ix_{name}_cursor ON {name} (shard, txid, id) \
                 WHERE status = 'pending' AND next_retry_at IS NULL"
            ))
            .await?;
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX IF EXISTS ix_{name}_fresh"))
            .await?;
    }
    Ok(())
}

/// Removes what [`add_commit_cursor`] added, where present, and puts back the fresh lane's
/// index it replaced.
pub async fn drop_commit_cursor(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::MySql {
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP INDEX IF EXISTS ix_{name}_cursor"))
            .await?;
        crate::outbox_table::create_fresh_lane_index(manager, name).await?;
    }
    let shards = format!("{name}_shards");
    for column in ["sent_txid", "sent_id", "check_txid", "check_id", "check_at"] {
        if manager.has_column(&shards, column).await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(&shards))
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
    }
    if manager.has_column(name, "txid").await? {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(name))
                    .drop_column(Alias::new("txid"))
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}
