//! What the database's catalog says about a table named at run time: whether it exists, whether
//! it has a column. The admin commands ask before they touch a table an operator named, so a typo
//! is an error that says so rather than a backend's own message. The catalogs differ, one
//! statement per backend, all here.

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::StorageError;

/// Whether a table `name` exists where this connection's unqualified names resolve (PostgreSQL:
/// the search path's first schema; MySQL/MariaDB: the connection's database).
pub async fn table_exists<C: ConnectionTrait>(conn: &C, name: &str) -> Result<bool, StorageError> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT 1 FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
        DbBackend::MySql => {
            "SELECT 1 FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = ?"
        }
        DbBackend::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
    };
    let stmt = Statement::from_sql_and_values(backend, sql, [Value::from(name)]);
    Ok(conn.query_one(stmt).await?.is_some())
}

/// Whether the table `table` has a column `column`.
pub async fn column_exists<C: ConnectionTrait>(
    conn: &C,
    table: &str,
    column: &str,
) -> Result<bool, StorageError> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT 1 FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2"
        }
        DbBackend::MySql => {
            "SELECT 1 FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?"
        }
        DbBackend::Sqlite => "SELECT 1 FROM pragma_table_info(?) WHERE name = ?",
    };
    let stmt =
        Statement::from_sql_and_values(backend, sql, [Value::from(table), Value::from(column)]);
    Ok(conn.query_one(stmt).await?.is_some())
}
