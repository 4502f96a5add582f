use sea_orm::DbErr;
use thiserror::Error;

/// Storage failures. `Db` wraps what the database said; the others are caught before a query runs.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("invalid database URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        url: String,
        // In the message only: marking it `#[source]` too would print it twice in error chains.
        source: DbErr,
    },
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("row in `{table}` holds an invalid value: {reason}")]
    Corrupt { table: String, reason: String },
    #[error(
        "`{table}` has no redrive history (columns `redrive_count`, `last_redriven_at`); add them \
         with `smartflow_migrations::add_redrive_history` in a migration of its service"
    )]
    NoRedriveHistory { table: String },
    #[error(
        "`{table}` has no commit cursor (column `txid`, and `sent_txid`, `sent_id`, `check_txid`, \
         `check_id`, `check_at` on `{table}_shards`); add it with \
         `smartflow_migrations::add_commit_cursor` in a migration of its service"
    )]
    NoCommitCursor { table: String },
    #[error(transparent)]
    Domain(#[from] smartflow_domain::DomainError),
}

impl StorageError {
    /// Whether this is a unique-key violation, the way every backend reports a duplicate.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            StorageError::Db(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
        )
    }
}
