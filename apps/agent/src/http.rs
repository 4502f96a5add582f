//! The HTTP API: accepting chat messages into the outbox and reading the chat history (the
//! skeleton adds `/healthz` and `/metrics`). Request and response bodies are types of this
//! module, never storage rows, so the API's shape does not follow the tables' by accident.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat};
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::{Deserialize, Serialize};
use smartflow_bus::{BusError, EventBus};
use smartflow_domain::DomainError;
use smartflow_service::HttpError;
use smartflow_storage::chat_history;
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
    pub max_content_chars: usize,
    /// Userauth's verifier; `None` runs without authentication (local development).
    pub auth: Option<UserauthClient>,
}

/// The API's own routes over `state` (the skeleton adds `/healthz`, `/metrics` and the JSON
/// fallbacks).
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
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
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
pub fn validate_conversation_id(id: &str) -> Result<(), HttpError> {
    if id.is_empty() {
        return Err(HttpError::invalid_request(
            "conversation id must not be empty".to_owned(),
        ));
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(HttpError::invalid_request(format!(
            "conversation id must be at most {MAX_ID_CHARS} characters"
        )));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
    {
        return Err(HttpError::invalid_request(
            "conversation id may hold only letters, digits, `_`, `.`, `:` and `-`".to_owned(),
        ));
    }
    Ok(())
}

/// Checks a posted message and returns its role.
pub fn validate_message(body: &PostMessage, max_content_chars: usize) -> Result<Role, HttpError> {
    let invalid = |m: String| Err(HttpError::invalid_request(m));
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
) -> Result<(StatusCode, Json<Accepted>), HttpError> {
    let Path(conversation_id) = path?;
    validate_conversation_id(&conversation_id)?;
    tracing::Span::current().record("conversation_id", conversation_id.as_str());
    let authenticated = authenticate(&state, &headers, Quota::Enforced).await?;
    let Json(body) = body?;
    let role = validate_message(&body, state.max_content_chars)?;
    let user_id = match (authenticated, body.user_id) {
        (Some(token_user), Some(claimed)) if claimed != token_user => {
            return Err(HttpError::invalid_request(
                "user_id does not match the access token's user".to_owned(),
            ))
        }
        (Some(token_user), _) => token_user,
        (None, Some(claimed)) => claimed,
        (None, None) => return Err(HttpError::invalid_request("user_id is required".to_owned())),
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
        .map_err(|e| HttpError::internal("opening a transaction", &e))?;
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
        .map_err(|e| HttpError::internal("committing a message", &e))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            event_id: event_id.to_string(),
        }),
    ))
}

/// No `Authorization: Bearer` header where userauth requires one.
fn missing_token() -> HttpError {
    HttpError::new(
        StatusCode::UNAUTHORIZED,
        "missing_token",
        "an `Authorization: Bearer` access token is required",
    )
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
) -> Result<Option<String>, HttpError> {
    let Some(client) = &state.auth else {
        return Ok(None);
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(smartflow_userauth_contracts::bearer_token)
        .ok_or_else(missing_token)?;
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
            Err(HttpError::new(status, code, message))
        }
        Err(AuthorizeError::Unavailable(reason)) => {
            tracing::error!(%reason, "userauth could not be asked");
            Err(HttpError::unavailable(
                "authentication is unavailable; try again later".to_owned(),
            ))
        }
    }
}

fn publish_error(error: BusError) -> HttpError {
    match error {
        BusError::Domain(DomainError::PayloadTooLarge { size, limit, .. }) => {
            HttpError::payload_too_large(format!(
                "the message encodes to {size} bytes, over the limit of {limit} bytes"
            ))
        }
        other => HttpError::internal("publishing a message", &other),
    }
}

#[tracing::instrument(skip_all, fields(conversation_id))]
async fn list_messages(
    State(state): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<MessageList>, HttpError> {
    authenticate(&state, &headers, Quota::Ignored).await?;
    let Path(conversation_id) = path?;
    validate_conversation_id(&conversation_id)?;
    tracing::Span::current().record("conversation_id", conversation_id.as_str());
    let rows = chat_history::list(&state.db, &conversation_id, HISTORY_LIMIT)
        .await
        .map_err(|e| HttpError::internal("reading the chat history", &e))?;
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
                    HttpError::internal_logged()
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
        .collect::<Result<Vec<_>, HttpError>>()?;
    Ok(Json(MessageList { messages }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
