//! The admin commands' queries (`smartflow outbox ...`, `smartflow inbox ...`), each scenario on
//! SQLite, PostgreSQL and MariaDB.

use std::time::Duration;

use sea_orm_migration::SchemaManager;
use serde::{Deserialize, Serialize};
use smartflow_domain::{Envelope, EventContract, OutboxStatus, RetryPolicy};
use smartflow_storage::catalog::{column_exists, table_exists};
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::inbox_admin::InboxFilter;
use smartflow_storage::outbox::{
    ClaimMode, ClaimRequest, OutboxFilter, OutboxPurge, OutboxTable, SettledStatus,
    UNBLOCKED_REASON,
};
use smartflow_storage::{now_millis, ConnectionTrait, StorageError, TransactionTrait};
use smartflow_testkit::{on_every_backend, TestDb};

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u32,
}
impl EventContract for Ping {
    const EVENT_TYPE: &'static str = "test.ping";
}

#[derive(Debug, Serialize, Deserialize)]
struct Pong {}
impl EventContract for Pong {
    const EVENT_TYPE: &'static str = "test.pong";
}

fn table() -> OutboxTable {
    OutboxTable::new("agent_outbox").unwrap()
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
        max_retry: 3,
    }
}

/// Inserts `n` pings with keys `k0`, `k1`, `k2`, ... and one pong; returns their event ids, the
/// pong's last.
async fn insert(t: &TestDb, table: &OutboxTable, n: u32) -> Vec<String> {
    let txn = t.db.begin().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let env = Envelope::for_event(format!("k{i}"), &Ping { n: i }).unwrap();
        ids.push(env.event_id.to_string());
        table.insert(&txn, &env, "topic-a", 3).await.unwrap();
    }
    let env = Envelope::for_event("kp", &Pong {}).unwrap();
    ids.push(env.event_id.to_string());
    table.insert(&txn, &env, "topic-a", 3).await.unwrap();
    txn.commit().await.unwrap();
    ids
}

async fn kill(t: &TestDb, table: &OutboxTable, event_id: &str, reason: &str) {
    table
        .record_failure(&t.db, event_id, reason, false, &policy())
        .await
        .unwrap();
}

async fn id_of(t: &TestDb, table: &OutboxTable, event_id: &str) -> i64 {
    table.find(&t.db, event_id).await.unwrap().unwrap().id
}

/// Rows: 0 and 1 dead "Boom", 2 dead "100%_done", 3 retrying once, 4 consumed, the
/// pong pending.
async fn a_mixed_outbox(t: &TestDb) -> Vec<String> {
    let ids = insert(t, &table(), 5).await;
    kill(t, &table(), &ids[0], "Boom").await;
    kill(t, &table(), &ids[1], "Boom").await;
    kill(t, &table(), &ids[2], "100%_done").await;
    table()
        .record_failure(&t.db, &ids[3], "try later", true, &policy())
        .await
        .unwrap();
    assert!(table().mark_consumed(&t.db, &ids[4]).await.unwrap());
    ids
}

async fn the_report_counts_statuses_retries_and_reasons(t: TestDb) {
    a_mixed_outbox(&t).await;
    let report = table().report(&t.db).await.unwrap();
    assert_eq!(
        (
            report.counts.pending,
            report.counts.published,
            report.counts.consumed,
            report.counts.dead
        ),
        (2, 0, 1, 3)
    );
    assert!(report.counts.oldest_pending_created_at.is_some());
    // Three dead rows and the retrying one were attempted once; the pong never (the consumed
    // row is left out).
    assert_eq!(report.retries, vec![(0, 1), (1, 4)]);
    assert_eq!(
        report.dead_reasons,
        vec![
            (Some("Boom".to_owned()), 2),
            (Some("100%_done".to_owned()), 1)
        ]
    );
    let empty = OutboxTable::new("notification_outbox").unwrap();
    let nothing = empty.report(&t.db).await.unwrap();
    assert_eq!(nothing.counts.pending + nothing.counts.dead, 0);
    assert!(nothing.retries.is_empty() && nothing.dead_reasons.is_empty());
    t.cleanup().await;
}

