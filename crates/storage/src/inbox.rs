//! The inbox: which events a consumer of another service's events has already handled. Its insert
//! runs in the transaction of the handler's effect, so a duplicate delivery finds the row and
//! changes nothing. A service may keep its inbox under any name
//! (`smartflow_migrations::create_inbox_table`); this workspace's services share [`DEFAULT_INBOX_TABLE`].

use sea_orm::sea_query::{Expr, Query, Value};
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult, Iterable, TransactionTrait};

pub use crate::entity::inbox::{InboxStatus, Model as InboxEntry};

use crate::entity::inbox::Column as Inbox;
use crate::error_text::truncate;
use crate::table_name::TableName;
use crate::{now_millis, StorageError};

/// The inbox of this workspace's services.
pub const DEFAULT_INBOX_TABLE: &str = "inbox";

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
        let status: Value = status.into();
        let stmt = Query::insert()
            .into_table(self.name.alias())
            .columns([
                Inbox::Consumer,
                Inbox::EventId,
                Inbox::EventType,
                Inbox::Status,
                Inbox::LastError,
                Inbox::HandledAt,
            ])
            .values_panic([
                consumer.into(),
                event_id.into(),
                event_type.into(),
                status.into(),
                error.map(truncate).into(),
                now_millis().into(),
            ])
            .to_owned();
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
