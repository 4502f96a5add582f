//! Figure a: what writing the outbox row costs a business transaction.

use std::time::Duration;

use anyhow::Result;
use sea_orm::TransactionTrait;
use serde::Serialize;
use smartflow_storage::chat_history;
use tokio::time::Instant;

use super::fixture::{ChatMessageAppended, Fixture};

/// Transactions per second with and without the outbox row, at one writer count.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxCost {
    pub writers: usize,
    /// `begin; chat_history::insert; commit`.
    pub plain_tx_per_s: f64,
    /// `begin; chat_history::insert; bus.publish; commit`.
    pub outbox_tx_per_s: f64,
    /// plain / with outbox: how many times slower the outbox makes a transaction.
    pub cost: f64,
    pub seconds_each: f64,
}

/// Alternates plain and outbox runs (`ROUNDS` of each) so drift (the table growing, the page
/// cache warming) is shared by both.
const ROUNDS: u32 = 4;

pub async fn measure(fx: &Fixture, writers: usize, seconds: f64) -> Result<OutboxCost> {
    let slice = Duration::from_secs_f64(seconds / f64::from(ROUNDS));
    // Warms the pool's connections and the statement caches.
    run(fx, writers, false, Duration::from_millis(300)).await?;
    let (mut plain, mut outbox) = ((0u64, 0f64), (0u64, 0f64));
    for _ in 0..ROUNDS {
        for (with_outbox, total) in [(false, &mut plain), (true, &mut outbox)] {
            let (commits, elapsed) = run(fx, writers, with_outbox, slice).await?;
            total.0 += commits;
            total.1 += elapsed;
        }
    }
    let plain_tx_per_s = plain.0 as f64 / plain.1;
    let outbox_tx_per_s = outbox.0 as f64 / outbox.1;
    Ok(OutboxCost {
        writers,
        plain_tx_per_s,
        outbox_tx_per_s,
        cost: plain_tx_per_s / outbox_tx_per_s,
        seconds_each: plain.1,
    })
}

/// `writers` tasks commit transactions back to back for `duration`; returns the commits and the
/// seconds from start until the last writer finished its last transaction.
async fn run(
    fx: &Fixture,
    writers: usize,
    with_outbox: bool,
    duration: Duration,
) -> Result<(u64, f64)> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let db = fx.db().clone();
        let bus = fx.bus.clone();
        let event = ChatMessageAppended::sized(writer);
        tasks.spawn(async move {
            let mut commits = 0u64;
            while Instant::now() < deadline {
                let txn = db.begin().await?;
                let row = event.business_row(uuid::Uuid::now_v7().to_string());
                chat_history::insert(&txn, &row).await?;
                if with_outbox {
                    bus.publish(&txn, &event.conversation_id, &event).await?;
                    bus.commit(txn).await?;
                } else {
                    txn.commit().await?;
                }
                commits += 1;
            }
            anyhow::Ok(commits)
        });
    }
    let mut commits = 0;
    while let Some(done) = tasks.join_next().await {
        commits += done??;
    }
    Ok((commits, started.elapsed().as_secs_f64()))
}
