//! The conversations repository on SQLite, PostgreSQL and MariaDB: the first claim of an id
//! makes its owner, later claims by others do not, and of two concurrent claims exactly one wins.

use smartflow_storage::conversations::{self, Ownership};
use smartflow_storage::{ConnectionTrait, TransactionTrait};
use smartflow_testkit::{on_every_backend, TestDb};

async fn claimed<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    conversation: &str,
    user: &str,
) -> Ownership {
    let txn = db.begin().await.unwrap();
    let ownership = conversations::claim(&txn, conversation, user, 1_000)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    ownership
}

async fn the_first_claim_owns_a_conversation(t: TestDb) {
    assert_eq!(conversations::owner(&t.db, "c-1").await.unwrap(), None);
    assert_eq!(claimed(&t.db, "c-1", "alice").await, Ownership::Owner);
    assert_eq!(claimed(&t.db, "c-1", "bob").await, Ownership::SomeoneElse);
    assert_eq!(claimed(&t.db, "c-1", "alice").await, Ownership::Owner);
    assert_eq!(
        conversations::owner(&t.db, "c-1").await.unwrap().as_deref(),
        Some("alice")
    );

    // A claim whose transaction rolls back leaves the id free.
    let txn = t.db.begin().await.unwrap();
    let ownership = conversations::claim(&txn, "c-2", "bob", 1_000)
        .await
        .unwrap();
    assert_eq!(ownership, Ownership::Owner);
    txn.rollback().await.unwrap();
    assert_eq!(conversations::owner(&t.db, "c-2").await.unwrap(), None);
    assert_eq!(claimed(&t.db, "c-2", "alice").await, Ownership::Owner);

    // `insert_if_absent` never takes a conversation over.
    conversations::insert_if_absent(&t.db, "c-1", "bob", 2_000)
        .await
        .unwrap();
    assert_eq!(
        conversations::owner(&t.db, "c-1").await.unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(conversations::count(&t.db).await.unwrap(), 2);
    t.cleanup().await;
}

async fn of_two_concurrent_claims_exactly_one_wins(t: TestDb) {
    let other = t.connect_again().await;
    // Alice's claim is made and still uncommitted when Bob's runs: Bob's waits for it (row lock
    // or SQLite's write lock) or, if it comes later, reads its row; either way it loses.
    let alice = t.db.begin().await.unwrap();
    assert_eq!(
        conversations::claim(&alice, "race", "alice", 1_000)
            .await
            .unwrap(),
        Ownership::Owner
    );
    let bob = tokio::spawn(async move {
        let txn = other.begin().await.unwrap();
        let ownership = conversations::claim(&txn, "race", "bob", 1_000)
            .await
            .unwrap();
        txn.commit().await.unwrap();
        other.close().await.unwrap();
        ownership
    });
    alice.commit().await.unwrap();
    assert_eq!(bob.await.unwrap(), Ownership::SomeoneElse);
    assert_eq!(
        conversations::owner(&t.db, "race")
            .await
            .unwrap()
            .as_deref(),
        Some("alice")
    );
    t.cleanup().await;
}

on_every_backend!(
    the_first_claim_owns_a_conversation,
    of_two_concurrent_claims_exactly_one_wins
);
