//! Retention: the relay deletes, in bounded batches, the outbox rows the bus is done with and the
//! handled inbox entries of its consumers once they are older than their route's (or the
//! service's) retention, and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use smartflow_bus::{InboxRetention, Retention};
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::{now_millis, ConnectionTrait, TransactionTrait};
use smartflow_testkit::{on_every_backend, wait_until, TestDb};

use crate::fixture::*;

const HOUR: i64 = 3_600_000;

/// Puts the row of `event_id` into `status` (with a consumption deadline or none), last changed
/// `age_ms` ago.
async fn set_row(w: &World, event_id: &str, status: &str, deadline: bool, age_ms: i64) {
    let now = now_millis();
    let next = if deadline {
        (now + HOUR).to_string()
    } else {
        "NULL".to_owned()
    };
    let sql = format!(
        "UPDATE {} SET status = '{status}', next_retry_at = {next}, updated_at = {} \
         WHERE event_id = '{event_id}'",
        w.route.outbox_table,
        now - age_ms
    );
    w.t.db.execute_unprepared(&sql).await.unwrap();
}

async fn remaining(w: &World) -> BTreeSet<String> {
    let rows =
        w.t.db
            .query_all(sea_orm::Statement::from_string(
                w.t.db.get_database_backend(),
                format!("SELECT event_id FROM {}", w.route.outbox_table),
            ))
            .await
            .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", "event_id").unwrap())
        .collect()
}

async fn inbox_entries(w: &World) -> BTreeSet<(String, String)> {
    let rows =
        w.t.db
            .query_all(sea_orm::Statement::from_string(
                w.t.db.get_database_backend(),
                "SELECT consumer, event_id FROM inbox".to_owned(),
            ))
            .await
            .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get::<String>("", "consumer").unwrap(),
                r.try_get::<String>("", "event_id").unwrap(),
            )
        })
        .collect()
}

async fn a_retention_pass_deletes_what_the_bus_is_done_with_and_nothing_else(t: TestDb) {
    let w = World::new(t).await;
    let ids = w
        .publish(&[
            "consumed-old-1",
            "consumed-old-2",
            "consumed-old-3",
            "consumed-recent",
            "published-awaiting-its-consumer",
            "handed-off-old",
            "dead-old",
            "pending-old",
            "stored-old",
        ])
        .await;
    let two_days = 48 * HOUR;
    for id in &ids[0..3] {
        set_row(&w, id, "consumed", false, two_days).await;
    }
    set_row(&w, &ids[3], "consumed", false, HOUR / 60).await;
    set_row(&w, &ids[4], "published", true, two_days).await;
    set_row(&w, &ids[5], "published", false, two_days).await;
    set_row(&w, &ids[6], "dead", false, two_days).await;
    set_row(&w, &ids[7], "pending", false, two_days).await;
    set_row(&w, &ids[8], "stored", false, two_days).await;

    // Inbox entries: this service's consumer's, old and new, handled and dead, and another
    // consumer's that the relay does not look after.
    let inbox = InboxTable::default();
    let txn = w.t.db.begin().await.unwrap();
    for (consumer, event_id, status) in [
        ("billing", "in-old-1", InboxStatus::Handled),
        ("billing", "in-old-2", InboxStatus::Handled),
        ("billing", "in-new", InboxStatus::Handled),
        ("billing", "in-dead-old", InboxStatus::Dead),
        ("someone-else", "in-old-3", InboxStatus::Handled),
    ] {
        assert!(inbox
            .record(&txn, consumer, event_id, "x.happened", status, None)
            .await
            .unwrap());
    }
    txn.commit().await.unwrap();
    w.t.db
        .execute_unprepared(&format!(
            "UPDATE inbox SET handled_at = {} WHERE event_id <> 'in-new'",
            now_millis() - two_days
        ))
        .await
        .unwrap();

    let retention = |topics: BTreeMap<String, Duration>| Retention {
        outbox: Some(Duration::from_secs(3600)),
        outbox_topics: topics,
        inboxes: vec![InboxRetention {
            table: InboxTable::default(),
            consumer: "billing".into(),
            keep: Duration::from_secs(3600),
        }],
        // Two rows a statement: the passes below take several batches.
        batch: 2,
        ..Retention::default()
    };
    // The route keeps its rows for 30 days: nothing of it is old enough.
    let relay = w.relay_on(
        w.t.db.clone(),
        smartflow_bus::RelayConfig {
            retention: retention(BTreeMap::from([(
                w.route.topic.clone(),
                Duration::from_secs(30 * 24 * 3600),
            )])),
            ..relay_config()
        },
    );
    let report = relay.retain_once().await.unwrap();
    assert_eq!((report.outbox_rows, report.inbox_rows), (0, 2));
    assert_eq!(remaining(&w).await.len(), ids.len());

    // The service's one hour applies to the route.
    let relay = w.relay_on(
        w.t.db.clone(),
        smartflow_bus::RelayConfig {
            retention: retention(BTreeMap::new()),
            ..relay_config()
        },
    );
    let before = w.bus.metrics().retention_deleted.load(Ordering::Relaxed);
    let report = relay.retain_once().await.unwrap();
    assert_eq!((report.outbox_rows, report.inbox_rows), (4, 0));
    assert_eq!(
        w.bus.metrics().retention_deleted.load(Ordering::Relaxed) - before,
        4
    );
    let scrape = smartflow_testkit::metrics::Scrape::parse(&w.bus.metrics().prometheus_text());
    let per_table = |table: &str| {
        scrape.value(
            "smartflow_retention_deleted_rows_total",
            &[("table", table)],
        )
    };
    assert_eq!(per_table(&w.route.outbox_table), 4.0);
    assert_eq!(per_table("inbox"), 2.0, "the first pass's inbox rows");
    let expected: BTreeSet<String> = ids[3..5].iter().chain(&ids[6..9]).cloned().collect();
    assert_eq!(remaining(&w).await, expected, "only done, old rows go");
    let expected_inbox: BTreeSet<(String, String)> = [
        ("billing", "in-new"),
        ("billing", "in-dead-old"),
        ("someone-else", "in-old-3"),
    ]
    .into_iter()
    .map(|(c, e)| (c.to_owned(), e.to_owned()))
    .collect();
    assert_eq!(inbox_entries(&w).await, expected_inbox);

    // Nothing more is due.
    let report = relay.retain_once().await.unwrap();
    assert_eq!((report.outbox_rows, report.inbox_rows), (0, 0));
    w.finish().await;
}

