//! The HTTP API: requesting a notification through the outbox, reading a record's status, and
//! the records' gauges on `/metrics` (the skeleton adds `/healthz` and the bus's metrics).
//! Bodies are types of this module, never storage rows.
//!
//! Both routes are services' calls, never an end user's: they need a service credential
//! (`SMARTFLOW_SERVICE_TOKENS`, in `X-Smartflow-Service-Token`; 401 `service_credential_required`
//! without one), and a request's `requested_by` is the credential's name.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, SecondsFormat};
use futures::future::BoxFuture;
use futures::FutureExt as _;
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::{Deserialize, Serialize};
use smartflow_bus::EventBus;
use smartflow_service::openapi::OpenApiRouter;
use smartflow_service::{
    write_gauge, ErrorBody, Gauges, HttpError, MetricsRegistry, ServiceCaller, ServiceCredentials,
};
use smartflow_storage::notification::{self, NotificationRecord};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::events::{Channel, NotificationRequested, Validate, MAX_TEXT_CHARS};
use crate::handler::StoredNotification;
use crate::provider::{ShownTarget, TargetPolicy};

/// What every request handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub db: DatabaseConnection,
    pub bus: EventBus,
    pub targets: TargetPolicy,
    /// Who may call the API (`SMARTFLOW_SERVICE_TOKENS`).
    pub credentials: ServiceCredentials,
}

/// The API's own routes over `state`, each documented by its handler's `#[utoipa::path]` (the
/// skeleton adds `/healthz`, `/metrics`, `/openapi.json` and the JSON fallbacks).
pub fn router(state: ApiState) -> OpenApiRouter {
    // A valid body is at most the text (6 bytes per character when escaped) plus the rest.
    let body_limit = MAX_TEXT_CHARS * 6 + 64 * 1024;
    let services_only = axum::middleware::from_fn_with_state(
        state.credentials.clone(),
        ServiceCredentials::require,
    );
    OpenApiRouter::default()
        .routes(routes!(find_notification, request_notification))
        .route_layer(services_only)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The body of `POST /v1/notifications`. `Debug` hides the webhook's token.
#[derive(Clone, Deserialize, ToSchema)]
pub struct PostNotification {
    /// `feishu`.
    pub channel: String,
    /// A webhook the service's target policy allows; absent: the service's default webhook.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub title: String,
    pub text: String,
    /// The request is recorded once per `(channel, dedupe_key)`.
    pub dedupe_key: String,
    #[serde(default)]
    pub user_id: Option<String>,
    /// The caller's credential names the requester; a body that names another is refused.
    #[serde(default)]
    pub requested_by: Option<String>,
}

impl std::fmt::Debug for PostNotification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostNotification")
            .field("channel", &self.channel)
            .field("target", &ShownTarget(self.target.as_deref()))
            .field("title", &self.title)
            .field("text", &self.text)
            .field("dedupe_key", &self.dedupe_key)
            .field("user_id", &self.user_id)
            .field("requested_by", &self.requested_by)
            .finish()
    }
}

/// A request accepted into the outbox.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The event's id (a UUID).
    pub event_id: String,
}

/// `GET /v1/notifications?channel=...&dedupe_key=...`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindQuery {
    pub channel: String,
    pub dedupe_key: String,
}

/// A record as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// The record of a request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Found {
    pub notification: NotificationView,
}

