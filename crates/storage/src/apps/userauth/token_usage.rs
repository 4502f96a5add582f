//! The token-usage ledger: one row per usage event, keyed by the event id, and the user's running
//! total beside it in `users.token_usage`. Both change in one transaction, so the total is always
//! the sum of the ledger and the same event can never count twice.

use sea_orm::sea_query::{Alias, Expr, Func, SimpleExpr};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    FromQueryResult, QueryFilter, QuerySelect, TransactionTrait,
};

use super::entity::token_usage_ledger::{ActiveModel, Column, Entity};
use super::users;
use crate::{now_millis, StorageError};

/// One usage event, as the ledger keeps it (the ledger also notes when it was recorded).
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct UsageEntry {
    pub event_id: String,
    pub user_id: String,
    pub conversation_id: String,
    pub tokens: i64,
    pub occurred_at: i64,
}

/// What [`record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The ledger row was inserted and the tokens added to the user's usage.
    Added,
    /// The event id was already in the ledger: nothing changed.
    Duplicate,
    /// No such user: nothing changed.
    UnknownUser,
}

/// Inserts the ledger row and adds its tokens to the user's usage, both through `txn`, inside a
/// savepoint so that a duplicate or an unknown user leaves `txn` usable and unchanged. A
/// concurrent `record` of the same event id in another transaction waits on the key and then
/// finds the duplicate.
pub async fn record(
    txn: &DatabaseTransaction,
    entry: &UsageEntry,
) -> Result<Recorded, StorageError> {
    let row = ActiveModel {
        event_id: Set(entry.event_id.clone()),
        user_id: Set(entry.user_id.clone()),
        conversation_id: Set(entry.conversation_id.clone()),
        tokens: Set(entry.tokens),
        occurred_at: Set(entry.occurred_at),
        recorded_at: Set(now_millis()),
    };
    let savepoint = txn.begin().await?;
    let inserted = Entity::insert(row)
        .exec_without_returning(&savepoint)
        .await
        .map_err(StorageError::from);
    match inserted {
        Ok(_) => {}
        Err(e) if e.is_unique_violation() => {
            savepoint.rollback().await?;
            return Ok(Recorded::Duplicate);
        }
        Err(e) => return Err(e),
    }
    if !users::add_usage(&savepoint, &entry.user_id, entry.tokens).await? {
        savepoint.rollback().await?;
        return Ok(Recorded::UnknownUser);
    }
    savepoint.commit().await?;
    Ok(Recorded::Added)
}

/// The ledger row of one event.
pub async fn find<C: ConnectionTrait>(
    conn: &C,
    event_id: &str,
) -> Result<Option<UsageEntry>, StorageError> {
    Ok(Entity::find_by_id(event_id)
        .select_only()
        .columns([
            Column::EventId,
            Column::UserId,
            Column::ConversationId,
            Column::Tokens,
            Column::OccurredAt,
        ])
        .into_model::<UsageEntry>()
        .one(conn)
        .await?)
}

/// A user's ledger rows and the tokens they add up to.
#[derive(FromQueryResult)]
struct Totals {
    n: i64,
    total: i64,
}

/// How many ledger rows a user has and the tokens they add up to.
pub async fn totals_for_user<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
) -> Result<(u64, i64), StorageError> {
    // CAST so the sum has one type on every backend (PostgreSQL sums BIGINT as NUMERIC, MySQL as
    // DECIMAL).
    let total = Func::coalesce([
        Func::cast_as(
            Func::sum(Expr::col(Column::Tokens)),
            Alias::new(sum_type(conn.get_database_backend())),
        )
        .into(),
        Expr::val(0i64).into(),
    ]);
    let totals = Entity::find()
        .select_only()
        .column_as(Column::EventId.count(), "n")
        .column_as(SimpleExpr::from(total), "total")
        .filter(Column::UserId.eq(user_id))
        .into_model::<Totals>()
        .one(conn)
        .await?;
    Ok(totals.map_or((0, 0), |t| (t.n.max(0) as u64, t.total)))
}

fn sum_type(backend: sea_orm::DbBackend) -> &'static str {
    match backend {
        sea_orm::DbBackend::MySql => "SIGNED",
        sea_orm::DbBackend::Postgres | sea_orm::DbBackend::Sqlite => "BIGINT",
    }
}
