//! Several relays at once, and a relay that dies mid-batch.

use std::time::Duration;

use smartflow_bus::RelayConfig;
use smartflow_testkit::{on_every_backend, TestDb};
use tokio_util::sync::CancellationToken;

use crate::fixture::*;

async fn two_relays_publish_every_row_exactly_once(t: TestDb) {
    let w = World::new(t).await;
    let contents: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = contents.iter().map(String::as_str).collect();
    let ids = w.publish(&refs).await;
    let small = RelayConfig {
        batch_size: 20,
        workers: 2,
        ..relay_config()
    };
    let a = w.relay_on(
        w.t.db.clone(),
        RelayConfig {
            owner: "a".into(),
            ..small.clone()
        },
    );
    let b = w.relay_on(
        w.t.connect_again().await,
        RelayConfig {
            owner: "b".into(),
            ..small
        },
    );
    let shutdown = CancellationToken::new();
    let ta = tokio::spawn(a.run(shutdown.clone()));
    let tb = tokio::spawn(b.run(shutdown.clone()));
    wait_until("every row published", || async {
        w.stats().await.published == 300
    })
    .await;
    shutdown.cancel();
    ta.await.unwrap();
    tb.await.unwrap();
    let counts = count_by_event_id(&w.read_topic(300).await);
    assert_eq!(counts.len(), 300);
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "{id} published exactly once");
    }
    w.finish().await;
}

async fn a_relay_killed_mid_batch_loses_nothing(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["a", "b", "c"]).await;
    // The doomed relay claims while the broker is down, so it hangs in the middle of its batch.
    w.broker.set_broker_down(1).unwrap();
    let doomed_db = w.t.connect_again().await;
    let mut kafka = w.kafka.clone();
    // As long as the relay's settings allow: the round outlives the half second it gets.
    kafka.message_timeout = Duration::from_secs(2);
    let producer = smartflow_kafka::KafkaProducer::new(&kafka).unwrap();
    let doomed = smartflow_bus::Relay::new(
        doomed_db.clone(),
        &w.route.outbox_table,
        std::sync::Arc::new(producer),
        RelayConfig {
            owner: "doomed".into(),
            claim_timeout: Duration::from_secs(3),
            ..relay_config()
        },
        w.bus.wake_signal(),
        w.bus.metrics().clone(),
    )
    .unwrap();
    let task = tokio::spawn(async move { doomed.run_once().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Killed: the task is gone and its connections close, as when a process dies.
    task.abort();
    let _ = task.await;
    doomed_db.close().await.unwrap();
    w.broker.set_broker_up(1).unwrap();
    let survivor = w.relay();
    w.relay_until_drained(&survivor).await;
    assert_eq!(w.stats().await.published, 3);
    let counts = count_by_event_id(&w.read_topic(3).await);
    for id in &ids {
        assert!(counts.contains_key(id), "{id} reached the broker");
    }
    w.finish().await;
}

on_every_backend!(
    two_relays_publish_every_row_exactly_once,
    a_relay_killed_mid_batch_loses_nothing,
);
