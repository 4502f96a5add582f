//! The whole service, started in-process on every backend with the embedded broker: requests
//! through the HTTP API travel the outbox, the relay, Kafka and the consumer, and are sent once
//! per key to the (fake) webhook, signed.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use smartflow_notification::http::{Accepted, Found};
use smartflow_notification::{Notification, NotificationConfig, RunningNotification};
use smartflow_service::{Secret, LOOPBACK_ANY_PORT, SERVICE_TOKEN_HEADER};
use smartflow_storage::outbox::OutboxTable;
use smartflow_testkit::{get_json, on_every_backend, probe_http, TestDb};

use crate::support::*;

const SECRET: &str = "SEC-service-test";
/// The credential the tests call the API with, as the service `billing`.
const CALLER: &str = "the-billing-services-credential-0123456";

fn config_for(t: &TestDb, fake: &FakeFeishu) -> NotificationConfig {
    let mut config = NotificationConfig::embedded(t.config.url.clone());
    config.service.database_schema = t.config.pg_schema.clone();
    config.topic = t.unique("notifications");
    config.feishu_allowed_targets = fake.prefix();
    config.feishu_webhook_url = Some(fake.url());
    config.feishu_secret = Some(SECRET.into());
    config.feishu_timeout_ms = 2_000;
    config.notify_retry_base_ms = 100;
    config.notify_retry_max_ms = 400;
    config.scan_interval_ms = 100;
    config.service.service_tokens = Some(Secret::new(format!("billing={CALLER}")));
    config
}

async fn start(config: NotificationConfig) -> RunningNotification {
    match Notification::start(config).await {
        Ok(service) => service,
        Err(e) => panic!("the notification service did not start: {e:#}"),
    }
}

