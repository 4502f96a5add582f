use sea_orm_migration::prelude::*;

use crate::commit_cursor::{add_commit_cursor, drop_commit_cursor};

/// The commit cursor of a service's outbox (`txid`, the shards' cursors, the index the cursor reads); each
/// service's migrator runs it, under this name, over its own outbox.
pub struct Migration {
    pub tables: &'static [&'static str],
}

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000001_outbox_commit_cursor"
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
            drop_commit_cursor(manager, table).await?;
        }
        Ok(())
    }
}
