//! The HTTP API: accepting chat messages into the outbox, reading the chat history, health and
//! metrics. Request and response bodies are types of this module, never storage rows, so the
//! API's shape does not follow the tables' by accident.

use std::error::Error as StdError;
use std::fmt::Write as _;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat};
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::{Deserialize, Serialize};
use smartflow_bus::{BusError, EventBus};
use smartflow_domain::DomainError;
use smartflow_service::{error_response, health_check, ErrorChain, HealthBody};
use smartflow_storage::chat_history;
use smartflow_storage::outbox::OutboxTable;
use smartflow_userauth_contracts::{AuthorizeError, UserauthClient};

use crate::events::{ChatMessageAppended, Role};

/// The most messages one history request returns.
pub const HISTORY_LIMIT: u64 = 1000;
/// The longest conversation or user id, matching the columns that store them.
pub const MAX_ID_CHARS: usize = 128;
/// What every request handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub db: DatabaseConnection,
    pub bus: EventBus,
    pub outbox: OutboxTable,
    pub max_content_chars: usize,
    /// Userauth's verifier; `None` runs without authentication (local development).
    pub auth: Option<UserauthClient>,
}

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    // Anything larger cannot hold a valid message: every character of the content takes at most
    // six bytes in JSON (`\u001f`), plus room for the other fields. Refusing it before buffering
    // keeps a client from making us hold megabytes to then reject them.
    let body_limit = state
        .max_content_chars
        .saturating_mul(6)
        .saturating_add(64 * 1024);
    Router::new()
        .route(
            "/v1/conversations/{id}/messages",
            get(list_messages).post(post_message),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// A request's failure as the client sees it: a stable code and a message. Internal failures
/// are logged where they happen and reach the client without details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    InvalidRequest(String),
    PayloadTooLarge(String),
    NotFound,
    MethodNotAllowed,
    Unavailable(String),
    /// No `Authorization: Bearer` header where userauth requires one.
    MissingToken,
    /// Userauth's verdict (401 for a bad token, 429 at the quota), passed on unchanged.
    Rejected {
        status: StatusCode,
        code: String,
        message: String,
    },
    Internal,
}

impl ApiError {
    /// Logs `error` with its whole source chain and returns the detail-free `internal` answer.
    fn internal(what: &str, error: &(dyn StdError + 'static)) -> Self {
        tracing::error!(error = %ErrorChain(error), "{what} failed");
        ApiError::Internal
    }

    pub fn code(&self) -> &str {
        match self {
            ApiError::MissingToken => "missing_token",
            ApiError::Rejected { code, .. } => code,
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken => StatusCode::UNAUTHORIZED,
            ApiError::Rejected { status, .. } => *status,
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::InvalidRequest(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::Unavailable(m) => m.clone(),
            ApiError::NotFound => "no such resource".to_owned(),
            ApiError::MethodNotAllowed => "method not allowed on this resource".to_owned(),
            ApiError::Internal => "internal error".to_owned(),
            ApiError::MissingToken => {
                "an `Authorization: Bearer` access token is required".to_owned()
            }
            ApiError::Rejected { message, .. } => message.clone(),
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
            ApiError::PayloadTooLarge("the request body is too large".to_owned())
        } else {
            // Syntax errors, missing fields and a missing content type alike: all are the
            // client's to fix, and one code keeps client error handling simple.
            ApiError::InvalidRequest(rejection.body_text())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::InvalidRequest(rejection.body_text())
    }
}

/// The body of `POST /v1/conversations/{id}/messages`. The role is a string here so that a
/// wrong one gets our message naming the allowed values rather than serde's.
#[derive(Debug, Deserialize)]
pub struct PostMessage {
    /// Required without authentication; with it, the token names the user and a `user_id` that
    /// names someone else is refused.
    #[serde(default)]
    pub user_id: Option<String>,
    pub role: String,
    pub content: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    pub event_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MessageList {
    pub messages: Vec<MessageView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub event_id: String,
    pub user_id: String,
    pub role: String,
    pub content: String,
    /// RFC 3339, UTC, millisecond precision.
    pub created_at: String,
}

/// Checks a conversation id taken from the path: it becomes the Kafka message key and a column
/// value, so it is kept short and free of characters that need escaping anywhere.
pub fn validate_conversation_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::InvalidRequest(
            "conversation id must not be empty".to_owned(),
        ));
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "conversation id must be at most {MAX_ID_CHARS} characters"
        )));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
    {
        return Err(ApiError::InvalidRequest(
            "conversation id may hold only letters, digits, `_`, `.`, `:` and `-`".to_owned(),
        ));
    }
    Ok(())
}

