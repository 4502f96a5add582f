//! The HTTP API. Request and response bodies are types of this module, never storage rows.
//!
//! | route | body / header | success |
//! |---|---|---|
//! | `POST /v1/auth/register` | `{"email", "password"}` | 201 `{"user_id", "email"}` |
//! | `POST /v1/auth/login` | `{"email", "password"}` | 200 [`TokenResponse`] |
//! | `POST /v1/auth/refresh` | `{"refresh_token"}` | 200 [`TokenResponse`] |
//! | `POST /v1/auth/logout` | `Authorization: Bearer` | 204 |
//! | `POST /v1/auth/logout-all` | `Authorization: Bearer` | 204: every session of the account revoked |
//! | `POST /v1/auth/password` | `Authorization: Bearer`, `{"current_password", "new_password"}` | 204: the other sessions revoked |
//! | `GET /v1/auth/me` | `Authorization: Bearer` | 200 [`MeResponse`] |
//! | `GET /v1/auth/authorize` | `Authorization: Bearer`, a service credential in `X-Smartflow-Service-Token` | 200 [`AuthorizeResponse`], or 429 `quota_exceeded`; 401 `service_credential_required` without the credential |
//!
//! Log-in, registration and refresh are rate limited per client address and per account
//! ([`Throttle`]): 429 `rate_limited` with `Retry-After`. Password hashing has a bounded queue:
//! past it, 503 `busy` with `Retry-After`.
//!
//! Every answer of these routes carries `Cache-Control: no-store` and `Pragma: no-cache`: they
//! hold tokens or account data (RFC 6749 5.1, ASVS 8.2.1).
//!
//! The skeleton adds `GET /healthz` and `GET /metrics`, as in every service. Every failure is `{"error": {"code", "message"}}` with the status of [`AuthError::status`].

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRef, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use smartflow_service::openapi::OpenApiRouter;
use smartflow_service::{HttpError, ServiceCredentials};
use smartflow_storage::users::User;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::error::{AuthError, ErrorChain};
use crate::service::{AuthService, Principal, TokenPair};
use crate::throttle::{Attempt, Throttle};
use crate::validation::normalize_email;
pub use smartflow_userauth_contracts::{bearer_token, AuthorizeResponse};

/// Request bodies are a few hundred bytes; anything over this is refused before it is read whole.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub service: AuthService,
    pub throttle: Throttle,
    /// The services that may call `GET /v1/auth/authorize` (`SMARTFLOW_SERVICE_TOKENS`).
    pub credentials: ServiceCredentials,
}

impl FromRef<ApiState> for AuthService {
    fn from_ref(state: &ApiState) -> Self {
        state.service.clone()
    }
}

impl FromRef<ApiState> for Throttle {
    fn from_ref(state: &ApiState) -> Self {
        state.throttle.clone()
    }
}

/// The API's own routes over `state`, each documented by its handler's `#[utoipa::path]` (the
/// skeleton adds `/healthz`, `/metrics`, `/openapi.json` and the JSON fallbacks).
pub fn router(state: ApiState) -> OpenApiRouter {
    let services_only = axum::middleware::from_fn_with_state(
        state.credentials.clone(),
        ServiceCredentials::require,
    );
    let for_services = OpenApiRouter::default()
        .routes(routes!(authorize))
        .route_layer(services_only);
    OpenApiRouter::default()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(logout_everywhere))
        .routes(routes!(change_password))
        .routes(routes!(me))
        .merge(for_services)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(axum::middleware::map_response(not_stored))
        .with_state(state)
}

/// The account a log-in or registration is for: its email as stored, or as sent when it
/// cannot be normalized (the attempt fails anyway, but counts).
fn account_of(email: &str) -> String {
    normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase())
}

/// Tells clients and proxies to keep no copy of the answer.
async fn not_stored(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The wire form of every error.
pub use smartflow_service::{ErrorBody, ErrorDetail};

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        if let AuthError::Internal(cause) = &self {
            tracing::error!(error = %ErrorChain(cause.as_ref()), "request failed");
        }
        let mut response =
            HttpError::new(self.status(), self.code(), self.to_string()).into_response();
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.is_bearer_failure() {
            // RFC 6750: a refused bearer token is answered with a challenge naming the problem.
            let error = if matches!(self, AuthError::MissingToken) {
                "Bearer"
            } else {
                "Bearer error=\"invalid_token\""
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(error));
        }
        response
    }
}

