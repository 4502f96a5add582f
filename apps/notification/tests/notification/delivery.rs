//! Recording and sending, on every backend: dedupe (sequential and racing), a crash between
//! claim and send, two scanners racing, 5xx then success, permanent errors, timeouts and
//! attempts running out. The consumer is driven through `process_batch`, the dispatcher by
//! hand, against a local fake of the Feishu webhook.

use std::collections::HashSet;
use std::time::Duration;

use smartflow_notification::DispatchConfig;
use smartflow_storage::notification::{self, DeliveryOutcome, NotificationStatus};
use smartflow_storage::now_millis;
use smartflow_testkit::{on_every_backend, TestDb};

use crate::support::*;

async fn the_same_key_twice_sends_once(t: TestDb) {
    let w = World::new(t).await;
    w.request_and_handle(&[("k1", "first"), ("k1", "second")])
        .await;
    let counts = notification::counts(&w.t.db).await.unwrap();
    assert_eq!(counts.pending, 1, "one record per key: {counts:?}");
    let report = w.dispatcher().send_pending().await.unwrap();
    assert_eq!((report.claimed, report.sent), (1, 1), "{report:?}");
    assert_eq!(w.fake.texts(), vec!["first".to_owned()]);
    let record = w.record("k1").await;
    assert_eq!(record.status, NotificationStatus::Sent);
    assert_eq!(record.attempts, 1);
    assert!(record.provider_response.unwrap().contains("success"));

    // A request after the send adds nothing either.
    w.request_and_handle(&[("k1", "third")]).await;
    let report = w.dispatcher().send_pending().await.unwrap();
    assert_eq!(report.claimed, 0);
    let report = w.dispatcher().retry_round().await.unwrap();
    assert_eq!(report.claimed, 0);
    assert_eq!(w.fake.requests().len(), 1);
    // Both events were consumed, not dropped.
    let stats = w.outbox().stats(&w.t.db).await.unwrap();
    assert_eq!(stats.consumed, 3, "{stats:?}");
    w.finish().await;
}

async fn racing_handlers_and_senders_send_once(t: TestDb) {
    let w = World::new(t).await;
    let a = w.request("race", "from a").await;
    let b = w.request("race", "from b").await;
    let batch = w.as_delivered(&[a, b]).await;
    let (db_a, db_b) = (w.t.connect_again().await, w.t.connect_again().await);
    let (runner_a, runner_b) = (w.runner_on(db_a.clone()), w.runner_on(db_b.clone()));
    let (ra, rb) = tokio::join!(
        runner_a.process_batch(&batch[..1]),
        runner_b.process_batch(&batch[1..]),
    );
    assert_eq!(ra.unwrap().applied + rb.unwrap().applied, 2);
    assert_eq!(notification::counts(&w.t.db).await.unwrap().pending, 1);

    let (sender_a, sender_b) = (
        w.dispatcher_on(db_a.clone(), fast_dispatch()),
        w.dispatcher_on(db_b.clone(), fast_dispatch()),
    );
    let (sa, sb) = tokio::join!(sender_a.send_pending(), sender_b.send_pending());
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert_eq!(sa.sent + sb.sent, 1, "{sa:?} {sb:?}");
    assert_eq!(w.fake.requests().len(), 1, "{:?}", w.fake.texts());
    assert_eq!(w.record("race").await.status, NotificationStatus::Sent);
    db_a.close().await.unwrap();
    db_b.close().await.unwrap();
    w.finish().await;
}

