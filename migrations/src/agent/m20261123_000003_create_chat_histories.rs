use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum ChatHistories {
    Table,
    Id,
    EventId,
    ConversationId,
    UserId,
    Role,
    Content,
    CreatedAt,
}

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000003_create_chat_histories"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChatHistories::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ChatHistories::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ChatHistories::EventId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatHistories::ConversationId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatHistories::UserId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatHistories::Role)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(ChatHistories::Content).text().not_null())
                    .col(
                        ColumnDef::new(ChatHistories::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_chat_histories_event_id")
                    .table(ChatHistories::Table)
                    .col(ChatHistories::EventId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_chat_histories_conversation")
                    .table(ChatHistories::Table)
                    .col(ChatHistories::ConversationId)
                    .col(ChatHistories::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ChatHistories::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
