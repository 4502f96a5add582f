//! Outbox repository scenarios, each run on SQLite, PostgreSQL and MariaDB.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use smartflow_domain::{Envelope, EventContract, OutboxStatus, RetryPolicy};
use smartflow_storage::outbox::{
    key_shard, ClaimMode, ClaimRequest, FailureOutcome, OutboxTable, PublishFailure, Settlement,
    KEY_SHARDS,
};
use smartflow_storage::{now_millis, ConnectionTrait, TransactionTrait};
use smartflow_testkit::{on_every_backend, Backend, TestDb};

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u32,
}
impl EventContract for Ping {
    const EVENT_TYPE: &'static str = "test.ping";
}

fn table() -> OutboxTable {
    OutboxTable::new("agent_outbox").unwrap()
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(1),
        max_retry: 3,
    }
}

fn request(owner: &str, fresh: u64) -> ClaimRequest {
    ClaimRequest::new(owner, fresh, 100, Duration::from_secs(30))
}

async fn insert_n(t: &TestDb, n: u32) -> Vec<String> {
    let txn = t.db.begin().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let env = Envelope::for_event(format!("k{}", i % 3), &Ping { n: i }).unwrap();
        ids.push(env.event_id.to_string());
        table().insert(&txn, &env, "topic-a", 3).await.unwrap();
    }
    txn.commit().await.unwrap();
    ids
}

/// Calls `requeue_unconsumed` until it moves something (a published row's deadline, or for a
/// row its shard's cursor sent, a checkpoint `after` old), and returns how many rows it moved.
async fn requeue_when_due(t: &TestDb, after: Duration) -> u64 {
    for _ in 0..200 {
        tokio::time::sleep(after + Duration::from_millis(5)).await;
        let moved = table()
            .requeue_unconsumed(&t.db, now_millis(), after)
            .await
            .unwrap();
        if moved > 0 {
            return moved;
        }
    }
    panic!("nothing became due for a re-send");
}

/// Claims every due row and settles it as published, with the given consumption deadline.
async fn publish_all(t: &TestDb, republish_after: Option<Duration>) {
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let claim = table().claim(&t.db, mode, &request("r", 10)).await.unwrap();
    let published = claim.rows.iter().map(|r| r.id).collect();
    let settlement = Settlement {
        published,
        failed: vec![],
        unavailable: Vec::new(),
        handed_off: Vec::new(),
    };
    table()
        .settle(&t.db, claim, settlement, &policy(), republish_after)
        .await
        .unwrap();
}

#[derive(Serialize, Deserialize)]
struct Pong {}
impl EventContract for Pong {
    const EVENT_TYPE: &'static str = "test.pong";
}

async fn stats_of_one_event_type_leave_the_others_out(t: TestDb) {
    insert_n(&t, 5).await;
    let txn = t.db.begin().await.unwrap();
    let env = Envelope::for_event("k", &Pong {}).unwrap();
    table().insert(&txn, &env, "topic-b", 3).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(table().stats(&t.db).await.unwrap().pending, 6);
    let pings = table()
        .stats_of_type(&t.db, Ping::EVENT_TYPE)
        .await
        .unwrap();
    assert_eq!((pings.pending, pings.published), (5, 0));
    let pongs = table()
        .stats_of_type(&t.db, Pong::EVENT_TYPE)
        .await
        .unwrap();
    assert_eq!(pongs.pending, 1);
    assert!(pongs.oldest_pending_created_at.is_some());
    t.cleanup().await;
}

async fn rolled_back_insert_leaves_nothing(t: TestDb) {
    let txn = t.db.begin().await.unwrap();
    let env = Envelope::for_event("k", &Ping { n: 1 }).unwrap();
    table().insert(&txn, &env, "topic-a", 3).await.unwrap();
    txn.rollback().await.unwrap();
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let claim = table()
        .claim(&t.db, mode, &request("r1", 10))
        .await
        .unwrap();
    assert!(
        claim.rows.is_empty(),
        "a rolled-back row must never be claimed"
    );
    assert!(table()
        .find(&t.db, &env.event_id.to_string())
        .await
        .unwrap()
        .is_none());
    t.cleanup().await;
}

