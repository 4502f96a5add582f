//! The HTTP API: requesting a notification through the outbox, reading a record's status,
//! health and metrics. Bodies are types of this module, never storage rows.

use std::fmt::Write as _;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat};
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::{Deserialize, Serialize};
use smartflow_bus::EventBus;
use smartflow_service::{error_response, health_check, HealthBody};
use smartflow_storage::notification::{self, NotificationRecord};

use crate::events::{Channel, NotificationRequested, Validate, MAX_TEXT_CHARS};
use crate::handler::StoredNotification;
use crate::provider::TargetPolicy;

/// Who the HTTP API names as the requester when the body does not say.
pub const HTTP_REQUESTER: &str = "http-api";

/// What every request handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub db: DatabaseConnection,
    pub bus: EventBus,
    pub targets: TargetPolicy,
}

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    // A valid body is at most the text (6 bytes per character when escaped) plus the rest.
    let body_limit = MAX_TEXT_CHARS * 6 + 64 * 1024;
    Router::new()
        .route(
            "/v1/notifications",
            get(find_notification).post(request_notification),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// A request's failure as the client sees it: a stable code and a message. Internal failures
/// are logged where they happen and reach the client without details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    InvalidRequest(String),
    PayloadTooLarge,
    NotFound,
    MethodNotAllowed,
    Unavailable(String),
    Internal,
}

impl ApiError {
    fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "{what} failed");
        ApiError::Internal
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::InvalidRequest(m) | ApiError::Unavailable(m) => m.clone(),
            ApiError::PayloadTooLarge => "the request body is too large".to_owned(),
            ApiError::NotFound => "no such resource".to_owned(),
            ApiError::MethodNotAllowed => "method not allowed on this resource".to_owned(),
            ApiError::Internal => "internal error".to_owned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status(), self.code(), self.message())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::InvalidRequest(rejection.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidRequest(rejection.body_text())
    }
}

/// The body of `POST /v1/notifications`.
#[derive(Debug, Clone, Deserialize)]
pub struct PostNotification {
    pub channel: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub title: String,
    pub text: String,
    pub dedupe_key: String,
    #[serde(default)]
    pub user_id: Option<String>,
    /// Defaults to `http-api`.
    #[serde(default)]
    pub requested_by: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    pub event_id: String,
}

/// `GET /v1/notifications?channel=...&dedupe_key=...`.
#[derive(Debug, Deserialize)]
pub struct FindQuery {
    pub channel: String,
    pub dedupe_key: String,
}

/// A record as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationView {
    pub id: i64,
    pub channel: String,
    pub dedupe_key: String,
    /// `pending`, `sending`, `sent`, `failed` or `dead`.
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    /// RFC 3339; when a `failed` record is tried again.
    pub next_retry_at: Option<String>,
    pub last_error: Option<String>,
    pub provider_response: Option<String>,
    /// The webhook with its token hidden; `null` for the service's default webhook.
    pub target: Option<String>,
    pub title: String,
    pub requested_by: String,
    pub user_id: Option<String>,
    pub source_event_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub sent_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Found {
    pub notification: NotificationView,
}

#[tracing::instrument(skip_all, fields(dedupe_key))]
async fn request_notification(
    State(state): State<ApiState>,
    body: Result<Json<PostNotification>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Json(body) = body?;
    tracing::Span::current().record("dedupe_key", body.dedupe_key.as_str());
    let event = NotificationRequested {
        channel: body.channel,
        target: body.target,
        title: body.title,
        text: body.text,
        dedupe_key: body.dedupe_key,
        requested_by: body
            .requested_by
            .unwrap_or_else(|| HTTP_REQUESTER.to_owned()),
        user_id: body.user_id,
    };
    event
        .validate(&state.targets)
        .map_err(|e| ApiError::InvalidRequest(e.0))?;
    let txn = state
        .db
        .begin()
        .await
        .map_err(|e| ApiError::internal("opening a transaction", &e))?;
    let event_id = state
        .bus
        .publish(&txn, &event.message_key(), &event)
        .await
        .map_err(|e| ApiError::internal("publishing a notification request", &e))?;
    state
        .bus
        .commit(txn)
        .await
        .map_err(|e| ApiError::internal("committing a notification request", &e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            event_id: event_id.to_string(),
        }),
    ))
}

async fn find_notification(
    State(state): State<ApiState>,
    query: Result<Query<FindQuery>, QueryRejection>,
) -> Result<Json<Found>, ApiError> {
    let Query(query) = query?;
    if Channel::parse(&query.channel).is_none() {
        return Err(ApiError::InvalidRequest(format!(
            "unknown notification channel `{}`; known: feishu",
            query.channel
        )));
    }
    if query.dedupe_key.trim().is_empty() {
        return Err(ApiError::InvalidRequest(
            "dedupe_key must not be empty".to_owned(),
        ));
    }
    let record = notification::find(&state.db, &query.channel, &query.dedupe_key)
        .await
        .map_err(|e| ApiError::internal("reading a notification", &e))?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(Found {
        notification: view(record)?,
    }))
}

fn view(record: NotificationRecord) -> Result<NotificationView, ApiError> {
    let stored: StoredNotification = serde_json::from_str(&record.payload)
        .map_err(|e| ApiError::internal("decoding a notification record", &e))?;
    let time = |ms: i64| -> Result<String, ApiError> {
        DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .ok_or_else(|| ApiError::internal("formatting a time", &ms))
    };
    let optional_time = |ms: Option<i64>| ms.map(time).transpose();
    Ok(NotificationView {
        id: record.id,
        channel: record.channel,
        dedupe_key: record.dedupe_key,
        status: record.status.to_string(),
        attempts: record.attempts,
        max_attempts: record.max_attempts,
        next_retry_at: optional_time(record.next_retry_at)?,
        last_error: record.last_error,
        provider_response: record.provider_response,
        target: stored.shown_target(),
        title: stored.title,
        requested_by: stored.requested_by,
        user_id: stored.user_id,
        source_event_id: record.source_event_id,
        created_at: time(record.created_at)?,
        updated_at: time(record.updated_at)?,
        sent_at: optional_time(record.sent_at)?,
    })
}

async fn healthz(State(state): State<ApiState>) -> (StatusCode, Json<HealthBody>) {
    health_check(&state.db, state.bus.metrics()).await
}

async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let counts = notification::counts(&state.db)
        .await
        .map_err(|e| ApiError::internal("counting notifications", &e))?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP smartflow_notification_records Notification records per status.\n\
         # TYPE smartflow_notification_records gauge"
    );
    for (status, n) in [
        ("pending", counts.pending),
        ("sending", counts.sending),
        ("sent", counts.sent),
        ("failed", counts.failed),
        ("dead", counts.dead),
    ] {
        let _ = writeln!(
            out,
            "smartflow_notification_records{{status=\"{status}\"}} {n}"
        );
    }
    out.push_str(&state.bus.metrics().prometheus_text());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
