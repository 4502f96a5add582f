use sea_orm_migration::prelude::*;

use crate::outbox_table::create_key_shards;

/// Key shards for the outboxes that exist: a `shard` column and the `<outbox>_shards` table the
/// relay's rounds lock, so one key's rows are published by one round at a time, in order.
pub struct Migration {
    pub tables: &'static [&'static str],
}

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000001_outbox_key_shards"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables {
            create_key_shards(manager, table).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in self.tables {
            crate::drop_table_if_exists(manager, &format!("{table}_shards")).await?;
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(*table))
                        .drop_column(Alias::new("shard"))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
