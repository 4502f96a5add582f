//! Billing's own table and what fills it: one invoice per token-usage event of the agent,
//! charged from the user's prepaid balance at once, so it is paid when it is written.

use async_trait::async_trait;
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseTransaction};
use sea_orm_migration::prelude::{
    Alias, ColumnDef, DynIden, Index, IntoIden, MigrationName, MigrationTrait, MigratorTrait,
    SchemaManager, Table,
};
use smartflow_agent_contracts::TokenUsageRecorded;
use smartflow_bus::{EventBus, HandlerError, TypedHandler};
use smartflow_domain::Envelope;
use smartflow_migrations::{create_inbox_table, create_outbox_table};

use crate::{InvoicePaid, INBOX_TABLE, OUTBOX_TABLE, SERVICE};

/// What one token costs, in cents.
pub const CENTS_PER_TOKEN: i64 = 2;

/// One invoice: the charge for one usage event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "billing_invoices")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The usage event it charges: unique, so an event can never be charged twice.
    #[sea_orm(unique)]
    pub usage_event_id: String,
    pub user_id: String,
    pub conversation_id: String,
    pub tokens: i64,
    pub amount_cents: i64,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Charges each usage event: writes its invoice and publishes `billing.invoice.paid` in the
/// consumer's transaction, so the invoice, the event and the inbox mark commit together.
pub struct ChargeUsage {
    pub bus: EventBus,
}

#[async_trait]
impl TypedHandler<TokenUsageRecorded> for ChargeUsage {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        usage: TokenUsageRecorded,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let tokens = i64::try_from(usage.tokens)
            .map_err(|_| HandlerError::Permanent(format!("{} tokens", usage.tokens)))?;
        let invoice = ActiveModel {
            usage_event_id: Set(envelope.event_id.to_string()),
            user_id: Set(usage.user_id.clone()),
            conversation_id: Set(usage.conversation_id),
            tokens: Set(tokens),
            amount_cents: Set(tokens * CENTS_PER_TOKEN),
            created_at: Set(envelope.occurred_at.timestamp_millis()),
            ..Default::default()
        }
        .insert(txn)
        .await
        .map_err(|e| HandlerError::Retryable(e.to_string()))?;
        let paid = InvoicePaid {
            invoice_id: invoice.id,
            user_id: invoice.user_id,
            amount_cents: invoice.amount_cents,
        };
        self.bus
            .publish(txn, &paid.user_id, &paid)
            .await
            .map_err(|e| HandlerError::Retryable(e.to_string()))?;
        Ok(())
    }
}

/// Billing's migrations, tracked in a table of its own so it may share a database or not.
pub struct Migrator;

#[async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateBillingTables),
            Box::new(crate::m20261201_000002_outbox_redrive_history::Migration),
            Box::new(crate::m20261203_000001_outbox_commit_cursor::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new(format!("seaql_migrations_{SERVICE}")).into_iden()
    }
}

struct CreateBillingTables;

impl MigrationName for CreateBillingTables {
    fn name(&self) -> &str {
        "m20261201_000001_create_billing_tables"
    }
}

#[async_trait]
impl MigrationTrait for CreateBillingTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Entity)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Column::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Column::UsageEventId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Column::UserId).string_len(128).not_null())
                    .col(
                        ColumnDef::new(Column::ConversationId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Column::Tokens).big_integer().not_null())
                    .col(ColumnDef::new(Column::AmountCents).big_integer().not_null())
                    .col(ColumnDef::new(Column::CreatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_billing_invoices_usage_event_id")
                    .table(Entity)
                    .col(Column::UsageEventId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        create_outbox_table(manager, OUTBOX_TABLE).await?;
        create_inbox_table(manager, INBOX_TABLE).await
    }
}
