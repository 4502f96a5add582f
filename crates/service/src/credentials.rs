//! Service credentials: what tells a trusted service's request (another smartflow service, a
//! model runner, an operator's tool or a metrics scraper) from an end user's.
//!
//! Every service is configured with the credentials it accepts, `SMARTFLOW_SERVICE_TOKENS`
//! (`name=secret,name=secret`), and a caller presents its secret in
//! [`SERVICE_TOKEN_HEADER`]. The name is who the caller is: a service takes it from the
//! credential (say, as a notification's `requested_by`), never from the request. A service keeps
//! only each secret's SHA-256 digest (never logged, never shown by `Debug`) and compares the
//! presented secret's digest with every configured one in constant time, so neither a secret's
//! bytes nor its length can be learned from response times.
//!
//! [`ServiceCredentials::require`] guards routes that only services may call (401
//! `service_credential_required` otherwise); [`ServiceCredentials::caller`] is for routes that
//! end users call too but where a service may do more.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::http_error::HttpError;
pub use smartflow_domain::SERVICE_TOKEN_HEADER;

/// The setting the accepted credentials come from.
pub const SERVICE_TOKENS_SETTING: &str = "SMARTFLOW_SERVICE_TOKENS";
/// The shortest secret accepted: guessing 32 random characters is out of reach.
pub const MIN_SERVICE_TOKEN_BYTES: usize = 32;
/// The longest credential name (it ends up in logs and in records such as `requested_by`).
pub const MAX_SERVICE_NAME_CHARS: usize = 64;

/// A secret from the configuration. `Debug` shows nothing of it, and parsing never fails, so a
/// command-line error never repeats it either: it is checked where it is used, by name.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// 32 bytes from the OS's random source, as 64 hex digits: what a process that wires its
    /// own services together (the all-in-one binary) gives them.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The secret itself, to send or to check; never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(secret: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(secret))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a list of credentials was refused. No variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("entry {position} is not `name=secret`")]
    Malformed { position: usize },
    #[error(
        "the name `{name}` must be 1 to {MAX_SERVICE_NAME_CHARS} characters of letters, digits, \
         `_`, `.` and `-`"
    )]
    BadName { name: String },
    #[error("the secret of `{name}` must be at least {MIN_SERVICE_TOKEN_BYTES} bytes")]
    TooShort { name: String },
    #[error("the name `{name}` is given twice")]
    DuplicateName { name: String },
    #[error("`{first}` and `{second}` have the same secret; give every service its own")]
    DuplicateSecret { first: String, second: String },
}

struct Credential {
    name: String,
    digest: [u8; 32],
}

/// The credentials a service accepts (empty: only end users' requests, every service-only route
/// refused). Cheap to clone.
#[derive(Clone, Default)]
pub struct ServiceCredentials {
    credentials: Arc<[Credential]>,
}

impl ServiceCredentials {
    /// `name=secret` entries separated by commas (blank entries ignored), as
    /// `SMARTFLOW_SERVICE_TOKENS` gives them.
    pub fn parse(list: &str) -> Result<Self, CredentialError> {
        let mut pairs = Vec::new();
        for (index, entry) in list.split(',').enumerate() {
            if entry.trim().is_empty() {
                continue;
            }
            let (name, secret) = entry.split_once('=').ok_or(CredentialError::Malformed {
                position: index + 1,
            })?;
            pairs.push((name.trim(), secret.trim()));
        }
        Self::from_pairs(pairs)
    }

