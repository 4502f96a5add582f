//! The upgrade from one tracking table for every service (`seaql_migrations`, as databases were
//! migrated before the services had migrators of their own) to one per service.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseTransaction};

/// The tracking table every service shared before.
pub const LEGACY_MIGRATION_TABLE: &str = "seaql_migrations";

#[derive(DeriveIden)]
enum Tracking {
    Version,
    AppliedAt,
}

/// When `M`'s tracking table does not exist yet but the shared one does, creates `M`'s and copies
/// into it the rows of the shared one that name `M`'s migrations: those were applied already.
pub(crate) async fn adopt_legacy_rows<M: MigratorTrait>(
    txn: &DatabaseTransaction,
) -> Result<(), DbErr> {
    let own = M::migration_table_name().to_string();
    if own == LEGACY_MIGRATION_TABLE {
        return Ok(());
    }
    let manager = SchemaManager::new(txn);
    if manager.has_table(&own).await? || !manager.has_table(LEGACY_MIGRATION_TABLE).await? {
        return Ok(());
    }
    M::install(txn).await?;
    let names: Vec<String> = M::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let copy = Query::insert()
        .into_table(Alias::new(&own))
        .columns([Tracking::Version, Tracking::AppliedAt])
        .select_from(
            Query::select()
                .columns([Tracking::Version, Tracking::AppliedAt])
                .from(Alias::new(LEGACY_MIGRATION_TABLE))
                .and_where(Expr::col(Tracking::Version).is_in(names))
                .to_owned(),
        )
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .to_owned();
    let copied = txn
        .execute(txn.get_database_backend().build(&copy))
        .await?
        .rows_affected();
    tracing::info!(
        copied,
        table = %own,
        "took over the applied migrations recorded in {LEGACY_MIGRATION_TABLE}"
    );
    Ok(())
}
