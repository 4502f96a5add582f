//! `smartflow inbox stats | list | show | purge`. An inbox row holds no copy of its event, so
//! there is no redrive here: a `dead` row says a consumer gave up on another service's event.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;
use smartflow_service::admin::json::{inbox_report_json, inbox_row_json};
use smartflow_service::admin::selection::{before_now, parse_inbox_status, InboxSelection};
use smartflow_storage::inbox::{InboxEntry, InboxStatus, InboxTable, DEFAULT_INBOX_TABLE};
use smartflow_storage::inbox_admin::{InboxFilter, InboxReport};
use smartflow_storage::outbox::MAX_BATCH;
use smartflow_storage::StorageError;

use super::duration::{parse_age, show_age};
use super::each_table::{list, stats, AdminTable};
use super::text_table::{cell, TextTable};
use super::{print_reasons, purge_tables, show_time, tables, ChangeArgs, Db, Failure, Target};

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
            list(db, &tables, &filter, limit, target.json, None).await
        }
        InboxCommand::Show { event_id } => {
            let missing = format!("no row of event `{event_id}`");
            let filter = InboxFilter {
                event_id: Some(event_id),
                ..InboxFilter::default()
            };
            list(db, &tables, &filter, MAX_BATCH, target.json, Some(&missing)).await
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

impl AdminTable for InboxTable {
    type Report = InboxReport;
    type Filter = InboxFilter;
    type Row = InboxEntry;

    fn name(&self) -> &str {
        InboxTable::name(self)
    }

    async fn report(&self, db: &Db) -> Result<InboxReport, StorageError> {
        InboxTable::report(self, db).await
    }

    fn report_json(&self, report: &InboxReport, _now: i64) -> Value {
        inbox_report_json(InboxTable::name(self), report)
    }

    fn print_report(report: &InboxReport, now: i64) {
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

    async fn count(&self, db: &Db, filter: &InboxFilter) -> Result<u64, StorageError> {
        self.count_matching(db, filter).await
    }

    async fn rows(
        &self,
        db: &Db,
        filter: &InboxFilter,
        limit: u64,
    ) -> Result<Vec<InboxEntry>, StorageError> {
        self.list_matching(db, filter, limit).await
    }

    fn row_json(row: &InboxEntry) -> Value {
        inbox_row_json(row)
    }

    fn rows_table(rows: &[InboxEntry]) -> TextTable {
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
        for row in rows {
            text.row(vec![
                row.consumer.clone(),
                row.event_id.clone(),
                row.event_type.clone(),
                row.status.name(),
                show_time(Some(row.handled_at)),
                cell(row.last_error.as_deref().unwrap_or("-"), 60),
            ]);
        }
        text
    }
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
