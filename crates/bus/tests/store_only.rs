//! `Delivery::StoreOnly`: `EventBus::publish` keeps the event as a `stored` row, in the caller's
//! transaction, and no relay ever claims it; on SQLite, PostgreSQL and MariaDB.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use smartflow_bus::{EventBus, PublishConfig};
use smartflow_domain::{Delivery, EventContract, OutboxStatus, RouteRegistry, ServiceRoute};
use smartflow_storage::outbox::{
    ClaimMode, ClaimRequest, OutboxFilter, OutboxPurge, SettledStatus,
};
use smartflow_storage::{now_millis, ConnectionTrait};
use smartflow_testkit::{on_every_backend, TestDb};

#[derive(Debug, Serialize, Deserialize)]
struct Audited {
    n: u32,
}
impl EventContract for Audited {
    const EVENT_TYPE: &'static str = "test.audited";
}

#[derive(Debug, Serialize, Deserialize)]
struct Sent {
    n: u32,
}
impl EventContract for Sent {
    const EVENT_TYPE: &'static str = "test.sent";
}

/// The agent's bus: its own events go out through its outbox; `test.audited` belongs to a
/// store-only route (an audit trail), still written into the agent's own outbox.
fn bus() -> EventBus {
    let own = ServiceRoute::new("agent", "agent_outbox", "topic-agent", "agent-group").unwrap();
    let audit = ServiceRoute::new("audit", "audit_outbox", "topic-audit", "audit-group")
        .unwrap()
        .with_delivery(Delivery::StoreOnly);
    let routes = RouteRegistry::builder()
        .service(own)
        .service(audit)
        .event(Sent::EVENT_TYPE, "agent")
        .event(Audited::EVENT_TYPE, "audit")
        .build()
        .unwrap();
    EventBus::new("agent", routes, PublishConfig::default()).unwrap()
}

async fn a_store_only_event_is_kept_and_never_claimed(t: TestDb) {
    let bus = bus();
    let txn = bus.begin(&t.db).await.unwrap();
    let audited = bus.publish(&txn, "k", &Audited { n: 1 }).await.unwrap();
    let sent = bus.publish(&txn, "k", &Sent { n: 2 }).await.unwrap();
    bus.commit(txn).await.unwrap();

    // Rolled back: nothing kept, as for any publish.
    let txn = bus.begin(&t.db).await.unwrap();
    bus.publish(&txn, "k", &Audited { n: 3 }).await.unwrap();
    drop(txn);

    let outbox = bus.outbox();
    let row = outbox
        .find(&t.db, &audited.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, OutboxStatus::Stored);
    assert_eq!(row.next_retry_at, None);
    let stats = outbox.stats(&t.db).await.unwrap();
    assert_eq!((stats.stored, stats.pending), (1, 1));

    // The relay's claim takes the outbox event only, also long after, and holds nothing back
    // behind the stored row of the same key.
    let mode = ClaimMode::for_backend(t.db.get_database_backend());
    let later = ClaimRequest {
        now: now_millis() + 86_400_000,
        ..ClaimRequest::new("r", 100, 100, Duration::from_secs(30))
    };
    let claim = outbox.claim(&t.db, mode, &later).await.unwrap();
    let claimed: Vec<String> = claim.rows.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(claimed, vec![sent.to_string()]);
    assert_eq!(claim.held_back, 0);
    outbox.release(&t.db, claim).await.unwrap();

    // No writer moves it: a consumer's mark, a redrive, an unblock.
    assert!(!outbox
        .mark_consumed(&t.db, &audited.to_string())
        .await
        .unwrap());
    let stored_id = row.id;
    assert_eq!(outbox.redrive(&t.db, &[stored_id]).await.unwrap(), 0);
    assert!(outbox.unblock_key(&t.db, "k").await.unwrap().is_empty());
    let still = outbox
        .find(&t.db, &audited.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.status, OutboxStatus::Stored);
    let listed = outbox
        .count_matching(
            &t.db,
            &OutboxFilter {
                status: Some(OutboxStatus::Stored),
                ..OutboxFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed, 1);

    // A purge deletes stored rows only when it names them.
    let settled = |statuses| OutboxPurge {
        statuses,
        settled_before: now_millis() + 1,
    };
    let default = settled(vec![SettledStatus::Consumed, SettledStatus::Dead]);
    assert_eq!(outbox.purge(&t.db, &default, 10).await.unwrap(), 0);
    assert_eq!(
        outbox
            .purge(&t.db, &settled(vec![SettledStatus::Stored]), 10)
            .await
            .unwrap(),
        1
    );
    t.cleanup().await;
}

on_every_backend!(a_store_only_event_is_kept_and_never_claimed);
