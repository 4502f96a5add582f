//! From what the writers saw and what the database holds to the figures of one backend.

use std::collections::{BTreeMap, HashMap, HashSet};

use smartflow_domain::OutboxStatus;

use super::database::Snapshot;
use super::faults::FaultRecord;
use super::load::{parse_content, Outcome, Post};

/// One backend's figures.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub label: String,
    pub posts: usize,
    pub accepted: usize,
    pub refused: usize,
    pub unknown: usize,
    pub unknown_committed: usize,
    pub rejected: usize,
    /// Outbox rows of chat messages.
    pub committed: usize,
    /// The same content committed more than once (writers never resend, so this is a bug).
    pub committed_twice: usize,
    /// Distinct chat messages in the history.
    pub applied: usize,
    /// Extra history rows of a message already stored once.
    pub applied_twice: usize,
    /// Committed, not dead, never applied.
    pub lost: usize,
    /// A 202 for a message with no outbox row.
    pub acknowledged_not_committed: usize,
    /// History rows with no outbox row behind them.
    pub applied_without_commit: usize,
    /// Chat rows still `pending` or `published` at the end.
    pub stuck: usize,
    pub order_violations: usize,
    pub order_violating_streams: usize,
    pub dead: usize,
    pub dead_chat: usize,
    /// Dead rows' reasons (event type + error), with counts.
    pub dead_reasons: BTreeMap<String, usize>,
    pub faults: Vec<FaultRecord>,
    /// Seconds from the end of the last fault to an outbox with nothing pending or published.
    pub drain_after_last_fault: Option<f64>,
    /// Seconds from the end of the load to the same.
    pub drain_after_load: Option<f64>,
    /// Consumer offset resets in the agents' logs: the mock broker dropped messages (it keeps
    /// about 5 MB per partition) before they were consumed, and the consumer skipped ahead.
    pub offset_resets: usize,
    pub unexpected_exits: Vec<String>,
    pub errors: Vec<String>,
}

impl Figures {
    /// Whether the run met the bar: nothing lost, nothing applied twice, drained, no harness
    /// error. Order violations and dead rows are reported, not judged (per-key order is a later
    /// issue; dead rows keep their reason).
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.acknowledged_not_committed == 0
            && self.applied_twice == 0
            && self.committed_twice == 0
            && self.applied_without_commit == 0
            && self.drain_after_load.is_some()
            && self.errors.is_empty()
    }
}

/// Fills the delivery figures of `figures` from the writers' posts and the final snapshot.
pub fn judge(figures: &mut Figures, posts: &[Post], snapshot: &Snapshot) {
    figures.posts = posts.len();
    let count = |o: Outcome| posts.iter().filter(|p| p.outcome == o).count();
    figures.accepted = count(Outcome::Accepted);
    figures.refused = count(Outcome::Refused);
    figures.unknown = count(Outcome::Unknown);
    figures.rejected = count(Outcome::Rejected);

    let mut outbox: HashMap<&str, OutboxStatus> = HashMap::new();
    for entry in &snapshot.outbox {
        if outbox
            .insert(entry.content.as_str(), entry.status)
            .is_some()
        {
            figures.committed_twice += 1;
        }
    }
    figures.committed = snapshot.outbox.len();
    let mut stored: HashMap<&str, usize> = HashMap::new();
    for entry in &snapshot.history {
        *stored.entry(entry.content.as_str()).or_default() += 1;
    }
    figures.applied = stored.len();
    figures.applied_twice = stored.values().map(|n| n - 1).sum();
    figures.applied_without_commit = stored.keys().filter(|c| !outbox.contains_key(*c)).count();
    for (content, status) in &outbox {
        let applied = stored.contains_key(content);
        match status {
            OutboxStatus::Dead => figures.dead_chat += 1,
            _ if !applied => figures.lost += 1,
            _ => {}
        }
        if matches!(status, OutboxStatus::Pending | OutboxStatus::Published) {
            figures.stuck += 1;
        }
    }
    for post in posts {
        let committed = outbox.contains_key(post.content.as_str());
        match post.outcome {
            Outcome::Accepted if !committed => figures.acknowledged_not_committed += 1,
            Outcome::Unknown if committed => figures.unknown_committed += 1,
            _ => {}
        }
    }

    // Per writer and conversation, sequence numbers must rise in the order rows were stored.
    let mut highest: HashMap<(usize, usize), u64> = HashMap::new();
    let mut violating: HashSet<(usize, usize)> = HashSet::new();
    for entry in &snapshot.history {
        let Some((w, c, n)) = parse_content(&entry.content) else {
            continue;
        };
        debug_assert_eq!(c, entry.conversation);
        let top = highest.entry((w, c)).or_insert(0);
        if n < *top {
            figures.order_violations += 1;
            violating.insert((w, c));
        } else {
            *top = n;
        }
    }
    figures.order_violating_streams = violating.len();

    figures.dead = snapshot.dead.len();
    for row in &snapshot.dead {
        let mut reason: String = row.reason.chars().take(160).collect();
        if reason.len() < row.reason.len() {
            reason.push_str("...");
        }
        *figures
            .dead_reasons
            .entry(format!("{}: {reason}", row.event_type))
            .or_default() += 1;
    }
}

