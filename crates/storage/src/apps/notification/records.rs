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

use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{
    ActiveEnum, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Select, TransactionTrait,
};

pub use super::entity::notification_records::{Model as NotificationRecord, NotificationStatus};

use super::entity::notification_records::{ActiveModel, Column as T, Entity};
use crate::error_text::truncate;
use crate::StorageError;

const TABLE: &str = "notification_records";

impl NotificationStatus {
    pub const ALL: [NotificationStatus; 5] = [
        NotificationStatus::Pending,
        NotificationStatus::Sending,
        NotificationStatus::Sent,
        NotificationStatus::Failed,
        NotificationStatus::Dead,
    ];

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
        f.write_str(&self.to_value())
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

/// One line of the per-status count.
#[derive(FromQueryResult)]
struct StatusCount {
    status: NotificationStatus,
    n: i64,
}

/// A status as an update sets it.
fn stored(status: NotificationStatus) -> SimpleExpr {
    Expr::val(status.to_value()).into()
}

fn status_is(status: NotificationStatus) -> SimpleExpr {
    T::Status.eq(status)
}

fn by_key(channel: &str, dedupe_key: &str) -> SimpleExpr {
    T::Channel.eq(channel).and(T::DedupeKey.eq(dedupe_key))
}

fn has_attempts_left() -> SimpleExpr {
    Expr::col(T::Attempts).lt(Expr::col(T::MaxAttempts))
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
    let max_attempts = new.max_attempts.clamp(1, i32::MAX as u32) as i32;
    let row = ActiveModel {
        channel: Set(new.channel.clone()),
        dedupe_key: Set(new.dedupe_key.clone()),
        source_event_id: Set(new.source_event_id.clone()),
        payload: Set(new.payload.clone()),
        status: Set(NotificationStatus::Pending),
        attempts: Set(0),
        max_attempts: Set(max_attempts),
        next_retry_at: Set(Some(now)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    let savepoint = txn.begin().await?;
    let inserted = Entity::insert(row)
        .exec_without_returning(&savepoint)
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
            let retry_now = Entity::update_many()
                .col_expr(T::NextRetryAt, Expr::val(now).into())
                .col_expr(T::UpdatedAt, Expr::val(now).into())
                .filter(by_key(&new.channel, &new.dedupe_key))
                .filter(status_is(NotificationStatus::Failed))
                .exec(txn)
                .await?
                .rows_affected
                == 1;
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
    Ok(Entity::find()
        .filter(by_key(channel, dedupe_key))
        .lock_exclusive()
        .one(txn)
        .await?)
}

/// The record of one `(channel, dedupe_key)`, if any.
pub async fn find<C: ConnectionTrait>(
    conn: &C,
    channel: &str,
    dedupe_key: &str,
) -> Result<Option<NotificationRecord>, StorageError> {
    Ok(Entity::find()
        .filter(by_key(channel, dedupe_key))
        .one(conn)
        .await?)
}

/// One record by id, if any.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    id: i64,
) -> Result<Option<NotificationRecord>, StorageError> {
    Ok(Entity::find_by_id(id).one(conn).await?)
}

/// `pending` records, oldest first, at most `limit`; with `due_before`, only those recorded
/// before that time (the retry scanner leaves fresh ones to the sender woken by their commit).
pub async fn pending<C: ConnectionTrait>(
    conn: &C,
    due_before: Option<i64>,
    limit: u64,
) -> Result<Vec<NotificationRecord>, StorageError> {
    let mut select = Entity::find().filter(status_is(NotificationStatus::Pending));
    // A pending record's `next_retry_at` is the time it was recorded (or reopened).
    if let Some(before) = due_before {
        select = select.filter(T::NextRetryAt.lt(before));
    }
    let oldest_first = oldest_first(select, T::NextRetryAt, limit);
    Ok(oldest_first.all(conn).await?)
}

/// What the retry scanner works on: `failed` records due by `now` and `sending` records whose
/// lease ran out before `now` (their sender died mid-call), each lane at most `limit`, with
/// attempts left. A plain read: the claim decides who gets each record.
pub async fn due_for_retry<C: ConnectionTrait>(
    conn: &C,
    now: i64,
    limit: u64,
) -> Result<Vec<NotificationRecord>, StorageError> {
    let failed = Entity::find()
        .filter(status_is(NotificationStatus::Failed))
        .filter(T::NextRetryAt.lte(now))
        .filter(has_attempts_left());
    let stale = Entity::find()
        .filter(status_is(NotificationStatus::Sending))
        .filter(T::LeaseUntil.lt(now))
        .filter(has_attempts_left());
    let mut records = oldest_first(failed, T::NextRetryAt, limit)
        .all(conn)
        .await?;
    records.extend(oldest_first(stale, T::LeaseUntil, limit).all(conn).await?);
    records.sort_by_key(|r| r.id);
    Ok(records)
}

/// A lane in the order its index serves: by `due`, then id.
fn oldest_first(select: Select<Entity>, due: T, limit: u64) -> Select<Entity> {
    select.order_by_asc(due).order_by_asc(T::Id).limit(limit)
}

/// `sending` records whose lease ran out on their last allowed attempt go to `dead`: their
/// sender died and no attempt is left to try again. Returns how many moved.
pub async fn bury_exhausted_leases<C: ConnectionTrait>(
    conn: &C,
    now: i64,
) -> Result<u64, StorageError> {
    Ok(Entity::update_many()
        .col_expr(T::Status, stored(NotificationStatus::Dead))
        .col_expr(
            T::LastError,
            Expr::val("the sender of the last allowed attempt stopped before recording its result")
                .into(),
        )
        .col_expr(T::LeaseOwner, Expr::val(None::<String>).into())
        .col_expr(T::LeaseUntil, Expr::val(None::<i64>).into())
        .col_expr(T::NextRetryAt, Expr::val(None::<i64>).into())
        .col_expr(T::UpdatedAt, Expr::val(now).into())
        .filter(status_is(NotificationStatus::Sending))
        .filter(T::LeaseUntil.lt(now))
        .filter(Expr::col(T::Attempts).gte(Expr::col(T::MaxAttempts)))
        .exec(conn)
        .await?
        .rows_affected)
}

/// The condition under which a record in `from` may be claimed at `now`.
fn claimable_from(from: NotificationStatus, now: i64) -> Option<SimpleExpr> {
    match from {
        NotificationStatus::Pending => Some(status_is(from)),
        NotificationStatus::Failed => Some(status_is(from).and(T::NextRetryAt.lte(now))),
        NotificationStatus::Sending => Some(status_is(from).and(T::LeaseUntil.lt(now))),
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
    let moved = Entity::update_many()
        .col_expr(T::Status, stored(NotificationStatus::Sending))
        .col_expr(T::Attempts, Expr::col(T::Attempts).add(1))
        .col_expr(T::LeaseOwner, Expr::val(token.clone()).into())
        .col_expr(T::LeaseUntil, Expr::val(lease_until).into())
        .col_expr(T::NextRetryAt, Expr::val(None::<i64>).into())
        .col_expr(T::UpdatedAt, Expr::val(now).into())
        .filter(T::Id.eq(seen.id))
        .filter(T::Attempts.eq(seen.attempts))
        .filter(has_attempts_left())
        .filter(claimable)
        .exec(conn)
        .await?
        .rows_affected;
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
    let update = Entity::update_many()
        .col_expr(T::Status, stored(to))
        .col_expr(T::LeaseOwner, Expr::val(None::<String>).into())
        .col_expr(T::LeaseUntil, Expr::val(None::<i64>).into())
        .col_expr(T::UpdatedAt, Expr::val(now).into());
    let kept = |text: &Option<String>| Expr::val(text.as_deref().map(truncate)).into();
    let update = match outcome {
        DeliveryOutcome::Sent { response } => update
            .col_expr(T::SentAt, Expr::val(now).into())
            .col_expr(T::NextRetryAt, Expr::val(None::<i64>).into())
            .col_expr(T::ProviderResponse, kept(response)),
        DeliveryOutcome::Failed {
            error,
            response,
            next_retry_at,
        } => update
            .col_expr(T::NextRetryAt, Expr::val(*next_retry_at).into())
            .col_expr(T::LastError, Expr::val(truncate(error)).into())
            .col_expr(T::ProviderResponse, kept(response)),
        DeliveryOutcome::Dead { error, response } => update
            .col_expr(T::NextRetryAt, Expr::val(None::<i64>).into())
            .col_expr(T::LastError, Expr::val(truncate(error)).into())
            .col_expr(T::ProviderResponse, kept(response)),
    };
    let moved = update
        .filter(T::Id.eq(claimed.id))
        .filter(status_is(NotificationStatus::Sending))
        .filter(T::LeaseOwner.eq(token))
        .exec(conn)
        .await?
        .rows_affected;
    Ok(moved == 1)
}

/// How many records are in each status.
pub async fn counts<C: ConnectionTrait>(conn: &C) -> Result<NotificationCounts, StorageError> {
    let rows = Entity::find()
        .select_only()
        .column(T::Status)
        .column_as(T::Id.count(), "n")
        .group_by(T::Status)
        .into_model::<StatusCount>()
        .all(conn)
        .await?;
    let mut counts = NotificationCounts::default();
    for StatusCount { status, n } in rows {
        let n = n.max(0) as u64;
        match status {
            NotificationStatus::Pending => counts.pending = n,
            NotificationStatus::Sending => counts.sending = n,
            NotificationStatus::Sent => counts.sent = n,
            NotificationStatus::Failed => counts.failed = n,
            NotificationStatus::Dead => counts.dead = n,
        }
    }
    Ok(counts)
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
        use sea_orm::ActiveEnum;
        for status in NotificationStatus::ALL {
            assert_eq!(
                NotificationStatus::try_from_value(&status.to_value()).unwrap(),
                status
            );
            assert_eq!(status.to_string(), status.to_value());
        }
        assert!(NotificationStatus::try_from_value(&"delivered".to_owned()).is_err());
    }
}
