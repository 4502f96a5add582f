//! Notification records: one row per `(channel, dedupe_key)`, holding a requested notification and
//! its delivery state.
//!
//! `pending -> sending -> sent`, `sending -> failed -> sending` (a retry), `failed|sending -> dead`,
//! and `sending -> sending` when a sender's lease ran out and another takes the record over.
//! Every move is a conditional `UPDATE ... WHERE id = ? AND status ...` counted by
//! `rows_affected`, so two senders or scanners racing on one record never both win.
//!
//! A `sending` record carries a lease (`lease_owner`, `lease_until`): the provider call happens
//! outside any transaction, and a sender that dies mid-call leaves a lease that runs out, after
//! which the retry scan finds the record again.

use std::fmt;
use std::str::FromStr;

use sea_orm::sea_query::{Expr, Func, LockType, Order, Query, SelectStatement, SimpleExpr, Value};
use sea_orm::{ConnectionTrait, DatabaseTransaction, QueryResult, TransactionTrait};

use crate::error_text::truncate;
use crate::schema::NotificationRecords as T;
use crate::StorageError;

const TABLE: &str = "notification_records";

/// The delivery state of one notification record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationStatus {
    /// Recorded, not yet handed to a provider.
    Pending,
    /// Claimed by a sender holding a lease; the provider call may be under way.
    Sending,
    /// The provider accepted it. Terminal.
    Sent,
    /// The last attempt failed with a retryable error; due again at `next_retry_at`.
    Failed,
    /// Given up: a permanent error or attempts exhausted, with the error kept. Terminal.
    Dead,
}

impl NotificationStatus {
    pub const ALL: [NotificationStatus; 5] = [
        NotificationStatus::Pending,
        NotificationStatus::Sending,
        NotificationStatus::Sent,
        NotificationStatus::Failed,
        NotificationStatus::Dead,
    ];

    /// The one spelling of each status, as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Pending => "pending",
            NotificationStatus::Sending => "sending",
            NotificationStatus::Sent => "sent",
            NotificationStatus::Failed => "failed",
            NotificationStatus::Dead => "dead",
        }
    }

    /// Whether no writer may change a record in this status any more.
    pub const fn is_terminal(self) -> bool {
        matches!(self, NotificationStatus::Sent | NotificationStatus::Dead)
    }

    /// Whether the state machine allows moving from `self` to `to`.
    pub const fn can_transition_to(self, to: NotificationStatus) -> bool {
        use NotificationStatus::*;
        matches!(
            (self, to),
            (Pending, Sending)
                | (Sending, Sent)
                | (Sending, Failed)
                | (Failed, Sending)
                // A lease that ran out is taken over by another sender.
                | (Sending, Sending)
                | (Failed, Dead)
                | (Sending, Dead)
        )
    }

    /// The statuses a record may be in for a move to `to`; the guards of this module's
    /// conditional updates come from this list, so the state machine is written down only here.
    pub fn allowed_sources(to: NotificationStatus) -> Vec<NotificationStatus> {
        Self::ALL
            .into_iter()
            .filter(|from| from.can_transition_to(to))
            .collect()
    }
}

impl fmt::Display for NotificationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotificationStatus {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| StorageError::Corrupt {
                table: TABLE.to_owned(),
                reason: format!("unknown notification status `{s}`"),
            })
    }
}

/// A notification to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub channel: String,
    pub dedupe_key: String,
    /// The message and its target, as the service encodes them (JSON).
    pub payload: String,
    /// The event that asked for it, for tracing a record back to its request.
    pub source_event_id: Option<String>,
    /// Attempts (provider calls) allowed before the record is `dead`; at least 1.
    pub max_attempts: u32,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    pub id: i64,
    pub channel: String,
    pub dedupe_key: String,
    pub source_event_id: Option<String>,
    pub payload: String,
    pub status: NotificationStatus,
    /// Provider calls started so far, counted when a sender claims the record.
    pub attempts: i32,
    pub max_attempts: i32,
    /// When a `pending` or `failed` record is due.
    pub next_retry_at: Option<i64>,
    /// The claim token of the sender holding a `sending` record.
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub last_error: Option<String>,
    pub provider_response: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
}

/// What recording a request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new `pending` record.
    Created(NotificationRecord),
    /// A record for the key existed, so nothing was added. `retry_now` is true when it was
    /// `failed` and has been made due at once, so the new request becomes its retry.
    Existing {
        record: NotificationRecord,
        retry_now: bool,
    },
}