async fn filters_narrow_the_rows(t: TestDb) {
    let ids = a_mixed_outbox(&t).await;
    let events = |rows: Vec<smartflow_storage::outbox::OutboxRecord>| {
        rows.into_iter().map(|r| r.row.event_id).collect::<Vec<_>>()
    };
    let list = |filter: OutboxFilter| {
        let db = t.db.clone();
        async move { table().list_matching(&db, &filter, 100).await.unwrap() }
    };
    let dead = OutboxFilter {
        status: Some(OutboxStatus::Dead),
        ..Default::default()
    };
    assert_eq!(events(list(dead.clone()).await), ids[0..3].to_vec());
    assert_eq!(table().count_matching(&t.db, &dead).await.unwrap(), 3);
    let limited = table().list_matching(&t.db, &dead, 2).await.unwrap();
    assert_eq!(events(limited), ids[0..2].to_vec());
    let pong = OutboxFilter {
        event_type: Some("test.pong".into()),
        ..Default::default()
    };
    assert_eq!(events(list(pong).await), vec![ids[5].clone()]);
    let key = OutboxFilter {
        message_key: Some("k3".into()),
        ..Default::default()
    };
    let rows = list(key).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].row.retry_count, 1);
    assert_eq!(rows[0].topic, "topic-a");
    assert_eq!(
        rows[0].redrive.map(|h| h.redrive_count),
        Some(0),
        "the built-in outboxes keep a redrive history"
    );
    // The letter case does not matter, and `%` and `_` are matched as themselves.
    let reason = |text: &str| OutboxFilter {
        reason_contains: Some(text.into()),
        ..Default::default()
    };
    assert_eq!(events(list(reason("bOOm")).await), ids[0..2].to_vec());
    assert_eq!(events(list(reason("0%_d")).await), vec![ids[2].clone()]);
    assert!(list(reason("0%x")).await.is_empty());
    assert!(list(reason("_")).await.len() == 1);
    let old = OutboxFilter {
        created_before: Some(0),
        ..Default::default()
    };
    assert!(list(old).await.is_empty());
    let by_id = OutboxFilter {
        ids: vec![id_of(&t, &table(), &ids[1]).await],
        ..Default::default()
    };
    assert_eq!(events(list(by_id).await), vec![ids[1].clone()]);
    let id = id_of(&t, &table(), &ids[2]).await;
    let shown = table().record_by_id(&t.db, id).await.unwrap().unwrap();
    assert_eq!(shown.row.last_error.as_deref(), Some("100%_done"));
    assert_eq!(
        table()
            .record_by_event_id(&t.db, &ids[2])
            .await
            .unwrap()
            .map(|r| r.row.id),
        Some(id)
    );
    assert!(table().record_by_id(&t.db, -1).await.unwrap().is_none());
    t.cleanup().await;
}

