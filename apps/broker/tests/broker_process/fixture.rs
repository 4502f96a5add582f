use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use smartflow_broker::ReadyInfo;
use smartflow_kafka::KafkaConfig;
use tokio::time::Instant;

/// Generous bound for anything the mock cluster does in the background (start-up, group joins,
/// reconnects backing off up to 10 s); only reached when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A running `smartflow-broker` child. Dropping it kills the process and removes its directory.
pub struct BrokerProcess {
    child: Child,
    pub dir: PathBuf,
    pub ready_file: PathBuf,
    pub info: ReadyInfo,
    /// The line the broker printed on stdout.
    pub stdout_line: String,
    pub http: reqwest::Client,
}

impl BrokerProcess {
    /// Starts the binary with `args` (plus `--ready-file`) and waits for its ready file.
    pub async fn start(args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("sf-broker-test"));
        std::fs::create_dir_all(&dir).expect("create the test directory");
        let ready_file = dir.join("ready.json");
        let log = std::fs::File::create(dir.join("broker.log")).expect("create the log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_smartflow-broker"))
            .args(args)
            .arg("--ready-file")
            .arg(&ready_file)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start smartflow-broker");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut process = Self {
            child,
            dir,
            ready_file,
            info: ReadyInfo {
                bootstrap_servers: String::new(),
                control_addr: String::new(),
            },
            stdout_line: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        };
        let deadline = Instant::now() + PATIENCE;
        while !process.ready_file.exists() {
            if let Some(status) = process.child.try_wait().expect("poll the child") {
                panic!(
                    "smartflow-broker exited with {status} before it was ready; log: {}",
                    process.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the broker never wrote its ready file"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process.info = ReadyInfo::read(&process.ready_file).expect("a whole ready file");
        // The line is printed right after the ready file is renamed into place.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .expect("read stdout")
        .expect("read stdout");
        process.stdout_line = line.trim_end().to_owned();
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.info.control_addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself and returns its exit code.
    pub async fn wait_for_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the broker did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client configuration for this broker, as `EmbeddedBroker::client_config` would give:
    /// a short fetch wait (the mock holds empty fetches for the whole wait) and a short session
    /// timeout (the mock is slow to notice a group's members leave).
    pub fn client_config(&self) -> KafkaConfig {
        let mut config = KafkaConfig::new(self.info.bootstrap_servers.clone());
        config.fetch_wait = Duration::from_millis(5);
        config
            .extra
            .push(("session.timeout.ms".to_owned(), "6000".to_owned()));
        config
    }

    /// `POST path` with an optional JSON body; returns the status and the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.post(self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("control request")).await
    }

    pub async fn request(&self, method: reqwest::Method, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .request(method, self.url(path))
            .send()
            .await
            .expect("control request");
        answer(response).await
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }
}

async fn answer(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("the control API answered {status} with non-JSON `{text}`: {e}")
    });
    (status, json)
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("smartflow-broker log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts that an answer is the API's error shape with `code` and a non-empty message.
pub fn assert_error(answer: &(u16, serde_json::Value), status: u16, code: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "an error needs a message: {body}");
}