/// Inserts one row per key, `key-0`.. in order; returns the event ids.
async fn insert_keys(t: &TestDb, keys: &[&str]) -> Vec<String> {
    let txn = t.db.begin().await.unwrap();
    let mut ids = Vec::new();
    for (n, key) in keys.iter().enumerate() {
        let env = Envelope::for_event(*key, &Ping { n: n as u32 }).unwrap();
        ids.push(env.event_id.to_string());
        table().insert(&txn, &env, "topic-a", 3).await.unwrap();
    }
    txn.commit().await.unwrap();
    ids
}

fn settled(published: Vec<i64>) -> Settlement {
    Settlement {
        published,
        ..Settlement::default()
    }
}

async fn concurrent_claims_never_share_a_shard(t: TestDb) {
    let keys: Vec<String> = (0..50).map(|n| format!("key-{n}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let ids = insert_keys(&t, &key_refs).await;
    let other = t.connect_again().await;
    let third = t.connect_again().await;
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let half = |owner: &str| ClaimRequest {
        shards: KEY_SHARDS as u64 / 2,
        ..request(owner, 100)
    };
    let a = table().claim(&t.db, mode, &half("a")).await.unwrap();
    let b = table().claim(&other, mode, &half("b")).await.unwrap();
    let c = table().claim(&third, mode, &half("c")).await.unwrap();
    let (low, high) = (0..KEY_SHARDS / 2, KEY_SHARDS / 2..KEY_SHARDS);
    assert!(a.shards.iter().all(|s| low.contains(s)), "{:?}", a.shards);
    assert!(
        b.shards.iter().all(|s| high.contains(s)),
        "b takes what a left: {:?}",
        b.shards
    );
    assert!(
        c.rows.is_empty() && c.shards.is_empty(),
        "every shard is held"
    );
    for (claim, shards) in [(&a, &low), (&b, &high)] {
        assert!(claim
            .rows
            .iter()
            .all(|r| shards.contains(&key_shard(&r.message_key))));
    }
    let mut seen: Vec<i64> = a.rows.iter().chain(b.rows.iter()).map(|r| r.id).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 50, "every row is in exactly one claim");
    let pa: Vec<i64> = a.rows.iter().map(|r| r.id).collect();
    let pb: Vec<i64> = b.rows.iter().map(|r| r.id).collect();
    table()
        .settle(&t.db, a, settled(pa), &policy(), None)
        .await
        .unwrap();
    table()
        .settle(&other, b, settled(pb), &policy(), None)
        .await
        .unwrap();
    let stats = table().stats(&t.db).await.unwrap();
    assert_eq!(stats.published, 50);
    assert_eq!(stats.pending, 0);
    for id in ids {
        let row = table().find(&t.db, &id).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Published);
    }
    // Settled claims gave their shards back: a new row finds every shard free.
    let late = insert_keys(&t, &["late"]).await;
    let again = table()
        .claim(&third, mode, &request("c", 100))
        .await
        .unwrap();
    assert_eq!(again.shards.len(), KEY_SHARDS as usize);
    assert_eq!(again.rows.len(), 1);
    assert_eq!(again.rows[0].event_id, late[0]);
    table().release(&third, again).await.unwrap();
    t.cleanup().await;
}

