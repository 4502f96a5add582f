//! The bus end to end against real servers in containers (testcontainers): Apache Kafka (the
//! `apache/kafka` image, KRaft), PostgreSQL and MySQL. Each test starts Kafka and its database,
//! then runs the scenarios below: publish -> relay -> Kafka -> consumer, every event applied
//! once and each key's events in order; the same messages delivered again change nothing.
//!
//! Where no Docker engine answers (`DOCKER_HOST`, else `/var/run/docker.sock`), each test prints
//! one line, `skipped: no Docker engine found (...)`, and returns. How to run them: README, "Run
//! the tests".

#[allow(dead_code)]
#[path = "e2e/fixture.rs"]
mod fixture;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use fixture::{fast_retry, handlers, read_topic, relay_config, Said};
use smartflow_bus::domain::{Envelope, RouteRegistry, ServiceRoute};
use smartflow_bus::{ConsumerConfig, ConsumerRunner, EventBus, Metrics, PublishConfig};
use smartflow_kafka::{ensure_topics, KafkaConfig, KafkaConsumer, KafkaProducer};
use smartflow_storage::chat_history;
use smartflow_storage::outbox::OutboxTable;
use smartflow_testkit::{wait_until, Backend, TestDb};
use testcontainers::runners::AsyncRunner as _;
use testcontainers::{ContainerAsync, Image};
use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};
use testcontainers_modules::mysql::Mysql;
use testcontainers_modules::postgres::Postgres;
use tokio_util::sync::CancellationToken;

/// How long the engine probe waits for a connection or an answer: a socket that exists but does
/// not answer must not hang the test run.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const KEYS: usize = 3;
const EVENTS_PER_KEY: usize = 10;

/// Why no Docker engine answers here, or `None` when one does: the engine testcontainers
/// would use, `DOCKER_HOST`, else `/var/run/docker.sock`.
fn no_docker_engine() -> Option<String> {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_owned());
    probe(&host)
}

/// Why `host` (`unix://PATH` or `tcp://HOST:PORT`) is not a Docker engine, or `None` when it
/// answers `GET /_ping` with 200; connecting and each read or write bounded by
/// [`PROBE_TIMEOUT`].
fn probe(host: &str) -> Option<String> {
    let answer = if let Some(path) = host.strip_prefix("unix://") {
        std::os::unix::net::UnixStream::connect(path).and_then(|s| {
            s.set_read_timeout(Some(PROBE_TIMEOUT))?;
            s.set_write_timeout(Some(PROBE_TIMEOUT))?;
            ping(s)
        })
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        use std::net::ToSocketAddrs as _;
        let addr = addr.trim_end_matches('/');
        addr.to_socket_addrs()
            .and_then(|mut addrs| {
                addrs
                    .next()
                    .ok_or_else(|| std::io::Error::other("no address"))
            })
            .and_then(|a| std::net::TcpStream::connect_timeout(&a, PROBE_TIMEOUT))
            .and_then(|s| {
                s.set_read_timeout(Some(PROBE_TIMEOUT))?;
                s.set_write_timeout(Some(PROBE_TIMEOUT))?;
                ping(s)
            })
    } else {
        return Some(format!("DOCKER_HOST={host} is neither unix:// nor tcp://"));
    };
    match answer {
        Ok(reply) if reply.starts_with("HTTP/1.") && reply.contains(" 200 ") => None,
        Ok(reply) => Some(format!(
            "{host} answered `{}` to GET /_ping",
            reply.lines().next().unwrap_or_default()
        )),
        Err(e) => Some(format!(
            "{host}: {e}; set DOCKER_HOST to use another engine"
        )),
    }
}

