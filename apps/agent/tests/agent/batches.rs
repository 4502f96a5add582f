//! The agent's handler applies a batch of messages with set-based statements, with the same
//! effects as one message at a time: every message stored, one usage event each, and one
//! notification request for each conversation's first message.

use sea_orm::TransactionTrait;
use smartflow_agent::events::{routes, ChatMessageAppended, Role, TokenUsageRecorded};
use smartflow_agent::handlers::{first_message_dedupe_key, registry};
use smartflow_bus::domain::{Envelope, EventContract};
use smartflow_bus::{EventBus, PublishConfig};
use smartflow_notification_contracts::NotificationRequested;
use smartflow_storage::chat_history::{self, NewChatMessage};
use smartflow_storage::conversations;
use smartflow_storage::outbox::{OutboxFilter, OutboxRecord};
use smartflow_testkit::{on_every_backend, TestDb};

fn message(conversation: &str, user: &str, content: &str, at: i64) -> Envelope {
    let event = ChatMessageAppended {
        conversation_id: conversation.into(),
        user_id: user.into(),
        role: Role::User,
        content: content.into(),
        occurred_at_ms: at,
    };
    Envelope::for_event(conversation, &event).unwrap()
}

async fn of_type(bus: &EventBus, t: &TestDb, event_type: &str) -> Vec<OutboxRecord> {
    let filter = OutboxFilter {
        event_type: Some(event_type.into()),
        ..OutboxFilter::default()
    };
    bus.outbox()
        .list_matching(&t.db, &filter, 100)
        .await
        .unwrap()
}

async fn a_batch_of_messages_has_the_effects_of_one_at_a_time(t: TestDb) {
    let routes = routes(
        smartflow_agent::events::DEFAULT_TOPIC,
        smartflow_notification_contracts::DEFAULT_TOPIC,
    )
    .unwrap();
    let bus = EventBus::new(
        smartflow_agent::events::SERVICE,
        routes,
        PublishConfig::default(),
    )
    .unwrap();
    let handlers = registry(bus.clone()).unwrap();
    let handler = handlers.get(ChatMessageAppended::EVENT_TYPE).unwrap();

    // "old" has a message and an owner already; "new" is claimed (as a post does) but empty;
    // "unowned" was published before conversations had owners.
    let txn = t.db.begin().await.unwrap();
    conversations::insert_if_absent(&txn, "old", "alice", 1)
        .await
        .unwrap();
    chat_history::insert(
        &txn,
        &NewChatMessage {
            event_id: "earlier".into(),
            conversation_id: "old".into(),
            user_id: "alice".into(),
            role: "user".into(),
            content: "hello".into(),
            created_at: 1,
        },
    )
    .await
    .unwrap();
    conversations::insert_if_absent(&txn, "new", "bob", 2)
        .await
        .unwrap();
    txn.commit().await.unwrap();

    let batch = [
        message("new", "bob", "first of new", 10),
        message("old", "alice", "again", 11),
        message("new", "bob", "second of new", 12),
        message("unowned", "carol", "first of unowned!", 13),
    ];
    let envelopes: Vec<&Envelope> = batch.iter().collect();
    let txn = t.db.begin().await.unwrap();
    handler.handle_batch(&txn, &envelopes).await.unwrap();
    txn.commit().await.unwrap();

    assert_eq!(chat_history::count(&t.db).await.unwrap(), 5);
    let new = chat_history::list(&t.db, "new", 10).await.unwrap();
    let contents: Vec<&str> = new.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["first of new", "second of new"]);
    assert_eq!(
        conversations::owner(&t.db, "unowned")
            .await
            .unwrap()
            .as_deref(),
        Some("carol"),
        "a conversation nobody claimed is its first message's user's"
    );
    assert_eq!(
        conversations::owner(&t.db, "new").await.unwrap().as_deref(),
        Some("bob")
    );

    let usage = of_type(&bus, &t, TokenUsageRecorded::EVENT_TYPE).await;
    assert_eq!(usage.len(), 4, "one usage event per message");
    let requests = of_type(&bus, &t, NotificationRequested::EVENT_TYPE).await;
    let mut keys: Vec<String> = requests.iter().map(|r| r.row.message_key.clone()).collect();
    keys.sort();
    let mut expected = vec![
        first_message_dedupe_key("new"),
        first_message_dedupe_key("unowned"),
    ];
    expected.sort();
    assert_eq!(
        keys, expected,
        "one request per conversation started in the batch"
    );
    t.cleanup().await;
}

on_every_backend!(a_batch_of_messages_has_the_effects_of_one_at_a_time);