async fn a_crash_between_claim_and_send_is_recovered_once(t: TestDb) {
    let w = World::new(t).await;
    w.request_and_handle(&[("crashed", "crashed sender"), ("alive", "live sender")])
        .await;
    let now = now_millis();
    // Two senders claim a record each; one dies before calling the provider (its lease runs
    // out soon), the other is still working (its lease holds for an hour).
    let crashed = notification::claim(&w.t.db, &w.record("crashed").await, now, now + 300)
        .await
        .unwrap()
        .unwrap();
    let alive = notification::claim(&w.t.db, &w.record("alive").await, now, now + 3_600_000)
        .await
        .unwrap()
        .unwrap();

    let scanner = w.dispatcher();
    wait_until("the abandoned record is sent", || async {
        scanner.retry_round().await.unwrap();
        w.record("crashed").await.status == NotificationStatus::Sent
    })
    .await;
    // A few more rounds change nothing.
    for _ in 0..3 {
        let report = scanner.retry_round().await.unwrap();
        assert_eq!(report.claimed, 0, "{report:?}");
    }
    assert_eq!(w.fake.count("crashed sender"), 1, "sent exactly once more");
    assert_eq!(w.fake.count("live sender"), 0, "a held lease is left alone");
    let recovered = w.record("crashed").await;
    assert_eq!(recovered.attempts, 2, "the abandoned attempt counts");
    let still = w.record("alive").await;
    assert_eq!(still.status, NotificationStatus::Sending);
    assert_eq!(still.lease_owner, alive.lease_owner);
    // The dead sender's result, had it come back, is refused.
    let late = DeliveryOutcome::Sent { response: None };
    assert!(
        !notification::finish(&w.t.db, &crashed, &late, now_millis())
            .await
            .unwrap()
    );
    w.finish().await;
}

async fn two_scanners_racing_send_each_record_once(t: TestDb) {
    const RECORDS: usize = 20;
    let w = World::new(t).await;
    let texts: Vec<String> = (0..RECORDS).map(|i| format!("message {i}")).collect();
    let keys: Vec<String> = (0..RECORDS).map(|i| format!("key-{i}")).collect();
    let requests: Vec<(&str, &str)> = keys
        .iter()
        .zip(&texts)
        .map(|(k, t)| (k.as_str(), t.as_str()))
        .collect();
    w.request_and_handle(&requests).await;
    let now = now_millis();
    for key in &keys {
        let claimed = notification::claim(&w.t.db, &w.record(key).await, now, now + 60_000)
            .await
            .unwrap()
            .unwrap();
        let failed = DeliveryOutcome::Failed {
            error: "HTTP 503".into(),
            response: None,
            next_retry_at: now,
        };
        assert!(notification::finish(&w.t.db, &claimed, &failed, now)
            .await
            .unwrap());
    }
    let other = w.t.connect_again().await;
    let (a, b) = (
        w.dispatcher(),
        w.dispatcher_on(other.clone(), fast_dispatch()),
    );
    let (ra, rb) = tokio::join!(a.retry_round(), b.retry_round());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.claimed + rb.claimed, RECORDS as u64, "{ra:?} {rb:?}");
    assert_eq!(ra.sent + rb.sent, RECORDS as u64, "{ra:?} {rb:?}");
    for text in &texts {
        assert_eq!(w.fake.count(text), 1, "{text}");
    }
    assert_eq!(w.fake.requests().len(), RECORDS);
    assert_eq!(
        notification::counts(&w.t.db).await.unwrap().sent,
        RECORDS as u64
    );
    other.close().await.unwrap();
    w.finish().await;
}

async fn a_5xx_is_retried_until_it_succeeds(t: TestDb) {
    let w = World::new(t).await;
    w.fake.script([Answer::Status(503)]);
    w.request_and_handle(&[("flaky", "hello")]).await;
    let sender = w.dispatcher();
    let report = sender.send_pending().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let failed = w.record("flaky").await;
    assert_eq!(failed.status, NotificationStatus::Failed);
    assert!(
        failed.last_error.as_deref().unwrap().contains("503"),
        "{failed:?}"
    );
    assert!(failed.next_retry_at.is_some());
    assert!(failed.lease_owner.is_none());

    wait_until("the retry succeeds", || async {
        sender.retry_round().await.unwrap();
        w.record("flaky").await.status == NotificationStatus::Sent
    })
    .await;
    let sent = w.record("flaky").await;
    assert_eq!(sent.attempts, 2);
    assert_eq!(w.fake.count("hello"), 2);
    w.finish().await;
}