/// How a claimed delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Sent {
        response: Option<String>,
    },
    /// A retryable failure: `failed`, due again at `next_retry_at`.
    Failed {
        error: String,
        response: Option<String>,
        next_retry_at: i64,
    },
    /// A permanent failure, or the last attempt failed.
    Dead {
        error: String,
        response: Option<String>,
    },
}

impl DeliveryOutcome {
    pub fn status(&self) -> NotificationStatus {
        match self {
            DeliveryOutcome::Sent { .. } => NotificationStatus::Sent,
            DeliveryOutcome::Failed { .. } => NotificationStatus::Failed,
            DeliveryOutcome::Dead { .. } => NotificationStatus::Dead,
        }
    }
}

/// Per-status record counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationCounts {
    pub pending: u64,
    pub sending: u64,
    pub sent: u64,
    pub failed: u64,
    pub dead: u64,
}

const COLUMNS: [T; 16] = [
    T::Id,
    T::Channel,
    T::DedupeKey,
    T::SourceEventId,
    T::Payload,
    T::Status,
    T::Attempts,
    T::MaxAttempts,
    T::NextRetryAt,
    T::LeaseOwner,
    T::LeaseUntil,
    T::LastError,
    T::ProviderResponse,
    T::CreatedAt,
    T::UpdatedAt,
    T::SentAt,
];

fn status_is(status: NotificationStatus) -> SimpleExpr {
    Expr::col(T::Status).eq(status.as_str())
}

fn by_key(channel: &str, dedupe_key: &str) -> SimpleExpr {
    Expr::col(T::Channel)
        .eq(channel)
        .and(Expr::col(T::DedupeKey).eq(dedupe_key))
}

/// Records a requested notification inside the caller's transaction (normally the consumer's,
/// so the record and the event's `consumed` mark commit together).
///
/// The unique index on `(channel, dedupe_key)` decides: the insert runs in a savepoint, and a
/// duplicate leaves the existing record alone, except that a `failed` one is made due at once
/// (its retry stands for the new request). Two transactions racing on one key end with one
/// record: the second insert waits for the first and then fails as a duplicate.
pub async fn request(
    txn: &DatabaseTransaction,
    new: &NewNotification,
    now: i64,
) -> Result<RequestOutcome, StorageError> {
    let backend = txn.get_database_backend();
    let max_attempts = new.max_attempts.clamp(1, i32::MAX as u32) as i32;
    let insert = Query::insert()
        .into_table(T::Table)
        .columns([
            T::Channel,
            T::DedupeKey,
            T::SourceEventId,
            T::Payload,
            T::Status,
            T::Attempts,
            T::MaxAttempts,
            T::NextRetryAt,
            T::CreatedAt,
            T::UpdatedAt,
        ])
        .values_panic([
            new.channel.clone().into(),
            new.dedupe_key.clone().into(),
            new.source_event_id.clone().into(),
            new.payload.clone().into(),
            NotificationStatus::Pending.as_str().into(),
            0i32.into(),
            max_attempts.into(),
            now.into(),
            now.into(),
            now.into(),
        ])
        .to_owned();
    let savepoint = txn.begin().await?;
    let inserted = savepoint
        .execute(backend.build(&insert))
        .await
        .map_err(StorageError::from);
    match inserted {
        Ok(_) => {
            savepoint.commit().await?;
            let record = find_locked(txn, &new.channel, &new.dedupe_key)
                .await?
                .ok_or_else(|| StorageError::Corrupt {
                    table: TABLE.to_owned(),
                    reason: "a record just inserted cannot be read back".to_owned(),
                })?;
            Ok(RequestOutcome::Created(record))
        }
        Err(e) if e.is_unique_violation() => {
            savepoint.rollback().await?;
            let reopen = Query::update()
                .table(T::Table)
                .value(T::NextRetryAt, now)
                .value(T::UpdatedAt, now)
                .and_where(by_key(&new.channel, &new.dedupe_key))
                .and_where(status_is(NotificationStatus::Failed))
                .to_owned();
            let retry_now = txn.execute(backend.build(&reopen)).await?.rows_affected() == 1;
            let record = find_locked(txn, &new.channel, &new.dedupe_key)
                .await?
                .ok_or_else(|| StorageError::Corrupt {
                    table: TABLE.to_owned(),
                    reason: "a duplicate key names no record".to_owned(),
                })?;
            Ok(RequestOutcome::Existing { record, retry_now })
        }
        Err(e) => Err(e),
    }
}

