//! The health check every service answers on `GET /healthz`: the database answers, the relay is
//! not paused, every consumer polls, owns partitions and can apply its batches.

use axum::http::StatusCode;
use axum::Json;
use sea_orm::DatabaseConnection;
use serde::Serialize;
use smartflow_bus::{ComponentReport, Metrics};

use crate::error_body::database_answers;

/// The body of `GET /healthz`: `status` is `ok` or `unavailable`, with the reason per part.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthBody {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// `ok` or `unreachable`.
    pub database: &'static str,
    /// The relays and consumers of this process, each with its problem if it has one
    /// (`name`, `healthy`, `problem`, and a consumer's `assigned_partitions`).
    #[schema(value_type = Vec<Object>)]
    pub components: Vec<ComponentReport>,
}

/// 200 with everything healthy, 503 naming what is not.
pub async fn health_check(
    db: &DatabaseConnection,
    metrics: &Metrics,
) -> (StatusCode, Json<HealthBody>) {
    let database = database_answers(db).await;
    let components = metrics.health.report();
    let healthy = database && components.iter().all(|c| c.healthy);
    let body = HealthBody {
        status: if healthy { "ok" } else { "unavailable" },
        database: if database { "ok" } else { "unreachable" },
        components,
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}
