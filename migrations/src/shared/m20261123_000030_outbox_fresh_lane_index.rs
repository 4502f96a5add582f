use sea_orm_migration::prelude::*;

use crate::outbox_table::create_fresh_lane_index;

/// Landed as one migration over the agent's and notification's outboxes; each service's migrator
/// now runs it, under the same name, over its own outbox.
pub struct Migration {
    pub tables: &'static [&'static str],
}

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000030_outbox_fresh_lane_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables {
            create_fresh_lane_index(manager, table).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm_migration::sea_orm::DbBackend::MySql {
            return Ok(());
        }
        for table in self.tables {
            manager
                .get_connection()
                .execute_unprepared(&format!("DROP INDEX IF EXISTS ix_{table}_fresh"))
                .await?;
        }
        Ok(())
    }
}
