//! The routes every service answers beside its own: `GET /healthz` ([`health_check`]),
//! `GET /metrics` (the bus's counters, the backlog of each outbox the service owns, and the
//! service's own [`Gauges`]; only for a service credential), and the JSON answers to unknown
//! paths and methods, and the admin API (`/admin/...`, [`crate::admin`]; only for a service
//! credential), and `GET /openapi.json` (the service's document with these routes'). With an
//! admin address, `/metrics` and `/admin/...` move to a router of their own.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::{Json, Router};
use futures::future::BoxFuture;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;
use sea_orm::DatabaseConnection;
use smartflow_bus::Metrics;
use smartflow_domain::OutboxStatus;
use smartflow_storage::outbox::OutboxTable;
use utoipa_axum::routes;

use crate::admin::{admin_routes, AdminTables};
use crate::credentials::ServiceCredentials;
use crate::error_body::ErrorBody;
use crate::health::{health_check, HealthBody};
use crate::http_error::{method_not_allowed, not_found, HttpError};
use crate::openapi::{OpenApi, OpenApiRouter};

pub use smartflow_bus::metrics::PROMETHEUS_CONTENT_TYPE;

/// Gauges a service adds to `/metrics` (say, its records per status).
pub trait Gauges: Send + Sync + 'static {
    /// Registers the gauges in `registry` (with [`write_gauge`]), reading what they need from
    /// `db`; a failure is answered as the error it returns.
    fn render<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        registry: &'a mut Registry,
    ) -> BoxFuture<'a, Result<(), HttpError>>;
}

/// What `/healthz`, `/metrics` and `/openapi.json` read.
#[derive(Clone)]
pub struct Observed {
    pub db: DatabaseConnection,
    pub metrics: Arc<Metrics>,
    /// The outboxes whose backlog `/metrics` reports.
    pub outboxes: Vec<OutboxTable>,
    pub gauges: Option<Arc<dyn Gauges>>,
    /// The service's own document ([`crate::openapi::document`]); `/openapi.json` answers it
    /// with the skeleton's operations merged in.
    pub openapi: OpenApi,
}

/// The document `/openapi.json` answers, as JSON once.
#[derive(Clone)]
struct ServedDocument(Arc<serde_json::Value>);

/// A service's own `routes` with `/healthz`, `/openapi.json`, `/metrics` and the admin API
/// (behind `credentials`) and the JSON fallbacks added; with `separate_admin`, `/metrics` and
/// the admin API are left out of them and served, with `/healthz` and `/openapi.json`, by the
/// second router returned, for the admin address. `/openapi.json` documents them all, wherever
/// they are served.
pub fn with_service_endpoints(
    routes: Router,
    observed: Observed,
    admin: AdminTables,
    credentials: ServiceCredentials,
    separate_admin: bool,
) -> (Router, Option<Router>) {
    let mut document = observed.openapi.clone();
    let (health, health_api) = OpenApiRouter::default()
        .routes(routes!(healthz))
        .routes(routes!(openapi))
        .with_state(observed.clone())
        .split_for_parts();
    let (metrics, metrics_api) = OpenApiRouter::default()
        .routes(routes!(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            credentials.clone(),
            ServiceCredentials::require,
        ))
        .with_state(observed)
        .merge(admin_routes(admin, credentials))
        .split_for_parts();
    document.merge(health_api);
    document.merge(metrics_api);
    let served = serde_json::to_value(&document).unwrap_or_else(|e| {
        // Serializing a document of strings and maps cannot fail; say so loudly if it did.
        tracing::error!(error = %e, "the OpenAPI document does not serialize");
        serde_json::Value::Null
    });
    let health = health.layer(Extension(ServedDocument(Arc::new(served))));
    let finish = |router: Router| {
        router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
    };
    if separate_admin {
        let admin = finish(health.clone().merge(metrics));
        (finish(routes.merge(health)), Some(admin))
    } else {
        (finish(routes.merge(health).merge(metrics)), None)
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    summary = "This document",
    responses((status = 200, description = "The service's OpenAPI 3.1 document", body = Object)),
)]
async fn openapi(Extension(document): Extension<ServedDocument>) -> Json<serde_json::Value> {
    Json(document.0.as_ref().clone())
}

