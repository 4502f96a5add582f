use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveIden)]
enum Outbox {
    Id,
    EventId,
    EventType,
    EventVersion,
    MessageKey,
    Shard,
    Topic,
    Payload,
    Traceparent,
    Status,
    RetryCount,
    MaxRetry,
    NextRetryAt,
    LastError,
    LockedBy,
    LockedUntil,
    CreatedAt,
    PublishedAt,
    ConsumedAt,
    UpdatedAt,
}

/// Creates one service's outbox table `name` with every index the relay's claims and the
/// consumer's marks rely on, if missing: what a service's own migration calls to get an outbox
/// the bus can work on. Every service's outbox has these columns; timestamps are Unix
/// milliseconds.
///
/// The shape is built in steps, each of which some landed migration took once and which are
/// therefore never changed: a change to the outbox is a new step here and a new migration that
/// takes that step on the tables that exist.
pub async fn create_outbox_table(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    create_table_and_claim_index(manager, name).await?;
    create_fresh_lane_index(manager, name).await?;
    create_key_shards(manager, name).await?;
    crate::add_commit_cursor(manager, name).await
}

/// The first step: the table, its unique event id and the claim index (m20261123_000001,
/// m20261123_000010).
pub(crate) async fn create_table_and_claim_index(
    manager: &SchemaManager<'_>,
    name: &str,
) -> Result<(), DbErr> {
    let table = Alias::new(name);
    let mysql = manager.get_database_backend() == DbBackend::MySql;
    let mut payload = ColumnDef::new(Outbox::Payload);
    if mysql {
        // TEXT stops at 64 KiB on MySQL; payloads may be larger.
        payload.custom(Alias::new("LONGTEXT"));
    } else {
        payload.text();
    }
    payload.not_null();
    manager
        .create_table(
            Table::create()
                .table(table.clone())
                .if_not_exists()
                .col(
                    ColumnDef::new(Outbox::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(ColumnDef::new(Outbox::EventId).string_len(36).not_null())
                .col(ColumnDef::new(Outbox::EventType).string_len(128).not_null())
                .col(ColumnDef::new(Outbox::EventVersion).integer().not_null())
                .col(
                    ColumnDef::new(Outbox::MessageKey)
                        .string_len(255)
                        .not_null(),
                )
                .col(ColumnDef::new(Outbox::Topic).string_len(249).not_null())
                .col(&mut payload)
                .col(ColumnDef::new(Outbox::Traceparent).string_len(128).null())
                .col(ColumnDef::new(Outbox::Status).string_len(16).not_null())
                .col(
                    ColumnDef::new(Outbox::RetryCount)
                        .integer()
                        .not_null()
                        .default(0),
                )
                .col(ColumnDef::new(Outbox::MaxRetry).integer().not_null())
                .col(ColumnDef::new(Outbox::NextRetryAt).big_integer().null())
                .col(ColumnDef::new(Outbox::LastError).text().null())
                .col(ColumnDef::new(Outbox::LockedBy).string_len(64).null())
                .col(ColumnDef::new(Outbox::LockedUntil).big_integer().null())
                .col(ColumnDef::new(Outbox::CreatedAt).big_integer().not_null())
                .col(ColumnDef::new(Outbox::PublishedAt).big_integer().null())
                .col(ColumnDef::new(Outbox::ConsumedAt).big_integer().null())
                .col(ColumnDef::new(Outbox::UpdatedAt).big_integer().not_null())
                .to_owned(),
        )
        .await?;
    manager
        .create_index(
            Index::create()
                .name(format!("ux_{name}_event_id"))
                .table(table.clone())
                .col(Outbox::EventId)
                .unique()
                .to_owned(),
        )
        .await?;
    // Serves the fresh lane (`status = 'pending' AND next_retry_at IS NULL ORDER BY id`), the
    // retry lane and the overdue-published scan with one index.
    manager
        .create_index(
            Index::create()
                .name(format!("ix_{name}_claim"))
                .table(table)
                .col(Outbox::Status)
                .col(Outbox::NextRetryAt)
                .col(Outbox::Id)
                .to_owned(),
        )
        .await
}

/// Drops a service's outbox table and its shard table.
pub async fn drop_outbox_table(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    crate::drop_table_if_exists(manager, &format!("{name}_shards")).await?;
    crate::drop_table_if_exists(manager, name).await
}

/// How many key shards an outbox has: the storage crate's `KEY_SHARDS`, frozen here as the
/// migrations are (a test checks the two agree).
pub const KEY_SHARDS: i16 = 32;

#[derive(DeriveIden)]
enum Shards {
    Shard,
    LockedBy,
    LockedUntil,
}

/// The third step (m20261201_000001): key shards. Every row gets the shard of its message key
/// (`shard`; rows written before this step are all in shard 0, which keeps their order), and
/// `<name>_shards` holds one row per shard, which a relay round locks (or, on SQLite, leases)
/// so that one key's rows are only ever claimed by one round at a time. Safe to run again.
pub async fn create_key_shards(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    if !manager.has_column(name, "shard").await? {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(name))
                    .add_column(
                        ColumnDef::new(Outbox::Shard)
                            .small_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
    }
    let shards = format!("{name}_shards");
    manager
        .create_table(
            Table::create()
                .table(Alias::new(&shards))
                .if_not_exists()
                .col(
                    ColumnDef::new(Shards::Shard)
                        .small_integer()
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Shards::LockedBy).string_len(128).null())
                .col(ColumnDef::new(Shards::LockedUntil).big_integer().null())
                .to_owned(),
        )
        .await?;
    let conn = manager.get_connection();
    let backend = manager.get_database_backend();
    let present = conn
        .query_all(sea_orm_migration::sea_orm::Statement::from_string(
            backend,
            format!("SELECT shard FROM {shards}"),
        ))
        .await?
        .into_iter()
        .map(|row| row.try_get_by_index::<i16>(0))
        .collect::<Result<std::collections::BTreeSet<i16>, _>>()?;
    let missing: Vec<i16> = (0..KEY_SHARDS).filter(|s| !present.contains(s)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut insert = Query::insert();
    insert
        .into_table(Alias::new(&shards))
        .columns([Shards::Shard]);
    for shard in missing {
        insert.values_panic([shard.into()]);
    }
    manager.exec_stmt(insert).await
}

/// The second step (m20261123_000030): the fresh-lane index of an outbox table, `(id)` over the
/// rows never attempted. PostgreSQL does not treat `next_retry_at IS NULL` as an equality, so the
/// composite claim index cannot hand fresh rows out in id order there and every claim sorted the
/// whole backlog. A partial index serves `WHERE status = 'pending' AND next_retry_at IS NULL ORDER
/// BY id LIMIT n` directly on PostgreSQL and SQLite; MySQL has no partial indexes, and its
/// optimizer already reads the composite index in order for `IS NULL`.
pub(crate) async fn create_fresh_lane_index(
    manager: &SchemaManager<'_>,
    name: &str,
) -> Result<(), DbErr> {
    if manager.get_database_backend() == DbBackend::MySql {
        return Ok(());
    }
    // The status spelling is the domain's `OutboxStatus::Pending`; migrations are frozen SQL and
    // do not depend on the domain crate.
    manager
        .get_connection()
        .execute_unprepared(&format!(
            "CREATE INDEX IF NOT EXISTS ix_{name}_fresh ON {name} (id) \
             WHERE status = 'pending' AND next_retry_at IS NULL"
        ))
        .await
        .map(|_| ())
}
