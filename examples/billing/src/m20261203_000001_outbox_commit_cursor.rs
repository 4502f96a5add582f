//! Billing's outbox gets the commit cursor its relay sends new rows with (created by `create_outbox_table`
//! for tables made after it; this adds it to the one made before).

use async_trait::async_trait;
use sea_orm::DbErr;
use sea_orm_migration::prelude::{MigrationName, MigrationTrait, SchemaManager};
use smartflow_migrations::{add_commit_cursor, drop_commit_cursor};

use crate::OUTBOX_TABLE;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000001_outbox_commit_cursor"
    }
}

#[async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_commit_cursor(manager, OUTBOX_TABLE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_commit_cursor(manager, OUTBOX_TABLE).await
    }
}
