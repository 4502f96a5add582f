//! Every table of smartflow, as sea-orm migrations. Migrations are never edited after they land;
//! a change is a new migration.

mod m20261123_000001_create_agent_outbox;
mod m20261123_000002_create_inbox;
mod m20261123_000003_create_chat_histories;
mod m20261123_000010_create_notification_outbox;
mod m20261123_000011_create_notification_records;
mod outbox_table;
mod run;

pub use outbox_table::{create_outbox_table, drop_outbox_table};
pub use run::run;
pub use sea_orm_migration::MigratorTrait;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_agent_outbox::Migration),
            Box::new(m20261123_000002_create_inbox::Migration),
            Box::new(m20261123_000003_create_chat_histories::Migration),
            Box::new(m20261123_000010_create_notification_outbox::Migration),
            Box::new(m20261123_000011_create_notification_records::Migration),
        ]
    }
}
