use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use smartflow_service::Secret;
pub use smartflow_service::SERVICE_TOKEN_HEADER;
use smartflow_storage::users;
use smartflow_testkit::TestDb;
use smartflow_userauth::http::{MeResponse, RegisterResponse, TokenResponse};
use smartflow_userauth::jwt::{AccessTokens, SigningKey};
use smartflow_userauth::UserauthClient;
use smartflow_userauth::{RunningUserauth, Userauth, UserauthConfig};
use smartflow_userauth_contracts::AccessTokenVerifier;

/// Bound on waiting for background work (the embedded broker's group join alone takes about
/// 3 s). Reached only when a test fails; no test asserts how long anything took.
pub use smartflow_testkit::PATIENCE;

/// The Ed25519 key every test service signs with (made with `openssl genpkey -algorithm
/// ed25519`), so tests can sign tokens of their own with it.
pub const SIGNING_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIKxeeFFGCWRNDUYQrljdzFm4Hee/SE2jnmrGHmhVhwZ0
-----END PRIVATE KEY-----
";
pub const PASSWORD: &str = "correct horse 9";
pub const QUOTA: i64 = 1000;
/// The service credential the tests call `GET /v1/auth/authorize` with, as the agent does.
pub const AGENT_CREDENTIAL: &str = "the-userauth-tests-agent-credential-0123";

/// A userauth on the test's database, an OS-chosen port and its own embedded broker, with light
/// Argon2 parameters so tests do not spend their time hashing.
pub fn config_for(t: &TestDb) -> UserauthConfig {
    let mut config = UserauthConfig::embedded(t.config.url.clone());
    config.service.database_schema = t.config.pg_schema.clone();
    config.signing.signing_key = Some(Secret::new(SIGNING_KEY));
    config.password_hash_memory_kib = 256;
    config.password_hash_iterations = 1;
    config.default_token_quota = QUOTA;
    config.service.shutdown_grace_secs = 10;
    config.service.service_tokens = Some(Secret::new(format!("agent={AGENT_CREDENTIAL}")));
    // The suites log in a lot from one address; `throttling.rs` proves the limits bite.
    config.auth_address_attempts_per_minute = 0;
    config.auth_account_attempts_per_minute = 0;
    config
}

pub async fn start(config: UserauthConfig) -> RunningUserauth {
    match Userauth::start(config).await {
        Ok(running) => running,
        Err(e) => panic!("userauth did not start: {e:#}"),
    }
}

/// Stops userauth and drops the test database; a hang fails the test instead of stalling.
pub async fn finish(app: RunningUserauth, t: TestDb) {
    tokio::time::timeout(PATIENCE, app.shutdown())
        .await
        .expect("shutdown returns");
    t.cleanup().await;
}

/// The key the test services sign with.
pub fn our_keys() -> AccessTokens {
    AccessTokens::new(&signing_key(), Duration::from_secs(900))
}

pub fn signing_key() -> SigningKey {
    SigningKey::parse(SIGNING_KEY).expect("the test key parses")
}

/// The client another service checks tokens with: our public key, the agent's credential.
pub fn userauth_client(base_url: &str) -> UserauthClient {
    let verifier = AccessTokenVerifier::new(signing_key().public_key().clone());
    UserauthClient::new(
        base_url,
        verifier,
        Duration::from_secs(10),
        AGENT_CREDENTIAL,
    )
    .expect("the client builds")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub fn url(app: &RunningUserauth, path: &str) -> String {
    format!("{}{path}", app.base_url())
}

pub async fn post_json(app: &RunningUserauth, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(url(app, path))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `POST path` with the bearer token and a JSON body.
pub async fn post_with(
    app: &RunningUserauth,
    path: &str,
    access_token: &str,
    body: Value,
) -> reqwest::Response {
    client()
        .post(url(app, path))
        .bearer_auth(access_token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `GET path` with the bearer token; `/v1/auth/authorize`, a service's call, as the agent.
pub async fn get_with(app: &RunningUserauth, path: &str, access_token: &str) -> reqwest::Response {
    let mut request = client().get(url(app, path)).bearer_auth(access_token);
    if path == "/v1/auth/authorize" {
        request = request.header(SERVICE_TOKEN_HEADER, AGENT_CREDENTIAL);
    }
    request.send().await.unwrap()
}

pub async fn register(app: &RunningUserauth, email: &str) -> RegisterResponse {
    let response = post_json(
        app,
        "/v1/auth/register",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{text}");
    serde_json::from_str(&text).unwrap()
}

pub async fn login(app: &RunningUserauth, email: &str) -> TokenResponse {
    let response = post_json(
        app,
        "/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

pub async fn refresh(app: &RunningUserauth, refresh_token: &str) -> reqwest::Response {
    post_json(
        app,
        "/v1/auth/refresh",
        json!({"refresh_token": refresh_token}),
    )
    .await
}

pub async fn refresh_ok(app: &RunningUserauth, refresh_token: &str) -> TokenResponse {
    let response = refresh(app, refresh_token).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

pub async fn me(app: &RunningUserauth, access_token: &str) -> MeResponse {
    let response = get_with(app, "/v1/auth/me", access_token).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// `POST path` with the bearer token and no body.
pub async fn post_bearer(
    app: &RunningUserauth,
    path: &str,
    access_token: &str,
) -> reqwest::Response {
    client()
        .post(url(app, path))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
}

pub async fn logout(app: &RunningUserauth, access_token: &str) -> reqwest::Response {
    post_bearer(app, "/v1/auth/logout", access_token).await
}

pub async fn logout_everywhere(app: &RunningUserauth, access_token: &str) -> reqwest::Response {
    post_bearer(app, "/v1/auth/logout-all", access_token).await
}

/// The status, `error.code` and `error.message` of an error response; fails on any other shape.
pub async fn error_of(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("error bodies are JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
        .to_owned();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
        .to_owned();
    (status, code, message)
}

/// Asserts a response is the given error.
pub async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str) {
    let (got_status, got_code, message) = error_of(response).await;
    assert_eq!((got_status, got_code.as_str()), (status, code), "{message}");
}

/// Sets a user's quota directly, as an operator would.
pub async fn set_quota(app: &RunningUserauth, user_id: &str, quota: i64) {
    assert!(users::set_quota(app.db(), user_id, quota).await.unwrap());
}

/// A fresh email for this test.
pub fn email(t: &TestDb, name: &str) -> String {
    format!("{}@example.com", t.unique(name))
}

pub use smartflow_testkit::wait_until;

/// Runs `a` and `b` at once, released together by a barrier so they really overlap, and returns
/// both outputs.
pub async fn race_two<A, B>(a: A, b: B) -> (A::Output, B::Output)
where
    A: Future + Send + 'static,
    A::Output: Send + 'static,
    B: Future + Send + 'static,
    B::Output: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let (wait_a, wait_b) = (barrier.clone(), barrier);
    let a = tokio::spawn(async move {
        wait_a.wait().await;
        a.await
    });
    let b = tokio::spawn(async move {
        wait_b.wait().await;
        b.await
    });
    (a.await.unwrap(), b.await.unwrap())
}

/// Runs `n` copies of `make()` at once, released together by a barrier so they really overlap,
/// and returns their outputs.
pub async fn race<F, Fut, T>(n: usize, make: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let work = make();
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}
