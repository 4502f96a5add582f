//! A service owns its outbox: it writes only there whatever topic an event is bound for, its
//! consumer marks only its own rows, and what other services put on its topic is deduplicated
//! through its inbox. Rows only other services consume end `published`, never re-sent.

use std::collections::BTreeSet;
use std::time::Duration;

use smartflow_bus::domain::OutboxStatus;
use smartflow_bus::domain::{
    EventContract, InboundTransport, RouteRegistry, ServiceRoute, EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
};
use smartflow_bus::{EventBus, PublishConfig, RelayConfig};
use smartflow_kafka::KafkaConsumer;
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::outbox::OutboxTable;
use smartflow_storage::{chat_history, now_millis};
use smartflow_testkit::{on_every_backend, TestDb};

use crate::delivery::as_delivered;
use crate::fixture::*;

/// A second service whose route (topic) the agent's bus knows, as the agent knows the
/// notification service's.
fn with_other_service(w: &World, topic: &str) -> EventBus {
    let other = ServiceRoute::new("other", "notification_outbox", topic, "other-group").unwrap();
    let routes = RouteRegistry::builder()
        .service(w.route.clone())
        .service(other)
        .event(Said::EVENT_TYPE, "agent")
        .event(Unhandled::EVENT_TYPE, "other")
        .build()
        .unwrap();
    EventBus::new("agent", routes, PublishConfig::default()).unwrap()
}

async fn a_service_writes_only_its_own_outbox_whatever_the_topic(t: TestDb) {
    let w = World::new(t).await;
    let other_topic = w.t.unique("other");
    w.broker.create_topic(&other_topic, 1).unwrap();
    let bus = with_other_service(&w, &other_topic);
    let txn = bus.begin(&w.t.db).await.unwrap();
    let id = bus.publish(&txn, "k", &Unhandled { x: 7 }).await.unwrap();
    bus.commit(txn).await.unwrap();

    let row = w.table().find(&w.t.db, &id.to_string()).await.unwrap();
    let row = row.expect("the row is in the publisher's own outbox");
    assert!(
        row.payload.contains(r#""source":"agent""#),
        "{}",
        row.payload
    );
    let other_outbox = OutboxTable::new("notification_outbox").unwrap();
    assert_eq!(
        other_outbox.stats(&w.t.db).await.unwrap().pending,
        0,
        "nothing is written into the other service's outbox"
    );

    // The publisher's relay takes it to the other service's topic.
    let relay = w.relay();
    w.relay_until_drained(&relay).await;
    let reader =
        KafkaConsumer::new(&w.kafka, &w.t.unique("reader"), &[other_topic.as_str()]).unwrap();
    let mut received = Vec::new();
    for _ in 0..30 {
        if let Ok(batch) = reader
            .recv_batch(10, Duration::from_secs(2), Duration::from_millis(10))
            .await
        {
            received.extend(batch);
        }
        if !received.is_empty() {
            break;
        }
    }
    assert_eq!(
        received.len(),
        1,
        "the event reaches the other service's topic"
    );
    assert_eq!(
        received[0].header(EVENT_ID_HEADER),
        Some(id.to_string().as_str())
    );
    reader.close().await;
    w.finish().await;
}

async fn an_owners_consumer_dedupes_other_services_events_through_its_inbox(t: TestDb) {
    let w = World::new(t).await;
    let own = w.publish(&["mine"]).await;
    let mut batch = as_delivered(&w, &own).await;
    // An event another service published onto the agent's topic from its own outbox: the
    // agent's outbox has no row for it.
    let mut foreign = smartflow_bus::domain::Envelope::for_event(
        "conv-1",
        &Said {
            conversation: "conv-1".into(),
            content: "from billing".into(),
        },
    )
    .unwrap();
    foreign.headers.insert(
        smartflow_bus::domain::SOURCE_HEADER.into(),
        "billing".into(),
    );
    let foreign_id = foreign.event_id.to_string();
    let mut message = batch[0].clone();
    message.offset = 1;
    message.payload = Some(foreign.to_json().into_bytes());
    message.headers = vec![
        (EVENT_ID_HEADER.into(), foreign_id.clone().into_bytes()),
        (
            EVENT_TYPE_HEADER.into(),
            Said::EVENT_TYPE.as_bytes().to_vec(),
        ),
    ];
    batch.push(message);

    let (runner, _) = w.consumer(handlers());
    let first = runner.process_batch(&batch).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (2, 0));
    let mine = w.table().find(&w.t.db, &own[0]).await.unwrap().unwrap();
    assert_eq!(mine.status, OutboxStatus::Consumed, "its own row is marked");
    let entry = InboxTable::default()
        .find(&w.t.db, "agent", &foreign_id)
        .await
        .unwrap()
        .expect("the foreign event is in the agent's inbox");
    assert_eq!(entry.status, InboxStatus::Handled);
    assert!(InboxTable::default()
        .find(&w.t.db, "agent", &own[0])
        .await
        .unwrap()
        .is_none());

    // Delivered again: both are duplicates, nothing is stored twice.
    let again = runner.process_batch(&batch).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 2));
    assert_eq!(chat_history::count(&w.t.db).await.unwrap(), 2);
    w.finish().await;
}

async fn rows_only_other_services_consume_end_published_and_are_never_sent_again(t: TestDb) {
    let w = World::new(t).await;
    let own = w.publish(&["mine"]).await;
    let txn = w.bus.begin(&w.t.db).await.unwrap();
    let theirs = w
        .bus
        .publish(&txn, "k", &Unhandled { x: 1 })
        .await
        .unwrap()
        .to_string();
    w.bus.commit(txn).await.unwrap();

    let relay = w.relay_on(
        w.t.db.clone(),
        RelayConfig {
            republish_after: Some(Duration::from_millis(1)),
            consumed_here: Some(BTreeSet::from([Said::EVENT_TYPE.to_owned()])),
            ..relay_config()
        },
    );
    w.relay_until_drained(&relay).await;
    let mine = w.table().find(&w.t.db, &own[0]).await.unwrap().unwrap();
    let other = w.table().find(&w.t.db, &theirs).await.unwrap().unwrap();
    assert_eq!(mine.status, OutboxStatus::Published);
    assert_eq!(other.status, OutboxStatus::Published);
    assert_eq!(other.next_retry_at, None, "nobody here will mark this one");

    // Past the deadline (a row marked published: `now + max(republish_after, age)` at the
    // settle; a row its shard's cursor sent: a checkpoint `republish_after` old).
    let after = Duration::from_millis(1);
    let mut moved = 0;
    for _ in 0..200 {
        tokio::time::sleep(after + Duration::from_millis(5)).await;
        moved = w
            .table()
            .requeue_unconsumed(&w.t.db, now_millis(), after)
            .await
            .unwrap();
        if moved > 0 {
            break;
        }
    }
    assert_eq!(moved, 1, "only the row consumed here is sent again");
    let mine = w.table().find(&w.t.db, &own[0]).await.unwrap().unwrap();
    assert_eq!(
        mine.status,
        OutboxStatus::Pending,
        "waiting to go out again"
    );
    let other = w.table().find(&w.t.db, &theirs).await.unwrap().unwrap();
    assert_eq!(other.status, OutboxStatus::Published);
    w.finish().await;
}

on_every_backend!(
    a_service_writes_only_its_own_outbox_whatever_the_topic,
    an_owners_consumer_dedupes_other_services_events_through_its_inbox,
    rows_only_other_services_consume_end_published_and_are_never_sent_again,
);
