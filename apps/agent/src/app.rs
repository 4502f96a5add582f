//! Start-up: what is the agent's own on top of the service skeleton (its routes and limits, its
//! handlers, the userauth client, its HTTP API). The skeleton connects and migrates the
//! database, reaches (or starts) the broker, and runs the relay, the consumer and the HTTP API.

use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::FutureExt as _;
use sea_orm::{ConnectionTrait, DbBackend};
use smartflow_bus::PublishConfig;
use smartflow_service::{ConsumerPlan, Running, ServicePlan, ServiceStart};
use smartflow_userauth_contracts::{AccessTokenVerifier, PublicKey, UserauthClient};

use crate::config::AgentConfig;
use crate::events;
use crate::handlers;
use crate::http::{self, ApiState};

/// How long the agent waits for userauth's verdict on a token.
const USERAUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most characters of content a MySQL/MariaDB `TEXT` column (65,535 bytes) is sure to hold,
/// at four bytes per character.
const MYSQL_TEXT_MAX_CHARS: usize = 65_535 / 4;

/// The agent service. [`Agent::start`] brings it up in this process; `main` is a thin wrapper
/// around it, and tests and benchmarks call it directly.
pub struct Agent;

/// A started agent (see [`Running`]): stop it with `shutdown`.
pub type RunningAgent = Running<()>;

impl Agent {
    /// Starts the agent in the skeleton's order; each step fails with a clear message before
    /// anything runs in the background.
    pub async fn start(config: AgentConfig) -> anyhow::Result<RunningAgent> {
        tracing::info!(?config, "starting the agent");
        if config.max_content_chars == 0 {
            bail!("SMARTFLOW_MAX_CONTENT_CHARS must be at least 1");
        }
        let routes = events::routes(&config.topic, &config.notification_topic)
            .with_context(|| format!("SMARTFLOW_TOPIC `{}` is not a usable topic", config.topic))?;
        let route = events::route(&config.topic)?;

        let plan = ServicePlan::new("agent", &config.service, config.http_addr, &config.topic)
            .with_outbox(
                routes,
                PublishConfig {
                    max_payload_bytes: config.max_payload_bytes,
                    ..PublishConfig::default()
                },
            );
        let mut start = ServiceStart::begin(plan, |db| {
            smartflow_migrations::run_migrator::<smartflow_migrations::agent::Migrator>(db).boxed()
        })
        .await?;
        if start.db().get_database_backend() == DbBackend::MySql
            && config.max_content_chars > MYSQL_TEXT_MAX_CHARS
        {
            bail!(
                "SMARTFLOW_MAX_CONTENT_CHARS={} is more than the MySQL chat history column holds \
                 ({MYSQL_TEXT_MAX_CHARS} characters)",
                config.max_content_chars
            );
        }
        let bus = start
            .bus()
            .context("the agent's bus was not built")?
            .clone();
        // The agent's consumer marks only the events it handles itself; its other events (token
        // usage, notification requests) are for other services and end `published`.
        let handlers = handlers::registry(bus.clone()).context("registering the event handlers")?;
        start.consume(ConsumerPlan::own_route(route, handlers).only_handled_event_types())?;

        let auth = userauth_client(&config)?;
        let routes = http::router(ApiState {
            db: start.db().clone(),
            bus,
            max_content_chars: config.max_content_chars,
            auth,
            credentials: start.credentials().clone(),
        });
        start.serve(routes, ()).await
    }
}

/// The userauth client the settings ask for: none without SMARTFLOW_USERAUTH_URL (local
/// development, with a warning), else one that verifies tokens with the configured public key
/// and presents the configured credential. A missing or unusable setting fails start-up by name.
fn userauth_client(config: &AgentConfig) -> anyhow::Result<Option<UserauthClient>> {
    let Some(url) = &config.userauth_url else {
        if config.userauth_token.is_some() || config.userauth_public_key.is_some() {
            bail!(
                "SMARTFLOW_USERAUTH_TOKEN or SMARTFLOW_USERAUTH_PUBLIC_KEY is set without \
                 SMARTFLOW_USERAUTH_URL; set all three or none"
            );
        }
        tracing::warn!(
            "SMARTFLOW_USERAUTH_URL is not set: requests are not authenticated and anyone may \
             post as any user; set it outside local development"
        );
        return Ok(None);
    };
    let Some(token) = &config.userauth_token else {
        bail!(
            "SMARTFLOW_USERAUTH_URL is set but SMARTFLOW_USERAUTH_TOKEN is not: userauth answers \
             the agent's token checks only for a service credential"
        );
    };
    let Some(public_key) = &config.userauth_public_key else {
        bail!(
            "SMARTFLOW_USERAUTH_URL is set but SMARTFLOW_USERAUTH_PUBLIC_KEY is not: the agent \
             verifies access tokens itself with userauth's public key"
        );
    };
    let key = PublicKey::parse(public_key)
        .map_err(|e| anyhow::anyhow!("SMARTFLOW_USERAUTH_PUBLIC_KEY is not usable: {e}"))?;
    tracing::info!(
        kid = key.kid(),
        "access tokens are verified with userauth's public key"
    );
    let client = UserauthClient::new(
        url,
        AccessTokenVerifier::new(key),
        USERAUTH_TIMEOUT,
        token.expose(),
    )
    .with_context(|| format!("SMARTFLOW_USERAUTH_URL {url}"))?;
    Ok(Some(client))
}
