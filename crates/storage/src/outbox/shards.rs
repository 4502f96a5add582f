//! Key shards: every outbox row belongs to one of [`KEY_SHARDS`] shards, chosen by its message
//! key, and a relay round works only on shards no other round holds (`<outbox>_shards`, one row
//! per shard: row locks on PostgreSQL and MySQL, a lease on SQLite). All rows of one key are in
//! one shard, so whatever the number of workers and relay processes, one key's rows are claimed
//! by one round at a time, in order, and handed to one producer in that order.
//!
//! Each shard row also holds the shard's commit cursor (`sent_txid`, `sent_id`: the last row the
//! relay sent in `(txid, id)` order) and the checkpoint the re-send of unconsumed rows compares
//! against (`check_txid`, `check_id`, `check_at`). On PostgreSQL a round holds its shards with
//! advisory transaction locks, not row locks: a row lock gives the holding transaction an id,
//! and a transaction id held open for the length of a round would hold every other round's
//! commit fence (`pg_snapshot_xmin`) behind it.

use std::collections::BTreeMap;

use sea_orm::sea_query::{
    Alias, CaseStatement, Expr, LockBehavior, LockType, Order, Query, SelectStatement, SimpleExpr,
};
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult, Statement, Value};

use super::OutboxTable;
use crate::StorageError;

/// How many shards an outbox's keys are spread over. Part of the table's format: the shard of
/// a row is stored with it, so changing this would move keys between shards.
pub const KEY_SHARDS: i16 = 32;

/// The shard of a message key: a stable hash (CRC-32, the same in every process and version).
pub fn key_shard(message_key: &str) -> i16 {
    (crc32fast::hash(message_key.as_bytes()) % KEY_SHARDS as u32) as i16
}

/// The shard table of an outbox table.
pub(super) fn table_of(outbox: &str) -> String {
    format!("{outbox}_shards")
}

#[derive(Debug, FromQueryResult)]
struct ShardRow {
    shard: i16,
}

/// The commit fence (PostgreSQL): the oldest transaction id still running; every transaction
/// with an id below it has ended.
const COMMIT_FENCE: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// A shard's commit cursor: the last `(txid, id)` sent in order.
pub(super) type Cursor = (i64, i64);

#[derive(Debug, FromQueryResult)]
struct CursorRow {
    shard: i16,
    sent_txid: i64,
    sent_id: i64,
}

#[derive(Debug, FromQueryResult)]
struct FencedCursorRow {
    shard: i16,
    sent_txid: i64,
    sent_id: i64,
    fence: i64,
}

#[derive(Clone, Copy, sea_orm::DeriveIden)]
pub(super) enum ShardCol {
    Shard,
    LockedBy,
    LockedUntil,
    SentTxid,
    SentId,
    CheckTxid,
    CheckId,
    CheckAt,
}

impl OutboxTable {
    fn shards_alias(&self) -> Alias {
        self.shards.alias()
    }

    /// The shards from `first` on, then from 0 (a ring), so rounds that start at different
    /// places take different shards.
    fn shard_ranges(&self, first: i16) -> [SelectStatement; 2] {
        let from = |cond: sea_orm::sea_query::SimpleExpr| {
            Query::select()
                .column(ShardCol::Shard)
                .from(self.shards_alias())
                .and_where(cond)
                .order_by(ShardCol::Shard, Order::Asc)
                .to_owned()
        };
        [
            from(Expr::col(ShardCol::Shard).gte(first)),
            from(Expr::col(ShardCol::Shard).lt(first)),
        ]
    }

    /// Locks up to `count` shards no other transaction holds, from `first` on, for the length of
    /// `txn` (PostgreSQL, MySQL/MariaDB).
    pub(super) async fn lock_shards(
        &self,
        txn: &DatabaseTransaction,
        first: i16,
        count: u64,
    ) -> Result<Vec<i16>, StorageError> {
        let backend = txn.get_database_backend();
        let mut taken = Vec::new();
        for mut range in self.shard_ranges(first) {
            let left = count.saturating_sub(taken.len() as u64);
            if left == 0 {
                break;
            }
            range
                .limit(left)
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            let rows = ShardRow::find_by_statement(backend.build(&range))
                .all(txn)
                .await?;
            taken.extend(rows.into_iter().map(|r| r.shard));
        }
        Ok(taken)
    }