/// Checks a posted message and returns its role.
pub fn validate_message(body: &PostMessage, max_content_chars: usize) -> Result<Role, ApiError> {
    let invalid = |m: String| Err(ApiError::InvalidRequest(m));
    if let Some(user_id) = &body.user_id {
        if user_id.trim().is_empty() {
            return invalid("user_id must not be empty".to_owned());
        }
        if user_id.chars().count() > MAX_ID_CHARS {
            return invalid(format!("user_id must be at most {MAX_ID_CHARS} characters"));
        }
        if user_id.chars().any(char::is_control) {
            return invalid("user_id must not contain control characters".to_owned());
        }
    }
    let Some(role) = Role::parse(&body.role) else {
        return invalid("role must be one of user, assistant, system".to_owned());
    };
    if body.content.trim().is_empty() {
        return invalid("content must not be empty".to_owned());
    }
    if body.content.chars().count() > max_content_chars {
        return invalid(format!(
            "content must be at most {max_content_chars} characters"
        ));
    }
    // PostgreSQL text columns cannot hold NUL; accepting it here would make the event fail at
    // consume time instead, where the client no longer hears about it.
    if body.content.contains('\0') {
        return invalid("content must not contain NUL characters".to_owned());
    }
    Ok(role)
}

#[tracing::instrument(skip_all, fields(conversation_id))]
async fn post_message(
    State(state): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<PostMessage>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let Path(conversation_id) = path?;
    validate_conversation_id(&conversation_id)?;
    tracing::Span::current().record("conversation_id", conversation_id.as_str());
    let authenticated = authenticate(&state, &headers, Quota::Enforced).await?;
    let Json(body) = body?;
    let role = validate_message(&body, state.max_content_chars)?;
    let user_id = match (authenticated, body.user_id) {
        (Some(token_user), Some(claimed)) if claimed != token_user => {
            return Err(ApiError::InvalidRequest(
                "user_id does not match the access token's user".to_owned(),
            ))
        }
        (Some(token_user), _) => token_user,
        (None, Some(claimed)) => claimed,
        (None, None) => return Err(ApiError::InvalidRequest("user_id is required".to_owned())),
    };
    let event = ChatMessageAppended {
        conversation_id,
        user_id,
        role,
        content: body.content,
        occurred_at_ms: smartflow_storage::now_millis(),
    };
    let txn = state
        .db
        .begin()
        .await
        .map_err(|e| ApiError::internal("opening a transaction", &e))?;
    // The conversation is the message key, so one conversation's messages keep their order
    // through Kafka. A failed publish drops `txn`, which rolls it back.
    let event_id = state
        .bus
        .publish(&txn, &event.conversation_id, &event)
        .await
        .map_err(publish_error)?;
    state
        .bus
        .commit(txn)
        .await
        .map_err(|e| ApiError::internal("committing a message", &e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            event_id: event_id.to_string(),
        }),
    ))
}

/// Whether a request spends the user's quota (posting) or not (reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quota {
    Enforced,
    Ignored,
}

