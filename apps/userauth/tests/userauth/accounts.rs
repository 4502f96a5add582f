//! Registering, logging in, `/me`, input checks and error shapes.

use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait as _;
use serde_json::{json, Value};
use smartflow_storage::users;
use smartflow_testkit::{get_json, on_every_backend, probe_http, TestDb};

use crate::support::*;

async fn register_login_and_me(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "ada");
    let registered = register(&app, &format!("  {}  ", address.to_uppercase())).await;
    assert_eq!(registered.email, address, "stored trimmed and lowercased");
    uuid::Uuid::parse_str(&registered.user_id).expect("user ids are UUIDs");

    let stored = users::find_by_id(app.db(), &registered.user_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "{}",
        stored.password_hash
    );
    assert!(!stored.password_hash.contains(PASSWORD));

    let tokens = login(&app, &address.to_uppercase()).await;
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);
    assert_ne!(tokens.access_token, tokens.refresh_token);
    let claims = our_keys().decode(&tokens.access_token).unwrap();
    assert_eq!(claims.sub, registered.user_id);
    assert!(!claims.jti.is_empty() && claims.exp > claims.iat);

    let profile = me(&app, &tokens.access_token).await;
    assert_eq!(profile.user_id, registered.user_id);
    assert_eq!(profile.email, address);
    assert_eq!((profile.token_usage, profile.token_quota), (0, QUOTA));

    let health = client().get(url(&app, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    finish(app, t).await;
}

/// The skeleton's endpoints, as every service answers them: `/healthz` naming the consumer,
/// `/metrics` with the consumer's counters and health, JSON for unknown paths and methods.
async fn health_and_metrics_are_the_skeletons(t: TestDb) {
    let app = start(config_for(&t)).await;
    let health = client().get(url(&app, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let body: Value = health.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["database"].as_str()),
        (Some("ok"), Some("ok")),
        "{body}"
    );
    let components = body["components"].as_array().unwrap();
    assert!(
        components
            .iter()
            .any(|c| c["name"] == "consumer userauth" && c["healthy"] == true),
        "{body}"
    );

    // `/openapi.json` documents every route it serves, each with its methods, and nothing else.
    let doc = get_json(url(&app, "/openapi.json")).await;
    let listed = smartflow_service::openapi::documented(&doc);
    for (method, path) in [
        (Method::POST, "/v1/auth/login"),
        (Method::GET, "/v1/auth/authorize"),
        (Method::GET, "/admin/inbox/stats"),
    ] {
        assert!(listed.contains(&(method, path.to_owned())), "{path}: {doc}");
    }
    let wrong = smartflow_service::openapi::mismatches(&doc, async |method, path| {
        probe_http(method, url(&app, &path)).await
    })
    .await;
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Every documented body has its schema, and the references resolve.
    use smartflow_service::openapi::{request_schema, response_schema, schema_problems};
    let problems = schema_problems(&doc);
    assert!(problems.is_empty(), "{problems:#?}");
    let login = request_schema(&doc, &Method::POST, "/v1/auth/login");
    for field in ["email", "password"] {
        assert!(login["properties"].get(field).is_some(), "{login}");
    }
    let tokens = response_schema(&doc, &Method::POST, "/v1/auth/login", 200);
    for field in ["access_token", "refresh_token", "expires_in"] {
        assert!(tokens["properties"].get(field).is_some(), "{tokens}");
    }
    let authorized = response_schema(&doc, &Method::GET, "/v1/auth/authorize", 200);
    assert!(
        authorized["properties"].get("token_quota").is_some(),
        "{authorized}"
    );
    assert_eq!(
        doc["paths"]["/v1/auth/me"]["get"]["security"],
        serde_json::json!([{"bearerAuth": []}])
    );

    // Metrics are for services and operators only.
    let anonymous = client().get(url(&app, "/metrics")).send().await.unwrap();
    assert_error(
        anonymous,
        StatusCode::UNAUTHORIZED,
        "service_credential_required",
    )
    .await;
    let metrics = client()
        .get(url(&app, "/metrics"))
        .header(SERVICE_TOKEN_HEADER, AGENT_CREDENTIAL)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let metrics = smartflow_testkit::metrics::Scrape::parse(&metrics.text().await.unwrap());
    let service = ("service", "userauth");
    assert_eq!(
        metrics.kind("smartflow_bus_consumed_total"),
        Some(smartflow_testkit::metrics::Kind::Counter)
    );
    assert_eq!(
        metrics.value(
            "smartflow_component_healthy",
            &[service, ("component", "consumer userauth")]
        ),
        1.0
    );
    assert_eq!(
        metrics.samples("smartflow_outbox_rows", &[]).count(),
        0,
        "userauth owns no outbox"
    );

    let unknown = client().get(url(&app, "/v1/nowhere")).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let wrong_method = client().delete(url(&app, "/metrics")).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = wrong_method.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    finish(app, t).await;
}

async fn wrong_password_and_unknown_user_answer_alike(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "bob");
    register(&app, &address).await;
    let wrong = post_json(
        &app,
        "/v1/auth/login",
        json!({"email": address, "password": "wrong horse 9"}),
    )
    .await;
    let unknown = post_json(
        &app,
        "/v1/auth/login",
        json!({"email": email(&t, "nobody"), "password": PASSWORD}),
    )
    .await;
    let (wrong_status, wrong_headers) = (wrong.status(), wrong.headers().clone());
    let (unknown_status, unknown_headers) = (unknown.status(), unknown.headers().clone());
    let wrong_body: Value = wrong.json().await.unwrap();
    let unknown_body: Value = unknown.json().await.unwrap();
    assert_eq!(wrong_status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_status, wrong_status);
    assert_eq!(wrong_body, unknown_body, "the same body for both");
    assert_eq!(wrong_body["error"]["code"], "invalid_credentials");
    assert_eq!(
        wrong_headers.get("content-length"),
        unknown_headers.get("content-length")
    );
    finish(app, t).await;
}

