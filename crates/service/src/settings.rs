//! What every service binary takes on its command line besides its own settings: where its
//! database and its Kafka cluster are, how long start-up waits for them, how long a stop waits,
//! and the reliability settings. Each service flattens [`ServiceSettings`] into its
//! configuration, so the flags and their `SMARTFLOW_*` variables are the same in every binary.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use smartflow_storage::connect::redact;

use crate::broker::BrokerSettings;
use crate::credentials::{CredentialError, Secret, ServiceCredentials};
use crate::database::DatabaseSettings;
use crate::http_server::HttpLimits;
use crate::reliability::ReliabilitySettings;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://smartflow.db?mode=rwc";
pub const DEFAULT_DATABASE_WAIT_SECS: u64 = 60;
pub const DEFAULT_KAFKA_PARTITIONS: i32 = 3;
pub const DEFAULT_KAFKA_REPLICATION: i32 = 1;
pub const DEFAULT_BROKER_WAIT_SECS: u64 = 60;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// A loopback address on a port the OS picks: what a test or an in-process embedder listens on.
pub const LOOPBACK_ANY_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The database, the broker, the start-up waits, the stop's grace period and the reliability
/// settings of one service.
///
/// `Debug` redacts the database password, so the struct can be logged whole.
#[derive(Clone, Args, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Database URL: sqlite://FILE?mode=rwc, postgres://USER:PASS@HOST:PORT/DB or mysql://...
    // Hidden from `--help` because the value may hold a password.
    #[arg(long, env = "SMARTFLOW_DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// PostgreSQL only: the schema to create and use the tables in (default: the search path's).
    #[arg(long, env = "SMARTFLOW_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,

    /// How long start-up keeps retrying an unreachable PostgreSQL/MySQL server, in seconds.
    #[arg(long, env = "SMARTFLOW_DATABASE_WAIT_SECS", default_value_t = DEFAULT_DATABASE_WAIT_SECS)]
    pub database_wait_secs: u64,

    /// Kafka bootstrap servers (host:port,...). Absent: an embedded broker runs in this process,
    /// which only services in this same process can reach.
    #[arg(long, env = "SMARTFLOW_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Further librdkafka properties for every Kafka client, `key=value`, comma-separated or
    /// repeated: TLS and SASL, say `security.protocol=SASL_SSL,sasl.mechanisms=SCRAM-SHA-512,
    /// sasl.username=svc,sasl.password=...`. Used with `SMARTFLOW_KAFKA_BROKERS` only (the
    /// embedded broker speaks plaintext); values are never logged.
    #[arg(long = "kafka-option", env = "SMARTFLOW_KAFKA_OPTIONS", value_delimiter = ',',
          value_parser = KafkaOption::parse, hide_env_values = true)]
    pub kafka_options: Vec<KafkaOption>,

    /// Partitions of the service's topic when start-up creates it.
    #[arg(long, env = "SMARTFLOW_KAFKA_PARTITIONS", default_value_t = DEFAULT_KAFKA_PARTITIONS,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub kafka_partitions: i32,

    /// Replication factor of the service's topic when start-up creates it on a real cluster.
    #[arg(long, env = "SMARTFLOW_KAFKA_REPLICATION", default_value_t = DEFAULT_KAFKA_REPLICATION,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub kafka_replication: i32,

    /// How long start-up keeps retrying an unreachable Kafka cluster, in seconds.
    #[arg(long, env = "SMARTFLOW_BROKER_WAIT_SECS", default_value_t = DEFAULT_BROKER_WAIT_SECS)]
    pub broker_wait_secs: u64,

    /// How long a stop waits for in-flight work before abandoning it, in seconds.
    #[arg(long, env = "SMARTFLOW_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Set by a process that started the brokers empty for its services (the all-in-one
    /// binary's embedded broker), so each service sends again what its outbox says was
    /// published to an earlier one. A service that starts its own embedded broker does so
    /// anyway. Not a flag: an operator's cluster keeps its messages.
    #[arg(skip)]
    pub new_broker: bool,

    /// The service credentials this service accepts, `name=secret` (each secret at least 32
    /// bytes), comma-separated: a request carrying one in `X-Smartflow-Service-Token` is that
    /// service's. Routes only services may call (`/metrics`, and the service's own) refuse every
    /// other request with 401. Unset: none is accepted.
    #[arg(long, env = "SMARTFLOW_SERVICE_TOKENS", hide_env_values = true)]
    pub service_tokens: Option<Secret>,

    /// A second address for `/metrics`, the admin API and the dashboard (`/admin/...`, with a
    /// copy of `/healthz`), for a network only operators reach. Unset: they are served on
    /// SMARTFLOW_HTTP_ADDR with the API. `/metrics` and the admin API need a service credential
    /// either way.
    #[arg(long, env = "SMARTFLOW_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,

    /// The HTTP server's header-read and request deadlines and its connection limit.
    #[command(flatten)]
    pub http: HttpLimits,

    /// Retry policy, deadlines, timeouts and batch sizes of the bus (see `--help`).
    #[command(flatten)]
    pub reliability: ReliabilitySettings,
}

