//! The JSON error body every service's HTTP API answers with, the health check's database ping,
//! and the error-chain formatting used to log failures.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};

/// How long `/healthz` waits for the database to answer a ping.
pub const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The wire form of every error: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What failed: a stable code clients branch on, and a message for people.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `invalid_request`, `not_found`, `service_credential_required`, `internal`, ...
    pub code: String,
    pub message: String,
}

/// The response for a failed request: `status` with an [`ErrorBody`] of `code` and `message`.
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
        },
    };
    (status, Json(body)).into_response()
}

/// Whether the database answers a ping within [`HEALTH_PING_TIMEOUT`]; a failure is logged.
pub async fn database_answers(db: &DatabaseConnection) -> bool {
    match tokio::time::timeout(HEALTH_PING_TIMEOUT, db.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: the database does not answer");
            false
        }
        Err(_) => {
            tracing::warn!("health check: the database ping timed out");
            false
        }
    }
}

/// Displays an error followed by its sources, `outer: inner: innermost`, for logs.
pub struct ErrorChain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(inner) = source {
            write!(f, ": {inner}")?;
            source = inner.source();
        }
        Ok(())
    }
}
