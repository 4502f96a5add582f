use std::sync::atomic::{AtomicU64, Ordering};

use crate::health::Health;

/// Counters of what the bus did in this process, for logs and a metrics endpoint, and the
/// health of its relays and consumers.
#[derive(Debug, Default)]
pub struct Metrics {
    pub health: Health,
    /// Times a relay paused because the broker or the database was unavailable.
    pub relay_pauses: AtomicU64,
    /// Times a consumer stopped taking messages because it could not apply a batch.
    pub consumer_stalls: AtomicU64,
    pub published: AtomicU64,
    pub publish_retries: AtomicU64,
    /// Rows the relay gave up publishing.
    pub publish_dead: AtomicU64,
    /// Events a consumer gave up handling.
    pub handler_dead: AtomicU64,
    pub consumed: AtomicU64,
    pub duplicates: AtomicU64,
    pub handler_retries: AtomicU64,
    pub republished_unconsumed: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A snapshot as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("published", self.published.load(Ordering::Relaxed)),
            (
                "publish_retries",
                self.publish_retries.load(Ordering::Relaxed),
            ),
            ("publish_dead", self.publish_dead.load(Ordering::Relaxed)),
            ("handler_dead", self.handler_dead.load(Ordering::Relaxed)),
            ("consumed", self.consumed.load(Ordering::Relaxed)),
            ("duplicates", self.duplicates.load(Ordering::Relaxed)),
            (
                "handler_retries",
                self.handler_retries.load(Ordering::Relaxed),
            ),
            (
                "republished_unconsumed",
                self.republished_unconsumed.load(Ordering::Relaxed),
            ),
            ("relay_pauses", self.relay_pauses.load(Ordering::Relaxed)),
            (
                "consumer_stalls",
                self.consumer_stalls.load(Ordering::Relaxed),
            ),
        ]
    }
}
