use std::collections::HashSet;
use std::time::Duration;

use sea_orm::sea_query::{Expr, LockType, Query, SimpleExpr, UpdateStatement, Value};
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult};
use smartflow_domain::{OutboxStatus, RetryPolicy};

use super::{may_move_to, picked_may_move_to, status_is, stored, EventIdRow, OutboxTable};
use crate::entity::outbox::Column as Outbox;
use crate::error_text::truncate;
use crate::time::millis;
use crate::{now_millis, StorageError};

/// What `record_failure` did to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Back to `pending`; the relay publishes it again at `next_retry_at`.
    Retrying {
        next_retry_at: i64,
    },
    Dead,
    /// The row was already `dead` (a dead event's copy reached the consumer and failed again):
    /// it stays dead with its first reason.
    StillDead,
    /// The row is already `consumed` (or gone); nothing changed.
    Untouched,
}

/// Event ids per statement of a set-based mark: a bounded `IN` list on every backend.
pub(crate) const IDS_PER_STATEMENT: usize = 1000;

/// What a failure is counted against.
#[derive(FromQueryResult)]
struct Attempts {
    retry_count: i32,
    max_retry: i32,
}

impl OutboxTable {
    /// Marks the row of `event_id` `consumed` unless it already is. Run it in the transaction
    /// that holds the handler's writes: `true` means this transaction owns the event's effect
    /// (also for a `dead` row: an event that reached its consumer is applied, never skipped);
    /// `false` means another delivery already applied it (skip the handler).
    pub async fn mark_consumed<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_id: &str,
    ) -> Result<bool, StorageError> {
        let stmt = self.mark_consumed_statement(Expr::col(Outbox::EventId).eq(event_id));
        let res = conn
            .execute(conn.get_database_backend().build(&stmt))
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Marks the rows of `event_ids` `consumed` at once, as [`mark_consumed`](Self::mark_consumed)
    /// does one by one: returns the ids this transaction now owns the effect of (the others were
    /// applied already, or have no row). `None` means another writer changed one of them between
    /// this call's two statements on MySQL/MariaDB (which has no `UPDATE ... RETURNING`; the rows
    /// are locked by the first, so this should not happen): the caller rolls back to a savepoint
    /// and goes one by one.
    ///
    /// On PostgreSQL and SQLite it is one `UPDATE ... RETURNING` per chunk, so the consumer's
    /// transaction writes with its first statement: a SQLite transaction that read first could
    /// not write at all after another connection's commit (`SQLITE_BUSY_SNAPSHOT`, which no
    /// waiting cures), and with relays committing all the time its batches would fail again and
    /// again.
    pub async fn mark_consumed_all<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_ids: &[&str],
    ) -> Result<Option<HashSet<String>>, StorageError> {
        let backend = conn.get_database_backend();
        let mut fresh = HashSet::new();
        for chunk in event_ids.chunks(IDS_PER_STATEMENT) {
            let picked = || Expr::col(Outbox::EventId).is_in(chunk.iter().copied());
            if backend != DbBackend::MySql {
                let mut update = self.mark_consumed_statement(picked());
                update.returning_col(Outbox::EventId);
                let marked = EventIdRow::find_by_statement(backend.build(&update))
                    .all(conn)
                    .await?;
                fresh.extend(marked.into_iter().map(|r| r.event_id));
                continue;
            }
            let select = Query::select()
                .column(Outbox::EventId)
                .from(self.alias())
                .and_where(picked())
                .and_where(picked_may_move_to(OutboxStatus::Consumed))
                .lock(LockType::Update)
                .to_owned();
            let found: Vec<String> = EventIdRow::find_by_statement(backend.build(&select))
                .all(conn)
                .await?
                .into_iter()
                .map(|r| r.event_id)
                .collect();
            if found.is_empty() {
                continue;
            }
            let update = self.mark_consumed_statement(
                Expr::col(Outbox::EventId).is_in(found.iter().map(String::as_str)),
            );
            let moved = conn.execute(backend.build(&update)).await?.rows_affected();
            if moved != found.len() as u64 {
                return Ok(None);
            }
            fresh.extend(found);
        }
        Ok(Some(fresh))
    }

    /// `consumed` for the rows `which` selects that may move there.
    fn mark_consumed_statement(&self, which: SimpleExpr) -> UpdateStatement {
        let now = now_millis();
        Query::update()
            .table(self.alias())
            .value(Outbox::Status, stored(OutboxStatus::Consumed))
            .value(Outbox::ConsumedAt, now)
            .value(Outbox::NextRetryAt, Value::BigInt(None))
            .value(Outbox::LockedBy, Value::String(None))
            .value(Outbox::LockedUntil, Value::BigInt(None))
            .value(Outbox::UpdatedAt, now)
            .and_where(which)
            .and_where(picked_may_move_to(OutboxStatus::Consumed))
            .to_owned()
    }

    /// Records a failed handling of `event_id`: back to `pending` with backoff when `retryable`
    /// and retries remain, else `dead` with `error` kept. `consumed` and `dead` rows are never
    /// touched. A relay's lease on the row ends here, so a relay that is still waiting for the
    /// broker's answer cannot settle the row over this decision.
    pub async fn record_failure<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_id: &str,
        error: &str,
        retryable: bool,
        policy: &RetryPolicy,
    ) -> Result<FailureOutcome, StorageError> {
        let backend = conn.get_database_backend();
        let select = Query::select()
            .columns([Outbox::RetryCount, Outbox::MaxRetry])
            .from(self.alias())
            .and_where(Expr::col(Outbox::EventId).eq(event_id))
            .and_where(may_move_to(OutboxStatus::Dead))
            .to_owned();
        let Some(Attempts {
            retry_count,
            max_retry,
        }) = Attempts::find_by_statement(backend.build(&select))
            .one(conn)
            .await?
        else {
            return self.settled_outcome(conn, event_id).await;
        };
        let failures = retry_count + 1;
        let now = now_millis();
        let (status, next, outcome) =
            match policy.after_failure(failures as u32, Some(max_retry as u32), retryable) {
                None => (
                    OutboxStatus::Dead,
                    Value::BigInt(None),
                    FailureOutcome::Dead,
                ),
                Some(delay) => {
                    let at = now.saturating_add(millis(delay));
                    (
                        OutboxStatus::Pending,
                        Value::from(at),
                        FailureOutcome::Retrying { next_retry_at: at },
                    )
                }
            };
        // The attempt count in the guard makes a concurrent writer's change win instead of
        // being overwritten.
        let update = Query::update()
            .table(self.alias())
            .value(Outbox::Status, stored(status))
            .value(Outbox::RetryCount, failures)
            .value(Outbox::NextRetryAt, next)
            .value(Outbox::LastError, truncate(error))
            .value(Outbox::LockedBy, Value::String(None))
            .value(Outbox::LockedUntil, Value::BigInt(None))
            .value(Outbox::UpdatedAt, now)
            .and_where(Expr::col(Outbox::EventId).eq(event_id))
            .and_where(Expr::col(Outbox::RetryCount).eq(retry_count))
            .and_where(may_move_to(OutboxStatus::Dead))
            .to_owned();
        let moved = conn.execute(backend.build(&update)).await?.rows_affected();
        if moved == 1 {
            Ok(outcome)
        } else {
            self.settled_outcome(conn, event_id).await
        }
    }

    /// Why a failure could not be recorded: the row is dead already, or consumed (or gone).
    async fn settled_outcome<C: ConnectionTrait>(
        &self,
        conn: &C,
        event_id: &str,
    ) -> Result<FailureOutcome, StorageError> {
        let select = Query::select()
            .column(Outbox::Id)
            .from(self.alias())
            .and_where(Expr::col(Outbox::EventId).eq(event_id))
            .and_where(status_is(OutboxStatus::Dead))
            .to_owned();
        let dead = conn
            .query_one(conn.get_database_backend().build(&select))
            .await?
            .is_some();
        Ok(if dead {
            FailureOutcome::StillDead
        } else {
            FailureOutcome::Untouched
        })
    }

    /// Rows `published` but not `consumed` by their deadline (no consumer ran, it lags, or the
    /// message was lost past the broker's retention) go back to `pending` to be sent again. This
    /// spends none of the row's retries and can never make it `dead`: how long a consumer takes
    /// says nothing about the event. The next deadline grows with the row's age (see `settle`).
    ///
    /// Rows a shard's cursor sent have no deadline of their own: each shard keeps a checkpoint
    /// of its cursor, taken at most every `republish_after`, and the rows at or below a
    /// checkpoint at least `republish_after` old that are still unconsumed are sent again (so
    /// between one and two `republish_after` after they were sent), through the retry lane,
    /// which gives them a deadline of their own. Returns how many rows moved.
    pub async fn requeue_unconsumed<C: ConnectionTrait>(
        &self,
        conn: &C,
        now: i64,
        republish_after: Duration,
    ) -> Result<u64, StorageError> {
        let note = "published but not consumed by its deadline; sent again";
        let overdue =
            status_is(OutboxStatus::Published).and(Expr::col(Outbox::NextRetryAt).lte(now));
        let mut moved = self.requeue_published(conn, now, overdue, note).await?;
        let checked_by = now.saturating_sub(millis(republish_after));
        moved += self
            .requeue_published(conn, now, self.sent_by_checkpoint(checked_by), note)
            .await?;
        self.take_checkpoints(conn, now, checked_by).await?;
        Ok(moved)
    }

    /// Every `published` row (marked so, or sent by its shard's cursor) goes back to `pending`,
    /// whatever its deadline and without spending a retry: for a broker that lost everything it
    /// held, like the in-memory embedded one after a restart. Returns how many rows moved.
    pub async fn requeue_all_published<C: ConnectionTrait>(
        &self,
        conn: &C,
    ) -> Result<u64, StorageError> {
        self.requeue_published(
            conn,
            now_millis(),
            status_is(OutboxStatus::Published).or(self.sent_by_cursor()),
            "published to a broker that has since lost it; sent again",
        )
        .await
    }

    async fn requeue_published<C: ConnectionTrait>(
        &self,
        conn: &C,
        now: i64,
        which: sea_orm::sea_query::SimpleExpr,
        note: &str,
    ) -> Result<u64, StorageError> {
        let again = Query::update()
            .table(self.alias())
            .value(Outbox::Status, stored(OutboxStatus::Pending))
            .value(Outbox::NextRetryAt, now)
            .value(Outbox::LastError, note)
            .value(Outbox::UpdatedAt, now)
            .and_where(which)
            .to_owned();
        Ok(conn
            .execute(conn.get_database_backend().build(&again))
            .await?
            .rows_affected())
    }
}
