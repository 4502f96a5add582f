//! Notification record scenarios, each run on SQLite, PostgreSQL and MariaDB. Times are passed
//! in explicitly, so leases expire and retries fall due without any test sleeping.

use std::collections::HashSet;

use smartflow_storage::notification::{
    self, DeliveryOutcome, NewNotification, NotificationRecord, NotificationStatus, RequestOutcome,
};
use smartflow_storage::{now_millis, DatabaseConnection, TransactionTrait};
use smartflow_testkit::{on_every_backend, TestDb};

fn new(key: &str) -> NewNotification {
    NewNotification {
        channel: "feishu".into(),
        dedupe_key: key.into(),
        payload: format!(r#"{{"text":"{key}"}}"#),
        source_event_id: Some(uuid_like(key)),
        max_attempts: 3,
    }
}

fn uuid_like(key: &str) -> String {
    format!("{:0>36}", key.len())
}

async fn request_committed(
    db: &DatabaseConnection,
    new: &NewNotification,
    now: i64,
) -> RequestOutcome {
    let txn = db.begin().await.unwrap();
    let outcome = notification::request(&txn, new, now).await.unwrap();
    txn.commit().await.unwrap();
    outcome
}

async fn created(db: &DatabaseConnection, key: &str, now: i64) -> NotificationRecord {
    match request_committed(db, &new(key), now).await {
        RequestOutcome::Created(record) => record,
        other => panic!("expected a new record for {key}, got {other:?}"),
    }
}

async fn reload(db: &DatabaseConnection, id: i64) -> NotificationRecord {
    notification::get(db, id).await.unwrap().unwrap()
}

async fn a_second_request_for_a_key_changes_nothing(t: TestDb) {
    let now = now_millis();
    let first = created(&t.db, "k1", now).await;
    assert_eq!(first.status, NotificationStatus::Pending);
    assert_eq!((first.attempts, first.max_attempts), (0, 3));
    assert_eq!(first.source_event_id.as_deref(), Some(&*uuid_like("k1")));

    let mut again = new("k1");
    again.payload = r#"{"text":"something else"}"#.into();
    match request_committed(&t.db, &again, now + 5).await {
        RequestOutcome::Existing { record, retry_now } => {
            assert_eq!(record, first, "the existing record is untouched");
            assert!(!retry_now);
        }
        other => panic!("expected the existing record, got {other:?}"),
    }
    // The key is per channel.
    let mut other_channel = new("k1");
    other_channel.channel = "email".into();
    assert!(matches!(
        request_committed(&t.db, &other_channel, now).await,
        RequestOutcome::Created(_)
    ));
    let counts = notification::counts(&t.db).await.unwrap();
    assert_eq!(counts.pending, 2);

    // A sent record stays sent too.
    let claimed = notification::claim(&t.db, &first, now, now + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(notification::finish(
        &t.db,
        &claimed,
        &DeliveryOutcome::Sent {
            response: Some("{\"code\":0}".into())
        },
        now + 1
    )
    .await
    .unwrap());
    match request_committed(&t.db, &new("k1"), now + 10).await {
        RequestOutcome::Existing { record, retry_now } => {
            assert_eq!(record.status, NotificationStatus::Sent);
            assert!(!retry_now);
        }
        other => panic!("expected the sent record, got {other:?}"),
    }
    t.cleanup().await;
}

async fn racing_requests_for_one_key_create_one_record(t: TestDb) {
    const RACERS: usize = 6;
    let now = now_millis();
    let mut pools = Vec::new();
    for _ in 0..RACERS {
        pools.push(t.connect_again().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for (i, db) in pools.iter().cloned().enumerate() {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let txn = db.begin().await.unwrap();
            barrier.wait().await;
            let mut request = new("race");
            request.payload = format!(r#"{{"racer":{i}}}"#);
            let outcome = notification::request(&txn, &request, now).await.unwrap();
            txn.commit().await.unwrap();
            outcome
        }));
    }
    let mut created = 0;
    let mut ids = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            RequestOutcome::Created(record) => {
                created += 1;
                ids.insert(record.id);
            }
            RequestOutcome::Existing { record, retry_now } => {
                assert!(!retry_now);
                ids.insert(record.id);
            }
        }
    }
    assert_eq!(created, 1, "exactly one racer creates the record");
    assert_eq!(ids.len(), 1, "every racer sees the same record");
    assert_eq!(notification::counts(&t.db).await.unwrap().pending, 1);
    for db in pools {
        db.close().await.unwrap();
    }
    t.cleanup().await;
}

