use reqwest::StatusCode;
use serde_json::json;
use smartflow_agent::events::OUTBOX_TABLE;
use smartflow_storage::outbox::{OutboxStats, OutboxTable};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_invalid_request_and_writes_nothing() {
    let dir = TempDir::new();
    let mut config = sqlite_config(&dir);
    config.max_content_chars = 100;
    let agent = start(config).await;
    let url = messages_url(&agent, "conv-1");

    let bad_bodies = [
        (
            "empty content",
            json!({"user_id": "u1", "role": "user", "content": ""}),
        ),
        (
            "blank content",
            json!({"user_id": "u1", "role": "user", "content": "  \n"}),
        ),
        (
            "bad role",
            json!({"user_id": "u1", "role": "admin", "content": "hi"}),
        ),
        (
            "empty user",
            json!({"user_id": "", "role": "user", "content": "hi"}),
        ),
        (
            "long user",
            json!({"user_id": "u".repeat(129), "role": "user", "content": "hi"}),
        ),
        (
            "oversized content",
            json!({"user_id": "u1", "role": "user", "content": "x".repeat(101)}),
        ),
        (
            "control character in the user",
            json!({"user_id": "u1\n2", "role": "user", "content": "hi"}),
        ),
        (
            "escape sequence in the user",
            json!({"user_id": "u1\u{1b}[2J", "role": "user", "content": "hi"}),
        ),
        (
            "NUL in the content",
            json!({"user_id": "u1", "role": "user", "content": "hi\u{0}there"}),
        ),
        ("missing field", json!({"user_id": "u1", "content": "hi"})),
        (
            "wrong type",
            json!({"user_id": 7, "role": "user", "content": "hi"}),
        ),
    ];
    for (what, body) in bad_bodies {
        let response = client().post(&url).json(&body).send().await.unwrap();
        assert_eq!(
            error_of(response).await,
            (StatusCode::BAD_REQUEST, "invalid_request".to_owned()),
            "{what}"
        );
    }

    let malformed = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"user_id\": \"u1\", \"role\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(malformed).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );

    let not_json = client().post(&url).body("hello").send().await.unwrap();
    assert_eq!(
        error_of(not_json).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );

    for bad_id in [
        "has%20space",
        &"c".repeat(129),
        "semi%3Bcolon",
        "line%0Abreak",
        "nul%00",
    ] {
        let body = json!({"user_id": "u1", "role": "user", "content": "hi"});
        let post = client()
            .post(messages_url(&agent, bad_id))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(post).await,
            (StatusCode::BAD_REQUEST, "invalid_request".to_owned()),
            "{bad_id}"
        );
        let get = client()
            .get(messages_url(&agent, bad_id))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(get).await,
            (StatusCode::BAD_REQUEST, "invalid_request".to_owned()),
            "{bad_id}"
        );
    }

    let stats = OutboxTable::new(OUTBOX_TABLE)
        .unwrap()
        .stats(agent.db())
        .await
        .unwrap();
    assert_eq!(
        stats,
        OutboxStats::default(),
        "refused requests write no outbox row"
    );
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_envelopes_get_413_payload_too_large() {
    let dir = TempDir::new();
    let mut config = sqlite_config(&dir);
    config.max_content_chars = 2_000;
    config.max_payload_bytes = 1_500;
    let agent = start(config).await;
    let url = messages_url(&agent, "conv-1");

    // Far over anything a valid message could take: refused before it is read whole.
    let huge = json!({"user_id": "u1", "role": "user", "content": "x".repeat(1024 * 1024)});
    let response = client().post(&url).json(&huge).send().await.unwrap();
    assert_eq!(
        error_of(response).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large".to_owned()
        )
    );

    // Within the content limit, but its envelope is over SMARTFLOW_MAX_PAYLOAD_BYTES.
    let big = json!({"user_id": "u1", "role": "user", "content": "y".repeat(1_900)});
    let response = client().post(&url).json(&big).send().await.unwrap();
    assert_eq!(
        error_of(response).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large".to_owned()
        )
    );

    let stats = OutboxTable::new(OUTBOX_TABLE)
        .unwrap()
        .stats(agent.db())
        .await
        .unwrap();
    assert_eq!(stats, OutboxStats::default());

    // A message that fits still goes through.
    post_message(&agent, "conv-1", "u1", "user", "small").await;
    stop(agent).await;
}
