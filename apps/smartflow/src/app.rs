//! The list of services this process runs, started in the order their dependencies need and
//! stopped in the reverse one (the skeleton's [`ServiceGroup`]).

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context as _};
use smartflow_agent::{Agent, AgentConfig};
use smartflow_kafka::EmbeddedBroker;
use smartflow_notification::{Notification, NotificationConfig};
use smartflow_service::{
    blocking_drop, HostedService, RunningService, Secret, ServiceGroup, ServiceLaunch,
    ServiceSettings, SERVICE_TOKENS_SETTING,
};
use smartflow_userauth::jwt::SigningKey;
use smartflow_userauth::Userauth;

use crate::config::{AllConfig, AGENT_CREDENTIAL};

/// Starts userauth, the agent and the notification service on one database and one Kafka.
///
/// The order: the Kafka cluster first (the configured one, or an embedded broker started here
/// with the agent's and the notification service's topics), so the agent and userauth share it
/// (userauth consumes the agent's token-usage events); then the services of [`launches`]. If
/// one fails, what already started is shut down and the error names the service.
///
/// The service credentials are wired here ([`Wiring`]): a fresh one the agent checks tokens at
/// userauth with, and the operator's (configured, or generated and written to
/// `SMARTFLOW_OPERATOR_TOKEN_FILE`), which every service accepts.
pub async fn start_all(config: AllConfig) -> anyhow::Result<RunningAll> {
    tracing::info!(?config, "starting smartflow: userauth, agent, notification");
    let wiring = Wiring::new(&config)?;
    let (kafka_brokers, broker) = match config.service.brokers() {
        Some(brokers) => (brokers.to_owned(), None),
        None => {
            let broker = start_embedded_broker(&config).await?;
            (broker.bootstrap_servers(), Some(broker))
        }
    };
    // The services are told the embedded broker is an ordinary cluster; `new_broker` has them
    // send again what their outboxes say went to an earlier one.
    let mut service = config.service_on(&kafka_brokers, broker.is_some());
    service.service_tokens = Some(wiring.accepted.clone());
    let services = match ServiceGroup::start(launches(&config, service, &wiring)).await {
        Ok(services) => services,
        Err(e) => {
            if let Some(broker) = broker {
                blocking_drop(broker).await;
            }
            return Err(e);
        }
    };
    for started in services.iter() {
        tracing::info!(
            url = %started.base_url(),
            "{} ready: {}",
            started.name(),
            entry_points(started.name())
        );
    }
    tracing::info!(
        brokers = %kafka_brokers,
        embedded_broker = broker.is_some(),
        "smartflow started"
    );
    Ok(RunningAll {
        services,
        kafka_brokers,
        operator_token: wiring.operator,
        broker,
    })
}

/// The service credentials of the process.
struct Wiring {
    /// What every service accepts (`SMARTFLOW_SERVICE_TOKENS` of each): the operator's and
    /// the agent's.
    accepted: Secret,
    /// The agent's, for userauth's `GET /v1/auth/authorize`; new at every start.
    agent: Secret,
    /// The operator's, when it was generated here.
    operator: Option<Secret>,
    /// Userauth's signing key (configured, or new at every start); the agent verifies tokens
    /// with its public key.
    signing_key: SigningKey,
}

impl Wiring {
    fn new(config: &AllConfig) -> anyhow::Result<Self> {
        if config.service.admin_addr.is_some() {
            bail!(
                "SMARTFLOW_ADMIN_ADDR is for a service's own binary; the all-in-one binary serves \
                 /metrics on each service's address"
            );
        }
        let configured = config
            .service
            .credentials()
            .with_context(|| format!("{SERVICE_TOKENS_SETTING} is not usable"))?;
        if configured.names().contains(&AGENT_CREDENTIAL) {
            bail!(
                "{SERVICE_TOKENS_SETTING} must not name `{AGENT_CREDENTIAL}`: the all-in-one binary \
                 makes the agent's credential itself"
            );
        }
        let signing_key = config.signing.load()?.unwrap_or_else(SigningKey::generate);
        let agent = Secret::random();
        let (operator, operators) = match &config.service.service_tokens {
            Some(list) if !configured.is_empty() => (None, list.expose().to_owned()),
            _ => {
                let operator = Secret::random();
                let entry = format!("operator={}", operator.expose());
                (Some(operator), entry)
            }
        };
        if let (Some(operator), Some(path)) = (&operator, &config.operator_token_file) {
            write_private(path, operator.expose()).with_context(|| {
                format!(
                    "writing the operator credential to SMARTFLOW_OPERATOR_TOKEN_FILE {}",
                    path.display()
                )
            })?;
            tracing::info!(
                file = %path.display(),
                "the operator credential (X-Smartflow-Service-Token for /metrics and \
                 /v1/notifications) is in this file"
            );
        }
        let accepted = Secret::new(format!("{operators},{AGENT_CREDENTIAL}={}", agent.expose()));
        Ok(Self {
            accepted,
            agent,
            operator,
            signing_key,
        })
    }
}

