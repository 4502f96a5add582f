use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveIden)]
enum NotificationRecords {
    Table,
    Id,
    Channel,
    DedupeKey,
    SourceEventId,
    Payload,
    Status,
    Attempts,
    MaxAttempts,
    NextRetryAt,
    LeaseOwner,
    LeaseUntil,
    LastError,
    ProviderResponse,
    CreatedAt,
    UpdatedAt,
    SentAt,
}

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000011_create_notification_records"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mysql = manager.get_database_backend() == DbBackend::MySql;
        let mut payload = ColumnDef::new(NotificationRecords::Payload);
        if mysql {
            // TEXT stops at 64 KiB on MySQL; a notification's text may be longer.
            payload.custom(Alias::new("MEDIUMTEXT"));
        } else {
            payload.text();
        }
        payload.not_null();
        manager
            .create_table(
                Table::create()
                    .table(NotificationRecords::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(NotificationRecords::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::Channel)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::DedupeKey)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::SourceEventId)
                            .string_len(36)
                            .null(),
                    )
                    .col(&mut payload)
                    .col(
                        ColumnDef::new(NotificationRecords::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::MaxAttempts)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::NextRetryAt)
                            .big_integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::LeaseOwner)
                            .string_len(64)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::LeaseUntil)
                            .big_integer()
                            .null(),
                    )
                    .col(ColumnDef::new(NotificationRecords::LastError).text().null())
                    .col(
                        ColumnDef::new(NotificationRecords::ProviderResponse)
                            .text()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationRecords::SentAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // The dedupe guarantee: a second request for the same key fails its insert, even when
        // two handlers race, instead of relying on a read before the write.
        manager
            .create_index(
                Index::create()
                    .name("ux_notification_records_dedupe")
                    .table(NotificationRecords::Table)
                    .col(NotificationRecords::Channel)
                    .col(NotificationRecords::DedupeKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Serves the pending lane and the due-failed lane of the sender and the retry scanner.
        manager
            .create_index(
                Index::create()
                    .name("ix_notification_records_due")
                    .table(NotificationRecords::Table)
                    .col(NotificationRecords::Status)
                    .col(NotificationRecords::NextRetryAt)
                    .col(NotificationRecords::Id)
                    .to_owned(),
            )
            .await?;
        // Serves the scan for `sending` records whose lease ran out.
        manager
            .create_index(
                Index::create()
                    .name("ix_notification_records_lease")
                    .table(NotificationRecords::Table)
                    .col(NotificationRecords::Status)
                    .col(NotificationRecords::LeaseUntil)
                    .col(NotificationRecords::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(NotificationRecords::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
