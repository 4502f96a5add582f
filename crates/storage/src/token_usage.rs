//! The token-usage ledger: one row per usage event, keyed by the event id, and the user's running
//! total beside it in `users.token_usage`. Both change in one transaction, so the total is always
//! the sum of the ledger and the same event can never count twice.

use sea_orm::sea_query::{Alias, Expr, Func, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};

use crate::schema::TokenUsageLedger;
use crate::{now_millis, users, StorageError};

/// One usage event, as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    let stmt = Query::insert()
        .into_table(TokenUsageLedger::Table)
        .columns([
            TokenUsageLedger::EventId,
            TokenUsageLedger::UserId,
            TokenUsageLedger::ConversationId,
            TokenUsageLedger::Tokens,
            TokenUsageLedger::OccurredAt,
            TokenUsageLedger::RecordedAt,
        ])
        .values_panic([
            entry.event_id.clone().into(),
            entry.user_id.clone().into(),
            entry.conversation_id.clone().into(),
            entry.tokens.into(),
            entry.occurred_at.into(),
            now_millis().into(),
        ])
        .to_owned();
    let savepoint = txn.begin().await?;
    let inserted = savepoint
        .execute(savepoint.get_database_backend().build(&stmt))
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
    let stmt = Query::select()
        .columns([
            TokenUsageLedger::EventId,
            TokenUsageLedger::UserId,
            TokenUsageLedger::ConversationId,
            TokenUsageLedger::Tokens,
            TokenUsageLedger::OccurredAt,
        ])
        .from(TokenUsageLedger::Table)
        .and_where(Expr::col(TokenUsageLedger::EventId).eq(event_id))
        .to_owned();
    let Some(row) = conn
        .query_one(conn.get_database_backend().build(&stmt))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(UsageEntry {
        event_id: row.try_get("", "event_id")?,
        user_id: row.try_get("", "user_id")?,
        conversation_id: row.try_get("", "conversation_id")?,
        tokens: row.try_get("", "tokens")?,
        occurred_at: row.try_get("", "occurred_at")?,
    }))
}

/// How many ledger rows a user has and the tokens they add up to.
pub async fn totals_for_user<C: ConnectionTrait>(
    conn: &C,
    user_id: &str,
) -> Result<(u64, i64), StorageError> {
    let stmt = Query::select()
        .expr_as(
            Func::count(Expr::col(TokenUsageLedger::EventId)),
            Alias::new("n"),
        )
        // CAST so the sum has one type on every backend (PostgreSQL sums BIGINT as NUMERIC,
        // MySQL as DECIMAL).
        .expr_as(
            Func::coalesce([
                Func::cast_as(
                    Func::sum(Expr::col(TokenUsageLedger::Tokens)),
                    Alias::new(sum_type(conn.get_database_backend())),
                )
                .into(),
                Expr::val(0i64).into(),
            ]),
            Alias::new("total"),
        )
        .from(TokenUsageLedger::Table)
        .and_where(Expr::col(TokenUsageLedger::UserId).eq(user_id))
        .to_owned();
    let row = conn
        .query_one(conn.get_database_backend().build(&stmt))
        .await?;
    let Some(row) = row else {
        return Ok((0, 0));
    };
    let n: i64 = row.try_get("", "n")?;
    let total: i64 = row.try_get("", "total")?;
    Ok((n.max(0) as u64, total))
}

fn sum_type(backend: sea_orm::DbBackend) -> &'static str {
    match backend {
        sea_orm::DbBackend::MySql => "SIGNED",
        sea_orm::DbBackend::Postgres | sea_orm::DbBackend::Sqlite => "BIGINT",
    }
}
