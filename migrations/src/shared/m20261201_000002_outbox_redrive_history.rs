use sea_orm_migration::prelude::*;

use crate::redrive_history::{add_redrive_history, drop_redrive_history};

/// The redrive history of a service's outbox (`redrive_count`, `last_redriven_at`); each
/// service's migrator runs it, under this name, over its own outbox.
pub struct Migration {
    pub tables: &'static [&'static str],
}

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000002_outbox_redrive_history"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables {
            add_redrive_history(manager, table).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables {
            drop_redrive_history(manager, table).await?;
        }
        Ok(())
    }
}
