//! Userauth's tables: accounts, refresh tokens and their families (sessions), the token-usage
//! ledger, the access-token blacklist, and the inbox its usage subscriber dedupes through.

mod m20261123_000020_create_users;
mod m20261123_000021_create_refresh_tokens;
mod m20261123_000022_create_token_usage;
mod m20261123_000023_create_revoked_access_tokens;
mod m20261124_000024_create_refresh_token_families;

use sea_orm_migration::prelude::*;

use crate::shared::m20261123_000002_create_inbox as inbox;

/// Userauth's migrations, tracked in `seaql_migrations_userauth`.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(inbox::Migration),
            Box::new(m20261123_000020_create_users::Migration),
            Box::new(m20261123_000021_create_refresh_tokens::Migration),
            Box::new(m20261123_000022_create_token_usage::Migration),
            Box::new(m20261123_000023_create_revoked_access_tokens::Migration),
            Box::new(m20261124_000024_create_refresh_token_families::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_userauth").into_iden()
    }
}
