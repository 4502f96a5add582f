//! `smartflow outbox stats | list | show | redrive | unblock | purge`.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use smartflow_domain::OutboxStatus;
use smartflow_service::admin::json::{outbox_report_json, outbox_row_json};
use smartflow_service::admin::redrive_plan;
use smartflow_service::admin::selection::{parse_outbox_status, settled_rows, OutboxSelection};
use smartflow_storage::outbox::{
    OutboxFilter, OutboxPurge, OutboxRecord, OutboxReport, OutboxTable, SettledStatus, MAX_BATCH,
};
use smartflow_storage::StorageError;

use super::duration::{parse_age, show_age};
use super::each_table::{list, stats, AdminTable};
use super::text_table::{cell, TextTable};
use super::{
    print_json, print_reasons, purge_tables, show_time, tables, ChangeArgs, Db, Failure, Target,
};

/// The outboxes of the built-in services, the default tables.
const BUILT_IN: [&str; 2] = [
    smartflow_agent::events::OUTBOX_TABLE,
    smartflow_notification::events::OUTBOX_TABLE,
];

/// Rows a dry run prints per table (all their ids go into `--json`).
const DRY_RUN_SHOWN: usize = 50;

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Rows per status, the oldest pending row's age, the retry histogram, dead rows by reason.
    Stats,
    /// Rows matching the filters, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only rows in this status: pending, published, consumed, dead or stored.
        #[arg(long, value_parser = parse_outbox_status)]
        status: Option<OutboxStatus>,
        /// At most this many rows per table.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// One row in full, payload included: by row id (a number) or event id.
    Show {
        /// The row's id, or its event id.
        id: String,
    },
    /// Sends `dead` rows again (`dead` -> `pending`, attempts reset, due now), each redrive
    /// counted in the row (`redrive_count`, `last_redriven_at`). Rows in any other status are
    /// never touched.
    Redrive {
        /// A row to redrive, by id (repeatable).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<i64>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Every dead row (of the tables), when no --id or filter narrows them.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Makes a key's later rows go on when rows of it waiting for a retry hold them back
    /// (`KeyOrder::Block`): the waiting rows become `dead` ("unblocked by operator; last error:
    /// ..."), to be redriven once their cause is fixed (after the later rows: the key's order
    /// is broken there).
    Unblock {
        /// The message key.
        key: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Deletes `consumed` and `dead` rows settled longer ago than --older-than, in bounded
    /// batches, each a short statement of its own.
    Purge {
        /// Rows last changed (consumed, or given up on) longer ago than this: 30s, 15m, 2h, 7d, 2w.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Duration,
        /// Only rows in this status (repeatable; default: consumed and dead; stored rows only
        /// when named).
        #[arg(long = "status", value_enum)]
        statuses: Vec<PurgeStatus>,
        /// Rows per delete statement.
        #[arg(long, default_value_t = 500,
              value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH))]
        batch_size: u64,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

/// The filters `list` and `redrive` share.
#[derive(Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Only rows of this event type.
    #[arg(long)]
    event_type: Option<String>,
    /// Only rows of this message key.
    #[arg(long)]
    key: Option<String>,
    /// Only rows created longer ago than this: 30s, 15m, 2h, 7d, 2w.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    older_than: Option<Duration>,
    /// Only rows whose last error contains this text (any letter case).
    #[arg(long)]
    reason: Option<String>,
}

impl FilterArgs {
    fn selection(&self) -> OutboxSelection {
        OutboxSelection {
            event_type: self.event_type.clone(),
            key: self.key.clone(),
            older_than: self.older_than,
            reason: self.reason.clone(),
        }
    }

    fn filter(&self, status: Option<OutboxStatus>, ids: &[i64]) -> OutboxFilter {
        self.selection().filter(status, ids)
    }

