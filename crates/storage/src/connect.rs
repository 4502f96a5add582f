use std::time::Duration;

use sea_orm::sqlx::mysql::{MySql, MySqlConnectOptions};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{ConnectOptions as _, Executor as _};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr, SqlxMySqlConnector};

use crate::StorageError;

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// `sqlite://path?mode=rwc`, `postgres://...`, `mysql://...`.
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    /// How long a query may wait for a free pooled connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL only: the schema to use (tests give each run its own).
    pub pg_schema: Option<String>,
    /// How long any session of this pool may hold or wait for locks; set on every connection.
    pub limits: SessionLimits,
}

/// Bounds set on every database session, so that no frozen or slow client (a relay stopped
/// mid-claim, a black-holed connection, a runaway statement) holds locks for long, and no
/// waiter waits for them for long. A waiter that gives up gets an error the bus retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// The longest one statement may run (PostgreSQL `statement_timeout`, MariaDB
    /// `max_statement_time`, MySQL `max_execution_time`, which covers `SELECT`s only).
    pub statement: Duration,
    /// The longest a statement waits for a row lock (PostgreSQL `lock_timeout`, MySQL/MariaDB
    /// `innodb_lock_wait_timeout`, SQLite's busy timeout for the database's write lock).
    pub lock_wait: Duration,
    /// The longest a transaction may sit idle, holding its locks, before the server ends the
    /// session (PostgreSQL `idle_in_transaction_session_timeout`, MariaDB
    /// `idle_transaction_timeout`; MySQL has no such bound, so there `wait_timeout`, which ends
    /// any session idle that long). Must be above the relay's claim timeout.
    pub idle_in_transaction: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            statement: Duration::from_secs(60),
            lock_wait: Duration::from_secs(10),
            idle_in_transaction: Duration::from_secs(120),
        }
    }
}

impl SessionLimits {
    fn secs(d: Duration) -> u64 {
        d.as_secs().max(1)
    }

    fn millis(d: Duration) -> u128 {
        d.as_millis().max(1)
    }
}

impl ConnectConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
            pg_schema: None,
            limits: SessionLimits::default(),
        }
    }
}

/// Checks the URL's form before trying it, so a typo gets a message that names the problem.
pub fn validate_url(url: &str) -> Result<(), StorageError> {
    let invalid = |reason: &str| StorageError::InvalidUrl {
        url: redact(url),
        reason: reason.to_owned(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            "expected `scheme://...` with scheme sqlite, postgres or mysql",
        ));
    };
    match scheme {
        "sqlite" => {
            if rest.is_empty() {
                return Err(invalid(
                    "sqlite URLs need a file path, e.g. sqlite://smartflow.db?mode=rwc",
                ));
            }
        }
        "postgres" | "postgresql" | "mysql" => {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            if host.is_empty() {
                return Err(invalid("the URL names no host"));
            }
            if let Some((_, port)) = host.rsplit_once(':') {
                if port.parse::<u16>().is_err() {
                    return Err(invalid("the port is not a number from 0 to 65535"));
                }
            }
            let db = rest
                .split_once('/')
                .map(|(_, p)| p.split('?').next().unwrap_or(""))
                .unwrap_or("");
            if db.is_empty() {
                return Err(invalid("the URL names no database"));
            }
        }
        other => {
            return Err(invalid(&format!(
                "unsupported scheme `{other}`; use sqlite, postgres or mysql"
            )))
        }
    }
    Ok(())
}

/// The URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_owned(),
    }
}

/// Creates a SQLite database file that does not exist yet readable and writable by its owner
/// alone (`0600`; SQLite gives its `-wal` and `-shm` files the same mode), before SQLite would
/// create it with the process's default mode. Other URLs, and files that exist, are left as
/// they are.
fn create_private_sqlite_file(url: &str) -> Result<(), StorageError> {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return Ok(());
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let creates = query.split('&').any(|p| p == "mode=rwc");
    if !creates || path.is_empty() || path.starts_with(":memory:") {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StorageError::InvalidUrl {
            url: redact(url),
            reason: format!("cannot create the SQLite file `{path}`: {e}"),
        }),
    }
}