async fn a_failed_record_is_reused_by_a_new_request(t: TestDb) {
    let now = now_millis();
    let record = created(&t.db, "flaky", now).await;
    let claimed = notification::claim(&t.db, &record, now, now + 60_000)
        .await
        .unwrap()
        .unwrap();
    let far = now + 3_600_000;
    assert!(notification::finish(
        &t.db,
        &claimed,
        &DeliveryOutcome::Failed {
            error: "HTTP 502".into(),
            response: Some("bad gateway".into()),
            next_retry_at: far,
        },
        now + 1,
    )
    .await
    .unwrap());
    assert!(
        notification::due_for_retry(&t.db, now + 2, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due before its retry time"
    );
    match request_committed(&t.db, &new("flaky"), now + 3).await {
        RequestOutcome::Existing { record, retry_now } => {
            assert!(
                retry_now,
                "a failed record takes the new request as its retry"
            );
            assert_eq!(record.status, NotificationStatus::Failed);
            assert_eq!(record.next_retry_at, Some(now + 3));
            assert_eq!(record.attempts, 1);
            assert_eq!(record.last_error.as_deref(), Some("HTTP 502"));
        }
        other => panic!("expected the failed record, got {other:?}"),
    }
    let due = notification::due_for_retry(&t.db, now + 3, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    let again = notification::claim(&t.db, &due[0], now + 3, now + 60_000)
        .await
        .unwrap()
        .expect("the due record can be claimed");
    assert_eq!(again.attempts, 2);
    assert_eq!(
        reload(&t.db, record.id).await.status,
        NotificationStatus::Sending
    );
    t.cleanup().await;
}

async fn claims_and_results_are_conditional(t: TestDb) {
    let now = now_millis();
    let record = created(&t.db, "c1", now).await;
    let claimed = notification::claim(&t.db, &record, now, now + 60_000)
        .await
        .unwrap()
        .expect("a pending record can be claimed");
    assert_eq!(claimed.status, NotificationStatus::Sending);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(reload(&t.db, record.id).await, claimed);

    // A stale view, or a fresh view while the lease holds, claims nothing.
    assert!(notification::claim(&t.db, &record, now, now + 60_000)
        .await
        .unwrap()
        .is_none());
    assert!(notification::claim(&t.db, &claimed, now + 1, now + 60_000)
        .await
        .unwrap()
        .is_none());
    assert!(
        notification::pending(&t.db, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "a claimed record is no longer pending"
    );

    // Only the lease holder may record the result.
    let mut impostor = claimed.clone();
    impostor.lease_owner = Some("someone-else".into());
    let sent = DeliveryOutcome::Sent {
        response: Some("ok".into()),
    };
    assert!(!notification::finish(&t.db, &impostor, &sent, now + 2)
        .await
        .unwrap());
    assert!(notification::finish(&t.db, &claimed, &sent, now + 2)
        .await
        .unwrap());
    let done = reload(&t.db, record.id).await;
    assert_eq!(done.status, NotificationStatus::Sent);
    assert_eq!(done.sent_at, Some(now + 2));
    assert_eq!(done.provider_response.as_deref(), Some("ok"));
    assert_eq!((done.lease_owner, done.lease_until), (None, None));

    // Terminal records are never claimed nor overwritten.
    assert!(
        notification::claim(&t.db, &reload(&t.db, record.id).await, now + 3, now + 9)
            .await
            .unwrap()
            .is_none()
    );
    let dead = DeliveryOutcome::Dead {
        error: "late".into(),
        response: None,
    };
    assert!(!notification::finish(&t.db, &claimed, &dead, now + 4)
        .await
        .unwrap());
    assert_eq!(
        reload(&t.db, record.id).await.status,
        NotificationStatus::Sent
    );
    t.cleanup().await;
}

async fn an_expired_lease_is_taken_over_once_and_the_old_holder_loses(t: TestDb) {
    let now = now_millis();
    let record = created(&t.db, "crash", now).await;
    let lease_until = now + 1_000;
    let crashed = notification::claim(&t.db, &record, now, lease_until)
        .await
        .unwrap()
        .unwrap();
    assert!(
        notification::due_for_retry(&t.db, lease_until - 1, 10)
            .await
            .unwrap()
            .is_empty(),
        "a held lease is left alone"
    );
    let later = lease_until + 1;
    let due = notification::due_for_retry(&t.db, later, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].status, NotificationStatus::Sending);

    let other = t.connect_again().await;
    let (a, b) = tokio::join!(
        notification::claim(&t.db, &due[0], later, later + 60_000),
        notification::claim(&other, &due[0], later, later + 60_000),
    );
    let winners: Vec<NotificationRecord> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one scanner takes the stale record"
    );
    assert_eq!(winners[0].attempts, 2);

    // The crashed sender waking up late cannot overwrite the new holder's outcome.
    let failed = DeliveryOutcome::Failed {
        error: "too late".into(),
        response: None,
        next_retry_at: later,
    };
    assert!(!notification::finish(&t.db, &crashed, &failed, later + 1)
        .await
        .unwrap());
    assert!(notification::finish(
        &t.db,
        &winners[0],
        &DeliveryOutcome::Sent { response: None },
        later + 2
    )
    .await
    .unwrap());
    assert_eq!(
        reload(&t.db, record.id).await.status,
        NotificationStatus::Sent
    );
    other.close().await.unwrap();
    t.cleanup().await;
}

async fn exhausted_leases_are_buried_with_a_reason(t: TestDb) {
    let now = now_millis();
    let mut last_try = new("last");
    last_try.max_attempts = 1;
    let RequestOutcome::Created(record) = request_committed(&t.db, &last_try, now).await else {
        panic!("expected a new record");
    };
    let keep = created(&t.db, "keep", now).await;
    notification::claim(&t.db, &record, now, now + 100)
        .await
        .unwrap()
        .unwrap();
    notification::claim(&t.db, &keep, now, now + 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        notification::bury_exhausted_leases(&t.db, now + 50)
            .await
            .unwrap(),
        0,
        "nothing is buried while its lease holds"
    );
    let due = notification::due_for_retry(&t.db, now + 101, 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![keep.id],
        "a record without attempts left is not offered for retry"
    );
    assert_eq!(
        notification::bury_exhausted_leases(&t.db, now + 101)
            .await
            .unwrap(),
        1
    );
    let dead = reload(&t.db, record.id).await;
    assert_eq!(dead.status, NotificationStatus::Dead);
    assert!(dead.last_error.unwrap().contains("last allowed attempt"));
    assert_eq!(
        reload(&t.db, keep.id).await.status,
        NotificationStatus::Sending
    );
    t.cleanup().await;
}

async fn two_scanners_never_claim_the_same_record(t: TestDb) {
    const RECORDS: usize = 30;
    let now = now_millis();
    let mut all = HashSet::new();
    for i in 0..RECORDS {
        let record = created(&t.db, &format!("s{i}"), now).await;
        let claimed = notification::claim(&t.db, &record, now, now + 60_000)
            .await
            .unwrap()
            .unwrap();
        let failed = DeliveryOutcome::Failed {
            error: "HTTP 503".into(),
            response: None,
            next_retry_at: now + 10,
        };
        assert!(notification::finish(&t.db, &claimed, &failed, now + 1)
            .await
            .unwrap());
        all.insert(record.id);
    }
    let other = t.connect_again().await;
    let scan = |db: DatabaseConnection| async move {
        let at = now + 10;
        let mut mine = Vec::new();
        for seen in notification::due_for_retry(&db, at, 100).await.unwrap() {
            if let Some(claimed) = notification::claim(&db, &seen, at, at + 60_000)
                .await
                .unwrap()
            {
                mine.push(claimed.id);
            }
        }
        mine
    };
    let (a, b) = tokio::join!(
        tokio::spawn(scan(t.db.clone())),
        tokio::spawn(scan(other.clone()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let a_set: HashSet<i64> = a.iter().copied().collect();
    let b_set: HashSet<i64> = b.iter().copied().collect();
    assert!(a_set.is_disjoint(&b_set), "a record was claimed twice");
    assert_eq!(a.len() + b.len(), RECORDS);
    assert_eq!(&a_set | &b_set, all);
    assert_eq!(
        notification::counts(&t.db).await.unwrap().sending,
        RECORDS as u64
    );
    other.close().await.unwrap();
    t.cleanup().await;
}

on_every_backend!(
    a_second_request_for_a_key_changes_nothing,
    racing_requests_for_one_key_create_one_record,
    a_failed_record_is_reused_by_a_new_request,
    claims_and_results_are_conditional,
    an_expired_lease_is_taken_over_once_and_the_old_holder_loses,
    exhausted_leases_are_buried_with_a_reason,
    two_scanners_never_claim_the_same_record,
);
