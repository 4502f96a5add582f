//! What an operator's request names, parsed once for the CLI (`smartflow outbox list --key K`)
//! and the admin HTTP API (`GET /admin/outbox/rows?key=K`): ages (`7d`), statuses, and the
//! filters over an outbox or inbox table, turned into storage's `OutboxFilter`/`InboxFilter`.

use std::time::Duration;

use smartflow_domain::OutboxStatus;
use smartflow_storage::inbox::InboxStatus;
use smartflow_storage::inbox_admin::InboxFilter;
use smartflow_storage::now_millis;
use smartflow_storage::outbox::{OutboxFilter, OutboxPurge, SettledStatus};

/// `30s`, `15m`, `2h`, `7d` or `2w`: a whole number and one unit.
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("bad duration `{text}`: write a whole number and a unit, such as 30s, 15m, 2h, 7d or 2w")
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// An outbox status by its stored spelling.
pub fn parse_outbox_status(text: &str) -> Result<OutboxStatus, String> {
    text.parse().map_err(|_| {
        let known: Vec<&str> = OutboxStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status `{text}` (one of: {})", known.join(", "))
    })
}

/// A status a purge may delete: `consumed`, `dead` or `stored`.
pub fn parse_settled_status(text: &str) -> Result<SettledStatus, String> {
    match text {
        "consumed" => Ok(SettledStatus::Consumed),
        "dead" => Ok(SettledStatus::Dead),
        "stored" => Ok(SettledStatus::Stored),
        _ => Err(format!(
            "a purge deletes only settled rows: status `{text}` is not one of consumed, dead, \
             stored"
        )),
    }
}

/// An inbox status: `handled` or `dead`.
pub fn parse_inbox_status(text: &str) -> Result<InboxStatus, String> {
    InboxStatus::parse(text).ok_or_else(|| {
        let known: Vec<String> = InboxStatus::all().map(InboxStatus::name).collect();
        format!("unknown status `{text}` (one of: {})", known.join(", "))
    })
}

/// The instant `age` ago, in Unix milliseconds.
pub fn before_now(age: Duration) -> i64 {
    now_millis().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// An outbox purge of the rows in `statuses` (none named: `consumed` and `dead`) settled longer
/// ago than `older_than`.
pub fn settled_rows(older_than: Duration, mut statuses: Vec<SettledStatus>) -> OutboxPurge {
    if statuses.is_empty() {
        statuses = vec![SettledStatus::Consumed, SettledStatus::Dead];
    }
    statuses.sort_by_key(|s| s.status().as_str());
    statuses.dedup();
    OutboxPurge {
        statuses,
        settled_before: before_now(older_than),
    }
}

/// The filters over an outbox's rows (`list`, `redrive`): event type, message key, created
/// longer ago than an age, last error containing a text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxSelection {
    pub event_type: Option<String>,
    pub key: Option<String>,
    pub older_than: Option<Duration>,
    pub reason: Option<String>,
}

impl OutboxSelection {
    /// The storage filter: these filters, `status` and `ids` (empty: any).
    pub fn filter(&self, status: Option<OutboxStatus>, ids: &[i64]) -> OutboxFilter {
        OutboxFilter {
            status,
            event_type: self.event_type.clone(),
            message_key: self.key.clone(),
            created_before: self.older_than.map(before_now),
            reason_contains: self.reason.clone(),
            ids: ids.to_vec(),
        }
    }

    /// Whether no filter is set (a redrive then needs ids or "all").
    pub fn is_empty(&self) -> bool {
        self.event_type.is_none()
            && self.key.is_none()
            && self.older_than.is_none()
            && self.reason.is_none()
    }
}

/// The filters over an inbox's rows (`list`): event type, consumer, handled longer ago than an
/// age, last error containing a text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxSelection {
    pub event_type: Option<String>,
    pub consumer: Option<String>,
    pub older_than: Option<Duration>,
    pub reason: Option<String>,
}

impl InboxSelection {
    /// The storage filter: these filters and `status` (`None`: any).
    pub fn filter(&self, status: Option<InboxStatus>) -> InboxFilter {
        InboxFilter {
            status,
            event_type: self.event_type.clone(),
            consumer: self.consumer.clone(),
            event_id: None,
            handled_before: self.older_than.map(before_now),
            reason_contains: self.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_with_one_unit() {
        assert_eq!(parse_age("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_age("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("1w"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "1.5h",
            "-3d",
            "7 days",
            "99999999999999999999d",
        ] {
            let err = parse_age(bad).unwrap_err();
            assert!(err.contains("bad duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn statuses_parse_by_their_stored_spelling() {
        assert_eq!(parse_outbox_status("dead"), Ok(OutboxStatus::Dead));
        assert!(parse_outbox_status("gone").unwrap_err().contains("one of"));
        assert_eq!(
            parse_settled_status("consumed"),
            Ok(SettledStatus::Consumed)
        );
        assert!(parse_settled_status("pending").is_err());
        assert!(parse_inbox_status("handled").is_ok());
        assert!(parse_inbox_status("x").unwrap_err().contains("one of"));
    }
}
