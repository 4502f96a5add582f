//! `smartflow outbox ...` and `smartflow inbox ...`: an operator's view of the bus's tables
//! (counts, rows, one row), `dead` outbox rows sent again, and old settled rows deleted. Every
//! statement is the storage crate's; this module parses, asks, and prints (aligned tables, or
//! JSON with `--json`, whose shape `docs/operations.md` documents).
//!
//! Exit codes: 0 done; 1 failed (the database, a missing table, no such row); 2 bad arguments;
//! 3 refused (more rows than `--confirm-above` and no confirmation).

mod duration;
mod each_table;
mod inbox;
mod outbox;
mod text_table;

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use smartflow_service::{connect_config, ServiceSettings};
use smartflow_storage::catalog::table_exists;
use smartflow_storage::DatabaseConnection as Db;

/// Rows an admin command changes without asking, unless told otherwise (the admin HTTP API's
/// bound too).
pub use smartflow_service::admin::DEFAULT_CONFIRM_ABOVE;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Inspect outbox tables, send `dead` rows again, delete old settled rows.
    Outbox {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: outbox::OutboxCommand,
    },
    /// Inspect inbox tables, delete old rows.
    Inbox {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: inbox::InboxCommand,
    },
}

impl AdminCommand {
    pub fn target(&self) -> &Target {
        match self {
            AdminCommand::Outbox { target, .. } | AdminCommand::Inbox { target, .. } => target,
        }
    }
}

/// Where the tables are and how to print; accepted before or after the subcommand.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Tables and output")]
pub struct Target {
    /// A table to work on (repeatable). Default: every outbox (agent_outbox,
    /// notification_outbox) or inbox (inbox) of the built-in services that exists.
    #[arg(long = "table", value_name = "NAME", global = true)]
    pub tables: Vec<String>,

    /// Print JSON (one object on stdout) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// The database (default: SMARTFLOW_DATABASE_URL, as the services).
    #[arg(long = "database-url", value_name = "URL", global = true)]
    pub database_url: Option<String>,

    /// PostgreSQL only: the schema of the tables (default: SMARTFLOW_DATABASE_SCHEMA).
    #[arg(long = "database-schema", value_name = "SCHEMA", global = true)]
    pub database_schema: Option<String>,
}

impl Target {
    /// The database URL: this command's, else the services' setting.
    pub fn database_url<'a>(&'a self, service: &'a ServiceSettings) -> &'a str {
        self.database_url
            .as_deref()
            .unwrap_or(&service.database_url)
    }

    fn database_schema<'a>(&'a self, service: &'a ServiceSettings) -> Option<&'a str> {
        self.database_schema
            .as_deref()
            .or(service.database_schema.as_deref())
    }
}

