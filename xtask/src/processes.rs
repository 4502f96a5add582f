//! The real processes the process-level runs drive (`cargo xtask chaos`, `cargo xtask
//! separate-databases`): one `smartflow-broker` and service binaries. Each child is killed when
//! its handle drops, so a failed run leaves no process behind.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tokio::time::Instant;

/// How long a process may take to become ready (a service waits for the database and broker).
pub(crate) const START_PATIENCE: Duration = Duration::from_secs(90);
/// Extra time a SIGTERMed service gets beyond its configured grace before it is SIGKILLed.
const STOP_SLACK: Duration = Duration::from_secs(5);

/// A child process that is SIGKILLed (and reaped) on drop.
pub(crate) struct Owned {
    pub(crate) child: Child,
}

impl Owned {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until the child exits by itself.
    pub(crate) fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`, ...) with the `kill` command: the workspace forbids
/// `unsafe`, and one fork per fault costs nothing here.
fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .context("running `kill`")?;
    if !status.success() {
        bail!("`kill -{signal} {pid}` failed with {status}");
    }
    Ok(())
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How many lines of a log file contain `needle`.
pub fn count_lines(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

/// What the broker's ready file says.
#[derive(Debug, Clone, Deserialize)]
struct Ready {
    bootstrap_servers: String,
    control_addr: String,
}

/// The running `smartflow-broker` and a client for its control API.
pub struct BrokerProcess {
    process: Owned,
    pub bootstrap_servers: String,
    control: String,
    http: reqwest::Client,
    log: PathBuf,
}

impl BrokerProcess {
    /// Starts `binary` with its log in `dir` and waits for its ready file.
    pub async fn start(binary: &Path, dir: &Path) -> Result<Self> {
        let ready_file = dir.join("broker.ready.json");
        let log = dir.join("broker.log");
        let child = Command::new(binary)
            .arg("--ready-file")
            .arg(&ready_file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).context("creating the broker log")?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut process = Owned { child };
        let deadline = Instant::now() + START_PATIENCE;
        while !ready_file.exists() {
            if let Some(status) = process.exited() {
                bail!(
                    "smartflow-broker exited with {status} before it was ready:\n{}",
                    log_tail(&log, 20)
                );
            }
            if Instant::now() > deadline {
                bail!("smartflow-broker wrote no ready file within {START_PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ready: Ready = serde_json::from_str(&std::fs::read_to_string(&ready_file)?)
            .context("reading the broker's ready file")?;
        Ok(Self {
            process,
            bootstrap_servers: ready.bootstrap_servers,
            control: format!("http://{}", ready.control_addr),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            log,
        })
    }

    /// `POST path` (with `body` as JSON if given) or `DELETE path`; fails unless 2xx.
    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<()> {
        let mut request = self.http.request(method, format!("{}{path}", self.control));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("control request {path}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("control request {path} answered {status}: {text}");
        }
        Ok(())
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let body = serde_json::json!({"name": name, "partitions": partitions});
        self.control(reqwest::Method::POST, "/topics", Some(body))
            .await
    }

    /// Takes every broker of the cluster down (`up == false`) or up.
    pub async fn set_all(&self, up: bool) -> Result<()> {
        let path = if up {
            "/brokers/-1/up"
        } else {
            "/brokers/-1/down"
        };
        self.control(reqwest::Method::POST, path, None).await
    }

    pub async fn inject_produce_errors(&self, count: usize, fault: &str) -> Result<()> {
        let body = serde_json::json!({"count": count, "fault": fault});
        self.control(reqwest::Method::POST, "/produce-errors", Some(body))
            .await
    }

    pub async fn clear_produce_errors(&self) -> Result<()> {
        self.control(reqwest::Method::DELETE, "/produce-errors", None)
            .await
    }

    /// Whether the broker is still running; its log tail when it is not.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.process.exited() {
            bail!(
                "smartflow-broker (pid {}) died with {status}:\n{}",
                self.process.pid(),
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }
}

/// Picks a free loopback port (bind to 0, read it, release it), so a service can be restarted
/// on the same address and its clients need not be told.
pub fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    listener.local_addr().context("reading the free port")
}

/// One service binary (agent, notification, userauth): its fixed address and environment, and
/// the current process if it runs.
pub struct ServiceProcess {
    pub name: String,
    pub addr: SocketAddr,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    process: Option<Owned>,
    starts: usize,
    grace: Duration,
    http: reqwest::Client,
}

impl ServiceProcess {
    pub fn new(
        name: &str,
        binary: &Path,
        dir: &Path,
        env: Vec<(String, String)>,
        grace: Duration,
    ) -> Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            addr: free_port()?,
            binary: binary.to_owned(),
            env,
            log: dir.join(format!("{name}.log")),
            process: None,
            starts: 0,
            grace,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Starts the process (appending to its log) and waits until `/healthz` answers 200.
    pub async fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening the log of {}", self.name))?;
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SMARTFLOW_HTTP_ADDR", self.addr.to_string())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.process = Some(Owned { child });
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(exit) = self.take_exit("exited while starting") {
                bail!(exit);
            }
            let health = self
                .http
                .get(format!("{}/healthz", self.base_url()))
                .send()
                .await;
            if matches!(&health, Ok(r) if r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer /healthz within {START_PATIENCE:?}:\n{}",
                    self.name,
                    log_tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> Result<u32> {
        self.process
            .as_ref()
            .map(Owned::pid)
            .with_context(|| format!("{} is not running", self.name))
    }

    /// SIGKILL: no chance to settle anything.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGSTOP: the process freezes with its connections open.
    pub fn pause(&self) -> Result<()> {
        send_signal(self.pid()?, "STOP")
    }

    /// SIGCONT after [`ServiceProcess::pause`].
    pub fn resume(&self) -> Result<()> {
        send_signal(self.pid()?, "CONT")
    }

    /// SIGTERM, then waits for the exit; past the grace period (plus slack) it is SIGKILLed.
    /// Returns how it ended.
    pub async fn terminate(&mut self) -> Result<Ended> {
        send_signal(self.pid()?, "TERM")?;
        let patience = self.grace + STOP_SLACK;
        let deadline = Instant::now() + patience;
        let Some(process) = self.process.as_mut() else {
            bail!("{} is not running", self.name);
        };
        loop {
            if let Some(status) = process.exited() {
                self.process = None;
                return Ok(Ended::Exited(status));
            }
            if Instant::now() > deadline {
                self.kill();
                return Ok(Ended::Killed(patience));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process (if started) is still running; a service that died on its own is a
    /// finding, reported with its log tail.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(exit) = self.take_exit("died on its own") {
            bail!(exit);
        }
        Ok(())
    }

    /// If the process has exited: forgets it and says so (`what`, the status, the log tail).
    fn take_exit(&mut self, what: &str) -> Option<String> {
        let status = self.process.as_mut().and_then(Owned::exited)?;
        self.process = None;
        Some(format!(
            "{} {what} with {status}:\n{}",
            self.name,
            log_tail(&self.log, 20)
        ))
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn starts(&self) -> usize {
        self.starts
    }
}

/// How a SIGTERMed service ended.
#[derive(Debug, Clone, Copy)]
pub enum Ended {
    /// It exited by itself with this status.
    Exited(std::process::ExitStatus),
    /// It was still running this long after SIGTERM and was SIGKILLed.
    Killed(Duration),
}

impl Ended {
    /// Exited by itself with status 0.
    pub fn is_clean(&self) -> bool {
        matches!(self, Ended::Exited(status) if status.success())
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Exited(status) => write!(f, "exited with {status}"),
            Ended::Killed(after) => {
                write!(f, "did not exit within {after:?} of SIGTERM; SIGKILLed")
            }
        }
    }
}

/// `target/<profile>` when every one of `binaries` is built there: the test executable lives
/// in its `deps` directory, and `cargo test --workspace` builds the workspace's binaries.
#[cfg(test)]
pub fn bin_dir_of_this_test(binaries: &[&str]) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.to_owned();
    binaries.iter().all(|b| dir.join(b).exists()).then_some(dir)
}
