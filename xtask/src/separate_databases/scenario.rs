//! One backend's run, step by step:
//!
//! 1. Three fresh databases, one `smartflow-broker` with the agent's and notification's topics,
//!    a stand-in webhook; userauth, the agent and notification started as processes, each with
//!    its own `SMARTFLOW_DATABASE_URL`.
//! 2. Over HTTP only: register and log in, post to two conversations; wait until the agent's
//!    history lists every message, the webhook got one call per conversation and userauth
//!    counts the tokens the agent charges. Then every database is read (see `databases.rs`).
//! 3. With nothing restarted, a third conversation starts and is notified. Notification is
//!    stopped (SIGTERM), the agent sends every event it handed to other services again (what its
//!    relay does for a broker that lost them), and notification starts again on its database: it
//!    must see the copies as duplicates, through its inbox, and notify nobody twice; userauth
//!    must count no token twice. The databases are read again, and every process must exit 0 on
//!    SIGTERM.
//!
//! Waits poll with a bound ([`PATIENCE`]) that only a failure reaches; nothing is judged by how
//! long it took. A failure says what was expected, what was seen, and ends with the log tails of
//! the processes concerned.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use smartflow_storage::outbox::OutboxTable;
use tokio::time::Instant;

use super::api::Api;
use super::databases::ServiceDatabases;
use super::expected::{Expected, Problems, Service};
use super::webhook::FakeWebhook;
use super::Settings;
use crate::backends::BackendArg;
use crate::processes::{log_tail, BrokerProcess, ServiceProcess};

/// Bound on every wait; reached only when something is wrong.
const PATIENCE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// Partitions of each topic the run creates.
const PARTITIONS: i32 = 3;
/// Log lines shown with a failure, per process.
const TAIL_LINES: usize = 30;
const PASSWORD: &str = "correct-horse-42";

/// The text of a conversation's notification names it so (`Conversation ID: first message
/// from USER`); the colon keeps `-1` from matching `-10`.
fn notification_mention(conversation: &str) -> String {
    format!("Conversation {conversation}:")
}

/// What one poll of a wait found.
enum Check {
    Met,
    /// Not yet; what was seen.
    NotYet(String),
    /// Wrong in a way waiting cannot mend (a second notification, usage over the sum).
    Failed(String),
}

