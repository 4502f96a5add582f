use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};

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
}

impl ConnectConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
            pg_schema: None,
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

/// Opens a pool and checks it answers.
pub async fn connect(config: &ConnectConfig) -> Result<DatabaseConnection, StorageError> {
    validate_url(&config.url)?;
    let mut opts = ConnectOptions::new(config.url.clone());
    opts.max_connections(config.max_connections)
        .min_connections(1)
        .connect_timeout(config.connect_timeout)
        .acquire_timeout(config.acquire_timeout)
        .sqlx_logging(false);
    if let Some(schema) = &config.pg_schema {
        opts.set_schema_search_path(schema.clone());
    }
    // sea-orm folds the connect timeout into the pool's acquire timeout, so bound the first
    // connection here to make `connect_timeout` mean what it says.
    let db = match tokio::time::timeout(config.connect_timeout, Database::connect(opts)).await {
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

    #[tokio::test]
    async fn an_unreachable_database_is_a_connect_error() {
        let mut cfg = ConnectConfig::new("postgres://nobody@127.0.0.1:1/none");
        cfg.connect_timeout = Duration::from_millis(500);
        cfg.acquire_timeout = Duration::from_millis(500);
        let err = connect(&cfg).await.unwrap_err();
        assert!(matches!(err, StorageError::Connect { .. }), "{err}");
    }
}
