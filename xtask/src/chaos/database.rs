//! The database side of a chaos run: a fresh database per backend, the agents' connection
//! settings, killing their connections, and reading back what happened.

use anyhow::{Context, Result};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use smartflow_domain::{Envelope, OutboxStatus};
use smartflow_storage::chat_history;
use smartflow_storage::outbox::{OutboxStats, OutboxTable};
use smartflow_testkit::{Backend, TestDb};

use super::load::conversation_id;

/// The agent's outbox table (`smartflow_agent::events::OUTBOX_TABLE`; xtask depends on no app).
pub const AGENT_OUTBOX: &str = "agent_outbox";
/// The chat message's event type (`smartflow_agent::events::ChatMessageAppended`).
pub const CHAT_EVENT_TYPE: &str = "agent.chat.message.appended";
/// More rows than any run writes; the listing functions want a bound.
const ALL_ROWS: u64 = 100_000_000;

/// One backend's fresh database, dropped by [`ChaosDb::cleanup`] unless kept.
pub struct ChaosDb {
    pub backend: Backend,
    testdb: TestDb,
    /// PostgreSQL: the `application_name` the agents connect with, so killing "their"
    /// connections leaves every other client of the shared `test` database alone.
    application_name: String,
    outbox: OutboxTable,
}

impl ChaosDb {
    /// Creates and migrates a database of its own: a schema on PostgreSQL, a database on
    /// MariaDB, a file on SQLite.
    pub async fn create(backend: Backend, tag: &str) -> Result<Self> {
        let testdb = TestDb::new(backend).await;
        Ok(Self {
            backend,
            testdb,
            application_name: format!("smartflow-chaos-{tag}"),
            outbox: OutboxTable::new(AGENT_OUTBOX)?,
        })
    }

    /// `SMARTFLOW_DATABASE_URL` (and `SMARTFLOW_DATABASE_SCHEMA`) for the agents.
    pub fn agent_env(&self) -> Vec<(String, String)> {
        crate::backends::database_env(&self.testdb, Some(&self.application_name))
    }

    /// Where the data lives, for the report.
    pub fn describe(&self) -> String {
        crate::backends::describe(&self.testdb)
    }

    /// Cuts every database connection the agents hold; returns how many were cut. SQLite has no
    /// server, so there is nothing to cut (`None`).
    pub async fn kill_agent_connections(&self) -> Result<Option<u64>> {
        let db = &self.testdb.db;
        match self.backend {
            Backend::Sqlite => Ok(None),
            Backend::Postgres => {
                let stmt = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name = $1 \
                     AND pid <> pg_backend_pid()",
                    [self.application_name.clone().into()],
                );
                let row = db
                    .query_one(stmt)
                    .await
                    .context("terminating the agents' PostgreSQL backends")?;
                let n: i64 = row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0);
                Ok(Some(n.max(0) as u64))
            }
            Backend::MariaDb => {
                // Everyone on this run's own database but us: that is the agents.
                let ids = db
                    .query_all(Statement::from_string(
                        DbBackend::MySql,
                        "SELECT id FROM information_schema.processlist \
                         WHERE db = DATABASE() AND id <> CONNECTION_ID()",
                    ))
                    .await
                    .context("listing the agents' MariaDB connections")?;
                let mut killed = 0;
                for row in ids {
                    // `information_schema.processlist.ID` is a signed BIGINT on MariaDB.
                    let id: i64 = row.try_get("", "id")?;
                    // A connection may end by itself between the listing and the KILL.
                    if db
                        .execute_unprepared(&format!("KILL CONNECTION {id}"))
                        .await
                        .is_ok()
                    {
                        killed += 1;
                    }
                }
                Ok(Some(killed))
            }
        }
    }

    /// A new pool onto the run's database, for reading results (the run's own pool may have
    /// lost connections to the kills).
    pub async fn reader(&self) -> DatabaseConnection {
        self.testdb.connect_again().await
    }

    /// The chat messages' counts per status. The outbox's other rows (token usage, notification
    /// requests) are for other services and end `published`, so they never drain.
    pub async fn stats(&self, conn: &DatabaseConnection) -> Result<OutboxStats> {
        Ok(self.outbox.stats_of_type(conn, CHAT_EVENT_TYPE).await?)
    }

    /// Everything the verdict needs, read after the agents have stopped.
    pub async fn snapshot(
        &self,
        conn: &DatabaseConnection,
        conversations: usize,
    ) -> Result<Snapshot> {
        let mut snapshot = Snapshot::default();
        for status in [
            OutboxStatus::Pending,
            OutboxStatus::Published,
            OutboxStatus::Consumed,
            OutboxStatus::Dead,
        ] {
            for row in self.outbox.list(conn, status, ALL_ROWS).await? {
                if status == OutboxStatus::Dead {
                    snapshot.dead.push(DeadRow {
                        event_type: row.event_type.clone(),
                        reason: row.last_error.clone().unwrap_or_default(),
                    });
                }
                if row.event_type != CHAT_EVENT_TYPE {
                    continue;
                }
                let content = Envelope::from_slice(row.payload.as_bytes())
                    .ok()
                    .and_then(|e| e.payload.get("content")?.as_str().map(str::to_owned))
                    .unwrap_or_default();
                snapshot.outbox.push(OutboxEntry { content, status });
            }
        }
        for c in 0..conversations {
            for message in chat_history::list(conn, &conversation_id(c), ALL_ROWS).await? {
                snapshot.history.push(HistoryEntry {
                    id: message.id,
                    conversation: c,
                    content: message.content,
                });
            }
        }
        snapshot.history.sort_by_key(|h| h.id);
        Ok(snapshot)
    }

    /// Drops the database (or file), unless `keep`.
    pub async fn cleanup(self, keep: bool) {
        if keep {
            println!("  kept the database: {}", self.describe());
        } else {
            self.testdb.cleanup().await;
        }
    }
}

/// One chat message's outbox row.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub content: String,
    pub status: OutboxStatus,
}

/// A `dead` outbox row of any event type.
#[derive(Debug, Clone)]
pub struct DeadRow {
    pub event_type: String,
    pub reason: String,
}

/// One stored chat message.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub id: i64,
    pub conversation: usize,
    pub content: String,
}

/// What the database holds at the end of a run.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub outbox: Vec<OutboxEntry>,
    pub dead: Vec<DeadRow>,
    /// In id order: the order the consumer stored them.
    pub history: Vec<HistoryEntry>,
}
