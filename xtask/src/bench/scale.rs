//! Figure f: the relay's rate at backlogs of growing size, one after another on one table (so
//! the table holds every earlier run's rows too), and the bench process's peak RSS during each.

use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;
use smartflow_bus::Retention;

use super::fixture::Fixture;
use super::throughput::{relay_through, warmed_producer};

#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    /// The backlog drained.
    pub rows: usize,
    /// Rows already in the table (published by the earlier runs) when it started.
    pub table_rows_before: usize,
    pub seconds: f64,
    pub rows_per_s: f64,
    /// The process's peak resident memory during the drain (`VmHWM`, reset before it), in MiB;
    /// the process also holds the embedded broker, which keeps up to 5 MB per partition.
    pub peak_rss_mib: Option<f64>,
}

/// Resets the process's peak RSS (Linux: `/proc/self/clear_refs`); false where it cannot.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub async fn measure(
    fx: &Fixture,
    sizes: &[usize],
    batch_size: u64,
    workers: usize,
) -> Result<Vec<ScalePoint>> {
    let producer = Arc::new(warmed_producer(fx).await?);
    let mut points = Vec::with_capacity(sizes.len());
    let mut table_rows = 0;
    for &rows in sizes {
        let reset = reset_peak_rss();
        let run = relay_through(
            fx,
            rows,
            batch_size,
            workers,
            producer.clone(),
            Retention::default(),
        )
        .await?;
        points.push(ScalePoint {
            rows,
            table_rows_before: table_rows,
            seconds: run.seconds,
            rows_per_s: run.rows_per_s,
            peak_rss_mib: if reset { peak_rss_mib() } else { None },
        });
        table_rows += rows;
    }
    Ok(points)
}

/// The slowest run's rate over the fastest's (1.0: no decay; the target is at least 0.8).
pub fn spread(points: &[ScalePoint]) -> Option<f64> {
    let rates = points.iter().map(|p| p.rows_per_s);
    let max = rates.clone().fold(f64::NAN, f64::max);
    let min = rates.fold(f64::NAN, f64::min);
    (max > 0.0).then(|| min / max)
}
