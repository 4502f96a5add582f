//! The failure policy: the infrastructure's faults (a broker that is down or refuses us, a
//! consumer that lags or is absent) never spend an event's retries or make it dead; only the
//! event's own faults do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use smartflow_bus::domain::{OutboundMessage, OutboundTransport, OutboxStatus, TransportError};
use smartflow_bus::{Relay, RelayConfig};
use smartflow_kafka::ProduceFault;
use smartflow_storage::chat_history;
use smartflow_storage::outbox::FailureOutcome;
use smartflow_testkit::{on_every_backend, TestDb};
use tokio_util::sync::CancellationToken;

use crate::delivery::as_delivered;
use crate::fixture::*;

async fn a_broker_outage_longer_than_the_retry_horizon_kills_nothing(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["a", "b", "c", "d", "e"]).await;
    let relay = w.relay();
    w.broker.set_broker_down(1).unwrap();
    // Far more failed rounds than the retry policy allows attempts.
    for _ in 0..fast_retry().max_retry + 2 {
        let round = relay.run_once().await.unwrap();
        assert_eq!(
            (round.claimed, round.published, round.unavailable),
            (5, 0, 5)
        );
        assert!(round.broker_error.is_some(), "the broker's reason is kept");
    }
    for id in &ids {
        let row = w.table().find(&w.t.db, id).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Pending);
        assert_eq!(row.retry_count, 0, "an outage spends no retry");
        assert_eq!(
            row.next_retry_at, None,
            "the row keeps its place in the fresh lane"
        );
    }
    // The running relay pauses, says so in health, and resumes by itself.
    let health = &w.bus.metrics().health;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.clone().run(shutdown.clone()));
    wait_until("the relay reports its pause", || async {
        !health.healthy()
    })
    .await;
    let problem = health.report().into_iter().find_map(|c| c.problem).unwrap();
    assert!(
        problem.starts_with("paused: the broker is unavailable"),
        "{problem}"
    );
    assert!(relay.is_paused());
    w.broker.set_broker_up(1).unwrap();
    wait_until("the relay resumes and drains", || async {
        w.stats().await.published == 5 && health.healthy()
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(w.stats().await.dead, 0);
    w.finish().await;
}

async fn an_authorization_failure_pauses_instead_of_killing(t: TestDb) {
    let w = World::new(t).await;
    let relay = w.relay();
    w.broker
        .inject_produce_errors(50, ProduceFault::TopicAuthorizationFailed)
        .unwrap();
    let id = w.publish(&["denied for now"]).await.remove(0);
    for _ in 0..fast_retry().max_retry + 1 {
        let round = relay.run_once().await.unwrap();
        assert_eq!(round.unavailable, 1, "{round:?}");
    }
    let row = w.table().find(&w.t.db, &id).await.unwrap().unwrap();
    assert_eq!(
        row.status,
        OutboxStatus::Pending,
        "an ACL mistake kills nothing"
    );
    assert_eq!(row.retry_count, 0);
    w.finish().await;
}

/// Acknowledges the first message of every batch and reports the rest as unanswered, as when
/// the relay's wait ends while the broker has acknowledged only part of a batch.
struct HalfAnswered {
    sent: Mutex<Vec<String>>,
}

#[async_trait]
impl OutboundTransport for HalfAnswered {
    async fn send_batch(
        &self,
        messages: Vec<OutboundMessage>,
        _within: Duration,
    ) -> Vec<Result<(), TransportError>> {
        let mut sent = self.sent.lock().unwrap();
        messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                if i == 0 {
                    sent.push(m.key);
                    Ok(())
                } else {
                    Err(TransportError::unavailable("no answer within the window"))
                }
            })
            .collect()
    }

    fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(100)
    }
}

async fn acknowledged_rows_are_published_when_the_wait_runs_out(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["first", "second", "third"]).await;
    let relay = Relay::new(
        w.t.db.clone(),
        &w.route.outbox_table,
        Arc::new(HalfAnswered {
            sent: Mutex::default(),
        }),
        relay_config(),
        w.bus.wake_signal(),
        w.bus.metrics().clone(),
    )
    .unwrap();
    let round = relay.run_once().await.unwrap();
    assert_eq!((round.published, round.unavailable), (1, 2));
    let first = w.table().find(&w.t.db, &ids[0]).await.unwrap().unwrap();
    assert_eq!(first.status, OutboxStatus::Published, "its ack was in");
    for id in &ids[1..] {
        let row = w.table().find(&w.t.db, id).await.unwrap().unwrap();
        assert_eq!((row.status, row.retry_count), (OutboxStatus::Pending, 0));
    }
    w.finish().await;
}

