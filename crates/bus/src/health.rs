//! What the bus's loops report about themselves, for a service's health endpoint: whether the
//! relay is paused and why, whether each consumer polls, owns partitions and can apply batches.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// A consumer that has not polled the broker for this long is reported stuck.
pub const CONSUMER_POLL_STALE: Duration = Duration::from_secs(30);
/// A consumer that has owned no partition for this long (since it started or last owned one)
/// is reported: it is not a working member of its group.
pub const CONSUMER_UNASSIGNED_GRACE: Duration = Duration::from_secs(60);

/// The states of one process's relays and consumers. Cheap to update; read by health checks.
#[derive(Debug, Default)]
pub struct Health {
    components: Mutex<BTreeMap<String, Component>>,
}

#[derive(Debug, Clone)]
struct Component {
    /// Consumers are also judged by their polls and partitions.
    consumer: bool,
    fault: Option<(String, Instant)>,
    /// Consumers only: the last poll, the partitions owned then, and since when none.
    last_poll: Option<Instant>,
    assigned: usize,
    unassigned_since: Option<Instant>,
    started: Instant,
}

impl Component {
    fn new(now: Instant) -> Self {
        Self {
            consumer: false,
            fault: None,
            last_poll: None,
            assigned: 0,
            unassigned_since: Some(now),
            started: now,
        }
    }
}

/// One component as the health endpoint shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ComponentReport {
    pub name: String,
    pub healthy: bool,
    /// Why it is not healthy, in words for an operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Consumers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_partitions: Option<usize>,
}

/// Whether a state change was a change: callers log once per change, not once per attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The component was fine and is now faulted.
    Faulted,
    /// It was faulted (for this long) and is fine again.
    Recovered(Duration),
    Unchanged,
}

impl Health {
    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Component, Instant) -> T) -> T {
        let now = Instant::now();
        // A poisoned lock means a panic elsewhere while updating plain data; the data is whole.
        let mut components = self
            .components
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let component = components
            .entry(name.to_owned())
            .or_insert_with(|| Component::new(now));
        f(component, now)
    }

    /// Registers a component so it is reported from the start, before its first update.
    pub fn register(&self, name: &str) {
        self.with(name, |_, _| ());
    }

    /// Registers a consumer: reported from the start, and judged by its polls and partitions
    /// too (see [`CONSUMER_POLL_STALE`], [`CONSUMER_UNASSIGNED_GRACE`]).
    pub fn register_consumer(&self, name: &str) {
        self.with(name, |c, _| c.consumer = true);
    }

    /// Records that `name` cannot work, and why.
    pub fn fault(&self, name: &str, problem: impl Into<String>) -> Transition {
        let problem = problem.into();
        self.with(name, |c, now| match &mut c.fault {
            Some((reason, _)) => {
                *reason = problem;
                Transition::Unchanged
            }
            None => {
                c.fault = Some((problem, now));
                Transition::Faulted
            }
        })
    }

    /// Records that `name` works again.
    pub fn recovered(&self, name: &str) -> Transition {
        self.with(name, |c, now| match c.fault.take() {
            Some((_, since)) => Transition::Recovered(now.duration_since(since)),
            None => Transition::Unchanged,
        })
    }

    /// Records a consumer's poll and how many partitions it owns now.
    pub fn polled(&self, name: &str, assigned: usize) {
        self.with(name, |c, now| {
            c.consumer = true;
            c.last_poll = Some(now);
            c.assigned = assigned;
            if assigned > 0 {
                c.unassigned_since = None;
            } else if c.unassigned_since.is_none() {
                c.unassigned_since = Some(now);
            }
        });
    }

    /// Every component, and whether it is healthy now.
    pub fn report(&self) -> Vec<ComponentReport> {
        let now = Instant::now();
        let components = self
            .components
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        components
            .iter()
            .map(|(name, c)| {
                let problem = if let Some((reason, since)) = &c.fault {
                    Some(format!(
                        "{reason} (for {} s)",
                        now.duration_since(*since).as_secs()
                    ))
                } else if c.consumer {
                    consumer_problem(c, now)
                } else {
                    None
                };
                ComponentReport {
                    name: name.clone(),
                    healthy: problem.is_none(),
                    problem,
                    assigned_partitions: c.consumer.then_some(c.assigned),
                }
            })
            .collect()
    }

    /// Whether every component is healthy.
    pub fn healthy(&self) -> bool {
        self.report().iter().all(|c| c.healthy)
    }
}

fn consumer_problem(c: &Component, now: Instant) -> Option<String> {
    let last = c.last_poll.unwrap_or(c.started);
    let quiet = now.duration_since(last);
    if quiet >= CONSUMER_POLL_STALE {
        return Some(format!(
            "has not polled the broker for {} s",
            quiet.as_secs()
        ));
    }
    match c.unassigned_since {
        Some(since) if now.duration_since(since) >= CONSUMER_UNASSIGNED_GRACE => Some(format!(
            "owns no partition of its group for {} s",
            now.duration_since(since).as_secs()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_reported_once_per_change() {
        let h = Health::default();
        h.register("relay");
        assert!(h.healthy());
        assert_eq!(h.fault("relay", "broker down"), Transition::Faulted);
        assert_eq!(h.fault("relay", "broker still down"), Transition::Unchanged);
        let report = h.report();
        assert!(!report[0].healthy);
        assert!(report[0]
            .problem
            .as_deref()
            .unwrap()
            .starts_with("broker still down"));
        assert!(matches!(h.recovered("relay"), Transition::Recovered(_)));
        assert_eq!(h.recovered("relay"), Transition::Unchanged);
        assert!(h.healthy());
    }

    #[test]
    fn a_polling_consumer_with_partitions_is_healthy() {
        let h = Health::default();
        h.polled("consumer agent", 3);
        let report = h.report();
        assert_eq!(report[0].assigned_partitions, Some(3));
        assert!(report[0].healthy, "{report:?}");
    }

    #[test]
    fn a_consumer_that_stopped_polling_or_owns_nothing_is_reported() {
        let now = Instant::now();
        let mut c = Component::new(now);
        c.last_poll = Some(now);
        c.assigned = 0;
        c.unassigned_since = Some(now);
        assert_eq!(consumer_problem(&c, now), None, "within the grace period");
        let later = now + CONSUMER_UNASSIGNED_GRACE;
        c.last_poll = Some(later);
        assert!(consumer_problem(&c, later)
            .unwrap()
            .starts_with("owns no partition"));
        let much_later = later + CONSUMER_POLL_STALE;
        assert!(consumer_problem(&c, much_later)
            .unwrap()
            .starts_with("has not polled"));
    }
}