/// Reads a record with a locking read, so that MySQL's repeatable-read snapshot cannot hide a
/// record another transaction committed after this one's snapshot was taken.
async fn find_locked(
    txn: &DatabaseTransaction,
    channel: &str,
    dedupe_key: &str,
) -> Result<Option<NotificationRecord>, StorageError> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(T::Table)
        .and_where(by_key(channel, dedupe_key))
        .lock(LockType::Update)
        .to_owned();
    let row = txn
        .query_one(txn.get_database_backend().build(&stmt))
        .await?;
    row.map(|r| record(&r)).transpose()
}

/// The record of one `(channel, dedupe_key)`, if any.
pub async fn find<C: ConnectionTrait>(
    conn: &C,
    channel: &str,
    dedupe_key: &str,
) -> Result<Option<NotificationRecord>, StorageError> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(T::Table)
        .and_where(by_key(channel, dedupe_key))
        .to_owned();
    let row = conn
        .query_one(conn.get_database_backend().build(&stmt))
        .await?;
    row.map(|r| record(&r)).transpose()
}

/// One record by id, if any.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    id: i64,
) -> Result<Option<NotificationRecord>, StorageError> {
    let stmt = Query::select()
        .columns(COLUMNS)
        .from(T::Table)
        .and_where(Expr::col(T::Id).eq(id))
        .to_owned();
    let row = conn
        .query_one(conn.get_database_backend().build(&stmt))
        .await?;
    row.map(|r| record(&r)).transpose()
}

/// `pending` records, oldest first, at most `limit`; with `due_before`, only those recorded
/// before that time (the retry scanner leaves fresh ones to the sender woken by their commit).
pub async fn pending<C: ConnectionTrait>(
    conn: &C,
    due_before: Option<i64>,
    limit: u64,
) -> Result<Vec<NotificationRecord>, StorageError> {
    let mut stmt = Query::select();
    stmt.columns(COLUMNS)
        .from(T::Table)
        .and_where(status_is(NotificationStatus::Pending))
        .order_by(T::NextRetryAt, Order::Asc)
        .order_by(T::Id, Order::Asc)
        .limit(limit);
    // A pending record's `next_retry_at` is the time it was recorded (or reopened).
    if let Some(before) = due_before {
        stmt.and_where(Expr::col(T::NextRetryAt).lt(before));
    }
    query_records(conn, &stmt).await
}

/// What the retry scanner works on: `failed` records due by `now` and `sending` records whose
/// lease ran out before `now` (their sender died mid-call), each lane at most `limit`, with
/// attempts left. A plain read: the claim decides who gets each record.
pub async fn due_for_retry<C: ConnectionTrait>(
    conn: &C,
    now: i64,
    limit: u64,
) -> Result<Vec<NotificationRecord>, StorageError> {
    let has_attempts_left = || Expr::col(T::Attempts).lt(Expr::col(T::MaxAttempts));
    let failed = Query::select()
        .columns(COLUMNS)
        .from(T::Table)
        .and_where(status_is(NotificationStatus::Failed))
        .and_where(Expr::col(T::NextRetryAt).lte(now))
        .and_where(has_attempts_left())
        .order_by(T::NextRetryAt, Order::Asc)
        .order_by(T::Id, Order::Asc)
        .limit(limit)
        .to_owned();
    let stale = Query::select()
        .columns(COLUMNS)
        .from(T::Table)
        .and_where(status_is(NotificationStatus::Sending))
        .and_where(Expr::col(T::LeaseUntil).lt(now))
        .and_where(has_attempts_left())
        .order_by(T::LeaseUntil, Order::Asc)
        .order_by(T::Id, Order::Asc)
        .limit(limit)
        .to_owned();
    let mut records = query_records(conn, &failed).await?;
    records.extend(query_records(conn, &stale).await?);
    records.sort_by_key(|r| r.id);
    Ok(records)
}

/// `sending` records whose lease ran out on their last allowed attempt go to `dead`: their
/// sender died and no attempt is left to try again. Returns how many moved.
pub async fn bury_exhausted_leases<C: ConnectionTrait>(
    conn: &C,
    now: i64,
) -> Result<u64, StorageError> {
    let stmt = Query::update()
        .table(T::Table)
        .value(T::Status, NotificationStatus::Dead.as_str())
        .value(
            T::LastError,
            "the sender of the last allowed attempt stopped before recording its result",
        )
        .value(T::LeaseOwner, Value::String(None))
        .value(T::LeaseUntil, Value::BigInt(None))
        .value(T::NextRetryAt, Value::BigInt(None))
        .value(T::UpdatedAt, now)
        .and_where(status_is(NotificationStatus::Sending))
        .and_where(Expr::col(T::LeaseUntil).lt(now))
        .and_where(Expr::col(T::Attempts).gte(Expr::col(T::MaxAttempts)))
        .to_owned();
    Ok(conn
        .execute(conn.get_database_backend().build(&stmt))
        .await?
        .rows_affected())
}

