//! A database migrated when every service shared the one tracking table `seaql_migrations` starts
//! under the per-service migrators: what it lists is taken over, not run again.

use std::collections::BTreeSet;

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, FromQueryResult, Statement};
use smartflow_migrations::{agent, notification, userauth, MigratorTrait, LEGACY_MIGRATION_TABLE};
use smartflow_testkit::{on_every_backend, Backend, TestDb};

/// The old layout's tracking table: sea-orm's default name, no migrations of its own.
struct LegacyLayout;

impl MigratorTrait for LegacyLayout {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        Vec::new()
    }
}

const FRESH_LANE: &str = "m20261123_000030_outbox_fresh_lane_index";
const TRACKING: [&str; 3] = [
    "seaql_migrations_agent",
    "seaql_migrations_notification",
    "seaql_migrations_userauth",
];

fn every_migration() -> BTreeSet<String> {
    [
        agent::Migrator::migrations(),
        notification::Migrator::migrations(),
        userauth::Migrator::migrations(),
    ]
    .into_iter()
    .flatten()
    .map(|m| m.name().to_owned())
    .collect()
}

#[derive(FromQueryResult)]
struct Version {
    version: String,
}

async fn versions(t: &TestDb, table: &str) -> BTreeSet<String> {
    let sql = format!("SELECT version FROM {table}");
    Version::find_by_statement(Statement::from_string(t.db.get_database_backend(), sql))
        .all(&t.db)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect()
}

async fn execute(t: &TestDb, sql: &str) {
    t.db.execute_unprepared(sql).await.unwrap();
}

/// Every table as the old single migrator left it, recorded in `seaql_migrations` alone, from
/// before the fresh-lane index landed.
async fn old_layout(t: &TestDb) {
    smartflow_migrations::run(&t.db).await.unwrap();
    for table in TRACKING {
        execute(t, &format!("DROP TABLE {table}")).await;
    }
    if t.backend != Backend::MariaDb {
        for outbox in ["agent_outbox", "notification_outbox"] {
            // The commit cursor dropped it for its own index; gone either way.
            execute(t, &format!("DROP INDEX IF EXISTS ix_{outbox}_fresh")).await;
        }
    }
    LegacyLayout::install(&t.db).await.unwrap();
    for name in every_migration().into_iter().filter(|n| n != FRESH_LANE) {
        execute(
            t,
            &format!(
                "INSERT INTO {LEGACY_MIGRATION_TABLE} (version, applied_at) VALUES ('{name}', 0)"
            ),
        )
        .await;
    }
    execute(
        t,
        "INSERT INTO chat_histories (event_id, conversation_id, user_id, role, content, created_at) \
         VALUES ('e-1', 'c-1', 'u-1', 'user', 'kept across the upgrade', 0)",
    )
    .await;
}

async fn a_database_of_the_shared_tracking_table_starts_without_running_anything_twice(t: TestDb) {
    old_layout(&t).await;
    // Run as separate processes would, one service at a time, then all together again.
    t.migrate::<userauth::Migrator>().await;
    t.migrate::<agent::Migrator>().await;
    smartflow_migrations::run(&t.db).await.unwrap();

    for (table, migrations) in [
        (TRACKING[0], agent::Migrator::migrations()),
        (TRACKING[1], notification::Migrator::migrations()),
        (TRACKING[2], userauth::Migrator::migrations()),
    ] {
        let names: BTreeSet<String> = migrations.iter().map(|m| m.name().to_owned()).collect();
        assert_eq!(versions(&t, table).await, names, "{table}");
    }
    // What was missing ran; the old table is left as it was for older binaries.
    if t.backend != Backend::MariaDb {
        for outbox in ["agent_outbox", "notification_outbox"] {
            let index = format!("ix_{outbox}_fresh");
            assert!(t.has_index(outbox, &index).await, "{index}");
        }
    }
    let mut before_the_fresh_lane = every_migration();
    before_the_fresh_lane.remove(FRESH_LANE);
    assert_eq!(
        versions(&t, LEGACY_MIGRATION_TABLE).await,
        before_the_fresh_lane
    );
    #[derive(FromQueryResult)]
    struct Content {
        content: String,
    }
    let kept = Content::find_by_statement(Statement::from_string(
        t.db.get_database_backend(),
        "SELECT content FROM chat_histories".to_owned(),
    ))
    .all(&t.db)
    .await
    .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].content, "kept across the upgrade");
    t.cleanup().await;
}

#[derive(FromQueryResult)]
struct Shard {
    shard: i16,
}

async fn shards_of(t: &TestDb, sql: &str) -> Vec<i16> {
    Shard::find_by_statement(Statement::from_string(
        t.db.get_database_backend(),
        sql.to_owned(),
    ))
    .all(&t.db)
    .await
    .unwrap()
    .into_iter()
    .map(|s| s.shard)
    .collect()
}

/// An outbox from before key shards, with a row waiting in it, gets the `shard` column (its old
/// rows all in shard 0) and its shard table, and running the step again changes nothing.
async fn an_outbox_from_before_key_shards_gets_them_and_keeps_its_rows(t: TestDb) {
    t.migrate::<agent::Migrator>().await;
    execute(&t, "DROP TABLE agent_outbox_shards").await;
    if t.backend != Backend::MariaDb {
        // The commit cursor's index (a later step) names the column.
        execute(&t, "DROP INDEX ix_agent_outbox_cursor").await;
    }
    execute(&t, "ALTER TABLE agent_outbox DROP COLUMN shard").await;
    execute(
        &t,
        "DELETE FROM seaql_migrations_agent WHERE version = 'm20261201_000001_outbox_key_shards'",
    )
    .await;
    execute(
        &t,
        "INSERT INTO agent_outbox (event_id, event_type, event_version, message_key, topic, \
         payload, status, retry_count, max_retry, created_at, updated_at) \
         VALUES ('e-1', 't', 1, 'k', 'topic', '{}', 'pending', 0, 3, 0, 0)",
    )
    .await;
    t.migrate::<agent::Migrator>().await;
    t.migrate::<agent::Migrator>().await;
    assert_eq!(shards_of(&t, "SELECT shard FROM agent_outbox").await, [0]);
    let shards = shards_of(&t, "SELECT shard FROM agent_outbox_shards ORDER BY shard").await;
    let expected: Vec<i16> = (0..smartflow_migrations::KEY_SHARDS).collect();
    assert_eq!(shards, expected);
    t.cleanup().await;
}

on_every_backend!(
    empty: a_database_of_the_shared_tracking_table_starts_without_running_anything_twice,
    an_outbox_from_before_key_shards_gets_them_and_keeps_its_rows,
);
