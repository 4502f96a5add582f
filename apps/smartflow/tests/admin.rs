//! The admin commands as an operator runs them: the real `smartflow` binary against a test
//! database, its exit code, stdout (JSON or tables) and stderr.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smartflow_domain::{Envelope, EventContract, OutboxStatus, RetryPolicy};
use smartflow_storage::inbox::{InboxStatus, InboxTable};
use smartflow_storage::outbox::OutboxTable;
use smartflow_storage::TransactionTrait;
use smartflow_testkit::{on_every_backend, TestDb};

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u32,
}
impl EventContract for Ping {
    const EVENT_TYPE: &'static str = "test.ping";
}

fn outbox() -> OutboxTable {
    OutboxTable::new("agent_outbox").unwrap()
}

fn outbox_named(name: &str) -> OutboxTable {
    OutboxTable::new(name).unwrap()
}

/// Runs `smartflow ARGS` on the test's database with stdin closed (not a terminal).
fn smartflow(t: &TestDb, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_smartflow"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SMARTFLOW_") {
            command.env_remove(name);
        }
    }
    command.env("SMARTFLOW_DATABASE_URL", &t.config.url);
    if let Some(schema) = &t.config.pg_schema {
        command.env("SMARTFLOW_DATABASE_SCHEMA", schema);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run smartflow")
}

fn stdout_json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", describe(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(output)))
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `dead` pings with reasons `reasons[i]`, then `pending` ones; returns the dead rows' ids.
async fn seed(t: &TestDb, reasons: &[&str], pending: u32) -> Vec<i64> {
    seed_in(t, &outbox(), reasons, pending).await
}

async fn seed_in(t: &TestDb, outbox: &OutboxTable, reasons: &[&str], pending: u32) -> Vec<i64> {
    let txn = t.db.begin().await.unwrap();
    let mut events = Vec::new();
    for n in 0..reasons.len() as u32 + pending {
        let env = Envelope::for_event(format!("k{n}"), &Ping { n }).unwrap();
        events.push(env.event_id.to_string());
        outbox.insert(&txn, &env, "topic-a", 3).await.unwrap();
    }
    txn.commit().await.unwrap();
    let mut dead = Vec::new();
    for (event, reason) in events.iter().zip(reasons) {
        outbox
            .record_failure(&t.db, event, reason, false, &RetryPolicy::default())
            .await
            .unwrap();
        dead.push(outbox.find(&t.db, event).await.unwrap().unwrap().id);
    }
    dead
}

async fn status_of(t: &TestDb, id: i64) -> OutboxStatus {
    let rows = outbox()
        .list_matching(
            &t.db,
            &smartflow_storage::outbox::OutboxFilter {
                ids: vec![id],
                ..Default::default()
            },
            1,
        )
        .await
        .unwrap();
    rows[0].row.status
}

fn table<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {json}"))
}

