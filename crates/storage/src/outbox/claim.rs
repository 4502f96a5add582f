use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sea_orm::sea_query::{
    Expr, Order, PostgresQueryBuilder, Query, SelectStatement, SqliteQueryBuilder, Value,
};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, FromQueryResult,
    IsolationLevel, Statement, TransactionTrait,
};
use smartflow_domain::OutboxStatus;

use super::shards::Cursor;
use super::{status_is, OutboxTable};
use crate::entity::outbox::Column as Outbox;
use crate::time::millis;
use crate::StorageError;

/// How a relay keeps other relays off the shards and rows it is publishing.
///
/// On PostgreSQL and SQLite the never-attempted rows of a shard are found by its commit cursor
/// (`(txid, id)` after the shard's `sent_txid, sent_id`), and a row the round sends in order is
/// recorded by moving the cursor past it: one write per shard, not one per row. On MySQL/MariaDB
/// (no fence that proves every earlier transaction has ended) each row is marked as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// `SELECT ... FOR UPDATE SKIP LOCKED` on the shard rows inside a transaction held until the
    /// batch is settled (MySQL 8, MariaDB 10.6+); the outbox rows themselves are read without
    /// locks. A dead relay's locks die with its connection.
    RowLocks,
    /// `pg_try_advisory_xact_lock` on the shards inside a transaction held until the batch is
    /// settled (PostgreSQL): like row locks, but the holding transaction takes no transaction id
    /// until it settles, so it never holds other rounds' commit fence back. A dead relay's locks
    /// die with its connection.
    AdvisoryLocks,
    /// `UPDATE ... SET locked_by, locked_until ... RETURNING` on the shard rows (SQLite, whose
    /// single writer must not be held while Kafka answers); the outbox rows of leased shards are
    /// read without a lease of their own (a second write of every row would double the claim's
    /// cost), and the settle moves only rows of shards still leased to the round. A dead relay's
    /// lease runs out and another relay takes over.
    Lease,
}

impl ClaimMode {
    pub fn for_backend(backend: DbBackend) -> Self {
        match backend {
            DbBackend::Sqlite => ClaimMode::Lease,
            DbBackend::Postgres => ClaimMode::AdvisoryLocks,
            DbBackend::MySql => ClaimMode::RowLocks,
        }
    }
}

/// What one relay round asks for: some key shards no other round holds, and in them separate
/// budgets for fresh rows and due retries, so a pile of failing rows never starves new events.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Names the round in leases; two rounds that may run at once must not share it.
    pub owner: String,
    pub fresh_limit: u64,
    pub retry_limit: u64,
    /// How long the claim may be held: the lease length, and on PostgreSQL the idle-in-transaction
    /// timeout that ends a cut-off relay's session.
    pub hold_for: Duration,
    pub now: i64,
    /// How many shards the round takes at most ([`KEY_SHARDS`](super::KEY_SHARDS) for all).
    pub shards: u64,
    /// The shard the round starts looking at, so rounds that run at once spread over the shards.
    pub first_shard: i16,
    /// Topics whose waiting retries do not hold back the later rows of their key
    /// (`KeyOrder::Skip`); on every other topic a key with a row waiting for its retry sends
    /// nothing newer until that row is published or `dead`.
    pub skip_topics: Vec<String>,
}

impl ClaimRequest {
    /// A request over every shard, now, holding back waiting keys on every topic.
    pub fn new(
        owner: impl Into<String>,
        fresh_limit: u64,
        retry_limit: u64,
        hold_for: Duration,
    ) -> Self {
        Self {
            owner: owner.into(),
            fresh_limit,
            retry_limit,
            hold_for,
            now: crate::now_millis(),
            shards: super::KEY_SHARDS as u64,
            first_shard: 0,
            skip_topics: Vec::new(),
        }
    }
}

