//! Failures: handler errors, poison messages, a broker that is down or refuses produce requests.

use std::time::Duration;

use smartflow_bus::domain::{Envelope, KeyOrder, OutboxStatus};
use smartflow_bus::HandlerRegistry;
use smartflow_kafka::ProduceFault;
use smartflow_storage::chat_history;
use smartflow_testkit::metrics::Scrape;
use smartflow_testkit::{on_every_backend, TestDb};

use crate::delivery::as_delivered;
use crate::fixture::*;

/// The bus's metrics of `w` as a scrape reads them.
fn scrape(w: &World) -> Scrape {
    Scrape::parse(&w.bus.metrics().prometheus_text())
}

/// `smartflow_dead_total` of `stage` and `reason`.
fn dead_total(scrape: &Scrape, stage: &str, reason: &str) -> f64 {
    scrape.value(
        "smartflow_dead_total",
        &[("stage", stage), ("reason", reason)],
    )
}

/// `smartflow_handler_errors_total` of `kind`.
fn handler_errors(scrape: &Scrape, kind: &str) -> f64 {
    scrape.value("smartflow_handler_errors_total", &[("kind", kind)])
}

/// `KeyOrder::Skip`: a retryable handler error sends the row back to be published again.
async fn handler_errors_retry_then_die_and_poison_dies_at_once(t: TestDb) {
    let w = World::ordered(t, KeyOrder::Skip).await;
    let ids = w.publish(&["retry", "poison", "fine"]).await;
    let relay = w.relay();
    let (runner, _) = w.consumer(handlers());
    // Deliver, fail, get republished by the relay, fail again... until the row runs out of retries.
    for attempt in 1..=3 {
        w.relay_until_drained(&relay).await;
        let batch = as_delivered(&w, &ids).await;
        runner.process_batch(&batch).await.unwrap();
        let row = w.table().find(&w.t.db, &ids[0]).await.unwrap().unwrap();
        assert_eq!(row.retry_count, attempt);
        assert_eq!(row.last_error.as_deref(), Some("downstream busy"));
        if attempt < 3 {
            assert_eq!(
                row.status,
                OutboxStatus::Pending,
                "a retryable error goes back to pending"
            );
            let due = row.next_retry_at.unwrap();
            tokio::time::sleep(Duration::from_millis(
                (due - smartflow_storage::now_millis()).max(0) as u64 + 20,
            ))
            .await;
        } else {
            assert_eq!(row.status, OutboxStatus::Dead, "out of retries");
        }
    }
    let poison = w.table().find(&w.t.db, &ids[1]).await.unwrap().unwrap();
    assert_eq!(poison.status, OutboxStatus::Dead);
    assert_eq!(poison.last_error.as_deref(), Some("content is poison"));
    assert_eq!(poison.retry_count, 1);
    let fine = w.table().find(&w.t.db, &ids[2]).await.unwrap().unwrap();
    assert_eq!(fine.status, OutboxStatus::Consumed);
    let stored = chat_history::list(&w.t.db, "conv-1", 10).await.unwrap();
    assert_eq!(stored.len(), 1, "failed handlers leave no writes behind");
    assert_eq!(stored[0].content, "fine");
    let metrics = scrape(&w);
    assert_eq!(dead_total(&metrics, "consume", "retries_exhausted"), 1.0);
    assert_eq!(dead_total(&metrics, "consume", "permanent"), 1.0);
    assert_eq!(handler_errors(&metrics, "retryable"), 3.0);
    // The poison's copy came in each of the three deliveries and failed each time; it died once.
    assert_eq!(handler_errors(&metrics, "permanent"), 3.0);
    w.finish().await;
}

/// `KeyOrder::Block` (the default): a retryable handler error is tried again in place, the
/// batch stopping at it so nothing after it is applied first, until the retries run out; then
/// the row is `dead` with the reason and the events after it are applied.
async fn under_block_a_handler_error_is_tried_in_place_then_dies(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["retry", "fine"]).await;
    let relay = w.relay();
    w.relay_until_drained(&relay).await;
    let (runner, _) = w.consumer(handlers());
    let batch = as_delivered(&w, &ids).await;
    for attempt in 1..fast_retry().max_retry {
        let report = runner.process_batch(&batch).await.unwrap();
        assert_eq!(report.stopped_at, Some(0), "attempt {attempt}");
        assert_eq!(
            report.applied, 0,
            "nothing after the failing event is applied"
        );
        let row = w.table().find(&w.t.db, &ids[0]).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Published, "not sent back");
        assert_eq!(row.retry_count, 0);
    }
    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!(
        (report.stopped_at, report.dead, report.applied),
        (None, 1, 1)
    );
    let dead = w.table().find(&w.t.db, &ids[0]).await.unwrap().unwrap();
    assert_eq!(dead.status, OutboxStatus::Dead);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("gave up after 3 attempts: downstream busy")
    );
    let fine = w.table().find(&w.t.db, &ids[1]).await.unwrap().unwrap();
    assert_eq!(fine.status, OutboxStatus::Consumed);
    let metrics = scrape(&w);
    assert_eq!(dead_total(&metrics, "consume", "retries_exhausted"), 1.0);
    assert_eq!(
        handler_errors(&metrics, "retryable"),
        f64::from(fast_retry().max_retry)
    );
    w.finish().await;
}