/// Opens a pool whose every session carries `config.limits`, and checks it answers. A SQLite
/// file it creates is private to its owner (`0600`).
pub async fn connect(config: &ConnectConfig) -> Result<DatabaseConnection, StorageError> {
    validate_url(&config.url)?;
    create_private_sqlite_file(&config.url)?;
    let limits = config.limits;
    let mut opts = ConnectOptions::new(config.url.clone());
    opts.max_connections(config.max_connections)
        .min_connections(1)
        .connect_timeout(config.connect_timeout)
        .acquire_timeout(config.acquire_timeout)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |pg| {
            pg.options([
                (
                    "statement_timeout",
                    SessionLimits::millis(limits.statement).to_string(),
                ),
                (
                    "lock_timeout",
                    SessionLimits::millis(limits.lock_wait).to_string(),
                ),
                (
                    "idle_in_transaction_session_timeout",
                    SessionLimits::millis(limits.idle_in_transaction).to_string(),
                ),
            ])
        })
        // WAL: readers and the one writer do not wait for each other (in SQLite's default
        // rollback journal every commit waits until no transaction is reading), and a commit
        // is one append to the log. `FULL` syncs the log at every commit, so a committed row
        // survives a power cut as well as a crash.
        .map_sqlx_sqlite_opts(move |lite| {
            lite.busy_timeout(limits.lock_wait)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
        });
    if let Some(schema) = &config.pg_schema {
        opts.set_schema_search_path(schema.clone());
    }
    let is_mysql = config.url.starts_with("mysql:");
    // sea-orm folds the connect timeout into the pool's acquire timeout, so bound the first
    // connection here to make `connect_timeout` mean what it says.
    let opening = async {
        if is_mysql {
            connect_mysql(opts, &config.url, limits).await
        } else {
            Database::connect(opts).await
        }
    };
    let db = match tokio::time::timeout(config.connect_timeout, opening).await {
        Ok(result) => result.map_err(|source| StorageError::Connect {
            url: redact(&config.url),
            source,
        })?,
        Err(_) => {
            return Err(StorageError::Connect {
                url: redact(&config.url),
                source: sea_orm::DbErr::Custom(format!(
                    "no connection within {} ms",
                    config.connect_timeout.as_millis()
                )),
            })
        }
    };
    db.ping().await.map_err(|source| StorageError::Connect {
        url: redact(&config.url),
        source,
    })?;
    Ok(db)
}

/// MySQL and MariaDB take session bounds only as `SET` statements, so the pool is built here
/// with a hook that runs them on every new connection. MariaDB has statement and idle-transaction
/// bounds of its own; MySQL gets what it has instead.
async fn connect_mysql(
    opts: ConnectOptions,
    url: &str,
    limits: SessionLimits,
) -> Result<DatabaseConnection, DbErr> {
    let sqlx_opts = url
        .parse::<MySqlConnectOptions>()
        .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)))?
        .disable_statement_logging();
    let pool = opts
        .sqlx_pool_options::<MySql>()
        .after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(&*format!(
                    "SET SESSION innodb_lock_wait_timeout = {}",
                    SessionLimits::secs(limits.lock_wait)
                ))
                .await?;
                let mariadb = format!(
                    "SET SESSION max_statement_time = {}, idle_transaction_timeout = {}",
                    SessionLimits::secs(limits.statement),
                    SessionLimits::secs(limits.idle_in_transaction)
                );
                if conn.execute(&*mariadb).await.is_err() {
                    conn.execute(&*format!(
                        "SET SESSION max_execution_time = {}, wait_timeout = {}",
                        SessionLimits::millis(limits.statement),
                        SessionLimits::secs(limits.idle_in_transaction)
                    ))
                    .await?;
                }
                Ok(())
            })
        })
        .connect_with(sqlx_opts)
        .await
        .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)))?;
    Ok(SqlxMySqlConnector::from_sqlx_mysql_pool(pool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_urls_are_named() {
        for bad in [
            "localhost:5432/test",
            "oracle://h/db",
            "postgres://",
            "postgres://h:notaport/db",
            "mysql://root@127.0.0.1:3306",
            "sqlite://",
        ] {
            let err = validate_url(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid database URL"), "{bad}: {err}");
        }
        for good in [
            "sqlite://smartflow.db?mode=rwc",
            "postgres://postgres@127.0.0.1:5432/test",
            "mysql://root:pw@127.0.0.1:3306/test",
        ] {
            validate_url(good).unwrap();
        }
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("mysql://root:s3cret@db:3306/test"),
            "mysql://root:***@db:3306/test"
        );
        let err = validate_url("mysql://root:s3cret@db:x/test")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn limits_are_never_zero_which_would_mean_unbounded() {
        assert_eq!(SessionLimits::secs(Duration::from_millis(10)), 1);
        assert_eq!(SessionLimits::millis(Duration::ZERO), 1);
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_connect_error() {
        let mut cfg = ConnectConfig::new("postgres://nobody@127.0.0.1:1/none");
        cfg.connect_timeout = Duration::from_millis(500);
        cfg.acquire_timeout = Duration::from_millis(500);
        let err = connect(&cfg).await.unwrap_err();
        assert!(matches!(err, StorageError::Connect { .. }), "{err}");
    }
}
