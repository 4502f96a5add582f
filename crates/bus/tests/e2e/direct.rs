//! `Delivery::Direct`: `EventBus::send_direct` sends an event to the broker at once, with no
//! outbox row and outside any transaction; it returns after the broker's acknowledgement or
//! with the error, and an event the broker did not take is lost. `EventBus::publish` refuses a
//! direct event, and `send_direct` an event of a route that keeps a row.

use std::collections::BTreeSet;
use std::time::Duration;

use smartflow_bus::domain::{
    Delivery, Envelope, EventContract, RouteRegistry, ServiceRoute, TransportFault,
    EVENT_ID_HEADER, EVENT_TYPE_HEADER, EVENT_VERSION_HEADER, SOURCE_HEADER, TRACEPARENT_HEADER,
};
use smartflow_bus::{BusError, EventBus, PublishConfig};
use smartflow_kafka::ProduceFault;
use smartflow_storage::chat_history;
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_testkit::metrics::Scrape;
use smartflow_testkit::{on_every_backend, TestDb};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fixture::*;

fn said(content: &str) -> Said {
    Said {
        conversation: "conv-1".into(),
        content: content.into(),
    }
}

fn scrape(w: &World) -> Scrape {
    Scrape::parse(&w.bus.metrics().prometheus_text())
}

fn direct_errors(scrape: &Scrape, kind: &str) -> f64 {
    scrape.value("smartflow_direct_send_errors_total", &[("kind", kind)])
}

/// The outbox holds nothing: a direct event writes no row.
async fn assert_no_rows(w: &World) {
    let stats = w.stats().await;
    assert_eq!(
        (
            stats.pending,
            stats.published,
            stats.consumed,
            stats.dead,
            stats.stored
        ),
        (0, 0, 0, 0, 0),
        "{stats:?}"
    );
}

async fn a_direct_event_reaches_its_consumer_once_and_leaves_no_row(t: TestDb) {
    let w = World::direct(t).await;
    let shutdown = CancellationToken::new();
    let (runner, _) = w.consumer(handlers());
    let consumer = tokio::spawn(runner.run(shutdown.clone()));

    let one = Envelope::for_event("conv-1", &said("one")).unwrap();
    let one_id = w.bus.send_direct_envelope(one.clone()).await.unwrap();
    assert_eq!(one_id, one.event_id);
    // The same event sent again (a caller's retry): its consumer applies it once.
    w.bus.send_direct_envelope(one).await.unwrap();
    // Sent while a transaction is open, which then rolls back: a direct event is not the
    // transaction's, and goes out all the same.
    let txn = w.bus.begin(&w.t.db).await.unwrap();
    let two_id = w.bus.send_direct("conv-1", &said("two")).await.unwrap();
    txn.rollback().await.unwrap();

    wait_until("both direct events applied", || async {
        chat_history::count(&w.t.db).await.unwrap() == 2
    })
    .await;
    // One key, one partition: the copy of `one` was handled before `two`.
    let stored = chat_history::list(&w.t.db, "conv-1", 100).await.unwrap();
    let contents: Vec<&str> = stored.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["one", "two"], "each applied once, in order");
    assert_eq!(
        w.bus
            .metrics()
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Deduplicated through the inbox under the service's name, since no row can be marked.
    for id in [one_id, two_id] {
        let entry = InboxTable::default()
            .find(&w.t.db, "agent", &id.to_string())
            .await
            .unwrap()
            .expect("an inbox entry per direct event");
        assert_eq!(entry.status, InboxStatus::Handled);
    }
    assert_no_rows(&w).await;

    // The wire form is a relayed event's: key, headers and an envelope naming its source.
    let messages = w.read_topic(3).await;
    assert_eq!(messages.len(), 3, "sent three times, no more");
    for m in &messages {
        assert_eq!(m.key.as_deref(), Some(&b"conv-1"[..]));
        let env = Envelope::from_slice(m.payload.as_deref().unwrap()).unwrap();
        let names: BTreeSet<&str> = m.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from([
                EVENT_ID_HEADER,
                EVENT_TYPE_HEADER,
                EVENT_VERSION_HEADER,
                TRACEPARENT_HEADER
            ])
        );
        assert_eq!(
            m.header(EVENT_ID_HEADER),
            Some(env.event_id.to_string().as_str())
        );
        assert_eq!(m.header(EVENT_TYPE_HEADER), Some("test.said"));
        assert_eq!(m.header(EVENT_VERSION_HEADER), Some("1"));
        assert_eq!(m.header(TRACEPARENT_HEADER), env.traceparent());
        assert_eq!(
            env.headers.get(SOURCE_HEADER).map(String::as_str),
            Some("agent")
        );
    }
    let metrics = scrape(&w);
    assert_eq!(
        metrics.value("smartflow_direct_sent_total", &[("service", "agent")]),
        3.0
    );
    assert_eq!(direct_errors(&metrics, "unavailable"), 0.0);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .expect("the consumer stops on shutdown")
        .unwrap();
    w.finish().await;
}

/// Sends a direct event until the broker acknowledges one (while the producer connects, a send
/// may time out); its event id.
async fn send_once_the_broker_answers(w: &World, content: &str) -> String {
    for _ in 0..60 {
        if let Ok(id) = w.bus.send_direct("k", &said(content)).await {
            return id.to_string();
        }
    }
    panic!("no direct event was acknowledged in 60 tries");
}

