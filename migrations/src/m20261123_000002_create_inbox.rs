use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Inbox {
    Table,
    Consumer,
    EventId,
    EventType,
    Status,
    LastError,
    HandledAt,
}

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000002_create_inbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Inbox::Table)
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

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Inbox::Table).if_exists().to_owned())
            .await
    }
}
