//! The agent behind userauth: requests carry userauth access tokens, messages are charged to the
//! token's user through the outbox, and a user at the quota is refused with 429.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use smartflow_testkit::{on_every_backend, TestDb};

use crate::behind_userauth::{call, Stack};
use crate::support::*;

fn tampered(token: &str) -> String {
    // Flip one character of the payload segment; the signature no longer matches.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let payload = &mut parts[1];
    let last = payload.pop().unwrap();
    payload.push(if last == 'A' { 'B' } else { 'A' });
    parts.join(".")
}

async fn requests_need_a_userauth_token_and_respect_the_quota(t: TestDb) {
    let stack = Stack::start(&t, |_| {}).await;
    let (agent, userauth) = (&stack.agent, &stack.userauth);
    let messages = messages_url(agent, "conv-auth");
    let say = |content: &str| json!({"role": "user", "content": content});

    let (status, body) = call(
        reqwest::Method::POST,
        messages.clone(),
        None,
        Some(say("hi")),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_token"))
    );

    let (token, _) = stack.login("ada@example.com").await;
    let (status, body) = call(
        reqwest::Method::POST,
        messages.clone(),
        Some(&tampered(&token)),
        Some(say("hi")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "invalid_token");

    let (status, me) = call(
        reqwest::Method::GET,
        format!("{}/v1/auth/me", userauth.base_url()),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let user_id = me["user_id"].as_str().unwrap().to_owned();

    let (status, body) = call(
        reqwest::Method::POST,
        messages.clone(),
        Some(&token),
        Some(json!({"user_id": "somebody-else", "role": "user", "content": "hi"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = call(
        reqwest::Method::POST,
        messages.clone(),
        Some(&token),
        Some(say("hello there")),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // The message is stored for the token's user, and charged to it through the outbox.
    let deadline = Instant::now() + Duration::from_secs(60);
    let usage = loop {
        let (_, history) = call(reqwest::Method::GET, messages.clone(), Some(&token), None).await;
        let (_, me) = call(
            reqwest::Method::GET,
            format!("{}/v1/auth/me", userauth.base_url()),
            Some(&token),
            None,
        )
        .await;
        let usage = me["token_usage"].as_i64().unwrap_or(0);
        if history["messages"].as_array().map(Vec::len) == Some(1) && usage > 0 {
            assert_eq!(history["messages"][0]["user_id"], user_id.as_str());
            break usage;
        }
        assert!(
            Instant::now() < deadline,
            "message not stored and charged: {history} {me}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        usage as u64,
        smartflow_agent::handlers::tokens_of("hello there")
    );

    // Usage exactly at the quota is refused; reading stays allowed.
    smartflow_storage::users::set_quota(userauth.db(), &user_id, usage)
        .await
        .unwrap();
    let (status, body) = call(
        reqwest::Method::POST,
        messages.clone(),
        Some(&token),
        Some(say("more")),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let (status, _) = call(reqwest::Method::GET, messages.clone(), Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);

    // A logged-out token is refused everywhere.
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{}/v1/auth/logout", userauth.base_url()),
        Some(&token),
        None,
    )
    .await;
    assert!(status.is_success(), "{status}");
    let (status, body) = call(reqwest::Method::GET, messages.clone(), Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    stack.stop().await;
    t.cleanup().await;
}

on_every_backend!(requests_need_a_userauth_token_and_respect_the_quota);
