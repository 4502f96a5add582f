use reqwest::{Method, StatusCode};
use serde_json::Value;
use smartflow_agent::events::OUTBOX_TABLE;
use smartflow_agent::RunningAgent;
use smartflow_domain::OutboxStatus;
use smartflow_storage::outbox::OutboxTable;
use smartflow_testkit::{get_json, probe_http};

use crate::support::*;

/// The end-to-end scenario every backend runs: messages go in through the API, through the
/// outbox, the relay, Kafka and the consumer, and come back from the history in order.
pub async fn chat_round_trip(agent: &RunningAgent) {
    let before = crate::metrics::scrape(agent).await;
    let sent = [
        ("alice", "user", "first"),
        ("alice", "assistant", "second, with ünïcode ✓"),
        ("alice", "system", "third\nspans lines"),
    ];
    let mut ids = Vec::new();
    for (user, role, content) in sent {
        ids.push(post_message(agent, "conv-1", user, role, content).await);
    }
    let other_id = post_message(agent, "conv-2", "carol", "user", "elsewhere").await;

    let messages = wait_for_messages(agent, "conv-1", "alice", 3).await;
    assert_eq!(messages.len(), 3, "{messages:?}");
    for ((message, (user, role, content)), id) in messages.iter().zip(sent).zip(&ids) {
        assert_eq!(&message.event_id, id);
        assert_eq!(message.user_id, user);
        assert_eq!(message.role, role);
        assert_eq!(message.content, content);
        chrono::DateTime::parse_from_rfc3339(&message.created_at).expect("created_at is RFC 3339");
    }
    assert!(messages
        .windows(2)
        .all(|w| w[0].created_at <= w[1].created_at));

    let other = wait_for_messages(agent, "conv-2", "carol", 1).await;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].event_id, other_id);
    assert_eq!(other[0].content, "elsewhere");
    assert_eq!(
        list_messages(agent, "conv-1", "alice").await.len(),
        3,
        "conv-2's message stays out of conv-1"
    );
    // A conversation nobody started is not found, and carol's is not alice's.
    for (conversation, user) in [("conv-3", "alice"), ("conv-2", "alice")] {
        let response = client()
            .get(messages_url(agent, conversation))
            .query(&[("user_id", user)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(response).await,
            (StatusCode::NOT_FOUND, "not_found".to_owned()),
            "{conversation}"
        );
    }

    // The history row and the consumed mark commit together, so both are visible by now.
    let outbox = OutboxTable::new(OUTBOX_TABLE).unwrap();
    for id in ids.iter().chain([&other_id]) {
        let row = outbox
            .find(agent.db(), id)
            .await
            .unwrap()
            .expect("the outbox row exists");
        assert_eq!(row.status, OutboxStatus::Consumed, "{row:?}");
        assert_eq!(row.last_error, None);
    }
    crate::metrics::assert_metrics_moved(agent, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_come_back_in_order_and_outbox_rows_end_consumed() {
    let dir = TempDir::new();
    let agent = start(sqlite_config(&dir)).await;
    chat_round_trip(&agent).await;
    // Each stored message also published its token-usage event, and each conversation's first
    // message a notification request: both for other services, which dedupe them in inboxes of
    // their own databases, so the agent's rows end `published` with no consumption deadline.
    let outbox = OutboxTable::new(OUTBOX_TABLE).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stats = outbox.stats(agent.db()).await.unwrap();
        if stats.consumed == 4 && stats.published == 6 && stats.pending + stats.dead == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox never settled: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // `/openapi.json` documents every route it serves, each with its methods, and nothing else.
    let doc = get_json(format!("{}/openapi.json", agent.base_url())).await;
    let listed = smartflow_service::openapi::documented(&doc);
    for path in ["/v1/conversations/{id}/messages"] {
        for method in [Method::GET, Method::POST] {
            assert!(listed.contains(&(method, path.to_owned())), "{path}: {doc}");
        }
    }
    let wrong = smartflow_service::openapi::mismatches(&doc, async |method, path| {
        probe_http(method, format!("{}{path}", agent.base_url())).await
    })
    .await;
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Every documented body has its schema, and the references resolve.
    use smartflow_service::openapi::{request_schema, response_schema, schema_problems};
    let problems = schema_problems(&doc);
    assert!(problems.is_empty(), "{problems:#?}");
    let messages = "/v1/conversations/{id}/messages";
    let post = request_schema(&doc, &Method::POST, messages);
    for field in ["role", "content"] {
        assert!(
            post["required"].as_array().unwrap().contains(&field.into()),
            "{post}"
        );
    }
    assert!(post["properties"].get("user_id").is_some(), "{post}");
    let accepted = response_schema(&doc, &Method::POST, messages, 202);
    assert!(
        accepted["properties"].get("event_id").is_some(),
        "{accepted}"
    );
    let page = response_schema(&doc, &Method::GET, messages, 200);
    assert_eq!(
        page["properties"]["messages"]["items"]["$ref"], "#/components/schemas/MessageView",
        "{page}"
    );
    let error = response_schema(&doc, &Method::POST, messages, 403);
    assert!(error["properties"].get("error").is_some(), "{error}");
    let parameters = doc["paths"][messages]["get"]["parameters"].to_string();
    for name in ["\"id\"", "\"limit\"", "\"before\"", "\"user_id\""] {
        assert!(parameters.contains(name), "{name}: {parameters}");
    }

    let anonymous = client()
        .get(format!("{}/metrics", agent.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(anonymous).await,
        (
            StatusCode::UNAUTHORIZED,
            "service_credential_required".to_owned()
        )
    );
    let metrics = crate::metrics::scrape(&agent).await;
    let table = ("table", "agent_outbox");
    for (status, rows) in [
        ("consumed", 4.0),
        ("published", 6.0),
        ("pending", 0.0),
        ("dead", 0.0),
    ] {
        let labels = [table, ("status", status)];
        assert_eq!(
            metrics.value("smartflow_outbox_rows", &labels),
            rows,
            "{status}"
        );
    }
    assert_eq!(
        metrics.value("smartflow_outbox_oldest_pending_age_seconds", &[table]),
        0.0
    );
    assert_eq!(metrics.value("smartflow_bus_relay_pauses_total", &[]), 0.0);
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_ok_and_unknown_paths_are_json_404() {
    let dir = TempDir::new();
    let agent = start(sqlite_config(&dir)).await;
    let health = client()
        .get(format!("{}/healthz", agent.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    let components = body["components"].as_array().unwrap();
    let names: Vec<&str> = components
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("relay "))
            && names.iter().any(|n| n.starts_with("consumer ")),
        "the relay and the consumer report themselves: {body}"
    );
    assert!(components.iter().all(|c| c["healthy"] == true), "{body}");

    let missing = client()
        .get(format!("{}/v2/nothing", agent.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(missing).await,
        (StatusCode::NOT_FOUND, "not_found".to_owned())
    );
    let wrong_method = client()
        .delete(messages_url(&agent, "c1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(wrong_method).await,
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed".to_owned()
        )
    );
    stop(agent).await;
}
