use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use sea_orm::sea_query::{Expr, Query, SimpleExpr, Value};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};
use smartflow_domain::{OutboxStatus, RetryPolicy};

use super::claim::{ClaimedRow, CursorRound, HeldRow, Hold};
use super::shards::Cursor;
use super::{status_of_picked_is, stored, Claim, OutboxTable};
use crate::entity::outbox::Column as Outbox;
use crate::error_text::truncate;
use crate::time::millis;
use crate::{now_millis, StorageError};

/// A claimed row whose own failure counts against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishFailure {
    pub id: i64,
    pub error: String,
    /// False for errors that will never pass (the row goes straight to `dead`).
    pub retryable: bool,
}

/// The outcome of publishing a claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Published rows a consumer of this database will mark `consumed`: they get a consumption
    /// deadline, past which they are sent again.
    pub published: Vec<i64>,
    /// Published rows only other services consume (from their own databases, through their
    /// inboxes): nobody here will mark them, so they end `published` with no deadline.
    pub handed_off: Vec<i64>,
    pub failed: Vec<PublishFailure>,
    /// Rows not sent because the broker (not the row) failed: released exactly as they were
    /// claimed, with no attempt counted, so an outage of any length costs no event its retries.
    pub unavailable: Vec<i64>,
}

/// How many rows each settle statement moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettleReport {
    pub published: u64,
    pub retrying: u64,
    pub dead: u64,
    /// Rows handed back untouched because the broker was unavailable.
    pub released: u64,
}