/// A row handed to the relay for publishing: the outbox columns the relay needs
/// ([`CLAIM_COLUMNS`]).
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct ClaimedRow {
    pub id: i64,
    pub shard: i16,
    pub txid: i64,
    /// `None` for a row never attempted (the fresh lane), the due time of a retry otherwise.
    pub next_retry_at: Option<i64>,
    pub event_id: String,
    pub event_type: String,
    pub event_version: i32,
    pub message_key: String,
    pub topic: String,
    pub payload: String,
    pub traceparent: Option<String>,
    pub retry_count: i32,
    pub max_retry: i32,
}

/// Claimed rows, in `(txid, id)` order (so each key's rows are in the order they were written),
/// and what keeps them claimed until `settle`.
pub struct Claim {
    pub rows: Vec<ClaimedRow>,
    /// The shards this claim holds.
    pub shards: Vec<i16>,
    /// Rows left out because an earlier row of their key waits for a retry.
    pub held_back: u64,
    pub(super) hold: Hold,
    /// Where the shards' cursors stood (PostgreSQL, SQLite).
    pub(super) cursor: Option<CursorRound>,
}

/// What a round read by the shards' cursors, for the settle to move them.
pub(super) struct CursorRound {
    /// Each held shard's cursor as the claim found it.
    pub(super) start: BTreeMap<i16, Cursor>,
    /// Rows of transactions with an id below this are all visible: the cursor may pass them.
    /// Rows at or above it may have an earlier neighbour not yet committed; they are sent and
    /// marked one by one, and the cursor stops before them.
    pub(super) fence: i64,
    /// Never-attempted rows left out behind a waiting row of their key, with that row's due
    /// time: the settle moves them to the retry lane, due with it, so the cursor can pass.
    pub(super) held: Vec<HeldRow>,
}

#[derive(Debug, Clone)]
pub(super) struct HeldRow {
    pub(super) id: i64,
    pub(super) shard: i16,
    pub(super) txid: i64,
    pub(super) due: i64,
}

pub(super) enum Hold {
    Locks(DatabaseTransaction),
    Lease { owner: String },
    Nothing,
}

impl Claim {
    fn nothing() -> Self {
        Self::empty(0)
    }

    /// No rows to publish (after `held_back` were left for later); nothing held.
    fn empty(held_back: u64) -> Self {
        Claim {
            rows: Vec::new(),
            shards: Vec::new(),
            held_back,
            hold: Hold::Nothing,
            cursor: None,
        }
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("rows", &self.rows.len())
            .finish()
    }
}

const CLAIM_COLUMNS: [Outbox; 13] = [
    Outbox::Id,
    Outbox::Shard,
    Outbox::Txid,
    Outbox::NextRetryAt,
    Outbox::EventId,
    Outbox::EventType,
    Outbox::EventVersion,
    Outbox::MessageKey,
    Outbox::Topic,
    Outbox::Payload,
    Outbox::Traceparent,
    Outbox::RetryCount,
    Outbox::MaxRetry,
];

impl OutboxTable {
    /// Claims up to `fresh_limit` never-attempted rows in id order and up to `retry_limit` due
    /// retries. No two claims that overlap in time ever hold the same row.
    pub async fn claim(
        &self,
        db: &DatabaseConnection,
        mode: ClaimMode,
        req: &ClaimRequest,
    ) -> Result<Claim, StorageError> {
        let claim = match mode {
            ClaimMode::RowLocks | ClaimMode::AdvisoryLocks => {
                self.claim_with_locks(db, mode, req).await?
            }
            ClaimMode::Lease => self.claim_with_lease(db, req).await?,
        };
        if claim.rows.is_empty() && !matches!(claim.hold, Hold::Nothing) {
            // Nothing to send, only held-back rows for the cursors to pass: settled at once.
            let held_back = claim.held_back;
            let unused = smartflow_domain::RetryPolicy::default();
            self.settle(db, claim, super::Settlement::default(), &unused, None)
                .await?;
            return Ok(Claim::empty(held_back));
        }
        Ok(claim)
    }

