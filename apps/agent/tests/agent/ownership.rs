//! A conversation belongs to the user who started it: only that user reads or writes it, others
//! get the same 404 as for a conversation that does not exist, and nothing of their attempt is
//! stored or published. Two users racing to start one conversation id leave exactly one owner.

use reqwest::StatusCode;
use serde_json::{json, Value};
use smartflow_agent::events::OUTBOX_TABLE;
use smartflow_agent::RunningAgent;
use smartflow_storage::outbox::{OutboxStats, OutboxTable};
use smartflow_testkit::{on_every_backend, TestDb};

use crate::behind_userauth::{send, Stack};
use crate::support::*;

fn say(content: &str) -> Value {
    json!({"role": "user", "content": content})
}

async fn outbox_rows(agent: &RunningAgent) -> u64 {
    let OutboxStats {
        pending,
        published,
        consumed,
        dead,
        ..
    } = OutboxTable::new(OUTBOX_TABLE)
        .unwrap()
        .stats(agent.db())
        .await
        .unwrap();
    pending + published + consumed + dead
}

async fn a_conversation_is_read_and_written_only_by_its_owner(t: TestDb) {
    let stack = Stack::start(&t, with_service_token).await;
    let agent = &stack.agent;
    let (alice, alice_id) = stack.login("alice@example.com").await;
    let (bob, _) = stack.login("bob@example.com").await;
    let (status, body) = stack
        .post("alices-1", &alice, say("Hello, it is Alice"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // The consumer stores the message and publishes its usage and notification request in one
    // transaction: once the message is visible, the outbox holds all it will hold.
    let history = stack.wait_for_history("alices-1", &alice, 1).await;
    assert_eq!(history[0]["user_id"], alice_id.as_str());
    let rows_before = outbox_rows(agent).await;

    // Bob gets the answer a conversation that was never started gets, reading and writing.
    let (status, never_started) = stack.read("never-started", &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{never_started}");
    assert_eq!(never_started["error"]["code"], "not_found");
    let (status, body) = stack.read("alices-1", &bob).await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &never_started));
    let (status, body) = stack.post("alices-1", &bob, say("Bob was here")).await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &never_started));
    // A service's credential lets Bob's request post another role, not into Alice's conversation.
    let (status, body) = send(
        client()
            .post(messages_url(agent, "alices-1"))
            .bearer_auth(&bob)
            .header(SERVICE_TOKEN_HEADER, SERVICE_TOKEN)
            .json(&json!({"role": "system", "content": "Bob was here"})),
    )
    .await;
    assert_eq!((status, &body), (StatusCode::NOT_FOUND, &never_started));
    assert_eq!(
        outbox_rows(agent).await,
        rows_before,
        "Bob's posts published nothing"
    );

    // Alice goes on; her conversation holds her messages only.
    let (status, body) = stack.post("alices-1", &alice, say("Still Alice")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let history = stack.wait_for_history("alices-1", &alice, 2).await;
    let contents: Vec<&str> = history
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["Hello, it is Alice", "Still Alice"]);
    assert!(history.iter().all(|m| m["user_id"] == alice_id.as_str()));
    assert_eq!(
        smartflow_storage::chat_history::count(agent.db())
            .await
            .unwrap(),
        2,
        "nothing of Bob's was stored"
    );
    stack.stop().await;
    t.cleanup().await;
}

async fn racing_first_posts_leave_exactly_one_owner(t: TestDb) {
    let stack = Stack::start(&t, |_| {}).await;
    let agent = &stack.agent;
    let (alice, _) = stack.login("alice@example.com").await;
    let (bob, _) = stack.login("bob@example.com").await;
    const RACES: usize = 8;
    let mut winners = Vec::new();
    for race in 0..RACES {
        let conversation = format!("contested-{race}");
        let ((a, a_body), (b, b_body)) = tokio::join!(
            stack.post(&conversation, &alice, say("mine")),
            stack.post(&conversation, &bob, say("no, mine")),
        );
        let (winner, loser) = match (a, b) {
            (StatusCode::ACCEPTED, StatusCode::NOT_FOUND) => (&alice, &bob),
            (StatusCode::NOT_FOUND, StatusCode::ACCEPTED) => (&bob, &alice),
            other => panic!("{conversation}: one post must win, got {other:?}: {a_body} {b_body}"),
        };
        winners.push((conversation, winner.clone(), loser.clone()));
    }
    for (conversation, winner, loser) in &winners {
        let history = stack.wait_for_history(conversation, winner, 1).await;
        assert_eq!(history.len(), 1, "{conversation}: {history:?}");
        let (status, body) = stack.read(conversation, loser).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{conversation}: {body}");
    }
    assert_eq!(
        smartflow_storage::chat_history::count(agent.db())
            .await
            .unwrap(),
        RACES as u64
    );
    stack.stop().await;
    t.cleanup().await;
}

on_every_backend!(
    a_conversation_is_read_and_written_only_by_its_owner,
    racing_first_posts_leave_exactly_one_owner
);