async fn a_key_waiting_for_a_retry_holds_back_its_later_rows(t: TestDb) {
    let ids = insert_keys(&t, &["a", "b", "a", "a"]).await;
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let first = table().claim(&t.db, mode, &request("r", 1)).await.unwrap();
    assert_eq!(first.rows.len(), 1);
    let a0 = first.rows[0].id;
    let settlement = Settlement {
        failed: vec![PublishFailure {
            id: a0,
            error: "try again".into(),
            retryable: true,
        }],
        ..Settlement::default()
    };
    // A backoff far longer than the test, so the row is surely not due until asked for later.
    let patient = RetryPolicy {
        base_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(60),
        max_retry: 3,
    };
    table()
        .settle(&t.db, first, settlement, &patient, None)
        .await
        .unwrap();
    let event_ids = |claim: &smartflow_storage::outbox::Claim| -> Vec<String> {
        claim.rows.iter().map(|r| r.event_id.clone()).collect()
    };

    // Not due yet: `a`'s later rows wait behind it, `b` goes on.
    let blocked = table()
        .claim(&t.db, mode, &request("r", 100))
        .await
        .unwrap();
    assert_eq!(event_ids(&blocked), vec![ids[1].clone()]);
    assert_eq!(blocked.held_back, 2);
    table().release(&t.db, blocked).await.unwrap();

    // Under `KeyOrder::Skip` nothing waits.
    let skip = ClaimRequest {
        skip_topics: vec!["topic-a".into()],
        ..request("r", 100)
    };
    let skipping = table().claim(&t.db, mode, &skip).await.unwrap();
    assert_eq!(event_ids(&skipping), ids[1..].to_vec());
    assert_eq!(skipping.held_back, 0);
    table().release(&t.db, skipping).await.unwrap();

    // Once due, the waiting row goes first among its key's rows, all in id order.
    let later = ClaimRequest {
        now: now_millis() + 600_000,
        ..request("r", 100)
    };
    let due = table().claim(&t.db, mode, &later).await.unwrap();
    assert_eq!(event_ids(&due), ids);
    table().release(&t.db, due).await.unwrap();
    t.cleanup().await;
}

async fn an_abandoned_claim_comes_back(t: TestDb) {
    insert_n(&t, 5).await;
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let crashed = t.connect_again().await;
    let mut req = request("crashed", 10);
    req.hold_for = Duration::from_millis(300);
    let claim = table().claim(&crashed, mode, &req).await.unwrap();
    assert_eq!(claim.rows.len(), 5);
    // The relay process dies: its claim is dropped and its connections close.
    drop(claim);
    crashed.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = table()
        .claim(&t.db, mode, &request("survivor", 10))
        .await
        .unwrap();
    assert_eq!(again.rows.len(), 5, "another relay takes over every row");
    table().release(&t.db, again).await.unwrap();
    t.cleanup().await;
}

async fn failures_retry_with_backoff_then_die(t: TestDb) {
    let ids = insert_n(&t, 2).await;
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    // Row 0 fails with a retryable error until retries run out; row 1 fails permanently.
    for round in 1..=3u32 {
        let claim = loop {
            let c = table().claim(&t.db, mode, &request("r", 10)).await.unwrap();
            if !c.rows.is_empty() || round > 1 {
                break c;
            }
        };
        let failed = claim
            .rows
            .iter()
            .map(|r| PublishFailure {
                id: r.id,
                error: format!("broker said no ({round})"),
                retryable: r.event_id == ids[0],
            })
            .collect();
        table()
            .settle(
                &t.db,
                claim,
                Settlement {
                    published: vec![],
                    failed,
                    unavailable: Vec::new(),
                    handed_off: Vec::new(),
                },
                &policy(),
                None,
            )
            .await
            .unwrap();
        let row0 = table().find(&t.db, &ids[0]).await.unwrap().unwrap();
        assert_eq!(row0.retry_count, round as i32);
        if round < 3 {
            assert_eq!(row0.status, OutboxStatus::Pending);
            let due = row0.next_retry_at.expect("a retry has a due time");
            assert!(due > now_millis() - 1000);
            // Not claimable before it is due.
            let early = table().claim(&t.db, mode, &request("r", 10)).await.unwrap();
            assert!(early.rows.iter().all(|r| r.event_id != ids[0]) || due <= now_millis());
            table().release(&t.db, early).await.unwrap();
            tokio::time::sleep(Duration::from_millis(
                (due - now_millis()).max(0) as u64 + 20,
            ))
            .await;
        } else {
            assert_eq!(row0.status, OutboxStatus::Dead, "out of retries");
            assert_eq!(row0.last_error.as_deref(), Some("broker said no (3)"));
        }
        let row1 = table().find(&t.db, &ids[1]).await.unwrap().unwrap();
        assert_eq!(
            row1.status,
            OutboxStatus::Dead,
            "a permanent error is dead at once"
        );
        assert_eq!(row1.last_error.as_deref(), Some("broker said no (1)"));
    }
    t.cleanup().await;
}

