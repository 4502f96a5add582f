//! The normal path: commit -> relay -> broker -> consumer -> `consumed`, exactly once.

use std::sync::Arc;
use std::time::Duration;

use smartflow_bus::domain::{
    DomainError, Envelope, IncomingMessage, OutboxStatus, EVENT_ID_HEADER, EVENT_TYPE_HEADER,
    TRACEPARENT_HEADER,
};
use smartflow_bus::{BusError, ConsumerConfig, ConsumerRunner, Metrics};
use smartflow_storage::chat_history;
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_testkit::{on_every_backend, TestDb};
use tokio_util::sync::CancellationToken;

use crate::fixture::*;

async fn committed_events_arrive_once_and_rolled_back_never(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["one", "two", "three"]).await;
    // A transaction that rolls back publishes nothing.
    let txn = w.bus.begin(&w.t.db).await.unwrap();
    let ghost = w
        .bus
        .publish(
            &txn,
            "conv-1",
            &Said {
                conversation: "conv-1".into(),
                content: "ghost".into(),
            },
        )
        .await
        .unwrap();
    txn.rollback().await.unwrap();

    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(w.relay().run(shutdown.clone()));
    let (runner, _) = w.consumer(handlers());
    let consumer = tokio::spawn(runner.run(shutdown.clone()));
    wait_until("three rows consumed", || async {
        w.stats().await.consumed == 3
    })
    .await;

    let stored = chat_history::list(&w.t.db, "conv-1", 100).await.unwrap();
    let contents: Vec<&str> = stored.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        contents,
        ["one", "two", "three"],
        "stored once each, in order"
    );
    for id in &ids {
        let row = w.table().find(&w.t.db, id).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Consumed);
        // (`published_at` is written only where a row is marked published one by one: a row
        // its shard's cursor sent has none.)
        assert!(row.consumed_at.is_some());
    }
    assert!(w
        .table()
        .find(&w.t.db, &ghost.to_string())
        .await
        .unwrap()
        .is_none());
    assert!(stored.iter().all(|m| m.event_id != ghost.to_string()));

    // The wire form: key, headers and an envelope value.
    let messages = w.read_topic(3).await;
    assert_eq!(
        messages.len(),
        3,
        "each committed event is on the topic once"
    );
    for m in &messages {
        assert_eq!(m.key.as_deref(), Some(&b"conv-1"[..]));
        let env = Envelope::from_slice(m.payload.as_deref().unwrap()).unwrap();
        assert_eq!(
            m.header(EVENT_ID_HEADER),
            Some(env.event_id.to_string().as_str())
        );
        assert_eq!(m.header(EVENT_TYPE_HEADER), Some("test.said"));
        let tp = m.header(TRACEPARENT_HEADER).expect("trace context travels");
        assert_eq!(Some(tp), env.traceparent());
        assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), async {
        relay.await.unwrap();
        consumer.await.unwrap();
    })
    .await
    .expect("relay and consumer stop on shutdown");
    w.finish().await;
}

async fn publishing_an_unrouted_or_oversized_event_is_an_error(t: TestDb) {
    let w = World::new(t).await;
    let txn = w.bus.begin(&w.t.db).await.unwrap();
    let mut env = Envelope::for_event(
        "k",
        &Said {
            conversation: "c".into(),
            content: "x".into(),
        },
    )
    .unwrap();
    env.event_type = "nobody.routes.this".into();
    let err = w.bus.publish_envelope(&txn, env).await.unwrap_err();
    assert!(
        matches!(err, BusError::Domain(DomainError::UnknownEventType(ref t)) if t == "nobody.routes.this"),
        "{err}"
    );
    let big = "x".repeat(5000);
    let err = w
        .bus
        .publish(
            &txn,
            "k",
            &Said {
                conversation: "c".into(),
                content: big,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BusError::Domain(DomainError::PayloadTooLarge { limit: 4096, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("over the limit"), "{err}");
    w.bus.commit(txn).await.unwrap();
    assert_eq!(w.stats().await.pending, 0, "refused events write nothing");
    w.finish().await;
}

/// The messages the relay would send for the given rows, as the consumer receives them.
pub async fn as_delivered(w: &World, ids: &[String]) -> Vec<IncomingMessage> {
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let row = w.table().find(&w.t.db, id).await.unwrap().unwrap();
        out.push(IncomingMessage {
            topic: w.route.topic.clone(),
            partition: 0,
            offset: i as i64,
            key: Some(row.message_key.into_bytes()),
            payload: Some(row.payload.into_bytes()),
            headers: vec![
                (EVENT_ID_HEADER.into(), id.clone().into_bytes()),
                (EVENT_TYPE_HEADER.into(), row.event_type.into_bytes()),
            ],
        });
    }
    out
}

async fn redelivery_changes_nothing(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["a", "b"]).await;
    let relay = w.relay();
    w.relay_until_drained(&relay).await;
    let batch = as_delivered(&w, &ids).await;
    let (runner, _) = w.consumer(handlers());
    let first = runner.process_batch(&batch).await.unwrap();
    assert_eq!(first.applied, 2);
    // The same envelopes again, as after a crash before the offset commit.
    let second = runner.process_batch(&batch).await.unwrap();
    assert_eq!(second.applied, 0);
    assert_eq!(second.duplicates, 2);
    assert_eq!(
        chat_history::count(&w.t.db).await.unwrap(),
        2,
        "no effect twice"
    );
    assert_eq!(w.stats().await.consumed, 2);
    w.finish().await;
}

async fn another_services_consumer_dedupes_through_its_inbox(t: TestDb) {
    let w = World::new(t).await;
    let ids = w.publish(&["x", "poison"]).await;
    let batch = as_delivered(&w, &ids).await;
    let transport = Arc::new(
        smartflow_kafka::KafkaConsumer::new(&w.kafka, &w.t.unique("other"), &[&w.route.topic])
            .unwrap(),
    );
    let runner = ConsumerRunner::for_subscriber(
        w.t.db.clone(),
        "userauth",
        handlers(),
        transport,
        ConsumerConfig::default(),
        Arc::new(Metrics::default()),
    )
    .unwrap();
    let first = runner.process_batch(&batch).await.unwrap();
    assert_eq!((first.applied, first.dead), (1, 1));
    let again = runner.process_batch(&batch).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 2));
    assert_eq!(
        chat_history::count(&w.t.db).await.unwrap(),
        1,
        "effect applied once"
    );
    let handled = InboxTable::default()
        .find(&w.t.db, "userauth", &ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handled.status, InboxStatus::Handled);
    let dead = InboxTable::default()
        .find(&w.t.db, "userauth", &ids[1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.status, InboxStatus::Dead);
    assert_eq!(dead.last_error.as_deref(), Some("content is poison"));
    // The producer's outbox is not this consumer's to mark.
    assert_eq!(w.stats().await.consumed, 0);
    w.finish().await;
}

on_every_backend!(
    committed_events_arrive_once_and_rolled_back_never,
    publishing_an_unrouted_or_oversized_event_is_an_error,
    redelivery_changes_nothing,
    another_services_consumer_dedupes_through_its_inbox,
);
