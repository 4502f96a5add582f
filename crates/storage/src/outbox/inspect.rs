use sea_orm::sea_query::{Expr, Func, Order, Query};
use sea_orm::{ConnectionTrait, QueryResult};
use smartflow_domain::OutboxStatus;

use super::{get, status_is, OutboxTable};
use crate::schema::Outbox;
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
    pub oldest_pending_created_at: Option<i64>,
}

const ROW_COLUMNS: [Outbox; 14] = [
    Outbox::Id,
    Outbox::EventId,
    Outbox::EventType,
    Outbox::MessageKey,
    Outbox::Payload,
    Outbox::Status,
    Outbox::RetryCount,
    Outbox::MaxRetry,
    Outbox::NextRetryAt,
    Outbox::LastError,
    Outbox::LockedBy,
    Outbox::CreatedAt,
    Outbox::PublishedAt,
    Outbox::ConsumedAt,
];

impl OutboxTable {
    /// The row of one event, if it exists.
    pub async fn find<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_id: &str,
    ) -> Result<Option<OutboxRow>, StorageError> {
        let stmt = Query::select()
            .columns(ROW_COLUMNS)
            .from(self.alias())
            .and_where(Expr::col(Outbox::EventId).eq(event_id))
            .to_owned();
        let row = conn
            .query_one(conn.get_database_backend().build(&stmt))
            .await?;
        row.map(|r| self.row(&r)).transpose()
    }

    /// Rows in one status, oldest first, at most `limit`.
    pub async fn list<C: ConnectionTrait>(
        &self,
        conn: &C,
        status: OutboxStatus,
        limit: u64,
    ) -> Result<Vec<OutboxRow>, StorageError> {
        let stmt = Query::select()
            .columns(ROW_COLUMNS)
            .from(self.alias())
            .and_where(status_is(status))
            .order_by(Outbox::Id, Order::Asc)
            .limit(limit)
            .to_owned();
        let rows = conn
            .query_all(conn.get_database_backend().build(&stmt))
            .await?;
        rows.iter().map(|r| self.row(r)).collect()
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
        let mut stmt = Query::select()
            .column(Outbox::Status)
            .expr_as(
                Func::count(Expr::col(Outbox::Id)),
                sea_orm::sea_query::Alias::new("n"),
            )
            .expr_as(
                Func::min(Expr::col(Outbox::CreatedAt)),
                sea_orm::sea_query::Alias::new("oldest"),
            )
            .from(self.alias())
            .group_by_col(Outbox::Status)
            .to_owned();
        if let Some(event_type) = event_type {
            stmt.and_where(Expr::col(Outbox::EventType).eq(event_type));
        }
        let mut stats = OutboxStats::default();
        for row in conn.query_all(backend.build(&stmt)).await? {
            let status: String = get(&row, self.name(), "status")?;
            let n: i64 = get(&row, self.name(), "n")?;
            let n = n.max(0) as u64;
            match status.parse::<OutboxStatus>()? {
                OutboxStatus::Pending => {
                    stats.pending = n;
                    stats.oldest_pending_created_at = get(&row, self.name(), "oldest")?;
                }
                OutboxStatus::Published => stats.published = n,
                OutboxStatus::Consumed => stats.consumed = n,
                OutboxStatus::Dead => stats.dead = n,
            }
        }
        Ok(stats)
    }

    fn row(&self, r: &QueryResult) -> Result<OutboxRow, StorageError> {
        let t = self.name();
        let status: String = get(r, t, "status")?;
        Ok(OutboxRow {
            id: get(r, t, "id")?,
            event_id: get(r, t, "event_id")?,
            event_type: get(r, t, "event_type")?,
            message_key: get(r, t, "message_key")?,
            payload: get(r, t, "payload")?,
            status: status.parse()?,
            retry_count: get(r, t, "retry_count")?,
            max_retry: get(r, t, "max_retry")?,
            next_retry_at: get(r, t, "next_retry_at")?,
            last_error: get(r, t, "last_error")?,
            locked_by: get(r, t, "locked_by")?,
            created_at: get(r, t, "created_at")?,
            published_at: get(r, t, "published_at")?,
            consumed_at: get(r, t, "consumed_at")?,
        })
    }
}
