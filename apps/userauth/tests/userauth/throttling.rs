//! Anti-automation: log-in, registration and refresh are rate limited per client address and
//! per account (429 `rate_limited` with `Retry-After`), and `GET /v1/auth/authorize` answers
//! services only. The other suites switch the limits off; these prove each one bites.

use reqwest::StatusCode;
use serde_json::json;
use smartflow_testkit::{on_every_backend, TestDb};
use smartflow_userauth::RunningUserauth;

use crate::support::*;

/// Asserts `response` is the 429 of a limit, with a `Retry-After` of at least a second.
async fn assert_throttled(response: reqwest::Response) {
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let retry_after: u64 = retry_after
        .expect("a 429 says when to come back")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry_after >= 1, "{retry_after}");
}

/// A log-in attempt with `password`.
async fn log_in_with(app: &RunningUserauth, email: &str, password: &str) -> reqwest::Response {
    post_json(
        app,
        "/v1/auth/login",
        json!({"email": email, "password": password}),
    )
    .await
}

/// A guess at `email`'s password, refused as a wrong password (not yet as too many).
async fn guess(app: &RunningUserauth, email: &str) {
    let response = log_in_with(app, email, "not the password 1").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

async fn one_address_gets_its_budget_per_route(t: TestDb) {
    let mut config = config_for(&t);
    config.auth_address_attempts_per_minute = 3;
    let app = start(config).await;
    let alice = email(&t, "alice");

    // Registration: three accounts from one address, then no more.
    register(&app, &alice).await;
    register(&app, &email(&t, "bob")).await;
    register(&app, &email(&t, "carol")).await;
    let fourth = post_json(
        &app,
        "/v1/auth/register",
        json!({"email": email(&t, "dave"), "password": PASSWORD}),
    )
    .await;
    assert_throttled(fourth).await;

    // Log-in has its own budget; wrong passwords spend it too.
    guess(&app, &alice).await;
    guess(&app, &email(&t, "bob")).await;
    let tokens = login(&app, &alice).await;
    assert_throttled(log_in_with(&app, &alice, PASSWORD).await).await;

    // So has refresh.
    let tokens = refresh_ok(&app, &tokens.refresh_token).await;
    let tokens = refresh_ok(&app, &tokens.refresh_token).await;
    assert_error(
        refresh(&app, "never-issued").await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    assert_throttled(refresh(&app, &tokens.refresh_token).await).await;

    // The rest of the API is not throttled.
    me(&app, &tokens.access_token).await;
    finish(app, t).await;
}

async fn one_account_gets_its_budget_whatever_the_address(t: TestDb) {
    let mut config = config_for(&t);
    config.auth_account_attempts_per_minute = 2;
    let app = start(config).await;
    let alice = email(&t, "alice");
    let bob = email(&t, "bob");
    register(&app, &alice).await;
    register(&app, &bob).await;

    // Guesses at Alice's password spend her budget; then even the right one waits.
    guess(&app, &alice).await;
    let tokens = login(&app, &alice).await;
    assert_throttled(log_in_with(&app, &alice.to_uppercase(), PASSWORD).await).await;
    // Bob is another account.
    login(&app, &bob).await;

    // Refreshes count per user, across the rotated tokens of her session.
    let tokens = refresh_ok(&app, &tokens.refresh_token).await;
    let tokens = refresh_ok(&app, &tokens.refresh_token).await;
    assert_throttled(refresh(&app, &tokens.refresh_token).await).await;
    finish(app, t).await;
}

async fn authorize_answers_services_only(t: TestDb) {
    let app = start(config_for(&t)).await;
    let alice = email(&t, "alice");
    register(&app, &alice).await;
    let tokens = login(&app, &alice).await;
    for credential in [None, Some("the-userauth-tests-agent-credential-012X")] {
        let mut request = client()
            .get(url(&app, "/v1/auth/authorize"))
            .bearer_auth(&tokens.access_token);
        if let Some(credential) = credential {
            request = request.header(SERVICE_TOKEN_HEADER, credential);
        }
        assert_error(
            request.send().await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "service_credential_required",
        )
        .await;
    }
    let authorized = get_with(&app, "/v1/auth/authorize", &tokens.access_token).await;
    assert_eq!(authorized.status(), StatusCode::OK);
    // The user's own routes need no credential.
    me(&app, &tokens.access_token).await;
    finish(app, t).await;
}

on_every_backend!(
    one_address_gets_its_budget_per_route,
    one_account_gets_its_budget_whatever_the_address,
    authorize_answers_services_only,
);
