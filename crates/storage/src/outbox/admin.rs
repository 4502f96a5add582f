//! What an operator does to an outbox table (the `smartflow outbox` commands): counts and
//! histograms, rows by filter, one row in full, `dead` rows sent again with the redrive recorded
//! in the row, and settled rows deleted in bounded batches.

use sea_orm::sea_query::{
    Alias, Cond, Condition, DeleteStatement, Expr, Func, Order, Query, SelectStatement, SimpleExpr,
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, FromQueryResult, QueryResult, TransactionTrait,
};
use smartflow_domain::OutboxStatus;

use super::{status_is, status_of_picked_is, stored, OutboxRow, OutboxStats, OutboxTable};
use crate::admin_query::{count_where, dead_reasons, delete_in_batches, Clauses};
use crate::catalog::column_exists;
use crate::entity::outbox::{Column as Outbox, Model};
use crate::{now_millis, StorageError};

/// How many ids one redrive or purge statement names: far below every backend's limit on bound
/// parameters, and a batch short enough that its locks are held only briefly.
pub const MAX_BATCH: u64 = 1000;

/// How many distinct reasons [`OutboxTable::report`] lists for `dead` rows, most frequent first.
pub const TOP_REASONS: u64 = 20;

/// The columns `add_redrive_history` (smartflow-migrations) adds to an outbox table.
const REDRIVE_COUNT: &str = "redrive_count";
const LAST_REDRIVEN_AT: &str = "last_redriven_at";

/// Which rows an admin command is about; every field left empty matches every row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxFilter {
    pub status: Option<OutboxStatus>,
    pub event_type: Option<String>,
    pub message_key: Option<String>,
    /// Rows created before this instant (Unix milliseconds).
    pub created_before: Option<i64>,
    /// Rows whose `last_error` contains this text, in any letter case.
    pub reason_contains: Option<String>,
    /// Rows with one of these ids.
    pub ids: Vec<i64>,
}

impl OutboxFilter {
    fn condition(&self, table: &OutboxTable) -> Condition {
        Clauses::new()
            .with(
                self.status
                    .map(|status| table.effective_status().eq(stored(status))),
            )
            .equals(Outbox::EventType, self.event_type.as_deref())
            .equals(Outbox::MessageKey, self.message_key.as_deref())
            .before(Outbox::CreatedAt, self.created_before)
            .contains(Outbox::LastError, self.reason_contains.as_deref())
            .with((!self.ids.is_empty()).then(|| Expr::col(Outbox::Id).is_in(self.ids.clone())))
            .condition()
    }
}

/// How often an operator sent a row again, where the table keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedriveHistory {
    pub redrive_count: i32,
    pub last_redriven_at: Option<i64>,
}

/// One outbox row with every column an operator may want: [`OutboxRow`] and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub row: OutboxRow,
    pub event_version: i32,
    pub topic: String,
    pub traceparent: Option<String>,
    pub locked_until: Option<i64>,
    pub updated_at: i64,
    /// `None` when the table has no redrive history columns.
    pub redrive: Option<RedriveHistory>,
}

/// What `smartflow outbox stats` shows of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxReport {
    /// Rows per status and the oldest `pending` row's creation time.
    pub counts: OutboxStats,
    /// `(retry_count, rows)` over the rows not `consumed`, by ascending `retry_count`.
    pub retries: Vec<(i32, u64)>,
    /// `(last_error, rows)` over the `dead` rows, most frequent first, at most [`TOP_REASONS`].
    pub dead_reasons: Vec<(Option<String>, u64)>,
}

/// The settled statuses a purge may delete: never a row the relay still works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SettledStatus {
    Consumed,
    Dead,
    /// A `Delivery::StoreOnly` route's rows, purged only when named.
    Stored,
}

impl SettledStatus {
    pub fn status(self) -> OutboxStatus {
        match self {
            SettledStatus::Consumed => OutboxStatus::Consumed,
            SettledStatus::Dead => OutboxStatus::Dead,
            SettledStatus::Stored => OutboxStatus::Stored,
        }
    }
}

