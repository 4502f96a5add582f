//! The HTTP API: accepting chat messages into the outbox and reading the chat history (the
//! skeleton adds `/healthz` and `/metrics`). Request and response bodies are types of this
//! module, never storage rows, so the API's shape does not follow the tables' by accident.
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/conversations/{id}/messages` [`PostMessage`] | 202 [`Accepted`]; 403 `service_credential_required` for a role other than `user` without a service credential (`SMARTFLOW_SERVICE_TOKENS`); 404 `not_found` if another user started the conversation |
//! | `GET /v1/conversations/{id}/messages?limit=&before=` | 200 [`MessageList`]: the newest page first, each page oldest message first; 404 `not_found` if the conversation is not the user's or does not exist |
//!
//! Ownership: a conversation belongs to the user whose post started it (the `conversations`
//! row, written in the transaction that publishes that post's event, so it is settled before
//! the message is stored asynchronously). Every other user gets the 404 of a conversation that
//! does not exist, so ids cannot be probed. With userauth the user is the token's; without it
//! (local development) the user is the one the request names (`user_id` in the body or query).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat};
use sea_orm::{DatabaseConnection, TransactionTrait};
use serde::{Deserialize, Serialize};
use smartflow_bus::{BusError, EventBus};
use smartflow_domain::DomainError;
use smartflow_service::openapi::OpenApiRouter;
use smartflow_service::{ErrorBody, HttpError, ServiceCredentials};
use smartflow_storage::chat_history::{self, ChatMessage, HistoryPosition};
use smartflow_storage::conflict::is_transient_conflict;
use smartflow_storage::conversations::{self, Ownership};
use smartflow_storage::StorageError;
use smartflow_userauth_contracts::{AuthorizeError, UserauthClient};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;
use uuid::Uuid;

use crate::events::{ChatMessageAppended, Role};

/// Messages per history page when the request names no `limit`.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// The largest `limit` a history request may ask for.
pub const MAX_PAGE_SIZE: u64 = 200;
/// The longest conversation or user id, matching the columns that store them.
pub const MAX_ID_CHARS: usize = 128;
/// The header a trusted service sends its credential in, next to the user's token, to post
/// `assistant` and `system` messages.
pub use smartflow_service::SERVICE_TOKEN_HEADER;
/// How often a post is tried when its transaction loses to a concurrent one (a deadlock between
/// two first posts of one conversation on MySQL, a busy SQLite database).
const POST_ATTEMPTS: usize = 3;

/// What every request handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub db: DatabaseConnection,
    pub bus: EventBus,
    pub max_content_chars: usize,
    /// Userauth's verifier; `None` runs without authentication (local development).
    pub auth: Option<UserauthClient>,
    /// The service credentials that allow roles other than `user` (`SMARTFLOW_SERVICE_TOKENS`);
    /// none configured allows none.
    pub credentials: ServiceCredentials,
}

/// The API's own routes over `state`, each documented by its handler's `#[utoipa::path]` (the
/// skeleton adds `/healthz`, `/metrics`, `/openapi.json` and the JSON fallbacks).
pub fn router(state: ApiState) -> OpenApiRouter {
    // Anything larger cannot hold a valid message: every character of the content takes at most
    // six bytes in JSON (`\u001f`), plus room for the other fields. Refusing it before buffering
    // keeps a client from making us hold megabytes to then reject them.
    let body_limit = state
        .max_content_chars
        .saturating_mul(6)
        .saturating_add(64 * 1024);
    OpenApiRouter::default()
        .routes(routes!(list_messages, post_message))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The body of `POST /v1/conversations/{id}/messages`. The role is a string here so that a
/// wrong one gets our message naming the allowed values rather than serde's.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PostMessage {
    /// Required without authentication; with it, the token names the user and a `user_id` that
    /// names someone else is refused.
    #[serde(default)]
    pub user_id: Option<String>,
    /// `user`, `assistant` or `system`; roles other than `user` need a service credential.
    pub role: String,
    /// Not empty, at most the service's `SMARTFLOW_MAX_CONTENT_CHARS` characters, no NUL.
    pub content: String,
}

/// A message accepted into the outbox; it appears in the history once its consumer applied it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The event's id (a UUID), the `event_id` of the message in the history.
    pub event_id: String,
}