async fn an_email_registers_once_in_any_case_even_when_racing(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "carol");
    register(&app, &address).await;
    let again = post_json(
        &app,
        "/v1/auth/register",
        json!({"email": address.to_uppercase(), "password": PASSWORD}),
    )
    .await;
    assert_error(again, StatusCode::CONFLICT, "email_taken").await;

    // Five sign-ups of one new address at once: the unique index lets exactly one through.
    let racing = email(&t, "dave");
    let base = app.base_url();
    let statuses = race(5, || {
        let body = json!({"email": racing, "password": PASSWORD});
        let url = format!("{base}/v1/auth/register");
        async move {
            let response = client().post(url).json(&body).send().await.unwrap();
            let status = response.status();
            let code = if status == StatusCode::CREATED {
                String::new()
            } else {
                error_of(response).await.1
            };
            (status, code)
        }
    })
    .await;
    let created = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|(s, c)| *s == StatusCode::CREATED
            || (*s == StatusCode::CONFLICT && c == "email_taken")),
        "{statuses:?}"
    );
    finish(app, t).await;
}

async fn bad_input_gets_a_clear_4xx(t: TestDb) {
    let app = start(config_for(&t)).await;
    let long_email = format!("{}@example.com", "a".repeat(300));
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "/v1/auth/register",
            json!({"email": "", "password": PASSWORD}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/register",
            json!({"email": "a@example.com", "password": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/register",
            json!({"email": long_email, "password": PASSWORD}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/register",
            json!({"email": "a@example.com", "password": "a1".repeat(100)}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/register",
            json!({"email": "not-an-email", "password": PASSWORD}),
            StatusCode::BAD_REQUEST,
            "invalid_email",
        ),
        (
            "/v1/auth/register",
            json!({"email": "a@localhost", "password": PASSWORD}),
            StatusCode::BAD_REQUEST,
            "invalid_email",
        ),
        (
            "/v1/auth/register",
            json!({"email": "a@example.com", "password": "short1"}),
            StatusCode::BAD_REQUEST,
            "weak_password",
        ),
        (
            "/v1/auth/register",
            json!({"email": "a@example.com", "password": "lettersonly"}),
            StatusCode::BAD_REQUEST,
            "weak_password",
        ),
        (
            "/v1/auth/register",
            json!({"email": "a@example.com"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/register",
            json!({"email": 5, "password": PASSWORD}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/login",
            json!({"email": "a@example.com", "password": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/login",
            json!({"email": " ", "password": PASSWORD}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/refresh",
            json!({"refresh_token": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/refresh",
            json!({"refresh_token": "x".repeat(5000)}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/auth/refresh",
            json!({}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (path, body, status, code) in cases {
        let (got_status, got_code, message) =
            error_of(post_json(&app, path, body.clone()).await).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{path} {body}: {message}"
        );
        assert!(!message.is_empty());
    }

    let raw = |path: &str, body: &'static str, content_type: Option<&'static str>| {
        let mut request = client().post(url(&app, path)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request.send()
    };
    for (body, content_type) in [
        (
            r#"{"email": "a@example.com", "password":"#,
            Some("application/json"),
        ),
        ("not json at all", Some("application/json")),
        (
            r#"{"email": "a@example.com", "password": "correct horse 9"}"#,
            None,
        ),
    ] {
        let response = raw("/v1/auth/register", body, content_type).await.unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let huge = format!(
        r#"{{"email": "a@example.com", "password": "{}"}}"#,
        "x".repeat(20_000)
    );
    let response = client()
        .post(url(&app, "/v1/auth/register"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let response = client().get(url(&app, "/v1/auth/me")).send().await.unwrap();
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer")
    );
    assert_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;
    let response = client()
        .get(url(&app, "/v1/auth/me"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;
    let response = client()
        .get(url(&app, "/v1/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = client()
        .get(url(&app, "/v1/auth/login"))
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    finish(app, t).await;
}

async fn internal_errors_are_logged_not_shown(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "erin");
    register(&app, &address).await;
    let tokens = login(&app, &address).await;
    // A broken database: the blacklist table every token check reads is gone.
    t.db.execute_unprepared("DROP TABLE revoked_access_tokens")
        .await
        .unwrap();
    let response = get_with(&app, "/v1/auth/me", &tokens.access_token).await;
    let (status, code, message) = error_of(response).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal")
    );
    assert_eq!(
        message, "internal error",
        "no table names, SQL or driver text"
    );
    finish(app, t).await;
}

on_every_backend!(
    register_login_and_me,
    wrong_password_and_unknown_user_answer_alike,
    an_email_registers_once_in_any_case_even_when_racing,
    bad_input_gets_a_clear_4xx,
    internal_errors_are_logged_not_shown,
    health_and_metrics_are_the_skeletons,
);