/// Which rows a purge deletes: in one of `statuses`, last changed (`updated_at`: consumed, or
/// given up on) before `settled_before` (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxPurge {
    pub statuses: Vec<SettledStatus>,
    pub settled_before: i64,
}

impl OutboxPurge {
    fn condition(&self) -> Condition {
        Cond::all()
            .add(Expr::col(Outbox::Status).is_in(self.statuses.iter().map(|s| stored(s.status()))))
            .add(Expr::col(Outbox::UpdatedAt).lt(self.settled_before))
    }
}

#[derive(FromQueryResult)]
struct RetryBucket {
    retry_count: i32,
    n: i64,
}

#[derive(FromQueryResult)]
struct Id {
    id: i64,
}

impl OutboxTable {
    /// Whether this table has the redrive history columns (`add_redrive_history`).
    pub async fn has_redrive_history<C: ConnectionTrait>(
        &self,
        conn: &C,
    ) -> Result<bool, StorageError> {
        Ok(column_exists(conn, self.name(), REDRIVE_COUNT).await?
            && column_exists(conn, self.name(), LAST_REDRIVEN_AT).await?)
    }

    /// Fails with [`StorageError::NoCommitCursor`] unless this table and its shard table have
    /// the commit cursor's columns (`add_commit_cursor`), which the relay and every reader of
    /// the table's statuses use.
    pub async fn check_commit_cursor<C: ConnectionTrait>(
        &self,
        conn: &C,
    ) -> Result<(), StorageError> {
        let shards = self.shards_table_name();
        let mut present = column_exists(conn, self.name(), "txid").await?;
        for column in ["sent_txid", "sent_id", "check_txid", "check_id", "check_at"] {
            present = present && column_exists(conn, shards, column).await?;
        }
        if present {
            Ok(())
        } else {
            Err(StorageError::NoCommitCursor {
                table: self.name().to_owned(),
            })
        }
    }

    /// The counts per status, the retry histogram and the most frequent reasons rows died of.
    pub async fn report<C: ConnectionTrait>(&self, conn: &C) -> Result<OutboxReport, StorageError> {
        let backend = conn.get_database_backend();
        let counts = self.stats(conn).await?;
        let retries = Query::select()
            .column(Outbox::RetryCount)
            .expr_as(Func::count(Expr::col(Outbox::Id)), Alias::new("n"))
            .from(self.alias())
            .and_where(
                Expr::col(Outbox::Status)
                    .is_not_in([stored(OutboxStatus::Consumed), stored(OutboxStatus::Stored)]),
            )
            .group_by_col(Outbox::RetryCount)
            .order_by(Outbox::RetryCount, Order::Asc)
            .to_owned();
        let retries = RetryBucket::find_by_statement(backend.build(&retries))
            .all(conn)
            .await?
            .into_iter()
            .map(|b| (b.retry_count, b.n.max(0) as u64))
            .collect();
        let dead_reasons = dead_reasons(
            conn,
            self.alias(),
            Outbox::Id,
            Outbox::LastError,
            status_is(OutboxStatus::Dead),
        )
        .await?;
        Ok(OutboxReport {
            counts,
            retries,
            dead_reasons,
        })
    }

