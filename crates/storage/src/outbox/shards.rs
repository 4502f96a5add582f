//! Key shards: every outbox row belongs to one of [`KEY_SHARDS`] shards, chosen by its message
//! key, and a relay round works only on shards no other round holds (`<outbox>_shards`, one row
//! per shard: row locks on PostgreSQL and MySQL, a lease on SQLite). All rows of one key are in
//! one shard, so whatever the number of workers and relay processes, one key's rows are claimed
//! by one round at a time, in id order, and handed to one producer in that order.

use sea_orm::sea_query::{Alias, Expr, LockBehavior, LockType, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult, Value};

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

#[derive(sea_orm::DeriveIden)]
enum ShardCol {
    Shard,
    LockedBy,
    LockedUntil,
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
    ) -> Result<Vec<i16>, StorageError> {
        let backend = conn.get_database_backend();
        let mut taken = Vec::new();
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
                .returning(Query::returning().column(ShardCol::Shard))
                .to_owned();
            let rows = ShardRow::find_by_statement(backend.build(&update))
                .all(conn)
                .await?;
            taken.extend(rows.into_iter().map(|r| r.shard));
        }
        taken.sort_unstable();
        Ok(taken)
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
        if shards.is_empty() {
            return Ok(());
        }
        let stmt = Query::update()
            .table(self.shards_alias())
            .value(ShardCol::LockedBy, Value::String(None))
            .value(ShardCol::LockedUntil, Value::BigInt(None))
            .and_where(Expr::col(ShardCol::Shard).is_in(shards.to_vec()))
            .and_where(Expr::col(ShardCol::LockedBy).eq(owner))
            .to_owned();
        conn.execute(conn.get_database_backend().build(&stmt))
            .await?;
        Ok(())
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
