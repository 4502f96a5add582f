//! The conversations migration gives every conversation that already has messages an owner:
//! the user of its earliest message.

use sea_orm_migration::sea_orm::{self, ConnectionTrait, FromQueryResult, Statement};
use smartflow_migrations::{agent, MigratorTrait};
use smartflow_testkit::{on_every_backend, TestDb};

const CONVERSATIONS: &str = "m20261124_000004_create_conversations";

#[derive(Debug, PartialEq, Eq, FromQueryResult)]
struct Conversation {
    id: String,
    owner_user_id: String,
    created_at: i64,
}

async fn existing_conversations_are_given_to_the_user_of_their_earliest_message(t: TestDb) {
    // The agent's migrations as they were before conversations had owners.
    let before = agent::Migrator::migrations()
        .iter()
        .position(|m| m.name() == CONVERSATIONS)
        .expect("the migration is in the agent's migrator");
    agent::Migrator::up(&t.db, Some(before as u32))
        .await
        .unwrap();
    assert!(!t.has_table("conversations").await);
    // c-1: the earliest message is not the first stored; c-2: two in one millisecond, the one
    // stored first started it; c-3: one message.
    for (event, conversation, user, created_at) in [
        ("e-1", "c-1", "u-2", 5),
        ("e-2", "c-1", "u-1", 3),
        ("e-3", "c-2", "u-3", 7),
        ("e-4", "c-2", "u-4", 7),
        ("e-5", "c-1", "u-1", 9),
        ("e-6", "c-3", "u-5", 1),
    ] {
        t.db.execute_unprepared(&format!(
            "INSERT INTO chat_histories (event_id, conversation_id, user_id, role, content, \
             created_at) VALUES ('{event}', '{conversation}', '{user}', 'user', 'hi', {created_at})"
        ))
        .await
        .unwrap();
    }

    t.migrate::<agent::Migrator>().await;
    t.migrate::<agent::Migrator>().await;

    let owners = Conversation::find_by_statement(Statement::from_string(
        t.db.get_database_backend(),
        "SELECT id, owner_user_id, created_at FROM conversations ORDER BY id".to_owned(),
    ))
    .all(&t.db)
    .await
    .unwrap();
    let expected =
        [("c-1", "u-1", 3), ("c-2", "u-3", 7), ("c-3", "u-5", 1)].map(|(id, owner, created_at)| {
            Conversation {
                id: id.to_owned(),
                owner_user_id: owner.to_owned(),
                created_at,
            }
        });
    assert_eq!(owners, expected);
    t.cleanup().await;
}

on_every_backend!(empty: existing_conversations_are_given_to_the_user_of_their_earliest_message);
