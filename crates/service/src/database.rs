//! Connecting to the service's database at start-up.

use std::time::Duration;

use anyhow::{bail, Context as _};
use sea_orm::DatabaseConnection;
use smartflow_domain::route::check_sql_identifier;
use smartflow_storage::connect::{redact, validate_url, SessionLimits};
use smartflow_storage::{connect, ConnectConfig, StorageError};
use tokio::time::Instant;

/// Pause between two attempts to reach an unreachable database at start-up.
pub const DATABASE_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The database part of a service's configuration (`SMARTFLOW_DATABASE_URL`,
/// `SMARTFLOW_DATABASE_SCHEMA`, `SMARTFLOW_DATABASE_WAIT_SECS`).
#[derive(Clone, Copy)]
pub struct DatabaseSettings<'a> {
    pub url: &'a str,
    pub schema: Option<&'a str>,
    pub wait_secs: u64,
    /// Bounds every session of the pool gets (see `ReliabilitySettings::session_limits`).
    pub limits: SessionLimits,
}

impl DatabaseSettings<'_> {
    pub fn wait(&self) -> Duration {
        Duration::from_secs(self.wait_secs)
    }
}

/// Validates the URL and the schema name (PostgreSQL only, and a plain identifier because it
/// ends up in a `SET search_path` statement) and returns what to connect with.
pub fn connect_config(settings: DatabaseSettings<'_>) -> anyhow::Result<ConnectConfig> {
    let url = settings.url;
    validate_url(url).context("SMARTFLOW_DATABASE_URL is malformed")?;
    let is_postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut connect_config = ConnectConfig::new(url.to_owned());
    connect_config.limits = settings.limits;
    if let Some(schema) = settings.schema {
        if !is_postgres {
            bail!("SMARTFLOW_DATABASE_SCHEMA applies to PostgreSQL only, but the database URL is not a postgres:// URL");
        }
        check_sql_identifier("database schema", schema)
            .context("SMARTFLOW_DATABASE_SCHEMA is not a usable schema name")?;
        connect_config.pg_schema = Some(schema.to_owned());
    }
    Ok(connect_config)
}

/// Validates the settings, then connects, retrying an unreachable server (not a SQLite file,
/// whose failures do not go away by waiting) for up to `SMARTFLOW_DATABASE_WAIT_SECS`, with a
/// warning per failed attempt. Each attempt is bounded by the connect timeout, and giving up
/// says which settings to check.
pub async fn connect_with_retries(
    settings: DatabaseSettings<'_>,
) -> anyhow::Result<DatabaseConnection> {
    let connect_config = connect_config(settings)?;
    if settings.url.starts_with("sqlite:") {
        return connect(&connect_config)
            .await
            .context("connecting to the database");
    }
    let deadline = Instant::now() + settings.wait();
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        // sea-orm hands `connect_timeout` to sqlx as the acquire timeout and then overrides it
        // with `acquire_timeout` (30 s), so one attempt at an unreachable server would wait that
        // long; bounding the attempt here keeps the retries (and their warnings) coming.
        let budget = if attempt == 1 {
            connect_config.connect_timeout
        } else {
            connect_config
                .connect_timeout
                .min(deadline.saturating_duration_since(Instant::now()))
        };
        let failure = match tokio::time::timeout(budget, connect(&connect_config)).await {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(StorageError::Connect { source, .. })) => source.to_string(),
            Ok(Err(e)) => return Err(e).context("connecting to the database"),
            Err(_) => format!("no answer within {} ms", budget.as_millis()),
        };
        if Instant::now() + DATABASE_RETRY_PAUSE >= deadline {
            bail!(
                "cannot connect to the database at {} within {} s (check SMARTFLOW_DATABASE_URL, \
                 or raise SMARTFLOW_DATABASE_WAIT_SECS): {failure}",
                redact(settings.url),
                settings.wait_secs
            );
        }
        tracing::warn!(
            database = %redact(settings.url),
            attempt,
            error = %failure,
            "database not reachable yet; retrying"
        );
        tokio::time::sleep(DATABASE_RETRY_PAUSE).await;
    }
}
