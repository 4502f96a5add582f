//! `/openapi.json`: the skeleton's routes (`/healthz`, `/metrics`, `/openapi.json`, the admin
//! API) are documented with their methods, and everything documented is routed.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use smartflow_bus::Metrics;
use smartflow_service::admin::AdminTables;
use smartflow_service::endpoints::{with_service_endpoints, Observed};
use smartflow_service::openapi::{document, documented, mismatches, skeleton_operations};
use smartflow_service::ServiceCredentials;
use smartflow_storage::inbox::InboxTable;
use smartflow_storage::outbox::OutboxTable;
use smartflow_testkit::{Backend, TestDb};
use tower::ServiceExt as _;

/// The answer's status and its error message, if it has one.
async fn call(router: &Router, method: Method, path: String) -> (StatusCode, Option<String>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
    (status, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_skeletons_routes_are_documented_and_routed() {
    let t = TestDb::new(Backend::Sqlite).await;
    let doc = document("test", &skeleton_operations());
    let (router, _) = with_service_endpoints(
        Router::new(),
        Observed {
            db: t.db.clone(),
            metrics: Arc::new(Metrics::default()),
            outboxes: Vec::new(),
            gauges: None,
            openapi: Arc::new(doc.clone()),
        },
        AdminTables {
            db: t.db.clone(),
            outbox: Some(OutboxTable::new("agent_outbox").unwrap()),
            inbox: Some(InboxTable::default()),
        },
        ServiceCredentials::default(),
        false,
    );
    let (status, _) = call(&router, Method::GET, "/openapi.json".into()).await;
    assert_eq!(status, StatusCode::OK);
    let listed = documented(&doc);
    for (method, path) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/metrics"),
        (Method::GET, "/openapi.json"),
        (Method::POST, "/admin/outbox/unblock"),
        (Method::GET, "/admin/inbox/rows/{event_id}"),
    ] {
        assert!(
            listed.contains(&(method.clone(), path.to_owned())),
            "{method} {path}"
        );
    }
    assert_eq!(listed.len(), 14, "{listed:?}");
    let wrong = mismatches(&doc, async |method, path| call(&router, method, path).await).await;
    assert!(wrong.is_empty(), "{wrong:#?}");
    // A document naming a route that is not there is caught.
    let mut more = skeleton_operations();
    more.push(smartflow_service::openapi::Operation::get("/nowhere", "x"));
    let wrong = mismatches(&document("test", &more), async |method, path| {
        call(&router, method, path).await
    })
    .await;
    assert_eq!(wrong.len(), 1, "{wrong:#?}");
    t.cleanup().await;
}
