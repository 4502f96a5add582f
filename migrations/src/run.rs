use std::time::Duration;

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};

use crate::legacy::adopt_legacy_rows;

const PG_LOCK_KEY: i64 = 0x005f_5f73_6d61_7274; // "__smart"
const MYSQL_LOCK_NAME: &str = "smartflow_migrations";
const ATTEMPTS: u32 = 20;

/// Applies every pending migration of `M`. Safe to call repeatedly and from several processes at
/// once: the migrations run inside one transaction that first takes a database-wide lock (an
/// advisory lock on PostgreSQL, `GET_LOCK` on MySQL, the write lock on SQLite), so a second runner
/// waits and then finds nothing left to do. The lock is the same for every migrator, so services
/// sharing a database migrate one after another.
///
/// A database migrated before each service had its own tracking table lists its migrations in
/// `seaql_migrations`; the ones of `M` found there are copied into `M`'s table first, so they are
/// not run again (MySQL cannot create an index "if not exists").
pub async fn run_migrator<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), DbErr> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match run_locked::<M>(db).await {
            Ok(()) => return Ok(()),
            // SQLite refuses a second writer outright instead of queueing it.
            Err(e) if attempt < ATTEMPTS && is_busy(&e) => {
                tracing::debug!(attempt, error = %e, "migrations wait for another runner");
                tokio_sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn run_locked<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let txn = db.begin().await?;
    match backend {
        DbBackend::Postgres => {
            txn.execute(Statement::from_string(
                backend,
                format!("SELECT pg_advisory_xact_lock({PG_LOCK_KEY})"),
            ))
            .await?;
        }
        DbBackend::MySql => {
            let row = txn
                .query_one(Statement::from_string(
                    backend,
                    format!("SELECT GET_LOCK('{MYSQL_LOCK_NAME}', 120) AS got"),
                ))
                .await?;
            let got: Option<i64> = row.map(|r| r.try_get("", "got")).transpose()?.flatten();
            if got != Some(1) {
                return Err(DbErr::Custom(
                    "timed out waiting for another process's migrations".into(),
                ));
            }
        }
        DbBackend::Sqlite => {
            txn.execute_unprepared(
                "CREATE TABLE IF NOT EXISTS smartflow_migration_lock (id INTEGER PRIMARY KEY)",
            )
            .await?;
            txn.execute_unprepared(
                "INSERT OR REPLACE INTO smartflow_migration_lock (id) VALUES (1)",
            )
            .await?;
        }
    }
    let result = match adopt_legacy_rows::<M>(&txn).await {
        Ok(()) => M::up(&txn, None).await,
        Err(e) => Err(e),
    };
    if backend == DbBackend::MySql {
        // MySQL commits DDL as it goes; the lock is the session's and must be released by hand.
        txn.execute_unprepared(&format!("DO RELEASE_LOCK('{MYSQL_LOCK_NAME}')"))
            .await?;
    }
    result?;
    txn.commit().await
}

fn is_busy(e: &DbErr) -> bool {
    let text = e.to_string();
    text.contains("database is locked")
        || text.contains("SQLITE_BUSY")
        || text.contains("(code: 5)")
}

async fn tokio_sleep(d: Duration) {
    tokio::time::sleep(d).await
}
