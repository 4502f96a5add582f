//! What a userauth operation can answer instead of success. Every variant but `Internal` is the
//! caller's to see, as a stable `code` and a message; `Internal` carries the cause for the log and
//! reaches the caller as a bare "internal error".

use std::error::Error as StdError;

use axum::http::StatusCode;
use smartflow_storage::StorageError;
use thiserror::Error;

/// Why a request was refused or failed.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Malformed or out-of-bounds input: empty or oversized fields, bad JSON.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    InvalidEmail(String),
    #[error("{0}")]
    WeakPassword(String),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Unknown email and wrong password alike, so the answer does not tell which accounts exist.
    #[error("the email or password is wrong")]
    InvalidCredentials,
    #[error("an `Authorization: Bearer <access token>` header is required")]
    MissingToken,
    /// A token that is malformed, signed with another key, altered, or meant for someone else.
    #[error("the access token is not valid")]
    InvalidToken,
    #[error("the access token has expired; refresh it or log in again")]
    TokenExpired,
    #[error("the access token has been revoked; log in again")]
    TokenRevoked,
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    #[error("the refresh token has expired; log in again")]
    RefreshTokenExpired,
    #[error("the refresh token has been revoked; log in again")]
    RefreshTokenRevoked,
    /// A retired refresh token came back: someone holds a copy. Its whole family is revoked.
    #[error(
        "the refresh token was already used; as a precaution every token of this session has \
         been revoked; log in again"
    )]
    RefreshTokenReused,
    /// A password change whose `current_password` does not match the account's.
    #[error("the current password is wrong")]
    WrongPassword,
    /// The session reached its absolute lifetime; refreshing cannot extend it.
    #[error("the session has reached its maximum lifetime; log in again")]
    SessionExpired,
    #[error("token quota used up: {usage} of {quota} tokens")]
    QuotaExceeded { usage: i64, quota: i64 },
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
    /// A failure of ours; the cause is logged, never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl AuthError {
    pub fn internal(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        AuthError::Internal(cause.into())
    }

    /// The stable code clients and other services branch on.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::PayloadTooLarge => "payload_too_large",
            AuthError::InvalidEmail(_) => "invalid_email",
            AuthError::WeakPassword(_) => "weak_password",
            AuthError::EmailTaken => "email_taken",
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidToken => "invalid_token",
            AuthError::TokenExpired => "token_expired",
            AuthError::TokenRevoked => "token_revoked",
            AuthError::InvalidRefreshToken => "invalid_refresh_token",
            AuthError::RefreshTokenExpired => "refresh_token_expired",
            AuthError::RefreshTokenRevoked => "refresh_token_revoked",
            AuthError::RefreshTokenReused => "refresh_token_reused",
            AuthError::WrongPassword => "wrong_password",
            AuthError::SessionExpired => "session_expired",
            AuthError::QuotaExceeded { .. } => "quota_exceeded",
            AuthError::NotFound => "not_found",
            AuthError::MethodNotAllowed => "method_not_allowed",
            AuthError::Unavailable(_) => "unavailable",
            AuthError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::InvalidRequest(_)
            | AuthError::InvalidEmail(_)
            | AuthError::WeakPassword(_) => StatusCode::BAD_REQUEST,
            AuthError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AuthError::EmailTaken => StatusCode::CONFLICT,
            AuthError::InvalidCredentials
            | AuthError::MissingToken
            | AuthError::InvalidToken
            | AuthError::TokenExpired
            | AuthError::TokenRevoked
            | AuthError::InvalidRefreshToken
            | AuthError::RefreshTokenExpired
            | AuthError::RefreshTokenRevoked
            | AuthError::RefreshTokenReused
            | AuthError::SessionExpired => StatusCode::UNAUTHORIZED,
            // The access token is fine; the request is refused for the password it carries.
            AuthError::WrongPassword => StatusCode::FORBIDDEN,
            AuthError::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthError::NotFound => StatusCode::NOT_FOUND,
            AuthError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the failure is about a presented access token (answered with `WWW-Authenticate`).
    pub fn is_bearer_failure(&self) -> bool {
        matches!(
            self,
            AuthError::MissingToken
                | AuthError::InvalidToken
                | AuthError::TokenExpired
                | AuthError::TokenRevoked
        )
    }
}

impl AuthError {
    /// Whether this is an internal failure caused by a conflict with another transaction
    /// (deadlock, serialization failure, busy SQLite), which running the operation again can cure.
    pub fn is_transient_conflict(&self) -> bool {
        let AuthError::Internal(cause) = self else {
            return false;
        };
        if let Some(e) = cause.downcast_ref::<StorageError>() {
            return smartflow_storage::conflict::is_transient_conflict(e);
        }
        cause
            .downcast_ref::<sea_orm::DbErr>()
            .is_some_and(smartflow_storage::conflict::is_transient_db_conflict)
    }
}

impl From<StorageError> for AuthError {
    fn from(e: StorageError) -> Self {
        AuthError::internal(e)
    }
}

impl From<sea_orm::DbErr> for AuthError {
    fn from(e: sea_orm::DbErr) -> Self {
        AuthError::internal(e)
    }
}

/// Displays an error followed by its sources, `outer: inner: innermost`, for logs.
pub use smartflow_service::ErrorChain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_show_nothing_of_their_cause() {
        let e = AuthError::internal(std::io::Error::other("password=hunter2 leaked"));
        assert_eq!(e.to_string(), "internal error");
        assert_eq!(e.code(), "internal");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            ErrorChain(&e).to_string().contains("hunter2"),
            "the log gets the cause"
        );
    }

    #[test]
    fn unknown_user_and_wrong_password_are_one_answer() {
        // There is only one variant for both; this pins its wire form.
        let e = AuthError::InvalidCredentials;
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::UNAUTHORIZED, "invalid_credentials")
        );
    }

    #[test]
    fn quota_is_429() {
        let e = AuthError::QuotaExceeded {
            usage: 10,
            quota: 10,
        };
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.to_string(), "token quota used up: 10 of 10 tokens");
    }
}
