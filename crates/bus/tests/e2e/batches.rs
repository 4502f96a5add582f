//! The consumer applies a batch whole: set-based dedupe marks and one handler call per run of one
//! event type; a batch that cannot or does not work whole is applied one event at a time, and
//! either way every event's effect is applied exactly once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use smartflow_bus::domain::{Envelope, KeyOrder};
use smartflow_bus::{
    ConsumerConfig, ConsumerRunner, DatabaseTransaction, HandlerError, HandlerRegistry, Metrics,
    TypedHandler,
};
use smartflow_storage::chat_history;
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::ConnectionTrait;
use smartflow_testkit::{on_every_backend, TestDb};

use crate::delivery::as_delivered;
use crate::fixture::*;

/// `StoreSaid`, noting the size of every batch call it gets.
#[derive(Clone, Default)]
struct CountingCalls {
    batch_calls: Arc<Mutex<Vec<usize>>>,
}

#[async_trait]
impl TypedHandler<Said> for CountingCalls {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: Said,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        StoreSaid.handle(txn, event, envelope).await
    }

    async fn handle_batch(
        &self,
        txn: &DatabaseTransaction,
        events: Vec<(Said, &Envelope)>,
    ) -> Result<(), HandlerError> {
        self.batch_calls.lock().unwrap().push(events.len());
        for (event, envelope) in events {
            StoreSaid.handle(txn, event, envelope).await?;
        }
        Ok(())
    }
}

impl CountingCalls {
    fn registry(&self) -> HandlerRegistry {
        HandlerRegistry::builder()
            .on::<Said, _>(self.clone())
            .build()
            .unwrap()
    }

    fn calls(&self) -> Vec<usize> {
        self.batch_calls.lock().unwrap().clone()
    }
}

fn owner_runner(w: &World, registry: HandlerRegistry) -> (ConsumerRunner, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let runner = ConsumerRunner::for_route(
        w.t.db.clone(),
        &w.route,
        registry,
        Arc::new(smartflow_testkit::Unplugged),
        ConsumerConfig {
            retry: fast_retry(),
            whole_batches: true,
            ..ConsumerConfig::default()
        },
        metrics.clone(),
    )
    .unwrap();
    (runner, metrics)
}

fn whole_and_one_by_one(metrics: &Metrics) -> (u64, u64) {
    (
        metrics.batches_whole.load(Ordering::Relaxed),
        metrics.batches_one_by_one.load(Ordering::Relaxed),
    )
}

async fn a_batch_is_applied_whole_with_one_handler_call(t: TestDb) {
    let w = World::new(t).await;
    let contents: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let ids = w
        .publish(&contents.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let batch = as_delivered(&w, &ids).await;
    let handler = CountingCalls::default();
    let (runner, metrics) = owner_runner(&w, handler.registry());

    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!((report.applied, report.duplicates), (10, 0));
    assert_eq!(handler.calls(), vec![10], "one call for the run of ten");
    assert_eq!(whole_and_one_by_one(&metrics), (1, 0));
    assert_eq!(chat_history::count(&w.t.db).await.unwrap(), 10);
    assert_eq!(w.stats().await.consumed, 10);

    // Delivered again: every event is a duplicate, and no handler runs.
    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!((report.applied, report.duplicates), (0, 10));
    assert_eq!(handler.calls(), vec![10]);
    assert_eq!(chat_history::count(&w.t.db).await.unwrap(), 10);
    w.finish().await;
}

async fn under_block_a_failing_event_makes_the_batch_go_one_by_one(t: TestDb) {
    a_failing_event_makes_the_batch_go_one_by_one(t, KeyOrder::Block).await;
}

async fn under_skip_a_failing_event_makes_the_batch_go_one_by_one(t: TestDb) {
    a_failing_event_makes_the_batch_go_one_by_one(t, KeyOrder::Skip).await;
}

async fn a_failing_event_makes_the_batch_go_one_by_one(t: TestDb, key_order: KeyOrder) {
    {
        let w = World::ordered(t, key_order).await;
        let ids = w.publish(&["a", "b", "poison", "c", "d"]).await;
        let batch = as_delivered(&w, &ids).await;
        let handler = CountingCalls::default();
        let (runner, metrics) = owner_runner(&w, handler.registry());

        let report = runner.process_batch(&batch).await.unwrap();
        assert_eq!(
            (report.applied, report.dead, report.stopped_at),
            (4, 1, None),
            "{key_order:?}"
        );
        // The whole try (all five) was rolled back; then one by one.
        assert_eq!(handler.calls(), vec![5], "{key_order:?}");
        assert_eq!(whole_and_one_by_one(&metrics), (0, 1), "{key_order:?}");
        assert_eq!(
            chat_history::count(&w.t.db).await.unwrap(),
            4,
            "{key_order:?}: the poison's write rolled back, the others stored once"
        );
        let poison = w.table().find(&w.t.db, &ids[2]).await.unwrap().unwrap();
        assert_eq!(poison.status.as_str(), "dead", "{key_order:?}");
        assert_eq!(
            poison.last_error.as_deref(),
            Some("content is poison"),
            "{key_order:?}"
        );
        for id in [&ids[0], &ids[1], &ids[3], &ids[4]] {
            let row = w.table().find(&w.t.db, id).await.unwrap().unwrap();
            assert_eq!(row.status.as_str(), "consumed", "{key_order:?}");
        }

        // Delivered again, nothing is applied twice.
        let report = runner.process_batch(&batch).await.unwrap();
        assert_eq!(report.applied, 0, "{key_order:?}");
        assert_eq!(chat_history::count(&w.t.db).await.unwrap(), 4);
        w.finish().await;
    }
}

async fn copies_and_events_applied_before_are_skipped_in_a_whole_batch(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["a", "b", "c", "d"]).await;
    let handler = CountingCalls::default();
    let (runner, metrics) = owner_runner(&w, handler.registry());
    let first_two = as_delivered(&w, &ids[..2]).await;
    runner.process_batch(&first_two).await.unwrap();

    // The two applied before, the other two, and a second copy of one of those in the batch.
    let mut batch = as_delivered(&w, &ids).await;
    batch.push(batch[2].clone());
    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!((report.applied, report.duplicates), (2, 3));
    assert_eq!(handler.calls(), vec![2, 2]);
    assert_eq!(whole_and_one_by_one(&metrics), (2, 0));
    assert_eq!(chat_history::count(&w.t.db).await.unwrap(), 4);
    w.finish().await;
}

