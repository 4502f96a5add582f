//! Billing's outbox gets the redrive history the admin command records redrives in
//! (`smartflow outbox redrive --table billing_outbox`).

use async_trait::async_trait;
use sea_orm::DbErr;
use sea_orm_migration::prelude::{MigrationName, MigrationTrait, SchemaManager};
use smartflow_migrations::{add_redrive_history, drop_redrive_history};

use crate::OUTBOX_TABLE;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000002_outbox_redrive_history"
    }
}

#[async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_redrive_history(manager, OUTBOX_TABLE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_redrive_history(manager, OUTBOX_TABLE).await
    }
}