async fn consumed_is_final_and_dead_yields_only_to_its_consumer(t: TestDb) {
    let ids = insert_n(&t, 2).await;
    publish_all(&t, None).await;
    assert!(table().mark_consumed(&t.db, &ids[0]).await.unwrap());
    assert!(
        !table().mark_consumed(&t.db, &ids[0]).await.unwrap(),
        "second mark is a no-op"
    );
    let out = table()
        .record_failure(&t.db, &ids[0], "late failure", true, &policy())
        .await
        .unwrap();
    assert_eq!(out, FailureOutcome::Untouched);
    let out = table()
        .record_failure(&t.db, &ids[1], "poison", false, &policy())
        .await
        .unwrap();
    assert_eq!(out, FailureOutcome::Dead);
    let out = table()
        .record_failure(&t.db, &ids[1], "poison again", false, &policy())
        .await
        .unwrap();
    assert_eq!(
        out,
        FailureOutcome::StillDead,
        "a dead row keeps its first reason"
    );
    let row1 = table().find(&t.db, &ids[1]).await.unwrap().unwrap();
    assert_eq!(row1.status, OutboxStatus::Dead);
    assert_eq!(row1.last_error.as_deref(), Some("poison"));
    assert!(
        table().mark_consumed(&t.db, &ids[1]).await.unwrap(),
        "a dead event whose copy a consumer applied is consumed"
    );
    for id in &ids {
        let row = table().find(&t.db, id).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Consumed);
        let out = table()
            .record_failure(&t.db, id, "late failure", false, &policy())
            .await
            .unwrap();
        assert_eq!(out, FailureOutcome::Untouched, "consumed is final");
    }
    let row0 = table().find(&t.db, &ids[0]).await.unwrap().unwrap();
    assert_eq!(row0.last_error, None);
    t.cleanup().await;
}

async fn a_consumer_failure_during_a_lease_wins_over_the_relays_settle(t: TestDb) {
    // Under a lease (SQLite's mode) the relay holds no lock while the broker answers, so the
    // consumer may record a failure of the row meanwhile. PostgreSQL can run the lease claim
    // too; MariaDB cannot (no LIMIT in an IN subquery) and never uses it.
    if t.backend == Backend::MariaDb {
        t.cleanup().await;
        return;
    }
    let ids = insert_n(&t, 1).await;
    let claim = table()
        .claim(&t.db, ClaimMode::Lease, &request("relay", 10))
        .await
        .unwrap();
    assert_eq!(claim.rows.len(), 1);
    let id = claim.rows[0].id;
    let out = table()
        .record_failure(&t.db, &ids[0], "handler busy", true, &policy())
        .await
        .unwrap();
    assert!(matches!(out, FailureOutcome::Retrying { .. }), "{out:?}");
    let report = table()
        .settle(
            &t.db,
            claim,
            Settlement {
                published: vec![id],
                failed: vec![],
                unavailable: Vec::new(),
                handed_off: Vec::new(),
            },
            &policy(),
            Some(Duration::from_secs(900)),
        )
        .await
        .unwrap();
    // The broker took the row, and the shard's cursor (SQLite, PostgreSQL) records that by
    // moving past it, writing nothing into the row: the consumer's decision stands.
    assert_eq!(report.published, 1, "sent, as far as the relay knows");
    let row = table().find(&t.db, &ids[0]).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Pending);
    assert_eq!(row.retry_count, 1);
    assert_eq!(row.last_error.as_deref(), Some("handler busy"));
    t.cleanup().await;
}

async fn unconsumed_rows_are_published_again_without_dying(t: TestDb) {
    let ids = insert_n(&t, 1).await;
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    // More re-sends than the row has retries (3).
    for _ in 0..5 {
        publish_all(&t, Some(Duration::from_millis(1))).await;
        let row = table().find(&t.db, &ids[0]).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Published);
        assert_eq!(requeue_when_due(&t, Duration::from_millis(1)).await, 1);
        let row = table().find(&t.db, &ids[0]).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Pending);
        assert_eq!(
            row.retry_count, 0,
            "a missing consumer is not the event's fault"
        );
    }
    let again = table().claim(&t.db, mode, &request("r", 10)).await.unwrap();
    assert_eq!(again.rows.len(), 1, "the retry lane picks it up");
    table().release(&t.db, again).await.unwrap();
    t.cleanup().await;
}

