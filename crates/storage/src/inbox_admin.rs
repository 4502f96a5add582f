//! What an operator does to an inbox table (the `smartflow inbox` commands): counts, rows by
//! filter, the rows of one event, and old rows deleted in bounded batches.
//!
//! An inbox row holds no copy of its event, so there is nothing to send again from here: a
//! `dead` inbox row only says a consumer gave up on an event another service published.

use std::collections::BTreeMap;

use sea_orm::sea_query::{Alias, Condition, Expr, Func, Order, Query, SelectStatement, Value};
use sea_orm::{ActiveEnum, ConnectionTrait, FromQueryResult, Iterable};

use crate::admin_query::{count_where, dead_reasons, delete_in_batches, Clauses};
use crate::entity::inbox::{Column as Inbox, InboxStatus, Model as InboxEntry};
use crate::inbox::InboxTable;
use crate::outbox::MAX_BATCH;
use crate::StorageError;

/// Which inbox rows an admin command is about; every field left empty matches every row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxFilter {
    pub status: Option<InboxStatus>,
    pub event_type: Option<String>,
    pub consumer: Option<String>,
    pub event_id: Option<String>,
    /// Rows handled before this instant (Unix milliseconds).
    pub handled_before: Option<i64>,
    /// Rows whose `last_error` contains this text, in any letter case.
    pub reason_contains: Option<String>,
}

impl InboxFilter {
    fn condition(&self) -> Condition {
        Clauses::new()
            .equals(Inbox::Status, self.status)
            .equals(Inbox::EventType, self.event_type.as_deref())
            .equals(Inbox::Consumer, self.consumer.as_deref())
            .equals(Inbox::EventId, self.event_id.as_deref())
            .before(Inbox::HandledAt, self.handled_before)
            .contains(Inbox::LastError, self.reason_contains.as_deref())
            .condition()
    }
}

/// What `smartflow inbox stats` shows of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxReport {
    /// Rows per consumer and status (`handled`, `dead`).
    pub counts: BTreeMap<String, InboxCounts>,
    /// `(last_error, rows)` over the `dead` rows, most frequent first, at most
    /// [`TOP_REASONS`](crate::outbox::TOP_REASONS).
    pub dead_reasons: Vec<(Option<String>, u64)>,
}

/// One consumer's rows of an inbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxCounts {
    pub handled: u64,
    pub dead: u64,
    pub oldest_handled_at: Option<i64>,
}

#[derive(FromQueryResult)]
struct ConsumerCount {
    consumer: String,
    status: InboxStatus,
    n: i64,
    oldest: Option<i64>,
}

#[derive(FromQueryResult)]
struct Key {
    consumer: String,
    event_id: String,
}

impl InboxTable {
    fn table(&self) -> Alias {
        Alias::new(self.name())
    }

    /// The counts per consumer and status and the most frequent reasons rows died of.
    pub async fn report<C: ConnectionTrait>(&self, conn: &C) -> Result<InboxReport, StorageError> {
        let backend = conn.get_database_backend();
        let counts = Query::select()
            .column(Inbox::Consumer)
            .column(Inbox::Status)
            .expr_as(Func::count(Expr::col(Inbox::EventId)), Alias::new("n"))
            .expr_as(Func::min(Expr::col(Inbox::HandledAt)), Alias::new("oldest"))
            .from(self.table())
            .group_by_col(Inbox::Consumer)
            .group_by_col(Inbox::Status)
            .to_owned();
        let mut report = InboxReport::default();
        for line in ConsumerCount::find_by_statement(backend.build(&counts))
            .all(conn)
            .await?
        {
            let entry = report.counts.entry(line.consumer).or_default();
            match line.status {
                InboxStatus::Handled => entry.handled = line.n.max(0) as u64,
                InboxStatus::Dead => entry.dead = line.n.max(0) as u64,
            }
            entry.oldest_handled_at = match (entry.oldest_handled_at, line.oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        report.dead_reasons = dead_reasons(
            conn,
            self.table(),
            Inbox::EventId,
            Inbox::LastError,
            Expr::col(Inbox::Status).eq(Into::<Value>::into(InboxStatus::Dead)),
        )
        .await?;
        Ok(report)
    }

    /// The rows `filter` matches, oldest first, at most `limit`.
    pub async fn list_matching<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &InboxFilter,
        limit: u64,
    ) -> Result<Vec<InboxEntry>, StorageError> {
        let stmt = Query::select()
            .columns(Inbox::iter())
            .from(self.table())
            .cond_where(filter.condition())
            .order_by(Inbox::HandledAt, Order::Asc)
            .order_by(Inbox::Consumer, Order::Asc)
            .order_by(Inbox::EventId, Order::Asc)
            .limit(limit)
            .to_owned();
        Ok(
            InboxEntry::find_by_statement(conn.get_database_backend().build(&stmt))
                .all(conn)
                .await?,
        )
    }

    /// How many rows `filter` matches.
    pub async fn count_matching<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &InboxFilter,
    ) -> Result<u64, StorageError> {
        count_where(conn, self.table(), Inbox::EventId, filter.condition()).await
    }

    /// Deletes the rows `filter` matches, at most `batch` (capped at [`MAX_BATCH`]) per
    /// statement, until none is left; returns how many went. As the outbox's purge: the keys of
    /// a batch are read first, then deleted under the same conditions, each statement short.
    ///
    /// A deleted `handled` row no longer marks its event as applied: purge only what is older
    /// than the retention of the topics its consumers read, or a redelivery applies it again.
    pub async fn purge<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &InboxFilter,
        batch: u64,
    ) -> Result<u64, StorageError> {
        delete_in_batches(batch, |size| self.purge_one_batch(conn, filter, size)).await
    }

    /// One batch of [`purge`](Self::purge): returns how many rows were found (fewer than
    /// `batch`: none is left) and how many went.
    pub async fn purge_one_batch<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &InboxFilter,
        batch: u64,
    ) -> Result<(u64, u64), StorageError> {
        let batch = batch.clamp(1, MAX_BATCH);
        let backend = conn.get_database_backend();
        let select: SelectStatement = Query::select()
            .columns([Inbox::Consumer, Inbox::EventId])
            .from(self.table())
            .cond_where(filter.condition())
            .order_by(Inbox::Consumer, Order::Asc)
            .order_by(Inbox::EventId, Order::Asc)
            .limit(batch)
            .to_owned();
        let keys = Key::find_by_statement(backend.build(&select))
            .all(conn)
            .await?;
        let found = keys.len() as u64;
        let mut by_consumer: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in keys {
            by_consumer
                .entry(key.consumer)
                .or_default()
                .push(key.event_id);
        }
        let mut went = 0;
        for (consumer, event_ids) in by_consumer {
            let delete = Query::delete()
                .from_table(self.table())
                .cond_where(filter.condition())
                .and_where(Expr::col(Inbox::Consumer).eq(consumer))
                .and_where(Expr::col(Inbox::EventId).is_in(event_ids))
                .to_owned();
            went += conn.execute(backend.build(&delete)).await?.rows_affected();
        }
        Ok((found, went))
    }
}

impl InboxStatus {
    /// Every status.
    pub fn all() -> impl Iterator<Item = InboxStatus> {
        <InboxStatus as Iterable>::iter()
    }

    /// The status's one stored spelling.
    pub fn name(self) -> String {
        ActiveEnum::to_value(&self)
    }

    /// The status spelled `text`, if any.
    pub fn parse(text: &str) -> Option<InboxStatus> {
        InboxStatus::try_from_value(&text.to_owned()).ok()
    }
}
