use sea_orm::sea_query::{Alias, Expr, Func, Order, Query, SelectStatement, SimpleExpr};
use sea_orm::{ConnectionTrait, FromQueryResult, Iterable};
use smartflow_domain::OutboxStatus;

use super::{stored, OutboxTable};
use crate::entity::outbox::{Column as Outbox, Model, Status};
use crate::StorageError;

/// One outbox row as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub message_key: String,
    pub payload: String,
    pub status: OutboxStatus,
    pub retry_count: i32,
    pub max_retry: i32,
    pub next_retry_at: Option<i64>,
    pub last_error: Option<String>,
    pub locked_by: Option<String>,
    pub created_at: i64,
    pub published_at: Option<i64>,
    pub consumed_at: Option<i64>,
}

/// Counts per status and the age of the oldest `pending` row: the backlog gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub pending: u64,
    pub published: u64,
    pub consumed: u64,
    pub dead: u64,
    /// Rows of a `Delivery::StoreOnly` route, kept for the record and never published.
    pub stored: u64,
    pub oldest_pending_created_at: Option<i64>,
}

impl From<Model> for OutboxRow {
    fn from(row: Model) -> Self {
        OutboxRow {
            id: row.id,
            event_id: row.event_id,
            event_type: row.event_type,
            message_key: row.message_key,
            payload: row.payload,
            status: row.status.into(),
            retry_count: row.retry_count,
            max_retry: row.max_retry,
            next_retry_at: row.next_retry_at,
            last_error: row.last_error,
            locked_by: row.locked_by,
            created_at: row.created_at,
            published_at: row.published_at,
            consumed_at: row.consumed_at,
        }
    }
}

/// One line of the per-status count.
#[derive(FromQueryResult)]
struct StatusCount {
    status: Status,
    n: i64,
    oldest: Option<i64>,
}

impl OutboxTable {
    /// The row of one event, if it exists.
    pub async fn find<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_id: &str,
    ) -> Result<Option<OutboxRow>, StorageError> {
        let stmt = self
            .select_rows()
            .and_where(Expr::col(Outbox::EventId).eq(event_id))
            .to_owned();
        let row = Model::find_by_statement(conn.get_database_backend().build(&stmt))
            .one(conn)
            .await?;
        Ok(row.map(OutboxRow::from))
    }

    /// Rows in one status, oldest first, at most `limit`.
    pub async fn list<C: ConnectionTrait>(
        &self,
        conn: &C,
        status: OutboxStatus,
        limit: u64,
    ) -> Result<Vec<OutboxRow>, StorageError> {
        let stmt = self
            .select_rows()
            .and_where(self.effective_status().eq(stored(status)))
            .order_by(Outbox::Id, Order::Asc)
            .limit(limit)
            .to_owned();
        let rows = Model::find_by_statement(conn.get_database_backend().build(&stmt))
            .all(conn)
            .await?;
        Ok(rows.into_iter().map(OutboxRow::from).collect())
    }

    /// Every column, with the status as the bus means it ([`effective_status`](Self::effective_status)).
    pub(super) fn select_rows(&self) -> SelectStatement {
        Query::select()
            .columns(Outbox::iter().filter(|c| !matches!(c, Outbox::Status)))
            .expr_as(self.effective_status(), Alias::new("status"))
            .from(self.alias())
            .to_owned()
    }

    /// A row's status as the bus means it: the stored one, except that a row its shard's cursor
    /// has sent is `published` (the cursor spares the relay writing that into each row).
    pub(super) fn effective_status(&self) -> SimpleExpr {
        Expr::case(self.sent_by_cursor(), stored(OutboxStatus::Published))
            .finally(Expr::col((self.alias(), Outbox::Status)))
            .into()
    }

    /// Counts per status and the oldest pending row's creation time.
    pub async fn stats<C: ConnectionTrait>(&self, conn: &C) -> Result<OutboxStats, StorageError> {
        self.stats_where(conn, None).await
    }

    /// The same counts over the rows of one event type: a service's own events, apart from the
    /// rows of its outbox that only other services consume (those end `published`).
    pub async fn stats_of_type<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_type: &str,
    ) -> Result<OutboxStats, StorageError> {
        self.stats_where(conn, Some(event_type)).await
    }

    async fn stats_where<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_type: Option<&str>,
    ) -> Result<OutboxStats, StorageError> {
        let backend = conn.get_database_backend();
        // Grouped outside a subquery: PostgreSQL would not take the same `CASE` with its own
        // bound values as the grouped expression.
        let mut rows = Query::select()
            .expr_as(self.effective_status(), Alias::new("status"))
            .columns([Outbox::Id, Outbox::CreatedAt])
            .from(self.alias())
            .to_owned();
        if let Some(event_type) = event_type {
            rows.and_where(Expr::col(Outbox::EventType).eq(event_type));
        }
        let rows_alias = Alias::new("r");
        let stmt = Query::select()
            .column(Outbox::Status)
            .expr_as(Func::count(Expr::col(Outbox::Id)), Alias::new("n"))
            .expr_as(
                Func::min(Expr::col(Outbox::CreatedAt)),
                Alias::new("oldest"),
            )
            .from_subquery(rows, rows_alias)
            .group_by_col(Outbox::Status)
            .to_owned();
        let mut stats = OutboxStats::default();
        for count in StatusCount::find_by_statement(backend.build(&stmt))
            .all(conn)
            .await?
        {
            let n = count.n.max(0) as u64;
            match OutboxStatus::from(count.status) {
                OutboxStatus::Pending => {
                    stats.pending = n;
                    stats.oldest_pending_created_at = count.oldest;
                }
                OutboxStatus::Published => stats.published = n,
                OutboxStatus::Consumed => stats.consumed = n,
                OutboxStatus::Dead => stats.dead = n,
                OutboxStatus::Stored => stats.stored = n,
            }
        }
        Ok(stats)
    }
}