impl Default for ServiceSettings {
    /// The command line's defaults, without reading the environment, so tests and in-process
    /// embedders get a hermetic starting point.
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            database_schema: None,
            database_wait_secs: DEFAULT_DATABASE_WAIT_SECS,
            kafka_brokers: None,
            kafka_options: Vec::new(),
            kafka_partitions: DEFAULT_KAFKA_PARTITIONS,
            kafka_replication: DEFAULT_KAFKA_REPLICATION,
            broker_wait_secs: DEFAULT_BROKER_WAIT_SECS,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            new_broker: false,
            service_tokens: None,
            admin_addr: None,
            http: HttpLimits::default(),
            reliability: ReliabilitySettings::default(),
        }
    }
}

impl ServiceSettings {
    /// The command line of these settings alone, as every service binary takes them: what the
    /// operations guide's settings tables are generated from and checked against.
    pub fn command() -> clap::Command {
        Self::augment_args(clap::Command::new("smartflow-<service>"))
    }

    /// The defaults on another database: with the embedded broker, what a test wants.
    pub fn on_database(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            ..Self::default()
        }
    }

    /// The brokers to connect to, or `None` for the embedded broker. A blank value counts as
    /// absent, since `SMARTFLOW_KAFKA_BROKERS=` in a compose file usually means "not set".
    pub fn brokers(&self) -> Option<&str> {
        self.kafka_brokers
            .as_deref()
            .map(str::trim)
            .filter(|b| !b.is_empty())
    }

    /// What start-up connects to the database with.
    pub fn database(&self) -> DatabaseSettings<'_> {
        DatabaseSettings {
            url: &self.database_url,
            schema: self.database_schema.as_deref(),
            wait_secs: self.database_wait_secs,
            limits: self.reliability.session_limits(),
        }
    }

    /// What start-up prepares the broker with, making sure of `topic`.
    pub fn broker<'a>(&'a self, topics: &'a [&'a str], client_id: &'a str) -> BrokerSettings<'a> {
        BrokerSettings {
            brokers: self.brokers(),
            options: self
                .kafka_options
                .iter()
                .map(|o| (o.key.clone(), o.value.clone()))
                .collect(),
            topics,
            partitions: self.kafka_partitions,
            replication: self.kafka_replication,
            wait_secs: self.broker_wait_secs,
            client_id,
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// The service credentials `SMARTFLOW_SERVICE_TOKENS` lists (none when unset).
    pub fn credentials(&self) -> Result<ServiceCredentials, CredentialError> {
        match &self.service_tokens {
            Some(list) => ServiceCredentials::parse(list.expose()),
            None => Ok(ServiceCredentials::default()),
        }
    }
}

/// One librdkafka property from the command line. `Debug` shows the key only: values include
/// passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOption {
    pub key: String,
    pub value: String,
}

impl KafkaOption {
    /// `key=value`, the key non-empty.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(Self {
                key: key.trim().to_owned(),
                value: value.to_owned(),
            }),
            // The text itself is not repeated: it may hold a password.
            _ => Err("expected a librdkafka property as key=value".to_owned()),
        }
    }
}

impl fmt::Debug for KafkaOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=<hidden>", self.key)
    }
}

