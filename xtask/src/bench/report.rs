//! The benchmark's figures: a table for people, JSON for tools.

use clap::ValueEnum as _;
use serde::Serialize;
use serde_json::{json, Value};

use super::consumer::ConsumerApply;
use super::latency::Latency;
use super::outbox_cost::OutboxCost;
use super::retention::RetentionCost;
use super::scale::ScalePoint;
use super::sustained::Sustained;
use super::throughput::{ProducerThroughput, RelayThroughput, RoundBreakdown};
use super::BenchArgs;

/// Everything measured on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub backend: &'static str,
    #[serde(skip)]
    pub key: &'static str,
    pub outbox_cost: Vec<OutboxCost>,
    pub producer: Option<ProducerThroughput>,
    pub relay: Option<RelayThroughput>,
    pub relay_round: Option<RoundBreakdown>,
    pub relay_discard: Option<RelayThroughput>,
    pub seeds_baseline_rows_per_s: Option<f64>,
    pub latency: Option<Latency>,
    /// The same with the relay in a process of its own.
    pub latency_apart: Option<Latency>,
    pub consumer: Option<ConsumerApply>,
    pub retention: Option<RetentionCost>,
    pub scale: Vec<ScalePoint>,
    pub sustained: Option<Sustained>,
    pub errors: Vec<String>,
    /// `/proc/loadavg`'s 1, 5 and 15 minute figures before and after this backend's run: the
    /// machine is shared, and other work skews every figure.
    pub load_before: String,
    pub load_after: String,
}

impl Figures {
    pub fn new(backend: &'static str, key: &'static str) -> Self {
        Self {
            backend,
            key,
            outbox_cost: Vec::new(),
            producer: None,
            relay: None,
            relay_round: None,
            relay_discard: None,
            seeds_baseline_rows_per_s: None,
            latency: None,
            latency_apart: None,
            consumer: None,
            retention: None,
            scale: Vec::new(),
            sustained: None,
            errors: Vec::new(),
            load_before: load_average(),
            load_after: String::new(),
        }
    }

    fn cost(&self, i: usize) -> Option<&OutboxCost> {
        self.outbox_cost.get(i)
    }
}

