//! The admin HTTP API (`/admin/outbox/...`, `/admin/inbox/...`) over a test database, each
//! scenario on SQLite, PostgreSQL and MariaDB: only for a service credential, every operation,
//! and a bad filter answered 400 with what is wrong.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use smartflow_domain::{Envelope, EventContract, OutboxStatus, RetryPolicy, SERVICE_TOKEN_HEADER};
use smartflow_service::admin::{admin_routes, AdminTables};
use smartflow_service::ServiceCredentials;
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::outbox::OutboxTable;
use smartflow_storage::TransactionTrait;
use smartflow_testkit::{on_every_backend, TestDb};
use tower::ServiceExt as _;

const TOKEN: &str = "operator-secret-0123456789-0123456789-abcdef";

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u32,
}
impl EventContract for Ping {
    const EVENT_TYPE: &'static str = "test.ping";
}

fn outbox() -> OutboxTable {
    OutboxTable::new("agent_outbox").unwrap()
}

fn router(t: &TestDb) -> Router {
    let credentials = ServiceCredentials::from_pairs([("operator", TOKEN)]).unwrap();
    admin_routes(
        AdminTables {
            db: t.db.clone(),
            outbox: Some(outbox()),
            inbox: Some(InboxTable::new("inbox").unwrap()),
        },
        credentials,
    )
    .into()
}

/// One request through the router: its status and its JSON body.
async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_as(router, method, uri, body, Some(TOKEN)).await
}