/// The per-backend block of the report.
pub fn print(f: &Figures) {
    println!("\n  -- {} --", f.label);
    println!("  faults: {}", f.faults.len());
    for fault in &f.faults {
        println!(
            "    t={:.1}..{:.1} s {:?}: {}",
            fault.started, fault.ended, fault.kind, fault.detail
        );
    }
    println!(
        "  posts: {} sent; {} accepted (202), {} refused (connection refused), {} unknown \
         (timeout/cut/5xx; {} of them committed), {} rejected (4xx)",
        f.posts, f.accepted, f.refused, f.unknown, f.unknown_committed, f.rejected
    );
    println!(
        "  committed: {} chat outbox rows (accepted posts: {}){}",
        f.committed,
        f.accepted,
        if f.committed_twice > 0 {
            format!(", {} committed twice", f.committed_twice)
        } else {
            String::new()
        }
    );
    println!("  applied: {} distinct chat history rows", f.applied);
    println!(
        "  lost: {} (committed, not dead, never applied); acknowledged but not committed: {}; \
         applied without a commit: {}; still pending/published: {}",
        f.lost, f.acknowledged_not_committed, f.applied_without_commit, f.stuck
    );
    println!("  applied twice: {}", f.applied_twice);
    println!(
        "  order violations: {} (in {} writer/conversation streams)",
        f.order_violations, f.order_violating_streams
    );
    println!("  dead rows: {} ({} chat messages)", f.dead, f.dead_chat);
    for (reason, n) in &f.dead_reasons {
        println!("    {n} x {reason}");
    }
    match (f.drain_after_last_fault, f.drain_after_load) {
        (Some(fault), Some(load)) => println!(
            "  drained: {fault:.1} s after the last fault ended ({load:.1} s after the load ended)"
        ),
        _ => println!("  drained: NO (rows still pending/published when the drain wait gave up)"),
    }
    if f.offset_resets > 0 {
        println!(
            "  consumer offset resets: {} (the mock broker dropped unconsumed messages past its \
             ~5 MB per-partition retention; those rows stay `published` until republished)",
            f.offset_resets
        );
    }
    for exit in &f.unexpected_exits {
        println!("  unexpected exit: {exit}");
    }
    for error in &f.errors {
        println!("  error: {error}");
    }
    println!("  verdict: {}", if f.passed() { "PASS" } else { "FAIL" });
}

/// One line per backend, for the end of the report.
pub fn summary(all: &[Figures]) -> String {
    let mut out = String::from(
        "backend     committed  applied  lost  twice  order-viol  dead  drain-after-fault  verdict\n",
    );
    for f in all {
        let drain = f
            .drain_after_last_fault
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "not drained".to_owned());
        out.push_str(&format!(
            "{:<11} {:>9}  {:>7}  {:>4}  {:>5}  {:>10}  {:>4}  {:>17}  {}\n",
            f.label,
            f.committed,
            f.applied,
            f.lost + f.acknowledged_not_committed,
            f.applied_twice,
            f.order_violations,
            f.dead,
            drain,
            if f.passed() { "PASS" } else { "FAIL" }
        ));
    }
    out
}
