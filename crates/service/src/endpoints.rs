//! The routes every service answers beside its own: `GET /healthz` ([`health_check`]),
//! `GET /metrics` (the bus's counters, the backlog of each outbox the service owns, and the
//! service's own [`Gauges`]; only for a service credential), and the JSON answers to unknown
//! paths and methods, and the admin API (`/admin/...`, [`crate::admin`]; only for a service
//! credential). With an admin address, `/metrics` and `/admin/...` move to a router of their own.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use sea_orm::DatabaseConnection;
use smartflow_bus::Metrics;
use smartflow_storage::outbox::OutboxTable;

use crate::admin::{admin_routes, AdminTables};
use crate::credentials::ServiceCredentials;
use crate::health::{health_check, HealthBody};
use crate::http_error::{method_not_allowed, not_found, HttpError};

/// The content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Gauges a service adds to `/metrics` (say, its records per status).
pub trait Gauges: Send + Sync + 'static {
    /// Appends the gauges in Prometheus text format to `out`, reading what they need from
    /// `db`; a failure is answered as the error it returns.
    fn render<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        out: &'a mut String,
    ) -> BoxFuture<'a, Result<(), HttpError>>;
}

/// What `/healthz` and `/metrics` read.
#[derive(Clone)]
pub struct Observed {
    pub db: DatabaseConnection,
    pub metrics: Arc<Metrics>,
    /// The outboxes whose backlog `/metrics` reports.
    pub outboxes: Vec<OutboxTable>,
    pub gauges: Option<Arc<dyn Gauges>>,
    /// What `/openapi.json` answers (`crate::openapi::document`).
    pub openapi: Arc<serde_json::Value>,
}

/// A service's own `routes` with `/healthz`, `/metrics` (behind `credentials`) and the JSON
/// fallbacks added; with `separate_admin`, `/metrics` is left out of them and served, with
/// `/healthz`, by the second router returned, for the admin address.
pub fn with_service_endpoints(
    routes: Router,
    observed: Observed,
    admin: AdminTables,
    credentials: ServiceCredentials,
    separate_admin: bool,
) -> (Router, Option<Router>) {
    let health = Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .with_state(observed.clone());
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            credentials.clone(),
            ServiceCredentials::require,
        ))
        .with_state(observed)
        .merge(admin_routes(admin, credentials));
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

async fn openapi(State(observed): State<Observed>) -> Json<serde_json::Value> {
    Json(observed.openapi.as_ref().clone())
}

async fn healthz(State(observed): State<Observed>) -> (StatusCode, Json<HealthBody>) {
    health_check(&observed.db, &observed.metrics).await
}

async fn metrics(State(observed): State<Observed>) -> Result<Response, HttpError> {
    let mut out = observed.metrics.prometheus_text();
    for outbox in &observed.outboxes {
        outbox_backlog(&observed.db, outbox, &mut out).await?;
    }
    if let Some(gauges) = &observed.gauges {
        gauges.render(&observed.db, &mut out).await?;
    }
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], out).into_response())
}

/// Appends one gauge in Prometheus text format: its `# HELP` and `# TYPE` lines, then one sample
/// per `(labels, value)`, each label a `(name, value)` pair.
pub fn write_gauge(out: &mut String, name: &str, help: &str, samples: &[(&[(&str, &str)], u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let labels: Vec<String> = labels
            .iter()
            .map(|(label, v)| format!("{label}=\"{v}\""))
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// The outbox's rows per status and the age of its oldest pending row.
async fn outbox_backlog(
    db: &DatabaseConnection,
    outbox: &OutboxTable,
    out: &mut String,
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
    let rows = |status| [("table", table), ("status", status)];
    write_gauge(
        out,
        "smartflow_outbox_rows",
        "Outbox rows per status.",
        &[
            (&rows("pending"), stats.pending),
            (&rows("published"), stats.published),
            (&rows("consumed"), stats.consumed),
            (&rows("dead"), stats.dead),
        ],
    );
    write_gauge(
        out,
        "smartflow_outbox_oldest_pending_age_ms",
        "Age of the oldest pending outbox row, 0 when none.",
        &[(&[("table", table)], oldest_pending_age_ms)],
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_has_its_help_type_and_labelled_samples() {
        let mut out = String::new();
        write_gauge(
            &mut out,
            "x_rows",
            "Rows.",
            &[(&[("table", "t"), ("status", "dead")], 2), (&[], 0)],
        );
        assert_eq!(
            out,
            "# HELP x_rows Rows.\n# TYPE x_rows gauge\nx_rows{table=\"t\",status=\"dead\"} 2\nx_rows{} 0\n"
        );
    }
}
