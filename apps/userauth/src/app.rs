//! Start-up: what is userauth's own on top of the service skeleton (its signing key and
//! password hasher, the token-usage subscriber, the pruning sweep and its HTTP API). The
//! skeleton connects and migrates the database, reaches (or starts) the broker, and runs the
//! consumer, the sweep and the HTTP API.

use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt as _;
use smartflow_domain::ServiceRoute;
use smartflow_service::{ConsumerPlan, Running, ServicePlan, ServiceStart};
use tokio_util::sync::CancellationToken;

use crate::config::{UserauthConfig, SIGNING_KEY_SETTING};
use crate::events::{CONSUMER_GROUP, INBOX_CONSUMER, SUBSCRIBED_EVENT_TYPES};
use crate::http;
use crate::jwt::{AccessTokens, SigningKey};
use crate::passwords::PasswordHasher;
use crate::service::{AuthService, AuthSettings};
use crate::throttle::Throttle;
use crate::usage;

/// How often expired blacklist entries and refresh tokens are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// The userauth service. [`Userauth::start`] brings it up in this process; `main` is a thin
/// wrapper around it, and tests call it directly.
pub struct Userauth;

/// A started userauth (see [`Running`]); it derefs to [`UserauthParts`].
pub type RunningUserauth = Running<UserauthParts>;

/// What a running userauth keeps for its callers beside the skeleton's handle.
pub struct UserauthParts {
    service: AuthService,
}

impl UserauthParts {
    /// The use cases, as the HTTP API calls them.
    pub fn service(&self) -> &AuthService {
        &self.service
    }
}

impl Userauth {
    /// Starts userauth in the skeleton's order, after checking its own configuration; each step
    /// fails with a clear message before anything runs in the background. The agent topic is
    /// made sure of too, so start order does not matter.
    pub async fn start(config: UserauthConfig) -> anyhow::Result<RunningUserauth> {
        tracing::info!(?config, "starting userauth");
        // Checked up front: a bad topic must fail start-up, not the consumer later.
        ServiceRoute::new("agent", "agent_outbox", &config.agent_topic, CONSUMER_GROUP)
            .with_context(|| {
                format!(
                    "SMARTFLOW_AGENT_TOPIC `{}` is not a usable topic",
                    config.agent_topic
                )
            })?;
        let key = signing_key(&config)?;
        tracing::info!(
            kid = key.public_key().kid(),
            public_key = %key.public_key().to_pem().trim_end(),
            "access tokens are signed with this key; the agent verifies them with its public key \
             (SMARTFLOW_USERAUTH_PUBLIC_KEY)"
        );
        let passwords = PasswordHasher::new(
            config.password_hash_memory_kib,
            config.password_hash_iterations,
            config.password_hash_queue,
        )
        .map_err(|e| anyhow::anyhow!("{e}: check SMARTFLOW_PASSWORD_HASH_*"))?;

        let plan = ServicePlan::new(
            "userauth",
            &config.service,
            config.http_addr,
            &config.agent_topic,
        );
        let mut start = ServiceStart::begin(plan, |db| {
            smartflow_migrations::run_migrator::<smartflow_migrations::userauth::Migrator>(db)
                .boxed()
        })
        .await?;
        if let Some(broker) = start.embedded_broker() {
            tracing::warn!(
                bootstrap = %broker.bootstrap_servers(),
                "SMARTFLOW_KAFKA_BROKERS is not set: an embedded broker runs in this process, and \
                 only an agent pointed at it delivers token usage here"
            );
        }
        start.consume(
            ConsumerPlan::inbox(
                INBOX_CONSUMER,
                CONSUMER_GROUP,
                &config.agent_topic,
                usage::registry().context("registering the event handlers")?,
            )
            .only_event_types(SUBSCRIBED_EVENT_TYPES),
        )?;

        let service = AuthService::new(
            start.db().clone(),
            AuthSettings {
                access_tokens: AccessTokens::new(&key, config.access_token_ttl()),
                passwords,
                refresh_token_ttl: config.refresh_token_ttl(),
                session_max_lifetime: config.session_max_lifetime(),
                default_token_quota: config.default_token_quota,
            },
        );
        let throttle = Throttle::new(
            config.auth_address_attempts_per_minute,
            config.auth_account_attempts_per_minute,
        );
        let pruning = (service.clone(), throttle.clone());
        start.run_alongside("prune", |shutdown| prune(pruning, shutdown));
        let routes = http::router(http::ApiState {
            service: service.clone(),
            throttle,
            credentials: start.credentials().clone(),
        });
        start.serve(routes, UserauthParts { service }).await
    }
}

/// The configured signing key, or a new one with a warning when none is configured.
fn signing_key(config: &UserauthConfig) -> anyhow::Result<SigningKey> {
    Ok(config.signing.load()?.unwrap_or_else(|| {
        tracing::warn!(
            "{SIGNING_KEY_SETTING} is not set: signing with a new key, so access tokens stop \
             working at restart and services must be given this start's public key"
        );
        SigningKey::generate()
    }))
}

/// Deletes expired blacklist entries and refresh tokens now and every `PRUNE_INTERVAL`, and
/// lets the rate limiters forget the clients whose budget is full again.
async fn prune((service, throttle): (AuthService, Throttle), shutdown: CancellationToken) {
    loop {
        throttle.forget_idle();
        match service.prune_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "pruned expired tokens"),
            Err(e) => tracing::warn!(error = %e, "pruning expired tokens failed; will try again"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}