/// A page of a conversation's history: `messages` in chronological order, and `next`, the
/// cursor of the page before this one (older messages), `null` on the oldest page. Pass it as
/// `before`; it is opaque and valid for the conversation it came from.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageView>,
    pub next: Option<String>,
}

/// The query of `GET /v1/conversations/{id}/messages`. Strings here, so that a bad value gets
/// our message rather than serde's.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Required without authentication (the user whose conversation it is); with it, one that
    /// names someone other than the token's user is refused.
    pub user_id: Option<String>,
    /// Messages per page, 1 to [`MAX_PAGE_SIZE`], [`DEFAULT_PAGE_SIZE`] if absent.
    pub limit: Option<String>,
    /// A `next` cursor from an earlier page: the page of the messages before it.
    pub before: Option<String>,
}

/// One message of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// Checks a user id a request names (in the body or the query).
pub fn validate_user_id(user_id: &str) -> Result<(), HttpError> {
    let invalid = |m: String| Err(HttpError::invalid_request(m));
    if user_id.trim().is_empty() {
        return invalid("user_id must not be empty".to_owned());
    }
    if user_id.chars().count() > MAX_ID_CHARS {
        return invalid(format!("user_id must be at most {MAX_ID_CHARS} characters"));
    }
    if user_id.chars().any(char::is_control) {
        return invalid("user_id must not contain control characters".to_owned());
    }
    Ok(())
}

/// Checks a posted message and returns its role.
pub fn validate_message(body: &PostMessage, max_content_chars: usize) -> Result<Role, HttpError> {
    let invalid = |m: String| Err(HttpError::invalid_request(m));
    if let Some(user_id) = &body.user_id {
        validate_user_id(user_id)?;
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

/// The page size a `limit` asks for.
pub fn parse_limit(limit: Option<&str>) -> Result<u64, HttpError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    match limit.parse::<u64>() {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        _ => Err(HttpError::invalid_request(format!(
            "limit must be a number from 1 to {MAX_PAGE_SIZE}"
        ))),
    }
}

/// The cursor of the page before the one that starts at `position`: base64url of
/// `created_at:id`. Clients treat it as opaque.
pub fn encode_cursor(position: HistoryPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", position.created_at, position.id))
}

/// The position a `before` cursor stands for; anything [`encode_cursor`] did not make is a 400.
pub fn decode_cursor(cursor: &str) -> Result<HistoryPosition, HttpError> {
    let decoded = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let position = decoded.as_deref().and_then(|text| {
        let (created_at, id) = text.split_once(':')?;
        Some(HistoryPosition {
            created_at: created_at.parse().ok()?,
            id: id.parse().ok()?,
        })
    });
    position.ok_or_else(|| {
        HttpError::invalid_request("before must be a `next` cursor of this conversation's history")
    })
}

/// The answer for a conversation the user may not see: the same whether another user owns it
/// or nobody started it, so that ids cannot be probed.
fn conversation_not_found() -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "not_found", "no such conversation")
}

/// A role other than `user` without a service credential: the user is known, the request well
/// formed, but this caller may not do it (403, not the 401 of a service-only route).
fn role_needs_service_credential() -> HttpError {
    HttpError::new(
        StatusCode::FORBIDDEN,
        "service_credential_required",
        "only `user` messages may be posted without the service credential",
    )
}

/// Clients post `user` messages; the other roles need a configured service credential in
/// [`SERVICE_TOKEN_HEADER`]. With none configured they are always refused.
fn check_role(state: &ApiState, headers: &HeaderMap, role: Role) -> Result<(), HttpError> {
    if role == Role::User {
        return Ok(());
    }
    match state.credentials.caller(headers) {
        Some(caller) => {
            tracing::debug!(
                service = caller.name(),
                role = role.as_str(),
                "a service posts"
            );
            Ok(())
        }
        None => Err(role_needs_service_credential()),
    }
}