fn ping(mut stream: impl std::io::Read + std::io::Write) -> std::io::Result<String> {
    stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Skips the calling test, saying why, when no engine answers.
macro_rules! require_docker {
    () => {
        if let Some(why) = no_docker_engine() {
            println!("skipped: no Docker engine found ({why})");
            return;
        }
    };
}

/// Starts a container, failing the test with what the engine said.
async fn start<I: Image>(image: I, what: &str) -> ContainerAsync<I> {
    image
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the {what} container: {e}"))
}

/// Kafka in a container, and a client configuration for it.
async fn kafka() -> (ContainerAsync<Kafka>, KafkaConfig) {
    let container = start(Kafka::default().with_jvm_image(), "apache/kafka").await;
    let port = container.get_host_port_ipv4(KAFKA_PORT).await.unwrap();
    let config = for_tests(KafkaConfig::new(format!("127.0.0.1:{port}")));
    (container, config)
}

/// `config` as the scenarios use it: the fixture's relay waits at most 1.5 s for the broker, so
/// the producer gives up on a message within 1 s; a dead member's partitions move within 6 s.
fn for_tests(mut config: KafkaConfig) -> KafkaConfig {
    config.message_timeout = Duration::from_secs(1);
    config
        .extra
        .push(("session.timeout.ms".into(), "6000".into()));
    config
}

/// The scenarios on `t` with the Kafka of `kafka`, creating their topic through it.
async fn scenarios(t: TestDb, kafka: KafkaConfig) {
    let topic = t.unique("topic");
    ensure_topics(&kafka, &[(&topic, 3)], 1)
        .await
        .expect("creating the test topic");
    scenarios_on(t, kafka, topic).await;
}

/// The scenarios on `t` with the Kafka of `kafka`, on `topic` (3 partitions).
async fn scenarios_on(t: TestDb, kafka: KafkaConfig, topic: String) {
    let route = ServiceRoute::new("agent", "agent_outbox", &topic, t.unique("group")).unwrap();
    let routes = RouteRegistry::builder()
        .service(route.clone())
        .event(
            <Said as smartflow_bus::domain::EventContract>::EVENT_TYPE,
            "agent",
        )
        .build()
        .unwrap();
    let bus = EventBus::new("agent", routes, PublishConfig::default()).unwrap();

    // Events of KEYS conversations, interleaved, each in its own committed transaction.
    let mut ids = Vec::new();
    for n in 0..EVENTS_PER_KEY {
        for key in 0..KEYS {
            let txn = bus.begin(&t.db).await.unwrap();
            let said = Said {
                conversation: format!("conv-{key}"),
                content: format!("{n}"),
            };
            ids.push(bus.publish(&txn, &said.conversation, &said).await.unwrap());
            bus.commit(txn).await.unwrap();
        }
    }

    let shutdown = CancellationToken::new();
    let relay = smartflow_bus::Relay::new(
        t.db.clone(),
        &route.outbox_table,
        Arc::new(KafkaProducer::new(&kafka).unwrap()),
        relay_config(),
        bus.wake_signal(),
        bus.metrics().clone(),
    )
    .unwrap();
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let consumer = runner(&t, &route, &kafka, &route.consumer_group);
    let consumer = tokio::spawn(consumer.run(shutdown.clone()));
    let table = OutboxTable::new(&route.outbox_table).unwrap();
    let total = (KEYS * EVENTS_PER_KEY) as u64;
    wait_until("every event consumed", || async {
        table.stats(&t.db).await.unwrap().consumed == total
    })
    .await;

    // Applied once each, every conversation in the order its events were written.
    assert_eq!(chat_history::count(&t.db).await.unwrap(), total);
    let in_order: Vec<String> = (0..EVENTS_PER_KEY).map(|n| n.to_string()).collect();
    for key in 0..KEYS {
        let stored = chat_history::list(&t.db, &format!("conv-{key}"), 100)
            .await
            .unwrap();
        let contents: Vec<String> = stored.into_iter().map(|m| m.content).collect();
        assert_eq!(contents, in_order, "conv-{key}");
    }

    // On the topic: each event once, and a key's events in offset order as written.
    let messages = read_topic(&kafka, &t.unique("reader"), &topic, ids.len()).await;
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut by_partition = messages.clone();
    by_partition.sort_by_key(|m| (m.partition, m.offset));
    for m in &by_partition {
        let envelope = Envelope::from_slice(m.payload.as_deref().unwrap()).unwrap();
        let said: Said = serde_json::from_value(envelope.payload.clone()).unwrap();
        seen.entry(said.conversation)
            .or_default()
            .push(said.content);
    }
    assert_eq!(messages.len(), ids.len(), "each event on the topic once");
    for key in 0..KEYS {
        assert_eq!(
            seen[&format!("conv-{key}")],
            in_order,
            "conv-{key} on Kafka"
        );
    }

    // Kafka's messages delivered again (a crash before the offset commit) change nothing.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), async {
        relay.await.unwrap();
        consumer.await.unwrap();
    })
    .await
    .expect("relay and consumer stop on shutdown");
    let again = runner(&t, &route, &kafka, &t.unique("again"))
        .process_batch(&messages)
        .await
        .unwrap();
    assert_eq!(
        (again.applied, again.duplicates),
        (0, messages.len() as u64)
    );
    assert_eq!(chat_history::count(&t.db).await.unwrap(), total);
    t.cleanup().await;
}

