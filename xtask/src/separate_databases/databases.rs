//! The three databases of one run, one per service, and what each must hold once the services
//! have done their work: every service's rows in its own database, and none in the others'.

use anyhow::Result;
use sea_orm::DatabaseConnection;
use smartflow_agent_contracts::{ChatMessageAppended, TokenUsageRecorded};
use smartflow_domain::{Envelope, EventContract, OutboxStatus};
use smartflow_notification_contracts::NotificationRequested;
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::outbox::{OutboxRow, OutboxTable};
use smartflow_storage::{chat_history, notification, token_usage};
use smartflow_testkit::TestDb;

use super::expected::{Expected, Problems, Service};
use crate::backends::{self, BackendArg};

/// Userauth's inbox consumer (`smartflow_userauth::events::INBOX_CONSUMER`; userauth's
/// contracts crate does not name it, and xtask depends on no app's implementation).
const USERAUTH_INBOX: &str = "userauth";
/// More rows than a run writes; the listing functions want a bound.
const ALL_ROWS: u64 = 10_000;

/// A fresh, migrated database for each service: a schema each on PostgreSQL, a database each
/// on MariaDB, a file each on SQLite.
pub struct ServiceDatabases {
    pub agent: TestDb,
    pub notification: TestDb,
    pub userauth: TestDb,
}

impl ServiceDatabases {
    pub async fn create(backend: BackendArg) -> Self {
        let backend = backend.backend();
        Self {
            agent: TestDb::new(backend).await,
            notification: TestDb::new(backend).await,
            userauth: TestDb::new(backend).await,
        }
    }

    pub fn of(&self, service: Service) -> &TestDb {
        match service {
            Service::Agent => &self.agent,
            Service::Notification => &self.notification,
            Service::Userauth => &self.userauth,
        }
    }

    /// `SMARTFLOW_DATABASE_URL` (and schema) of `service`'s own database.
    pub fn env(&self, service: Service) -> Vec<(String, String)> {
        backends::database_env(self.of(service), None)
    }

    pub fn describe(&self, service: Service) -> String {
        backends::describe(self.of(service))
    }

    /// Drops the three databases, unless `keep`.
    pub async fn cleanup(self, keep: bool) {
        if keep {
            for service in Service::ALL {
                println!(
                    "  kept {}'s database: {}",
                    service.name(),
                    self.describe(service)
                );
            }
            return;
        }
        self.agent.cleanup().await;
        self.notification.cleanup().await;
        self.userauth.cleanup().await;
    }

    /// Compares what the databases hold with `expected`; every difference becomes a problem of
    /// the service whose database shows it.
    pub async fn check(&self, expected: &Expected, problems: &mut Problems) -> Result<()> {
        let agent_outbox = OutboxTable::new(smartflow_agent_contracts::OUTBOX_TABLE)?;
        let rows = all_rows(&agent_outbox, &self.agent.db).await?;
        check_agent(&self.agent.db, expected, &rows, problems).await?;
        let request_ids: Vec<String> = requests(&rows).into_iter().map(|(id, _)| id).collect();
        check_notification(&self.notification.db, expected, &request_ids, problems).await?;
        let usage_ids: Vec<String> = rows
            .iter()
            .filter(|r| r.event_type == TokenUsageRecorded::EVENT_TYPE)
            .map(|r| r.event_id.clone())
            .collect();
        check_userauth(&self.userauth.db, expected, &usage_ids, problems).await
    }
}

/// The agent's database: the chat rows, and in `agent_outbox` every event it published (the
/// notification requests among them); nothing in `notification_outbox`.
async fn check_agent(
    db: &DatabaseConnection,
    expected: &Expected,
    rows: &[OutboxRow],
    problems: &mut Problems,
) -> Result<()> {
    for conversation in &expected.conversations {
        let stored: Vec<String> = chat_history::list(db, &conversation.id, ALL_ROWS)
            .await?
            .into_iter()
            .map(|m| m.content)
            .collect();
        if stored != conversation.contents {
            let (id, want) = (&conversation.id, &conversation.contents);
            problems.push((
                Service::Agent,
                format!("the agent's chat_histories for {id}: expected {want:?}, found {stored:?}"),
            ));
        }
    }
    let messages = expected.messages();
    let conversations = expected.conversations.len();
    for (event_type, status, want) in [
        (
            ChatMessageAppended::EVENT_TYPE,
            OutboxStatus::Consumed,
            messages,
        ),
        (
            TokenUsageRecorded::EVENT_TYPE,
            OutboxStatus::Published,
            messages,
        ),
        (
            NotificationRequested::EVENT_TYPE,
            OutboxStatus::Published,
            conversations,
        ),
    ] {
        let statuses: Vec<OutboxStatus> = rows
            .iter()
            .filter(|r| r.event_type == event_type)
            .map(|r| r.status)
            .collect();
        if statuses.len() != want || statuses.iter().any(|s| *s != status) {
            problems.push((
                Service::Agent,
                format!(
                    "agent_outbox: expected {want} `{event_type}` rows, all {status:?}; found \
                     {statuses:?}"
                ),
            ));
        }
    }
    let mut keys: Vec<String> = requests(rows)
        .into_iter()
        .map(|(_, r)| r.dedupe_key)
        .collect();
    keys.sort();
    let mut want_keys = expected.dedupe_keys();
    want_keys.sort();
    if keys != want_keys {
        problems.push((
            Service::Agent,
            format!(
                "agent_outbox: expected notification requests with dedupe keys {want_keys:?}, \
                 found {keys:?}"
            ),
        ));
    }
    let requests_table = smartflow_notification_contracts::OUTBOX_TABLE;
    let whose = "the agent's database (its requests go into agent_outbox)";
    empty_outbox(db, requests_table, whose, Service::Agent, problems).await
}

