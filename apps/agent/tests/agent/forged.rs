//! A stranger answering on userauth's address cannot make the agent accept a token: the agent
//! verifies every token with userauth's public key first, so a forged, foreign, `alg: none`,
//! algorithm-confused, tampered or expired token is a 401 before any request, and the fake
//! userauth below, which answers 200 to anything, never decides it. A token the agent can
//! verify is still only ever the token's user: an answer about someone else is refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use smartflow_agent::RunningAgent;
use smartflow_testkit::{on_every_backend, TestDb};
use smartflow_userauth::jwt::{AccessClaims, AccessTokens, SigningKey, AUDIENCE, ISSUER};

use crate::behind_userauth::{call, AGENT_AT_USERAUTH};
use crate::support::*;

/// A "userauth" that vouches for anyone: 200 with `user_id` set to whoever it is told, to every
/// request, counting them.
#[derive(Clone, Default)]
struct Vouching {
    requests: Arc<AtomicUsize>,
    answers_for: Arc<Mutex<String>>,
}

impl Vouching {
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(vouch).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn answer_for(&self, user_id: &str) {
        *self.answers_for.lock().unwrap() = user_id.to_owned();
    }
}

async fn vouch(State(fake): State<Vouching>) -> Json<Value> {
    fake.requests.fetch_add(1, Ordering::SeqCst);
    let user_id = fake.answers_for.lock().unwrap().clone();
    Json(json!({
        "user_id": user_id,
        "email": "anyone@example.com",
        "token_usage": 0,
        "token_quota": 1_000_000_000,
    }))
}

fn claims_of(user_id: &str) -> AccessClaims {
    let now = smartflow_storage::now_millis() / 1000;
    AccessClaims {
        sub: user_id.to_owned(),
        jti: "jti-1".to_owned(),
        sid: "sid-1".to_owned(),
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        iat: now,
        exp: now + 600,
    }
}

fn assemble(header: &Value, claims: &AccessClaims, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap())
    )
}

/// Every token a stranger could make without userauth's private key, named for the failure
/// messages, with the error code the agent answers it with.
fn forgeries(ours: &SigningKey) -> Vec<(&'static str, String, &'static str)> {
    let tokens = AccessTokens::new(ours, Duration::from_secs(600));
    let kid = ours.public_key().kid().to_owned();
    let mallory = claims_of("mallory");
    let other_key = SigningKey::generate();

    let foreign = AccessTokens::new(&other_key, Duration::from_secs(600))
        .sign(&mallory)
        .unwrap();
    // Another key's signature under our key's id.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.clone());
    let other_der = pkcs8_of(&other_key);
    let foreign_as_ours =
        jsonwebtoken::encode(&header, &mallory, &EncodingKey::from_ed_der(&other_der)).unwrap();
    let none = assemble(
        &json!({"alg": "none", "typ": "JWT", "kid": kid}),
        &mallory,
        "",
    );
    // The algorithm-confusion attack: HS256 with the public key, which anyone may know, as the HMAC secret.
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some(kid.clone());
    let confused_pem = jsonwebtoken::encode(
        &hs256,
        &mallory,
        &EncodingKey::from_secret(ours.public_key().to_pem().as_bytes()),
    )
    .unwrap();
    let confused_raw = jsonwebtoken::encode(
        &hs256,
        &mallory,
        &EncodingKey::from_secret(ours.public_key().bytes()),
    )
    .unwrap();
    // A token userauth signed for alice, its payload rewritten to name mallory.
    let alices = tokens.sign(&claims_of("alice")).unwrap();
    let parts: Vec<&str> = alices.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_string(&mallory).unwrap()),
        parts[2]
    );
    let mut expired = claims_of("alice");
    expired.iat -= 1200;
    expired.exp = expired.iat + 600;
    let mut wrong_issuer = claims_of("alice");
    wrong_issuer.iss = "someone-else".to_owned();
    let mut wrong_audience = claims_of("alice");
    wrong_audience.aud = "another-service".to_owned();
    vec![
        ("another key", foreign, "invalid_token"),
        (
            "another key under our kid",
            foreign_as_ours,
            "invalid_token",
        ),
        ("alg none", none, "invalid_token"),
        (
            "HS256 keyed with the public key's PEM",
            confused_pem,
            "invalid_token",
        ),
        (
            "HS256 keyed with the public key's bytes",
            confused_raw,
            "invalid_token",
        ),
        ("tampered payload", tampered, "invalid_token"),
        ("expired", tokens.sign(&expired).unwrap(), "token_expired"),
        (
            "wrong issuer",
            tokens.sign(&wrong_issuer).unwrap(),
            "invalid_token",
        ),
        (
            "wrong audience",
            tokens.sign(&wrong_audience).unwrap(),
            "invalid_token",
        ),
        ("not a JWT", "not.a.jwt".to_owned(), "invalid_token"),
        ("oversized", "a".repeat(5000), "invalid_token"),
    ]
}

/// The PKCS#8 DER of `key`, from its PEM.
fn pkcs8_of(key: &SigningKey) -> Vec<u8> {
    let pem = key.to_pem();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

async fn agent_trusting(t: &TestDb, userauth_url: String, key: &SigningKey) -> RunningAgent {
    let mut config = config_for(t);
    config.userauth_url = Some(userauth_url);
    config.userauth_token = Some(Secret::new(AGENT_AT_USERAUTH));
    config.userauth_public_key = Some(key.public_key().to_pem());
    start(config).await
}

async fn a_userauth_impostor_cannot_vouch_for_a_token(t: TestDb) {
    let fake = Vouching::default();
    fake.answer_for("mallory");
    let url = fake.serve().await;
    let ours = SigningKey::generate();
    let agent = agent_trusting(&t, url, &ours).await;
    let messages = messages_url(&agent, "conv-forged");
    let post = json!({"role": "user", "content": "let me in"});

    for (what, token, code) in forgeries(&ours) {
        let (status, body) = call(
            reqwest::Method::POST,
            messages.clone(),
            Some(&token),
            Some(post.clone()),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some(code)),
            "post with {what}: {body}"
        );
        let (status, body) = call(reqwest::Method::GET, messages.clone(), Some(&token), None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some(code)),
            "read with {what}: {body}"
        );
        assert_eq!(fake.requests(), 0, "the impostor was asked about {what}");
    }

    // A token userauth's key did sign is asked about, but the answer is only believed for the
    // token's own user: an impostor naming someone else is an unavailable userauth (503), and
    // nothing is posted as mallory.
    let alices = AccessTokens::new(&ours, Duration::from_secs(600))
        .sign(&claims_of("alice"))
        .unwrap();
    let (status, body) = call(
        reqwest::Method::POST,
        messages.clone(),
        Some(&alices),
        Some(post.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(fake.requests(), 1);
    let (status, _) = call(reqwest::Method::GET, messages.clone(), Some(&alices), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fake.requests(), 2);

    // Answering for the token's user, the post goes on, as alice.
    fake.answer_for("alice");
    let (status, body) = call(
        reqwest::Method::POST,
        messages.clone(),
        Some(&alices),
        Some(post),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // A body naming another user than the token's is refused, whatever userauth says.
    let (status, body) = call(
        reqwest::Method::POST,
        messages.clone(),
        Some(&alices),
        Some(json!({"user_id": "mallory", "role": "user", "content": "as mallory"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = call(
        reqwest::Method::GET,
        messages_url(&agent, "conv-forged"),
        Some(&alices),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    stop(agent).await;
    t.cleanup().await;
}

on_every_backend!(a_userauth_impostor_cannot_vouch_for_a_token);
