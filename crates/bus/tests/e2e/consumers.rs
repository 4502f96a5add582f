//! The consumer under infrastructure faults: a database that goes away for longer than Kafka's
//! poll interval must not cost the consumer its group membership, and it resumes by itself.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, TransactionTrait};
use smartflow_bus::domain::{InboundTransport, RetryPolicy};
use smartflow_bus::{ConsumerConfig, ConsumerRunner};
use smartflow_kafka::KafkaConsumer;
use smartflow_testkit::{on_every_backend, FaultProxy, TestDb};
use tokio_util::sync::CancellationToken;

use smartflow_storage::chat_history;
use smartflow_storage::inbox::{InboxStatus, InboxTable};

use crate::delivery::as_delivered;
use crate::fixture::*;

/// Longer than the consumer's `max.poll.interval.ms` below, so a loop that stops polling while
/// the database is away is thrown out of its group.
const OUTAGE: Duration = Duration::from_secs(9);

async fn a_consumer_keeps_its_group_through_a_database_outage(t: TestDb) {
    let w = World::new(t).await;
    let relay = w.relay();
    let ids = w.publish(&["before the outage", "also before"]).await;
    w.relay_until_drained(&relay).await;

    let proxy = match w.t.server_addr() {
        Some(server) => Some(FaultProxy::start(&server).await),
        None => None,
    };
    let consumer_db = match &proxy {
        Some(proxy) => w.t.connect_through(proxy, Duration::from_secs(1)).await,
        None => {
            // Each statement gives up on the write lock within a second, as a statement on a
            // server gives up on an unreachable connection.
            let mut config = w.t.config.clone();
            config.limits.lock_wait = Duration::from_secs(1);
            smartflow_storage::connect(&config).await.unwrap()
        }
    };
    let mut kafka = w.kafka.clone();
    kafka
        .extra
        .push(("max.poll.interval.ms".into(), "7000".into()));
    let transport =
        Arc::new(KafkaConsumer::new(&kafka, &w.route.consumer_group, &[&w.route.topic]).unwrap());
    let metrics = w.bus.metrics().clone();
    let runner = ConsumerRunner::for_route(
        consumer_db,
        &w.route,
        handlers(),
        transport.clone(),
        ConsumerConfig {
            retry: fast_retry(),
            stall: RetryPolicy {
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(500),
                max_retry: u32::MAX,
            },
            ..ConsumerConfig::default()
        },
        metrics.clone(),
    )
    .unwrap();

    // The database goes away before the consumer has applied anything.
    let sqlite_lock = match &proxy {
        Some(proxy) => {
            proxy.cut();
            None
        }
        None => {
            // SQLite has no server: another writer holding the write lock has the same effect.
            let blocker = w.t.connect_again().await;
            let txn = blocker.begin().await.unwrap();
            txn.execute_unprepared("CREATE TABLE write_lock_holder (x INTEGER)")
                .await
                .unwrap();
            Some((blocker, txn))
        }
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    wait_until("the consumer reports the stall", || async {
        metrics.health.report().iter().any(|c| {
            c.problem
                .as_deref()
                .is_some_and(|p| p.starts_with("cannot apply a batch"))
        })
    })
    .await;
    tokio::time::sleep(OUTAGE).await;
    assert!(
        transport.assigned_partitions() > 0,
        "the consumer is still a member of its group after {OUTAGE:?} of outage"
    );
    match (&proxy, sqlite_lock) {
        (Some(proxy), _) => proxy.restore(),
        (None, Some((blocker, txn))) => {
            txn.rollback().await.unwrap();
            blocker.close().await.unwrap();
        }
        (None, None) => unreachable!(),
    }

    // It resumes by itself, and events published after the outage are applied too.
    let later = w.publish(&["after the outage"]).await;
    w.relay_until_drained(&relay).await;
    wait_until(
        "every event is consumed and the consumer is healthy",
        || async { w.stats().await.consumed == 3 && metrics.health.healthy() },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap();
    for id in ids.iter().chain(&later) {
        let row = w.table().find(&w.t.db, id).await.unwrap().unwrap();
        assert_eq!(row.retry_count, 0, "an outage spends no retry");
    }
    w.finish().await;
}

async fn an_inbox_consumer_holds_the_partition_at_a_retryable_failure(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["retry", "fine"]).await;
    let batch = as_delivered(&w, &ids).await;
    let runner = ConsumerRunner::for_subscriber(
        w.t.db.clone(),
        "userauth",
        handlers(),
        Arc::new(smartflow_testkit::Unplugged),
        ConsumerConfig {
            retry: fast_retry(),
            ..ConsumerConfig::default()
        },
        w.bus.metrics().clone(),
    )
    .unwrap();
    // The attempts before the last: the batch stops at the failing event, which (and everything
    // after it) is tried again later, outside any open transaction.
    for attempt in 1..fast_retry().max_retry {
        let report = runner.process_batch(&batch).await.unwrap();
        assert_eq!(report.stopped_at, Some(0), "attempt {attempt}");
        assert_eq!(report.applied, 0);
        assert!(InboxTable::default()
            .find(&w.t.db, "userauth", &ids[0])
            .await
            .unwrap()
            .is_none());
    }
    // Out of attempts: dead in the inbox with the reason, and the partition moves on.
    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!(
        (report.stopped_at, report.dead, report.applied),
        (None, 1, 1)
    );
    let dead = InboxTable::default()
        .find(&w.t.db, "userauth", &ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.status, InboxStatus::Dead);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("gave up after 3 attempts: downstream busy")
    );
    assert_eq!(chat_history::count(&w.t.db).await.unwrap(), 1);
    w.finish().await;
}

on_every_backend!(
    a_consumer_keeps_its_group_through_a_database_outage,
    an_inbox_consumer_holds_the_partition_at_a_retryable_failure,
);