    /// The rows `filter` matches, in id order, at most `limit`.
    pub async fn list_matching<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &OutboxFilter,
        limit: u64,
    ) -> Result<Vec<OutboxRecord>, StorageError> {
        let (mut stmt, history) = self.select_records(conn).await?;
        stmt.cond_where(filter.condition(self))
            .order_by(Outbox::Id, Order::Asc)
            .limit(limit);
        records(conn, &stmt, history).await
    }

    /// How many rows `filter` matches.
    pub async fn count_matching<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &OutboxFilter,
    ) -> Result<u64, StorageError> {
        self.count_where(conn, filter.condition(self)).await
    }

    /// One row in full, by id.
    pub async fn record_by_id<C: ConnectionTrait>(
        &self,
        conn: &C,
        id: i64,
    ) -> Result<Option<OutboxRecord>, StorageError> {
        self.one_record(conn, Expr::col(Outbox::Id).eq(id)).await
    }

    /// One row in full, by event id.
    pub async fn record_by_event_id<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_id: &str,
    ) -> Result<Option<OutboxRecord>, StorageError> {
        self.one_record(conn, Expr::col(Outbox::EventId).eq(event_id))
            .await
    }

    async fn one_record<C: ConnectionTrait>(
        &self,
        conn: &C,
        which: SimpleExpr,
    ) -> Result<Option<OutboxRecord>, StorageError> {
        let (mut stmt, history) = self.select_records(conn).await?;
        stmt.and_where(which);
        Ok(records(conn, &stmt, history).await?.into_iter().next())
    }

    /// The ids of the `dead` rows `filter` matches (whatever status it names), in id order.
    pub async fn dead_ids<C: ConnectionTrait>(
        &self,
        conn: &C,
        filter: &OutboxFilter,
    ) -> Result<Vec<i64>, StorageError> {
        let stmt = Query::select()
            .column(Outbox::Id)
            .from(self.alias())
            .cond_where(filter.condition(self))
            .and_where(status_is(OutboxStatus::Dead))
            .order_by(Outbox::Id, Order::Asc)
            .to_owned();
        select_ids(conn, &stmt).await
    }

    /// Sends the `dead` rows among `ids` again, as [`redrive`](Self::redrive) does, and records
    /// each redrive in the row (`redrive_count + 1`, `last_redriven_at`). Works in transactions
    /// of at most [`MAX_BATCH`] rows; returns how many rows moved. Rows that are not `dead` (a
    /// consumer applied the event meanwhile, or it was redriven already) are left alone and not
    /// counted. Refused for a table without the history columns.
    pub async fn redrive_recorded(
        &self,
        db: &DatabaseConnection,
        ids: &[i64],
    ) -> Result<u64, StorageError> {
        if !self.has_redrive_history(db).await? {
            return Err(StorageError::NoRedriveHistory {
                table: self.name().to_owned(),
            });
        }
        let mut moved = 0;
        for batch in ids.chunks(MAX_BATCH as usize) {
            let txn = db.begin().await?;
            let now = now_millis();
            let dead_in_batch = || {
                Cond::all()
                    .add(Expr::col(Outbox::Id).is_in(batch.to_vec()))
                    .add(status_of_picked_is(OutboxStatus::Dead))
            };
            // First the history, which also takes the rows' write locks (PostgreSQL, MySQL; the
            // whole database on SQLite): the rows it marked stay `dead` until the commit, and
            // exactly those are moved, not a row another writer made dead in between.
            let mark = Query::update()
                .table(self.alias())
                .value(
                    Alias::new(REDRIVE_COUNT),
                    Expr::col(Alias::new(REDRIVE_COUNT)).add(1),
                )
                .value(Alias::new(LAST_REDRIVEN_AT), now)
                .cond_where(dead_in_batch())
                .to_owned();
            txn.execute(txn.get_database_backend().build(&mark)).await?;
            let marked = Query::select()
                .column(Outbox::Id)
                .from(self.alias())
                .cond_where(dead_in_batch())
                .and_where(Expr::col(Alias::new(LAST_REDRIVEN_AT)).eq(now))
                .to_owned();
            let marked = select_ids(&txn, &marked).await?;
            moved += self.redrive(&txn, &marked).await?;
            txn.commit().await?;
        }
        Ok(moved)
    }

    /// How many rows [`purge`](Self::purge) would delete now.
    pub async fn count_purgeable<C: ConnectionTrait>(
        &self,
        conn: &C,
        purge: &OutboxPurge,
    ) -> Result<u64, StorageError> {
        self.count_where(conn, purge.condition()).await
    }

    /// Deletes the rows `purge` names, at most `batch` (capped at [`MAX_BATCH`]) per statement,
    /// oldest ids first, until none is left; returns how many went. Each batch is its own short
    /// statement (its ids are read first, then deleted under the same conditions, so a row that
    /// was redriven meanwhile stays), so the table is never locked for long and the work already
    /// done stays done if a later batch fails.
    pub async fn purge<C: ConnectionTrait>(
        &self,
        conn: &C,
        purge: &OutboxPurge,
        batch: u64,
    ) -> Result<u64, StorageError> {
        if purge.statuses.is_empty() {
            return Ok(0);
        }
        let condition = purge.condition();
        delete_in_batches(batch, |size| {
            self.delete_one_batch(conn, condition.clone(), size)
        })
        .await
    }

    /// One batch of a purge or of the retention's deletes: the ids of at most `batch`
    /// (capped at [`MAX_BATCH`]) rows `condition` matches are read, oldest first, then deleted
    /// under the same condition (a row that changed meanwhile stays). Returns how many were
    /// found and how many went; fewer found than asked for means none is left.
    pub(super) async fn delete_one_batch<C: ConnectionTrait>(
        &self,
        conn: &C,
        condition: Condition,
        batch: u64,
    ) -> Result<(u64, u64), StorageError> {
        let batch = batch.clamp(1, MAX_BATCH);
        let select = Query::select()
            .column(Outbox::Id)
            .from(self.alias())
            .cond_where(condition.clone())
            .order_by(Outbox::Id, Order::Asc)
            .limit(batch)
            .to_owned();
        let found = select_ids(conn, &select).await?;
        if found.is_empty() {
            return Ok((0, 0));
        }
        let n = found.len() as u64;
        let delete: DeleteStatement = Query::delete()
            .from_table(self.alias())
            .cond_where(condition)
            .and_where(Expr::col(Outbox::Id).is_in(found))
            .to_owned();
        let went = conn
            .execute(conn.get_database_backend().build(&delete))
            .await?
            .rows_affected();
        Ok((n, went))
    }

    async fn count_where<C: ConnectionTrait>(
        &self,
        conn: &C,
        condition: Condition,
    ) -> Result<u64, StorageError> {
        count_where(conn, self.alias(), Outbox::Id, condition).await
    }

    /// Every column, and the redrive history where the table has it (then `true`).
    pub(super) async fn select_records<C: ConnectionTrait>(
        &self,
        conn: &C,
    ) -> Result<(SelectStatement, bool), StorageError> {
        let mut stmt = self.select_rows();
        let history = self.has_redrive_history(conn).await?;
        if history {
            stmt.column(Alias::new(REDRIVE_COUNT))
                .column(Alias::new(LAST_REDRIVEN_AT));
        }
        Ok((stmt, history))
    }
}

