//! The one error type of every service's HTTP API: a status, a stable code clients branch on and
//! a message, answered as an [`ErrorBody`](crate::ErrorBody). Internal failures are logged where
//! they happen and reach the client without details.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error_body::{error_response, ErrorChain};

/// A request's failure as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
}

impl HttpError {
    /// Any answer: a service's own codes (`missing_token`), or another service's verdict passed
    /// on unchanged.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400 `invalid_request`: the client's to fix.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this resource",
        )
    }

    /// 503 `unavailable`: something the request needs does not answer; trying later may work.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// Logs `error` with its whole source chain as the failure of `what`, and returns the
    /// detail-free 500 `internal` answer.
    pub fn internal(what: &str, error: &(dyn StdError + 'static)) -> Self {
        tracing::error!(error = %ErrorChain(error), "{what} failed");
        Self::internal_logged()
    }

    /// The detail-free 500 `internal` answer for a failure the caller has logged already.
    pub fn internal_logged() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code clients and other services branch on.
    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.code, self.message)
    }
}

impl From<JsonRejection> for HttpError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::payload_too_large("the request body is too large")
        } else {
            // Syntax errors, missing fields, wrong types and a missing content type alike: all
            // are the client's to fix, and one code keeps client error handling simple.
            HttpError::invalid_request(rejection.body_text())
        }
    }
}

impl From<PathRejection> for HttpError {
    fn from(rejection: PathRejection) -> Self {
        HttpError::invalid_request(rejection.body_text())
    }
}

impl From<QueryRejection> for HttpError {
    fn from(rejection: QueryRejection) -> Self {
        HttpError::invalid_request(rejection.body_text())
    }
}

/// The answer to a path no route serves (every service's fallback).
pub async fn not_found() -> HttpError {
    HttpError::not_found()
}

/// The answer to a method a route does not serve (every service's fallback).
pub async fn method_not_allowed() -> HttpError {
    HttpError::method_not_allowed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_show_nothing_of_their_cause() {
        let e = HttpError::internal("reading", &std::io::Error::other("password=hunter2 leaked"));
        assert_eq!(
            (e.status(), e.code(), e.message()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error"
            )
        );
    }

    #[test]
    fn a_passed_on_verdict_keeps_its_status_and_code() {
        let e = HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            String::from("quota_exceeded"),
            "token quota used up",
        );
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code(), "quota_exceeded");
        assert_eq!(e.to_string(), "429 quota_exceeded: token quota used up");
    }
}
