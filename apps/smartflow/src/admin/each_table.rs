//! `stats` and `list` over several tables, written once for outboxes and inboxes: a table kind
//! says only how it reports, how its rows are found, and how they print ([`AdminTable`]).

use serde_json::{json, Value};
use smartflow_storage::{now_millis, StorageError};

use super::text_table::TextTable;
use super::{print_json, Db, Failure};

/// What the `stats` and `list` commands need of a kind of table.
pub(super) trait AdminTable {
    type Report;
    type Filter;
    type Row;

    fn name(&self) -> &str;

    /// What `stats` shows of the table.
    async fn report(&self, db: &Db) -> Result<Self::Report, StorageError>;

    /// The report as one element of the JSON `tables` list (`now`: Unix milliseconds).
    fn report_json(&self, report: &Self::Report, now: i64) -> Value;

    /// The report as text, under the table's name.
    fn print_report(report: &Self::Report, now: i64);

    /// How many rows `filter` matches.
    async fn count(&self, db: &Db, filter: &Self::Filter) -> Result<u64, StorageError>;

    /// The first `limit` rows `filter` matches, in the order `list` shows them.
    async fn rows(
        &self,
        db: &Db,
        filter: &Self::Filter,
        limit: u64,
    ) -> Result<Vec<Self::Row>, StorageError>;

    fn row_json(row: &Self::Row) -> Value;

    fn rows_table(rows: &[Self::Row]) -> TextTable;
}

/// `stats`: each table's report, as text one after the other, or one JSON object.
pub(super) async fn stats<T: AdminTable>(db: &Db, tables: &[T], json: bool) -> Result<(), Failure> {
    let now = now_millis();
    let mut out = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let report = table.report(db).await?;
        if json {
            out.push(table.report_json(&report, now));
            continue;
        }
        if i > 0 {
            println!();
        }
        println!("{}", table.name());
        T::print_report(&report, now);
    }
    if json {
        print_json(&json!({ "tables": out }));
    }
    Ok(())
}

/// `list`: per table, how many rows match and the first `limit` of them. With `missing`, finding
/// no row at all is a failure: "`missing` in TABLES".
pub(super) async fn list<T: AdminTable>(
    db: &Db,
    tables: &[T],
    filter: &T::Filter,
    limit: u64,
    json: bool,
    missing: Option<&str>,
) -> Result<(), Failure> {
    let mut out = Vec::new();
    let mut found = 0;
    for (i, table) in tables.iter().enumerate() {
        let matched = table.count(db, filter).await?;
        let rows = table.rows(db, filter, limit).await?;
        found += rows.len();
        if json {
            out.push(json!({
                "table": table.name(),
                "matched": matched,
                "rows": rows.iter().map(T::row_json).collect::<Vec<_>>(),
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
            print!("{}", T::rows_table(&rows));
        }
    }
    if let (Some(missing), 0) = (missing, found) {
        let names: Vec<&str> = tables.iter().map(T::name).collect();
        return Err(Failure::Failed(anyhow::anyhow!(
            "{missing} in {}",
            names.join(", ")
        )));
    }
    if json {
        print_json(&json!({ "tables": out }));
    }
    Ok(())
}
