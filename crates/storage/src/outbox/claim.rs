use std::time::Duration;

use sea_orm::sea_query::{Expr, LockBehavior, LockType, Order, Query, SelectStatement};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, FromQueryResult,
    IsolationLevel, Statement, TransactionTrait,
};
use smartflow_domain::OutboxStatus;

use super::{status_is, OutboxTable};
use crate::entity::outbox::Column as Outbox;
use crate::time::millis;
use crate::StorageError;

/// How a relay keeps other relays off the rows it is publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// `SELECT ... FOR UPDATE SKIP LOCKED` inside a transaction held until the batch is settled
    /// (PostgreSQL, MySQL 8, MariaDB 10.6+). A dead relay's locks die with its connection.
    RowLocks,
    /// `UPDATE ... SET locked_by, locked_until ... RETURNING` (SQLite, whose single writer must not
    /// be held while Kafka answers). A dead relay's lease runs out and another relay takes over.
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

/// What one relay round asks for: separate budgets for fresh rows and due retries, so a pile of
/// failing rows never starves new events.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub owner: String,
    pub fresh_limit: u64,
    pub retry_limit: u64,
    /// How long the claim may be held: the lease length, and on PostgreSQL the idle-in-transaction
    /// timeout that ends a cut-off relay's session.
    pub hold_for: Duration,
    pub now: i64,
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

/// Claimed rows and what keeps them claimed until `settle`.
pub struct Claim {
    pub rows: Vec<ClaimedRow>,
    pub(super) hold: Hold,
}

pub(super) enum Hold {
    Locks(DatabaseTransaction),
    Lease { owner: String },
    Nothing,
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

    fn lane_queries(&self, req: &ClaimRequest, lease: bool) -> Vec<SelectStatement> {
        let mut fresh = Query::select();
        fresh
            .from(self.alias())
            .and_where(status_is(OutboxStatus::Pending))
            .and_where(Expr::col(Outbox::NextRetryAt).is_null())
            .order_by(Outbox::Id, Order::Asc)
            .limit(req.fresh_limit);
        let mut retry = Query::select();
        retry
            .from(self.alias())
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
            if lease {
                q.column(Outbox::Id).and_where(
                    Expr::col(Outbox::LockedUntil)
                        .is_null()
                        .or(Expr::col(Outbox::LockedUntil).lt(req.now)),
                );
            } else {
                q.columns(CLAIM_COLUMNS)
                    .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            }
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
        let backend = txn.get_database_backend();
        let mut rows = Vec::new();
        for lane in self.lane_queries(req, false) {
            rows.extend(
                ClaimedRow::find_by_statement(backend.build(&lane))
                    .all(&txn)
                    .await?,
            );
        }
        if rows.is_empty() {
            txn.commit().await?;
            return Ok(Claim {
                rows,
                hold: Hold::Nothing,
            });
        }
        Ok(Claim {
            rows,
            hold: Hold::Locks(txn),
        })
    }

    async fn claim_with_lease(
        &self,
        db: &DatabaseConnection,
        req: &ClaimRequest,
    ) -> Result<Claim, StorageError> {
        let backend = db.get_database_backend();
        let until = req.now.saturating_add(millis(req.hold_for));
        let mut rows = Vec::new();
        for lane in self.lane_queries(req, true) {
            let mut update = Query::update();
            update
                .table(self.alias())
                .value(Outbox::LockedBy, req.owner.clone())
                .value(Outbox::LockedUntil, until)
                .and_where(Expr::col(Outbox::Id).in_subquery(lane))
                .returning(Query::returning().columns(CLAIM_COLUMNS));
            let stmt: Statement = backend.build(&update);
            rows.extend(ClaimedRow::find_by_statement(stmt).all(db).await?);
        }
        rows.sort_by_key(|r| r.id);
        let hold = if rows.is_empty() {
            Hold::Nothing
        } else {
            Hold::Lease {
                owner: req.owner.clone(),
            }
        };
        Ok(Claim { rows, hold })
    }
}
