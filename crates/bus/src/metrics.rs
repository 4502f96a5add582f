use std::sync::atomic::{AtomicU64, Ordering};

use crate::health::Health;

/// Counters of what the bus did in this process, for logs and a metrics endpoint, and the
/// health of its relays and consumers.
#[derive(Debug, Default)]
pub struct Metrics {
    pub health: Health,
    /// Times a relay paused because the broker or the database was unavailable.
    pub relay_pauses: AtomicU64,
    /// Times a consumer stalled: it could not apply a batch, or the broker was unavailable.
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
    /// Rows a relay left for a later round because an earlier row of their key waits for a
    /// retry (`KeyOrder::Block`).
    pub held_back: AtomicU64,
    /// Times a transport acknowledged a message after failing an earlier message of the same key
    /// in one batch: the one way a key's order could break, which the transports promise never
    /// to do. Watched so a broken promise is seen.
    pub order_breaks: AtomicU64,
    /// Consumer batches applied whole: one savepoint, set-based dedupe marks, handlers called
    /// once per run of one event type.
    pub batches_whole: AtomicU64,
    /// Consumer batches applied one event at a time, each in its own savepoint: a batch with an
    /// undecodable message, an unknown type or a single message, or one whose whole attempt
    /// failed (a handler error) and was rolled back.
    pub batches_one_by_one: AtomicU64,
    /// Rows retention deleted: outbox rows the bus was done with and handled inbox entries.
    pub retention_deleted: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The counters and the health of every relay and consumer, in the Prometheus text format:
    /// `smartflow_bus_NAME_total` counters and a `smartflow_component_healthy{component}` gauge
    /// (1 healthy, 0 paused or stalled).
    pub fn prometheus_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        for (name, value) in self.snapshot() {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "# HELP smartflow_bus_{name}_total Bus counter `{name}` since this process started.\n\
                 # TYPE smartflow_bus_{name}_total counter\n\
                 smartflow_bus_{name}_total {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP smartflow_component_healthy Whether a relay or consumer works (0: paused or stalled).\n\
             # TYPE smartflow_component_healthy gauge"
        );
        for component in self.health.report() {
            let name = component.name.replace(['\\', '"', '\n'], "_");
            let _ = writeln!(
                out,
                "smartflow_component_healthy{{component=\"{name}\"}} {}",
                u8::from(component.healthy)
            );
        }
        out
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
            ("held_back", self.held_back.load(Ordering::Relaxed)),
            ("order_breaks", self.order_breaks.load(Ordering::Relaxed)),
            ("batches_whole", self.batches_whole.load(Ordering::Relaxed)),
            (
                "batches_one_by_one",
                self.batches_one_by_one.load(Ordering::Relaxed),
            ),
            (
                "retention_deleted",
                self.retention_deleted.load(Ordering::Relaxed),
            ),
            ("relay_pauses", self.relay_pauses.load(Ordering::Relaxed)),
            (
                "consumer_stalls",
                self.consumer_stalls.load(Ordering::Relaxed),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_counters_and_one_health_gauge_per_component() {
        let m = Metrics::default();
        Metrics::add(&m.published, 3);
        m.health.register("relay agent_outbox");
        m.health.fault("relay agent_outbox", "paused");
        let text = m.prometheus_text();
        assert!(text.contains("smartflow_bus_published_total 3"), "{text}");
        assert!(
            text.contains("smartflow_component_healthy{component=\"relay agent_outbox\"} 0"),
            "{text}"
        );
    }
}
