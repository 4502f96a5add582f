//! Starting the three services in the order their dependencies need, and stopping them in the
//! reverse one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context as _;
use smartflow_agent::{Agent, AgentConfig, RunningAgent};
use smartflow_kafka::EmbeddedBroker;
use smartflow_notification::{Notification, NotificationConfig, RunningNotification};
use smartflow_storage::outbox::OutboxTable;
use smartflow_storage::DatabaseConnection;
use smartflow_userauth::{RunningUserauth, Userauth};

use crate::config::AllConfig;

/// Starts userauth, the agent and the notification service on one database and one Kafka.
///
/// The order: the Kafka cluster first (the configured one, or an embedded broker started here
/// with the agent's and the notification service's topics), so the agent and userauth share it
/// (userauth consumes the agent's token-usage events); then userauth, whose bound address the
/// agent needs to check tokens; then the agent; then the notification service, which only needs
/// the database the agent writes its requests into. If a step fails, what already started is
/// shut down and the error names the step.
pub async fn start_all(config: AllConfig) -> anyhow::Result<RunningAll> {
    tracing::info!(?config, "starting smartflow: userauth, agent, notification");
    let (kafka_brokers, broker) = match config.brokers() {
        Some(brokers) => (brokers.to_owned(), None),
        None => {
            let broker = start_embedded_broker().await?;
            (broker.bootstrap_servers(), Some(broker))
        }
    };

    let userauth = match Userauth::start(config.userauth(&kafka_brokers)).await {
        Ok(userauth) => userauth,
        Err(e) => {
            stop(None, None, None, broker).await;
            return Err(e.context(format!(
                "starting userauth (SMARTFLOW_USERAUTH_ADDR {})",
                config.userauth_addr
            )));
        }
    };
    if broker.is_some() {
        // Userauth has migrated the database and relays nothing, so the outboxes are still
        // untouched by this run.
        if let Err(e) = republish_to_new_broker(userauth.db()).await {
            stop(None, None, Some(userauth), broker).await;
            return Err(e);
        }
    }
    let userauth_url = local_url(userauth.local_addr());
    let agent = match Agent::start(config.agent(&kafka_brokers, userauth_url)).await {
        Ok(agent) => agent,
        Err(e) => {
            stop(None, None, Some(userauth), broker).await;
            return Err(e.context(format!(
                "starting the agent (SMARTFLOW_AGENT_ADDR {})",
                config.agent_addr
            )));
        }
    };
    let notification = match Notification::start(config.notification(&kafka_brokers)).await {
        Ok(notification) => notification,
        Err(e) => {
            stop(None, Some(agent), Some(userauth), broker).await;
            return Err(e.context(format!(
                "starting the notification service (SMARTFLOW_NOTIFICATION_ADDR {})",
                config.notification_addr
            )));
        }
    };

    tracing::info!(
        url = %userauth.base_url(),
        "userauth ready: POST /v1/auth/register, /v1/auth/login"
    );
    tracing::info!(
        url = %agent.base_url(),
        "agent ready: POST/GET /v1/conversations/{{id}}/messages"
    );
    tracing::info!(
        url = %notification.base_url(),
        "notification ready: GET /v1/notifications?channel=&dedupe_key="
    );
    tracing::info!(
        brokers = %kafka_brokers,
        embedded_broker = broker.is_some(),
        "smartflow started"
    );
    Ok(RunningAll {
        userauth,
        agent,
        notification,
        kafka_brokers,
        broker,
    })
}

/// The three running services. Stop them with [`RunningAll::shutdown`]; merely dropping this
/// cancels their background work without waiting for it.
pub struct RunningAll {
    userauth: RunningUserauth,
    agent: RunningAgent,
    notification: RunningNotification,
    kafka_brokers: String,
    // Last, so that on a plain drop the services' clients go before the broker they talk to.
    broker: Option<EmbeddedBroker>,
}

impl RunningAll {
    pub fn agent(&self) -> &RunningAgent {
        &self.agent
    }