/// Polls `probe` until it is met (Ok), it fails, or [`PATIENCE`] runs out (Err: what was seen).
async fn poll<F, Fut>(mut probe: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Check>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Check::Met => return Ok(()),
            Check::Failed(seen) => return Err(seen),
            Check::NotYet(seen) if Instant::now() >= deadline => {
                return Err(format!("{seen} (still so after {PATIENCE:?})"))
            }
            Check::NotYet(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// The three service processes of one run.
struct Services {
    processes: Vec<(Service, ServiceProcess)>,
}

impl Services {
    fn get(&mut self, service: Service) -> &mut ServiceProcess {
        let (_, process) = self
            .processes
            .iter_mut()
            .find(|(s, _)| *s == service)
            .expect("every service has a process");
        process
    }

    /// An error saying what went wrong, with the log tails of `concerned` (and whether each is
    /// still running).
    fn failure(&mut self, what: &str, concerned: &[Service]) -> anyhow::Error {
        let mut text = what.to_owned();
        for &service in concerned {
            let process = self.get(service);
            let state = match process.check_alive() {
                Ok(()) if process.is_running() => "running".to_owned(),
                Ok(()) => "stopped".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            text.push_str(&format!(
                "\n--- {} ({state}), last {TAIL_LINES} lines of {} ---\n{}",
                service.name(),
                process.log().display(),
                log_tail(process.log(), TAIL_LINES)
            ));
        }
        anyhow!(text)
    }

    /// A problem list as one error, with the logs of the services it names.
    fn judge(&mut self, when: &str, problems: Problems) -> Result<()> {
        if problems.is_empty() {
            return Ok(());
        }
        let mut concerned: Vec<Service> = Vec::new();
        for (service, _) in &problems {
            if !concerned.contains(service) {
                concerned.push(*service);
            }
        }
        let listed: Vec<String> = problems.iter().map(|(_, p)| format!("- {p}")).collect();
        Err(self.failure(&format!("{when}:\n{}", listed.join("\n")), &concerned))
    }

    /// Waits until `probe` is met; else fails with `expectation`, what was seen, and the log
    /// tails of `concerned`.
    async fn wait_for<F, Fut>(
        &mut self,
        expectation: &str,
        concerned: &[Service],
        probe: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Check>,
    {
        poll(probe)
            .await
            .map_err(|seen| self.failure(&format!("{expectation}; saw {seen}"), concerned))
    }

    /// SIGTERM; it must exit by itself with status 0.
    async fn stop(&mut self, service: Service) -> Result<()> {
        let ended = self.get(service).terminate().await?;
        if ended.is_clean() {
            println!("  {} stopped: {ended}", service.name());
            return Ok(());
        }
        Err(self.failure(
            &format!(
                "{} on SIGTERM: expected exit status 0, it {ended}",
                service.name()
            ),
            &[service],
        ))
    }
}

/// Creates the databases, runs the scenario, and drops them (unless kept), whatever happened.
pub async fn run(settings: &Settings, backend: BackendArg) -> Result<()> {
    let dbs = ServiceDatabases::create(backend).await;
    for service in Service::ALL {
        println!("  {} database: {}", service.name(), dbs.describe(service));
    }
    let result = drive(settings, backend, &dbs).await;
    dbs.cleanup(settings.keep).await;
    result
}

async fn drive(settings: &Settings, backend: BackendArg, dbs: &ServiceDatabases) -> Result<()> {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let dir = settings.run_dir.join(backend.key());
    std::fs::create_dir_all(&dir)?;
    let broker = BrokerProcess::start(&settings.bin_dir.join("smartflow-broker"), &dir).await?;
    let agent_topic = format!("separate-agent-{tag}");
    let notification_topic = format!("separate-notification-{tag}");
    for topic in [&agent_topic, &notification_topic] {
        broker.create_topic(topic, PARTITIONS).await?;
    }
    let webhook = FakeWebhook::start().await?;
    println!(
        "  broker {}, topics {agent_topic} and {notification_topic}, webhook {}",
        broker.bootstrap_servers,
        webhook.url()
    );
    let topics = [agent_topic.as_str(), notification_topic.as_str()];
    let mut services = start_services(settings, &dir, dbs, &broker, &webhook, topics).await?;
    let api = Api::new(
        services.get(Service::Userauth).base_url(),
        services.get(Service::Agent).base_url(),
        services.get(Service::Notification).base_url(),
    )?;
    let outcome = scenario(&mut services, &api, &webhook, dbs, &tag).await;
    // On failure the processes die with their handles; on success they have already stopped.
    drop(broker);
    outcome
}

/// The service credential the run reads notification's `/metrics` with.
pub const OPERATOR_CREDENTIAL: &str = "separate-databases-operator-credential-0123";
/// The one the agent checks tokens at userauth with.
const AGENT_CREDENTIAL: &str = "separate-databases-agent-credential-0123456";
/// Userauth's signing key for the run (PKCS#8, base64; made with `openssl genpkey -algorithm
/// ed25519`) and its public key (`openssl pkey -pubout`), which the agent verifies tokens with.
const USERAUTH_SIGNING_KEY: &str =
    "MC4CAQAwBQYDK2VwBCIEIKkDZ20quBLB0XNDtB+xIQhZWyxy7XgOZIwQacV0iyTy";
const USERAUTH_PUBLIC_KEY: &str = "MCowBQYDK2VwAyEADOzUJXUxYKVTvwBFX/LJszVjjW8/+qNJiwVWpz9uDxo=";

/// Starts userauth, the agent and notification, each on its own database; every service
/// accepts the operator's and the agent's credentials.
async fn start_services(
    settings: &Settings,
    dir: &Path,
    dbs: &ServiceDatabases,
    broker: &BrokerProcess,
    webhook: &FakeWebhook,
    [agent_topic, notification_topic]: [&str; 2],
) -> Result<Services> {
    let shared: Vec<(String, String)> = [
        ("SMARTFLOW_KAFKA_BROKERS", broker.bootstrap_servers.as_str()),
        ("SMARTFLOW_KAFKA_PARTITIONS", "3"),
        ("SMARTFLOW_TOPIC", agent_topic),
        ("SMARTFLOW_AGENT_TOPIC", agent_topic),
        ("SMARTFLOW_NOTIFICATION_TOPIC", notification_topic),
        ("SMARTFLOW_SHUTDOWN_GRACE_SECS", "10"),
        ("RUST_LOG", "info"),
        (
            "SMARTFLOW_SERVICE_TOKENS",
            format!("operator={OPERATOR_CREDENTIAL},agent={AGENT_CREDENTIAL}").as_str(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut processes = Vec::new();
    let mut userauth_url = String::new();
    for service in Service::ALL {
        let mut env = shared.clone();
        env.extend(dbs.env(service));
        let own: Vec<(&str, String)> = match service {
            // Cheap password hashing: the run logs in once and checks no password strength.
            Service::Userauth => vec![
                ("SMARTFLOW_PASSWORD_HASH_MEMORY_KIB", "1024".into()),
                ("SMARTFLOW_PASSWORD_HASH_ITERATIONS", "1".into()),
                (
                    "SMARTFLOW_USERAUTH_SIGNING_KEY",
                    USERAUTH_SIGNING_KEY.into(),
                ),
            ],
            Service::Agent => vec![
                ("SMARTFLOW_USERAUTH_URL", userauth_url.clone()),
                ("SMARTFLOW_USERAUTH_TOKEN", AGENT_CREDENTIAL.into()),
                ("SMARTFLOW_USERAUTH_PUBLIC_KEY", USERAUTH_PUBLIC_KEY.into()),
            ],
            Service::Notification => vec![
                ("SMARTFLOW_FEISHU_WEBHOOK_URL", webhook.url()),
                ("SMARTFLOW_FEISHU_ALLOWED_TARGETS", webhook.allowed_prefix()),
            ],
        };
        env.extend(own.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let mut process = ServiceProcess::new(
            service.name(),
            &settings.bin_dir.join(service.binary()),
            dir,
            env,
            Duration::from_secs(10),
        )?;
        process.start().await?;
        println!(
            "  {} up on {} (log {})",
            service.name(),
            process.addr,
            process.log().display()
        );
        if service == Service::Userauth {
            userauth_url = process.base_url();
        }
        processes.push((service, process));
    }
    Ok(Services { processes })
}

async fn scenario(
    services: &mut Services,
    api: &Api,
    webhook: &FakeWebhook,
    dbs: &ServiceDatabases,
    tag: &str,
) -> Result<()> {
    // Phase 1: two conversations, everything through HTTP.
    let email = format!("separate-{tag}@example.com");
    let (user_id, token) = match api.register_and_login(&email, PASSWORD).await {
        Ok(user) => user,
        Err(e) => return Err(services.failure(&format!("{e:#}"), &[Service::Userauth])),
    };
    let mut session = Session {
        services,
        api,
        webhook,
        token,
        expected: Expected {
            user_id,
            conversations: Vec::new(),
        },
    };
    let conversation = |n: usize| format!("separate-{tag}-{n}");
    session
        .post(
            &conversation(1),
            "Hello from a service with a database of its own",
        )
        .await?;
    session
        .post(&conversation(1), "A second message, which notifies nobody")
        .await?;
    session
        .post(&conversation(2), "Another conversation begins")
        .await?;
    session.await_effects().await?;
    session
        .check_databases(dbs, "after two conversations")
        .await?;
    println!(
        "  phase 1: {} messages in {} conversations stored, charged and notified; each database \
         holds its own service's rows only",
        session.expected.messages(),
        session.expected.conversations.len()
    );

    // Phase 2: nothing restarted; a new conversation is notified. Then notification stops, the
    // agent sends every event it handed to other services again, and notification starts again.
    session
        .post(&conversation(3), "A third conversation, after the others")
        .await?;
    session.await_effects().await?;
    let handed_off = session.send_everything_again(dbs).await?;
    // One more message of the same user: its usage event follows the copies on the user's
    // partition, so once userauth counts it, userauth has seen every copy before it.
    session
        .post(&conversation(3), "Counted after the copies")
        .await?;
    session.await_effects().await?;
    let Session {
        services,
        webhook,
        expected,
        ..
    } = &mut session;
    let calls = webhook.calls();
    if calls.len() != expected.conversations.len() {
        let what = format!(
            "the webhook: expected {} calls in all (one per conversation), got {}: {calls:?}",
            expected.conversations.len(),
            calls.len()
        );
        return Err(services.failure(&what, &[Service::Notification]));
    }
    session
        .check_databases(
            dbs,
            "after notification's restart and every event sent again",
        )
        .await?;
    println!(
        "  phase 2: a third conversation notified once; {handed_off} events sent again while \
         notification restarted changed nothing"
    );
    for &service in Service::ALL.iter().rev() {
        session.services.stop(service).await?;
    }
    Ok(())
}

/// One user's session with the running services, and what it expects of them.
struct Session<'a> {
    services: &'a mut Services,
    api: &'a Api,
    webhook: &'a FakeWebhook,
    token: String,
    expected: Expected,
}

impl Session<'_> {
    /// Posts one message, which the agent must accept, and notes it in `expected`.
    async fn post(&mut self, conversation: &str, content: &str) -> Result<()> {
        if let Err(e) = self
            .api
            .post_message(&self.token, conversation, content)
            .await
        {
            let concerned = [Service::Agent, Service::Userauth];
            return Err(self.services.failure(&format!("{e:#}"), &concerned));
        }
        self.expected.add(conversation, content);
        Ok(())
    }

    /// Waits until the agent's history lists every message, the webhook got exactly one call
    /// per conversation, and userauth counts exactly the tokens the agent charges.
    async fn await_effects(&mut self) -> Result<()> {
        let Session {
            services,
            api,
            webhook,
            token,
            expected,
        } = self;
        let (api, webhook, token) = (*api, *webhook, token.as_str());
        for conversation in &expected.conversations {
            let (id, want) = (conversation.id.as_str(), &conversation.contents);
            let expectation = format!("the agent's history of {id}: expected {want:?}");
            let history = || async move {
                match api.history(token, id).await {
                    Ok(history) if &history == want => Check::Met,
                    Ok(history) => Check::NotYet(format!("{history:?}")),
                    Err(e) => Check::NotYet(format!("{e:#}")),
                }
            };
            services
                .wait_for(&expectation, &[Service::Agent], history)
                .await?;
        }
        for conversation in &expected.conversations {
            let mention = notification_mention(&conversation.id);
            let mention = mention.as_str();
            let expectation = format!(
                "the webhook: expected exactly one call for {}",
                conversation.id
            );
            let one_call = || async move {
                match webhook.calls_mentioning(mention) {
                    1 => Check::Met,
                    0 => Check::NotYet("no call".to_owned()),
                    n => Check::Failed(format!("{n} calls: {:?}", webhook.calls())),
                }
            };
            let concerned = [Service::Notification, Service::Agent];
            services
                .wait_for(&expectation, &concerned, one_call)
                .await?;
        }
        let want = expected.tokens();
        let expectation = format!(
            "userauth's token usage: expected {want} (what the agent charges for {} messages)",
            expected.messages()
        );
        let usage = || async move {
            match api.token_usage(token).await {
                Ok(usage) if usage == want => Check::Met,
                Ok(usage) if usage > want => Check::Failed(format!("{usage} tokens")),
                Ok(usage) => Check::NotYet(format!("{usage} tokens")),
                Err(e) => Check::NotYet(format!("{e:#}")),
            }
        };
        let concerned = [Service::Userauth, Service::Agent];
        services.wait_for(&expectation, &concerned, usage).await
    }

    /// Reads the three databases; any difference from `expected` fails the run.
    async fn check_databases(&mut self, dbs: &ServiceDatabases, when: &str) -> Result<()> {
        let mut problems = Problems::new();
        dbs.check(&self.expected, &mut problems).await?;
        let when = format!("{when}, the databases are not as expected");
        self.services.judge(&when, problems)
    }

    /// Stops notification; has the agent send again every row it handed to other services (the
    /// usage events and the notification requests: what its relay does for a broker that lost
    /// them) and waits until it has; starts notification again on its database and waits until
    /// it has counted the requests' copies as duplicates. Returns how many rows were sent again.
    async fn send_everything_again(&mut self, dbs: &ServiceDatabases) -> Result<u64> {
        let services = &mut *self.services;
        services.stop(Service::Notification).await?;
        let outbox = OutboxTable::new(smartflow_agent_contracts::OUTBOX_TABLE)?;
        let agent_db = &dbs.agent.db;
        let sent_again = outbox.requeue_all_published(agent_db).await?;
        let handed_off = (self.expected.messages() + self.expected.conversations.len()) as u64;
        if sent_again != handed_off {
            let what = format!(
                "agent_outbox: expected {handed_off} `published` rows (usage events and \
                 notification requests) to send again, found {sent_again}"
            );
            return Err(services.failure(&what, &[Service::Agent]));
        }
        let outbox = &outbox;
        let resent = || async move {
            match outbox.stats(agent_db).await {
                Ok(stats) if stats.pending == 0 => Check::Met,
                Ok(stats) => Check::NotYet(format!("{stats:?}")),
                Err(e) => Check::NotYet(format!("reading agent_outbox: {e}")),
            }
        };
        let expectation = format!(
            "the agent's relay to send the {handed_off} rows again: expected no `pending` row \
             in agent_outbox"
        );
        services
            .wait_for(&expectation, &[Service::Agent], resent)
            .await?;

        services.get(Service::Notification).start().await?;
        let (api, requests) = (self.api, self.expected.conversations.len() as u64);
        let counted = || async move {
            match api.notification_counter("duplicates").await {
                Ok(n) if n >= requests => Check::Met,
                Ok(n) => Check::NotYet(format!("{n} duplicates")),
                Err(e) => Check::NotYet(format!("{e:#}")),
            }
        };
        let expectation = format!(
            "the restarted notification to count the {requests} requests sent again as duplicates"
        );
        let concerned = [Service::Notification, Service::Agent];
        services.wait_for(&expectation, &concerned, counted).await?;
        Ok(handed_off)
    }
}
