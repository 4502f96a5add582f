//! Start-up: what is the notification service's own on top of the service skeleton (its
//! provider and target policy, its handler, the dispatcher with its retry scanner, its HTTP API
//! and record gauges). The skeleton connects and migrates the database, reaches (or starts) the
//! broker, and runs the relay, the consumer, the dispatcher and the HTTP API.

use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use futures::FutureExt as _;
use smartflow_bus::PublishConfig;
use smartflow_service::{ConsumerPlan, Running, ServicePlan, ServiceStart};

use crate::config::NotificationConfig;
use crate::dispatch::Dispatcher;
use crate::events::{self, Channel};
use crate::handler::{self, RecordNotification};
use crate::http::{self, ApiState, RecordGauges};
use crate::provider::{FeishuConfig, FeishuWebhook, Providers, TargetPolicy};

/// The notification service. [`Notification::start`] brings it up in this process; `main` is a
/// thin wrapper around it, and tests call it directly.
pub struct Notification;

/// A started notification service (see [`Running`]); it derefs to [`NotificationParts`].
pub type RunningNotification = Running<NotificationParts>;

/// What a running notification service keeps for its callers beside the skeleton's handle.
pub struct NotificationParts {
    dispatcher: Dispatcher,
}

impl NotificationParts {
    /// The dispatcher sending the recorded notifications.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }
}

impl Notification {
    /// Starts the service in the skeleton's order, after checking its own configuration and
    /// building its provider; each step fails with a clear message before anything runs in the
    /// background.
    pub async fn start(config: NotificationConfig) -> anyhow::Result<RunningNotification> {
        tracing::info!(?config, "starting the notification service");
        config.check().map_err(|e| anyhow!(e))?;
        let routes = events::routes(&config.topic).with_context(|| {
            format!(
                "SMARTFLOW_NOTIFICATION_TOPIC `{}` is not a usable topic",
                config.topic
            )
        })?;
        let route = events::route(&config.topic)?;
        let targets =
            TargetPolicy::new(config.allowed_targets(), config.feishu_webhook_url.clone())
                .context("SMARTFLOW_FEISHU_ALLOWED_TARGETS / SMARTFLOW_FEISHU_WEBHOOK_URL")?;
        let feishu = FeishuWebhook::new(FeishuConfig {
            targets: targets.clone(),
            secret: config.secret(),
            timeout: config.feishu_timeout(),
        })
        .map_err(|e| anyhow!("building the Feishu provider: {e}"))?;
        let providers = Providers::default().with(Channel::Feishu, Arc::new(feishu));

        let plan = ServicePlan::new(
            "notification",
            &config.service,
            config.http_addr,
            &config.topic,
        )
        .with_outbox(routes, PublishConfig::default());
        let mut start = ServiceStart::begin(plan, |db| {
            smartflow_migrations::run_migrator::<smartflow_migrations::notification::Migrator>(db)
                .boxed()
        })
        .await?;

        let dispatcher = Dispatcher::new(start.db().clone(), providers, config.dispatch())
            .context("building the dispatcher")?;
        let handlers = handler::registry(RecordNotification {
            targets: targets.clone(),
            max_attempts: config.max_attempts,
        })
        .context("registering the event handlers")?;
        start.consume(
            ConsumerPlan::own_route(route, handlers).wake_on_commit(dispatcher.wake_signal()),
        )?;
        let dispatching = dispatcher.clone();
        start.run_alongside("dispatcher", |shutdown| dispatching.run(shutdown));
        start.gauges(RecordGauges);

        let routes = http::router(ApiState {
            db: start.db().clone(),
            bus: start
                .bus()
                .context("the notification service's bus was not built")?
                .clone(),
            targets,
            credentials: start.credentials().clone(),
        });
        start.serve(routes, NotificationParts { dispatcher }).await
    }
}