impl OutboxTable {
    /// Records a claim's outcome and releases it. Rows the shards' cursors read and the round
    /// sent in order are recorded by moving each shard's cursor past them (one statement for
    /// every shard), up to the first row the broker was unavailable for or the first row of a
    /// transaction the commit fence does not yet prove alone; one statement marks every other
    /// published row, and one statement per (attempt count, error) group moves failures back to
    /// `pending` with backoff or to `dead`; rows the broker was unavailable for are released
    /// unchanged. Only rows still `pending` (and, under a lease, still ours) move.
    ///
    /// A published row's consumption deadline grows with its age: `now + max(republish_after,
    /// age)`, so a row that is re-sent because no consumer marked it is re-sent at ages that
    /// double, never in a steady stream that would deepen a consumer's lag.
    pub async fn settle(
        &self,
        db: &DatabaseConnection,
        claim: Claim,
        settlement: Settlement,
        policy: &RetryPolicy,
        republish_after: Option<Duration>,
    ) -> Result<SettleReport, StorageError> {
        let Claim {
            rows,
            hold,
            shards,
            cursor,
            ..
        } = claim;
        let (txn, owner) = match hold {
            Hold::Nothing => return Ok(SettleReport::default()),
            Hold::Locks(txn) => (txn, None),
            Hold::Lease { owner } => (db.begin().await?, Some(owner)),
        };
        let backend = txn.get_database_backend();
        let now = now_millis();
        // Only rows still as claimed move: still `pending`, with the attempts they were claimed
        // with (a consumer that recorded a failure meanwhile counted one more, and its decision
        // stands), and under a lease still ours.
        let still_ours = |ids: Vec<i64>, cond: SimpleExpr| -> SimpleExpr {
            let cond = Expr::col(Outbox::Id)
                .is_in(ids)
                .and(status_of_picked_is(OutboxStatus::Pending))
                .and(cond);
            match &owner {
                // Under a lease: rows of shards still leased to this round (a round whose lease
                // ran out and was taken over settles nothing).
                Some(owner) => {
                    cond.and(Expr::col(Outbox::Shard).in_subquery(self.shards_leased_to(owner)))
                }
                None => cond,
            }
        };
        let mine = |ids: Vec<i64>, retry_count: i32| -> SimpleExpr {
            still_ours(ids, Expr::col(Outbox::RetryCount).eq(retry_count))
        };
        let by_id: BTreeMap<i64, (i32, i32)> = rows
            .iter()
            .map(|r| (r.id, (r.retry_count, r.max_retry)))
            .collect();
        let by_attempts = |ids: Vec<i64>| -> BTreeMap<i32, Vec<i64>> {
            let mut groups: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
            for id in ids {
                if let Some(&(retry_count, _)) = by_id.get(&id) {
                    groups.entry(retry_count).or_default().push(id);
                }
            }
            groups
        };
        let mut report = SettleReport::default();
        let mut settlement = settlement;
        let plan = cursor
            .as_ref()
            .map(|round| CursorPlan::new(&rows, round, &settlement));
        if let Some(plan) = &plan {
            settlement.published.retain(|id| !plan.passed.contains(id));
            // Rows held back behind a waiting row of their key join the retry lane, due with
            // that row, so the cursor can pass them.
            let mut by_due: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for held in &plan.moved {
                by_due.entry(held.due).or_default().push(held.id);
            }
            for (due, ids) in by_due {
                let stmt = Query::update()
                    .table(self.alias())
                    .value(Outbox::NextRetryAt, due)
                    .value(Outbox::UpdatedAt, now)
                    .and_where(still_ours(ids, Expr::col(Outbox::NextRetryAt).is_null()))
                    .to_owned();
                txn.execute(backend.build(&stmt)).await?;
            }
        }

        let deadline: SimpleExpr = match republish_after {
            None => Value::BigInt(None).into(),
            Some(after) => consumption_deadline(now, millis(after)),
        };
        for (ids, deadline) in [
            (settlement.published, deadline),
            (settlement.handed_off, Value::BigInt(None).into()),
        ] {
            for (retry_count, ids) in by_attempts(ids) {
                let stmt = Query::update()
                    .table(self.alias())
                    .value(Outbox::Status, stored(OutboxStatus::Published))
                    .value(Outbox::PublishedAt, now)
                    .value(Outbox::NextRetryAt, deadline.clone())
                    .value(Outbox::LockedBy, Value::String(None))
                    .value(Outbox::LockedUntil, Value::BigInt(None))
                    .value(Outbox::UpdatedAt, now)
                    .and_where(mine(ids, retry_count))
                    .to_owned();
                report.published += txn.execute(backend.build(&stmt)).await?.rows_affected();
            }
        }

        // Rows with the same attempt count and error get the same decision: one statement each.
        let mut groups: BTreeMap<(i32, Option<Duration>, String), Vec<i64>> = BTreeMap::new();
        for failure in settlement.failed {
            let Some(&(retry_count, max_retry)) = by_id.get(&failure.id) else {
                continue;
            };
            let retry_in = policy.after_failure(
                (retry_count + 1) as u32,
                Some(max_retry as u32),
                failure.retryable,
            );
            groups
                .entry((retry_count, retry_in, failure.error))
                .or_default()
                .push(failure.id);
        }
        report.released = settlement.unavailable.len() as u64;
        for ((retry_count, retry_in, error), ids) in groups {
            let failures = retry_count + 1;
            let dead = retry_in.is_none();
            let (status, next): (OutboxStatus, Value) = match retry_in {
                None => (OutboxStatus::Dead, Value::BigInt(None)),
                Some(delay) => (
                    OutboxStatus::Pending,
                    now.saturating_add(millis(delay)).into(),
                ),
            };
            let stmt = Query::update()
                .table(self.alias())
                .value(Outbox::Status, stored(status))
                .value(Outbox::RetryCount, failures)
                .value(Outbox::NextRetryAt, next)
                .value(Outbox::LastError, truncate(&error))
                .value(Outbox::LockedBy, Value::String(None))
                .value(Outbox::LockedUntil, Value::BigInt(None))
                .value(Outbox::UpdatedAt, now)
                .and_where(mine(ids, retry_count))
                .to_owned();
            let moved = txn.execute(backend.build(&stmt)).await?.rows_affected();
            if dead {
                report.dead += moved;
            } else {
                report.retrying += moved;
            }
        }
        let advanced = plan.as_ref().map(|p| &p.advanced);
        let moved = self
            .advance_cursors(&txn, &shards, advanced, owner.as_deref())
            .await?;
        // Under a lease taken over meanwhile nothing moved, and the rows are the new holder's
        // to send.
        if let Some(plan) = &plan {
            if owner.is_none() || moved == shards.len() as u64 {
                report.published += plan.passed.len() as u64;
            }
        }
        txn.commit().await?;
        Ok(report)
    }

    /// Sends `dead` rows again (an operator's redrive): back to `pending` with their attempts
    /// reset, due now. Returns how many rows moved; rows that are not `dead` are left alone.
    pub async fn redrive<C: ConnectionTrait>(
        &self,
        conn: &C,
        ids: &[i64],
    ) -> Result<u64, StorageError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let now = now_millis();
        let stmt = Query::update()
            .table(self.alias())
            .value(Outbox::Status, stored(OutboxStatus::Pending))
            .value(Outbox::RetryCount, 0)
            .value(Outbox::NextRetryAt, now)
            .value(Outbox::LockedBy, Value::String(None))
            .value(Outbox::LockedUntil, Value::BigInt(None))
            .value(Outbox::UpdatedAt, now)
            .and_where(Expr::col(Outbox::Id).is_in(ids.to_vec()))
            .and_where(status_of_picked_is(OutboxStatus::Dead))
            .to_owned();
        Ok(conn
            .execute(conn.get_database_backend().build(&stmt))
            .await?
            .rows_affected())
    }

    /// Gives back a claim without publishing (a relay stopping): the rows stay `pending` and
    /// untouched, ready for the next claim.
    pub async fn release(&self, db: &DatabaseConnection, claim: Claim) -> Result<(), StorageError> {
        match claim.hold {
            Hold::Nothing => Ok(()),
            Hold::Locks(txn) => Ok(txn.rollback().await?),
            Hold::Lease { owner } => self.release_shards(db, &owner, &claim.shards).await,
        }
    }
}