/// The user a request acts for: the token's (a `claimed` one must match it), or, without
/// authentication, the one it names.
fn acting_user(token_user: Option<String>, claimed: Option<String>) -> Result<String, HttpError> {
    match (token_user, claimed) {
        (Some(token_user), Some(claimed)) if claimed != token_user => Err(
            HttpError::invalid_request("user_id does not match the access token's user"),
        ),
        (Some(token_user), _) => Ok(token_user),
        (None, Some(claimed)) => Ok(claimed),
        (None, None) => Err(HttpError::invalid_request("user_id is required")),
    }
}

/// Accepts a message into the outbox, in the transaction that claims the conversation for its
/// user when it is new.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/messages",
    summary = "Post a message to the conversation",
    params(("id" = String, Path, description = "The conversation: letters, digits, `_`, `.`, `:`, `-`, at most 128")),
    request_body = PostMessage,
    security(("bearerAuth" = []), ("bearerAuth" = [], "serviceToken" = [])),
    responses(
        (status = 202, description = "Accepted into the outbox", body = Accepted),
        (status = 400, description = "A value the request got wrong (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "No access token, or one that does not verify or is revoked", body = ErrorBody),
        (status = 403, description = "A role other than `user` without a service credential (`service_credential_required`)", body = ErrorBody),
        (status = 404, description = "Another user's conversation (`not_found`)", body = ErrorBody),
        (status = 413, description = "The message is too large (`payload_too_large`)", body = ErrorBody),
        (status = 429, description = "The user's token quota is spent (`quota_exceeded`)", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
        (status = 503, description = "Userauth could not be asked (`unavailable`)", body = ErrorBody),
    ),
)]
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
    let authenticated = authenticate(&state, &headers, Access::Post).await?;
    let Json(body) = body?;
    let role = validate_message(&body, state.max_content_chars)?;
    check_role(&state, &headers, role)?;
    let user_id = acting_user(authenticated, body.user_id)?;
    let event = ChatMessageAppended {
        conversation_id,
        user_id,
        role,
        content: body.content,
        occurred_at_ms: smartflow_storage::now_millis(),
    };
    let mut attempt = 1;
    let event_id = loop {
        match accept(&state, &event).await {
            Err(Refused::Conflict(e)) if attempt < POST_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "a post lost to a concurrent one; again");
                attempt += 1;
            }
            Err(Refused::Conflict(e)) => {
                return Err(HttpError::internal("claiming a conversation", &e))
            }
            Err(Refused::Http(e)) => return Err(e),
            Ok(event_id) => break event_id,
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            event_id: event_id.to_string(),
        }),
    ))
}

/// Why [`accept`] did not accept a message.
enum Refused {
    /// A concurrent transaction won (deadlock, lock wait, busy SQLite): worth trying again.
    Conflict(StorageError),
    Http(HttpError),
}

/// One attempt at accepting `event`: in one transaction, claim the conversation for its user
/// (or find it theirs) and publish the event. Another user's conversation publishes nothing;
/// a failure drops `txn`, which rolls it back.
async fn accept(state: &ApiState, event: &ChatMessageAppended) -> Result<Uuid, Refused> {
    let txn = state
        .db
        .begin()
        .await
        .map_err(|e| Refused::Http(HttpError::internal("opening a transaction", &e)))?;
    let ownership = conversations::claim(
        &txn,
        &event.conversation_id,
        &event.user_id,
        event.occurred_at_ms,
    )
    .await
    .map_err(|e| {
        if is_transient_conflict(&e) {
            Refused::Conflict(e)
        } else {
            Refused::Http(HttpError::internal("claiming a conversation", &e))
        }
    })?;
    if ownership == Ownership::SomeoneElse {
        return Err(Refused::Http(conversation_not_found()));
    }
    // The conversation is the message key, so one conversation's messages keep their order
    // through Kafka.
    let event_id = state
        .bus
        .publish(&txn, &event.conversation_id, event)
        .await
        .map_err(|e| Refused::Http(publish_error(e)))?;
    state
        .bus
        .commit(txn)
        .await
        .map_err(|e| Refused::Http(HttpError::internal("committing a message", &e)))?;
    Ok(event_id)
}

/// No `Authorization: Bearer` header where userauth requires one.
fn missing_token() -> HttpError {
    HttpError::new(
        StatusCode::UNAUTHORIZED,
        "missing_token",
        "an `Authorization: Bearer` access token is required",
    )
}

/// What a request does: posting spends the user's quota, reading does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Post,
    Read,
}