impl fmt::Debug for ServiceSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceSettings")
            .field("database_url", &redact(&self.database_url))
            .field("database_schema", &self.database_schema)
            .field("database_wait_secs", &self.database_wait_secs)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_options", &self.kafka_options)
            .field("kafka_partitions", &self.kafka_partitions)
            .field("kafka_replication", &self.kafka_replication)
            .field("broker_wait_secs", &self.broker_wait_secs)
            .field("shutdown_grace_secs", &self.shutdown_grace_secs)
            .field("new_broker", &self.new_broker)
            .field(
                "service_tokens",
                &self.credentials().map(|c| c.names().join(",")).ok(),
            )
            .field("admin_addr", &self.admin_addr)
            .field("http", &self.http)
            .field("reliability", &self.reliability)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn every_setting_is_in_the_operations_guide() {
        smartflow_testkit::settings_doc::check_operations_guide(
            env!("CARGO_MANIFEST_DIR"),
            "service",
            &ServiceSettings::command(),
            None,
        );
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: ServiceSettings,
    }

    fn parse(args: &[&str]) -> Result<ServiceSettings, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.settings)
    }

    #[test]
    fn the_defaults_are_the_command_lines() {
        Cli::command().debug_assert();
        assert_eq!(parse(&[]).unwrap(), ServiceSettings::default());
    }

    #[test]
    fn flags_override_defaults() {
        let settings = parse(&[
            "--database-url",
            "postgres://u:pw@db:5432/app",
            "--database-schema",
            "flow",
            "--kafka-brokers",
            "k1:9092,k2:9092",
            "--kafka-partitions",
            "6",
            "--shutdown-grace-secs",
            "5",
            "--claim-timeout-ms",
            "90000",
        ])
        .unwrap();
        assert_eq!(settings.brokers(), Some("k1:9092,k2:9092"));
        assert_eq!(settings.kafka_partitions, 6);
        assert_eq!(settings.shutdown_grace(), Duration::from_secs(5));
        assert_eq!(settings.reliability.claim_timeout_ms, 90_000);
        let database = settings.database();
        assert_eq!(
            (database.url, database.schema),
            ("postgres://u:pw@db:5432/app", Some("flow"))
        );
        let broker = settings.broker(&["t"], "smartflow-x");
        assert_eq!((broker.topics, broker.partitions), (&["t"][..], 6));
    }

    #[test]
    fn kafka_options_pass_through_and_their_values_stay_out_of_logs() {
        let settings = parse(&[
            "--kafka-option",
            "security.protocol=SASL_SSL,sasl.password=s3cret=x",
            "--kafka-option",
            "sasl.username=svc",
        ])
        .unwrap();
        let broker = settings.broker(&["t"], "c");
        assert_eq!(
            broker.options,
            [
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.password".to_owned(), "s3cret=x".to_owned()),
                ("sasl.username".to_owned(), "svc".to_owned()),
            ]
        );
        let logged = format!("{settings:?}");
        assert!(logged.contains("sasl.password=<hidden>"), "{logged}");
        assert!(!logged.contains("s3cret"), "{logged}");
        let err = parse(&["--kafka-option", "no-equals-sign"]).err().unwrap();
        assert!(err.to_string().contains("key=value"), "{err}");
    }

    #[test]
    fn service_tokens_http_limits_and_the_admin_address_are_read() {
        let secret = "an-operator-credential-of-32-bytes-or-more";
        let settings = parse(&[
            "--service-tokens",
            &format!("operator={secret}"),
            "--admin-addr",
            "127.0.0.1:9100",
            "--http-header-read-timeout-ms",
            "500",
            "--http-request-timeout-ms",
            "700",
            "--http-max-connections",
            "3",
        ])
        .unwrap();
        assert_eq!(settings.credentials().unwrap().names(), ["operator"]);
        assert_eq!(settings.admin_addr.map(|a| a.port()), Some(9100));
        assert_eq!(
            settings.http.header_read_timeout(),
            Duration::from_millis(500)
        );
        assert_eq!(settings.http.request_timeout(), Duration::from_millis(700));
        assert_eq!(settings.http.http_max_connections, 3);
        let shown = format!("{settings:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("operator"), "{shown}");
        for bad in [
            ["--http-max-connections", "0"],
            ["--http-header-read-timeout-ms", "0"],
            ["--http-request-timeout-ms", "0"],
            ["--admin-addr", "nowhere"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
        // A bad list parses (clap never repeats a secret) and is refused where it is used.
        let settings = parse(&["--service-tokens", "operator=too-short-s3cret"]).unwrap();
        let err = settings.credentials().unwrap_err().to_string();
        assert!(err.contains("operator") && !err.contains("s3cret"), "{err}");
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn zero_partitions_are_refused() {
        assert!(parse(&["--kafka-partitions", "0"]).is_err());
        assert!(parse(&["--kafka-replication", "0"]).is_err());
    }

    #[test]
    fn blank_brokers_mean_embedded() {
        let settings = ServiceSettings {
            kafka_brokers: Some("  ".into()),
            ..ServiceSettings::default()
        };
        assert_eq!(settings.brokers(), None);
        assert_eq!(settings.broker(&["t"], "c").brokers, None);
    }

    #[test]
    fn debug_output_hides_the_password() {
        let shown = format!(
            "{:?}",
            ServiceSettings::on_database("postgres://app:s3cret@db:5432/app")
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@db"), "{shown}");
    }
}