    /// The fresh lane without a cursor (MySQL/MariaDB): never-attempted rows of the held shards
    /// in id order.
    fn fresh_lane(&self, req: &ClaimRequest, shards: &[i16]) -> SelectStatement {
        Query::select()
            .columns(CLAIM_COLUMNS)
            .from(self.alias())
            .and_where(Expr::col(Outbox::Shard).is_in(shards.to_vec()))
            .and_where(status_is(OutboxStatus::Pending))
            .and_where(Expr::col(Outbox::NextRetryAt).is_null())
            .order_by(Outbox::Id, Order::Asc)
            .limit(req.fresh_limit)
            .to_owned()
    }

    /// The fresh lane by the shards' cursors: for each held shard, its never-attempted rows after
    /// its cursor in `(txid, id)` order (a range of the `ix_<outbox>_cursor` index), merged in
    /// that order up to `fresh_limit` (one `UNION ALL`; the database reads each branch only as
    /// far as the merge needs).
    fn fresh_lane_by_cursor(
        &self,
        backend: DbBackend,
        req: &ClaimRequest,
        cursors: &BTreeMap<i16, Cursor>,
    ) -> Statement {
        // The shards and their cursors are bound parameters and everything else is in the text,
        // so a round of as many shards as the last one reuses its prepared statement (and, on
        // PostgreSQL, its plan: one that names the partial index's `status` as a literal may
        // use it): planning the merge of every shard's branch cost a round more than running it.
        let mut values: Vec<Value> = Vec::with_capacity(cursors.len() * 3);
        let branches: Vec<String> = cursors
            .iter()
            .map(|(&shard, &(txid, id))| {
                let n = values.len();
                values.extend([shard.into(), txid.into(), id.into()]);
                let (shard_is, after) = match backend {
                    // Every row's txid is 0 on SQLite, whose single writer commits in id order.
                    // Spelled as an equality and a range, which SQLite reads as one range of the
                    // index (a row-value `>` ranges over `txid` alone there, and `id > ?` alone
                    // over nothing: both filtered every passed row of the shard per claim).
                    DbBackend::Sqlite => (
                        "\"shard\" = ?".to_owned(),
                        "\"txid\" = ? AND \"id\" > ?".to_owned(),
                    ),
                    _ => (
                        format!("\"shard\" = ${}", n + 1),
                        format!("(\"txid\", \"id\") > (${}, ${})", n + 2, n + 3),
                    ),
                };
                let mut branch = Query::select();
                branch
                    .columns(CLAIM_COLUMNS)
                    .from(self.alias())
                    .and_where(Expr::cust(shard_is))
                    .and_where(status_is(OutboxStatus::Pending))
                    .and_where(Expr::col(Outbox::NextRetryAt).is_null())
                    .and_where(Expr::cust(after));
                match backend {
                    // SQLite merges the bare branches, each read lazily in the index's order; a
                    // branch of its own with `ORDER BY ... LIMIT` became a subquery that SQLite
                    // read whole and sorted before merging (16 shards: 106 ms instead of 7).
                    DbBackend::Sqlite => branch.to_string(SqliteQueryBuilder),
                    // PostgreSQL bounds each branch, so a plan made from statistics older than
                    // the backlog (which may sort every branch instead of merging index scans)
                    // still reads at most `fresh_limit` rows of each shard. (MySQL/MariaDB read
                    // no cursor and never get here.)
                    _ => {
                        branch
                            .order_by(Outbox::Txid, Order::Asc)
                            .order_by(Outbox::Id, Order::Asc)
                            .limit(req.fresh_limit);
                        let sql = branch.to_string(PostgresQueryBuilder);
                        format!("SELECT * FROM ({sql}) AS s{}", n / 3)
                    }
                }
            })
            .collect();
        Statement::from_sql_and_values(
            backend,
            format!(
                "{} ORDER BY txid, id LIMIT {}",
                branches.join(" UNION ALL "),
                req.fresh_limit
            ),
            values,
        )
    }

