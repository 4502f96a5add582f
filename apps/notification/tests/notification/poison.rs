//! Poison requests, on every backend: an undecodable payload, an unknown channel, a target
//! outside the allowed webhooks and a message that is not an envelope all end `dead` in the
//! outbox with the reason, and no record is made. When marking one dead fails, the error comes
//! back to the caller instead of vanishing.

use smartflow_domain::{Envelope, EventContract, OutboxStatus};
use smartflow_notification::NotificationRequested;
use smartflow_storage::notification;
use smartflow_storage::ConnectionTrait;
use smartflow_testkit::{on_every_backend, TestDb};

use crate::support::*;

async fn poison_requests_are_dead_with_their_reason(t: TestDb) {
    let w = World::new(t).await;
    let mut sms = request("k-sms", "x");
    sms.channel = "sms".into();
    let unknown_channel = w.publish(&sms).await;

    let mut elsewhere = request("k-target", "x");
    elsewhere.target = Some("http://169.254.169.254/latest/meta-data".into());
    let bad_target = w.publish(&elsewhere).await;

    let mut garbled = Envelope::for_event("k", &request("k-garbled", "x")).unwrap();
    garbled.payload = serde_json::json!({"channel": 7});
    let txn = w.bus.begin(&w.t.db).await.unwrap();
    let undecodable = w
        .bus
        .publish_envelope(&txn, garbled)
        .await
        .unwrap()
        .to_string();
    w.bus.commit(txn).await.unwrap();

    let not_an_envelope = w.request("k-bytes", "x").await;

    let mut batch = w
        .as_delivered(&[
            unknown_channel.clone(),
            bad_target.clone(),
            undecodable.clone(),
            not_an_envelope.clone(),
        ])
        .await;
    batch[3].payload = Some(b"\x00\x01 not json".to_vec());
    let report = w.runner().process_batch(&batch).await.unwrap();
    assert_eq!((report.dead, report.applied), (4, 0), "{report:?}");

    for (id, reason) in [
        (&unknown_channel, "unknown notification channel `sms`"),
        (&bad_target, "not an allowed webhook"),
        (&undecodable, "undecodable payload"),
        (&not_an_envelope, "undecodable message"),
    ] {
        let row = w.outbox().find(&w.t.db, id).await.unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Dead, "{reason}");
        let error = row.last_error.unwrap_or_default();
        assert!(error.contains(reason), "expected `{reason}` in `{error}`");
        // A refused target is stored with its last path segment (a webhook token) hidden.
        assert!(!error.contains("meta-data"), "{error}");
    }
    let counts = notification::counts(&w.t.db).await.unwrap();
    assert_eq!(counts, Default::default(), "no record for a poison request");
    assert!(w.fake.requests().is_empty());
    assert_eq!(
        NotificationRequested::EVENT_TYPE,
        "notification.feishu.requested"
    );
    w.finish().await;
}

async fn a_failure_to_mark_poison_dead_is_returned(t: TestDb) {
    let w = World::new(t).await;
    let id = w.request("k", "x").await;
    let mut batch = w.as_delivered(std::slice::from_ref(&id)).await;
    batch[0].payload = Some(b"not an envelope".to_vec());

    // Take the outbox away, so that marking the message dead cannot succeed.
    move_table(&w, "notification_outbox", "notification_outbox_away").await;
    let err = w
        .runner()
        .process_batch(&batch)
        .await
        .expect_err("a failed dead mark must be an error, not a skip");
    assert!(
        err.to_string().contains("notification_outbox"),
        "the error names what failed: {err}"
    );
    move_table(&w, "notification_outbox_away", "notification_outbox").await;
    let row = w.outbox().find(&w.t.db, &id).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Pending, "nothing was half-done");

    // Applied again (as the consumer loop does), it is dead with its reason.
    let report = w.runner().process_batch(&batch).await.unwrap();
    assert_eq!(report.dead, 1);
    let row = w.outbox().find(&w.t.db, &id).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Dead);
    assert!(row.last_error.unwrap().contains("undecodable message"));
    w.finish().await;
}

/// Fault injection only: renames a table behind the repositories' back.
async fn move_table(w: &World, from: &str, to: &str) {
    w.t.db
        .execute_unprepared(&format!("ALTER TABLE {from} RENAME TO {to}"))
        .await
        .unwrap();
}

on_every_backend!(
    poison_requests_are_dead_with_their_reason,
    a_failure_to_mark_poison_dead_is_returned,
);