/// What the settle of a round read by the cursors does with them.
struct CursorPlan {
    /// Published rows the cursors pass: recorded by the cursors alone, no row written.
    passed: HashSet<i64>,
    /// Held-back rows the cursors pass, to be moved to the retry lane first.
    moved: Vec<HeldRow>,
    /// The shards whose cursor moves, and where to.
    advanced: BTreeMap<i16, Cursor>,
}

impl CursorPlan {
    /// Walks each shard's never-attempted rows (claimed or held back) in `(txid, id)` order
    /// from its cursor and passes every row that is settled by this round: sent, rejected (its
    /// own statement moves it) or held back (moved to the retry lane). It stops at the first row
    /// the broker was unavailable for (it and the rest stay for the next round; the rows after it
    /// that were sent are marked one by one) and at the first row at or above the commit fence
    /// (a transaction below it may still commit a row the cursor must not pass).
    fn new(rows: &[ClaimedRow], round: &CursorRound, settlement: &Settlement) -> Self {
        #[derive(Clone, Copy, PartialEq)]
        enum Outcome {
            Published,
            Settled,
            Unavailable,
        }
        let mut outcome: HashMap<i64, Outcome> = HashMap::new();
        for id in &settlement.published {
            outcome.insert(*id, Outcome::Published);
        }
        for id in &settlement.handed_off {
            outcome.insert(*id, Outcome::Settled);
        }
        for failure in &settlement.failed {
            outcome.insert(failure.id, Outcome::Settled);
        }
        for id in &settlement.unavailable {
            outcome.insert(*id, Outcome::Unavailable);
        }
        // (txid, id, shard, Some(held row) | None for a claimed row)
        let mut fresh: Vec<(i64, i64, i16, Option<&HeldRow>)> = rows
            .iter()
            .filter(|r| r.next_retry_at.is_none())
            .map(|r| (r.txid, r.id, r.shard, None))
            .chain(round.held.iter().map(|h| (h.txid, h.id, h.shard, Some(h))))
            .collect();
        fresh.sort_by_key(|&(txid, id, _, _)| (txid, id));
        let mut plan = CursorPlan {
            passed: HashSet::new(),
            moved: Vec::new(),
            advanced: BTreeMap::new(),
        };
        let mut stopped: HashSet<i16> = HashSet::new();
        for (txid, id, shard, held) in fresh {
            if stopped.contains(&shard) || !round.start.contains_key(&shard) {
                continue;
            }
            if txid >= round.fence {
                stopped.insert(shard);
                continue;
            }
            match (held, outcome.get(&id).copied()) {
                (Some(held), _) => plan.moved.push(held.clone()),
                (None, Some(Outcome::Published)) => {
                    plan.passed.insert(id);
                }
                (None, Some(Outcome::Settled)) => {}
                (None, Some(Outcome::Unavailable) | None) => {
                    stopped.insert(shard);
                    continue;
                }
            }
            plan.advanced.insert(shard, (txid, id));
        }
        plan
    }
}

/// `now + max(after, now - created_at)`: the deadline by which a just-published row must be
/// consumed. Written as a `CASE`, which every backend spells the same way.
fn consumption_deadline(now: i64, after: i64) -> SimpleExpr {
    let age = || Expr::val(now).sub(Expr::col(Outbox::CreatedAt));
    let wait: SimpleExpr = Expr::case(Expr::expr(age()).gt(after), age())
        .finally(Expr::val(after))
        .into();
    Expr::val(now).add(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::DbBackend;

    #[test]
    fn the_deadline_is_one_portable_case_expression() {
        let stmt = Query::update()
            .table(sea_orm::sea_query::Alias::new("o"))
            .value(Outbox::NextRetryAt, consumption_deadline(10, 3))
            .to_owned();
        for backend in [DbBackend::Postgres, DbBackend::MySql, DbBackend::Sqlite] {
            let sql = backend.build(&stmt).to_string();
            assert!(sql.contains("CASE WHEN"), "{backend:?}: {sql}");
        }
    }
}
