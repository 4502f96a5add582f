use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Inbox {
    Consumer,
    EventId,
    EventType,
    Status,
    LastError,
    HandledAt,
}

/// Creates an inbox table `name`, if missing: which events each consumer of another service's
/// events has settled, keyed by `(consumer, event_id)` so a duplicate delivery finds its row.
/// What a service's own migration calls to get an inbox the bus can dedupe through.
///
/// Like the outbox, the shape is built in steps that landed migrations took and that are never
/// changed; today there is one.
pub async fn create_inbox_table(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    create_table(manager, name).await
}

/// The first step: the table and its primary key (m20261123_000002).
pub(crate) async fn create_table(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(Alias::new(name))
                .if_not_exists()
                .col(ColumnDef::new(Inbox::Consumer).string_len(128).not_null())
                .col(ColumnDef::new(Inbox::EventId).string_len(36).not_null())
                .col(ColumnDef::new(Inbox::EventType).string_len(128).not_null())
                .col(ColumnDef::new(Inbox::Status).string_len(16).not_null())
                .col(ColumnDef::new(Inbox::LastError).text().null())
                .col(ColumnDef::new(Inbox::HandledAt).big_integer().not_null())
                .primary_key(Index::create().col(Inbox::Consumer).col(Inbox::EventId))
                .to_owned(),
        )
        .await
}

/// Drops an inbox table.
pub async fn drop_inbox_table(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    crate::drop_table_if_exists(manager, name).await
}
