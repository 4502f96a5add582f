//! What a userauth operation can answer instead of success. Every variant but `Internal` is the
//! caller's to see, as a stable `code` and a message; `Internal` carries the cause for the log and
//! reaches the caller as a bare "internal error".

use std::error::Error as StdError;
use std::time::Duration;

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
    /// Too many log-ins, registrations or refreshes from one client address or for one account.
    #[error("too many attempts; try again in {} seconds", retry_after_secs(*.retry_after))]
    RateLimited { retry_after: Duration },
    /// Every password-hashing slot and its queue are taken: the flood is refused rather than
    /// queued, so the requests already waiting are served.
    #[error("too many log-ins at once; try again shortly")]
    HashingBusy,
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
            AuthError::RateLimited { .. } => "rate_limited",
            AuthError::HashingBusy => "busy",
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
            AuthError::QuotaExceeded { .. } | AuthError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AuthError::HashingBusy => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::NotFound => StatusCode::NOT_FOUND,
            AuthError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Retry-After` of the answer, in whole seconds, when the caller should wait.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AuthError::RateLimited { retry_after } => Some(retry_after_secs(*retry_after)),
            AuthError::HashingBusy => Some(1),
            _ => None,
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

/// A wait in whole seconds, rounded up and at least one, as `Retry-After` wants it.
fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
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
    fn throttling_says_when_to_come_back() {
        let e = AuthError::RateLimited {
            retry_after: Duration::from_millis(2_100),
        };
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        assert_eq!(e.retry_after_secs(), Some(3));
        let e = AuthError::RateLimited {
            retry_after: Duration::ZERO,
        };
        assert_eq!(e.retry_after_secs(), Some(1));
        let e = AuthError::RateLimited {
            retry_after: Duration::from_secs(4),
        };
        assert_eq!(e.retry_after_secs(), Some(4));
        assert_eq!(
            AuthError::HashingBusy.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(AuthError::HashingBusy.retry_after_secs(), Some(1));
        assert_eq!(AuthError::InvalidCredentials.retry_after_secs(), None);
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