async fn stats_list_and_show_speak_json(t: TestDb) {
    let dead = seed(&t, &["Boom", "Boom", "broker said no"], 2).await;
    let stats = stdout_json(&smartflow(&t, &["outbox", "stats", "--json"]));
    // Without --table: every built-in outbox that exists.
    assert_eq!(stats["tables"].as_array().unwrap().len(), 2, "{stats}");
    let agent = table(&stats, "agent_outbox");
    assert_eq!(agent["rows"]["dead"], 3);
    assert_eq!(agent["rows"]["pending"], 2);
    assert!(agent["oldest_pending_age_ms"].as_i64().unwrap() >= 0);
    assert_eq!(
        agent["retries"],
        serde_json::json!([{"retry_count": 0, "rows": 2}, {"retry_count": 1, "rows": 3}])
    );
    assert_eq!(
        agent["dead_reasons"][0],
        serde_json::json!({"reason": "Boom", "rows": 2})
    );
    assert_eq!(table(&stats, "notification_outbox")["rows"]["dead"], 0);

    let list = stdout_json(&smartflow(
        &t,
        &[
            "outbox",
            "list",
            "--status",
            "dead",
            "--reason",
            "boom",
            "--json",
            "--table",
            "agent_outbox",
        ],
    ));
    let agent = table(&list, "agent_outbox");
    assert_eq!(agent["matched"], 2);
    let ids: Vec<i64> = agent["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, dead[0..2]);
    assert_eq!(agent["rows"][0]["status"], "dead");
    assert_eq!(agent["rows"][0]["redrive_count"], 0);
    assert!(
        agent["rows"][0].get("payload").is_none(),
        "list leaves payloads out"
    );

    let show = stdout_json(&smartflow(
        &t,
        &["outbox", "show", &dead[2].to_string(), "--json"],
    ));
    let row = &table(&show, "agent_outbox")["row"];
    assert_eq!(row["last_error"], "broker said no");
    assert!(row["payload"].as_str().unwrap().contains("test.ping"));
    let event_id = row["event_id"].as_str().unwrap().to_owned();
    let by_event = stdout_json(&smartflow(&t, &["outbox", "show", &event_id, "--json"]));
    assert_eq!(table(&by_event, "agent_outbox")["row"]["id"], dead[2]);
    t.cleanup().await;
}

async fn a_dry_run_changes_nothing_and_a_redrive_is_recorded(t: TestDb) {
    let dead = seed(&t, &["Boom", "Boom", "other"], 1).await;
    let dry = stdout_json(&smartflow(
        &t,
        &[
            "outbox",
            "redrive",
            "--all",
            "--dry-run",
            "--json",
            "--table",
            "agent_outbox",
        ],
    ));
    assert_eq!(dry["dry_run"], true);
    let agent = table(&dry, "agent_outbox");
    assert_eq!(agent["matched"], 3);
    assert_eq!(agent["redriven"], 0);
    for id in &dead {
        assert_eq!(
            status_of(&t, *id).await,
            OutboxStatus::Dead,
            "a dry run changes nothing"
        );
    }
    let human = smartflow(
        &t,
        &[
            "outbox",
            "redrive",
            "--all",
            "--dry-run",
            "--table",
            "agent_outbox",
        ],
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{}", describe(&human));
    assert!(text.contains("would redrive 3 dead rows"), "{text}");
    assert!(text.contains("Boom") && text.contains("other"), "{text}");

    let done = stdout_json(&smartflow(
        &t,
        &[
            "outbox",
            "redrive",
            "--reason",
            "BOOM",
            "--json",
            "--table",
            "agent_outbox",
        ],
    ));
    assert_eq!(done["dry_run"], false);
    assert_eq!(table(&done, "agent_outbox")["redriven"], 2);
    assert_eq!(status_of(&t, dead[0]).await, OutboxStatus::Pending);
    assert_eq!(
        status_of(&t, dead[2]).await,
        OutboxStatus::Dead,
        "not matched, not moved"
    );
    let shown = stdout_json(&smartflow(
        &t,
        &["outbox", "show", &dead[0].to_string(), "--json"],
    ));
    let row = &table(&shown, "agent_outbox")["row"];
    assert_eq!(row["redrive_count"], 1);
    assert!(row["last_redriven_at"].as_i64().is_some());
    assert_eq!(row["retry_count"], 0);
    let by_id = stdout_json(&smartflow(
        &t,
        &[
            "outbox",
            "redrive",
            "--id",
            &dead[0].to_string(),
            "--id",
            &dead[2].to_string(),
            "--json",
            "--table",
            "agent_outbox",
        ],
    ));
    assert_eq!(
        table(&by_id, "agent_outbox")["redriven"],
        1,
        "the pending row asked for is left alone"
    );
    t.cleanup().await;
}

async fn many_rows_need_a_confirmation(t: TestDb) {
    let reasons = vec!["poison"; 12];
    let dead = seed(&t, &reasons, 0).await;
    let refused = smartflow(&t, &["outbox", "redrive", "--all"]);
    assert_eq!(refused.status.code(), Some(3), "{}", describe(&refused));
    let message = stderr(&refused);
    assert!(
        message.contains("refusing to redrive 12 dead rows"),
        "{message}"
    );
    assert!(message.contains("--yes"), "{message}");
    for id in &dead {
        assert_eq!(
            status_of(&t, *id).await,
            OutboxStatus::Dead,
            "a refusal changes nothing"
        );
    }
    let refused_purge = smartflow(&t, &["outbox", "purge", "--older-than", "0s", "--json"]);
    assert_eq!(
        refused_purge.status.code(),
        Some(3),
        "{}",
        describe(&refused_purge)
    );
    let allowed = smartflow(&t, &["outbox", "redrive", "--all", "--confirm-above", "12"]);
    assert!(allowed.status.success(), "{}", describe(&allowed));
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("redrove 12 of 12"));
    t.cleanup().await;
}

async fn a_purge_deletes_old_settled_rows(t: TestDb) {
    let dead = seed(&t, &["a", "b", "c"], 2).await;
    // `--older-than 0s` means settled before the command started, which every row here was.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let dry = stdout_json(&smartflow(
        &t,
        &[
            "outbox",
            "purge",
            "--older-than",
            "0s",
            "--dry-run",
            "--json",
            "--table",
            "agent_outbox",
        ],
    ));
    assert_eq!(table(&dry, "agent_outbox")["matched"], 3);
    assert_eq!(table(&dry, "agent_outbox")["purged"], 0);
    assert_eq!(status_of(&t, dead[0]).await, OutboxStatus::Dead);
    let none = stdout_json(&smartflow(
        &t,
        &[
            "outbox",
            "purge",
            "--older-than",
            "1d",
            "--json",
            "--table",
            "agent_outbox",
        ],
    ));
    assert_eq!(table(&none, "agent_outbox")["purged"], 0);
    let done = stdout_json(&smartflow(
        &t,
        &[
            "outbox",
            "purge",
            "--older-than",
            "0s",
            "--status",
            "dead",
            "--batch-size",
            "2",
            "--json",
            "--table",
            "agent_outbox",
        ],
    ));
    assert_eq!(table(&done, "agent_outbox")["purged"], 3);
    let stats = stdout_json(&smartflow(
        &t,
        &["outbox", "stats", "--json", "--table", "agent_outbox"],
    ));
    let rows = &table(&stats, "agent_outbox")["rows"];
    assert_eq!(
        (rows["dead"].as_u64(), rows["pending"].as_u64()),
        (Some(0), Some(2))
    );
    t.cleanup().await;
}

