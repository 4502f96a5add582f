//! `docker-compose.yml` held against the code, so it cannot rot where no Docker engine runs it:
//! every `SMARTFLOW_*` variable of a service is one its binary reads, and the values parse as the
//! binary parses them; the topics the init step creates are the ones the services use, with their
//! partitions; the services' URLs, credentials and key pair agree with each other and with the
//! database and Kafka services; health checks ask `/healthz` on the service's own port; every
//! named volume is declared; the `Dockerfile` builds every binary compose runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use axum::http::HeaderMap;
use clap::{CommandFactory, Parser};
use serde_yaml::Value;
use smartflow_agent::AgentConfig;
use smartflow_notification::NotificationConfig;
use smartflow_service::{ServiceCredentials, ServiceSettings, SERVICE_TOKEN_HEADER};
use smartflow_userauth::UserauthConfig;
use smartflow_userauth_contracts::PublicKey;

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

fn compose() -> Value {
    let path = repo_file("docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let service = &compose["services"][name];
    assert!(
        service.is_mapping(),
        "docker-compose.yml has no service `{name}`"
    );
    service
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A service's `environment`, as written (a mapping).
fn environment(service: &Value) -> BTreeMap<String, String> {
    let env = service["environment"]
        .as_mapping()
        .expect("`environment` is a mapping");
    env.iter().map(|(k, v)| (text(k), text(v))).collect()
}

/// The command line equivalent to `env` for `command`: each variable becomes the flag that
/// reads it. A variable no argument reads is an error naming it.
fn argv(command: &clap::Command, env: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut argv = vec![command.get_name().to_owned()];
    for (variable, value) in env {
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().and_then(|e| e.to_str()) == Some(variable.as_str()))
            .ok_or_else(|| format!("{} reads no variable `{variable}`", command.get_name()))?;
        let long = arg
            .get_long()
            .ok_or_else(|| format!("`{variable}` has no flag"))?;
        argv.push(format!("--{long}={value}"));
    }
    Ok(argv)
}

/// The configuration `binary` would start with under the service's environment.
fn config<C: Parser>(compose: &Value, name: &str) -> C {
    let env = environment(service(compose, name));
    for variable in env.keys() {
        assert!(variable.starts_with("SMARTFLOW_"), "{name}: {variable}");
    }
    let argv = argv(&C::command(), &env).unwrap_or_else(|e| panic!("{name}: {e}"));
    C::try_parse_from(&argv).unwrap_or_else(|e| panic!("{name}'s environment: {e}"))
}

/// `scheme://user:password@host:port/database` in parts.
struct DatabaseUrl {
    scheme: String,
    user: String,
    password: String,
    host: String,
    database: String,
}

fn database_url(url: &str) -> DatabaseUrl {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (credentials, rest) = rest.split_once('@').expect("credentials in the URL");
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let (authority, database) = rest.split_once('/').expect("a database in the URL");
    let host = authority.split(':').next().unwrap();
    DatabaseUrl {
        scheme: scheme.to_owned(),
        user: user.to_owned(),
        password: password.to_owned(),
        host: host.to_owned(),
        database: database.split('?').next().unwrap().to_owned(),
    }
}

fn depends_on<'a>(service: &'a Value, on: &str) -> &'a str {
    service["depends_on"][on]["condition"]
        .as_str()
        .unwrap_or_else(|| panic!("no `depends_on: {on}` with a condition"))
}

