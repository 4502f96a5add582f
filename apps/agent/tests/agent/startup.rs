use smartflow_agent::{Agent, AgentConfig};

use crate::support::*;

async fn start_error(config: AgentConfig) -> String {
    match Agent::start(config).await {
        Ok(agent) => {
            agent.shutdown().await;
            panic!("the agent started")
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_database_url_fails_start_naming_the_problem() {
    smartflow_testkit::init_tracing();
    let err = start_error(AgentConfig::embedded("localhost:5432/smartflow")).await;
    assert!(err.contains("SMARTFLOW_DATABASE_URL is malformed"), "{err}");
    assert!(err.contains("invalid database URL"), "{err}");
    assert!(err.contains("scheme"), "{err}");

    let err = start_error(AgentConfig::embedded("mysql://root:s3cret@db:notaport/app")).await;
    assert!(err.contains("port"), "{err}");
    assert!(!err.contains("s3cret"), "the password leaked: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_start_after_the_wait() {
    smartflow_testkit::init_tracing();
    let mut config = AgentConfig::embedded("postgres://nobody:s3cret@127.0.0.1:1/none");
    config.service.database_wait_secs = 2;
    let err = start_error(config).await;
    assert!(err.contains("cannot connect to the database"), "{err}");
    assert!(err.contains("SMARTFLOW_DATABASE_WAIT_SECS"), "{err}");
    assert!(!err.contains("s3cret"), "the password leaked: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_for_a_database_without_schemas_is_refused() {
    let dir = TempDir::new();
    let mut config = sqlite_config(&dir);
    config.service.database_schema = Some("tenant_1".into());
    let err = start_error(config).await;
    assert!(err.contains("SMARTFLOW_DATABASE_SCHEMA"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_fails_start_clearly() {
    let dir = TempDir::new();
    let mut config = sqlite_config(&dir);
    config.service.kafka_brokers = Some("127.0.0.1:1".into());
    config.service.broker_wait_secs = 2;
    let err = start_error(config).await;
    assert!(err.contains("cannot reach Kafka"), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliability_settings_that_do_not_fit_together_fail_start_by_name() {
    let dir = TempDir::new();
    let mut config = sqlite_config(&dir);
    config.service.reliability.kafka_message_timeout_ms = 50_000;
    config.service.reliability.claim_timeout_ms = 60_000;
    let err = start_error(config).await;
    assert!(
        err.contains("SMARTFLOW_KAFKA_MESSAGE_TIMEOUT_MS=50000")
            && err.contains("SMARTFLOW_CLAIM_TIMEOUT_MS=60000"),
        "{err}"
    );

    let mut config = sqlite_config(&dir);
    config.service.reliability.retry_max_attempts = 0;
    let err = start_error(config).await;
    assert!(err.contains("SMARTFLOW_RETRY_MAX_ATTEMPTS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_http_port_fails_start() {
    let dir = TempDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = sqlite_config(&dir);
    config.http_addr = taken.local_addr().unwrap();
    let err = start_error(config).await;
    assert!(err.contains("SMARTFLOW_HTTP_ADDR"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_graceful_and_a_restart_on_the_same_file_keeps_the_history() {
    let dir = TempDir::new();
    let agent = start(sqlite_config(&dir)).await;
    let first = post_message(&agent, "conv-1", "alice", "user", "before the restart").await;
    wait_for_messages(&agent, "conv-1", "alice", 1).await;
    stop(agent).await;

    // Migrations run again on the existing tables; the history is still there.
    let agent = start(sqlite_config(&dir)).await;
    let before = list_messages(&agent, "conv-1", "alice").await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].event_id, first);
    let second = post_message(&agent, "conv-1", "alice", "user", "after the restart").await;
    let messages = wait_for_messages(&agent, "conv-1", "alice", 2).await;
    let ids: Vec<&str> = messages.iter().map(|m| m.event_id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    stop(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_credential_settings_that_cannot_work_fail_start_by_name() {
    let dir = TempDir::new();
    let mut config = sqlite_config(&dir);
    config.userauth_url = Some("http://127.0.0.1:1".into());
    let err = start_error(config).await;
    assert!(err.contains("SMARTFLOW_USERAUTH_TOKEN is not"), "{err}");

    let mut config = sqlite_config(&dir);
    config.userauth_token = Some(Secret::new("the-agents-credential-at-userauth-0123456"));
    let err = start_error(config).await;
    assert!(err.contains("without SMARTFLOW_USERAUTH_URL"), "{err}");

    let mut config = sqlite_config(&dir);
    config.userauth_public_key = Some(String::new());
    let err = start_error(config).await;
    assert!(err.contains("without SMARTFLOW_USERAUTH_URL"), "{err}");

    // With the URL and the credential, the agent needs userauth's public key, and a usable one.
    let with_userauth = || {
        let mut config = sqlite_config(&dir);
        config.userauth_url = Some("http://127.0.0.1:1".into());
        config.userauth_token = Some(Secret::new("the-agents-credential-at-userauth-0123456"));
        config
    };
    let err = start_error(with_userauth()).await;
    assert!(
        err.contains("SMARTFLOW_USERAUTH_PUBLIC_KEY is not"),
        "{err}"
    );
    for (key, reason) in [
        ("not a key", "neither PEM nor base64"),
        ("AAAA", "holds 3 bytes"),
        // userauth's private key by mistake: refused, and not repeated.
        (
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHHUZfIacVurzAjDldZipcmuF9kXrfjzZr+CQ6Td6xFY\n-----END PRIVATE KEY-----",
            "BEGIN PUBLIC KEY",
        ),
    ] {
        let mut config = with_userauth();
        config.userauth_public_key = Some(key.to_owned());
        let err = start_error(config).await;
        assert!(
            err.contains("SMARTFLOW_USERAUTH_PUBLIC_KEY is not usable") && err.contains(reason),
            "{err}"
        );
        assert!(!err.contains("MC4CAQAw"), "{err}");
    }

    let mut config = sqlite_config(&dir);
    config.service.service_tokens = Some(Secret::new("assistant=short-s3cret"));
    let err = start_error(config).await;
    assert!(
        err.contains("SMARTFLOW_SERVICE_TOKENS is not usable"),
        "{err}"
    );
    assert!(
        err.contains("`assistant`") && !err.contains("s3cret"),
        "{err}"
    );
}
