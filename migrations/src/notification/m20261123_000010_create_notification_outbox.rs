use sea_orm_migration::prelude::*;

use crate::outbox_table::{create_table_and_claim_index, drop_outbox_table};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261123_000010_create_notification_outbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_table_and_claim_index(manager, "notification_outbox").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_outbox_table(manager, "notification_outbox").await
    }
}