/// The running relay deletes what is due every `Retention::interval`, beside its rounds.
async fn a_running_relay_deletes_what_is_due(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["done-long-ago", "fresh"]).await;
    set_row(&w, &ids[0], "consumed", false, 48 * HOUR).await;
    let relay = w.relay_on(
        w.t.db.clone(),
        smartflow_bus::RelayConfig {
            retention: Retention {
                outbox: Some(Duration::from_secs(3600)),
                interval: Duration::from_millis(20),
                ..Retention::default()
            },
            ..relay_config()
        },
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_until("the old consumed row is deleted", || async {
        !remaining(&w).await.contains(&ids[0])
    })
    .await;
    // The fresh row was published by the relay's rounds meanwhile, and stays.
    assert!(remaining(&w).await.contains(&ids[1]));
    shutdown.cancel();
    task.await.unwrap();
    w.finish().await;
}

/// A zero interval or batch, or a busy share outside (0, 1], is refused when the relay is built.
async fn a_retention_that_cannot_run_is_refused(t: TestDb) {
    let w = World::new(t).await;
    for retention in [
        Retention {
            interval: Duration::ZERO,
            ..Retention::default()
        },
        Retention {
            batch: 0,
            ..Retention::default()
        },
        Retention {
            busy_share: 0.0,
            ..Retention::default()
        },
        Retention {
            busy_share: 1.5,
            ..Retention::default()
        },
    ] {
        let config = smartflow_bus::RelayConfig {
            retention,
            ..relay_config()
        };
        let err = config
            .validate(Duration::from_secs(1))
            .expect_err("a retention that cannot run");
        assert!(err.to_string().contains("retention"), "{err}");
    }
    w.finish().await;
}

on_every_backend!(
    a_retention_pass_deletes_what_the_bus_is_done_with_and_nothing_else,
    a_retention_that_cannot_run_is_refused,
    a_running_relay_deletes_what_is_due,
);
