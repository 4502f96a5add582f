use sea_orm_migration::prelude::*;

/// The access-token blacklist: a `jti` here is refused until `expires_at`, when the token would
/// have expired anyway and the row may be pruned.
#[derive(DeriveIden)]
enum RevokedAccessTokens {
    Table,
    Jti,
    UserId,
    ExpiresAt,
    RevokedAt,
}

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000023_create_revoked_access_tokens"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RevokedAccessTokens::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RevokedAccessTokens::Jti)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(RevokedAccessTokens::UserId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RevokedAccessTokens::ExpiresAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RevokedAccessTokens::RevokedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_revoked_access_tokens_expires_at")
                    .table(RevokedAccessTokens::Table)
                    .col(RevokedAccessTokens::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(RevokedAccessTokens::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
