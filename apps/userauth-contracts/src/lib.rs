//! The userauth service's contracts: how other services check its access tokens (the public
//! key and [`AccessTokenVerifier`], then the client that asks `GET /v1/auth/authorize` or
//! `/v1/auth/me`), its answers, and the bearer-token parsing both sides share. A service that
//! authenticates its users through userauth depends on this crate, never on
//! `smartflow-userauth`.
//!
//! Trust: [`UserauthClient`] verifies a token's signature, issuer, audience and expiry with
//! userauth's configured public key before it asks anything, and the user it returns is the
//! token's `sub`, never the one in userauth's answer. So whoever answers on userauth's address
//! can refuse a token (revoked, over quota) but cannot make a service accept one userauth did
//! not sign: a forged or foreign token is refused without a request.
//!
//! `GET /v1/auth/authorize` is a service's call, not an end user's: the client presents its
//! service credential (one of userauth's `SMARTFLOW_SERVICE_TOKENS`) in
//! [`SERVICE_TOKEN_HEADER`], and userauth answers 401 `service_credential_required` without it.
//!
//! Why still over HTTP rather than reading userauth's tables: the blacklist and the usage
//! ledger stay userauth's alone (no other service coupled to these tables or to sharing a
//! database with userauth), and a revocation is seen by every service on its very next request.
//! The price is one loopback round trip per checked request.

mod access_token;

use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use access_token::{
    decode_base64, pem_contents, AccessClaims, AccessTokenVerifier, KeyError, PublicKey,
    TokenError, ALGORITHM, AUDIENCE, ISSUER, MAX_ACCESS_TOKEN_CHARS,
};
pub use smartflow_domain::SERVICE_TOKEN_HEADER;

/// The code of userauth's 401 to a request without an accepted service credential.
const SERVICE_CREDENTIAL_REQUIRED: &str = "service_credential_required";

/// What `GET /v1/auth/authorize` answers for a user who may go on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeResponse {
    pub user_id: String,
    pub email: String,
    pub token_usage: i64,
    pub token_quota: i64,
}

/// The part of `GET /v1/auth/me` that [`UserauthClient::identify`] reads.
#[derive(Debug, Deserialize)]
struct Identity {
    user_id: String,
}

/// The error answer every smartflow service gives: `{"error": {"code", "message"}}`.
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error: ErrorAnswerDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorAnswerDetail {
    code: String,
    message: String,
}

/// The token of an `Authorization: Bearer <token>` header value (the scheme is case-insensitive).
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Why a user may not go on, or why we could not find out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthorizeError {
    /// The token was refused: by this service's own check (401 `invalid_token`,
    /// `token_expired`) or by userauth, 401 (`missing_token`, `invalid_token`,
    /// `token_expired`, `token_revoked`) or 429 (`quota_exceeded`). Pass `status`, `code` and
    /// `message` on to the caller unchanged.
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

impl From<TokenError> for AuthorizeError {
    fn from(error: TokenError) -> Self {
        let code = match error {
            TokenError::Expired => "token_expired",
            TokenError::Invalid => "invalid_token",
        };
        Self::Rejected {
            status: 401,
            code: code.to_owned(),
            message: error.to_string(),
        }
    }
}

/// Checks access tokens: itself first, with userauth's public key, then by asking userauth
/// whether it may still be served (revocation, quota). `Debug` hides the service credential.
#[derive(Clone)]
pub struct UserauthClient {
    http: reqwest::Client,
    verifier: AccessTokenVerifier,
    authorize_url: String,
    me_url: String,
    service_token: reqwest::header::HeaderValue,
}

impl std::fmt::Debug for UserauthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserauthClient")
            .field("authorize_url", &self.authorize_url)
            .field("me_url", &self.me_url)
            .field("verifier", &self.verifier)
            .field("service_token", &"<redacted>")
            .finish()
    }
}

impl UserauthClient {
    /// A client for the userauth at `base_url` (e.g. `http://127.0.0.1:8081`) whose tokens
    /// `verifier` checks (userauth's public key), presenting the service credential
    /// `service_token`, giving up on a request after `timeout`.
    pub fn new(
        base_url: &str,
        verifier: AccessTokenVerifier,
        timeout: Duration,
        service_token: &str,
    ) -> Result<Self, AuthorizeError> {
        let mut service_token =
            reqwest::header::HeaderValue::from_str(service_token).map_err(|_| {
                AuthorizeError::Unavailable(
                    "the service credential is not a valid header value".to_owned(),
                )
            })?;
        service_token.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| AuthorizeError::Unavailable(format!("building the HTTP client: {e}")))?;
        let base_url = base_url.trim_end_matches('/');
        Ok(Self {
            http,
            verifier,
            authorize_url: format!("{base_url}/v1/auth/authorize"),
            me_url: format!("{base_url}/v1/auth/me"),
            service_token,
        })
    }

    /// Verifies `access_token` here (signature, issuer, audience, expiry), then asks userauth
    /// about its revocation and the user's quota. `Ok` carries userauth's answer for the
    /// token's user; its `user_id` is the token's `sub`, and an answer about anyone else is
    /// [`AuthorizeError::Unavailable`]. Use that id, never one the client sent.
    pub async fn authorize(&self, access_token: &str) -> Result<AuthorizeResponse, AuthorizeError> {
        let claims = self.verifier.verify(access_token)?;
        let answer: AuthorizeResponse = self.ask(&self.authorize_url, access_token).await?;
        same_user(&claims, &answer.user_id)?;
        Ok(answer)
    }

    /// The same checks without the quota, through `GET /v1/auth/me`: the token's user id, for
    /// requests a user at the quota may still make (reading what is theirs).
    pub async fn identify(&self, access_token: &str) -> Result<String, AuthorizeError> {
        let claims = self.verifier.verify(access_token)?;
        let identity: Identity = self.ask(&self.me_url, access_token).await?;
        same_user(&claims, &identity.user_id)?;
        Ok(claims.sub)
    }

    /// `GET url` with the bearer token: the 200 body, or userauth's refusal (401, 429).
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        access_token: &str,
    ) -> Result<T, AuthorizeError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header(SERVICE_TOKEN_HEADER, self.service_token.clone())
            .send()
            .await
            .map_err(|e| AuthorizeError::Unavailable(format!("GET {url}: {e}")))?;
        let status = response.status();
        if status == StatusCode::OK {
            return response
                .json::<T>()
                .await
                .map_err(|e| AuthorizeError::Unavailable(format!("unreadable answer: {e}")));
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS {
            let body = response.json::<ErrorAnswer>().await.map_err(|e| {
                AuthorizeError::Unavailable(format!("unreadable {status} answer: {e}"))
            })?;
            if body.error.code == SERVICE_CREDENTIAL_REQUIRED {
                // Not the user's fault: this service's own credential was refused.
                return Err(AuthorizeError::Unavailable(
                    "userauth refused this service's credential".to_owned(),
                ));
            }
            return Err(AuthorizeError::Rejected {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
            });
        }
        Err(AuthorizeError::Unavailable(format!("answered {status}")))
    }
}

/// Userauth answers about the token's user or it is not userauth answering.
fn same_user(claims: &AccessClaims, answered: &str) -> Result<(), AuthorizeError> {
    if answered == claims.sub {
        Ok(())
    } else {
        Err(AuthorizeError::Unavailable(
            "userauth answered for another user than the token's".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer  "), None);
    }
}
