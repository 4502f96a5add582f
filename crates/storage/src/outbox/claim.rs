use std::collections::HashMap;
use std::time::Duration;

use sea_orm::sea_query::{Expr, Order, Query, SelectStatement};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, FromQueryResult,
    IsolationLevel, TransactionTrait,
};
use smartflow_domain::OutboxStatus;

use super::{status_is, OutboxTable};
use crate::entity::outbox::Column as Outbox;
use crate::time::millis;
use crate::StorageError;

/// How a relay keeps other relays off the shards and rows it is publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// `SELECT ... FOR UPDATE SKIP LOCKED` on the shard rows inside a transaction held until the
    /// batch is settled (PostgreSQL, MySQL 8, MariaDB 10.6+); the outbox rows themselves are read
    /// without locks. A dead relay's locks die with its connection.
    RowLocks,
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
            DbBackend::Postgres | DbBackend::MySql => ClaimMode::RowLocks,
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

/// Claimed rows, in id order (so each key's rows are in the order they were written), and what
/// keeps them claimed until `settle`.
pub struct Claim {
    pub rows: Vec<ClaimedRow>,
    /// The shards this claim holds.
    pub shards: Vec<i16>,
    /// Rows left out because an earlier row of their key waits for a retry.
    pub held_back: u64,
    pub(super) hold: Hold,
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

const CLAIM_COLUMNS: [Outbox; 10] = [
    Outbox::Id,
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
        match mode {
            ClaimMode::RowLocks => self.claim_with_locks(db, req).await,
            ClaimMode::Lease => self.claim_with_lease(db, req).await,
        }
    }

    fn lane_queries(&self, req: &ClaimRequest, shards: &[i16]) -> Vec<SelectStatement> {
        let in_shards = || Expr::col(Outbox::Shard).is_in(shards.to_vec());
        let mut fresh = Query::select();
        fresh
            .from(self.alias())
            .and_where(in_shards())
            .and_where(status_is(OutboxStatus::Pending))
            .and_where(Expr::col(Outbox::NextRetryAt).is_null())
            .order_by(Outbox::Id, Order::Asc)
            .limit(req.fresh_limit);
        let mut retry = Query::select();
        retry
            .from(self.alias())
            .and_where(in_shards())
            .and_where(status_is(OutboxStatus::Pending))
            .and_where(Expr::col(Outbox::NextRetryAt).lte(req.now))
            .order_by(Outbox::NextRetryAt, Order::Asc)
            .order_by(Outbox::Id, Order::Asc)
            .limit(req.retry_limit);
        let mut lanes = Vec::new();
        for (mut q, limit) in [(fresh, req.fresh_limit), (retry, req.retry_limit)] {
            if limit == 0 {
                continue;
            }
            // No row locks or leases: the shard locks (or leases) keep every other round off
            // these rows, and the settle moves only rows still as claimed. (Row locks would be
            // wrong on MySQL, where a scan locks every row it examines, even another shard's,
            // and another round's `SKIP LOCKED` would then pass over rows of its own keys.)
            q.columns(CLAIM_COLUMNS);
            lanes.push(q);
        }
        lanes
    }

    async fn claim_with_locks(
        &self,
        db: &DatabaseConnection,
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
        let shards = self.lock_shards(&txn, req.first_shard, req.shards).await?;
        let (rows, held_back) = self.claimable_rows(&txn, req, &shards).await?;
        if rows.is_empty() {
            txn.commit().await?;
            return Ok(Claim::empty(held_back));
        }
        Ok(Claim {
            rows,
            shards,
            held_back,
            hold: Hold::Locks(txn),
        })
    }

    async fn claim_with_lease(
        &self,
        db: &DatabaseConnection,
        req: &ClaimRequest,
    ) -> Result<Claim, StorageError> {
        let until = req.now.saturating_add(millis(req.hold_for));
        let shards = self
            .lease_shards(db, &req.owner, req.first_shard, req.shards, req.now, until)
            .await?;
        if shards.is_empty() {
            return Ok(Claim::nothing());
        }
        let (rows, held_back) = self.claimable_rows(db, req, &shards).await?;
        if rows.is_empty() {
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
        })
    }

    /// The rows of `shards` (held by this round) it may send, in id order, and how many were
    /// held back behind a waiting row of their key: the same for locked and leased shards.
    async fn claimable_rows<C: ConnectionTrait>(
        &self,
        conn: &C,
        req: &ClaimRequest,
        shards: &[i16],
    ) -> Result<(Vec<ClaimedRow>, u64), StorageError> {
        if shards.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let backend = conn.get_database_backend();
        let mut rows = Vec::new();
        for lane in self.lane_queries(req, shards) {
            rows.extend(
                ClaimedRow::find_by_statement(backend.build(&lane))
                    .all(conn)
                    .await?,
            );
        }
        rows.sort_by_key(|r| r.id);
        let held_back = self
            .hold_back_waiting_keys(conn, req, shards, &mut rows)
            .await?;
        Ok((rows, held_back))
    }

    /// Leaves out of `rows` (in id order) every row whose key has an earlier row, in these
    /// shards and not in this claim, waiting for a retry (on topics outside `skip_topics`):
    /// that key sends nothing newer until the waiting row is published or `dead`. Returns the
    /// number of rows left out.
    async fn hold_back_waiting_keys<C: ConnectionTrait>(
        &self,
        conn: &C,
        req: &ClaimRequest,
        shards: &[i16],
        rows: &mut Vec<ClaimedRow>,
    ) -> Result<u64, StorageError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let claimed: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut waiting = Query::select();
        waiting
            .column(Outbox::MessageKey)
            .column(Outbox::Id)
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
            return Ok(0);
        }
        // The earliest waiting row of each key: rows of the key after it wait too.
        let mut first_waiting: HashMap<String, i64> = HashMap::new();
        for w in waiting {
            let first = first_waiting.entry(w.message_key).or_insert(w.id);
            *first = (*first).min(w.id);
        }
        let before = rows.len();
        rows.retain(|r| {
            first_waiting
                .get(&r.message_key)
                .is_none_or(|&first| r.id < first)
        });
        Ok((before - rows.len()) as u64)
    }
}

/// A row waiting for its retry: what holds back the later rows of its key.
#[derive(Debug, FromQueryResult)]
struct WaitingRow {
    message_key: String,
    id: i64,
}