/// The user the request acts for: the `sub` of a token the client verified with userauth's
/// public key, which userauth then did not refuse; `None` when the agent runs without
/// authentication. A token that does not verify is 401 before userauth is asked; userauth's
/// refusals pass on (401 revoked, or 429 at the quota when posting); reading does not ask about
/// the quota, so a user at the quota still reads.
async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    access: Access,
) -> Result<Option<String>, HttpError> {
    let Some(client) = &state.auth else {
        return Ok(None);
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(smartflow_userauth_contracts::bearer_token)
        .ok_or_else(missing_token)?;
    let user = match access {
        Access::Post => client.authorize(token).await.map(|user| user.user_id),
        Access::Read => client.identify(token).await,
    };
    match user {
        Ok(user_id) => Ok(Some(user_id)),
        Err(AuthorizeError::Rejected {
            status,
            code,
            message,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
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

/// A page of the user's conversation: the newest [`DEFAULT_PAGE_SIZE`] (or `limit`) messages,
/// or those before the `before` cursor, in chronological order, with the cursor of the page
/// before. Paging from the newest message backwards keeps the newest page one indexed read.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/messages",
    summary = "A page of the conversation's history, newest first",
    params(
        ("id" = String, Path, description = "The conversation"),
        HistoryQuery,
    ),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "A page of the history", body = MessageList),
        (status = 400, description = "A value the request got wrong (`invalid_request`)", body = ErrorBody),
        (status = 401, description = "No access token, or one that does not verify or is revoked", body = ErrorBody),
        (status = 404, description = "Not the user's conversation, or none (`not_found`)", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
        (status = 503, description = "Userauth could not be asked (`unavailable`)", body = ErrorBody),
    ),
)]
#[tracing::instrument(skip_all, fields(conversation_id))]
async fn list_messages(
    State(state): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<MessageList>, HttpError> {
    let authenticated = authenticate(&state, &headers, Access::Read).await?;
    let Path(conversation_id) = path?;
    validate_conversation_id(&conversation_id)?;
    tracing::Span::current().record("conversation_id", conversation_id.as_str());
    let Query(query) = query?;
    if let Some(user_id) = &query.user_id {
        validate_user_id(user_id)?;
    }
    let user_id = acting_user(authenticated, query.user_id)?;
    let limit = parse_limit(query.limit.as_deref())?;
    let before = query.before.as_deref().map(decode_cursor).transpose()?;

    let owner = conversations::owner(&state.db, &conversation_id)
        .await
        .map_err(|e| HttpError::internal("reading a conversation's owner", &e))?;
    if owner.as_deref() != Some(user_id.as_str()) {
        return Err(conversation_not_found());
    }
    // One more than the page holds says whether an older page exists.
    let mut rows = chat_history::newest_before(&state.db, &conversation_id, before, limit + 1)
        .await
        .map_err(|e| HttpError::internal("reading the chat history", &e))?;
    let next = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|oldest| encode_cursor(HistoryPosition::of(oldest)))
    } else {
        None
    };
    rows.reverse();
    let messages = rows
        .into_iter()
        .map(message_view)
        .collect::<Result<Vec<_>, HttpError>>()?;
    Ok(Json(MessageList { messages, next }))
}

fn message_view(row: ChatMessage) -> Result<MessageView, HttpError> {
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
    fn page_sizes_are_bounded() {
        assert_eq!(parse_limit(None), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(parse_limit(Some("1")), Ok(1));
        assert_eq!(parse_limit(Some("200")), Ok(MAX_PAGE_SIZE));
        for bad in ["0", "201", "-1", "", "ten", "1.5"] {
            assert_eq!(
                parse_limit(Some(bad)).unwrap_err().code(),
                "invalid_request"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_nothing_else_decodes() {
        let position = HistoryPosition {
            created_at: 1_790_000_000_123,
            id: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(position)), Ok(position));
        for bad in [
            "",
            "***",
            "aGVsbG8",
            &URL_SAFE_NO_PAD.encode("1:x"),
            &URL_SAFE_NO_PAD.encode("1"),
        ] {
            assert_eq!(
                decode_cursor(bad).unwrap_err().code(),
                "invalid_request",
                "{bad}"
            );
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
