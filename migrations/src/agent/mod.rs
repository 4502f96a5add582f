//! The agent's tables: its outbox, the chat history its consumer fills, the conversations and
//! their owners (written as the first message is accepted), and the inbox its consumer dedupes
//! other services' events on its topic with.

mod m20261123_000001_create_agent_outbox;
mod m20261123_000003_create_chat_histories;
mod m20261124_000004_create_conversations;

use sea_orm_migration::prelude::*;

use crate::shared::m20261123_000002_create_inbox as inbox;
use crate::shared::m20261123_000030_outbox_fresh_lane_index as fresh_lane;
use crate::shared::m20261201_000001_outbox_key_shards as key_shards;
use crate::shared::m20261201_000002_outbox_redrive_history as redrive_history;
use crate::shared::m20261203_000001_outbox_commit_cursor as commit_cursor;
use crate::shared::m20261203_000002_outbox_cursor_index_alone as cursor_index_alone;

/// The agent's migrations, tracked in `seaql_migrations_agent`.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_agent_outbox::Migration),
            Box::new(inbox::Migration),
            Box::new(m20261123_000003_create_chat_histories::Migration),
            Box::new(fresh_lane::Migration {
                tables: &["agent_outbox"],
            }),
            Box::new(m20261124_000004_create_conversations::Migration),
            Box::new(key_shards::Migration {
                tables: &["agent_outbox"],
            }),
            Box::new(redrive_history::Migration {
                tables: &["agent_outbox"],
            }),
            Box::new(commit_cursor::Migration {
                tables: &["agent_outbox"],
            }),
            Box::new(cursor_index_alone::Migration {
                tables: &["agent_outbox"],
            }),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_agent").into_iden()
    }
}
