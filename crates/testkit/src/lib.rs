//! Test support shared by every crate's tests: each test gets its own database (a schema on
//! PostgreSQL, a database on MariaDB, a file on SQLite) with every migration applied, so tests
//! run in parallel without seeing each other's rows. [`TestDb::empty`] gives one with no table,
//! for a test that runs a chosen migrator itself ([`TestDb::migrate`]).
//!
//! The server addresses come from `SMARTFLOW_TEST_POSTGRES_URL` and `SMARTFLOW_TEST_MYSQL_URL`
//! (defaults: the local servers on 127.0.0.1), or from the test ([`TestDb::on_server`], for a
//! server it started itself, such as a container). This is a test-only crate, so reading the
//! environment here is deliberate.

pub mod metrics;
pub mod settings_doc;

use std::path::PathBuf;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend};
use smartflow_migrations::MigratorTrait;
use smartflow_storage::{connect, ConnectConfig};

/// The three databases every repository and bus scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

impl Backend {
    pub fn db_backend(self) -> DbBackend {
        match self {
            Backend::Sqlite => DbBackend::Sqlite,
            Backend::Postgres => DbBackend::Postgres,
            Backend::MariaDb => DbBackend::MySql,
        }
    }
}

pub fn postgres_url() -> String {
    std::env::var("SMARTFLOW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn mysql_url() -> String {
    std::env::var("SMARTFLOW_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// One isolated, migrated database.
pub struct TestDb {
    pub backend: Backend,
    pub db: DatabaseConnection,
    /// Connects a further pool to the same database, as a second process would.
    pub config: ConnectConfig,
    name: String,
    sqlite_file: Option<PathBuf>,
    /// The server URL the schema or database was made on (what `cleanup` drops it through).
    server_url: Option<String>,
}

impl TestDb {
    /// Creates the isolated database and applies every service's migrations. Panics with the
    /// reason when the server cannot be reached: the test command starts the servers first.
    pub async fn new(backend: Backend) -> TestDb {
        let t = TestDb::empty(backend).await;
        smartflow_migrations::run(&t.db).await.expect("migrations");
        t
    }

    /// The same on the server at `server_url` (`postgres://...` or `mysql://...` of a database
    /// that exists, the test's own is made beside it); ignored for SQLite.
    pub async fn on_server(backend: Backend, server_url: &str) -> TestDb {
        let t = TestDb::empty_on(backend, Some(server_url)).await;
        smartflow_migrations::run(&t.db).await.expect("migrations");
        t
    }

    /// Creates the isolated database with no table in it.
    pub async fn empty(backend: Backend) -> TestDb {
        TestDb::empty_on(backend, None).await
    }

    /// [`TestDb::empty`] on `server_url`, else on the configured server of `backend`.
    async fn empty_on(backend: Backend, server_url: Option<&str>) -> TestDb {
        init_tracing();
        let server_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(server_url.map_or_else(postgres_url, str::to_owned)),
            Backend::MariaDb => Some(server_url.map_or_else(mysql_url, str::to_owned)),
        };
        let server = server_url.clone().unwrap_or_default();
        let name = format!("sf_{}", uuid::Uuid::new_v4().simple());
        let (config, sqlite_file) = match backend {
            Backend::Sqlite => {
                let file = std::env::temp_dir().join(format!("{name}.db"));
                let cfg = ConnectConfig::new(format!("sqlite://{}?mode=rwc", file.display()));
                (cfg, Some(file))
            }
            Backend::Postgres => {
                let admin = admin(&server).await;
                admin
                    .execute_unprepared(&format!("CREATE SCHEMA {name}"))
                    .await
                    .expect("create test schema");
                let mut cfg = ConnectConfig::new(server.clone());
                cfg.pg_schema = Some(name.clone());
                (cfg, None)
            }
            Backend::MariaDb => {
                let admin = admin(&server).await;
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let host = server.rsplit_once('/').map_or(server.as_str(), |(s, _)| s);
                (ConnectConfig::new(format!("{host}/{name}")), None)
            }
        };
        let db = connect(&config)
            .await
            .unwrap_or_else(|e| panic!("{backend:?} test database: {e}"));
        TestDb {
            backend,
            db,
            config,
            name,
            sqlite_file,
            server_url,
        }
    }

    /// Applies the migrations of `M` as a service's start-up does
    /// (`smartflow_migrations::run_migrator`).
    pub async fn migrate<M: MigratorTrait>(&self) {
        smartflow_migrations::run_migrator::<M>(&self.db)
            .await
            .expect("migrations");
    }

    /// Whether the database has a table of this name.
    pub async fn has_table(&self, table: &str) -> bool {
        sea_orm_migration::SchemaManager::new(&self.db)
            .has_table(table)
            .await
            .expect("look up a table")
    }

    /// Whether `table` has an index of this name.
    pub async fn has_index(&self, table: &str, index: &str) -> bool {
        sea_orm_migration::SchemaManager::new(&self.db)
            .has_index(table, index)
            .await
            .expect("look up an index")
    }

    /// A second, independent pool onto this test's database.
    pub async fn connect_again(&self) -> DatabaseConnection {
        connect(&self.config).await.expect("second connection")
    }

    /// The `host:port` of the database server (PostgreSQL, MariaDB); `None` for SQLite.
    pub fn server_addr(&self) -> Option<String> {
        if self.backend == Backend::Sqlite {
            return None;
        }
        let (_, rest) = self.config.url.split_once("://")?;
        let authority = rest.split('/').next()?;
        Some(authority.rsplit('@').next()?.to_owned())
    }

    /// A pool onto this test's database whose connections go through `proxy`, so the test can
    /// cut the database off and bring it back. Waits at most `acquire` for a connection.
    pub async fn connect_through(
        &self,
        proxy: &FaultProxy,
        acquire: std::time::Duration,
    ) -> DatabaseConnection {
        let server = self.server_addr().expect("SQLite has no server to proxy");
        let mut config = self.config.clone();
        config.url = config.url.replacen(&server, &proxy.addr().to_string(), 1);
        config.acquire_timeout = acquire;
        config.connect_timeout = acquire;
        connect(&config)
            .await
            .expect("connection through the proxy")
    }

    /// A fresh unique name for topics and consumer groups of this test.
    pub fn unique(&self, prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
    }

    /// Drops the test's schema, database or file.
    pub async fn cleanup(self) {
        let _ = self.db.close().await;
        match self.backend {
            Backend::Sqlite => {
                if let Some(file) = &self.sqlite_file {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                    }
                }
            }
            Backend::Postgres => {
                let admin = admin(self.server_url.as_deref().unwrap_or_default()).await;
                let _ = admin
                    .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                    .await;
            }
            Backend::MariaDb => {
                let admin = admin(self.server_url.as_deref().unwrap_or_default()).await;
                let _ = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {}", self.name))
                    .await;
            }
        }
    }
}

async fn admin(url: &str) -> DatabaseConnection {
    Database::connect(url).await.unwrap_or_else(|e| {
        panic!("cannot reach test server {url}: {e} (run `cargo xtask test`, which starts it)")
    })
}

/// Logs of the code under test go to the test output when `RUST_LOG` asks for them.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Writes one scenario `async fn name(db: TestDb)` once and runs it on SQLite, PostgreSQL and
/// MariaDB as three tests: `sqlite::name`, `postgres::name`, `mariadb::name`. Each gets a
/// database with every table ([`TestDb::new`]); `on_every_backend!(empty: name, ...)` gives each
/// an empty one ([`TestDb::empty`]) instead.
#[macro_export]
macro_rules! on_every_backend {
    (empty: $($name:ident),+ $(,)?) => {
        $crate::on_every_backend!(@with empty: $($name),+);
    };
    ($($name:ident),+ $(,)?) => {
        $crate::on_every_backend!(@with new: $($name),+);
    };
    (@with $make:ident: $($name:ident),+) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestDb::$make($crate::Backend::Sqlite).await).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestDb::$make($crate::Backend::Postgres).await).await
                }
            )+
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestDb::$make($crate::Backend::MariaDb).await).await
                }
            )+
        }
    };
}