async fn unknown_event_types_and_undecodable_messages_are_dead_with_a_reason(t: TestDb) {
    let w = World::new(t).await;
    let txn = w.bus.begin(&w.t.db).await.unwrap();
    let unhandled = w
        .bus
        .publish(&txn, "k", &Unhandled { x: 1 })
        .await
        .unwrap()
        .to_string();
    w.bus.commit(txn).await.unwrap();
    let garbled = w.publish(&["will be garbled"]).await.remove(0);
    let mut batch = as_delivered(&w, &[unhandled.clone(), garbled.clone()]).await;
    batch[1].payload = Some(b"{\"not\": \"an envelope\"".to_vec());
    // And a message from outside smartflow, with no event id at all.
    let mut stranger = batch[1].clone();
    stranger.headers.clear();
    batch.push(stranger);

    let (runner, _) = w.consumer(
        HandlerRegistry::builder()
            .on::<Said, _>(StoreSaid)
            .build()
            .unwrap(),
    );
    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!((report.dead, report.rejected, report.applied), (2, 1, 0));
    let row = w.table().find(&w.t.db, &unhandled).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Dead);
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("no handler is registered for event type `test.unhandled`"),
        "{:?}",
        row.last_error
    );
    let row = w.table().find(&w.t.db, &garbled).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Dead);
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .starts_with("undecodable message"),
        "{:?}",
        row.last_error
    );
    let metrics = scrape(&w);
    assert_eq!(dead_total(&metrics, "consume", "unknown_type"), 1.0);
    assert_eq!(dead_total(&metrics, "consume", "undecodable"), 1.0);
    assert_eq!(handler_errors(&metrics, "unknown_type"), 1.0);
    // The stranger's too, though it has no row to be dead in.
    assert_eq!(handler_errors(&metrics, "undecodable"), 2.0);

    // A payload that is an envelope but not a valid `Said` is dead too.
    let ok = w.publish(&["shape"]).await.remove(0);
    let mut batch = as_delivered(&w, std::slice::from_ref(&ok)).await;
    let mut env = Envelope::from_slice(batch[0].payload.as_deref().unwrap()).unwrap();
    env.payload = serde_json::json!({"conversation": 7});
    batch[0].payload = Some(env.to_json().into_bytes());
    runner.process_batch(&batch).await.unwrap();
    let row = w.table().find(&w.t.db, &ok).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Dead);
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .starts_with("undecodable payload"),
        "{:?}",
        row.last_error
    );
    assert_eq!(dead_total(&scrape(&w), "consume", "permanent"), 1.0);
    w.finish().await;
}

async fn rejected_produce_requests_retry_or_die_by_error(t: TestDb) {
    let w = World::new(t).await;
    let relay = w.relay();
    // Leadership errors pass after the producer's own retries: everything is published.
    w.broker
        .inject_produce_errors(3, ProduceFault::NotLeader)
        .unwrap();
    w.publish(&["a", "b"]).await;
    w.relay_until_drained(&relay).await;
    assert_eq!(w.stats().await.published, 2);
    // A message the broker will never take is dead with the broker's reason.
    w.broker.clear_produce_errors().unwrap();
    w.broker
        .inject_produce_errors(1, ProduceFault::MessageTooLarge)
        .unwrap();
    let id = w.publish(&["too big for the broker"]).await.remove(0);
    w.relay_until_drained(&relay).await;
    let row = w.table().find(&w.t.db, &id).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Dead);
    assert!(row.last_error.is_some());
    let metrics = scrape(&w);
    assert_eq!(dead_total(&metrics, "publish", "rejected"), 1.0);
    assert_eq!(
        metrics.value("smartflow_publish_errors_total", &[("kind", "rejected")]),
        1.0
    );
    // Every round that claimed rows was timed, and its rows counted: three rows in all.
    let rounds = metrics.observations("smartflow_relay_round_duration_seconds", &[]);
    assert!(rounds >= 1.0, "{rounds}");
    assert_eq!(
        metrics.observations("smartflow_relay_batch_rows", &[]),
        rounds
    );
    assert_eq!(
        metrics.value("smartflow_relay_batch_rows_sum", &[]),
        3.0,
        "rows claimed over all rounds"
    );
    w.finish().await;
}

on_every_backend!(
    handler_errors_retry_then_die_and_poison_dies_at_once,
    under_block_a_handler_error_is_tried_in_place_then_dies,
    unknown_event_types_and_undecodable_messages_are_dead_with_a_reason,
    rejected_produce_requests_retry_or_die_by_error,
);
