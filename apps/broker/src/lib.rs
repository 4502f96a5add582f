//! `smartflow-broker`: librdkafka's mock cluster ([`smartflow_kafka::EmbeddedBroker`]) in a
//! process of its own, so services can be killed and restarted while the broker keeps their
//! messages, and several services can share one development broker.
//!
//! Reading starts at `main.rs`: [`BrokerConfig`] is parsed once, [`run`] starts the cluster,
//! creates the configured topics, serves the [`control`] API and announces readiness through
//! [`ready::ReadyInfo`]. This is a development tool: the cluster keeps everything in memory.

pub mod config;
pub mod control;
pub mod ready;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use smartflow_kafka::EmbeddedBroker;
use tokio::net::TcpListener;

pub use config::{BrokerConfig, TopicSpec};
pub use ready::ReadyInfo;

/// Starts the cluster and the control API, announces readiness, and serves until `stop`
/// resolves; then the control API drains and the cluster is destroyed (its ports are free once
/// this returns). The ready file, if any, is removed on the way out, so a stale one never points
/// at a dead broker.
pub async fn run(
    config: BrokerConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !config.control_addr.ip().is_loopback() {
        anyhow::bail!(
            "SMARTFLOW_BROKER_CONTROL_ADDR {} is not a loopback address: the control API takes no \
             credential, so it listens on loopback only, as the mock cluster's Kafka ports do",
            config.control_addr
        );
    }
    let brokers = config.brokers;
    // Starting the cluster waits for its thread; keep that wait off the runtime's threads.
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(brokers))
        .await
        .context("starting the mock cluster")?
        .context("starting the mock cluster")?;
    let broker = Arc::new(broker);
    for topic in &config.topics {
        broker
            .create_topic(&topic.name, topic.partitions)
            .with_context(|| format!("creating topic `{}`", topic.name))?;
        tracing::info!(topic = %topic.name, partitions = topic.partitions, "topic created");
    }
    let listener = TcpListener::bind(config.control_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on the control address {}",
                config.control_addr
            )
        })?;
    let control_addr = listener
        .local_addr()
        .context("reading the control listener's address")?;
    let info = ReadyInfo {
        bootstrap_servers: broker.bootstrap_servers(),
        control_addr: control_addr.to_string(),
    };
    let router = control::router(control::ControlState::new(broker.clone(), brokers));
    if let Some(path) = &config.ready_file {
        info.write(path)?;
    }
    // The one line on stdout, in the form a shell can `eval` or a compose file can use.
    println!("SMARTFLOW_KAFKA_BROKERS={}", info.bootstrap_servers);
    tracing::info!(
        bootstrap_servers = %info.bootstrap_servers,
        control = %info.control_addr,
        brokers,
        "smartflow-broker ready"
    );
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
        .context("serving the control API");
    if let Some(path) = &config.ready_file {
        ready::remove(path);
    }
    // The last reference: dropping it stops the cluster and joins its thread.
    let broker = Arc::into_inner(broker);
    let _ = tokio::task::spawn_blocking(move || drop(broker)).await;
    served
}
