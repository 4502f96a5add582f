//! Each service's migrator on its own, and a service from outside this workspace that takes the
//! bus's tables under names of its own: every scenario starts from an empty database.

use std::time::Duration;

use sea_orm::{ConnectionTrait, FromQueryResult, Statement, TransactionTrait};
use serde::{Deserialize, Serialize};
use smartflow_domain::{Envelope, EventContract, OutboxStatus, RetryPolicy};
use smartflow_migrations::{create_inbox_table, create_outbox_table, MigratorTrait};
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::outbox::{ClaimMode, ClaimRequest, OutboxTable, Settlement};
use smartflow_testkit::{on_every_backend, Backend, TestDb};

use sea_orm_migration::prelude::*;

/// What a service outside this workspace writes: one migration that takes an outbox and an inbox
/// under its own names, tracked in a table of its own.
struct BillingMigrator;

struct CreateBillingBusTables;

impl MigrationName for CreateBillingBusTables {
    fn name(&self) -> &str {
        "m20270101_000001_create_billing_bus_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateBillingBusTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_outbox_table(manager, "billing_outbox").await?;
        create_inbox_table(manager, "billing_inbox").await
    }
}

#[async_trait::async_trait]
impl MigratorTrait for BillingMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateBillingBusTables)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("seaql_migrations_billing").into_iden()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct InvoicePaid {
    invoice: u32,
}
impl EventContract for InvoicePaid {
    const EVENT_TYPE: &'static str = "billing.invoice.paid";
}

#[derive(FromQueryResult)]
struct Count {
    n: i64,
}

/// How many migrations a tracking table lists.
async fn tracked(t: &TestDb, table: &str) -> i64 {
    let backend = t.db.get_database_backend();
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    Count::find_by_statement(Statement::from_string(backend, sql))
        .one(&t.db)
        .await
        .unwrap()
        .unwrap()
        .n
}

async fn the_agents_migrator_creates_its_tables_and_no_other_services(t: TestDb) {
    t.migrate::<smartflow_migrations::agent::Migrator>().await;
    // The inbox too: its consumer dedupes what other services put on its topic.
    for table in [
        "agent_outbox",
        "chat_histories",
        "inbox",
        "seaql_migrations_agent",
    ] {
        assert!(t.has_table(table).await, "{table}");
    }
    for table in [
        "users",
        "refresh_tokens",
        "notification_outbox",
        "notification_records",
        "seaql_migrations",
    ] {
        assert!(!t.has_table(table).await, "{table}");
    }
    assert_eq!(
        tracked(&t, "seaql_migrations_agent").await,
        smartflow_migrations::agent::Migrator::migrations().len() as i64
    );
    t.cleanup().await;
}

async fn services_sharing_a_database_track_their_migrations_apart(t: TestDb) {
    t.migrate::<smartflow_migrations::agent::Migrator>().await;
    t.migrate::<smartflow_migrations::userauth::Migrator>()
        .await;
    t.migrate::<smartflow_migrations::notification::Migrator>()
        .await;
    // Each again: nothing left to do for any of them.
    smartflow_migrations::run(&t.db).await.unwrap();
    for (table, migrations) in [
        (
            "seaql_migrations_agent",
            smartflow_migrations::agent::Migrator::migrations().len(),
        ),
        (
            "seaql_migrations_userauth",
            smartflow_migrations::userauth::Migrator::migrations().len(),
        ),
        (
            "seaql_migrations_notification",
            smartflow_migrations::notification::Migrator::migrations().len(),
        ),
    ] {
        assert_eq!(tracked(&t, table).await, migrations as i64, "{table}");
    }
    for table in ["agent_outbox", "users", "notification_records", "inbox"] {
        assert!(t.has_table(table).await, "{table}");
    }
    t.cleanup().await;
}