async fn an_inbox_consumer_applies_a_batch_whole(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["a", "b", "c"]).await;
    let batch = as_delivered(&w, &ids).await;
    let handler = CountingCalls::default();
    let metrics = Arc::new(Metrics::default());
    let runner = ConsumerRunner::for_subscriber(
        w.t.db.clone(),
        "billing",
        handler.registry(),
        Arc::new(smartflow_testkit::Unplugged),
        ConsumerConfig {
            whole_batches: true,
            ..ConsumerConfig::default()
        },
        metrics.clone(),
    )
    .unwrap();

    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!((report.applied, report.duplicates), (3, 0));
    assert_eq!(handler.calls(), vec![3]);
    assert_eq!(whole_and_one_by_one(&metrics), (1, 0));
    for id in &ids {
        let entry = InboxTable::default()
            .find(&w.t.db, "billing", id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.status, InboxStatus::Handled);
    }
    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!((report.applied, report.duplicates), (0, 3));
    assert_eq!(chat_history::count(&w.t.db).await.unwrap(), 3);
    w.finish().await;
}

/// Other connections commit all the time (relays, publishers) while a consumer applies its
/// batches. On SQLite a transaction that reads before it writes cannot write at all once another
/// connection has committed since its read ("database is locked", which no waiting cures): the
/// whole-batch marks read first once, and a consumer beside busy relays stalled batch after
/// batch. Every batch here must apply whole, at its first try.
async fn batches_apply_whole_while_other_connections_commit(t: TestDb) {
    let w = World::new(t).await;
    let bystander = w.publish(&["bystander"]).await.remove(0);
    let touch = format!(
        "UPDATE {} SET updated_at = updated_at + 1 WHERE event_id = '{bystander}'",
        w.route.outbox_table
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop, touch) = (w.t.db.clone(), stop.clone(), touch.clone());
        tokio::spawn(async move {
            let mut commits = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A lock wait may end in an error under the consumer's write; that is not what
                // is tested.
                if db.execute_unprepared(&touch).await.is_ok() {
                    commits += 1;
                }
                tokio::task::yield_now().await;
            }
            commits
        })
    };
    let handler = CountingCalls::default();
    let (runner, metrics) = owner_runner(&w, handler.registry());
    const BATCHES: u64 = 30;
    for n in 0..BATCHES {
        let contents: Vec<String> = (0..5).map(|i| format!("b{n}-{i}")).collect();
        let ids = w
            .publish(&contents.iter().map(String::as_str).collect::<Vec<_>>())
            .await;
        let batch = as_delivered(&w, &ids).await;
        let report = runner
            .process_batch(&batch)
            .await
            .unwrap_or_else(|e| panic!("batch {n} failed while others committed: {e}"));
        assert_eq!(report.applied, 5, "batch {n}");
    }
    stop.store(true, Ordering::Relaxed);
    let commits = writer.await.unwrap();
    assert!(commits > 0, "the other connection never committed");
    assert_eq!(whole_and_one_by_one(&metrics), (BATCHES, 0));
    assert_eq!(chat_history::count(&w.t.db).await.unwrap(), BATCHES * 5);
    w.finish().await;
}

on_every_backend!(
    batches_apply_whole_while_other_connections_commit,
    a_batch_is_applied_whole_with_one_handler_call,
    under_block_a_failing_event_makes_the_batch_go_one_by_one,
    under_skip_a_failing_event_makes_the_batch_go_one_by_one,
    copies_and_events_applied_before_are_skipped_in_a_whole_batch,
    an_inbox_consumer_applies_a_batch_whole,
);