async fn a_lost_broker_gets_every_published_row_again(t: TestDb) {
    let ids = insert_n(&t, 3).await;
    publish_all(&t, None).await;
    assert!(table().mark_consumed(&t.db, &ids[0]).await.unwrap());
    assert_eq!(table().requeue_all_published(&t.db).await.unwrap(), 2);
    for id in &ids[1..] {
        let row = table().find(&t.db, id).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Pending);
        assert_eq!(
            row.last_error.as_deref(),
            Some("published to a broker that has since lost it; sent again")
        );
    }
    let consumed = table().find(&t.db, &ids[0]).await.unwrap().unwrap();
    assert_eq!(
        consumed.status,
        OutboxStatus::Consumed,
        "terminal rows stay"
    );
    t.cleanup().await;
}

async fn migrations_are_idempotent_and_concurrent(t: TestDb) {
    let a = t.connect_again().await;
    let b = t.connect_again().await;
    let (ra, rb) = tokio::join!(smartflow_migrations::run(&a), smartflow_migrations::run(&b));
    ra.unwrap();
    rb.unwrap();
    smartflow_migrations::run(&t.db).await.unwrap();
    // Where the backend has partial indexes, the cursor's index serves the fresh lane and the
    // `(id)` index it replaced is gone.
    let probe = match t.db.get_database_backend() {
        sea_orm::DbBackend::Postgres => Some(
            "SELECT indexname AS name FROM pg_indexes WHERE indexname = 'ix_agent_outbox_cursor' \
             AND schemaname = current_schema()",
        ),
        sea_orm::DbBackend::Sqlite => Some(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'ix_agent_outbox_cursor'",
        ),
        sea_orm::DbBackend::MySql => None,
    };
    if let Some(sql) = probe {
        let backend = t.db.get_database_backend();
        let found =
            t.db.query_one(sea_orm::Statement::from_string(backend, sql))
                .await
                .unwrap();
        assert!(found.is_some(), "ix_agent_outbox_cursor is missing");
        let fresh = sql.replace("ix_agent_outbox_cursor", "ix_agent_outbox_fresh");
        let found =
            t.db.query_one(sea_orm::Statement::from_string(backend, fresh))
                .await
                .unwrap();
        assert!(found.is_none(), "ix_agent_outbox_fresh is still there");
    }
    t.cleanup().await;
}