    /// The credentials `(name, secret)`.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CredentialError> {
        let mut credentials: Vec<Credential> = Vec::new();
        for (name, secret) in pairs {
            let name_ok = !name.is_empty()
                && name.chars().count() <= MAX_SERVICE_NAME_CHARS
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !name_ok {
                return Err(CredentialError::BadName {
                    name: name.chars().take(MAX_SERVICE_NAME_CHARS).collect(),
                });
            }
            if secret.len() < MIN_SERVICE_TOKEN_BYTES {
                return Err(CredentialError::TooShort {
                    name: name.to_owned(),
                });
            }
            let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
            for known in &credentials {
                if known.name == name {
                    return Err(CredentialError::DuplicateName {
                        name: name.to_owned(),
                    });
                }
                if known.digest == digest {
                    return Err(CredentialError::DuplicateSecret {
                        first: known.name.clone(),
                        second: name.to_owned(),
                    });
                }
            }
            credentials.push(Credential {
                name: name.to_owned(),
                digest,
            });
        }
        Ok(Self {
            credentials: credentials.into(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty()
    }

    /// The names of the accepted credentials, in configuration order.
    pub fn names(&self) -> Vec<&str> {
        self.credentials.iter().map(|c| c.name.as_str()).collect()
    }

    /// The name of the credential `presented` is, in time that depends on neither the
    /// presented secret nor which credential (if any) it matches.
    pub fn identify(&self, presented: &[u8]) -> Option<ServiceCaller> {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        // Every credential is compared, and the match is selected without a branch.
        let mut found = u32::MAX;
        for (index, credential) in self.credentials.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            found.conditional_assign(&index, presented[..].ct_eq(&credential.digest[..]));
        }
        let credential = self.credentials.get(usize::try_from(found).ok()?)?;
        Some(ServiceCaller {
            name: credential.name.clone(),
        })
    }

    /// The service a request comes from, by the credential in its [`SERVICE_TOKEN_HEADER`].
    pub fn caller(&self, headers: &HeaderMap) -> Option<ServiceCaller> {
        self.identify(headers.get(SERVICE_TOKEN_HEADER)?.as_bytes())
    }

    /// Middleware for `axum::middleware::from_fn_with_state(credentials, ServiceCredentials::require)`:
    /// a request without an accepted credential is answered 401 `service_credential_required`;
    /// one with it goes on, its [`ServiceCaller`] in the request's extensions.
    pub async fn require(
        State(credentials): State<Self>,
        mut request: Request,
        next: Next,
    ) -> Response {
        match credentials.caller(request.headers()) {
            Some(caller) => {
                request.extensions_mut().insert(caller);
                next.run(request).await
            }
            None => service_credential_required().into_response(),
        }
    }
}

impl fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("names", &self.names())
            .finish()
    }
}

/// A request without an accepted service credential on a route only services may call.
pub fn service_credential_required() -> HttpError {
    HttpError::new(
        StatusCode::UNAUTHORIZED,
        "service_credential_required",
        format!("this endpoint needs a service credential in {SERVICE_TOKEN_HEADER}"),
    )
}

/// The trusted service a request comes from: the name of the credential it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCaller {
    name: String,
}

impl ServiceCaller {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Extracts the caller [`ServiceCredentials::require`] found; on a route without that
/// middleware there is none, and the request is refused as if it had no credential.
impl<S: Send + Sync> FromRequestParts<S> for ServiceCaller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ServiceCaller>()
            .cloned()
            .ok_or_else(service_credential_required)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a-service-credential-of-32-bytes-or-more";
    const B: &str = "another-service-credential-of-32-bytes!!";

    fn two() -> ServiceCredentials {
        ServiceCredentials::parse(&format!("agent={A}, operator={B}")).unwrap()
    }

    #[test]
    fn a_presented_secret_names_its_service_and_nothing_else_matches() {
        let credentials = two();
        assert_eq!(credentials.names(), ["agent", "operator"]);
        assert_eq!(credentials.identify(A.as_bytes()).unwrap().name(), "agent");
        assert_eq!(
            credentials.identify(B.as_bytes()).unwrap().name(),
            "operator"
        );
        for wrong in [
            "",
            "agent",
            &format!("{A} "),
            &A[1..],
            &format!("agent={A}"),
        ] {
            assert_eq!(credentials.identify(wrong.as_bytes()), None, "{wrong}");
        }
        assert_eq!(ServiceCredentials::default().identify(A.as_bytes()), None);
    }

    #[test]
    fn bad_lists_are_refused_by_name_without_their_secrets() {
        let cases = [
            (format!("agent={A},{B}"), "entry 2 is not `name=secret`"),
            (format!("ag ent={A}"), "the name `ag ent`"),
            (format!("={A}"), "the name ``"),
            ("agent=short-secret".to_owned(), "the secret of `agent`"),
            (format!("agent={A},agent={B}"), "`agent` is given twice"),
            (format!("agent={A},other={A}"), "`agent` and `other`"),
        ];
        for (list, expected) in cases {
            let err = ServiceCredentials::parse(&list).unwrap_err().to_string();
            assert!(err.contains(expected), "{list}: {err}");
            assert!(
                !err.contains(A) && !err.contains(B) && !err.contains("short-secret"),
                "{err}"
            );
        }
        assert!(ServiceCredentials::parse(" , ").unwrap().is_empty());
    }

    #[test]
    fn secrets_never_reach_debug_output() {
        let shown = format!("{:?} {:?}", two(), Secret::new(A));
        assert!(!shown.contains(A) && !shown.contains(B), "{shown}");
        assert!(shown.contains("agent"), "{shown}");
        let random = Secret::random();
        assert_eq!(random.expose().len(), 64);
        assert_ne!(random, Secret::random());
    }
}