/// The user the request acts for, per userauth; `None` when the agent runs without
/// authentication. Token failures answer as userauth says (401, or 429 at the quota).
async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    quota: Quota,
) -> Result<Option<String>, ApiError> {
    let Some(client) = &state.auth else {
        return Ok(None);
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(smartflow_userauth_contracts::bearer_token)
        .ok_or(ApiError::MissingToken)?;
    match client.authorize(token).await {
        Ok(user) => Ok(Some(user.user_id)),
        Err(AuthorizeError::Rejected {
            status,
            code,
            message,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
            // At the quota the token itself is good: reading stays allowed. Userauth answers
            // 429 only after it has verified the token.
            if status == StatusCode::TOO_MANY_REQUESTS && quota == Quota::Ignored {
                return Ok(None);
            }
            Err(ApiError::Rejected {
                status,
                code,
                message,
            })
        }
        Err(AuthorizeError::Unavailable(reason)) => {
            tracing::error!(%reason, "userauth could not be asked");
            Err(ApiError::Unavailable(
                "authentication is unavailable; try again later".to_owned(),
            ))
        }
    }
}

fn publish_error(error: BusError) -> ApiError {
    match error {
        BusError::Domain(DomainError::PayloadTooLarge { size, limit, .. }) => {
            ApiError::PayloadTooLarge(format!(
                "the message encodes to {size} bytes, over the limit of {limit} bytes"
            ))
        }
        other => ApiError::internal("publishing a message", &other),
    }
}

#[tracing::instrument(skip_all, fields(conversation_id))]
async fn list_messages(
    State(state): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<MessageList>, ApiError> {
    authenticate(&state, &headers, Quota::Ignored).await?;
    let Path(conversation_id) = path?;
    validate_conversation_id(&conversation_id)?;
    tracing::Span::current().record("conversation_id", conversation_id.as_str());
    let rows = chat_history::list(&state.db, &conversation_id, HISTORY_LIMIT)
        .await
        .map_err(|e| ApiError::internal("reading the chat history", &e))?;
    let messages = rows
        .into_iter()
        .map(|row| {
            let created_at = DateTime::from_timestamp_millis(row.created_at)
                .ok_or_else(|| {
                    tracing::error!(
                        event_id = %row.event_id,
                        created_at = row.created_at,
                        "chat history row has a time out of range"
                    );
                    ApiError::Internal
                })?
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            Ok(MessageView {
                event_id: row.event_id,
                user_id: row.user_id,
                role: row.role,
                content: row.content,
                created_at,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(MessageList { messages }))
}

async fn healthz(State(state): State<ApiState>) -> (StatusCode, Json<HealthBody>) {
    health_check(&state.db, state.bus.metrics()).await
}

async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let stats = state
        .outbox
        .stats(&state.db)
        .await
        .map_err(|e| ApiError::internal("reading outbox statistics", &e))?;
    let now = smartflow_storage::now_millis();
    let oldest_pending_age_ms = stats
        .oldest_pending_created_at
        .map_or(0, |created| (now - created).max(0));
    let table = state.outbox.name();

    let mut out = state.bus.metrics().prometheus_text();
    let _ = writeln!(
        out,
        "# HELP smartflow_outbox_rows Outbox rows per status.\n# TYPE smartflow_outbox_rows gauge"
    );
    for (status, n) in [
        ("pending", stats.pending),
        ("published", stats.published),
        ("consumed", stats.consumed),
        ("dead", stats.dead),
    ] {
        let _ = writeln!(
            out,
            "smartflow_outbox_rows{{table=\"{table}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP smartflow_outbox_oldest_pending_age_ms Age of the oldest pending outbox row, 0 when none.\n\
         # TYPE smartflow_outbox_oldest_pending_age_ms gauge\n\
         smartflow_outbox_oldest_pending_age_ms{{table=\"{table}\"}} {oldest_pending_age_ms}"
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    fn body(user_id: &str, role: &str, content: &str) -> PostMessage {
        PostMessage {
            user_id: Some(user_id.to_owned()),
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }

    #[test]
    fn conversation_ids_are_checked() {
        for good in ["c1", "tenant:42.chat_7-b", &"x".repeat(MAX_ID_CHARS)] {
            validate_conversation_id(good).unwrap();
        }
        for bad in [
            "",
            "has space",
            "slash/inside",
            "ünï",
            &"x".repeat(MAX_ID_CHARS + 1),
        ] {
            assert_eq!(
                validate_conversation_id(bad).unwrap_err().code(),
                "invalid_request",
                "{bad}"
            );
        }
    }

    #[test]
    fn messages_are_checked() {
        assert_eq!(
            validate_message(&body("u1", "assistant", "hi"), 10),
            Ok(Role::Assistant)
        );
        assert_eq!(
            validate_message(&body("u1", "user", "ééééé"), 5),
            Ok(Role::User)
        );
        for bad in [
            body("", "user", "hi"),
            body("   ", "user", "hi"),
            body(&"u".repeat(MAX_ID_CHARS + 1), "user", "hi"),
            body("u\n1", "user", "hi"),
            body("u1", "admin", "hi"),
            body("u1", "User", "hi"),
            body("u1", "user", ""),
            body("u1", "user", " \n "),
            body("u1", "user", "123456"),
            body("u1", "user", "nul\0"),
        ] {
            let err = validate_message(&bad, 5).unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{bad:?}");
        }
    }

    #[test]
    fn error_chains_show_every_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("outer")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(ErrorChain(&e).to_string(), "outer: inner");
    }
}
