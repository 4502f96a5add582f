//! The verifier other services use: a small HTTP client for `GET /v1/auth/authorize`.
//!
//! Why over HTTP rather than reading userauth's tables: the signing secret, the blacklist and the
//! usage ledger stay userauth's alone (no second copy of the secret, no other service coupled to
//! these tables or to sharing a database with userauth), and a revocation is seen by every
//! service on its very next request. The price is one loopback round trip per checked request.

use std::time::Duration;

use reqwest::StatusCode;
use thiserror::Error;

use crate::http::{AuthorizeResponse, ErrorBody};

/// Why a user may not go on, or why we could not find out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthorizeError {
    /// Userauth refused: 401 (`missing_token`, `invalid_token`, `token_expired`,
    /// `token_revoked`) or 429 (`quota_exceeded`). Pass `status`, `code` and `message` on to the
    /// caller unchanged.
    #[error("{code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// Userauth could not be asked or answered something unexpected. The text is for the log;
    /// the caller should get a detail-free 503.
    #[error("userauth is unavailable: {0}")]
    Unavailable(String),
}

/// Asks a userauth service whether an access token may be served.
#[derive(Debug, Clone)]
pub struct UserauthClient {
    http: reqwest::Client,
    authorize_url: String,
}

impl UserauthClient {
    /// A client for the userauth at `base_url` (e.g. `http://127.0.0.1:8081`), giving up on a
    /// request after `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, AuthorizeError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| AuthorizeError::Unavailable(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            authorize_url: format!("{}/v1/auth/authorize", base_url.trim_end_matches('/')),
        })
    }

    /// Checks `access_token` (signature, expiry, blacklist) and the user's quota. `Ok` carries
    /// the user id to act for; use it, never a user id the client sent.
    pub async fn authorize(&self, access_token: &str) -> Result<AuthorizeResponse, AuthorizeError> {
        let response = self
            .http
            .get(&self.authorize_url)
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| AuthorizeError::Unavailable(format!("GET {}: {e}", self.authorize_url)))?;
        let status = response.status();
        if status == StatusCode::OK {
            return response
                .json::<AuthorizeResponse>()
                .await
                .map_err(|e| AuthorizeError::Unavailable(format!("unreadable answer: {e}")));
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS {
            let body = response.json::<ErrorBody>().await.map_err(|e| {
                AuthorizeError::Unavailable(format!("unreadable {status} answer: {e}"))
            })?;
            return Err(AuthorizeError::Rejected {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            });
        }
        Err(AuthorizeError::Unavailable(format!("answered {status}")))
    }
}