/// The condition under which a record in `from` may be claimed at `now`.
fn claimable_from(from: NotificationStatus, now: i64) -> Option<SimpleExpr> {
    match from {
        NotificationStatus::Pending => Some(status_is(from)),
        NotificationStatus::Failed => Some(status_is(from).and(Expr::col(T::NextRetryAt).lte(now))),
        NotificationStatus::Sending => Some(status_is(from).and(Expr::col(T::LeaseUntil).lt(now))),
        NotificationStatus::Sent | NotificationStatus::Dead => None,
    }
}

/// Claims `seen` for one delivery attempt: `sending`, one more attempt counted, a fresh lease
/// token, leased until `lease_until`. Succeeds only if exactly one row changed, which happens
/// only if the record is still as `seen` (same attempt count) and claimable now: `pending`, or
/// `failed` and due, or `sending` with its lease run out, with attempts left. Returns the
/// claimed record, or `None` when another sender got there first.
pub async fn claim<C: ConnectionTrait>(
    conn: &C,
    seen: &NotificationRecord,
    now: i64,
    lease_until: i64,
) -> Result<Option<NotificationRecord>, StorageError> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let claimable = NotificationStatus::allowed_sources(NotificationStatus::Sending)
        .into_iter()
        .filter_map(|from| claimable_from(from, now))
        .reduce(SimpleExpr::or)
        .ok_or_else(|| StorageError::Corrupt {
            table: TABLE.to_owned(),
            reason: "the state machine allows no move to sending".to_owned(),
        })?;
    let stmt = Query::update()
        .table(T::Table)
        .value(T::Status, NotificationStatus::Sending.as_str())
        .value(T::Attempts, Expr::col(T::Attempts).add(1))
        .value(T::LeaseOwner, token.clone())
        .value(T::LeaseUntil, lease_until)
        .value(T::NextRetryAt, Value::BigInt(None))
        .value(T::UpdatedAt, now)
        .and_where(Expr::col(T::Id).eq(seen.id))
        .and_where(Expr::col(T::Attempts).eq(seen.attempts))
        .and_where(Expr::col(T::Attempts).lt(Expr::col(T::MaxAttempts)))
        .and_where(claimable)
        .to_owned();
    let moved = conn
        .execute(conn.get_database_backend().build(&stmt))
        .await?
        .rows_affected();
    if moved != 1 {
        return Ok(None);
    }
    Ok(Some(NotificationRecord {
        status: NotificationStatus::Sending,
        attempts: seen.attempts + 1,
        lease_owner: Some(token),
        lease_until: Some(lease_until),
        next_retry_at: None,
        updated_at: now,
        ..seen.clone()
    }))
}

/// Records how the delivery of a claimed record ended, and releases its lease. Only the holder
/// of the lease may: `false` means the lease was lost (it ran out and another sender took the
/// record over, which now owns the outcome) and nothing changed.
pub async fn finish<C: ConnectionTrait>(
    conn: &C,
    claimed: &NotificationRecord,
    outcome: &DeliveryOutcome,
    now: i64,
) -> Result<bool, StorageError> {
    let Some(token) = claimed.lease_owner.clone() else {
        return Ok(false);
    };
    let to = outcome.status();
    if !NotificationStatus::Sending.can_transition_to(to) {
        return Err(StorageError::Corrupt {
            table: TABLE.to_owned(),
            reason: format!("a delivery cannot end in `{to}`"),
        });
    }
    let mut stmt = Query::update();
    stmt.table(T::Table)
        .value(T::Status, to.as_str())
        .value(T::LeaseOwner, Value::String(None))
        .value(T::LeaseUntil, Value::BigInt(None))
        .value(T::UpdatedAt, now);
    match outcome {
        DeliveryOutcome::Sent { response } => {
            stmt.value(T::SentAt, now)
                .value(T::NextRetryAt, Value::BigInt(None))
                .value(T::ProviderResponse, response.as_deref().map(truncate));
        }
        DeliveryOutcome::Failed {
            error,
            response,
            next_retry_at,
        } => {
            stmt.value(T::NextRetryAt, *next_retry_at)
                .value(T::LastError, truncate(error))
                .value(T::ProviderResponse, response.as_deref().map(truncate));
        }
        DeliveryOutcome::Dead { error, response } => {
            stmt.value(T::NextRetryAt, Value::BigInt(None))
                .value(T::LastError, truncate(error))
                .value(T::ProviderResponse, response.as_deref().map(truncate));
        }
    }
    stmt.and_where(Expr::col(T::Id).eq(claimed.id))
        .and_where(status_is(NotificationStatus::Sending))
        .and_where(Expr::col(T::LeaseOwner).eq(token));
    let moved = conn
        .execute(conn.get_database_backend().build(&stmt))
        .await?
        .rows_affected();
    Ok(moved == 1)
}