impl From<JsonRejection> for AuthError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AuthError::PayloadTooLarge
        } else {
            // Bad syntax, missing fields, wrong types and a missing content type alike.
            AuthError::InvalidRequest(rejection.body_text())
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    pub user_id: String,
    pub email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

impl From<TokenPair> for TokenResponse {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: "Bearer".to_owned(),
            expires_in: pair.expires_in,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MeResponse {
    pub user_id: String,
    pub email: String,
    pub token_usage: i64,
    pub token_quota: i64,
    /// RFC 3339, UTC, millisecond precision.
    pub created_at: String,
}

/// What `GET /v1/auth/authorize` answers: the wire form of the contracts' [`AuthorizeResponse`],
/// which the other services read it as (a test holds the two together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuthorizeBody {
    pub user_id: String,
    pub email: String,
    pub token_usage: i64,
    pub token_quota: i64,
}

fn authorized(user: User) -> AuthorizeBody {
    AuthorizeBody {
        user_id: user.id,
        email: user.email,
        token_usage: user.token_usage,
        token_quota: user.token_quota,
    }
}

/// The principal of the request's bearer token, checked against the blacklist.
async fn principal(service: &AuthService, headers: &HeaderMap) -> Result<Principal, AuthError> {
    service.authenticate(presented_token(headers)?).await
}

fn presented_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::InvalidToken)?;
    bearer_token(value).ok_or(AuthError::MissingToken)
}

#[utoipa::path(
    post,
    path = "/v1/auth/register",
    summary = "Create an account",
    request_body = Credentials,
    responses(
        (status = 201, description = "The account", body = RegisterResponse),
        (status = 400, description = "A value the request got wrong: `invalid_request`, `invalid_email`, `weak_password`", body = ErrorBody),
        (status = 409, description = "The email is taken (`email_taken`)", body = ErrorBody),
        (status = 413, description = "The body is too large (`payload_too_large`)", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address or for this account (`rate_limited`, with `Retry-After`)", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
        (status = 503, description = "Password hashing is saturated (`busy`, with `Retry-After`)", body = ErrorBody),
    ),
)]
async fn register(
    State(service): State<AuthService>,
    State(throttle): State<Throttle>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Result<(StatusCode, Json<RegisterResponse>), AuthError> {
    throttle.check_address(Attempt::Register, peer.ip())?;
    let Json(body) = body?;
    throttle.check_account(Attempt::Register, &account_of(&body.email))?;
    let user = service.register(&body.email, &body.password).await?;
    tracing::info!(user_id = %user.id, "registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            user_id: user.id,
            email: user.email,
        }),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/auth/login",
    summary = "Log in: an access and a refresh token",
    request_body = Credentials,
    responses(
        (status = 200, description = "A new session's tokens", body = TokenResponse),
        (status = 400, description = "A value the request got wrong: `invalid_request`, `invalid_email`, `weak_password`", body = ErrorBody),
        (status = 401, description = "Wrong email or password (`invalid_credentials`)", body = ErrorBody),
        (status = 413, description = "The body is too large (`payload_too_large`)", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address or for this account (`rate_limited`, with `Retry-After`)", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
        (status = 503, description = "Password hashing is saturated (`busy`, with `Retry-After`)", body = ErrorBody),
    ),
)]
async fn login(
    State(service): State<AuthService>,
    State(throttle): State<Throttle>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Result<Json<TokenResponse>, AuthError> {
    throttle.check_address(Attempt::Login, peer.ip())?;
    let Json(body) = body?;
    throttle.check_account(Attempt::Login, &account_of(&body.email))?;
    let pair = service.login(&body.email, &body.password).await?;
    Ok(Json(pair.into()))
}

#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    summary = "Rotate a refresh token",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "The session's new tokens", body = TokenResponse),
        (status = 400, description = "A value the request got wrong: `invalid_request`, `invalid_email`, `weak_password`", body = ErrorBody),
        (status = 401, description = "A refresh token that is unknown, expired, revoked or reused (which revokes its session), or a session past its lifetime", body = ErrorBody),
        (status = 413, description = "The body is too large (`payload_too_large`)", body = ErrorBody),
        (status = 429, description = "Too many attempts from this address or for this account (`rate_limited`, with `Retry-After`)", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
    ),
)]
async fn refresh(
    State(service): State<AuthService>,
    State(throttle): State<Throttle>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<RefreshRequest>, JsonRejection>,
) -> Result<Json<TokenResponse>, AuthError> {
    throttle.check_address(Attempt::Refresh, peer.ip())?;
    let Json(body) = body?;
    if let Some(user_id) = service.owner_of_refresh_token(&body.refresh_token).await? {
        throttle.check_account(Attempt::Refresh, &user_id)?;
    }
    let pair = service.refresh(&body.refresh_token).await?;
    Ok(Json(pair.into()))
}

