use sea_orm_migration::prelude::*;

use crate::inbox_table::{create_table, drop_inbox_table};

/// The inbox every service of this workspace shares (consumers are told apart by name); its
/// shape is `create_inbox_table`'s first step.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000002_create_inbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table(manager, crate::DEFAULT_INBOX_TABLE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_inbox_table(manager, crate::DEFAULT_INBOX_TABLE).await
    }
}
