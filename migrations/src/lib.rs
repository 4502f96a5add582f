//! Every table of smartflow, as sea-orm migrations. Migrations are never edited after they land;
//! a change is a new migration.
//!
//! For any service, in this workspace or not: [`create_outbox_table`] and [`create_inbox_table`]
//! give it the bus's tables under names of its own, from one call each in its own migration, and
//! [`run_migrator`] applies its migrator safely next to other processes. This workspace's services
//! each have a migrator behind a cargo feature of the same name (`agent`, `notification`,
//! `userauth`), tracked in a table of its own so that services may share one database or have
//! one each; [`run`] applies every migrator compiled in.

#[cfg(feature = "agent")]
pub mod agent;
mod commit_cursor;
mod inbox_table;
mod legacy;
#[cfg(feature = "notification")]
pub mod notification;
mod outbox_table;
mod redrive_history;
mod run;
mod shared;
#[cfg(feature = "userauth")]
pub mod userauth;

pub use commit_cursor::{add_commit_cursor, drop_commit_cursor};
pub use inbox_table::{create_inbox_table, drop_inbox_table};
pub use legacy::LEGACY_MIGRATION_TABLE;
pub use outbox_table::{create_key_shards, create_outbox_table, drop_outbox_table, KEY_SHARDS};
pub use redrive_history::{add_redrive_history, drop_redrive_history};
pub use run::run_migrator;
pub use sea_orm_migration::MigratorTrait;

use sea_orm_migration::prelude::{Alias, DbErr, SchemaManager, Table};
use sea_orm_migration::sea_orm::DatabaseConnection;

/// The inbox this workspace's services share; consumers in it are told apart by name.
pub const DEFAULT_INBOX_TABLE: &str = "inbox";

/// Applies the migrators of every service compiled in (the `agent`, `notification` and `userauth`
/// features), each as [`run_migrator`] does: what a process running several services on one
/// database calls.
pub async fn run(db: &DatabaseConnection) -> Result<(), DbErr> {
    #[cfg(feature = "agent")]
    run_migrator::<agent::Migrator>(db).await?;
    #[cfg(feature = "notification")]
    run_migrator::<notification::Migrator>(db).await?;
    #[cfg(feature = "userauth")]
    run_migrator::<userauth::Migrator>(db).await?;
    let _ = db;
    Ok(())
}

async fn drop_table_if_exists(manager: &SchemaManager<'_>, name: &str) -> Result<(), DbErr> {
    manager
        .drop_table(Table::drop().table(Alias::new(name)).if_exists().to_owned())
        .await
}