/// An outbox made before the commit cursor existed is refused by name until its service's
/// migration adds the cursor (twice is harmless), and the rows written before are sent.
async fn an_outbox_without_the_commit_cursor_is_refused_until_migrated(t: TestDb) {
    let manager = sea_orm_migration::SchemaManager::new(&t.db);
    smartflow_migrations::create_outbox_table(&manager, "old_outbox")
        .await
        .unwrap();
    smartflow_migrations::drop_commit_cursor(&manager, "old_outbox")
        .await
        .unwrap();
    let old = OutboxTable::new("old_outbox").unwrap();
    let env = Envelope::for_event("k", &Ping { n: 1 }).unwrap();
    old.insert(&t.db, &env, "topic-a", 3).await.unwrap();
    let err = old.check_commit_cursor(&t.db).await.unwrap_err();
    assert!(
        matches!(err, smartflow_storage::StorageError::NoCommitCursor { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("add_commit_cursor"), "{err}");
    for _ in 0..2 {
        smartflow_migrations::add_commit_cursor(&manager, "old_outbox")
            .await
            .unwrap();
    }
    old.check_commit_cursor(&t.db).await.unwrap();
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let claim = old.claim(&t.db, mode, &request("r", 10)).await.unwrap();
    assert_eq!(claim.rows.len(), 1, "the row written before is sent");
    assert_eq!(claim.rows[0].txid, 0);
    let ids = claim.rows.iter().map(|r| r.id).collect();
    old.settle(&t.db, claim, settled(ids), &policy(), None)
        .await
        .unwrap();
    let row = old
        .find(&t.db, &env.event_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, OutboxStatus::Published);
    t.cleanup().await;
}

/// One relay round by hand: claims, "sends" every row, settles; returns the event ids sent.
async fn round_by_hand(
    db: &smartflow_storage::DatabaseConnection,
    mode: ClaimMode,
    owner: &str,
) -> Vec<String> {
    let claim = table().claim(db, mode, &request(owner, 50)).await.unwrap();
    let sent: Vec<String> = claim.rows.iter().map(|r| r.event_id.clone()).collect();
    let ids = claim.rows.iter().map(|r| r.id).collect();
    table()
        .settle(
            db,
            claim,
            settled(ids),
            &policy(),
            Some(Duration::from_secs(900)),
        )
        .await
        .unwrap();
    sent
}

async fn insert_one<C: ConnectionTrait>(conn: &C, key: &str) -> String {
    let env = Envelope::for_event(key, &Ping { n: 0 }).unwrap();
    table().insert(conn, &env, "topic-a", 3).await.unwrap();
    env.event_id.to_string()
}

/// Transactions that commit in another order than they took their row ids (and, on
/// PostgreSQL, their transaction ids) lose nothing: the cursor never passes a row a
/// transaction still open may commit below it. Each row is sent exactly once. (SQLite's single
/// writer commits in id order: there the scenario cannot happen.)
async fn rows_committed_out_of_order_are_all_sent_once(t: TestDb) {
    if t.backend == Backend::Sqlite {
        t.cleanup().await;
        return;
    }
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let slow = t.connect_again().await;
    let mut sent: Vec<String> = Vec::new();
    let mut written: Vec<String> = Vec::new();

    // A takes the lower row id (and transaction id) and commits last; B writes the same key
    // (so the same shard and cursor) and commits first.
    let a = slow.begin().await.unwrap();
    written.push(insert_one(&a, "a").await);
    let b = t.db.begin().await.unwrap();
    written.push(insert_one(&b, "a").await);
    b.commit().await.unwrap();
    sent.extend(round_by_hand(&t.db, mode, "r").await);
    // More of A's rows, written after B committed and after a round.
    written.push(insert_one(&a, "a").await);
    sent.extend(round_by_hand(&t.db, mode, "r").await);
    a.commit().await.unwrap();
    sent.extend(round_by_hand(&t.db, mode, "r").await);
    sent.extend(round_by_hand(&t.db, mode, "r").await);
    let mut first = sent.clone();
    first.sort();
    let mut three = written.clone();
    three.sort();
    assert_eq!(first, three, "A's rows, committed after B's, are sent too");

    // Then many at once: writers holding their transactions open for different times while
    // rounds run.
    let writers: Vec<_> = (0..6u64)
        .map(|w| {
            let db = t.db.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for n in 0..10u64 {
                    let txn = db.begin().await.unwrap();
                    mine.push(insert_one(&txn, &format!("w{w}")).await);
                    tokio::time::sleep(Duration::from_millis((w * 7 + n * 3) % 20)).await;
                    mine.push(insert_one(&txn, &format!("w{w}-{n}")).await);
                    txn.commit().await.unwrap();
                }
                mine
            })
        })
        .collect();
    let relay = {
        let db = t.db.clone();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sent.extend(round_by_hand(&db, mode, "loop").await);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            sent
        });
        (done, task)
    };
    for w in writers {
        written.extend(w.await.unwrap());
    }
    relay.0.store(true, std::sync::atomic::Ordering::Relaxed);
    sent.extend(relay.1.await.unwrap());
    sent.extend(round_by_hand(&t.db, mode, "r").await);
    sent.extend(round_by_hand(&t.db, mode, "r").await);

    let mut once = sent.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), sent.len(), "a row was sent twice");
    let mut all = written.clone();
    all.sort();
    assert_eq!(once, all, "every committed row is sent");
    let stats = table().stats(&t.db).await.unwrap();
    assert_eq!((stats.pending, stats.published), (0, written.len() as u64));
    t.cleanup().await;
}

