use std::fmt;
use std::str::FromStr;

use crate::DomainError;

/// The state of one outbox row.
///
/// `pending -> published -> consumed`, `pending|published -> pending` (retry),
/// `pending|published -> dead`. `consumed` is terminal. `dead` means the bus gave up *sending*
/// the event (a permanent error, or out of retries): the relay never publishes it again, but it
/// is not a verdict on a copy already on its way. A consumer that receives a dead row's event
/// applies it like any other (`dead -> consumed`: the effect happened, so the row says so), and
/// an operator may send it again (`dead -> pending`, a redrive). `stored` is a row of a
/// `Delivery::StoreOnly` route: written for the record, never published, with no way in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxStatus {
    Pending,
    Published,
    Consumed,
    Dead,
    Stored,
}

impl OutboxStatus {
    pub const ALL: [OutboxStatus; 5] = [
        OutboxStatus::Pending,
        OutboxStatus::Published,
        OutboxStatus::Consumed,
        OutboxStatus::Dead,
        OutboxStatus::Stored,
    ];

    /// The one spelling of each status, as stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Published => "published",
            OutboxStatus::Consumed => "consumed",
            OutboxStatus::Dead => "dead",
            OutboxStatus::Stored => "stored",
        }
    }

    /// Whether no writer may change a row in this status any more.
    pub const fn is_terminal(self) -> bool {
        matches!(self, OutboxStatus::Consumed | OutboxStatus::Stored)
    }

    /// Whether the relay works on rows in this status (publishes, retries or re-sends them).
    pub const fn is_live(self) -> bool {
        matches!(self, OutboxStatus::Pending | OutboxStatus::Published)
    }

    /// Whether the state machine allows moving from `self` to `to`.
    pub const fn can_transition_to(self, to: OutboxStatus) -> bool {
        use OutboxStatus::*;
        matches!(
            (self, to),
            (Pending, Published)
                | (Published, Consumed)
                | (Pending, Consumed)
                | (Pending, Pending)
                | (Published, Pending)
                | (Pending, Dead)
                | (Published, Dead)
                | (Dead, Consumed)
                | (Dead, Pending)
        )
    }

    /// The statuses a row may be in for a move to `to` to be allowed; storage uses this list as
    /// the guard of its conditional updates, so the state machine is written down only here.
    pub fn allowed_sources(to: OutboxStatus) -> Vec<OutboxStatus> {
        Self::ALL
            .into_iter()
            .filter(|from| from.can_transition_to(to))
            .collect()
    }

    /// Checks a transition, naming both ends when it is not allowed.
    pub fn transition(self, to: OutboxStatus) -> Result<OutboxStatus, DomainError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(DomainError::IllegalTransition {
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }
}

impl fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutboxStatus {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| DomainError::UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::OutboxStatus::{self, *};

    #[test]
    fn consumed_allows_no_way_out() {
        for to in OutboxStatus::ALL {
            assert!(
                !Consumed.can_transition_to(to),
                "consumed -> {to} must be refused"
            );
            assert!(Consumed.transition(to).is_err());
        }
    }

    #[test]
    fn dead_leaves_only_by_a_consumer_or_a_redrive() {
        assert!(Dead.can_transition_to(Consumed));
        assert!(Dead.can_transition_to(Pending));
        assert!(!Dead.can_transition_to(Published));
        assert!(!Dead.can_transition_to(Dead));
        assert!(!Dead.is_live() && !Consumed.is_live());
        assert!(Pending.is_live() && Published.is_live());
    }

    #[test]
    fn the_documented_transitions_are_allowed() {
        for (from, to) in [
            (Pending, Published),
            (Published, Consumed),
            (Pending, Pending),
            (Published, Pending),
            (Pending, Dead),
            (Published, Dead),
        ] {
            assert_eq!(from.transition(to), Ok(to));
        }
        assert!(!Published.can_transition_to(Published));
    }

    #[test]
    fn allowed_sources_match_the_state_machine() {
        assert_eq!(
            OutboxStatus::allowed_sources(Consumed),
            vec![Pending, Published, Dead]
        );
        assert_eq!(
            OutboxStatus::allowed_sources(Dead),
            vec![Pending, Published]
        );
        assert_eq!(OutboxStatus::allowed_sources(Published), vec![Pending]);
        assert_eq!(
            OutboxStatus::allowed_sources(Pending),
            vec![Pending, Published, Dead]
        );
    }

    #[test]
    fn spelling_round_trips_and_unknown_is_an_error() {
        for status in OutboxStatus::ALL {
            assert_eq!(status.as_str().parse::<OutboxStatus>(), Ok(status));
        }
        assert!("sent".parse::<OutboxStatus>().is_err());
    }
}
