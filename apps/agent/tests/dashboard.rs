//! The admin dashboard (`/admin/dashboard`) end to end: an agent on PostgreSQL with the embedded
//! broker and dead rows in its outbox, driven in headless Chromium by `browser-tests/dashboard.mjs`
//! (playwright-core): log in, see the counts and the dead list, redrive with the dry run shown
//! first, see the rows move, screenshots kept under `target/tmp/dashboard/`.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`), `node`, and `browser-tests/node_modules`: `bash
//! .ci/browser-deps` installs what is missing (`.ci/run` does it before the tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use smartflow_agent::{Agent, AgentConfig, ChatMessageAppended, Role};
use smartflow_domain::{Envelope, RetryPolicy};
use smartflow_service::admin::DASHBOARD_PATH;
use smartflow_service::Secret;
use smartflow_storage::outbox::OutboxTable;
use smartflow_storage::{chat_history, TransactionTrait};
use smartflow_testkit::{Backend, TestDb, PATIENCE};

const OPERATOR_TOKEN: &str = "the-dashboard-tests-operator-credential-0123";
/// More than the admin API's confirmation bound (10), so the confirmed redrive must say so.
const DEAD_ROWS: usize = 12;
const DEAD_REASON: &str = "downstream rejected the message";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What the browser test needs, or why it cannot run: a missing piece is the test's failure,
/// with the command that installs it.
fn browser_prerequisites() -> Result<PathBuf, String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let install = "run `bash .ci/browser-deps` (apt-get install chromium; npm ci in browser-tests)";
    if !chromium.exists() {
        return Err(format!("no Chromium at {}: {install}", chromium.display()));
    }
    let playwright = repo_root().join("browser-tests/node_modules/playwright-core");
    if !playwright.exists() {
        return Err(format!("{} is missing: {install}", playwright.display()));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(chromium),
        _ => Err(format!("`node` does not run: {install}")),
    }
}

/// `DEAD_ROWS` chat messages (valid events the agent's consumer applies) whose rows are `dead`
/// with `DEAD_REASON`, written before the agent starts so no relay sees them `pending`.
async fn seed_dead_rows(t: &TestDb, topic: &str) -> Vec<String> {
    let outbox = OutboxTable::new(smartflow_agent_contracts::OUTBOX_TABLE).unwrap();
    let txn = t.db.begin().await.unwrap();
    let mut events = Vec::new();
    for n in 0..DEAD_ROWS {
        let event = ChatMessageAppended {
            conversation_id: format!("c{n}"),
            user_id: "u1".into(),
            role: Role::User,
            content: format!("message {n}"),
            occurred_at_ms: smartflow_storage::now_millis(),
        };
        let envelope = Envelope::for_event(format!("c{n}"), &event).unwrap();
        outbox.insert(&txn, &envelope, topic, 3).await.unwrap();
        events.push(envelope.event_id.to_string());
    }
    txn.commit().await.unwrap();
    for event in &events {
        outbox
            .record_failure(&t.db, event, DEAD_REASON, false, &RetryPolicy::default())
            .await
            .unwrap();
    }
    assert_eq!(outbox.stats(&t.db).await.unwrap().dead, DEAD_ROWS as u64);
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_backlog_and_redrives_after_a_dry_run() {
    let chromium = browser_prerequisites().unwrap_or_else(|why| panic!("{why}"));
    let t = TestDb::new(Backend::Postgres).await;
    let mut config = AgentConfig::embedded(t.config.url.clone());
    config.service.database_schema = t.config.pg_schema.clone();
    config.service.service_tokens = Some(Secret::new(format!("operator={OPERATOR_TOKEN}")));
    config.service.admin_addr = Some(smartflow_service::LOOPBACK_ANY_PORT);
    seed_dead_rows(&t, &config.topic).await;
    let agent = Agent::start(config)
        .await
        .unwrap_or_else(|e| panic!("the agent did not start: {e:#}"));
    let admin = agent.admin_url().expect("an admin listener");

    // The page is on the admin listener only, and holds nothing without a credential.
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{admin}{DASHBOARD_PATH}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("X-Smartflow-Service-Token"));
    let main = client
        .get(format!("{}{DASHBOARD_PATH}", agent.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        main.status(),
        404,
        "the dashboard stays off the public listener"
    );

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let mut script = Command::new("node");
    script
        .arg(repo_root().join("browser-tests/dashboard.mjs"))
        .current_dir(repo_root().join("browser-tests"))
        .env("DASHBOARD_URL", format!("{admin}{DASHBOARD_PATH}"))
        .env("SERVICE_TOKEN", OPERATOR_TOKEN)
        .env("DEAD_ROWS", DEAD_ROWS.to_string())
        .env("DEAD_REASON", DEAD_REASON)
        .env("SCREENSHOT_DIR", &screenshots)
        .env("CHROMIUM", &chromium);
    // Every step of the script waits at most a minute, so it ends by itself.
    let run = tokio::task::spawn_blocking(move || script.output())
        .await
        .unwrap()
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    println!("{stdout}");
    for shot in ["dashboard-dry-run.png", "dashboard.png"] {
        let file = screenshots.join(shot);
        let size = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .len();
        assert!(size > 0, "{} is empty", file.display());
        println!("screenshot: {}", file.display());
    }

    // What the page showed is what the tables hold: every row redriven once, applied once.
    let outbox = OutboxTable::new(smartflow_agent_contracts::OUTBOX_TABLE).unwrap();
    let stats = outbox.stats(&t.db).await.unwrap();
    assert_eq!(stats.dead, 0, "{stats:?}");
    let stored = chat_history::count(&t.db).await.unwrap();
    assert_eq!(stored, DEAD_ROWS as u64);
    tokio::time::timeout(PATIENCE, agent.shutdown())
        .await
        .expect("shutdown returns");
    t.cleanup().await;
}