async fn a_permanent_error_makes_the_record_dead(t: TestDb) {
    let w = World::new(t).await;
    w.fake.script([Answer::Code(
        200,
        19021,
        "sign match fail or timestamp is not within one hour from current time",
    )]);
    w.request_and_handle(&[("signed", "hello")]).await;
    let sender = w.dispatcher();
    let report = sender.send_pending().await.unwrap();
    assert_eq!(report.dead, 1, "{report:?}");
    let dead = w.record("signed").await;
    assert_eq!(dead.status, NotificationStatus::Dead);
    assert!(
        dead.last_error.as_deref().unwrap().contains("19021"),
        "{dead:?}"
    );
    assert!(dead
        .provider_response
        .as_deref()
        .unwrap()
        .contains("sign match fail"));
    assert_eq!(dead.next_retry_at, None);
    let report = sender.retry_round().await.unwrap();
    assert_eq!(report.claimed, 0);
    // A new request for a dead key does not bring it back.
    w.request_and_handle(&[("signed", "again")]).await;
    assert_eq!(sender.send_pending().await.unwrap().claimed, 0);
    assert_eq!(w.fake.requests().len(), 1);
    w.finish().await;
}

async fn a_timeout_is_retried(t: TestDb) {
    let w = World::new(t).await;
    w.fake.script([Answer::Hang(Duration::from_secs(3))]);
    w.request_and_handle(&[("slow", "hello")]).await;
    let impatient = smartflow_notification::Dispatcher::new(
        w.t.db.clone(),
        w.providers(Duration::from_millis(300)),
        fast_dispatch(),
    )
    .unwrap();
    let report = impatient.send_pending().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let failed = w.record("slow").await;
    assert_eq!(failed.status, NotificationStatus::Failed);
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap()
            .contains("did not answer within 300 ms"),
        "{failed:?}"
    );
    wait_until("the retry after a timeout succeeds", || async {
        impatient.retry_round().await.unwrap();
        w.record("slow").await.status == NotificationStatus::Sent
    })
    .await;
    assert_eq!(w.record("slow").await.attempts, 2);
    assert_eq!(w.fake.count("hello"), 2);
    w.finish().await;
}

async fn a_failed_record_is_retried_by_a_new_request(t: TestDb) {
    let w = World::new(t).await;
    w.fake
        .script([Answer::Code(200, 11232, "frequency limited")]);
    w.request_and_handle(&[("limited", "hello")]).await;
    // Backoff far in the future: only the new request can make it due now.
    let patient = w.dispatcher_on(
        w.t.db.clone(),
        DispatchConfig {
            retry: smartflow_domain::RetryPolicy {
                base_delay: Duration::from_secs(3600),
                max_delay: Duration::from_secs(3600),
                max_retry: 3,
            },
            ..fast_dispatch()
        },
    );
    assert_eq!(patient.send_pending().await.unwrap().failed, 1);
    assert_eq!(
        patient.retry_round().await.unwrap().claimed,
        0,
        "not due yet"
    );
    w.request_and_handle(&[("limited", "hello again")]).await;
    let report = patient.retry_round().await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    assert_eq!(w.fake.texts(), vec!["hello".to_owned(), "hello".to_owned()]);
    assert_eq!(notification::counts(&w.t.db).await.unwrap().sent, 1);
    w.finish().await;
}

async fn attempts_run_out_and_the_record_is_dead(t: TestDb) {
    let mut w = World::new(t).await;
    w.max_attempts = 2;
    w.fake.answer_otherwise(Answer::Status(500));
    w.request_and_handle(&[("doomed", "hello")]).await;
    let sender = w.dispatcher();
    assert_eq!(sender.send_pending().await.unwrap().failed, 1);
    wait_until("the last attempt fails", || async {
        sender.retry_round().await.unwrap();
        w.record("doomed").await.status == NotificationStatus::Dead
    })
    .await;
    let dead = w.record("doomed").await;
    assert_eq!(dead.attempts, 2);
    assert!(
        dead.last_error
            .as_deref()
            .unwrap()
            .contains("no attempts left"),
        "{dead:?}"
    );
    assert_eq!(w.fake.requests().len(), 2);
    assert_eq!(sender.retry_round().await.unwrap().claimed, 0);
    w.finish().await;
}

