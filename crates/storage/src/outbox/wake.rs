//! Waking relays in other processes when a row commits. PostgreSQL carries it: a publish sends
//! `pg_notify` in its own transaction, which PostgreSQL delivers only when (and if) that
//! transaction commits, and a relay listens on a connection of its own. Elsewhere there is no
//! such channel, and relays in other processes find rows by polling.

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use super::OutboxTable;
use crate::StorageError;

/// The one channel every outbox announces on; the payload names the table
/// (`schema.table`), so relays of other tables or schemas ignore it.
const CHANNEL: &str = "smartflow_outbox";

impl OutboxTable {
    /// Announces a new row to relays in other processes, through `conn` (the publishing
    /// transaction: nothing is announced unless it commits). PostgreSQL only; elsewhere it does
    /// nothing. PostgreSQL folds repeats within one transaction into one notification.
    pub async fn announce<C: ConnectionTrait>(&self, conn: &C) -> Result<(), StorageError> {
        let backend = conn.get_database_backend();
        if backend != DbBackend::Postgres {
            return Ok(());
        }
        conn.execute(Statement::from_sql_and_values(
            backend,
            "SELECT pg_notify($1, current_schema() || '.' || $2)",
            [CHANNEL.into(), self.name().into()],
        ))
        .await?;
        Ok(())
    }

    /// Listens for [`announce`](Self::announce)ments of this table on a connection of its own
    /// from `db`'s pool. `None` on backends without notifications.
    pub async fn listen(
        &self,
        db: &DatabaseConnection,
    ) -> Result<Option<CommitListener>, StorageError> {
        if db.get_database_backend() != DbBackend::Postgres {
            return Ok(None);
        }
        let schema = db
            .query_one(Statement::from_string(
                DbBackend::Postgres,
                "SELECT current_schema() AS s",
            ))
            .await?
            .map(|row| row.try_get::<String>("", "s"))
            .transpose()?
            .unwrap_or_default();
        let pool = db.get_postgres_connection_pool();
        let mut listener = PgListener::connect_with(pool).await.map_err(sqlx_error)?;
        listener.listen(CHANNEL).await.map_err(sqlx_error)?;
        Ok(Some(CommitListener {
            listener,
            payload: format!("{schema}.{}", self.name()),
        }))
    }
}

/// A relay's ear for commits made by other processes.
pub struct CommitListener {
    listener: PgListener,
    payload: String,
}

impl CommitListener {
    /// Waits for the next commit of a row into this listener's table. An error means the
    /// connection is gone: listen again (rows committed meanwhile are found by polling).
    pub async fn next(&mut self) -> Result<(), StorageError> {
        loop {
            let notification = self.listener.recv().await.map_err(sqlx_error)?;
            if notification.payload() == self.payload {
                return Ok(());
            }
        }
    }
}

fn sqlx_error(e: sea_orm::sqlx::Error) -> StorageError {
    StorageError::Db(DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)))
}
