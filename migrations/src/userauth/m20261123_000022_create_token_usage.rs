use sea_orm_migration::prelude::*;

/// The token-usage ledger: one row per `agent.token.usage.recorded` event, keyed by its event id.
#[derive(DeriveIden)]
enum TokenUsageLedger {
    Table,
    EventId,
    UserId,
    ConversationId,
    Tokens,
    OccurredAt,
    RecordedAt,
}

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000022_create_token_usage"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TokenUsageLedger::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(TokenUsageLedger::EventId)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(TokenUsageLedger::UserId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TokenUsageLedger::ConversationId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TokenUsageLedger::Tokens)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TokenUsageLedger::OccurredAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(TokenUsageLedger::RecordedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_token_usage_ledger_user")
                    .table(TokenUsageLedger::Table)
                    .col(TokenUsageLedger::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(TokenUsageLedger::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