/// What every service of the workspace shares in the file: its binary from the one image, its
/// health check on its own port, its ports on the host's loopback, its database service waited
/// for (with the credentials that service is given), Kafka's advertised address, the init step.
fn check_service(
    compose: &Value,
    name: &str,
    binary: &str,
    http_port: u16,
    settings: &ServiceSettings,
) {
    let s = service(compose, name);
    assert_eq!(
        s["build"].as_str(),
        Some("."),
        "{name} is built from the workspace"
    );
    assert_eq!(s["command"][0].as_str(), Some(binary), "{name}'s command");
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("target/release/{binary} ")),
        "the Dockerfile copies {binary}"
    );

    let health: Vec<String> = s["healthcheck"]["test"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{name} has no health check"))
        .iter()
        .map(text)
        .collect();
    let url = format!("http://127.0.0.1:{http_port}/healthz");
    assert!(
        health.contains(&url),
        "{name}'s health check asks {url}: {health:?}"
    );

    let ports: Vec<String> = s["ports"].as_sequence().unwrap().iter().map(text).collect();
    let admin = settings.admin_addr.expect("an admin listener").port();
    for port in [http_port, admin] {
        let published = format!("127.0.0.1:{port}:{port}");
        assert!(
            ports.contains(&published),
            "{name} publishes {published}: {ports:?}"
        );
    }

    let db = database_url(&settings.database_url);
    let server = service(compose, &db.host);
    assert_eq!(
        depends_on(s, &db.host),
        "service_healthy",
        "{name} waits for {}",
        db.host
    );
    assert!(
        server["healthcheck"].is_mapping(),
        "{} has a health check",
        db.host
    );
    let server_env = environment(server);
    match db.scheme.as_str() {
        "postgres" => {
            assert_eq!(db.user, "postgres", "{name}");
            assert_eq!(
                Some(&db.password),
                server_env.get("POSTGRES_PASSWORD"),
                "{name}"
            );
            assert_eq!(Some(&db.database), server_env.get("POSTGRES_DB"), "{name}");
        }
        "mysql" => {
            assert_eq!(db.user, "root", "{name}");
            assert_eq!(
                Some(&db.password),
                server_env.get("MYSQL_ROOT_PASSWORD"),
                "{name}"
            );
            assert_eq!(
                Some(&db.database),
                server_env.get("MYSQL_DATABASE"),
                "{name}"
            );
        }
        other => panic!("{name}: a {other} database in compose"),
    }

    let advertised = &environment(service(compose, "kafka"))["KAFKA_ADVERTISED_LISTENERS"];
    for broker in settings
        .brokers()
        .expect("a Kafka cluster, not the embedded broker")
        .split(',')
    {
        assert!(
            advertised.contains(&format!("//{broker}")),
            "{name}'s broker {broker} is one Kafka advertises: {advertised}"
        );
    }
    assert_eq!(
        depends_on(s, "kafka-init"),
        "service_completed_successfully",
        "{name}"
    );
}

/// `(topic, partitions)` of each `kafka-topics.sh --create` line of the init step.
fn created_topics(compose: &Value) -> BTreeMap<String, i32> {
    let init = service(compose, "kafka-init");
    assert_eq!(depends_on(init, "kafka"), "service_healthy");
    let script: String = init["command"]
        .as_sequence()
        .expect("the init step's command")
        .iter()
        .map(text)
        .collect::<Vec<_>>()
        .join("\n");
    let mut topics = BTreeMap::new();
    for line in script.lines().filter(|l| l.contains("--create")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            let at = words
                .iter()
                .position(|w| *w == flag)
                .unwrap_or_else(|| panic!("{flag} in `{line}`"));
            words[at + 1]
        };
        assert_eq!(after("--bootstrap-server"), "kafka:19092", "{line}");
        topics.insert(
            after("--topic").to_owned(),
            after("--partitions").parse().unwrap(),
        );
    }
    topics
}

fn accepts(credentials: &ServiceCredentials, secret: &str) -> Option<String> {
    let mut headers = HeaderMap::new();
    headers.insert(SERVICE_TOKEN_HEADER, secret.parse().unwrap());
    credentials.caller(&headers).map(|c| c.name().to_owned())
}