    /// Leases up to `count` shards whose lease is free or ran out, from `first` on, to `owner`
    /// until `until` (SQLite, where a claim must not hold the single writer while Kafka answers).
    pub(super) async fn lease_shards<C: ConnectionTrait>(
        &self,
        conn: &C,
        owner: &str,
        first: i16,
        count: u64,
        now: i64,
        until: i64,
    ) -> Result<BTreeMap<i16, Cursor>, StorageError> {
        let backend = conn.get_database_backend();
        let mut taken = BTreeMap::new();
        for mut range in self.shard_ranges(first) {
            let left = count.saturating_sub(taken.len() as u64);
            if left == 0 {
                break;
            }
            range.limit(left).and_where(
                Expr::col(ShardCol::LockedUntil)
                    .is_null()
                    .or(Expr::col(ShardCol::LockedUntil).lt(now)),
            );
            let update = Query::update()
                .table(self.shards_alias())
                .value(ShardCol::LockedBy, owner)
                .value(ShardCol::LockedUntil, until)
                .and_where(Expr::col(ShardCol::Shard).in_subquery(range))
                .returning(Query::returning().columns([
                    ShardCol::Shard,
                    ShardCol::SentTxid,
                    ShardCol::SentId,
                ]))
                .to_owned();
            let rows = CursorRow::find_by_statement(backend.build(&update))
                .all(conn)
                .await?;
            taken.extend(
                rows.into_iter()
                    .map(|r| (r.shard, (r.sent_txid, r.sent_id))),
            );
        }
        Ok(taken)
    }

    /// The advisory lock class of this table's shards, in SQL: a hash of its schema-qualified
    /// name (advisory locks are per database, and two schemas may hold outboxes of one name).
    fn lock_class(&self) -> String {
        format!("hashtext(current_schema() || '.{}')", self.name())
    }

    /// Holds up to `count` shards no other transaction holds, from `first` on, for the length
    /// of `txn` with advisory transaction locks (PostgreSQL): first the `count` shards from
    /// `first`, and if none of them is free the `count` after them. Returns the shards held.
    pub(super) async fn lock_shards_advisory(
        &self,
        txn: &DatabaseTransaction,
        first: i16,
        count: u64,
    ) -> Result<Vec<i16>, StorageError> {
        let ring: Vec<i16> = (0..KEY_SHARDS)
            .map(|n| (first + n).rem_euclid(KEY_SHARDS))
            .collect();
        let count = (count as usize).clamp(1, ring.len());
        for candidates in ring.chunks(count).take(2) {
            let list = candidates
                .iter()
                .map(i16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            // Every candidate listed is tried (a `LIMIT` could be applied after the locks).
            let sql = format!(
                "SELECT s AS shard FROM unnest(ARRAY[{list}]::smallint[]) AS s \
                 WHERE pg_try_advisory_xact_lock({}, s::int)",
                self.lock_class()
            );
            let rows = ShardRow::find_by_statement(Statement::from_string(
                txn.get_database_backend(),
                sql,
            ))
            .all(txn)
            .await?;
            if !rows.is_empty() {
                let mut held: Vec<i16> = rows.into_iter().map(|r| r.shard).collect();
                held.sort_unstable();
                return Ok(held);
            }
        }
        Ok(Vec::new())
    }

    /// The cursors of `shards` (held by the caller, read after their locks were taken so the
    /// last holder's cursor is seen), and on PostgreSQL the commit fence: every transaction with
    /// an id below it has ended, so every row it wrote is visible now or never will be.
    pub(super) async fn read_cursors(
        &self,
        conn: &DatabaseTransaction,
        shards: &[i16],
    ) -> Result<(BTreeMap<i16, Cursor>, i64), StorageError> {
        let backend = conn.get_database_backend();
        let stmt = Query::select()
            .columns([ShardCol::Shard, ShardCol::SentTxid, ShardCol::SentId])
            .expr_as(Expr::cust(COMMIT_FENCE), Alias::new("fence"))
            .from(self.shards_alias())
            .and_where(Expr::col(ShardCol::Shard).is_in(shards.to_vec()))
            .to_owned();
        let rows = FencedCursorRow::find_by_statement(backend.build(&stmt))
            .all(conn)
            .await?;
        let fence = rows.iter().map(|r| r.fence).min().unwrap_or(0);
        let cursors = rows
            .into_iter()
            .map(|r| (r.shard, (r.sent_txid, r.sent_id)))
            .collect();
        Ok((cursors, fence))
    }

    /// The commit fence now (PostgreSQL), for a round that holds its shards by lease.
    pub(super) async fn commit_fence<C: ConnectionTrait>(
        &self,
        conn: &C,
    ) -> Result<i64, StorageError> {
        #[derive(FromQueryResult)]
        struct Fence {
            fence: i64,
        }
        let fence = Fence::find_by_statement(Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT {COMMIT_FENCE} AS fence"),
        ))
        .one(conn)
        .await?;
        Ok(fence.map_or(0, |f| f.fence))
    }

