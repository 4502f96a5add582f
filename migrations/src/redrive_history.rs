use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum RedriveHistory {
    RedriveCount,
    LastRedrivenAt,
}

/// Adds the redrive history of an outbox table `name`, where missing: `redrive_count` (how often
/// an operator sent a `dead` row again, 0 by default) and `last_redriven_at` (Unix milliseconds
/// of the latest redrive, NULL until one). The admin command `smartflow outbox redrive` records
/// each redrive there and refuses a table without them. A service's own migration calls this
/// after `create_outbox_table`.
///
/// Only columns that are missing are added, one `ALTER TABLE` each, so the call is idempotent and
/// a half-applied run completes on the next one; on every backend both are additions with a
/// constant default, which change no existing row's bytes (PostgreSQL 11+, MariaDB 10.3+ and
/// SQLite record the default in the catalog).
pub async fn add_redrive_history(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    if !manager.has_column(name, "redrive_count").await? {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(name))
                    .add_column(
                        ColumnDef::new(RedriveHistory::RedriveCount)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
    }
    if !manager.has_column(name, "last_redriven_at").await? {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(name))
                    .add_column(
                        ColumnDef::new(RedriveHistory::LastRedrivenAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}

/// Removes what [`add_redrive_history`] added, where present.
pub async fn drop_redrive_history(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    for column in [RedriveHistory::RedriveCount, RedriveHistory::LastRedrivenAt] {
        if manager.has_column(name, &column.to_string()).await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(name))
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
    }
    Ok(())
}