async fn every_attempt_is_accounted_for(t: TestDb) {
    // Mixed answers in one round: each record ends in the status its answer calls for.
    let w = World::new(t).await;
    w.request_and_handle(&[("a", "ok"), ("b", "busy"), ("c", "bad")])
        .await;
    let statuses = |text: &str| match text {
        "busy" => Answer::Status(502),
        "bad" => Answer::Code(400, 9499, "Bad Request"),
        _ => Answer::Success,
    };
    // Records are sent oldest first but concurrently, so the script cannot follow the order;
    // one at a time keeps it deterministic.
    let one_by_one = w.dispatcher_on(
        w.t.db.clone(),
        DispatchConfig {
            concurrency: 1,
            ..fast_dispatch()
        },
    );
    w.fake
        .script(["ok", "busy", "bad"].into_iter().map(statuses));
    let report = one_by_one.send_pending().await.unwrap();
    assert_eq!(
        (report.claimed, report.sent, report.failed, report.dead),
        (3, 1, 1, 1),
        "{report:?}"
    );
    let seen: HashSet<String> = w.fake.texts().into_iter().collect();
    assert_eq!(seen.len(), 3);
    assert_eq!(w.record("a").await.status, NotificationStatus::Sent);
    assert_eq!(w.record("b").await.status, NotificationStatus::Failed);
    assert_eq!(w.record("c").await.status, NotificationStatus::Dead);
    w.finish().await;
}

async fn a_running_dispatcher_sends_when_woken_and_stops_on_shutdown(t: TestDb) {
    let w = World::new(t).await;
    // The scanner runs at start-up and then not for an hour, and leaves pending records to the
    // wake-up for an hour: only the signal can get this record sent.
    let dispatcher = w.dispatcher_on(
        w.t.db.clone(),
        DispatchConfig {
            scan_interval: Duration::from_secs(3600),
            pending_grace: Duration::from_secs(3600),
            ..fast_dispatch()
        },
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(dispatcher.clone().run(shutdown.clone()));
    w.request_and_handle(&[("woken", "wake up")]).await;
    dispatcher.wake_signal().notify_one();
    wait_until("the woken dispatcher sends", || async {
        w.record("woken").await.status == NotificationStatus::Sent
    })
    .await;
    assert_eq!(w.fake.count("wake up"), 1);
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the dispatcher stops")
        .unwrap();
    w.finish().await;
}

async fn the_largest_accepted_request_fits_every_column(t: TestDb) {
    use smartflow_notification::events::{
        Validate, MAX_DEDUPE_KEY_CHARS, MAX_TEXT_CHARS, MAX_TITLE_CHARS,
    };
    let w = World::new(t).await;
    let key = "é".repeat(MAX_DEDUPE_KEY_CHARS);
    let mut big = request(&key, &"文".repeat(MAX_TEXT_CHARS));
    big.title = "t".repeat(MAX_TITLE_CHARS);
    big.validate(&w.targets()).unwrap();
    let id = w.publish(&big).await;
    let report = w
        .runner()
        .process_batch(&w.as_delivered(&[id]).await)
        .await
        .unwrap();
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(w.dispatcher().send_pending().await.unwrap().sent, 1);
    assert_eq!(w.fake.count(&big.text), 1);
    assert_eq!(w.record(&key).await.dedupe_key, key);
    w.finish().await;
}

on_every_backend!(
    the_same_key_twice_sends_once,
    the_largest_accepted_request_fits_every_column,
    a_running_dispatcher_sends_when_woken_and_stops_on_shutdown,
    racing_handlers_and_senders_send_once,
    a_crash_between_claim_and_send_is_recovered_once,
    two_scanners_racing_send_each_record_once,
    a_5xx_is_retried_until_it_succeeds,
    a_permanent_error_makes_the_record_dead,
    a_timeout_is_retried,
    a_failed_record_is_retried_by_a_new_request,
    attempts_run_out_and_the_record_is_dead,
    every_attempt_is_accounted_for,
);