/// The database answers, the relay is not paused, every consumer polls, owns partitions and can
/// apply its batches.
#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Health of the database and the bus's loops",
    responses(
        (status = 200, description = "Everything is healthy", body = HealthBody),
        (status = 503, description = "Something is not; the body says what", body = HealthBody),
    ),
)]
async fn healthz(State(observed): State<Observed>) -> (StatusCode, Json<HealthBody>) {
    health_check(&observed.db, &observed.metrics).await
}

/// The bus's counters, the backlog of each outbox the service owns, and the service's own
/// gauges, in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics",
    security(("serviceToken" = [])),
    responses(
        (status = 200, description = "The metrics", body = String,
         content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "No valid service credential", body = ErrorBody),
        (status = 500, description = "A gauge could not be read", body = ErrorBody),
    ),
)]
async fn metrics(State(observed): State<Observed>) -> Result<Response, HttpError> {
    let mut scrape = observed.metrics.scrape_registry();
    for outbox in &observed.outboxes {
        outbox_backlog(&observed.db, outbox, &mut scrape).await?;
    }
    if let Some(gauges) = &observed.gauges {
        gauges.render(&observed.db, &mut scrape).await?;
    }
    let out = observed.metrics.encode(&scrape);
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], out).into_response())
}

/// Registers one gauge read at scrape time in `registry`: one sample per `(labels, value)`,
/// each label a `(name, value)` pair. `help` is a sentence without its full stop.
pub fn write_gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: &[(&[(&str, &str)], u64)],
) {
    let family = Family::<Vec<(String, String)>, Gauge>::default();
    for (labels, value) in samples {
        family
            .get_or_create(&owned(labels))
            .set(i64::try_from(*value).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(label, v)| ((*label).to_owned(), (*v).to_owned()))
        .collect()
}

/// The outbox's rows per status and the age of its oldest pending row.
async fn outbox_backlog(
    db: &DatabaseConnection,
    outbox: &OutboxTable,
    registry: &mut Registry,
) -> Result<(), HttpError> {
    let stats = outbox
        .stats(db)
        .await
        .map_err(|e| HttpError::internal("reading outbox statistics", &e))?;
    let now = smartflow_storage::now_millis();
    let oldest_pending_age_ms = stats
        .oldest_pending_created_at
        .map_or(0, |created| (now - created).max(0).unsigned_abs());
    let table = outbox.name();
    let rows = |status: OutboxStatus| [("table", table), ("status", status.as_str())];
    write_gauge(
        registry,
        "smartflow_outbox_rows",
        "Outbox rows per status",
        &[
            (&rows(OutboxStatus::Pending), stats.pending),
            (&rows(OutboxStatus::Published), stats.published),
            (&rows(OutboxStatus::Consumed), stats.consumed),
            (&rows(OutboxStatus::Dead), stats.dead),
        ],
    );
    let age = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
    age.get_or_create(&owned(&[("table", table)]))
        .set(oldest_pending_age_ms as f64 / 1000.0);
    registry.register_with_unit(
        "smartflow_outbox_oldest_pending_age",
        "Age of the oldest pending outbox row, 0 when none",
        Unit::Seconds,
        age,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_has_its_help_type_and_labelled_samples() {
        let mut registry = Registry::default();
        write_gauge(
            &mut registry,
            "x_rows",
            "Rows",
            &[(&[("table", "t"), ("status", "dead")], 2), (&[], 0)],
        );
        let text = Metrics::default().encode(&registry);
        for expected in [
            "# HELP x_rows Rows.\n# TYPE x_rows gauge\n",
            "x_rows{table=\"t\",status=\"dead\"} 2\n",
            "x_rows 0\n",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }
}
