use sea_orm_migration::prelude::*;

use crate::commit_cursor::add_commit_cursor;
use crate::outbox_table::create_fresh_lane_index;

/// The commit cursor's step once more over a service's outbox that took it before the step
/// dropped the fresh lane's `(id)` index it replaces (`add_commit_cursor` is idempotent: what
/// exists stays); each service's migrator runs it, under this name, over its own outbox. Down
/// puts the index back and keeps the cursor (the earlier migration's down removes it).
pub struct Migration {
    pub tables: &'static [&'static str],
}

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000002_outbox_cursor_index_alone"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables {
            add_commit_cursor(manager, table).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables {
            create_fresh_lane_index(manager, table).await?;
        }
        Ok(())
    }
}