/// An inbound transport for consumer runners that tests drive through `process_batch` alone:
/// it never delivers a message and accepts every commit.
pub struct Unplugged;

#[async_trait::async_trait]
impl smartflow_domain::InboundTransport for Unplugged {
    async fn recv_batch(
        &self,
        _: usize,
        _: std::time::Duration,
        _: std::time::Duration,
    ) -> Result<Vec<smartflow_domain::IncomingMessage>, smartflow_domain::TransportError> {
        Ok(Vec::new())
    }

    async fn commit(
        &self,
        _: &[smartflow_domain::IncomingMessage],
    ) -> Result<(), smartflow_domain::TransportError> {
        Ok(())
    }

    async fn pause(&self) -> Result<(), smartflow_domain::TransportError> {
        Ok(())
    }

    async fn resume(&self) -> Result<(), smartflow_domain::TransportError> {
        Ok(())
    }

    fn owns(&self, _: &str, _: i32) -> bool {
        true
    }

    fn assigned_partitions(&self) -> usize {
        0
    }
}

/// A TCP proxy in front of a server that a test can cut off (every open connection is closed
/// and new ones are closed as soon as they arrive) and restore: a database or broker that goes
/// away and comes back, as seen by the client.
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let upstream = upstream.to_owned();
        let accept = tokio::spawn({
            let up = up.clone();
            let cuts = cuts.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let mut cut = cuts.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        FaultProxy {
            addr,
            up,
            cuts,
            accept,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Closes every connection and refuses new ones until [`FaultProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

/// How long [`wait_until`] waits for a condition before it fails the test.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Polls `probe` every 50 ms until it finds something, and returns it; panics naming `what`
/// after [`PATIENCE`]. For the asynchronous effects tests wait on (a relay's round, a consumer's
/// commit); never a timing assertion.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {} s waiting until {what}",
            PATIENCE.as_secs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// [`eventually`] for a condition.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// One HTTP request with `method` to `url`, no body: the answer's status and, when it is the
/// services' JSON error body, its message. For holding a served `/openapi.json` against a
/// running service (`smartflow_service::openapi::mismatches`).
pub async fn probe_http(
    method: reqwest::Method,
    url: String,
) -> (reqwest::StatusCode, Option<String>) {
    let answer = reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .expect("the service answers");
    let status = answer.status();
    let body: Option<serde_json::Value> = answer.json().await.ok();
    let message = body.and_then(|b| b["error"]["message"].as_str().map(str::to_owned));
    (status, message)
}

/// `GET url`, as JSON.
pub async fn get_json(url: String) -> serde_json::Value {
    reqwest::get(url)
        .await
        .expect("the service answers")
        .json()
        .await
        .expect("a JSON answer")
}
