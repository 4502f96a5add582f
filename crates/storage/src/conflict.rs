//! Telling a transient conflict between transactions (a deadlock, a serialization failure, a busy
//! SQLite database) from other failures: the former are worth running the transaction again.

use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr};

use crate::StorageError;

/// Whether the database gave up on the statement because of another transaction, so that the
/// same transaction, run again from its start, may succeed: PostgreSQL `40001`/`40P01`,
/// MySQL/MariaDB deadlock (1213) and lock wait timeout (1205), SQLite `BUSY`/`LOCKED`.
pub fn is_transient_conflict(error: &StorageError) -> bool {
    match error {
        StorageError::Db(e) => is_transient_db_conflict(e),
        _ => false,
    }
}

/// As [`is_transient_conflict`], for a bare `DbErr`.
pub fn is_transient_db_conflict(error: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Database(e)))
    | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Database(e)))) = error
    else {
        return false;
    };
    if let Some(mysql) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(mysql.number(), 1205 | 1213);
    }
    // PostgreSQL SQLSTATEs, then SQLite's (extended) result codes as sqlx spells them.
    matches!(
        e.code().as_deref(),
        Some("40001" | "40P01" | "5" | "6" | "261" | "262" | "517")
    )
}
