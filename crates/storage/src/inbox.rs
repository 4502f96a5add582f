//! The inbox: which events a consumer of another service's events has already handled. Its insert
//! runs in the transaction of the handler's effect, so a duplicate delivery finds the row and
//! changes nothing. A service may keep its inbox under any name
//! (`smartflow_migrations::create_inbox_table`); this workspace's services share [`DEFAULT_INBOX_TABLE`].

use std::collections::HashSet;

use sea_orm::sea_query::{Expr, InsertStatement, OnConflict, Query, Value};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, FromQueryResult, Iterable, TransactionTrait,
};

pub use crate::entity::inbox::{InboxStatus, Model as InboxEntry};

use crate::entity::inbox::Column as Inbox;
use crate::error_text::truncate;
use crate::outbox::EventIdRow;
use crate::table_name::TableName;
use crate::{now_millis, StorageError};

/// The inbox of this workspace's services.
pub const DEFAULT_INBOX_TABLE: &str = "inbox";

/// Rows per statement of a set-based record: 6 parameters a row, well inside every backend's
/// limit.
const ROWS_PER_STATEMENT: usize = 1000;

/// One inbox table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxTable {
    name: TableName,
}

impl Default for InboxTable {
    /// [`DEFAULT_INBOX_TABLE`].
    fn default() -> Self {
        Self {
            name: TableName::known(DEFAULT_INBOX_TABLE),
        }
    }
}

impl InboxTable {
    pub fn new(name: impl Into<String>) -> Result<Self, StorageError> {
        let name = TableName::checked("inbox table", name.into())?;
        Ok(Self { name })
    }

    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Records that `consumer` settled `event_id`. Returns `false`, changing nothing, when the
    /// event was already recorded. The insert runs in a savepoint so a duplicate leaves `txn`
    /// usable.
    pub async fn record(
        &self,
        txn: &DatabaseTransaction,
        consumer: &str,
        event_id: &str,
        event_type: &str,
        status: InboxStatus,
        error: Option<&str>,
    ) -> Result<bool, StorageError> {
        let stmt = self.insert_statement(
            consumer,
            &[(event_id, event_type)],
            status,
            error,
            now_millis(),
        );
        let savepoint = txn.begin().await?;
        let result = savepoint
            .execute(savepoint.get_database_backend().build(&stmt))
            .await
            .map_err(StorageError::from);
        match result {
            Ok(_) => {
                savepoint.commit().await?;
                Ok(true)
            }
            Err(e) if e.is_unique_violation() => {
                savepoint.rollback().await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Records at once that `consumer` handled each of `events` (`(event_id, event_type)`), as
    /// [`record`](Self::record) does one by one: returns the ids recorded now (the others were
    /// recorded already). On PostgreSQL and SQLite one `INSERT ... ON CONFLICT DO NOTHING
    /// RETURNING` per chunk (writing first, see `OutboxTable::mark_consumed_all`); on
    /// MySQL/MariaDB a `SELECT` of the known ones, then the insert of the rest. `None` means a
    /// concurrent writer recorded one of them between those two statements; the statement
    /// failed, so the caller must roll back to a savepoint it took before, and go one by one.
    pub async fn record_handled_all<C: ConnectionTrait>(
        &self,
        conn: &C,
        consumer: &str,
        events: &[(&str, &str)],
    ) -> Result<Option<HashSet<String>>, StorageError> {
        let backend = conn.get_database_backend();
        let mut fresh = HashSet::new();
        let now = now_millis();
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            if backend != DbBackend::MySql {
                let mut stmt =
                    self.insert_statement(consumer, chunk, InboxStatus::Handled, None, now);
                stmt.on_conflict(
                    OnConflict::columns([Inbox::Consumer, Inbox::EventId])
                        .do_nothing()
                        .to_owned(),
                )
                .returning_col(Inbox::EventId);
                let recorded = EventIdRow::find_by_statement(backend.build(&stmt))
                    .all(conn)
                    .await?;
                fresh.extend(recorded.into_iter().map(|r| r.event_id));
                continue;
            }
            let select = Query::select()
                .column(Inbox::EventId)
                .from(self.name.alias())
                .and_where(Expr::col(Inbox::Consumer).eq(consumer))
                .and_where(Expr::col(Inbox::EventId).is_in(chunk.iter().map(|(id, _)| *id)))
                .to_owned();
            let known: HashSet<String> = EventIdRow::find_by_statement(backend.build(&select))
                .all(conn)
                .await?
                .into_iter()
                .map(|r| r.event_id)
                .collect();
            let new: Vec<(&str, &str)> = chunk
                .iter()
                .copied()
                .filter(|(id, _)| !known.contains(*id))
                .collect();
            if new.is_empty() {
                continue;
            }
            let stmt = self.insert_statement(consumer, &new, InboxStatus::Handled, None, now);
            match conn
                .execute(backend.build(&stmt))
                .await
                .map_err(StorageError::from)
            {
                Ok(_) => fresh.extend(new.iter().map(|(id, _)| (*id).to_owned())),
                Err(e) if e.is_unique_violation() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(fresh))
    }

    fn insert_statement(
        &self,
        consumer: &str,
        events: &[(&str, &str)],
        status: InboxStatus,
        error: Option<&str>,
        now: i64,
    ) -> InsertStatement {
        let status: Value = status.into();
        let error: Value = error.map(truncate).into();
        let mut stmt = Query::insert();
        stmt.into_table(self.name.alias()).columns([
            Inbox::Consumer,
            Inbox::EventId,
            Inbox::EventType,
            Inbox::Status,
            Inbox::LastError,
            Inbox::HandledAt,
        ]);
        for (event_id, event_type) in events {
            stmt.values_panic([
                consumer.into(),
                (*event_id).into(),
                (*event_type).into(),
                status.clone().into(),
                error.clone().into(),
                now.into(),
            ]);
        }
        stmt
    }

    /// The inbox row of one event for one consumer.
    pub async fn find<C: ConnectionTrait>(
        &self,
        conn: &C,
        consumer: &str,
        event_id: &str,
    ) -> Result<Option<InboxEntry>, StorageError> {
        let stmt = Query::select()
            .columns(Inbox::iter())
            .from(self.name.alias())
            .and_where(Expr::col(Inbox::Consumer).eq(consumer))
            .and_where(Expr::col(Inbox::EventId).eq(event_id))
            .to_owned();
        Ok(
            InboxEntry::find_by_statement(conn.get_database_backend().build(&stmt))
                .one(conn)
                .await?,
        )
    }
}