    /// Moves the cursors of `advanced` shards forward and, when `release` names an owner, gives
    /// that owner's lease on `held` back in the same statement; under a lease only shards still
    /// leased to the owner change. Returns how many shard rows changed (0 when there is nothing
    /// to move or release).
    pub(super) async fn advance_cursors<C: ConnectionTrait>(
        &self,
        conn: &C,
        held: &[i16],
        advanced: Option<&BTreeMap<i16, Cursor>>,
        release: Option<&str>,
    ) -> Result<u64, StorageError> {
        let advanced = advanced.filter(|a| !a.is_empty());
        let shards: Vec<i16> = match (release, advanced) {
            (Some(_), _) => held.to_vec(),
            (None, Some(advanced)) => advanced.keys().copied().collect(),
            (None, None) => Vec::new(),
        };
        if shards.is_empty() {
            return Ok(0);
        }
        let mut stmt = Query::update();
        stmt.table(self.shards_alias())
            .and_where(Expr::col(ShardCol::Shard).is_in(shards));
        if let Some(advanced) = advanced {
            let column = |col: ShardCol, pick: fn(&Cursor) -> i64| -> SimpleExpr {
                let mut case = CaseStatement::new();
                for (shard, cursor) in advanced {
                    case = case.case(Expr::col(ShardCol::Shard).eq(*shard), pick(cursor));
                }
                case.finally(Expr::col(col)).into()
            };
            stmt.value(ShardCol::SentTxid, column(ShardCol::SentTxid, |c| c.0))
                .value(ShardCol::SentId, column(ShardCol::SentId, |c| c.1));
        }
        if let Some(owner) = release {
            stmt.value(ShardCol::LockedBy, Value::String(None))
                .value(ShardCol::LockedUntil, Value::BigInt(None))
                .and_where(Expr::col(ShardCol::LockedBy).eq(owner));
        }
        Ok(conn
            .execute(conn.get_database_backend().build(&stmt))
            .await?
            .rows_affected())
    }

    /// Whether an outbox row (named by its table) has been sent by its shard's cursor: `pending`,
    /// never retried, at or below the cursor. Such a row is `published` in everything but its
    /// stored status, which the cursor spares the relay from writing.
    pub(super) fn sent_by_cursor(&self) -> SimpleExpr {
        self.below(ShardCol::SentTxid, ShardCol::SentId, None)
    }

    /// [`sent_by_cursor`](Self::sent_by_cursor) at the shard's checkpoint, taken at or before
    /// `checked_by`: rows sent at least that long ago.
    pub(super) fn sent_by_checkpoint(&self, checked_by: i64) -> SimpleExpr {
        self.below(ShardCol::CheckTxid, ShardCol::CheckId, Some(checked_by))
    }

    fn below(&self, txid: ShardCol, id: ShardCol, checked_by: Option<i64>) -> SimpleExpr {
        use crate::entity::outbox::Column as Outbox;
        let row = |c: Outbox| Expr::col((self.alias(), c));
        let shard = |c: ShardCol| Expr::col((self.shards_alias(), c));
        let mut at_or_below = Query::select();
        at_or_below
            .expr(Expr::val(1))
            .from(self.shards_alias())
            .and_where(shard(ShardCol::Shard).equals((self.alias(), Outbox::Shard)))
            .and_where(
                row(Outbox::Txid).lt(shard(txid)).or(row(Outbox::Txid)
                    .equals((self.shards_alias(), txid))
                    .and(row(Outbox::Id).lte(shard(id)))),
            );
        if let Some(by) = checked_by {
            at_or_below
                .and_where(shard(ShardCol::CheckAt).gt(0))
                .and_where(shard(ShardCol::CheckAt).lte(by));
        }
        super::status_is(smartflow_domain::OutboxStatus::Pending)
            .and(row(Outbox::NextRetryAt).is_null())
            .and(Expr::exists(at_or_below))
    }

    /// Takes a checkpoint of every shard whose checkpoint is older than `checked_by`: its cursor
    /// now, at `now`.
    pub(super) async fn take_checkpoints<C: ConnectionTrait>(
        &self,
        conn: &C,
        now: i64,
        checked_by: i64,
    ) -> Result<(), StorageError> {
        let stmt = Query::update()
            .table(self.shards_alias())
            .value(ShardCol::CheckTxid, Expr::col(ShardCol::SentTxid))
            .value(ShardCol::CheckId, Expr::col(ShardCol::SentId))
            .value(ShardCol::CheckAt, now)
            .and_where(Expr::col(ShardCol::CheckAt).lte(checked_by))
            .to_owned();
        conn.execute(conn.get_database_backend().build(&stmt))
            .await?;
        Ok(())
    }

    /// `SELECT shard FROM <outbox>_shards WHERE locked_by = owner`: the shards leased to `owner`.
    pub(super) fn shards_leased_to(&self, owner: &str) -> SelectStatement {
        Query::select()
            .column(ShardCol::Shard)
            .from(self.shards_alias())
            .and_where(Expr::col(ShardCol::LockedBy).eq(owner))
            .to_owned()
    }

    /// Gives `owner`'s lease on `shards` back.
    pub(super) async fn release_shards<C: ConnectionTrait>(
        &self,
        conn: &C,
        owner: &str,
        shards: &[i16],
    ) -> Result<(), StorageError> {
        self.advance_cursors(conn, shards, None, Some(owner))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_shard_is_stable_and_every_shard_is_used() {
        // The stored shards of existing rows depend on these values never changing.
        assert_eq!(key_shard("conversation-1"), 28);
        assert_eq!(key_shard(""), 0);
        let used: std::collections::BTreeSet<i16> =
            (0..1000).map(|n| key_shard(&format!("key-{n}"))).collect();
        assert_eq!(used.len(), KEY_SHARDS as usize);
        assert!(used.iter().all(|s| (0..KEY_SHARDS).contains(s)));
    }
}
