//! `smartflow inbox stats | list | show | purge`. An inbox row holds no copy of its event, so
//! there is no redrive here: a `dead` row says a consumer gave up on another service's event.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use smartflow_service::admin::json::{inbox_report_json, inbox_row_json};
use smartflow_service::admin::selection::{before_now, parse_inbox_status, InboxSelection};
use smartflow_storage::inbox::{InboxStatus, InboxTable, DEFAULT_INBOX_TABLE};
use smartflow_storage::inbox_admin::InboxFilter;
use smartflow_storage::now_millis;
use smartflow_storage::outbox::MAX_BATCH;

use super::duration::{parse_age, show_age};
use super::text_table::{cell, TextTable};
use super::{
    print_json, print_reasons, purge_tables, show_time, tables, ChangeArgs, Db, Failure, Target,
};

const BUILT_IN: [&str; 1] = [DEFAULT_INBOX_TABLE];

#[derive(Subcommand)]
pub enum InboxCommand {
    /// Rows per consumer and status, dead rows by reason.
    Stats,
    /// Rows matching the filters, oldest first.
    List {
        #[command(flatten)]
        filter: InboxFilterArgs,
        /// Only rows in this status: handled or dead.
        #[arg(long, value_parser = parse_inbox_status)]
        status: Option<InboxStatus>,
        /// At most this many rows per table.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Every consumer's row of one event.
    Show {
        /// The event id.
        event_id: String,
    },
    /// Deletes rows handled longer ago than --older-than, in bounded batches. A deleted
    /// `handled` row no longer stops a redelivery of its event from being applied again: keep
    /// --older-than above the retention of the topics the consumers read.
    Purge {
        /// Rows handled longer ago than this: 30s, 15m, 2h, 7d, 2w.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Duration,
        /// Only rows in this status (default: handled and dead).
        #[arg(long, value_parser = parse_inbox_status)]
        status: Option<InboxStatus>,
        /// Only this consumer's rows.
        #[arg(long)]
        consumer: Option<String>,
        /// Rows per delete statement.
        #[arg(long, default_value_t = 500,
              value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH))]
        batch_size: u64,
        #[command(flatten)]
        change: ChangeArgs,
    },
}

#[derive(Args, Clone, Debug, Default)]
pub struct InboxFilterArgs {
    /// Only rows of this event type.
    #[arg(long)]
    event_type: Option<String>,
    /// Only this consumer's rows.
    #[arg(long)]
    consumer: Option<String>,
    /// Only rows handled longer ago than this: 30s, 15m, 2h, 7d, 2w.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    older_than: Option<Duration>,
    /// Only rows whose last error contains this text (any letter case).
    #[arg(long)]
    reason: Option<String>,
}

pub async fn run(db: &Db, target: &Target, command: InboxCommand) -> Result<(), Failure> {
    let names = tables(db, target, &BUILT_IN, "inbox").await?;
    let tables: Vec<InboxTable> = names
        .iter()
        .map(|name| InboxTable::new(name.as_str()))
        .collect::<Result<_, _>>()?;
    match command {
        InboxCommand::Stats => stats(db, &tables, target.json).await,
        InboxCommand::List {
            filter,
            status,
            limit,
        } => {
            let filter = InboxSelection {
                event_type: filter.event_type,
                consumer: filter.consumer,
                older_than: filter.older_than,
                reason: filter.reason,
            }
            .filter(status);
            list(db, &tables, &filter, limit, target.json, false).await
        }
        InboxCommand::Show { event_id } => {
            let filter = InboxFilter {
                event_id: Some(event_id),
                ..InboxFilter::default()
            };
            list(db, &tables, &filter, MAX_BATCH, target.json, true).await
        }
        InboxCommand::Purge {
            older_than,
            status,
            consumer,
            batch_size,
            change,
        } => {
            let filter = InboxFilter {
                status,
                consumer,
                handled_before: Some(before_now(older_than)),
                ..InboxFilter::default()
            };
            purge(db, &tables, &filter, batch_size, &change, target.json).await
        }
    }
}

async fn stats(db: &Db, tables: &[InboxTable], json: bool) -> Result<(), Failure> {
    let now = now_millis();
    let mut out = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let report = table.report(db).await?;
        if json {
            out.push(inbox_report_json(table.name(), &report));
            continue;
        }
        if i > 0 {
            println!();
        }
        println!("{}", table.name());
        let mut counts = TextTable::new(
            &["consumer", "handled", "dead", "oldest row"],
            &["handled", "dead"],
        );
        for (consumer, c) in &report.counts {
            counts.row(vec![
                consumer.clone(),
                c.handled.to_string(),
                c.dead.to_string(),
                c.oldest_handled_at
                    .map(|t| format!("{} ago", show_age(now - t)))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        if counts.is_empty() {
            println!("no rows");
        } else {
            print!("{counts}");
        }
        print_reasons(&report.dead_reasons);
    }
    if json {
        print_json(&json!({ "tables": out }));
    }
    Ok(())
}

async fn list(
    db: &Db,
    tables: &[InboxTable],
    filter: &InboxFilter,
    limit: u64,
    json: bool,
    must_find: bool,
) -> Result<(), Failure> {
    let mut out = Vec::new();
    let mut found = 0;
    for (i, table) in tables.iter().enumerate() {
        let matched = table.count_matching(db, filter).await?;
        let rows = table.list_matching(db, filter, limit).await?;
        found += rows.len();
        if json {
            out.push(json!({
                "table": table.name(),
                "matched": matched,
                "rows": rows.iter().map(inbox_row_json).collect::<Vec<_>>(),
            }));
            continue;
        }
        if i > 0 {
            println!();
        }
        println!(
            "{}: {matched} rows match, {} shown",
            table.name(),
            rows.len()
        );
        if !rows.is_empty() {
            let mut text = TextTable::new(
                &[
                    "consumer",
                    "event_id",
                    "event_type",
                    "status",
                    "handled_at",
                    "last_error",
                ],
                &[],
            );
            for row in &rows {
                text.row(vec![
                    row.consumer.clone(),
                    row.event_id.clone(),
                    row.event_type.clone(),
                    row.status.name(),
                    show_time(Some(row.handled_at)),
                    cell(row.last_error.as_deref().unwrap_or("-"), 60),
                ]);
            }
            print!("{text}");
        }
    }
    if must_find && found == 0 {
        let names: Vec<&str> = tables.iter().map(InboxTable::name).collect();
        return Err(Failure::Failed(anyhow::anyhow!(
            "no row of event `{}` in {}",
            filter.event_id.as_deref().unwrap_or_default(),
            names.join(", ")
        )));
    }
    if json {
        print_json(&json!({ "tables": out }));
    }
    Ok(())
}

async fn purge(
    db: &Db,
    tables: &[InboxTable],
    filter: &InboxFilter,
    batch: u64,
    change: &ChangeArgs,
    json: bool,
) -> Result<(), Failure> {
    let which = format!("rows handled before {}", show_time(filter.handled_before));
    purge_tables(
        tables,
        InboxTable::name,
        async |table: &InboxTable| table.count_matching(db, filter).await,
        async |table: &InboxTable| table.purge(db, filter, batch).await,
        "rows",
        &which,
        change,
        json,
    )
    .await
}
