//! The notification service's tables: its outbox, the notification records and the inbox.

mod m20261123_000010_create_notification_outbox;
mod m20261123_000011_create_notification_records;

use sea_orm_migration::prelude::*;

use crate::shared::m20261123_000002_create_inbox as inbox;
use crate::shared::m20261123_000030_outbox_fresh_lane_index as fresh_lane;
use crate::shared::m20261201_000001_outbox_key_shards as key_shards;
use crate::shared::m20261201_000002_outbox_redrive_history as redrive_history;
use crate::shared::m20261203_000001_outbox_commit_cursor as commit_cursor;
use crate::shared::m20261203_000002_outbox_cursor_index_alone as cursor_index_alone;

/// The notification service's migrations, tracked in `seaql_migrations_notification`.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(inbox::Migration),
            Box::new(m20261123_000010_create_notification_outbox::Migration),
            Box::new(m20261123_000011_create_notification_records::Migration),
            Box::new(fresh_lane::Migration {
                tables: &["notification_outbox"],
            }),
            Box::new(key_shards::Migration {
                tables: &["notification_outbox"],
            }),
            Box::new(redrive_history::Migration {
                tables: &["notification_outbox"],
            }),
            Box::new(commit_cursor::Migration {
                tables: &["notification_outbox"],
            }),
            Box::new(cursor_index_alone::Migration {
                tables: &["notification_outbox"],
            }),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_notification").into_iden()
    }
}
