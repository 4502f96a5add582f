//! What an operator does to an inbox table (the `smartflow inbox` commands): counts, rows by
//! filter, the rows of one event, and old rows deleted in bounded batches.
//!
//! An inbox row holds no copy of its event, so there is nothing to send again from here: a
//! `dead` inbox row only says a consumer gave up on an event another service published.

use std::collections::BTreeMap;

use sea_orm::sea_query::{
    Alias, Cond, Condition, Expr, Func, Order, Query, SelectStatement, Value,
};
use sea_orm::{ActiveEnum, ConnectionTrait, FromQueryResult, Iterable};

use crate::entity::inbox::{Column as Inbox, InboxStatus, Model as InboxEntry};
use crate::inbox::InboxTable;
use crate::outbox::admin::contains_ignoring_case;
use crate::outbox::{MAX_BATCH, TOP_REASONS};
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
        let mut cond = Cond::all();
        if let Some(status) = self.status {
            cond = cond.add(Expr::col(Inbox::Status).eq(Into::<Value>::into(status)));
        }
        if let Some(event_type) = &self.event_type {
            cond = cond.add(Expr::col(Inbox::EventType).eq(event_type.as_str()));
        }
        if let Some(consumer) = &self.consumer {
            cond = cond.add(Expr::col(Inbox::Consumer).eq(consumer.as_str()));
        }
        if let Some(event_id) = &self.event_id {
            cond = cond.add(Expr::col(Inbox::EventId).eq(event_id.as_str()));
        }
        if let Some(before) = self.handled_before {
            cond = cond.add(Expr::col(Inbox::HandledAt).lt(before));
        }
        if let Some(reason) = &self.reason_contains {
            cond = cond.add(contains_ignoring_case(Inbox::LastError, reason));
        }
        cond
    }
}

/// What `smartflow inbox stats` shows of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxReport {
    /// Rows per consumer and status (`handled`, `dead`).
    pub counts: BTreeMap<String, InboxCounts>,
    /// `(last_error, rows)` over the `dead` rows, most frequent first, at most [`TOP_REASONS`].
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
struct ReasonCount {
    reason: Option<String>,
    n: i64,
}

#[derive(FromQueryResult)]
struct Count {
    n: i64,
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
        let n = Alias::new("n");
        let counts = Query::select()
            .column(Inbox::Consumer)
            .column(Inbox::Status)
            .expr_as(Func::count(Expr::col(Inbox::EventId)), n.clone())
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
        let reasons = Query::select()
            .expr_as(Expr::col(Inbox::LastError), Alias::new("reason"))
            .expr_as(Func::count(Expr::col(Inbox::EventId)), n.clone())
            .from(self.table())
            .and_where(Expr::col(Inbox::Status).eq(Into::<Value>::into(InboxStatus::Dead)))
            .group_by_col(Inbox::LastError)
            .order_by(n, Order::Desc)
            .order_by(Inbox::LastError, Order::Asc)
            .limit(TOP_REASONS)
            .to_owned();
        report.dead_reasons = ReasonCount::find_by_statement(backend.build(&reasons))
            .all(conn)
            .await?
            .into_iter()
            .map(|r| (r.reason, r.n.max(0) as u64))
            .collect();
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
        let stmt = Query::select()
            .expr_as(Func::count(Expr::col(Inbox::EventId)), Alias::new("n"))
            .from(self.table())
            .cond_where(filter.condition())
            .to_owned();
        Ok(
            Count::find_by_statement(conn.get_database_backend().build(&stmt))
                .one(conn)
                .await?
                .map_or(0, |c| c.n.max(0) as u64),
        )
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
        let mut deleted = 0;
        loop {
            let (found, went) = self.purge_one_batch(conn, filter, batch).await?;
            deleted += went;
            if found < batch.clamp(1, MAX_BATCH) {
                return Ok(deleted);
            }
        }
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