async fn a_redrive_moves_only_dead_rows_and_records_it(t: TestDb) {
    let ids = a_mixed_outbox(&t).await;
    let mut row_ids = Vec::new();
    for event_id in &ids {
        row_ids.push(id_of(&t, &table(), event_id).await);
    }
    let dead = table()
        .dead_ids(
            &t.db,
            &OutboxFilter {
                reason_contains: Some("boom".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(dead, row_ids[0..2].to_vec());
    // Asked for every row, a redrive moves the dead ones only: consumed stays consumed.
    let before = now_millis();
    assert_eq!(table().redrive_recorded(&t.db, &row_ids).await.unwrap(), 3);
    for (i, event_id) in ids.iter().enumerate() {
        let row = table()
            .record_by_event_id(&t.db, event_id)
            .await
            .unwrap()
            .unwrap();
        let history = row.redrive.unwrap();
        if i < 3 {
            assert_eq!(row.row.status, OutboxStatus::Pending, "row {i}");
            assert_eq!(row.row.retry_count, 0);
            assert_eq!(history.redrive_count, 1);
            assert!(history.last_redriven_at.unwrap() >= before);
        } else {
            assert_eq!(history.redrive_count, 0, "row {i} was not redriven");
            assert_eq!(history.last_redriven_at, None);
        }
    }
    let consumed = table().find(&t.db, &ids[4]).await.unwrap().unwrap();
    assert_eq!(consumed.status, OutboxStatus::Consumed);
    assert_eq!(
        table().redrive_recorded(&t.db, &row_ids).await.unwrap(),
        0,
        "nothing is dead any more"
    );
    kill(&t, &table(), &ids[0], "Boom again").await;
    assert_eq!(
        table()
            .redrive_recorded(&t.db, &row_ids[0..1])
            .await
            .unwrap(),
        1
    );
    let again = table()
        .record_by_id(&t.db, row_ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.redrive.unwrap().redrive_count, 2);
    assert_eq!(table().redrive_recorded(&t.db, &[]).await.unwrap(), 0);
    t.cleanup().await;
}

async fn a_table_without_the_history_refuses_a_redrive_until_migrated(t: TestDb) {
    let manager = SchemaManager::new(&t.db);
    smartflow_migrations::create_outbox_table(&manager, "plain_outbox")
        .await
        .unwrap();
    let plain = OutboxTable::new("plain_outbox").unwrap();
    let ids = insert(&t, &plain, 1).await;
    kill(&t, &plain, &ids[0], "poison").await;
    let id = id_of(&t, &plain, &ids[0]).await;
    assert!(!plain.has_redrive_history(&t.db).await.unwrap());
    let shown = plain.record_by_id(&t.db, id).await.unwrap().unwrap();
    assert_eq!(shown.redrive, None);
    let err = plain.redrive_recorded(&t.db, &[id]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::NoRedriveHistory { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("add_redrive_history"), "{err}");
    let row = plain.find(&t.db, &ids[0]).await.unwrap().unwrap();
    assert_eq!(
        row.status,
        OutboxStatus::Dead,
        "a refused redrive changes nothing"
    );
    for _ in 0..2 {
        smartflow_migrations::add_redrive_history(&manager, "plain_outbox")
            .await
            .unwrap();
    }
    assert!(column_exists(&t.db, "plain_outbox", "redrive_count")
        .await
        .unwrap());
    assert_eq!(plain.redrive_recorded(&t.db, &[id]).await.unwrap(), 1);
    smartflow_migrations::drop_redrive_history(&manager, "plain_outbox")
        .await
        .unwrap();
    assert!(!plain.has_redrive_history(&t.db).await.unwrap());
    t.cleanup().await;
}

async fn the_catalog_knows_tables_and_columns(t: TestDb) {
    assert!(table_exists(&t.db, "agent_outbox").await.unwrap());
    assert!(table_exists(&t.db, "inbox").await.unwrap());
    assert!(!table_exists(&t.db, "no_such_outbox").await.unwrap());
    assert!(column_exists(&t.db, "agent_outbox", "last_redriven_at")
        .await
        .unwrap());
    assert!(!column_exists(&t.db, "agent_outbox", "no_such_column")
        .await
        .unwrap());
    assert!(!column_exists(&t.db, "no_such_outbox", "id").await.unwrap());
    t.cleanup().await;
}

async fn a_purge_deletes_settled_rows_in_batches(t: TestDb) {
    let ids = a_mixed_outbox(&t).await;
    let everything_settled = OutboxPurge {
        statuses: vec![SettledStatus::Consumed, SettledStatus::Dead],
        settled_before: now_millis() + 1,
    };
    let nothing_old = OutboxPurge {
        settled_before: 0,
        ..everything_settled.clone()
    };
    assert_eq!(
        table().count_purgeable(&t.db, &nothing_old).await.unwrap(),
        0
    );
    assert_eq!(table().purge(&t.db, &nothing_old, 2).await.unwrap(), 0);
    let dead_only = OutboxPurge {
        statuses: vec![SettledStatus::Dead],
        ..everything_settled.clone()
    };
    assert_eq!(table().count_purgeable(&t.db, &dead_only).await.unwrap(), 3);
    assert_eq!(
        table()
            .count_purgeable(&t.db, &everything_settled)
            .await
            .unwrap(),
        4
    );
    // Batches of two: three dead rows take two batches.
    assert_eq!(table().purge(&t.db, &dead_only, 2).await.unwrap(), 3);
    assert_eq!(
        table().purge(&t.db, &everything_settled, 2).await.unwrap(),
        1
    );
    for (i, event_id) in ids.iter().enumerate() {
        let row = table().find(&t.db, event_id).await.unwrap();
        assert_eq!(
            row.is_some(),
            i == 3 || i == 5,
            "row {i}: only live rows stay"
        );
    }
    t.cleanup().await;
}

async fn inbox_admin_reports_lists_and_purges(t: TestDb) {
    let inbox = InboxTable::default();
    let txn = t.db.begin().await.unwrap();
    for (consumer, event, status, error) in [
        ("billing", "e1", InboxStatus::Handled, None),
        ("billing", "e2", InboxStatus::Dead, Some("bad payload")),
        ("billing", "e3", InboxStatus::Dead, Some("bad payload")),
        ("usage", "e1", InboxStatus::Handled, None),
        ("usage", "e4", InboxStatus::Dead, Some("no handler")),
    ] {
        assert!(inbox
            .record(
                &txn,
                consumer,
                event,
                "agent.token.usage.recorded",
                status,
                error
            )
            .await
            .unwrap());
    }
    txn.commit().await.unwrap();
    let report = inbox.report(&t.db).await.unwrap();
    assert_eq!(report.counts.len(), 2);
    assert_eq!(
        (
            report.counts["billing"].handled,
            report.counts["billing"].dead
        ),
        (1, 2)
    );
    assert_eq!(
        (report.counts["usage"].handled, report.counts["usage"].dead),
        (1, 1)
    );
    assert_eq!(
        report.dead_reasons,
        vec![
            (Some("bad payload".to_owned()), 2),
            (Some("no handler".to_owned()), 1)
        ]
    );
    let dead = InboxFilter {
        status: Some(InboxStatus::Dead),
        reason_contains: Some("BAD".into()),
        ..Default::default()
    };
    assert_eq!(inbox.count_matching(&t.db, &dead).await.unwrap(), 2);
    let of_e1 = InboxFilter {
        event_id: Some("e1".into()),
        ..Default::default()
    };
    let rows = inbox.list_matching(&t.db, &of_e1, 10).await.unwrap();
    let consumers: Vec<_> = rows.iter().map(|r| r.consumer.as_str()).collect();
    assert_eq!(consumers, ["billing", "usage"]);
    let none_old = InboxFilter {
        handled_before: Some(0),
        ..Default::default()
    };
    assert_eq!(inbox.purge(&t.db, &none_old, 2).await.unwrap(), 0);
    let dead_now = InboxFilter {
        status: Some(InboxStatus::Dead),
        handled_before: Some(now_millis() + 1),
        ..Default::default()
    };
    assert_eq!(inbox.purge(&t.db, &dead_now, 2).await.unwrap(), 3);
    assert_eq!(
        inbox
            .count_matching(&t.db, &InboxFilter::default())
            .await
            .unwrap(),
        2,
        "the handled rows stay"
    );
    t.cleanup().await;
}

/// Under `KeyOrder::Block` a row of `a` waiting for its retry holds back `a`'s later rows;
/// unblocking `a` gives up on it (`dead`, the operator's reason before its last error), the
/// later rows are claimable at once, and the unblocked row can be redriven.
async fn an_unblocked_keys_later_rows_are_claimable(t: TestDb) {
    let txn = t.db.begin().await.unwrap();
    let mut ids = Vec::new();
    for (n, key) in ["a", "a", "a", "b"].into_iter().enumerate() {
        let env = Envelope::for_event(key, &Ping { n: n as u32 }).unwrap();
        ids.push(env.event_id.to_string());
        table().insert(&txn, &env, "topic-a", 3).await.unwrap();
    }
    txn.commit().await.unwrap();
    table()
        .record_failure(&t.db, &ids[0], "broker said no", true, &policy())
        .await
        .unwrap();
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let request = ClaimRequest::new("r", 100, 100, Duration::from_secs(30));
    let claimed = |claim: &smartflow_storage::outbox::Claim| -> Vec<String> {
        claim.rows.iter().map(|r| r.event_id.clone()).collect()
    };

    let blocked = table().claim(&t.db, mode, &request).await.unwrap();
    assert_eq!(claimed(&blocked), vec![ids[3].clone()]);
    assert_eq!(blocked.held_back, 2);
    table().release(&t.db, blocked).await.unwrap();

    let blocking = table().blocking_rows(&t.db, "a").await.unwrap();
    assert_eq!(blocking.len(), 1);
    assert_eq!(blocking[0].row.event_id, ids[0]);
    assert!(table().blocking_rows(&t.db, "b").await.unwrap().is_empty());

    let a0 = id_of(&t, &table(), &ids[0]).await;
    assert_eq!(table().unblock_key(&t.db, "a").await.unwrap(), vec![a0]);
    let row = table().find(&t.db, &ids[0]).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Dead);
    assert_eq!(row.retry_count, 1);
    assert_eq!(row.next_retry_at, None);
    assert_eq!(
        row.last_error.as_deref(),
        Some(format!("{UNBLOCKED_REASON}; last error: broker said no").as_str())
    );

    let free = table().claim(&t.db, mode, &request).await.unwrap();
    assert_eq!(claimed(&free), ids[1..].to_vec());
    assert_eq!(free.held_back, 0);
    table().release(&t.db, free).await.unwrap();

    // Nothing waits any more; a key that never waited unblocks nothing.
    assert!(table().unblock_key(&t.db, "a").await.unwrap().is_empty());
    assert!(table().unblock_key(&t.db, "zzz").await.unwrap().is_empty());
    assert_eq!(table().redrive_recorded(&t.db, &[a0]).await.unwrap(), 1);
    t.cleanup().await;
}

on_every_backend!(
    the_report_counts_statuses_retries_and_reasons,
    filters_narrow_the_rows,
    a_redrive_moves_only_dead_rows_and_records_it,
    a_table_without_the_history_refuses_a_redrive_until_migrated,
    the_catalog_knows_tables_and_columns,
    a_purge_deletes_settled_rows_in_batches,
    inbox_admin_reports_lists_and_purges,
    an_unblocked_keys_later_rows_are_claimable,
);
