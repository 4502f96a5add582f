//! The service credential: a shared secret (`SMARTFLOW_SERVICE_TOKEN`) that a trusted service
//! (the model behind the chat, an operator's tool) sends in `X-Smartflow-Service-Token`, next
//! to the user's token, to post `assistant` and `system` messages into that user's
//! conversation. End users never hold it, so they can post `user` messages only.
//!
//! The smallest honest mechanism until services get credentials of their own: one secret for
//! every trusted service, kept only as its SHA-256 digest (never logged, never shown by
//! `Debug`), and compared in constant time, digest against digest, so neither the secret's
//! bytes nor its length can be learned from response times.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest secret accepted: guessing 32 random characters is out of reach.
pub const MIN_SERVICE_TOKEN_BYTES: usize = 32;

/// The configured service credential.
#[derive(Clone)]
pub struct ServiceToken {
    digest: [u8; 32],
}

impl ServiceToken {
    /// The credential `secret`; refused if shorter than [`MIN_SERVICE_TOKEN_BYTES`].
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.len() < MIN_SERVICE_TOKEN_BYTES {
            return Err(format!(
                "SMARTFLOW_SERVICE_TOKEN must be at least {MIN_SERVICE_TOKEN_BYTES} bytes"
            ));
        }
        Ok(Self {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the credential, in time that depends on neither.
    pub fn is_presented_by(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(&self.digest).into()
    }
}

impl FromStr for ServiceToken {
    type Err = String;

    fn from_str(secret: &str) -> Result<Self, Self::Err> {
        Self::new(secret)
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-service-credential-of-32-bytes-or-more";

    #[test]
    fn only_the_secret_itself_matches() {
        let token = ServiceToken::new(SECRET).unwrap();
        assert!(token.is_presented_by(SECRET.as_bytes()));
        for wrong in [
            "",
            "a-service-credential",
            &format!("{SECRET} "),
            &SECRET[1..],
        ] {
            assert!(!token.is_presented_by(wrong.as_bytes()), "{wrong}");
        }
    }

    #[test]
    fn short_secrets_are_refused_and_none_is_shown() {
        assert!(ServiceToken::new("too short").is_err());
        let shown = format!("{:?}", ServiceToken::new(SECRET).unwrap());
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
