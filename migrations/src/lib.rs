//! Every table of smartflow, as sea-orm migrations. Migrations are never edited after they land;
//! a change is a new migration.

mod m20261123_000001_create_agent_outbox;
mod m20261123_000002_create_inbox;
mod m20261123_000003_create_chat_histories;
mod m20261123_000010_create_notification_outbox;
mod m20261123_000011_create_notification_records;
mod m20261123_000020_create_users;
mod m20261123_000021_create_refresh_tokens;
mod m20261123_000022_create_token_usage;
mod m20261123_000023_create_revoked_access_tokens;
mod m20261123_000030_outbox_fresh_lane_index;
mod outbox_table;
mod run;

pub use outbox_table::{create_fresh_lane_index, create_outbox_table, drop_outbox_table};
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
            Box::new(m20261123_000020_create_users::Migration),
            Box::new(m20261123_000021_create_refresh_tokens::Migration),
            Box::new(m20261123_000022_create_token_usage::Migration),
            Box::new(m20261123_000023_create_revoked_access_tokens::Migration),
            Box::new(m20261123_000030_outbox_fresh_lane_index::Migration),
        ]
    }
}