/// Publishes the request; its consumer records it once per `(channel, dedupe_key)`, then the
/// dispatcher sends it.
#[utoipa::path(
    post,
    path = "/v1/notifications",
    summary = "Request a notification (once per dedupe key)",
    request_body = PostNotification,
    security(("serviceToken" = [])),
    responses(
        (status = 202, description = "Accepted into the outbox", body = Accepted),
        (status = 400, description = "A value the request got wrong (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "No valid service credential (`service_credential_required`)", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
    ),
)]
#[tracing::instrument(skip_all, fields(dedupe_key))]
async fn request_notification(
    State(state): State<ApiState>,
    caller: ServiceCaller,
    body: Result<Json<PostNotification>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), HttpError> {
    let Json(body) = body?;
    tracing::Span::current().record("dedupe_key", body.dedupe_key.as_str());
    if body
        .requested_by
        .as_deref()
        .is_some_and(|named| named != caller.name())
    {
        return Err(HttpError::invalid_request(format!(
            "requested_by must be `{}`, the service of the presented credential",
            caller.name()
        )));
    }
    let event = NotificationRequested {
        channel: body.channel,
        target: body.target,
        title: body.title,
        text: body.text,
        dedupe_key: body.dedupe_key,
        requested_by: caller.name().to_owned(),
        user_id: body.user_id,
    };
    event
        .validate(&state.targets)
        .map_err(|e| HttpError::invalid_request(e.0))?;
    let txn = state
        .db
        .begin()
        .await
        .map_err(|e| HttpError::internal("opening a transaction", &e))?;
    let event_id = state
        .bus
        .publish(&txn, &event.message_key(), &event)
        .await
        .map_err(|e| HttpError::internal("publishing a notification request", &e))?;
    state
        .bus
        .commit(txn)
        .await
        .map_err(|e| HttpError::internal("committing a notification request", &e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            event_id: event_id.to_string(),
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/notifications",
    summary = "A notification request's record",
    params(FindQuery),
    security(("serviceToken" = [])),
    responses(
        (status = 200, description = "The record", body = Found),
        (status = 400, description = "A value the request got wrong (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "No valid service credential (`service_credential_required`)", body = ErrorBody),
        (status = 404, description = "No record of this request (`not_found`)", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
    ),
)]
async fn find_notification(
    State(state): State<ApiState>,
    query: Result<Query<FindQuery>, QueryRejection>,
) -> Result<Json<Found>, HttpError> {
    let Query(query) = query?;
    if Channel::parse(&query.channel).is_none() {
        return Err(HttpError::invalid_request(format!(
            "unknown notification channel `{}`; known: feishu",
            query.channel
        )));
    }
    if query.dedupe_key.trim().is_empty() {
        return Err(HttpError::invalid_request(
            "dedupe_key must not be empty".to_owned(),
        ));
    }
    let record = notification::find(&state.db, &query.channel, &query.dedupe_key)
        .await
        .map_err(|e| HttpError::internal("reading a notification", &e))?
        .ok_or_else(HttpError::not_found)?;
    Ok(Json(Found {
        notification: view(record)?,
    }))
}

fn view(record: NotificationRecord) -> Result<NotificationView, HttpError> {
    let stored: StoredNotification = serde_json::from_str(&record.payload)
        .map_err(|e| HttpError::internal("decoding a notification record", &e))?;
    let time = |ms: i64| -> Result<String, HttpError> {
        DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .ok_or_else(|| {
                tracing::error!(ms, "formatting a time failed: out of range");
                HttpError::internal_logged()
            })
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

/// Notification records per status, on `/metrics`.
pub struct RecordGauges;

impl Gauges for RecordGauges {
    fn render<'a>(
        &'a self,
        db: &'a DatabaseConnection,
        registry: &'a mut MetricsRegistry,
    ) -> BoxFuture<'a, Result<(), HttpError>> {
        async move {
            let counts = notification::counts(db)
                .await
                .map_err(|e| HttpError::internal("counting notifications", &e))?;
            let status = |status| [("status", status)];
            write_gauge(
                registry,
                "smartflow_notification_records",
                "Notification records per status",
                &[
                    (&status("pending"), counts.pending),
                    (&status("sending"), counts.sending),
                    (&status("sent"), counts.sent),
                    (&status("failed"), counts.failed),
                    (&status("dead"), counts.dead),
                ],
            );
            Ok(())
        }
        .boxed()
    }
}