/// Writes `contents` to a new file at `path` that only its owner may read (mode 0600 on Unix),
/// replacing what was there.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}

/// The services in start order: userauth, whose bound address the agent needs to check
/// tokens; the agent; the notification service, which only needs the database the agent writes
/// its requests into. Each start's error names the address setting of the service.
fn launches(config: &AllConfig, service: ServiceSettings, wiring: &Wiring) -> Vec<ServiceLaunch> {
    let userauth = config.userauth(service.clone(), &wiring.signing_key);
    let agent_credential = wiring.agent.clone();
    let userauth_key = wiring.signing_key.public_key().clone();
    let notification = config.notification(service.clone());
    let all = config.clone();
    vec![
        ServiceLaunch::new(
            "userauth",
            format!(
                "starting userauth (SMARTFLOW_USERAUTH_ADDR {})",
                userauth.http_addr
            ),
            move |_: &ServiceGroup| Userauth::start(userauth),
        ),
        ServiceLaunch::new(
            "agent",
            format!(
                "starting the agent (SMARTFLOW_AGENT_ADDR {})",
                all.agent_addr
            ),
            move |started: &ServiceGroup| {
                let userauth_url = started.get("userauth").map(|u| local_url(u.local_addr()));
                async move {
                    let url = userauth_url.context("userauth starts before the agent")?;
                    Agent::start(all.agent(service, url, agent_credential, &userauth_key)).await
                }
            },
        ),
        ServiceLaunch::new(
            "notification",
            format!(
                "starting the notification service (SMARTFLOW_NOTIFICATION_ADDR {})",
                notification.http_addr
            ),
            move |_: &ServiceGroup| Notification::start(notification),
        ),
    ]
}

/// What the walkthrough calls on each service first.
fn entry_points(service: &str) -> &'static str {
    match service {
        "userauth" => "POST /v1/auth/register, /v1/auth/login",
        "agent" => "POST/GET /v1/conversations/{id}/messages",
        "notification" => "GET /v1/notifications?channel=&dedupe_key=",
        _ => "see the README",
    }
}

/// The running services. Stop them with [`RunningAll::shutdown`]; merely dropping this cancels
/// their background work without waiting for it.
pub struct RunningAll {
    services: ServiceGroup,
    kafka_brokers: String,
    operator_token: Option<Secret>,
    // Last, so that on a plain drop the services' clients go before the broker they talk to.
    broker: Option<EmbeddedBroker>,
}

impl RunningAll {
    /// The running service called `name` (`userauth`, `agent`, `notification`).
    pub fn service(&self, name: &str) -> Option<&dyn HostedService> {
        self.services.get(name)
    }

    /// Every running service, in start order.
    pub fn services(&self) -> &ServiceGroup {
        &self.services
    }

    /// The bootstrap servers all of them use: the configured ones, or the embedded broker's.
    pub fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
    }

    /// The operator's service credential, when it was generated at start (no
    /// `SMARTFLOW_SERVICE_TOKENS`).
    pub fn operator_token(&self) -> Option<&Secret> {
        self.operator_token.as_ref()
    }

    /// The embedded broker, when no brokers were configured.
    pub fn embedded_broker(&self) -> Option<&EmbeddedBroker> {
        self.broker.as_ref()
    }

    /// Resolves once any service is stopping (one of its tasks failed, already logged), with
    /// that service's name. The others keep running until [`RunningAll::shutdown`].
    pub async fn stopped(&self) -> &'static str {
        self.services.stopped().await
    }

    /// Stops every service gracefully, in the reverse of the start order, then the embedded
    /// broker all of them talk to.
    pub async fn shutdown(self) {
        let RunningAll {
            services, broker, ..
        } = self;
        services.shutdown().await;
        if let Some(broker) = broker {
            blocking_drop(broker).await;
        }
        tracing::info!("smartflow stopped");
    }
}

impl RunningService for RunningAll {
    async fn stopped(&self) {
        let service = RunningAll::stopped(self).await;
        tracing::error!(service, "a service stopped on its own; stopping the others");
    }

    fn shutdown(self) -> impl Future<Output = ()> {
        RunningAll::shutdown(self)
    }
}

/// `http://ADDR` for a client in this process: a listener bound to every interface
/// (`0.0.0.0`, `::`) is called on the loopback address of its family.
fn local_url(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    format!("http://{addr}")
}