fn runner(t: &TestDb, route: &ServiceRoute, kafka: &KafkaConfig, group: &str) -> ConsumerRunner {
    let transport = Arc::new(KafkaConsumer::new(kafka, group, &[&route.topic]).unwrap());
    ConsumerRunner::for_route(
        t.db.clone(),
        route,
        handlers(),
        transport,
        ConsumerConfig {
            retry: fast_retry(),
            ..ConsumerConfig::default()
        },
        Arc::new(Metrics::default()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_on_postgres_and_kafka_in_containers() {
    require_docker!();
    let (_kafka, kafka) = kafka().await;
    let postgres = start(Postgres::default(), "postgres").await;
    let port = postgres.get_host_port_ipv4(5432).await.unwrap();
    let server = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
    scenarios(TestDb::on_server(Backend::Postgres, &server).await, kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_on_mysql_and_kafka_in_containers() {
    require_docker!();
    let (_kafka, kafka) = kafka().await;
    let mysql = start(Mysql::default(), "mysql").await;
    let port = mysql.get_host_port_ipv4(3306).await.unwrap();
    let server = format!("mysql://root@127.0.0.1:{port}/test");
    scenarios(TestDb::on_server(Backend::MariaDb, &server).await, kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_on_sqlite_and_kafka_in_a_container() {
    require_docker!();
    let (_kafka, kafka) = kafka().await;
    scenarios(TestDb::new(Backend::Sqlite).await, kafka).await;
}

/// The same scenarios on the embedded broker, so they are known to hold (and keep compiling
/// and passing) where no engine runs them against containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenarios_hold_on_the_embedded_broker() {
    let broker = smartflow_kafka::EmbeddedBroker::start(1).unwrap();
    let t = TestDb::new(Backend::Sqlite).await;
    let topic = t.unique("topic");
    broker.create_topic(&topic, 3).unwrap();
    let kafka = for_tests(broker.client_config());
    scenarios_on(t, kafka, topic).await;
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}

#[test]
fn a_missing_engine_is_found_at_once_and_named() {
    // A socket path with nothing behind it: refused at once, and the reason names the path.
    let dir = std::env::temp_dir().join(format!("sf-docker-{}", std::process::id()));
    let why = probe(&format!("unix://{}/docker.sock", dir.display()));
    assert!(
        why.as_deref().is_some_and(|w| w.contains("docker.sock")),
        "{why:?}"
    );
    let why = probe("ssh://somewhere");
    assert!(
        why.as_deref().is_some_and(|w| w.contains("neither")),
        "{why:?}"
    );
    // Something that listens but is not an engine.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap();
    });
    let why = probe(&format!("tcp://{addr}"));
    server.join().unwrap();
    assert!(why.as_deref().is_some_and(|w| w.contains("404")), "{why:?}");
}
