//! An operator's way out of a blocked key (`smartflow outbox unblock KEY`): under
//! `KeyOrder::Block` a row waiting for its retry holds back its key's later rows
//! (`hold_back_waiting_keys` in `claim.rs`); unblocking gives up on the waiting rows (`dead`, the
//! reason saying an operator did it and keeping the last error), so the later rows go on at the
//! next claim and the given-up rows can be redriven when their cause is fixed.

use sea_orm::sea_query::{Cond, Condition, Expr, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait, Value};
use smartflow_domain::OutboxStatus;

use super::admin::records;
use super::{status_is, stored, OutboxRecord, OutboxTable};
use crate::entity::outbox::Column as Outbox;
use crate::error_text::truncate;
use crate::{now_millis, StorageError};

/// The reason an unblocked row carries, before its last error.
pub const UNBLOCKED_REASON: &str = "unblocked by operator";

/// `pending` with a retry time: the rows of `key` that hold back the key's later rows.
fn waiting_of(key: &str) -> Condition {
    Cond::all()
        .add(Expr::col(Outbox::MessageKey).eq(key))
        .add(status_is(OutboxStatus::Pending))
        .add(Expr::col(Outbox::NextRetryAt).is_not_null())
}

impl OutboxTable {
    /// The rows of `key` waiting for a retry, in id order: what holds the key's later rows back
    /// under `KeyOrder::Block` (the earliest of them first).
    pub async fn blocking_rows<C: ConnectionTrait>(
        &self,
        conn: &C,
        key: &str,
    ) -> Result<Vec<OutboxRecord>, StorageError> {
        let (mut stmt, history) = self.select_records(conn).await?;
        stmt.cond_where(waiting_of(key))
            .order_by(Outbox::Id, Order::Asc);
        records(conn, &stmt, history).await
    }

    /// Gives up on every row of `key` waiting for a retry, in one transaction: each becomes
    /// `dead` with `last_error` = "unblocked by operator; last error: ..." (its attempts kept),
    /// so the key's later rows are claimable at once and the unblocked rows can be redriven
    /// later (after the rows that went on: the key's order is broken there, on purpose).
    /// Returns the ids that moved; a row that stopped waiting meanwhile (published, or dead
    /// already) is left alone. A row a relay is sending at this moment may still reach Kafka;
    /// its settle then leaves it `dead`, and its consumer's mark makes it `consumed`.
    pub async fn unblock_key(
        &self,
        db: &DatabaseConnection,
        key: &str,
    ) -> Result<Vec<i64>, StorageError> {
        let txn = db.begin().await?;
        let backend = txn.get_database_backend();
        let waiting = self.blocking_rows(&txn, key).await?;
        let now = now_millis();
        let mut moved = Vec::new();
        for record in waiting {
            let reason = match &record.row.last_error {
                Some(error) => format!("{UNBLOCKED_REASON}; last error: {error}"),
                None => UNBLOCKED_REASON.to_owned(),
            };
            let stmt = Query::update()
                .table(self.alias())
                .value(Outbox::Status, stored(OutboxStatus::Dead))
                .value(Outbox::NextRetryAt, Value::BigInt(None))
                .value(Outbox::LastError, truncate(&reason))
                .value(Outbox::LockedBy, Value::String(None))
                .value(Outbox::LockedUntil, Value::BigInt(None))
                .value(Outbox::UpdatedAt, now)
                .and_where(Expr::col(Outbox::Id).eq(record.row.id))
                .cond_where(waiting_of(key))
                .to_owned();
            if txn.execute(backend.build(&stmt)).await?.rows_affected() > 0 {
                moved.push(record.row.id);
            }
        }
        txn.commit().await?;
        Ok(moved)
    }
}