async fn a_direct_event_the_broker_does_not_take_is_an_error_and_lost(t: TestDb) {
    let w = World::direct(t).await;
    let mut lost: Vec<Uuid> = Vec::new();
    // A fresh producer first connects and fetches the topic's metadata: on a loaded machine
    // that can outlast the test's 1 s message timeout, and the injected rejection below must
    // meet a produce request that reaches the broker.
    let warm = send_once_the_broker_answers(&w, "warm").await;

    // Rejected: the message's own fault.
    w.broker
        .inject_produce_errors(1, ProduceFault::MessageTooLarge)
        .unwrap();
    let envelope = Envelope::for_event("k", &said("too large")).unwrap();
    lost.push(envelope.event_id);
    let err = w.bus.send_direct_envelope(envelope).await.unwrap_err();
    assert!(
        matches!(&err, BusError::DirectNotSent { error, .. } if error.fault == TransportFault::Rejected),
        "{err}"
    );
    assert!(err.to_string().contains("the broker rejected it"), "{err}");
    w.broker.clear_produce_errors().unwrap();

    // Unavailable: the broker is down. The producer gives up after its message timeout.
    w.broker.set_broker_down(1).unwrap();
    let envelope = Envelope::for_event("k", &said("down")).unwrap();
    lost.push(envelope.event_id);
    let err = w.bus.send_direct_envelope(envelope).await.unwrap_err();
    assert!(
        matches!(&err, BusError::DirectNotSent { error, .. } if error.is_unavailable()),
        "{err}"
    );
    assert!(
        err.to_string().contains("the broker is unavailable"),
        "{err}"
    );
    let metrics = scrape(&w);
    assert_eq!(direct_errors(&metrics, "rejected"), 1.0);
    assert_eq!(direct_errors(&metrics, "unavailable"), 1.0);
    assert_no_rows(&w).await;

    // Back up: later events go out (once the producer has reconnected), the lost ones never,
    // and no relay has anything to send.
    w.broker.set_broker_up(1).unwrap();
    let sent = send_once_the_broker_answers(&w, "after").await;
    let round = w.relay().run_once().await.unwrap();
    assert_eq!(round.claimed, 0);
    let messages = w.read_topic(2).await;
    let ids = count_by_event_id(&messages);
    assert_eq!(ids.get(&warm), Some(&1), "{ids:?}");
    assert_eq!(ids.get(&sent), Some(&1), "{ids:?}");
    for id in &lost {
        assert!(!ids.contains_key(&id.to_string()), "{id} was sent later");
    }
    assert_no_rows(&w).await;
    w.finish().await;
}

async fn each_delivery_has_its_one_method_and_the_other_is_a_clear_error(t: TestDb) {
    // A direct event given to a transaction: refused, naming the route and the method to use,
    // and nothing is written (the transaction is still usable).
    let w = World::direct(t).await;
    let txn = w.bus.begin(&w.t.db).await.unwrap();
    let err = w
        .bus
        .publish(&txn, "k", &said("in a transaction"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BusError::DirectInTransaction { event_type, service }
            if event_type == "test.said" && service == "agent"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`agent`") && text.contains("EventBus::send_direct"),
        "{text}"
    );
    let events = [("k", &said("a")), ("k", &said("b"))];
    assert!(matches!(
        w.bus.publish_all(&txn, &events).await,
        Err(BusError::DirectInTransaction { .. })
    ));
    w.bus.commit(txn).await.unwrap();
    assert_no_rows(&w).await;

    // A bus with no transport cannot send a direct event.
    let bare = EventBus::new("agent", w.bus.routes().clone(), PublishConfig::default()).unwrap();
    let err = bare.send_direct("k", &said("nowhere")).await.unwrap_err();
    assert!(matches!(&err, BusError::NoTransport { .. }), "{err}");
    assert!(err.to_string().contains("no transport"), "{err}");
    let metrics = Scrape::parse(&bare.metrics().prometheus_text());
    assert_eq!(direct_errors(&metrics, "no_transport"), 1.0);

    // A clone taken before the bus got its transport shares it: whatever the broker answers,
    // the send is not refused for want of a transport.
    let early = bare.clone();
    let _bare = bare.with_transport(w.producer());
    let sent = early.send_direct("k", &said("early clone")).await;
    assert!(
        !matches!(&sent, Err(BusError::NoTransport { .. })),
        "{sent:?}"
    );

    // An event of an outbox route given to `send_direct`: refused, nothing sent.
    let outbox_route = ServiceRoute {
        delivery: Delivery::Outbox,
        ..w.route.clone()
    };
    let routes = RouteRegistry::builder()
        .service(outbox_route)
        .event(Said::EVENT_TYPE, "agent")
        .build()
        .unwrap();
    let bus = EventBus::new("agent", routes, PublishConfig::default())
        .unwrap()
        .with_transport(w.producer());
    let err = bus.send_direct("k", &said("outbox")).await.unwrap_err();
    assert!(
        matches!(&err, BusError::NotDirect { service, delivery: Delivery::Outbox, .. } if service == "agent"),
        "{err}"
    );
    assert!(err.to_string().contains("EventBus::publish"), "{err}");
    let metrics = Scrape::parse(&bus.metrics().prometheus_text());
    assert_eq!(
        metrics.value("smartflow_direct_sent_total", &[("service", "agent")]),
        0.0
    );
    assert_no_rows(&w).await;
    w.finish().await;
}

on_every_backend!(
    a_direct_event_reaches_its_consumer_once_and_leaves_no_row,
    a_direct_event_the_broker_does_not_take_is_an_error_and_lost,
    each_delivery_has_its_one_method_and_the_other_is_a_clear_error
);