async fn an_outside_service_gets_a_working_outbox_and_inbox_from_one_call_each(t: TestDb) {
    t.migrate::<BillingMigrator>().await;
    t.migrate::<BillingMigrator>().await;
    for table in [
        "billing_outbox",
        "billing_inbox",
        "seaql_migrations_billing",
    ] {
        assert!(t.has_table(table).await, "{table}");
    }
    for table in ["agent_outbox", "chat_histories", "users", "inbox"] {
        assert!(!t.has_table(table).await, "{table}");
    }
    for index in ["ux_billing_outbox_event_id", "ix_billing_outbox_claim"] {
        assert!(t.has_index("billing_outbox", index).await, "{index}");
    }
    // MySQL has no partial indexes; its optimizer reads the claim index in order instead.
    // Elsewhere the commit cursor's index serves the fresh lane, in place of the `(id)` one.
    assert_eq!(
        t.has_index("billing_outbox", "ix_billing_outbox_cursor")
            .await,
        t.backend != Backend::MariaDb
    );
    assert!(
        !t.has_index("billing_outbox", "ix_billing_outbox_fresh")
            .await
    );

    // The outbox: insert in the caller's transaction, claim, settle, mark consumed.
    let outbox = OutboxTable::new("billing_outbox").unwrap();
    let envelope = Envelope::for_event("invoice-7", &InvoicePaid { invoice: 7 }).unwrap();
    let event_id = envelope.event_id.to_string();
    let txn = t.db.begin().await.unwrap();
    outbox
        .insert(&txn, &envelope, "billing.events", 3)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let claim = outbox
        .claim(
            &t.db,
            ClaimMode::for_backend(t.db.get_database_backend()),
            &ClaimRequest::new("billing-relay", 10, 10, Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(claim.rows.len(), 1);
    assert_eq!(claim.rows[0].event_id, event_id);
    assert_eq!(claim.rows[0].topic, "billing.events");
    let settlement = Settlement {
        published: vec![claim.rows[0].id],
        ..Settlement::default()
    };
    let report = outbox
        .settle(
            &t.db,
            claim,
            settlement,
            &RetryPolicy::default(),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(report.published, 1);
    assert_eq!(outbox.stats(&t.db).await.unwrap().published, 1);
    assert!(outbox.mark_consumed(&t.db, &event_id).await.unwrap());
    assert!(!outbox.mark_consumed(&t.db, &event_id).await.unwrap());
    let row = outbox.find(&t.db, &event_id).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Consumed);

    // The inbox: one row per (consumer, event), a duplicate changes nothing.
    let inbox = InboxTable::new("billing_inbox").unwrap();
    let txn = t.db.begin().await.unwrap();
    let recorded = inbox
        .record(
            &txn,
            "billing",
            &event_id,
            InvoicePaid::EVENT_TYPE,
            InboxStatus::Handled,
            None,
        )
        .await
        .unwrap();
    assert!(recorded);
    let again = inbox
        .record(
            &txn,
            "billing",
            &event_id,
            InvoicePaid::EVENT_TYPE,
            InboxStatus::Dead,
            Some("a second delivery"),
        )
        .await
        .unwrap();
    assert!(!again, "the duplicate is refused");
    txn.commit().await.unwrap();
    let entry = inbox
        .find(&t.db, "billing", &event_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, InboxStatus::Handled);
    assert_eq!(entry.event_type, InvoicePaid::EVENT_TYPE);
    assert_eq!(entry.last_error, None);
    t.cleanup().await;
}

on_every_backend!(
    empty: the_agents_migrator_creates_its_tables_and_no_other_services,
    services_sharing_a_database_track_their_migrations_apart,
    an_outside_service_gets_a_working_outbox_and_inbox_from_one_call_each,
);

/// The migrations freeze the number of key shards; the claims rely on every shard having its row.
#[test]
fn the_migrations_make_as_many_shards_as_storage_spreads_keys_over() {
    assert_eq!(
        smartflow_migrations::KEY_SHARDS,
        smartflow_storage::outbox::KEY_SHARDS
    );
}