#[test]
fn the_compose_file_runs_what_the_code_reads() {
    let compose = compose();
    let agent: AgentConfig = config(&compose, "agent");
    let notification: NotificationConfig = config(&compose, "notification");
    let userauth: UserauthConfig = config(&compose, "userauth");
    notification.check().unwrap();

    check_service(
        &compose,
        "agent",
        "smartflow-agent",
        agent.http_addr.port(),
        &agent.service,
    );
    check_service(
        &compose,
        "notification",
        "smartflow-notification",
        notification.http_addr.port(),
        &notification.service,
    );
    check_service(
        &compose,
        "userauth",
        "smartflow-userauth",
        userauth.http_addr.port(),
        &userauth.service,
    );
    for addr in [agent.http_addr, notification.http_addr, userauth.http_addr] {
        assert!(
            addr.ip().is_unspecified(),
            "{addr}: reachable from other containers"
        );
    }

    // The init step creates exactly the topics the services use, with their partitions.
    let mut wanted = BTreeMap::new();
    for (topic, partitions) in [
        (&agent.topic, agent.service.kafka_partitions),
        (&agent.notification_topic, agent.service.kafka_partitions),
        (&notification.topic, notification.service.kafka_partitions),
        (&userauth.agent_topic, userauth.service.kafka_partitions),
    ] {
        if let Some(before) = wanted.insert(topic.clone(), partitions) {
            assert_eq!(
                before, partitions,
                "the services disagree on {topic}'s partitions"
            );
        }
    }
    assert_eq!(created_topics(&compose), wanted);

    // The agent reaches userauth by its service name and port, with a credential userauth
    // accepts as `agent`, and verifies tokens with the public half of userauth's signing key.
    assert_eq!(
        agent.userauth_url.as_deref(),
        Some(format!("http://userauth:{}", userauth.http_addr.port()).as_str())
    );
    let userauth_accepts = userauth.service.credentials().unwrap();
    let agent_token = agent
        .userauth_token
        .as_ref()
        .expect("the agent's credential");
    assert_eq!(
        accepts(&userauth_accepts, agent_token.expose()).as_deref(),
        Some("agent")
    );
    let key = userauth
        .signing
        .load()
        .unwrap()
        .expect("a fixed signing key");
    let public = PublicKey::parse(agent.userauth_public_key.as_deref().unwrap()).unwrap();
    assert_eq!(
        public.to_pem(),
        key.public_key().to_pem(),
        "the agent's key is userauth's"
    );

    // The operator's dev credential opens every service's admin API.
    let operator = text(&compose["x-dev-credentials"]["operator"]);
    for (name, settings) in [
        ("agent", &agent.service),
        ("notification", &notification.service),
        ("userauth", &userauth.service),
    ] {
        let credentials = settings.credentials().unwrap();
        assert_eq!(
            accepts(&credentials, &operator).as_deref(),
            Some("operator"),
            "{name}"
        );
    }

    // Every named volume a service mounts is declared.
    let declared: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .expect("top-level volumes")
        .keys()
        .map(text)
        .collect();
    let mut used = BTreeSet::new();
    for (_, s) in compose["services"].as_mapping().unwrap() {
        for volume in s["volumes"].as_sequence().into_iter().flatten() {
            let source = text(volume).split(':').next().unwrap().to_owned();
            if !source.starts_with(['/', '.', '~']) {
                used.insert(source);
            }
        }
    }
    assert_eq!(used, declared, "named volumes used and declared");
}

/// Compose's own schema check, `config -q` (no engine needed), where a compose CLI is installed:
/// the `docker compose` plugin, else the standalone `docker-compose` (Debian's package).
#[test]
fn a_compose_cli_finds_the_file_valid_where_one_is_installed() {
    let file = repo_file("docker-compose.yml");
    let file = file.to_str().unwrap();
    let candidates: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    for cli in candidates {
        let probe = std::process::Command::new(cli[0])
            .args(&cli[1..])
            .arg("version")
            .output();
        if !probe.is_ok_and(|out| out.status.success()) {
            continue;
        }
        let out = std::process::Command::new(cli[0])
            .args(&cli[1..])
            .args(["-f", file, "config", "-q"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{} config -q` refuses the file: {}",
            cli.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("`{} config -q`: valid", cli.join(" "));
        return;
    }
    println!(
        "skipped: no compose CLI (`docker compose`, `docker-compose`) to check the schema with"
    );
}

#[test]
fn a_variable_no_binary_reads_is_caught() {
    let env = BTreeMap::from([("SMARTFLOW_NO_SUCH_SETTING".to_owned(), "1".to_owned())]);
    let err = argv(&AgentConfig::command(), &env).unwrap_err();
    assert!(err.contains("SMARTFLOW_NO_SUCH_SETTING"), "{err}");
    // A value the binary would refuse is refused here too.
    let env = BTreeMap::from([("SMARTFLOW_KAFKA_PARTITIONS".to_owned(), "0".to_owned())]);
    let argv = argv(&AgentConfig::command(), &env).unwrap();
    assert!(AgentConfig::try_parse_from(argv).is_err());
}