/// A row the broker was unavailable for stops its shard's cursor: it and the rows after it that
/// were not sent come back in the next claim; rows after it that were sent are marked one by
/// one, so they are not sent again.
async fn an_unavailable_row_stops_its_shards_cursor(t: TestDb) {
    let ids = insert_keys(&t, &["k", "k", "k", "k", "k"]).await;
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let claim = table().claim(&t.db, mode, &request("r", 10)).await.unwrap();
    let rows: Vec<i64> = claim.rows.iter().map(|r| r.id).collect();
    assert_eq!(rows.len(), 5);
    let settlement = Settlement {
        published: vec![rows[0], rows[2]],
        unavailable: vec![rows[1], rows[3]],
        handed_off: vec![rows[4]],
        ..Settlement::default()
    };
    let report = table()
        .settle(
            &t.db,
            claim,
            settlement,
            &policy(),
            Some(Duration::from_secs(900)),
        )
        .await
        .unwrap();
    assert_eq!((report.published, report.released), (3, 2));
    let again = table().claim(&t.db, mode, &request("r", 10)).await.unwrap();
    let back: Vec<&str> = again.rows.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(
        back,
        [ids[1].as_str(), ids[3].as_str()],
        "only the unsent rows"
    );
    table().release(&t.db, again).await.unwrap();
    for n in [0, 2, 4] {
        let row = table().find(&t.db, &ids[n]).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Published, "row {n}");
    }
    let stats = table().stats(&t.db).await.unwrap();
    assert_eq!((stats.pending, stats.published), (2, 3));
    t.cleanup().await;
}

on_every_backend!(
    rows_committed_out_of_order_are_all_sent_once,
    an_unavailable_row_stops_its_shards_cursor,
    stats_of_one_event_type_leave_the_others_out,
    rolled_back_insert_leaves_nothing,
    concurrent_claims_never_share_a_shard,
    a_key_waiting_for_a_retry_holds_back_its_later_rows,
    an_abandoned_claim_comes_back,
    failures_retry_with_backoff_then_die,
    consumed_is_final_and_dead_yields_only_to_its_consumer,
    a_consumer_failure_during_a_lease_wins_over_the_relays_settle,
    unconsumed_rows_are_published_again_without_dying,
    a_lost_broker_gets_every_published_row_again,
    migrations_are_idempotent_and_concurrent,
    an_outbox_without_the_commit_cursor_is_refused_until_migrated,
);

/// SQLite's rounds lease shards, not rows: a round whose lease ran out and was taken over by
/// another round settles nothing (its rows are the other round's now), and the other round's
/// settle counts.
#[tokio::test]
async fn a_sqlite_round_whose_lease_was_taken_over_settles_nothing() {
    let t = TestDb::new(Backend::Sqlite).await;
    insert_n(&t, 5).await;
    let mut slow_req = request("slow", 10);
    slow_req.hold_for = Duration::from_millis(200);
    let slow = table()
        .claim(&t.db, ClaimMode::Lease, &slow_req)
        .await
        .unwrap();
    assert_eq!(slow.rows.len(), 5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fast = table()
        .claim(&t.db, ClaimMode::Lease, &request("fast", 10))
        .await
        .unwrap();
    assert_eq!(
        fast.rows.len(),
        5,
        "the lease ran out: another round takes the rows"
    );
    let all = |claim: &smartflow_storage::outbox::Claim| Settlement {
        published: claim.rows.iter().map(|r| r.id).collect(),
        ..Settlement::default()
    };
    let (slow_settlement, fast_settlement) = (all(&slow), all(&fast));
    let late = table()
        .settle(&t.db, slow, slow_settlement, &policy(), None)
        .await
        .unwrap();
    assert_eq!(
        late.published, 0,
        "the round that lost its lease settles nothing"
    );
    let stats = table().stats(&t.db).await.unwrap();
    assert_eq!(stats.pending, 5);
    let settled = table()
        .settle(&t.db, fast, fast_settlement, &policy(), None)
        .await
        .unwrap();
    assert_eq!(settled.published, 5);
    t.cleanup().await;
}