async fn post(service: &RunningNotification, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/notifications", service.base_url()))
        .header(SERVICE_TOKEN_HEADER, CALLER)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn find(service: &RunningNotification, channel: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}/v1/notifications", service.base_url()))
        .header(SERVICE_TOKEN_HEADER, CALLER)
        .query(&[("channel", channel), ("dedupe_key", key)])
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

async fn requests_over_http_are_sent_once_per_key(t: TestDb) {
    let fake = FakeFeishu::start(Some(SECRET)).await;
    fake.script([Answer::Status(502)]);
    let mut config = config_for(&t, &fake);
    config.service.admin_addr = Some(LOOPBACK_ANY_PORT);
    let service = start(config).await;

    let request = serde_json::json!({
        "channel": "feishu",
        "title": "New conversation",
        "text": "conversation c-1 has its first message",
        "dedupe_key": "conversation:c-1",
        "user_id": "u-1",
    });
    let mut event_ids = Vec::new();
    for _ in 0..2 {
        let response = post(&service, request.clone()).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted: Accepted = response.json().await.unwrap();
        uuid::Uuid::parse_str(&accepted.event_id).unwrap();
        event_ids.push(accepted.event_id);
    }
    assert_ne!(event_ids[0], event_ids[1]);

    // The first call gets a 502 and the retry scanner sends it again.
    wait_until("the notification is sent", || async {
        let response = find(&service, "feishu", "conversation:c-1").await;
        response.status() == StatusCode::OK
            && response.json::<Found>().await.unwrap().notification.status == "sent"
    })
    .await;
    let found: Found = find(&service, "feishu", "conversation:c-1")
        .await
        .json()
        .await
        .unwrap();
    let view = found.notification;
    assert_eq!(view.attempts, 2, "{view:?}");
    assert_eq!(view.title, "New conversation");
    // The requester is the credential's service, whatever the body says.
    assert_eq!(view.requested_by, "billing");
    assert_eq!(view.user_id.as_deref(), Some("u-1"));
    assert_eq!(view.target, None, "sent to the default webhook");
    assert!(view.sent_at.is_some());
    assert!(event_ids.contains(view.source_event_id.as_ref().unwrap()));

    let outbox = OutboxTable::new("notification_outbox").unwrap();
    wait_until("both requests are consumed", || async {
        outbox.stats(service.db()).await.unwrap().consumed == 2
    })
    .await;
    // The 502 and the successful retry; the duplicate request sent nothing.
    assert_eq!(fake.requests().len(), 2, "{:?}", fake.texts());
    assert_eq!(fake.count("conversation c-1 has its first message"), 2);
    for body in fake.requests() {
        assert!(body["sign"].is_string(), "requests are signed: {body}");
    }

    // Errors are JSON with a code.
    assert_eq!(
        error_code(find(&service, "feishu", "no-such-key").await).await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
    let mut sms = request.clone();
    sms["channel"] = "sms".into();
    assert_eq!(
        error_code(post(&service, sms).await).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );
    let mut outside = request.clone();
    outside["target"] = "https://example.com/hook".into();
    assert_eq!(
        error_code(post(&service, outside).await).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );
    let mut forged = request.clone();
    forged["requested_by"] = "agent".into();
    assert_eq!(
        error_code(post(&service, forged).await).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );
    // Without a credential (or with a wrong one) the API is closed, reading and writing.
    for credential in [None, Some("the-billing-services-credential-012345X")] {
        let http = reqwest::Client::new();
        let mut read = http
            .get(format!("{}/v1/notifications", service.base_url()))
            .query(&[("channel", "feishu"), ("dedupe_key", "conversation:c-1")]);
        let mut write = http
            .post(format!("{}/v1/notifications", service.base_url()))
            .json(&request);
        if let Some(credential) = credential {
            read = read.header(SERVICE_TOKEN_HEADER, credential);
            write = write.header(SERVICE_TOKEN_HEADER, credential);
        }
        for refused in [read, write] {
            assert_eq!(
                error_code(refused.send().await.unwrap()).await,
                (
                    StatusCode::UNAUTHORIZED,
                    "service_credential_required".to_owned()
                )
            );
        }
    }
    let missing = reqwest::Client::new()
        .get(format!("{}/v1/notifications", service.base_url()))
        .header(SERVICE_TOKEN_HEADER, CALLER)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(missing).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );
    let health = reqwest::get(format!("{}/healthz", service.base_url()))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // `/metrics` is on the admin address only, and only for a service credential.
    let admin = service
        .admin_url()
        .expect("an admin address was configured");
    assert_eq!(
        error_code(
            reqwest::get(format!("{}/metrics", service.base_url()))
                .await
                .unwrap()
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
    assert_eq!(
        error_code(reqwest::get(format!("{admin}/metrics")).await.unwrap()).await,
        (
            StatusCode::UNAUTHORIZED,
            "service_credential_required".to_owned()
        )
    );
    // `/openapi.json` documents every route it serves, each with its methods, and nothing else;
    // `/metrics` and the admin API are on the admin address.
    let doc = get_json(format!("{}/openapi.json", service.base_url())).await;
    let listed = smartflow_service::openapi::documented(&doc);
    for method in [Method::GET, Method::POST] {
        assert!(
            listed.contains(&(method, "/v1/notifications".to_owned())),
            "{doc}"
        );
    }
    let wrong = smartflow_service::openapi::mismatches(&doc, async |method, path| {
        let on_admin = path == "/metrics" || path.starts_with("/admin/");
        let base = if on_admin {
            admin.clone()
        } else {
            service.base_url()
        };
        probe_http(method, format!("{base}{path}")).await
    })
    .await;
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Every documented body has its schema, and the references resolve.
    use smartflow_service::openapi::{request_schema, response_schema, schema_problems};
    let problems = schema_problems(&doc);
    assert!(problems.is_empty(), "{problems:#?}");
    let post = request_schema(&doc, &Method::POST, "/v1/notifications");
    for field in ["channel", "text", "dedupe_key"] {
        assert!(
            post["required"].as_array().unwrap().contains(&field.into()),
            "{post}"
        );
    }
    let found = response_schema(&doc, &Method::GET, "/v1/notifications", 200);
    assert_eq!(
        found["properties"]["notification"]["$ref"], "#/components/schemas/NotificationView",
        "{found}"
    );
    assert_eq!(
        doc["paths"]["/v1/notifications"]["post"]["security"],
        serde_json::json!([{"serviceToken": []}])
    );

    // So is the admin API.
    assert_eq!(
        error_code(
            reqwest::get(format!("{}/admin/outbox/stats", service.base_url()))
                .await
                .unwrap()
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
    let stats: serde_json::Value = reqwest::Client::new()
        .get(format!("{admin}/admin/outbox/stats"))
        .header(SERVICE_TOKEN_HEADER, CALLER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["tables"][0]["table"], "notification_outbox",
        "{stats}"
    );
    let admin_health = reqwest::get(format!("{admin}/healthz")).await.unwrap();
    assert_eq!(admin_health.status(), StatusCode::OK);
    let metrics = reqwest::Client::new()
        .get(format!("{admin}/metrics"))
        .header(SERVICE_TOKEN_HEADER, CALLER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = smartflow_testkit::metrics::Scrape::parse(&metrics);
    let named = ("service", "notification");
    assert_eq!(
        metrics.value(
            "smartflow_notification_records",
            &[named, ("status", "sent")]
        ),
        1.0
    );
    // The backlog of its outbox and the bus's counters, as every service reports them.
    let table = ("table", "notification_outbox");
    metrics.value(
        "smartflow_outbox_rows",
        &[named, table, ("status", "pending")],
    );
    metrics.value(
        "smartflow_outbox_oldest_pending_age_seconds",
        &[named, table],
    );
    metrics.value("smartflow_bus_published_total", &[named]);
    assert_eq!(
        metrics.value(
            "smartflow_component_healthy",
            &[named, ("component", "relay notification_outbox")]
        ),
        1.0
    );

    tokio::time::timeout(PATIENCE, service.shutdown())
        .await
        .expect("shutdown returns");
    t.cleanup().await;
}

on_every_backend!(requests_over_http_are_sent_once_per_key);
