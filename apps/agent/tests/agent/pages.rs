//! The history is paged: the newest page first, each page in chronological order, a `next`
//! cursor to the page before it, a bounded page size.

use reqwest::StatusCode;
use smartflow_agent::http::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use smartflow_testkit::{on_every_backend, TestDb};

use crate::support::*;

const MESSAGES: usize = 120;

async fn pages_of_fifty_reach_every_message_in_order(t: TestDb) {
    let agent = start(config_for(&t)).await;
    let mut posted = Vec::new();
    for n in 1..=MESSAGES {
        posted.push(post_message(&agent, "long-1", "u1", "user", &format!("message {n}")).await);
    }
    let whole = eventually("every message stored", || async {
        let page = history_page(&agent, "long-1", "u1", &[("limit", "200")]).await;
        (page.messages.len() == MESSAGES).then_some(page)
    })
    .await;
    assert_eq!(whole.next, None, "one page of 200 holds all 120");
    assert!(whole
        .messages
        .windows(2)
        .all(|w| w[0].created_at <= w[1].created_at));
    let mut stored: Vec<&str> = whole.messages.iter().map(|m| m.event_id.as_str()).collect();
    stored.sort_unstable();
    let mut expected: Vec<&str> = posted.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(stored, expected);

    // The first page is the newest; each `next` leads to the page before it.
    let newest = history_page(&agent, "long-1", "u1", &[]).await;
    assert_eq!(newest.messages.len(), DEFAULT_PAGE_SIZE as usize);
    assert_eq!(newest.messages[..], whole.messages[MESSAGES - 50..]);
    let mut pages = vec![newest.messages];
    let mut next = newest.next;
    while let Some(cursor) = next {
        let page = history_page(
            &agent,
            "long-1",
            "u1",
            &[("limit", "50"), ("before", &cursor)],
        )
        .await;
        pages.push(page.messages);
        next = page.next;
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [50, 50, 20]);
    let walked: Vec<_> = pages.into_iter().rev().flatten().collect();
    assert_eq!(walked, whole.messages);

    // Only the owner pages through it; a page size or cursor the API cannot use is a 400.
    let get = |query: &[(&str, &str)]| {
        client()
            .get(messages_url(&agent, "long-1"))
            .query(query)
            .send()
    };
    let response = get(&[("user_id", "u2")]).await.unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
    let too_many = (MAX_PAGE_SIZE + 1).to_string();
    for (what, query) in [
        ("no user", vec![]),
        ("limit 0", vec![("limit", "0")]),
        ("limit over the maximum", vec![("limit", too_many.as_str())]),
        ("negative limit", vec![("limit", "-1")]),
        ("limit not a number", vec![("limit", "ten")]),
        ("cursor not base64", vec![("before", "***")]),
        ("cursor not ours", vec![("before", "aGVsbG8")]),
        ("empty cursor", vec![("before", "")]),
    ] {
        let mut query = query;
        if what != "no user" {
            query.push(("user_id", "u1"));
        }
        let response = get(&query).await.unwrap();
        assert_eq!(
            error_of(response).await,
            (StatusCode::BAD_REQUEST, "invalid_request".to_owned()),
            "{what}"
        );
    }
    stop(agent).await;
    t.cleanup().await;
}

on_every_backend!(pages_of_fifty_reach_every_message_in_order);
