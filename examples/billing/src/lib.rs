//! Billing: an example of a service built on smartflow from outside its apps, in a handful of
//! files and none of smartflow's. It depends only on the public library crates and on the
//! agent's contracts, keeps its own table (`billing_invoices`), outbox (`billing_outbox`) and
//! inbox (`billing_inbox`) in its own database, consumes the agent's
//! `agent.token.usage.recorded` through that inbox, and publishes `billing.invoice.paid` onto
//! its own topic from its own outbox.
//!
//! - `lib.rs` (this file): its event, its route, its configuration and its start-up.
//! - `invoices.rs`: its table (a sea-orm entity and the migration, which also takes the bus's
//!   tables with one call each) and the handler.
//! - `m20261201_000002_outbox_redrive_history.rs`: the outbox's redrive history, which
//!   `smartflow outbox redrive --table billing_outbox` records redrives in.
//! - `main.rs`: the binary.

pub mod invoices;
mod m20261201_000002_outbox_redrive_history;
mod m20261203_000001_outbox_commit_cursor;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use clap::Parser;
use futures::FutureExt as _;
use serde::{Deserialize, Serialize};
use smartflow_agent_contracts::TokenUsageRecorded;
use smartflow_bus::{HandlerRegistry, PublishConfig};
use smartflow_domain::{DomainError, EventContract, RouteRegistry, ServiceRoute};
use smartflow_service::{
    ConsumerPlan, Running, ServicePlan, ServiceSettings, ServiceStart, LOOPBACK_ANY_PORT,
};

/// The service's name: its route, the source of its events, its inbox consumer.
pub const SERVICE: &str = "billing";
pub const OUTBOX_TABLE: &str = "billing_outbox";
pub const INBOX_TABLE: &str = "billing_inbox";
pub const DEFAULT_TOPIC: &str = "smartflow.billing.events";
pub const CONSUMER_GROUP: &str = "smartflow-billing";
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8083);

/// An invoice was written and paid from the user's prepaid balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoicePaid {
    pub invoice_id: i64,
    pub user_id: String,
    pub amount_cents: i64,
}

impl EventContract for InvoicePaid {
    const EVENT_TYPE: &'static str = "billing.invoice.paid";
}

/// Billing's route, with every event it publishes.
pub fn routes(topic: &str) -> Result<RouteRegistry, DomainError> {
    RouteRegistry::builder()
        .service(ServiceRoute::new(
            SERVICE,
            OUTBOX_TABLE,
            topic,
            CONSUMER_GROUP,
        )?)
        .event(InvoicePaid::EVENT_TYPE, SERVICE)
        .build()
}

/// Billing's configuration: its own settings, and the ones every smartflow service takes.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "smartflow-billing",
    version,
    about = "An example smartflow service"
)]
pub struct BillingConfig {
    /// Address the HTTP API (`/healthz`, `/metrics`) listens on.
    #[arg(long, env = "SMARTFLOW_HTTP_ADDR", default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    /// Where `billing.invoice.paid` goes.
    #[arg(long, env = "SMARTFLOW_TOPIC", default_value = DEFAULT_TOPIC)]
    pub topic: String,
    /// The agent's topic, where its usage events arrive.
    #[arg(long, env = "SMARTFLOW_AGENT_TOPIC", default_value = smartflow_agent_contracts::DEFAULT_TOPIC)]
    pub agent_topic: String,
    #[command(flatten)]
    pub service: ServiceSettings,
}

impl BillingConfig {
    /// The defaults on `database_url`, an OS-chosen HTTP port and the embedded broker.
    pub fn embedded(database_url: impl Into<String>) -> Self {
        Self {
            http_addr: LOOPBACK_ANY_PORT,
            topic: DEFAULT_TOPIC.to_owned(),
            agent_topic: smartflow_agent_contracts::DEFAULT_TOPIC.to_owned(),
            service: ServiceSettings::on_database(database_url),
        }
    }
}

pub struct Billing;

impl Billing {
    /// Starts billing on the service skeleton: its database and migrations, the broker with
    /// both topics, its bus and relay, the inbox consumer of the agent's usage events.
    pub async fn start(config: BillingConfig) -> anyhow::Result<Running<()>> {
        let routes =
            routes(&config.topic).with_context(|| format!("SMARTFLOW_TOPIC `{}`", config.topic))?;
        let plan = ServicePlan::new(
            SERVICE,
            &config.service,
            config.http_addr,
            &config.agent_topic,
        )
        .also_topic(&config.topic)
        .with_outbox(routes, PublishConfig::default());
        let mut start = ServiceStart::begin(plan, |db| {
            smartflow_migrations::run_migrator::<invoices::Migrator>(db).boxed()
        })
        .await?;
        let bus = start.bus().context("billing has an outbox")?.clone();
        let handlers = HandlerRegistry::builder()
            .on::<TokenUsageRecorded, _>(invoices::ChargeUsage { bus })
            .build()?;
        start.consume(
            ConsumerPlan::inbox(SERVICE, CONSUMER_GROUP, &config.agent_topic, handlers)
                .with_inbox(INBOX_TABLE)
                .only_handled_event_types(),
        )?;
        start.serve(axum::Router::new(), ()).await
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_setting_is_in_the_operations_guide() {
        smartflow_testkit::settings_doc::check_operations_guide(
            env!("CARGO_MANIFEST_DIR"),
            "billing",
            &BillingConfig::command(),
            Some(&ServiceSettings::command()),
        );
    }
}