    pub fn notification(&self) -> &RunningNotification {
        &self.notification
    }

    pub fn userauth(&self) -> &RunningUserauth {
        &self.userauth
    }

    /// The bootstrap servers all three use: the configured ones, or the embedded broker's.
    pub fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
    }

    /// The embedded broker, when no brokers were configured.
    pub fn embedded_broker(&self) -> Option<&EmbeddedBroker> {
        self.broker.as_ref()
    }

    /// Resolves once any service is stopping (one of its tasks failed, already logged), with
    /// that service's name. The others keep running until [`RunningAll::shutdown`].
    pub async fn stopped(&self) -> &'static str {
        tokio::select! {
            _ = self.agent.stopped() => "agent",
            _ = self.notification.stopped() => "notification",
            _ = self.userauth.stopped() => "userauth",
        }
    }

    /// Stops every service gracefully, in the reverse of the start order, then the embedded
    /// broker.
    pub async fn shutdown(self) {
        let RunningAll {
            userauth,
            agent,
            notification,
            broker,
            ..
        } = self;
        stop(Some(notification), Some(agent), Some(userauth), broker).await;
        tracing::info!("smartflow stopped");
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

/// Stops what has started, latest first: the notification service, the agent (which calls
/// userauth on every request), userauth, then the broker all of them talk to.
async fn stop(
    notification: Option<RunningNotification>,
    agent: Option<RunningAgent>,
    userauth: Option<RunningUserauth>,
    broker: Option<EmbeddedBroker>,
) {
    if let Some(notification) = notification {
        notification.shutdown().await;
    }
    if let Some(agent) = agent {
        agent.shutdown().await;
    }
    if let Some(userauth) = userauth {
        userauth.shutdown().await;
    }
    if let Some(broker) = broker {
        // Dropping it joins the broker's thread, which stays off the runtime's threads.
        if let Err(e) = tokio::task::spawn_blocking(move || drop(broker)).await {
            tracing::warn!(error = %e, "stopping the embedded Kafka broker failed");
        }
    }
}

/// Starts an in-process broker with the agent's and the notification service's topics. The
/// services are then given its address like any other cluster's, so one broker carries every
/// topic; its mock cluster cannot serve CreateTopics, so the topics are made here first and the
/// services' own topic check finds them.
async fn start_embedded_broker() -> anyhow::Result<EmbeddedBroker> {
    // Starting it waits for its thread to come up; that wait stays off the runtime.
    let broker = tokio::task::spawn_blocking(|| EmbeddedBroker::start(1))
        .await
        .context("starting the embedded Kafka broker")?
        .context("starting the embedded Kafka broker")?;
    let agent = AgentConfig::default();
    let notification = NotificationConfig::default();
    for (topic, partitions) in [
        (agent.topic.as_str(), agent.kafka_partitions),
        (notification.topic.as_str(), notification.kafka_partitions),
    ] {
        broker
            .create_topic(topic, partitions)
            .with_context(|| format!("creating topic `{topic}` on the embedded broker"))?;
    }
    tracing::info!(bootstrap = %broker.bootstrap_servers(), "embedded Kafka broker started");
    Ok(broker)
}

/// The embedded broker is new and empty: what an earlier run published but did not get consumed
/// exists only in the outboxes now, so it goes back to `pending` for the relays to send again.
/// (A service that starts its own embedded broker does this itself; here the services are told
/// the broker is an ordinary cluster, so it is done for them.)
async fn republish_to_new_broker(db: &DatabaseConnection) -> anyhow::Result<()> {
    for table in [
        smartflow_agent::events::OUTBOX_TABLE,
        smartflow_notification::events::OUTBOX_TABLE,
    ] {
        let moved = OutboxTable::new(table)?
            .requeue_all_published(db)
            .await
            .with_context(|| {
                format!("re-queueing rows of {table} published to an earlier embedded broker")
            })?;
        if moved > 0 {
            tracing::info!(
                table,
                moved,
                "published rows go out again to the new embedded broker"
            );
        }
    }
    Ok(())
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
}
