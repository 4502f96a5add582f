//! `/openapi.json`: the skeleton's routes (`/healthz`, `/metrics`, `/openapi.json`, the admin
//! API) are documented with their methods and bodies, and everything documented is routed.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use smartflow_bus::Metrics;
use smartflow_service::admin::AdminTables;
use smartflow_service::endpoints::{with_service_endpoints, Observed};
use smartflow_service::openapi::{
    document, documented, mismatches, request_schema, response_schema, schema_problems, OpenApi,
};
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

/// What the router serves at `/openapi.json`.
async fn served(router: &Router) -> Value {
    let request = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_skeletons_routes_are_documented_and_routed() {
    let t = TestDb::new(Backend::Sqlite).await;
    let (router, _) = with_service_endpoints(
        Router::new(),
        Observed {
            db: t.db.clone(),
            metrics: Arc::new(Metrics::default()),
            outboxes: Vec::new(),
            gauges: None,
            openapi: document("test", OpenApi::default()),
        },
        AdminTables {
            db: t.db.clone(),
            outbox: Some(OutboxTable::new("agent_outbox").unwrap()),
            inbox: Some(InboxTable::default()),
        },
        ServiceCredentials::default(),
        false,
    );
    let doc = served(&router).await;
    assert_eq!(doc["info"]["title"], "smartflow test");
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
    let mut more = doc.clone();
    more["paths"]["/nowhere"] = serde_json::json!({"get": {"responses": {}}});
    let wrong = mismatches(&more, async |method, path| {
        call(&router, method, path).await
    })
    .await;
    assert_eq!(wrong.len(), 1, "{wrong:#?}");

    // Every body is described, every failure is an ErrorBody, every reference resolves.
    let problems = schema_problems(&doc);
    assert!(problems.is_empty(), "{problems:#?}");
    let health = response_schema(&doc, &Method::GET, "/healthz", 200);
    for field in ["status", "database", "components"] {
        assert!(health["properties"].get(field).is_some(), "{health}");
    }
    let redrive = request_schema(&doc, &Method::POST, "/admin/outbox/redrive");
    for field in ["ids", "all", "dry_run", "confirm"] {
        assert!(redrive["properties"].get(field).is_some(), "{redrive}");
    }
    let error = response_schema(&doc, &Method::GET, "/metrics", 401);
    assert_eq!(error["required"], serde_json::json!(["error"]), "{error}");
    assert_eq!(
        doc["paths"]["/metrics"]["get"]["security"],
        serde_json::json!([{"serviceToken": []}])
    );
    let rows = &doc["paths"]["/admin/outbox/rows"]["get"]["parameters"];
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "key" && p["in"] == "query"),
        "{rows}"
    );
    t.cleanup().await;
}