async fn a_lagging_consumer_loses_nothing(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["late but applied"]).await;
    let relay = w.relay_on(
        w.t.db.clone(),
        RelayConfig {
            republish_after: Some(Duration::from_millis(50)),
            ..relay_config()
        },
    );
    // No consumer runs: the row is sent again and again, more often than it has retries.
    let mut deadlines = Vec::new();
    for _ in 0..fast_retry().max_retry + 2 {
        w.relay_until_drained(&relay).await;
        let row = w.table().find(&w.t.db, &ids[0]).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Published);
        assert_eq!(row.retry_count, 0, "waiting for a consumer spends no retry");
        // A row marked published has its deadline; a row its shard's cursor sent (the first
        // send, on PostgreSQL and SQLite) is due once a checkpoint is `republish_after` old.
        if let (Some(next), Some(at)) = (row.next_retry_at, row.published_at) {
            deadlines.push(next - at);
        }
        let mut moved = 0;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(55)).await;
            moved = relay.republish_overdue().await.unwrap();
            if moved > 0 {
                break;
            }
        }
        assert_eq!(moved, 1, "sent again, once");
    }
    assert!(
        deadlines.len() >= 3
            && deadlines.windows(2).all(|d| d[1] >= d[0])
            && deadlines.last() > deadlines.first(),
        "the interval between re-sends grows with the row's age: {deadlines:?}"
    );
    // The consumer finally catches up: the event is applied, not taken for a duplicate.
    let batch = as_delivered(&w, &ids).await;
    let (runner, _) = w.consumer(handlers());
    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!((report.applied, report.duplicates), (1, 0));
    let row = w.table().find(&w.t.db, &ids[0]).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Consumed);
    // Every later copy is a duplicate.
    let again = runner.process_batch(&batch).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 1));
    w.finish().await;
}

async fn a_dead_events_copy_that_reaches_the_consumer_is_applied(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["gave up on, still arrives"]).await;
    w.relay_until_drained(&w.relay()).await;
    let batch = as_delivered(&w, &ids).await;
    // The bus gives up on the row (here: a permanent failure recorded by another consumer).
    let outcome = w
        .table()
        .record_failure(&w.t.db, &ids[0], "given up", false, &fast_retry())
        .await
        .unwrap();
    assert_eq!(outcome, FailureOutcome::Dead);
    let (runner, _) = w.consumer(handlers());
    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!(
        report.applied, 1,
        "an event that reached its consumer is never skipped"
    );
    let row = w.table().find(&w.t.db, &ids[0]).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Consumed);
    let stored = chat_history::list(&w.t.db, "conv-1", 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    w.finish().await;
}

async fn dead_rows_can_be_redriven(t: TestDb) {
    let w = World::new(t).await;
    let relay = w.relay();
    w.broker
        .inject_produce_errors(1, ProduceFault::MessageTooLarge)
        .unwrap();
    let id = w.publish(&["rejected once"]).await.remove(0);
    w.relay_until_drained(&relay).await;
    let row = w.table().find(&w.t.db, &id).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Dead);
    assert_eq!(relay.redrive(&[row.id]).await.unwrap(), 1);
    assert_eq!(
        relay.redrive(&[row.id]).await.unwrap(),
        0,
        "only dead rows move"
    );
    w.relay_until_drained(&relay).await;
    let row = w.table().find(&w.t.db, &id).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Published);
    w.finish().await;
}

async fn a_producer_timeout_that_does_not_fit_the_claim_is_refused(t: TestDb) {
    let w = World::new(t).await;
    let mut kafka = w.kafka.clone();
    kafka.message_timeout = Duration::from_secs(30);
    let producer = smartflow_kafka::KafkaProducer::new(&kafka).unwrap();
    let err = Relay::new(
        w.t.db.clone(),
        &w.route.outbox_table,
        Arc::new(producer),
        RelayConfig {
            claim_timeout: Duration::from_secs(20),
            ..relay_config()
        },
        w.bus.wake_signal(),
        w.bus.metrics().clone(),
    )
    .err()
    .expect("a 30 s message timeout does not fit a 20 s claim");
    let text = err.to_string();
    assert!(
        text.contains("message timeout (30000 ms)") && text.contains("claim timeout"),
        "{text}"
    );
    w.finish().await;
}

on_every_backend!(
    a_broker_outage_longer_than_the_retry_horizon_kills_nothing,
    an_authorization_failure_pauses_instead_of_killing,
    acknowledged_rows_are_published_when_the_wait_runs_out,
    a_lagging_consumer_loses_nothing,
    a_dead_events_copy_that_reaches_the_consumer_is_applied,
    dead_rows_can_be_redriven,
    a_producer_timeout_that_does_not_fit_the_claim_is_refused,
);