pub(super) async fn records<C: ConnectionTrait>(
    conn: &C,
    stmt: &SelectStatement,
    history: bool,
) -> Result<Vec<OutboxRecord>, StorageError> {
    let rows = conn
        .query_all(conn.get_database_backend().build(stmt))
        .await?;
    rows.iter().map(|row| record(row, history)).collect()
}

fn record(result: &QueryResult, history: bool) -> Result<OutboxRecord, StorageError> {
    let model = Model::from_query_result(result, "")?;
    let redrive = if history {
        Some(RedriveHistory {
            redrive_count: result.try_get("", REDRIVE_COUNT)?,
            last_redriven_at: result.try_get("", LAST_REDRIVEN_AT)?,
        })
    } else {
        None
    };
    Ok(OutboxRecord {
        event_version: model.event_version,
        topic: model.topic.clone(),
        traceparent: model.traceparent.clone(),
        locked_until: model.locked_until,
        updated_at: model.updated_at,
        redrive,
        row: OutboxRow::from(model),
    })
}

async fn select_ids<C: ConnectionTrait>(
    conn: &C,
    stmt: &SelectStatement,
) -> Result<Vec<i64>, StorageError> {
    Ok(
        Id::find_by_statement(conn.get_database_backend().build(stmt))
            .all(conn)
            .await?
            .into_iter()
            .map(|row| row.id)
            .collect(),
    )
}