/// Starts an in-process broker with the agent's and the notification service's topics. The
/// services are then given its address like any other cluster's, so one broker carries every
/// topic; its mock cluster cannot serve CreateTopics, so the topics are made here first and the
/// services' own topic check finds them.
async fn start_embedded_broker(config: &AllConfig) -> anyhow::Result<EmbeddedBroker> {
    // Starting it waits for its thread to come up; that wait stays off the runtime.
    let broker = tokio::task::spawn_blocking(|| EmbeddedBroker::start(1))
        .await
        .context("starting the embedded Kafka broker")?
        .context("starting the embedded Kafka broker")?;
    // The services run on their default topics here (see `AllConfig`).
    let topics = [
        AgentConfig::default().topic,
        NotificationConfig::default().topic,
    ];
    for topic in &topics {
        broker
            .create_topic(topic, config.service.kafka_partitions)
            .with_context(|| format!("creating topic `{topic}` on the embedded broker"))?;
    }
    tracing::info!(bootstrap = %broker.bootstrap_servers(), "embedded Kafka broker started");
    Ok(broker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_on_every_interface_is_called_on_loopback() {
        let url = |s: &str| local_url(s.parse().unwrap());
        assert_eq!(url("0.0.0.0:8082"), "http://127.0.0.1:8082");
        assert_eq!(url("[::]:8082"), "http://[::1]:8082");
        assert_eq!(url("10.1.2.3:8082"), "http://10.1.2.3:8082");
    }

    #[test]
    fn the_operators_credential_is_configured_or_made_and_the_agents_always_made() {
        let own = "an-operators-own-credential-0123456789ab";
        let mut config = AllConfig::embedded("sqlite::memory:");
        config.service.service_tokens = Some(Secret::new(format!("ops={own}")));
        let wiring = Wiring::new(&config).unwrap();
        assert!(wiring.operator.is_none());
        let accepted =
            smartflow_service::ServiceCredentials::parse(wiring.accepted.expose()).unwrap();
        assert_eq!(accepted.names(), ["ops", "agent"]);
        assert_eq!(accepted.identify(own.as_bytes()).unwrap().name(), "ops");
        let agent = accepted.identify(wiring.agent.expose().as_bytes()).unwrap();
        assert_eq!(agent.name(), "agent");

        let made = Wiring::new(&AllConfig::embedded("sqlite::memory:")).unwrap();
        let operator = made.operator.expect("made when none is configured");
        let accepted =
            smartflow_service::ServiceCredentials::parse(made.accepted.expose()).unwrap();
        assert_eq!(
            accepted
                .identify(operator.expose().as_bytes())
                .unwrap()
                .name(),
            "operator"
        );
        assert_ne!(
            made.agent, wiring.agent,
            "the agent's is new at every start"
        );
    }

    #[test]
    fn the_signing_key_is_configured_or_made_per_start_and_a_bad_one_named() {
        let key = SigningKey::generate();
        let mut config = AllConfig::embedded("sqlite::memory:");
        config.signing.signing_key = Some(Secret::new(key.to_pem()));
        let wiring = Wiring::new(&config).unwrap();
        assert_eq!(wiring.signing_key.public_key(), key.public_key());

        let dir = std::env::temp_dir().join(format!("smartflow-key-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, key.to_pem()).unwrap();
        let mut config = AllConfig::embedded("sqlite::memory:");
        config.signing.signing_key_file = Some(dir.clone());
        assert_eq!(
            Wiring::new(&config).unwrap().signing_key.public_key(),
            key.public_key()
        );
        std::fs::remove_file(&dir).unwrap();
        let err = format!("{:#}", Wiring::new(&config).err().unwrap());
        assert!(
            err.contains("reading SMARTFLOW_USERAUTH_SIGNING_KEY_FILE"),
            "{err}"
        );

        let plain = AllConfig::embedded("sqlite::memory:");
        let (a, b) = (Wiring::new(&plain).unwrap(), Wiring::new(&plain).unwrap());
        assert_ne!(a.signing_key.public_key(), b.signing_key.public_key());

        let mut config = AllConfig::embedded("sqlite::memory:");
        config.signing.signing_key = Some(Secret::new("a-password-not-a-key-s3cret"));
        let err = format!("{:#}", Wiring::new(&config).err().unwrap());
        assert!(
            err.contains("SMARTFLOW_USERAUTH_SIGNING_KEY is not usable"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn the_services_start_userauth_first_and_notification_last() {
        let config = AllConfig::embedded("sqlite::memory:");
        let wiring = Wiring::new(&config).unwrap();
        let names: Vec<&str> = launches(&config, config.service.clone(), &wiring)
            .iter()
            .map(ServiceLaunch::name)
            .collect();
        assert_eq!(names, ["userauth", "agent", "notification"]);
    }
}
