//! Every session a pool opens is bounded: a lock wait ends in an error instead of waiting for a
//! frozen holder, and (on the servers) a transaction left idle loses its session and its locks.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use smartflow_storage::connect::SessionLimits;
use smartflow_storage::{connect, ConnectConfig};
use smartflow_testkit::{on_every_backend, Backend, TestDb};

fn bounded(t: &TestDb, lock_wait: Duration, idle_in_transaction: Duration) -> ConnectConfig {
    let mut config: ConnectConfig = t.config.clone();
    config.limits = SessionLimits {
        statement: Duration::from_secs(30),
        lock_wait,
        idle_in_transaction,
    };
    config
}

async fn probe_table(db: &DatabaseConnection) {
    db.execute_unprepared("CREATE TABLE lock_probe (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .await
        .unwrap();
    db.execute_unprepared("INSERT INTO lock_probe (id, v) VALUES (1, 0)")
        .await
        .unwrap();
}

const TOUCH: &str = "UPDATE lock_probe SET v = v + 1 WHERE id = 1";

async fn a_lock_wait_ends_in_an_error_not_a_hang(t: TestDb) {
    probe_table(&t.db).await;
    let config = bounded(&t, Duration::from_secs(1), Duration::from_secs(60));
    let holder = connect(&config).await.unwrap();
    let waiter = connect(&config).await.unwrap();
    let txn = holder.begin().await.unwrap();
    txn.execute_unprepared(TOUCH).await.unwrap();
    // The outer bound only keeps a broken implementation from hanging the suite.
    let waited = tokio::time::timeout(Duration::from_secs(30), waiter.execute_unprepared(TOUCH))
        .await
        .expect("the lock wait is bounded by the session, not by this test");
    assert!(waited.is_err(), "the waiter gives up with an error");
    txn.rollback().await.unwrap();
    waiter.execute_unprepared(TOUCH).await.unwrap();
    holder.close().await.unwrap();
    waiter.close().await.unwrap();
    t.cleanup().await;
}

async fn an_idle_transaction_loses_its_locks(t: TestDb) {
    if t.backend == Backend::Sqlite {
        // One process's file: a transaction cannot outlive its process, and the relay never
        // holds one across the broker's answer (it takes a lease instead).
        t.cleanup().await;
        return;
    }
    probe_table(&t.db).await;
    let config = bounded(&t, Duration::from_secs(30), Duration::from_secs(1));
    let frozen = connect(&config).await.unwrap();
    let other = connect(&config).await.unwrap();
    let txn = frozen.begin().await.unwrap();
    txn.execute_unprepared(TOUCH).await.unwrap();
    // Frozen, not crashed: the connection stays open, the transaction idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    other
        .execute_unprepared(TOUCH)
        .await
        .expect("the server ended the idle transaction and freed its row lock");
    assert!(
        txn.execute_unprepared(TOUCH).await.is_err(),
        "the idle transaction's session is gone"
    );
    drop(txn);
    frozen.close().await.unwrap();
    other.close().await.unwrap();
    t.cleanup().await;
}

/// A transaction that only reads (an admin listing, a relay's claim scan, a consumer's dedupe
/// check) never holds up another session's commit. SQLite in its default rollback-journal mode
/// made every writer wait for every open reader (and give up after its lock wait): the pool
/// opens SQLite files in WAL mode.
async fn an_open_reader_never_holds_up_a_writer(t: TestDb) {
    probe_table(&t.db).await;
    let config = bounded(&t, Duration::from_secs(1), Duration::from_secs(60));
    let reader = connect(&config).await.unwrap();
    let writer = connect(&config).await.unwrap();
    let reading = reader.begin().await.unwrap();
    reading
        .execute_unprepared("SELECT v FROM lock_probe")
        .await
        .unwrap();
    let wrote = tokio::time::timeout(Duration::from_secs(30), writer.execute_unprepared(TOUCH))
        .await
        .expect("bounded by the session's lock wait");
    assert!(
        wrote.is_ok(),
        "the writer committed beside the open reader: {wrote:?}"
    );
    reading.commit().await.unwrap();
    reader.close().await.unwrap();
    writer.close().await.unwrap();
    t.cleanup().await;
}

on_every_backend!(
    a_lock_wait_ends_in_an_error_not_a_hang,
    an_idle_transaction_loses_its_locks,
    an_open_reader_never_holds_up_a_writer,
);

#[cfg(unix)]
#[tokio::test]
async fn a_sqlite_file_it_creates_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("sf_mode_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("private.db");
    let db = connect(&ConnectConfig::new(format!(
        "sqlite://{}?mode=rwc",
        file.display()
    )))
    .await
    .unwrap();
    db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    // The write-ahead log and its index, which SQLite creates beside it, are private too.
    for suffix in ["-wal", "-shm"] {
        let side = format!("{}{suffix}", file.display());
        let mode = std::fs::metadata(&side).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{side}: {mode:o}");
    }
    db.close().await.unwrap();
    // A directory that does not exist is a clear error, not a panic.
    let missing = dir.join("no/such/dir.db");
    let err = connect(&ConnectConfig::new(format!(
        "sqlite://{}?mode=rwc",
        missing.display()
    )))
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("cannot create the SQLite file"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
