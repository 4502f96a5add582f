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
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use smartflow_service::openapi::Operation;
use smartflow_service::{HttpError, ServiceCredentials};
use smartflow_storage::users::User;

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

/// The operations [`router`] answers, for `/openapi.json`.
pub fn operations() -> Vec<Operation> {
    vec![
        Operation::post("/v1/auth/register", "Create an account"),
        Operation::post("/v1/auth/login", "Log in: an access and a refresh token"),
        Operation::post("/v1/auth/refresh", "Rotate a refresh token"),
        Operation::post("/v1/auth/logout", "End this session"),
        Operation::post("/v1/auth/logout-all", "End every session of the account"),
        Operation::post("/v1/auth/password", "Change the password"),
        Operation::get("/v1/auth/me", "The caller's account"),
        Operation::get("/v1/auth/authorize", "Check an access token for a service").for_services(),
    ]
}

/// The API's own routes over `state` (the skeleton adds `/healthz`, `/metrics` and the JSON
/// fallbacks).
pub fn router(state: ApiState) -> Router {
    let services_only = axum::middleware::from_fn_with_state(
        state.credentials.clone(),
        ServiceCredentials::require,
    );
    Router::new()
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/logout-all", post(logout_everywhere))
        .route("/v1/auth/password", post(change_password))
        .route("/v1/auth/me", get(me))
        .route(
            "/v1/auth/authorize",
            get(authorize).route_layer(services_only),
        )
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub user_id: String,
    pub email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeResponse {
    pub user_id: String,
    pub email: String,
    pub token_usage: i64,
    pub token_quota: i64,
    /// RFC 3339, UTC, millisecond precision.
    pub created_at: String,
}

fn authorized(user: User) -> AuthorizeResponse {
    AuthorizeResponse {
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

async fn logout(
    State(service): State<AuthService>,
    headers: HeaderMap,
) -> Result<StatusCode, AuthError> {
    let principal = principal(&service, &headers).await?;
    service.logout(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout_everywhere(
    State(service): State<AuthService>,
    headers: HeaderMap,
) -> Result<StatusCode, AuthError> {
    let principal = principal(&service, &headers).await?;
    service.logout_everywhere(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}

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

async fn authorize(
    State(service): State<AuthService>,
    headers: HeaderMap,
) -> Result<Json<AuthorizeResponse>, AuthError> {
    let user = service.authorize(presented_token(&headers)?).await?;
    Ok(Json(authorized(user)))
}
