//! A commit in another process wakes the relay: on PostgreSQL through `LISTEN`/`NOTIFY`, so the
//! relay need not poll. (Elsewhere relays poll, more often while rows keep coming: the relay's
//! unit tests.)

use std::time::Duration;

use smartflow_bus::domain::{EventContract, OutboxStatus, RouteRegistry};
use smartflow_bus::{DatabaseConnection, EventBus, PublishConfig, Relay, RelayConfig};
use smartflow_testkit::{wait_until, Backend, TestDb};
use tokio_util::sync::CancellationToken;

use crate::fixture::*;

/// Starts `relay` and waits until it sent a row of this process (whose bus wakes it directly):
/// then it has had its first round and waits for its next poll or a wake-up.
async fn start_warm(w: &World, relay: Relay) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    let warm_up = w.publish(&["warm-up"]).await;
    wait_until("the relay sends this process's row", || async {
        let row = w.table().find(&w.t.db, &warm_up[0]).await.unwrap().unwrap();
        row.status == OutboxStatus::Published
    })
    .await;
    (shutdown, running)
}

/// Another process: its own pool and its own bus, whose wake signal the relay never sees.
async fn another_process(w: &World) -> (DatabaseConnection, EventBus) {
    let other_db = w.t.connect_again().await;
    let routes = RouteRegistry::builder()
        .service(w.route.clone())
        .event(Said::EVENT_TYPE, "agent")
        .build()
        .unwrap();
    let other = EventBus::new("agent", routes, PublishConfig::default()).unwrap();
    (other_db, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_another_process_wakes_a_relay_that_does_not_poll() {
    let w = World::new(TestDb::new(Backend::Postgres).await).await;
    // Polls once an hour: within the test's patience only a wake-up can make it send a row.
    let relay = w.relay_on(
        w.t.db.clone(),
        RelayConfig {
            poll_interval: Duration::from_secs(3600),
            min_poll_interval: Duration::from_secs(3600),
            republish_after: None,
            ..relay_config()
        },
    );
    let (shutdown, running) = start_warm(&w, relay).await;
    let (other_db, other) = another_process(&w).await;
    let mut sent = Vec::new();
    let mut published = 0;
    // Published again until one is sent: a commit made before the relay's listener was up is
    // only heard with the next one. Bounded by the test's patience (the relay's poll is 1 h).
    for _ in 0..300 {
        let txn = other.begin(&other_db).await.unwrap();
        let said = Said {
            conversation: "c".into(),
            content: "from elsewhere".into(),
        };
        let id = other.publish(&txn, "k", &said).await.unwrap();
        // Committed without the bus's in-process wake-up, as in a process without a relay.
        txn.commit().await.unwrap();
        sent.push(id.to_string());
        tokio::time::sleep(Duration::from_millis(200)).await;
        for id in &sent {
            let row = w.table().find(&w.t.db, id).await.unwrap().unwrap();
            published += usize::from(row.status == OutboxStatus::Published);
        }
        if published > 0 {
            break;
        }
    }
    assert!(
        published > 0,
        "no row committed by another process was sent: the relay was not woken"
    );

    shutdown.cancel();
    running.await.unwrap();
    w.finish().await;
}

/// A burst of commits in another process, faster than its bus sends wake-ups (one per
/// `ANNOUNCE_EVERY`), is all sent by a relay that polls only after rounds that found rows: the
/// one wake-up starts it, and it polls again while rows keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_another_process_is_all_sent_after_its_one_wake_up() {
    let w = World::new(TestDb::new(Backend::Postgres).await).await;
    let relay = w.relay_on(
        w.t.db.clone(),
        RelayConfig {
            // Idle, it would wait an hour: only a wake-up, then its own polling while rows
            // come, can send the burst within the test's patience.
            poll_interval: Duration::from_secs(3600),
            republish_after: None,
            ..relay_config()
        },
    );
    let (shutdown, running) = start_warm(&w, relay).await;
    let (other_db, other) = another_process(&w).await;
    let mut sent = Vec::new();
    // Bursts until the relay's listener has heard one (a commit made before it listened is not
    // heard), each of 50 commits back to back: most of them send no wake-up of their own.
    for _ in 0..100 {
        for n in 0..50 {
            let txn = other.begin(&other_db).await.unwrap();
            let said = Said {
                conversation: format!("c-{n}"),
                content: "from elsewhere".into(),
            };
            let id = other.publish(&txn, &format!("k-{n}"), &said).await.unwrap();
            txn.commit().await.unwrap();
            sent.push(id.to_string());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let row = w.table().find(&w.t.db, &sent[0]).await.unwrap().unwrap();
        if row.status == OutboxStatus::Published {
            break;
        }
    }
    wait_until("every row of the bursts is sent", || async {
        for id in &sent {
            let row = w.table().find(&w.t.db, id).await.unwrap().unwrap();
            if row.status != OutboxStatus::Published {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        sent.len() >= 50,
        "at least one burst was published: {}",
        sent.len()
    );

    shutdown.cancel();
    running.await.unwrap();
    w.finish().await;
}
