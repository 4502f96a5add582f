use sea_orm_migration::prelude::*;

/// One row per session (refresh-token family): the row every rotation and every revocation of
/// the family updates first, so they run one at a time per family on every backend, and the
/// place a revocation is recorded for the rotations that wait on it.
#[derive(DeriveIden)]
enum RefreshTokenFamilies {
    Table,
    FamilyId,
    UserId,
    CreatedAt,
    Rotations,
    RevokedAt,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    FamilyId,
    UserId,
    IssuedAt,
    RevokedAt,
}

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000024_create_refresh_token_families"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RefreshTokenFamilies::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RefreshTokenFamilies::FamilyId)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(RefreshTokenFamilies::UserId)
                            .string_len(36)
                            .not_null(),
                    )
                    // When the session began (the log-in).
                    .col(
                        ColumnDef::new(RefreshTokenFamilies::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    // Counted up by every rotation: the update that takes the family's lock
                    // always changes the row, so every backend reports it as affected.
                    .col(
                        ColumnDef::new(RefreshTokenFamilies::Rotations)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(
                        ColumnDef::new(RefreshTokenFamilies::RevokedAt)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_refresh_token_families_user")
                    .table(RefreshTokenFamilies::Table)
                    .col(RefreshTokenFamilies::UserId)
                    .to_owned(),
            )
            .await?;
        // The families of the tokens stored before this table: begun at their first token,
        // revoked if their tokens were (a revocation revokes every token of the family).
        let existing = Query::select()
            .column(RefreshTokens::FamilyId)
            .expr(Expr::col(RefreshTokens::UserId).max())
            .expr(Expr::col(RefreshTokens::IssuedAt).min())
            .expr(Expr::col(RefreshTokens::RevokedAt).max())
            .from(RefreshTokens::Table)
            .group_by_col(RefreshTokens::FamilyId)
            .to_owned();
        let backfill = Query::insert()
            .into_table(RefreshTokenFamilies::Table)
            .columns([
                RefreshTokenFamilies::FamilyId,
                RefreshTokenFamilies::UserId,
                RefreshTokenFamilies::CreatedAt,
                RefreshTokenFamilies::RevokedAt,
            ])
            .select_from(existing)
            .map_err(|e| DbErr::Migration(format!("backfilling refresh_token_families: {e}")))?
            .to_owned();
        manager.exec_stmt(backfill).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(RefreshTokenFamilies::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