/// Notification's database: one sent record per conversation, every request in its inbox.
async fn check_notification(
    db: &DatabaseConnection,
    expected: &Expected,
    request_ids: &[String],
    problems: &mut Problems,
) -> Result<()> {
    let counts = notification::counts(db).await?;
    let total = counts.pending + counts.sending + counts.sent + counts.failed + counts.dead;
    let want = expected.conversations.len() as u64;
    if total != want || counts.sent != total {
        problems.push((
            Service::Notification,
            format!(
                "notification_records: expected {want} rows (one per conversation), all sent; \
                 found {counts:?}"
            ),
        ));
    }
    for key in expected.dedupe_keys() {
        if notification::find(db, "feishu", &key).await?.is_none() {
            let missing = format!("notification_records: no record for `{key}`");
            problems.push((Service::Notification, missing));
        }
    }
    let consumer = smartflow_notification_contracts::SERVICE;
    handled_in_inbox(db, consumer, request_ids, Service::Notification, problems).await?;
    nothing_of_the_agent(db, Service::Notification, problems).await
}

/// Userauth's database: every usage event in its inbox, and the tokens counted once each.
async fn check_userauth(
    db: &DatabaseConnection,
    expected: &Expected,
    usage_ids: &[String],
    problems: &mut Problems,
) -> Result<()> {
    handled_in_inbox(db, USERAUTH_INBOX, usage_ids, Service::Userauth, problems).await?;
    let totals = token_usage::totals_for_user(db, &expected.user_id).await?;
    let want = (expected.messages() as u64, expected.tokens());
    if totals != want {
        problems.push((
            Service::Userauth,
            format!(
                "userauth's token_usage_ledger for the user: expected (rows, tokens) {want:?}, \
                 found {totals:?}"
            ),
        ));
    }
    nothing_of_the_agent(db, Service::Userauth, problems).await
}

/// Every row of `table`, whatever its status.
async fn all_rows(table: &OutboxTable, db: &DatabaseConnection) -> Result<Vec<OutboxRow>> {
    let mut rows = Vec::new();
    for status in OutboxStatus::ALL {
        rows.extend(table.list(db, status, ALL_ROWS).await?);
    }
    Ok(rows)
}

/// The notification requests among the agent's outbox rows, with their event ids.
fn requests(rows: &[OutboxRow]) -> Vec<(String, NotificationRequested)> {
    rows.iter()
        .filter(|r| r.event_type == NotificationRequested::EVENT_TYPE)
        .filter_map(|r| {
            let envelope = Envelope::from_slice(r.payload.as_bytes()).ok()?;
            let request = serde_json::from_value(envelope.payload).ok()?;
            Some((r.event_id.clone(), request))
        })
        .collect()
}

/// Each of `event_ids` has a `handled` row under `consumer` in the inbox of `db`.
async fn handled_in_inbox(
    db: &DatabaseConnection,
    consumer: &str,
    event_ids: &[String],
    service: Service,
    problems: &mut Problems,
) -> Result<()> {
    for event_id in event_ids {
        let entry = InboxTable::default().find(db, consumer, event_id).await?;
        if entry.as_ref().map(|e| e.status) != Some(InboxStatus::Handled) {
            problems.push((
                service,
                format!(
                    "{}'s inbox: expected event {event_id} handled under consumer `{consumer}`, \
                     found {entry:?}",
                    service.name()
                ),
            ));
        }
    }
    Ok(())
}

/// The agent's tables stay empty in another service's database: nothing is shared.
async fn nothing_of_the_agent(
    db: &DatabaseConnection,
    service: Service,
    problems: &mut Problems,
) -> Result<()> {
    let chats = chat_history::count(db).await?;
    if chats != 0 {
        problems.push((
            service,
            format!(
                "{}'s database: expected no chat_histories rows, found {chats}",
                service.name()
            ),
        ));
    }
    let whose = format!("{}'s database", service.name());
    for table in [
        smartflow_agent_contracts::OUTBOX_TABLE,
        smartflow_notification_contracts::OUTBOX_TABLE,
    ] {
        empty_outbox(db, table, &whose, service, problems).await?;
    }
    Ok(())
}

async fn empty_outbox(
    db: &DatabaseConnection,
    table: &str,
    whose: &str,
    service: Service,
    problems: &mut Problems,
) -> Result<()> {
    let stats = OutboxTable::new(table)?.stats(db).await?;
    let rows = stats.pending + stats.published + stats.consumed + stats.dead;
    if rows != 0 {
        problems.push((
            service,
            format!("{table} in {whose}: expected no rows, found {stats:?}"),
        ));
    }
    Ok(())
}