    fn is_empty(&self) -> bool {
        self.selection().is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PurgeStatus {
    Consumed,
    Dead,
    /// A store-only route's rows (`Delivery::StoreOnly`), deleted only when named.
    Stored,
}

pub async fn run(db: &Db, target: &Target, command: OutboxCommand) -> Result<(), Failure> {
    let names = tables(db, target, &BUILT_IN, "outbox").await?;
    let tables: Vec<OutboxTable> = names
        .iter()
        .map(|name| OutboxTable::new(name.as_str()))
        .collect::<Result<_, _>>()?;
    match command {
        OutboxCommand::Stats => stats(db, &tables, target.json).await,
        OutboxCommand::List {
            filter,
            status,
            limit,
        } => {
            let filter = filter.filter(status, &[]);
            list(db, &tables, &filter, limit, target.json, None).await
        }
        OutboxCommand::Show { id } => show(db, &tables, &id, target.json).await,
        OutboxCommand::Redrive {
            ids,
            filter,
            all,
            change,
        } => {
            if ids.is_empty() && filter.is_empty() && !all {
                return Err(Failure::Usage(
                    "name the rows to redrive: --id ID, a filter (--event-type, --key, \
                     --older-than, --reason), or --all for every dead row"
                        .into(),
                ));
            }
            if !ids.is_empty() && tables.len() > 1 {
                return Err(Failure::Usage(format!(
                    "row ids are per table, and this would redrive in {}: name one with --table",
                    names.join(", ")
                )));
            }
            redrive(
                db,
                &tables,
                &filter.filter(None, &ids),
                &change,
                target.json,
            )
            .await
        }
        OutboxCommand::Unblock { key, change } => {
            unblock(db, &tables, &key, &change, target.json).await
        }
        OutboxCommand::Purge {
            older_than,
            statuses,
            batch_size,
            change,
        } => {
            let statuses = statuses
                .iter()
                .map(|s| match s {
                    PurgeStatus::Consumed => SettledStatus::Consumed,
                    PurgeStatus::Dead => SettledStatus::Dead,
                    PurgeStatus::Stored => SettledStatus::Stored,
                })
                .collect();
            let purge = settled_rows(older_than, statuses);
            purge_rows(db, &tables, &purge, batch_size, &change, target.json).await
        }
    }
}

impl AdminTable for OutboxTable {
    type Report = OutboxReport;
    type Filter = OutboxFilter;
    type Row = OutboxRecord;

    fn name(&self) -> &str {
        OutboxTable::name(self)
    }

    async fn report(&self, db: &Db) -> Result<OutboxReport, StorageError> {
        OutboxTable::report(self, db).await
    }

    fn report_json(&self, report: &OutboxReport, now: i64) -> Value {
        outbox_report_json(OutboxTable::name(self), report, now)
    }

    fn print_report(report: &OutboxReport, now: i64) {
        let c = &report.counts;
        let mut counts = TextTable::new(&["status", "rows"], &["rows"]);
        for (status, n) in [
            (OutboxStatus::Pending, c.pending),
            (OutboxStatus::Published, c.published),
            (OutboxStatus::Consumed, c.consumed),
            (OutboxStatus::Dead, c.dead),
            (OutboxStatus::Stored, c.stored),
        ] {
            counts.row(vec![status.to_string(), n.to_string()]);
        }
        print!("{counts}");
        match c.oldest_pending_created_at {
            Some(t) => println!(
                "oldest pending: {} ({} ago)",
                show_time(Some(t)),
                show_age(now - t)
            ),
            None => println!("oldest pending: -"),
        }
        if !report.retries.is_empty() {
            let mut retries = TextTable::new(&["retries", "rows"], &["retries", "rows"]);
            for (n, rows) in &report.retries {
                retries.row(vec![n.to_string(), rows.to_string()]);
            }
            println!("retries of the rows not consumed:");
            print!("{retries}");
        }
        print_reasons(&report.dead_reasons);
    }

    async fn count(&self, db: &Db, filter: &OutboxFilter) -> Result<u64, StorageError> {
        self.count_matching(db, filter).await
    }

    async fn rows(
        &self,
        db: &Db,
        filter: &OutboxFilter,
        limit: u64,
    ) -> Result<Vec<OutboxRecord>, StorageError> {
        self.list_matching(db, filter, limit).await
    }

    fn row_json(row: &OutboxRecord) -> Value {
        outbox_row_json(row, false)
    }

    fn rows_table(rows: &[OutboxRecord]) -> TextTable {
        rows_table(rows)
    }
}

async fn show(db: &Db, tables: &[OutboxTable], id: &str, json: bool) -> Result<(), Failure> {
    let mut found = Vec::new();
    for table in tables {
        let record = match id.parse::<i64>() {
            Ok(row_id) => table.record_by_id(db, row_id).await?,
            Err(_) => table.record_by_event_id(db, id).await?,
        };
        if let Some(record) = record {
            found.push((table, record));
        }
    }
    if found.is_empty() {
        let names: Vec<&str> = tables.iter().map(OutboxTable::name).collect();
        return Err(Failure::Failed(anyhow::anyhow!(
            "no row `{id}` in {}",
            names.join(", ")
        )));
    }
    if json {
        let out: Vec<Value> = found
            .iter()
            .map(|(table, r)| json!({"table": table.name(), "row": outbox_row_json(r, true)}))
            .collect();
        print_json(&json!({ "tables": out }));
        return Ok(());
    }
    for (i, (table, r)) in found.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let row = &r.row;
        let mut fields = TextTable::new(&["field", "value"], &[]);
        let mut field = |name: &str, value: String| fields.row(vec![name.to_owned(), value]);
        field("table", table.name().to_owned());
        field("id", row.id.to_string());
        field("event_id", row.event_id.clone());
        field("event_type", row.event_type.clone());
        field("event_version", r.event_version.to_string());
        field("message_key", row.message_key.clone());
        field("topic", r.topic.clone());
        field("status", row.status.to_string());
        field(
            "retry_count",
            format!("{} of {}", row.retry_count, row.max_retry),
        );
        field("next_retry_at", show_time(row.next_retry_at));
        field(
            "last_error",
            row.last_error.clone().unwrap_or_else(|| "-".into()),
        );
        field(
            "locked_by",
            row.locked_by.clone().unwrap_or_else(|| "-".into()),
        );
        field("locked_until", show_time(r.locked_until));
        field("created_at", show_time(Some(row.created_at)));
        field("published_at", show_time(row.published_at));
        field("consumed_at", show_time(row.consumed_at));
        field("updated_at", show_time(Some(r.updated_at)));
        match r.redrive {
            Some(h) => {
                field("redrive_count", h.redrive_count.to_string());
                field("last_redriven_at", show_time(h.last_redriven_at));
            }
            None => field(
                "redrive_count",
                "- (no redrive history in this table)".into(),
            ),
        }
        field(
            "traceparent",
            r.traceparent.clone().unwrap_or_else(|| "-".into()),
        );
        print!("{fields}");
        println!("payload:\n{}", row.payload);
    }
    Ok(())
}

async fn redrive(
    db: &Db,
    tables: &[OutboxTable],
    filter: &OutboxFilter,
    change: &ChangeArgs,
    json: bool,
) -> Result<(), Failure> {
    let mut planned = Vec::new();
    for table in tables {
        let ids = redrive_plan(db, table, filter).await?;
        planned.push((table, ids));
    }
    let total: u64 = planned.iter().map(|(_, ids)| ids.len() as u64).sum();
    if change.dry_run {
        let mut out = Vec::new();
        for (i, (table, ids)) in planned.iter().enumerate() {
            let shown = OutboxFilter {
                ids: ids.iter().copied().take(DRY_RUN_SHOWN).collect(),
                ..OutboxFilter::default()
            };
            let rows = if ids.is_empty() {
                Vec::new()
            } else {
                table
                    .list_matching(db, &shown, DRY_RUN_SHOWN as u64)
                    .await?
            };
            if json {
                out.push(json!({
                    "table": table.name(),
                    "matched": ids.len(),
                    "ids": ids,
                    "redriven": 0,
                }));
                continue;
            }
            if i > 0 {
                println!();
            }
            println!(
                "{}: would redrive {} dead rows (dead -> pending, attempts reset)",
                table.name(),
                ids.len()
            );
            if !rows.is_empty() {
                print!("{}", rows_table(&rows));
            }
            if ids.len() > rows.len() {
                println!("... and {} more", ids.len() - rows.len());
            }
        }
        if json {
            print_json(&json!({ "dry_run": true, "tables": out }));
        }
        return Ok(());
    }
    let names: Vec<&str> = planned.iter().map(|(t, _)| t.name()).collect();
    change.confirmation().check(
        total,
        &format!("redrive {total} dead rows of {}", names.join(", ")),
        json,
    )?;
    let mut out = Vec::new();
    for (table, ids) in &planned {
        let moved = table.redrive_recorded(db, ids).await?;
        if json {
            out.push(json!({
                "table": table.name(),
                "matched": ids.len(),
                "ids": ids,
                "redriven": moved,
            }));
        } else {
            println!(
                "{}: redrove {moved} of {} dead rows matched",
                table.name(),
                ids.len()
            );
        }
    }
    if json {
        print_json(&json!({ "dry_run": false, "tables": out }));
    }
    Ok(())
}

async fn unblock(
    db: &Db,
    tables: &[OutboxTable],
    key: &str,
    change: &ChangeArgs,
    json: bool,
) -> Result<(), Failure> {
    let mut planned = Vec::new();
    for table in tables {
        planned.push((table, table.blocking_rows(db, key).await?));
    }
    let total: u64 = planned.iter().map(|(_, rows)| rows.len() as u64).sum();
    if !change.dry_run {
        let names: Vec<&str> = planned.iter().map(|(t, _)| t.name()).collect();
        change.confirmation().check(
            total,
            &format!(
                "unblock key `{key}`: {total} waiting rows of {} made dead",
                names.join(", ")
            ),
            json,
        )?;
    }
    let mut out = Vec::new();
    for (i, (table, rows)) in planned.iter().enumerate() {
        let ids: Vec<i64> = rows.iter().map(|r| r.row.id).collect();
        let unblocked = if change.dry_run {
            Vec::new()
        } else {
            table.unblock_key(db, key).await?
        };
        if json {
            out.push(json!({
                "table": table.name(),
                "key": key,
                "matched": ids.len(),
                "ids": ids,
                "unblocked": unblocked,
            }));
            continue;
        }
        if i > 0 {
            println!();
        }
        if change.dry_run {
            println!(
                "{}: would make {} rows of key `{key}` waiting for a retry dead",
                table.name(),
                ids.len()
            );
            if !rows.is_empty() {
                print!("{}", rows_table(rows));
            }
        } else {
            println!(
                "{}: unblocked key `{key}`: {} waiting rows made dead ({})",
                table.name(),
                unblocked.len(),
                if unblocked.is_empty() {
                    "nothing was waiting".to_owned()
                } else {
                    format!(
                        "ids {}; redrive them once their cause is fixed",
                        unblocked
                            .iter()
                            .map(i64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
    }
    if json {
        print_json(&json!({ "dry_run": change.dry_run, "tables": out }));
    }
    Ok(())
}

async fn purge_rows(
    db: &Db,
    tables: &[OutboxTable],
    purge: &OutboxPurge,
    batch: u64,
    change: &ChangeArgs,
    json: bool,
) -> Result<(), Failure> {
    let statuses: Vec<String> = purge
        .statuses
        .iter()
        .map(|s| s.status().to_string())
        .collect();
    let rows = format!("{} rows", statuses.join("/"));
    let which = format!(
        "{rows} settled before {}",
        show_time(Some(purge.settled_before))
    );
    purge_tables(
        tables,
        OutboxTable::name,
        async |table: &OutboxTable| table.count_purgeable(db, purge).await,
        async |table: &OutboxTable| table.purge(db, purge, batch).await,
        &rows,
        &which,
        change,
        json,
    )
    .await
}

fn rows_table(rows: &[OutboxRecord]) -> TextTable {
    let mut table = TextTable::new(
        &[
            "id",
            "status",
            "event_type",
            "key",
            "retries",
            "created_at",
            "last_error",
        ],
        &["id", "retries"],
    );
    for r in rows {
        let row = &r.row;
        table.row(vec![
            row.id.to_string(),
            row.status.to_string(),
            row.event_type.clone(),
            cell(&row.message_key, 40),
            row.retry_count.to_string(),
            show_time(Some(row.created_at)),
            cell(row.last_error.as_deref().unwrap_or("-"), 60),
        ]);
    }
    table
}