async fn call_as(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(SERVICE_TOKEN_HEADER, token);
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

/// `dead` pings (keys `k0`, `k1`, ...), then `pending` ones; returns the dead rows' ids.
async fn seed(t: &TestDb, dead: u32, pending: u32) -> Vec<i64> {
    let txn = t.db.begin().await.unwrap();
    let mut events = Vec::new();
    for n in 0..dead + pending {
        let env = Envelope::for_event(format!("k{n}"), &Ping { n }).unwrap();
        events.push(env.event_id.to_string());
        outbox().insert(&txn, &env, "topic-a", 3).await.unwrap();
    }
    txn.commit().await.unwrap();
    let mut ids = Vec::new();
    for event in events.iter().take(dead as usize) {
        outbox()
            .record_failure(&t.db, event, "Boom", false, &RetryPolicy::default())
            .await
            .unwrap();
        ids.push(outbox().find(&t.db, event).await.unwrap().unwrap().id);
    }
    ids
}

fn only_table(answer: &Value) -> &Value {
    let tables = answer["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{answer}");
    &tables[0]
}

async fn every_route_needs_a_service_credential(t: TestDb) {
    let router = router(&t);
    for (method, uri) in [
        (Method::GET, "/admin/outbox/stats"),
        (Method::GET, "/admin/outbox/rows"),
        (Method::GET, "/admin/outbox/rows/1"),
        (Method::POST, "/admin/outbox/redrive"),
        (Method::POST, "/admin/outbox/purge"),
        (Method::POST, "/admin/outbox/unblock"),
        (Method::GET, "/admin/inbox/stats"),
        (Method::GET, "/admin/inbox/rows"),
        (Method::GET, "/admin/inbox/rows/e1"),
        (Method::POST, "/admin/inbox/purge"),
    ] {
        for token in [None, Some("not-the-secret")] {
            let (status, body) =
                call_as(&router, method.clone(), uri, Some(json!({})), token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {body}");
            assert_eq!(
                body["error"]["code"], "service_credential_required",
                "{body}"
            );
        }
    }
    t.cleanup().await;
}

async fn stats_rows_and_one_row(t: TestDb) {
    let dead = seed(&t, 2, 1).await;
    let router = router(&t);
    let (status, stats) = call(&router, Method::GET, "/admin/outbox/stats", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let stats = only_table(&stats);
    assert_eq!(stats["table"], "agent_outbox");
    assert_eq!(stats["rows"]["dead"], 2);
    assert_eq!(stats["rows"]["pending"], 1);
    assert_eq!(stats["dead_reasons"][0]["reason"], "Boom");

    let (status, rows) = call(
        &router,
        Method::GET,
        "/admin/outbox/rows?status=dead&event_type=test.ping&reason=boom&older_than=0s&limit=1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let rows = only_table(&rows);
    assert_eq!(rows["matched"], 2);
    assert_eq!(rows["rows"].as_array().unwrap().len(), 1);
    assert_eq!(rows["rows"][0]["id"], dead[0]);
    assert!(rows["rows"][0].get("payload").is_none());
    let (_, by_key) = call(&router, Method::GET, "/admin/outbox/rows?key=k2", None).await;
    assert_eq!(only_table(&by_key)["matched"], 1);

    let (status, row) = call(
        &router,
        Method::GET,
        &format!("/admin/outbox/rows/{}", dead[1]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{row}");
    let row = &only_table(&row)["row"];
    assert_eq!(row["status"], "dead");
    assert!(
        row["payload"].as_str().unwrap().contains("\"n\":1"),
        "{row}"
    );
    let event_id = row["event_id"].as_str().unwrap().to_owned();
    let (status, same) = call(
        &router,
        Method::GET,
        &format!("/admin/outbox/rows/{event_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(only_table(&same)["row"]["id"], dead[1]);
    let (status, missing) = call(&router, Method::GET, "/admin/outbox/rows/999999", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no row `999999`"),
        "{missing}"
    );
    t.cleanup().await;
}

async fn redrive_with_a_dry_run_and_a_confirmation(t: TestDb) {
    let dead = seed(&t, 12, 0).await;
    let router = router(&t);
    let (status, nothing) = call(
        &router,
        Method::POST,
        "/admin/outbox/redrive",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{nothing}");
    assert!(
        nothing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("name the rows to redrive"),
        "{nothing}"
    );

    let (status, dry) = call(
        &router,
        Method::POST,
        "/admin/outbox/redrive",
        Some(json!({"all": true, "dry_run": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(only_table(&dry)["matched"], 12);
    assert_eq!(only_table(&dry)["redriven"], 0);

    let (status, refused) = call(
        &router,
        Method::POST,
        "/admin/outbox/redrive",
        Some(json!({"all": true})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "confirmation_required");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("12 rows"),
        "{refused}"
    );
    let one = outbox()
        .record_by_id(&t.db, dead[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.row.status, OutboxStatus::Dead);

    let (status, by_id) = call(
        &router,
        Method::POST,
        "/admin/outbox/redrive",
        Some(json!({"ids": [dead[0]]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_id}");
    assert_eq!(only_table(&by_id)["redriven"], 1);
    let (status, rest) = call(
        &router,
        Method::POST,
        "/admin/outbox/redrive",
        Some(json!({"all": true, "confirm": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rest}");
    assert_eq!(only_table(&rest)["redriven"], 11);
    let record = outbox()
        .record_by_id(&t.db, dead[5])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.row.status, OutboxStatus::Pending);
    assert_eq!(record.redrive.unwrap().redrive_count, 1);
    t.cleanup().await;
}

async fn purge_and_unblock(t: TestDb) {
    let dead = seed(&t, 2, 0).await;
    // A row of key `conv` waiting for its retry, holding back the one after it.
    let txn = t.db.begin().await.unwrap();
    let mut events = Vec::new();
    for n in 0..2 {
        let env = Envelope::for_event("conv", &Ping { n }).unwrap();
        events.push(env.event_id.to_string());
        outbox().insert(&txn, &env, "topic-a", 3).await.unwrap();
    }
    txn.commit().await.unwrap();
    outbox()
        .record_failure(&t.db, &events[0], "later", true, &RetryPolicy::default())
        .await
        .unwrap();
    let waiting = outbox().find(&t.db, &events[0]).await.unwrap().unwrap().id;
    let router = router(&t);

    let (status, dry) = call(
        &router,
        Method::POST,
        "/admin/outbox/unblock",
        Some(json!({"key": "conv", "dry_run": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(only_table(&dry)["ids"], json!([waiting]));
    assert_eq!(only_table(&dry)["unblocked"], json!([]));
    let (status, done) = call(
        &router,
        Method::POST,
        "/admin/outbox/unblock",
        Some(json!({"key": "conv"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(only_table(&done)["unblocked"], json!([waiting]));
    let row = outbox().find(&t.db, &events[0]).await.unwrap().unwrap();
    assert_eq!(row.status, OutboxStatus::Dead);
    let (status, no_key) = call(
        &router,
        Method::POST,
        "/admin/outbox/unblock",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{no_key}");
    assert!(
        no_key["error"]["message"].as_str().unwrap().contains("key"),
        "{no_key}"
    );

    let (status, dry) = call(
        &router,
        Method::POST,
        "/admin/outbox/purge",
        Some(json!({"older_than": "0s", "statuses": ["dead"], "dry_run": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(only_table(&dry)["matched"], 3);
    let (status, purged) = call(
        &router,
        Method::POST,
        "/admin/outbox/purge",
        Some(json!({"older_than": "0s", "batch_size": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(only_table(&purged)["purged"], 3);
    assert!(outbox()
        .record_by_id(&t.db, dead[0])
        .await
        .unwrap()
        .is_none());
    let (status, pending) = call(
        &router,
        Method::POST,
        "/admin/outbox/purge",
        Some(json!({"older_than": "0s", "statuses": ["pending"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{pending}");
    assert!(
        pending["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`statuses`"),
        "{pending}"
    );
    t.cleanup().await;
}

async fn the_inbox_routes(t: TestDb) {
    let inbox = InboxTable::new("inbox").unwrap();
    let txn = t.db.begin().await.unwrap();
    inbox
        .record(&txn, "c1", "e1", "test.ping", InboxStatus::Handled, None)
        .await
        .unwrap();
    inbox
        .record(
            &txn,
            "c1",
            "e2",
            "test.ping",
            InboxStatus::Dead,
            Some("no handler"),
        )
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let router = router(&t);
    let (status, stats) = call(&router, Method::GET, "/admin/inbox/stats", None).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(only_table(&stats)["consumers"][0]["dead"], 1);
    let (status, rows) = call(
        &router,
        Method::GET,
        "/admin/inbox/rows?status=dead&consumer=c1",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_eq!(only_table(&rows)["rows"][0]["event_id"], "e2");
    let (status, one) = call(&router, Method::GET, "/admin/inbox/rows/e1", None).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(only_table(&one)["rows"][0]["status"], "handled");
    let (status, _) = call(&router, Method::GET, "/admin/inbox/rows/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, purged) = call(
        &router,
        Method::POST,
        "/admin/inbox/purge",
        Some(json!({"older_than": "0s", "status": "handled"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(only_table(&purged)["purged"], 1);
    t.cleanup().await;
}

async fn bad_filters_are_400_with_what_is_wrong(t: TestDb) {
    let router = router(&t);
    for (method, uri, body, needle) in [
        (
            Method::GET,
            "/admin/outbox/rows?status=gone",
            None,
            "`status`: unknown status `gone`",
        ),
        (
            Method::GET,
            "/admin/outbox/rows?older_than=7days",
            None,
            "`older_than`: bad duration",
        ),
        (Method::GET, "/admin/outbox/rows?limit=0", None, "`limit`"),
        (Method::GET, "/admin/outbox/rows?limit=x", None, "limit"),
        (Method::GET, "/admin/outbox/rows?colour=red", None, "colour"),
        (
            Method::GET,
            "/admin/inbox/rows?status=pending",
            None,
            "`status`: unknown status",
        ),
        (
            Method::POST,
            "/admin/outbox/purge",
            Some(json!({"older_than": "soon"})),
            "`older_than`: bad duration",
        ),
        (
            Method::POST,
            "/admin/outbox/purge",
            Some(json!({})),
            "older_than",
        ),
        (
            Method::POST,
            "/admin/outbox/redrive",
            Some(json!({"all": true, "older_than": "1y"})),
            "`older_than`",
        ),
        (
            Method::POST,
            "/admin/inbox/purge",
            Some(json!({"older_than": "1d", "batch_size": 5000})),
            "`batch_size`",
        ),
    ] {
        let (status, answer) = call(&router, method.clone(), uri, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{uri}: {message}");
    }
    t.cleanup().await;
}

async fn a_service_without_an_inbox_says_so(t: TestDb) {
    let credentials = ServiceCredentials::from_pairs([("operator", TOKEN)]).unwrap();
    let router: Router = admin_routes(
        AdminTables {
            db: t.db.clone(),
            outbox: Some(outbox()),
            inbox: None,
        },
        credentials,
    )
    .into();
    let (status, answer) = call(&router, Method::GET, "/admin/inbox/stats", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "no_inbox");
    t.cleanup().await;
}

on_every_backend!(
    every_route_needs_a_service_credential,
    stats_rows_and_one_row,
    redrive_with_a_dry_run_and_a_confirmation,
    purge_and_unblock,
    the_inbox_routes,
    bad_filters_are_400_with_what_is_wrong,
    a_service_without_an_inbox_says_so,
);