    fn retry_lane(&self, req: &ClaimRequest, shards: &[i16]) -> Option<SelectStatement> {
        if req.retry_limit == 0 {
            return None;
        }
        let mut retry = Query::select();
        retry
            .columns(CLAIM_COLUMNS)
            .from(self.alias())
            .and_where(Expr::col(Outbox::Shard).is_in(shards.to_vec()))
            .and_where(status_is(OutboxStatus::Pending))
            .and_where(Expr::col(Outbox::NextRetryAt).lte(req.now))
            .order_by(Outbox::NextRetryAt, Order::Asc)
            .order_by(Outbox::Id, Order::Asc)
            .limit(req.retry_limit);
        Some(retry)
    }

    async fn claim_with_locks(
        &self,
        db: &DatabaseConnection,
        mode: ClaimMode,
        req: &ClaimRequest,
    ) -> Result<Claim, StorageError> {
        // Read committed: on MySQL the default repeatable read would take gap locks that block
        // other relays' settles and every writer's inserts for as long as the batch is held.
        let txn = db
            .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
            .await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            // A relay cut off mid-batch must not hold its row locks for ever.
            let ms = millis(req.hold_for).max(1000);
            txn.execute_unprepared(&format!(
                "SET LOCAL idle_in_transaction_session_timeout = {ms}"
            ))
            .await?;
        }
        let (shards, cursors) = if mode == ClaimMode::AdvisoryLocks {
            let shards = self
                .lock_shards_advisory(&txn, req.first_shard, req.shards)
                .await?;
            if shards.is_empty() {
                txn.commit().await?;
                return Ok(Claim::nothing());
            }
            let (cursors, fence) = self.read_cursors(&txn, &shards).await?;
            (shards, Some((cursors, fence)))
        } else {
            let shards = self.lock_shards(&txn, req.first_shard, req.shards).await?;
            (shards, None)
        };
        let (rows, held_back, cursor) = self.claimable_rows(&txn, req, &shards, cursors).await?;
        if rows.is_empty() && cursor.as_ref().is_none_or(|c| c.held.is_empty()) {
            txn.commit().await?;
            return Ok(Claim::empty(held_back));
        }
        Ok(Claim {
            rows,
            shards,
            held_back,
            hold: Hold::Locks(txn),
            cursor,
        })
    }

    async fn claim_with_lease(
        &self,
        db: &DatabaseConnection,
        req: &ClaimRequest,
    ) -> Result<Claim, StorageError> {
        let until = req.now.saturating_add(millis(req.hold_for));
        let leased = self
            .lease_shards(db, &req.owner, req.first_shard, req.shards, req.now, until)
            .await?;
        if leased.is_empty() {
            return Ok(Claim::nothing());
        }
        let shards: Vec<i16> = leased.keys().copied().collect();
        let cursors = match db.get_database_backend() {
            // SQLite's single writer commits rows in id order: every row below the newest
            // visible one is visible, so nothing fences the cursor.
            DbBackend::Sqlite => Some((leased, i64::MAX)),
            DbBackend::Postgres => {
                let fence = self.commit_fence(db).await?;
                Some((leased, fence))
            }
            DbBackend::MySql => None,
        };
        let (rows, held_back, cursor) = self.claimable_rows(db, req, &shards, cursors).await?;
        if rows.is_empty() && cursor.as_ref().is_none_or(|c| c.held.is_empty()) {
            self.release_shards(db, &req.owner, &shards).await?;
            return Ok(Claim::empty(held_back));
        }
        Ok(Claim {
            rows,
            shards,
            held_back,
            hold: Hold::Lease {
                owner: req.owner.clone(),
            },
            cursor,
        })
    }

    /// The rows of `shards` (held by this round) it may send, in `(txid, id)` order, and how
    /// many were held back behind a waiting row of their key: the same for every way of holding
    /// shards. With `cursors` (and the commit fence) the fresh lane is read by the cursors.
    async fn claimable_rows<C: ConnectionTrait>(
        &self,
        conn: &C,
        req: &ClaimRequest,
        shards: &[i16],
        cursors: Option<(BTreeMap<i16, Cursor>, i64)>,
    ) -> Result<(Vec<ClaimedRow>, u64, Option<CursorRound>), StorageError> {
        if shards.is_empty() {
            return Ok((Vec::new(), 0, None));
        }
        let backend = conn.get_database_backend();
        let mut rows = Vec::new();
        if req.fresh_limit > 0 {
            let fresh = match &cursors {
                Some((cursors, _)) => self.fresh_lane_by_cursor(backend, req, cursors),
                None => backend.build(&self.fresh_lane(req, shards)),
            };
            rows.extend(ClaimedRow::find_by_statement(fresh).all(conn).await?);
        }
        if let Some(retry) = self.retry_lane(req, shards) {
            rows.extend(
                ClaimedRow::find_by_statement(backend.build(&retry))
                    .all(conn)
                    .await?,
            );
        }
        rows.sort_by_key(|r| (r.txid, r.id));
        let (held_back, held) = self
            .hold_back_waiting_keys(conn, req, shards, &mut rows)
            .await?;
        let cursor = cursors.map(|(start, fence)| CursorRound { start, fence, held });
        Ok((rows, held_back, cursor))
    }

    /// Leaves out of `rows` (in `(txid, id)` order) every row whose key has an earlier row, in
    /// these shards and not in this claim, waiting for a retry (on topics outside
    /// `skip_topics`): that key sends nothing newer until the waiting row is published or
    /// `dead`. Returns how many rows were left out, and those of them never attempted, each with
    /// the waiting row's due time.
    async fn hold_back_waiting_keys<C: ConnectionTrait>(
        &self,
        conn: &C,
        req: &ClaimRequest,
        shards: &[i16],
        rows: &mut Vec<ClaimedRow>,
    ) -> Result<(u64, Vec<HeldRow>), StorageError> {
        if rows.is_empty() {
            return Ok((0, Vec::new()));
        }
        let claimed: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut waiting = Query::select();
        waiting
            .columns([
                Outbox::MessageKey,
                Outbox::Id,
                Outbox::Txid,
                Outbox::NextRetryAt,
            ])
            .from(self.alias())
            .and_where(Expr::col(Outbox::Shard).is_in(shards.to_vec()))
            .and_where(status_is(OutboxStatus::Pending))
            .and_where(Expr::col(Outbox::NextRetryAt).is_not_null())
            .and_where(Expr::col(Outbox::Id).is_not_in(claimed));
        if !req.skip_topics.is_empty() {
            waiting.and_where(Expr::col(Outbox::Topic).is_not_in(req.skip_topics.clone()));
        }
        let backend = conn.get_database_backend();
        let waiting = WaitingRow::find_by_statement(backend.build(&waiting))
            .all(conn)
            .await?;
        if waiting.is_empty() {
            return Ok((0, Vec::new()));
        }
        // The earliest waiting row of each key: rows of the key after it wait too.
        let mut first_waiting: HashMap<String, ((i64, i64), i64)> = HashMap::new();
        for w in waiting {
            let place = (w.txid, w.id);
            let due = w.next_retry_at.unwrap_or(req.now);
            let first = first_waiting.entry(w.message_key).or_insert((place, due));
            if place < first.0 {
                *first = (place, due);
            }
        }
        let before = rows.len();
        let mut fresh_held = Vec::new();
        rows.retain(|r| match first_waiting.get(&r.message_key) {
            Some(&(first, due)) if (r.txid, r.id) > first => {
                if r.next_retry_at.is_none() {
                    fresh_held.push(HeldRow {
                        id: r.id,
                        shard: r.shard,
                        txid: r.txid,
                        due,
                    });
                }
                false
            }
            _ => true,
        });
        Ok(((before - rows.len()) as u64, fresh_held))
    }
}

/// A row waiting for its retry: what holds back the later rows of its key.
#[derive(Debug, FromQueryResult)]
struct WaitingRow {
    message_key: String,
    id: i64,
    txid: i64,
    next_retry_at: Option<i64>,
}