/// A Markdown table: one row per figure, one column per backend.
pub fn table(all: &[Figures]) -> String {
    type Cell = fn(&Figures) -> Option<String>;
    let writers = all.iter().find_map(|f| f.cost(1)).map_or(8, |c| c.writers);
    let relay_label =
        all.iter()
            .find_map(|f| f.relay.as_ref())
            .map_or("relay rows/s".to_owned(), |r| {
                format!(
                    "relay rows/s (backlog drained, batch {}, {} workers)",
                    r.batch_size, r.workers
                )
            });
    let rows: Vec<(String, Cell)> = vec![
        ("business tx/s, 1 writer".into(), |f| {
            f.cost(0).map(|c| int(c.plain_tx_per_s))
        }),
        ("business + outbox tx/s, 1 writer".into(), |f| {
            f.cost(0).map(|c| int(c.outbox_tx_per_s))
        }),
        ("**outbox cost, 1 writer** (target <= 1.3x)".into(), |f| {
            f.cost(0).map(|c| format!("**{:.2}x**", c.cost))
        }),
        (format!("business tx/s, {writers} writers"), |f| {
            f.cost(1).map(|c| int(c.plain_tx_per_s))
        }),
        (format!("business + outbox tx/s, {writers} writers"), |f| {
            f.cost(1).map(|c| int(c.outbox_tx_per_s))
        }),
        (format!("outbox cost, {writers} writers"), |f| {
            f.cost(1).map(|c| format!("{:.2}x", c.cost))
        }),
        ("producer msg/s (send_batch of 1000)".into(), |f| {
            f.producer.as_ref().map(|p| int(p.messages_per_s))
        }),
        (
            format!(
                "**{relay_label}** (target >= 100,000 on PostgreSQL and SQLite, 50,000 on MariaDB)"
            ),
            |f| {
                f.relay
                    .as_ref()
                    .map(|r| format!("**{}**", int(r.rows_per_s)))
            },
        ),
        ("relay backlog rows".into(), |f| {
            f.relay.as_ref().map(|r| int(r.rows as f64))
        }),
        ("relay / producer".into(), |f| {
            let (relay, producer) = (f.relay.as_ref()?, f.producer.as_ref()?);
            Some(format!("{:.2}", relay.rows_per_s / producer.messages_per_s))
        }),
        (
            "relay rows/s through a transport that discards".into(),
            |f| f.relay_discard.as_ref().map(|r| int(r.rows_per_s)),
        ),
        (
            "seeds' relay rows/s (per row: publish, ack, UPDATE)".into(),
            |f| f.seeds_baseline_rows_per_s.map(int),
        ),
        ("relay / seeds' relay".into(), |f| {
            let (relay, seeds) = (f.relay.as_ref()?, f.seeds_baseline_rows_per_s?);
            Some(format!("{:.1}x", relay.rows_per_s / seeds))
        }),
        (
            "backlog preload rows/s (bus.publish_all, 1000 per tx)".into(),
            |f| f.relay.as_ref().map(|r| int(r.preload_rows_per_s)),
        ),
        ("one round by hand: claim / send / settle ms".into(), |f| {
            f.relay_round
                .as_ref()
                .map(|r| format!("{:.1} / {:.1} / {:.1}", r.claim_ms, r.send_ms, r.settle_ms))
        }),
        ("one round by hand: rows/s (1 worker)".into(), |f| {
            f.relay_round.as_ref().map(|r| int(r.rows_per_s))
        }),
        (
            "relay rows/s with retention deleting beside it / off".into(),
            |f| {
                f.retention.as_ref().map(|r| {
                    format!(
                        "{} / {}",
                        int(r.with_retention.rows_per_s),
                        int(r.without_retention.rows_per_s)
                    )
                })
            },
        ),
        (
            "**retention's cost to the relay** (target <= 10%)".into(),
            |f| {
                f.retention
                    .as_ref()
                    .map(|r| format!("**{:.1}%**", r.slowdown * 100.0))
            },
        ),
        ("scale: relay rows/s at each backlog (rows)".into(), |f| {
            (!f.scale.is_empty()).then(|| {
                f.scale
                    .iter()
                    .map(|p| format!("{} ({})", int(p.rows_per_s), int(p.rows as f64)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
        }),
        (
            "**scale: slowest / fastest** (target >= 0.80)".into(),
            |f| super::scale::spread(&f.scale).map(|s| format!("**{s:.2}**")),
        ),
        ("scale: peak RSS MiB at each backlog".into(), |f| {
            (!f.scale.is_empty()).then(|| {
                f.scale
                    .iter()
                    .map(|p| p.peak_rss_mib.map_or("?".to_owned(), |m| format!("{m:.0}")))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
        }),
        ("sustained: writers' tx/s / consumed events/s".into(), |f| {
            f.sustained
                .as_ref()
                .map(|s| format!("{} / {}", int(s.committed_per_s), int(s.consumed_per_s)))
        }),
        (
            "**sustained: backlog bounded** (max / at stop / drained after)".into(),
            |f| {
                f.sustained.as_ref().map(|s| {
                    format!(
                        "**{}** ({} / {} / {})",
                        if s.bounded { "yes" } else { "no" },
                        int(s.backlog_max as f64),
                        int(s.backlog_at_end as f64),
                        s.drained_after_s
                            .map_or("> 120 s".to_owned(), |d| format!("{d:.1} s"))
                    )
                })
            },
        ),
        ("end-to-end p50 ms".into(), |f| {
            f.latency.as_ref().map(|l| format!("{:.1}", l.p50_ms))
        }),
        (
            "**end-to-end p99 ms** (target <= 25 on PostgreSQL and MariaDB, 50 on SQLite)".into(),
            |f| f.latency.as_ref().map(|l| format!("**{:.1}**", l.p99_ms)),
        ),
        ("end-to-end max ms".into(), |f| {
            f.latency.as_ref().map(|l| format!("{:.1}", l.max_ms))
        }),
        ("end-to-end events measured / published".into(), |f| {
            f.latency
                .as_ref()
                .map(|l| format!("{} / {}", l.measured, l.published))
        }),
        (
            "e2e part: row written -> published p50 / p99 ms".into(),
            |f| {
                f.latency
                    .as_ref()
                    .map(|l| format!("{:.0} / {:.0}", l.relay_lag_p50_ms, l.relay_lag_p99_ms))
            },
        ),
        (
            "e2e part: commit -> consumer received p50 / p99 ms".into(),
            |f| {
                f.latency
                    .as_ref()
                    .map(|l| format!("{:.1} / {:.1}", l.to_receive_p50_ms, l.to_receive_p99_ms))
            },
        ),
        ("e2e part: received -> applied p50 / p99 ms".into(), |f| {
            f.latency
                .as_ref()
                .map(|l| format!("{:.1} / {:.1}", l.apply_p50_ms, l.apply_p99_ms))
        }),
        (
            "consumer: messages per batch / process_batch ms per message".into(),
            |f| {
                f.latency.as_ref().map(|l| {
                    format!(
                        "{:.1} / {:.2}",
                        l.consumer_mean_batch,
                        l.process_batch_mean_ms / l.consumer_mean_batch.max(1.0)
                    )
                })
            },
        ),
        (
            "**end-to-end p50 / p99 ms, relay in another process** (target p99 <= 30 on PostgreSQL)"
                .into(),
            |f| {
                f.latency_apart
                    .as_ref()
                    .map(|l| format!("{:.1} / **{:.1}**", l.p50_ms, l.p99_ms))
            },
        ),
        (
            "relay in another process: row written -> published p50 / p99 ms".into(),
            |f| {
                f.latency_apart
                    .as_ref()
                    .map(|l| format!("{:.0} / {:.0}", l.relay_lag_p50_ms, l.relay_lag_p99_ms))
            },
        ),
        ("publisher rate achieved (events/s)".into(), |f| {
            f.latency.as_ref().map(|l| int(l.achieved_events_per_s))
        }),
        ("publishing transactions that failed".into(), |f| {
            f.latency.as_ref().map(|l| int(l.publish_errors as f64))
        }),
        (
            "consumer apply events/s (backlog, handle_batch)".into(),
            |f| f.consumer.as_ref().map(|c| int(c.batched_events_per_s)),
        ),
        (
            "consumer apply events/s (backlog, one handle per event)".into(),
            |f| f.consumer.as_ref().map(|c| int(c.per_event_events_per_s)),
        ),
        ("load average before -> after (1/5/15 min)".into(), |f| {
            Some(format!("{} -> {}", f.load_before, f.load_after))
        }),
    ];
    let mut out = String::new();
    out.push_str("| figure |");
    for f in all {
        out.push_str(&format!(" {} |", f.backend));
    }
    out.push_str("\n|---|");
    for _ in all {
        out.push_str("---:|");
    }
    for (label, cell) in &rows {
        out.push_str(&format!("\n| {label} |"));
        for f in all {
            let text = cell(f)
                .unwrap_or_else(|| if f.errors.is_empty() { "-" } else { "failed" }.to_owned());
            out.push_str(&format!(" {text} |"));
        }
    }
    out
}

/// Every figure, per backend, with the settings and the machine they were measured with.
pub fn json(args: &BenchArgs, all: &[Figures]) -> Value {
    let backends: serde_json::Map<String, Value> = all
        .iter()
        .map(|f| {
            (
                f.key.to_owned(),
                serde_json::to_value(f).unwrap_or(Value::Null),
            )
        })
        .collect();
    json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": cpu_model(),
        },
        "settings": {
            "latency_seconds": args.seconds,
            "latency_rate": args.rate,
            "cost_seconds": args.cost_seconds,
            "writers": args.writers,
            "producer_messages": args.producer_messages,
            "relay_rows": args.relay_rows,
            "sqlite_relay_rows": args.sqlite_relay_rows,
            "relay_batch": args.relay_batch,
            "relay_workers": args.relay_workers,
            "baseline_rows": args.baseline_rows,
            "partitions": args.partitions,
            "message_bytes": super::fixture::envelope_bytes(&super::fixture::ChatMessageAppended::sized(0)),
            "scale_rows": args.scale_rows,
            "sustained_seconds": args.sustained_seconds,
            "phases": args.phases.iter().filter_map(|p| Some(p.to_possible_value()?.get_name().to_owned())).collect::<Vec<_>>(),
            "kafka_set": args.kafka_set,
        },
        "backends": backends,
    })
}

/// The 1, 5 and 15 minute load averages, or an empty string where `/proc` has none.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// A whole number with thousands separators.
fn int(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < -0.5 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::int;

    #[test]
    fn thousands_separators() {
        assert_eq!(int(0.4), "0");
        assert_eq!(int(999.0), "999");
        assert_eq!(int(1000.0), "1,000");
        assert_eq!(int(1234567.8), "1,234,568");
    }
}