/// How a command ended, when not with success.
#[derive(Debug)]
pub enum Failure {
    /// Exit code 1.
    Failed(anyhow::Error),
    /// Exit code 2: the arguments cannot work.
    Usage(String),
    /// Exit code 3: a change the operator did not confirm.
    Refused(String),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

impl From<smartflow_storage::StorageError> for Failure {
    fn from(e: smartflow_storage::StorageError) -> Self {
        Failure::Failed(e.into())
    }
}

/// Runs one admin command; what it prints goes to stdout, errors to stderr.
pub async fn run(command: AdminCommand, service: &ServiceSettings) -> ExitCode {
    let result = async {
        let db = connect(command.target(), service).await?;
        match command {
            AdminCommand::Outbox { target, command } => outbox::run(&db, &target, command).await,
            AdminCommand::Inbox { target, command } => inbox::run(&db, &target, command).await,
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(e)) => {
            eprintln!("smartflow: {e:#}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("smartflow: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Refused(message)) => {
            eprintln!("smartflow: {message}");
            ExitCode::from(3)
        }
    }
}

/// One attempt, no waiting: an operator wants the answer now.
async fn connect(target: &Target, service: &ServiceSettings) -> Result<Db, Failure> {
    let mut settings = service.database();
    settings.url = target.database_url(service);
    settings.schema = target.database_schema(service);
    let config = connect_config(settings)?;
    Ok(smartflow_storage::connect(&config)
        .await
        .context("connecting to the database")?)
}

/// The tables a command works on: those named (each must exist), else the built-in ones that
/// exist (at least one must).
async fn tables(
    db: &Db,
    target: &Target,
    built_in: &[&str],
    kind: &str,
) -> Result<Vec<String>, Failure> {
    if !target.tables.is_empty() {
        for table in &target.tables {
            if !table_exists(db, table).await? {
                return Err(Failure::Failed(anyhow::anyhow!(
                    "table `{table}` does not exist in this database"
                )));
            }
        }
        return outboxes_checked(db, target.tables.clone(), kind).await;
    }
    let mut found = Vec::new();
    for table in built_in {
        if table_exists(db, table).await? {
            found.push((*table).to_owned());
        }
    }
    if found.is_empty() {
        return Err(Failure::Failed(anyhow::anyhow!(
            "none of the built-in {kind} tables ({}) exists in this database; name one with --table",
            built_in.join(", ")
        )));
    }
    outboxes_checked(db, found, kind).await
}

/// `tables`, each checked to have the commit cursor when they are outboxes: without it their
/// statuses cannot be read.
async fn outboxes_checked(
    db: &Db,
    tables: Vec<String>,
    kind: &str,
) -> Result<Vec<String>, Failure> {
    if kind == "outbox" {
        for table in &tables {
            smartflow_storage::outbox::OutboxTable::new(table.as_str())?
                .check_commit_cursor(db)
                .await?;
        }
    }
    Ok(tables)
}

/// What every changing command (`redrive`, `purge`) takes.
#[derive(Args, Clone, Debug)]
pub struct ChangeArgs {
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Go on without asking, however many rows.
    #[arg(long)]
    pub yes: bool,
    /// More rows than this (over all tables) need confirmation: a `yes` typed on a terminal,
    /// or --yes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONFIRM_ABOVE)]
    pub confirm_above: u64,
}

impl ChangeArgs {
    pub fn confirmation(&self) -> Confirmation {
        Confirmation {
            yes: self.yes,
            above: self.confirm_above,
        }
    }
}

/// One table's part of a purge.
struct Purged<'a> {
    table: &'a str,
    matched: u64,
    purged: u64,
}

/// A purge over `tables`: counts what `count` finds in each, asks as `change` says (unless a dry
/// run), runs `purge` on each, and prints what went (or would go: `rows` names them, `which`
/// says which rows, for the dry run's lines).
#[allow(clippy::too_many_arguments)]
async fn purge_tables<T>(
    tables: &[T],
    name: impl Fn(&T) -> &str,
    count: impl AsyncFn(&T) -> Result<u64, smartflow_storage::StorageError>,
    purge: impl AsyncFn(&T) -> Result<u64, smartflow_storage::StorageError>,
    rows: &str,
    which: &str,
    change: &ChangeArgs,
    json: bool,
) -> Result<(), Failure> {
    let mut done = Vec::new();
    for table in tables {
        done.push(Purged {
            table: name(table),
            matched: count(table).await?,
            purged: 0,
        });
    }
    if !change.dry_run {
        let total = done.iter().map(|p| p.matched).sum();
        let names: Vec<&str> = done.iter().map(|p| p.table).collect();
        change.confirmation().check(
            total,
            &format!("delete {total} {rows} of {}", names.join(", ")),
            json,
        )?;
        for (table, part) in tables.iter().zip(&mut done) {
            part.purged = purge(table).await?;
        }
    }
    print_purge(&done, which, change.dry_run, json);
    Ok(())
}

/// What a purge did, or would do (`which` describes the rows for a dry run).
fn print_purge(done: &[Purged<'_>], which: &str, dry_run: bool, json: bool) {
    if json {
        let tables: Vec<serde_json::Value> = done
            .iter()
            .map(
                |p| serde_json::json!({"table": p.table, "matched": p.matched, "purged": p.purged}),
            )
            .collect();
        print_json(&serde_json::json!({ "dry_run": dry_run, "tables": tables }));
        return;
    }
    for p in done {
        if dry_run {
            println!("{}: would delete {} {which}", p.table, p.matched);
        } else {
            println!("{}: deleted {} rows", p.table, p.purged);
        }
    }
}

/// What a changing command does about its size: nothing to ask for `rows` up to `above`, or
/// with `--yes`; otherwise it asks on a terminal and refuses elsewhere.
pub struct Confirmation {
    pub yes: bool,
    pub above: u64,
}

impl Confirmation {
    /// `what` completes "about to ...", e.g. "redrive 57 dead rows of agent_outbox".
    fn check(&self, rows: u64, what: &str, json: bool) -> Result<(), Failure> {
        if self.yes || rows <= self.above {
            return Ok(());
        }
        let refusal = || {
            Failure::Refused(format!(
                "refusing to {what} without confirmation ({rows} rows, more than \
                 --confirm-above {}): run it again with --yes, or with --dry-run to see them",
                self.above
            ))
        };
        let stdin = std::io::stdin();
        if json || !stdin.is_terminal() {
            return Err(refusal());
        }
        eprint!("About to {what}. Type `yes` to go on: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        stdin
            .lock()
            .read_line(&mut answer)
            .context("reading the confirmation")?;
        if answer.trim() == "yes" {
            Ok(())
        } else {
            Err(refusal())
        }
    }
}

/// The same as a table, one line per reason.
fn print_reasons(reasons: &[(Option<String>, u64)]) {
    if reasons.is_empty() {
        return;
    }
    let mut table = text_table::TextTable::new(&["rows", "dead because"], &["rows"]);
    for (reason, rows) in reasons {
        table.row(vec![
            rows.to_string(),
            text_table::cell(reason.as_deref().unwrap_or("-"), 100),
        ]);
    }
    print!("{table}");
}

/// Prints `value` as one line of JSON on stdout.
fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

/// A timestamp column (Unix milliseconds) for people: RFC 3339 in UTC.
fn show_time(millis: Option<i64>) -> String {
    millis
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".to_owned())
}
