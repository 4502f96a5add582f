//! The database backends a process-level run is asked for (`--backends`), and the settings a
//! service process needs to use one test database.

use clap::ValueEnum;
use smartflow_testkit::{Backend, TestDb};

/// One backend named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Sqlite,
    #[value(alias = "pg")]
    Postgres,
    #[value(alias = "mysql")]
    Mariadb,
}

impl BackendArg {
    pub fn backend(self) -> Backend {
        match self {
            BackendArg::Sqlite => Backend::Sqlite,
            BackendArg::Postgres => Backend::Postgres,
            BackendArg::Mariadb => Backend::MariaDb,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            BackendArg::Sqlite => "SQLite",
            BackendArg::Postgres => "PostgreSQL",
            BackendArg::Mariadb => "MariaDB",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            BackendArg::Sqlite => "sqlite",
            BackendArg::Postgres => "postgres",
            BackendArg::Mariadb => "mariadb",
        }
    }
}

/// `--backends`, flattened into every task that runs on several backends.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendsArg {
    /// Backends to run on, comma-separated.
    #[arg(
        long = "backends",
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite,postgres,mariadb"
    )]
    list: Vec<BackendArg>,
}

impl BackendsArg {
    /// The backends named, in their first order, each once.
    pub fn chosen(&self) -> Vec<BackendArg> {
        let mut seen = Vec::new();
        for b in &self.list {
            if !seen.contains(b) {
                seen.push(*b);
            }
        }
        seen
    }

    /// Whether any needs a database server (PostgreSQL, MariaDB).
    pub fn need_servers(&self) -> bool {
        self.list.iter().any(|b| *b != BackendArg::Sqlite)
    }
}

/// `SMARTFLOW_DATABASE_URL` (and on PostgreSQL `SMARTFLOW_DATABASE_SCHEMA`) for a service
/// process on `db`. `application_name` (PostgreSQL only) names the process's sessions, so they
/// can be found among every other client of the shared server database.
pub fn database_env(db: &TestDb, application_name: Option<&str>) -> Vec<(String, String)> {
    let config = &db.config;
    let mut url = config.url.clone();
    if let (Backend::Postgres, Some(name)) = (db.backend, application_name) {
        let separator = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{separator}application_name={name}");
    }
    let mut env = vec![("SMARTFLOW_DATABASE_URL".to_owned(), url)];
    if let Some(schema) = &config.pg_schema {
        env.push(("SMARTFLOW_DATABASE_SCHEMA".to_owned(), schema.clone()));
    }
    env
}

/// Where a test database's data lives, for reports (no password: the local servers need none,
/// and `redact` hides one anyway).
pub fn describe(db: &TestDb) -> String {
    let config = &db.config;
    let url = smartflow_storage::connect::redact(&config.url);
    match &config.pg_schema {
        Some(schema) => format!("{url} schema {schema}"),
        None => url,
    }
}