#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    summary = "End this session",
    security(("bearerAuth" = [])),
    responses(
        (status = 204, description = "The session is revoked"),
        (status = 401, description = "No access token, or one that does not verify, expired or is revoked", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
    ),
)]
async fn logout(
    State(service): State<AuthService>,
    headers: HeaderMap,
) -> Result<StatusCode, AuthError> {
    let principal = principal(&service, &headers).await?;
    service.logout(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/auth/logout-all",
    summary = "End every session of the account",
    security(("bearerAuth" = [])),
    responses(
        (status = 204, description = "Every session of the account is revoked"),
        (status = 401, description = "No access token, or one that does not verify, expired or is revoked", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
    ),
)]
async fn logout_everywhere(
    State(service): State<AuthService>,
    headers: HeaderMap,
) -> Result<StatusCode, AuthError> {
    let principal = principal(&service, &headers).await?;
    service.logout_everywhere(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/auth/password",
    summary = "Change the password",
    security(("bearerAuth" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed; the other sessions are revoked"),
        (status = 400, description = "A value the request got wrong: `invalid_request`, `weak_password`", body = ErrorBody),
        (status = 401, description = "No access token, or one that does not verify, expired or is revoked", body = ErrorBody),
        (status = 403, description = "The current password is wrong (`wrong_password`)", body = ErrorBody),
        (status = 413, description = "The body is too large (`payload_too_large`)", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
        (status = 503, description = "Password hashing is saturated (`busy`, with `Retry-After`)", body = ErrorBody),
    ),
)]
async fn change_password(
    State(service): State<AuthService>,
    headers: HeaderMap,
    body: Result<Json<PasswordChange>, JsonRejection>,
) -> Result<StatusCode, AuthError> {
    let principal = principal(&service, &headers).await?;
    let Json(body) = body?;
    service
        .change_password(&principal, &body.current_password, &body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/auth/me",
    summary = "The caller's account",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The account", body = MeResponse),
        (status = 401, description = "No access token, or one that does not verify, expired or is revoked", body = ErrorBody),
        (status = 404, description = "The account is gone (`not_found`)", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
    ),
)]
async fn me(
    State(service): State<AuthService>,
    headers: HeaderMap,
) -> Result<Json<MeResponse>, AuthError> {
    let principal = principal(&service, &headers).await?;
    let user = service.user_of(&principal).await?;
    let created_at = DateTime::from_timestamp_millis(user.created_at)
        .ok_or_else(|| AuthError::internal(format!("user {} has a time out of range", user.id)))?
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    Ok(Json(MeResponse {
        user_id: user.id,
        email: user.email,
        token_usage: user.token_usage,
        token_quota: user.token_quota,
        created_at,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/auth/authorize",
    summary = "Check an access token for a service",
    security(("serviceToken" = [], "bearerAuth" = [])),
    responses(
        (status = 200, description = "The user may go on", body = AuthorizeBody),
        (status = 401, description = "No valid service credential (`service_credential_required`), or an access token that does not verify, expired or is revoked", body = ErrorBody),
        (status = 429, description = "The user's token quota is spent (`quota_exceeded`)", body = ErrorBody),
        (status = 500, description = "The service failed (`internal`)", body = ErrorBody),
    ),
)]
async fn authorize(
    State(service): State<AuthService>,
    headers: HeaderMap,
) -> Result<Json<AuthorizeBody>, AuthError> {
    let user = service.authorize(presented_token(&headers)?).await?;
    Ok(Json(authorized(user)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorize_answer_reads_as_the_contracts_type() {
        let body = AuthorizeBody {
            user_id: "u1".to_owned(),
            email: "a@example.com".to_owned(),
            token_usage: 3,
            token_quota: 10,
        };
        let read: AuthorizeResponse =
            serde_json::from_value(serde_json::to_value(&body).unwrap()).unwrap();
        assert_eq!(
            read,
            AuthorizeResponse {
                user_id: body.user_id,
                email: body.email,
                token_usage: body.token_usage,
                token_quota: body.token_quota,
            }
        );
    }
}