/// How many records are in each status.
pub async fn counts<C: ConnectionTrait>(conn: &C) -> Result<NotificationCounts, StorageError> {
    let stmt = Query::select()
        .column(T::Status)
        .expr_as(
            Func::count(Expr::col(T::Id)),
            sea_orm::sea_query::Alias::new("n"),
        )
        .from(T::Table)
        .group_by_col(T::Status)
        .to_owned();
    let mut counts = NotificationCounts::default();
    for row in conn
        .query_all(conn.get_database_backend().build(&stmt))
        .await?
    {
        let status: String = column(&row, "status")?;
        let n: i64 = column(&row, "n")?;
        let n = n.max(0) as u64;
        match status.parse::<NotificationStatus>()? {
            NotificationStatus::Pending => counts.pending = n,
            NotificationStatus::Sending => counts.sending = n,
            NotificationStatus::Sent => counts.sent = n,
            NotificationStatus::Failed => counts.failed = n,
            NotificationStatus::Dead => counts.dead = n,
        }
    }
    Ok(counts)
}

async fn query_records<C: ConnectionTrait>(
    conn: &C,
    stmt: &SelectStatement,
) -> Result<Vec<NotificationRecord>, StorageError> {
    conn.query_all(conn.get_database_backend().build(stmt))
        .await?
        .iter()
        .map(record)
        .collect()
}

fn column<V: sea_orm::TryGetable>(row: &QueryResult, col: &str) -> Result<V, StorageError> {
    row.try_get::<V>("", col)
        .map_err(|e| StorageError::Corrupt {
            table: TABLE.to_owned(),
            reason: format!("column {col}: {e}"),
        })
}

fn record(r: &QueryResult) -> Result<NotificationRecord, StorageError> {
    let status: String = column(r, "status")?;
    Ok(NotificationRecord {
        id: column(r, "id")?,
        channel: column(r, "channel")?,
        dedupe_key: column(r, "dedupe_key")?,
        source_event_id: column(r, "source_event_id")?,
        payload: column(r, "payload")?,
        status: status.parse()?,
        attempts: column(r, "attempts")?,
        max_attempts: column(r, "max_attempts")?,
        next_retry_at: column(r, "next_retry_at")?,
        lease_owner: column(r, "lease_owner")?,
        lease_until: column(r, "lease_until")?,
        last_error: column(r, "last_error")?,
        provider_response: column(r, "provider_response")?,
        created_at: column(r, "created_at")?,
        updated_at: column(r, "updated_at")?,
        sent_at: column(r, "sent_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::NotificationStatus::{self, *};

    #[test]
    fn terminal_states_allow_no_way_out() {
        for from in [Sent, Dead] {
            assert!(from.is_terminal());
            for to in NotificationStatus::ALL {
                assert!(!from.can_transition_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_documented_transitions_are_allowed_and_no_others() {
        let allowed = [
            (Pending, Sending),
            (Sending, Sent),
            (Sending, Failed),
            (Failed, Sending),
            (Sending, Sending),
            (Failed, Dead),
            (Sending, Dead),
        ];
        for from in NotificationStatus::ALL {
            for to in NotificationStatus::ALL {
                assert_eq!(
                    from.can_transition_to(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        assert_eq!(
            NotificationStatus::allowed_sources(Sending),
            vec![Pending, Sending, Failed]
        );
        // Every way into `sending` has a claim condition.
        for from in NotificationStatus::allowed_sources(Sending) {
            assert!(super::claimable_from(from, 0).is_some(), "{from}");
        }
    }

    #[test]
    fn spelling_round_trips_and_unknown_is_an_error() {
        for status in NotificationStatus::ALL {
            assert_eq!(
                status.as_str().parse::<NotificationStatus>().unwrap(),
                status
            );
        }
        assert!("delivered".parse::<NotificationStatus>().is_err());
    }
}