async fn bad_arguments_are_refused_with_a_reason(t: TestDb) {
    let cases: [(&[&str], i32, &str); 8] = [
        (
            &["outbox", "list", "--status", "sent"],
            2,
            "unknown status `sent`",
        ),
        (
            &["inbox", "list", "--status", "consumed"],
            2,
            "unknown status `consumed`",
        ),
        (
            &["outbox", "purge", "--older-than", "7days"],
            2,
            "bad duration `7days`",
        ),
        (&["outbox", "purge"], 2, "--older-than"),
        (&["outbox", "redrive"], 2, "name the rows to redrive"),
        (
            &["outbox", "redrive", "--id", "1"],
            2,
            "row ids are per table",
        ),
        (
            &["outbox", "stats", "--table", "missing_outbox"],
            1,
            "table `missing_outbox` does not exist",
        ),
        (&["outbox", "show", "999999"], 1, "no row `999999`"),
    ];
    for (args, code, message) in cases {
        let output = smartflow(&t, args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?}: {}", describe(&output));
    }
    let bad_table = smartflow(&t, &["outbox", "stats", "--table", "agent_outbox; drop"]);
    assert_eq!(bad_table.status.code(), Some(1), "{}", describe(&bad_table));
    t.cleanup().await;
}

async fn the_human_output_is_aligned_tables(t: TestDb) {
    seed(&t, &["Boom"], 1).await;
    let output = smartflow(&t, &["outbox", "stats", "--table", "agent_outbox"]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "agent_outbox", "{text}");
    assert_eq!(lines[1], "status     rows", "{text}");
    assert_eq!(lines[2], "pending       1", "{text}");
    assert!(lines.contains(&"dead          1"), "{text}");
    assert!(text.contains("oldest pending: "), "{text}");
    assert!(text.contains("Boom"), "{text}");
    let list = smartflow(&t, &["outbox", "list", "--table", "agent_outbox"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.starts_with("agent_outbox: 2 rows match, 2 shown\nid  status"),
        "{text}"
    );
    t.cleanup().await;
}

async fn the_inbox_commands(t: TestDb) {
    let inbox = InboxTable::default();
    let txn = t.db.begin().await.unwrap();
    for (consumer, event, status, error) in [
        ("billing", "e1", InboxStatus::Handled, None),
        ("usage", "e1", InboxStatus::Handled, None),
        ("usage", "e2", InboxStatus::Dead, Some("bad payload")),
    ] {
        inbox
            .record(
                &txn,
                consumer,
                event,
                "agent.token.usage.recorded",
                status,
                error,
            )
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();
    let stats = stdout_json(&smartflow(&t, &["inbox", "stats", "--json"]));
    let table_json = table(&stats, "inbox");
    assert_eq!(table_json["consumers"][1]["consumer"], "usage");
    assert_eq!(table_json["consumers"][1]["dead"], 1);
    assert_eq!(table_json["dead_reasons"][0]["reason"], "bad payload");
    let show = stdout_json(&smartflow(&t, &["inbox", "show", "e1", "--json"]));
    assert_eq!(table(&show, "inbox")["rows"].as_array().unwrap().len(), 2);
    let missing = smartflow(&t, &["inbox", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(1), "{}", describe(&missing));
    let list = stdout_json(&smartflow(
        &t,
        &["inbox", "list", "--status", "dead", "--json"],
    ));
    assert_eq!(table(&list, "inbox")["rows"][0]["event_id"], "e2");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let purged = stdout_json(&smartflow(
        &t,
        &[
            "inbox",
            "purge",
            "--older-than",
            "0s",
            "--status",
            "dead",
            "--json",
        ],
    ));
    assert_eq!(table(&purged, "inbox")["purged"], 1);
    let left = stdout_json(&smartflow(&t, &["inbox", "list", "--json"]));
    assert_eq!(table(&left, "inbox")["matched"], 2);
    t.cleanup().await;
}

/// A service's own outbox, made by `create_outbox_table` alone: every command but redrive works
/// on it, and redrive says how to get the history it needs.
async fn a_services_own_table_without_redrive_history(t: TestDb) {
    let manager = sea_orm_migration::SchemaManager::new(&t.db);
    smartflow_migrations::create_outbox_table(&manager, "billing_outbox")
        .await
        .unwrap();
    let dead = seed_in(&t, &outbox_named("billing_outbox"), &["poison"], 1).await;
    let on_billing = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--table", "billing_outbox"]);
        smartflow(&t, &args)
    };
    let stats = stdout_json(&on_billing(&["outbox", "stats", "--json"]));
    assert_eq!(table(&stats, "billing_outbox")["rows"]["dead"], 1);
    let list = stdout_json(&on_billing(&["outbox", "list", "--json"]));
    assert_eq!(
        table(&list, "billing_outbox")["rows"][0]["redrive_count"],
        Value::Null
    );
    for args in [
        &["outbox", "redrive", "--all"][..],
        &["outbox", "redrive", "--all", "--dry-run"],
    ] {
        let refused = on_billing(args);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{args:?}: {}",
            describe(&refused)
        );
        assert!(
            stderr(&refused).contains("add_redrive_history"),
            "{}",
            describe(&refused)
        );
    }
    let row = outbox_named("billing_outbox")
        .record_by_id(&t.db, dead[0])
        .await
        .unwrap();
    assert_eq!(row.unwrap().row.status, OutboxStatus::Dead);
    smartflow_migrations::add_redrive_history(&manager, "billing_outbox")
        .await
        .unwrap();
    let done = stdout_json(&on_billing(&["outbox", "redrive", "--all", "--json"]));
    assert_eq!(table(&done, "billing_outbox")["redriven"], 1);
    t.cleanup().await;
}

/// `outbox unblock KEY`: a dry run shows the waiting row and changes nothing; the real run
/// makes it `dead` with the operator's reason, after which a redrive can send it again.
async fn unblock_gives_up_on_a_keys_waiting_rows(t: TestDb) {
    let txn = t.db.begin().await.unwrap();
    let mut events = Vec::new();
    for n in 0..3 {
        let env = Envelope::for_event("conv-1", &Ping { n }).unwrap();
        events.push(env.event_id.to_string());
        outbox().insert(&txn, &env, "topic-a", 3).await.unwrap();
    }
    txn.commit().await.unwrap();
    outbox()
        .record_failure(
            &t.db,
            &events[0],
            "timed out",
            true,
            &RetryPolicy::default(),
        )
        .await
        .unwrap();
    let waiting = outbox().find(&t.db, &events[0]).await.unwrap().unwrap().id;
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "outbox",
            "unblock",
            "conv-1",
            "--table",
            "agent_outbox",
            "--json",
        ];
        args.extend_from_slice(extra);
        args
    };
    let dry = stdout_json(&smartflow(&t, &args(&["--dry-run"])));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        table(&dry, "agent_outbox")["ids"],
        serde_json::json!([waiting])
    );
    assert_eq!(status_of(&t, waiting).await, OutboxStatus::Pending);

    let done = stdout_json(&smartflow(&t, &args(&[])));
    assert_eq!(
        table(&done, "agent_outbox")["unblocked"],
        serde_json::json!([waiting])
    );
    assert_eq!(status_of(&t, waiting).await, OutboxStatus::Dead);
    let row = outbox().find(&t.db, &events[0]).await.unwrap().unwrap();
    assert_eq!(
        row.last_error.as_deref(),
        Some("unblocked by operator; last error: timed out")
    );
    // Nothing waits any more: a second run changes nothing and says so.
    let again = smartflow(
        &t,
        &["outbox", "unblock", "conv-1", "--table", "agent_outbox"],
    );
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing was waiting"),
        "{}",
        describe(&again)
    );
    let redriven = stdout_json(&smartflow(
        &t,
        &[
            "outbox",
            "redrive",
            "--id",
            &waiting.to_string(),
            "--table",
            "agent_outbox",
            "--json",
        ],
    ));
    assert_eq!(table(&redriven, "agent_outbox")["redriven"], 1);
    let missing = smartflow(&t, &["outbox", "unblock"]);
    assert_eq!(missing.status.code(), Some(2), "{}", describe(&missing));
    t.cleanup().await;
}

on_every_backend!(
    unblock_gives_up_on_a_keys_waiting_rows,
    a_services_own_table_without_redrive_history,
    stats_list_and_show_speak_json,
    a_dry_run_changes_nothing_and_a_redrive_is_recorded,
    a_purge_deletes_old_settled_rows,
    the_inbox_commands,
);

mod sqlite_only {
    use super::*;
    use smartflow_testkit::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_rows_need_a_confirmation() {
        super::many_rows_need_a_confirmation(TestDb::new(Backend::Sqlite).await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_arguments_are_refused_with_a_reason() {
        super::bad_arguments_are_refused_with_a_reason(TestDb::new(Backend::Sqlite).await).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_human_output_is_aligned_tables() {
        super::the_human_output_is_aligned_tables(TestDb::new(Backend::Sqlite).await).await
    }

    #[test]
    fn help_lists_the_admin_commands_and_the_all_in_one_flags() {
        let output = Command::new(env!("CARGO_BIN_EXE_smartflow"))
            .arg("--help")
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8_lossy(&output.stdout);
        for needle in ["outbox", "inbox", "--agent-addr", "--database-url"] {
            assert!(help.contains(needle), "{needle}: {help}");
        }
    }
}
