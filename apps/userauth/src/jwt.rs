//! Access tokens: short-lived HS256 JWTs. The signature and the claims are checked here; whether a
//! token has been revoked is the blacklist's business ([`crate::service::AuthService`]).

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::validation::MAX_TOKEN_CHARS;

/// The `iss` of every access token.
pub const ISSUER: &str = "smartflow-userauth";
/// The `aud` of every access token: the smartflow services that accept them.
pub const AUDIENCE: &str = "smartflow";

/// The claims of an access token. Times are JWT NumericDates (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// This token's id: what the blacklist holds after log-out.
    pub jti: String,
    /// The session (refresh-token family) the token was issued in; log-out revokes it.
    pub sid: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// A freshly signed access token.
#[derive(Debug, Clone)]
pub struct IssuedAccessToken {
    pub token: String,
    pub claims: AccessClaims,
}

impl IssuedAccessToken {
    /// When the token expires, in Unix milliseconds, as the database columns hold time.
    pub fn expires_at_millis(&self) -> i64 {
        self.claims.exp.saturating_mul(1000)
    }
}

/// Signs and checks access tokens with one HS256 secret.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl AccessTokens {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is exact: no grace period beyond `exp`.
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new token for `user_id` in session `sid`, issued at `now_millis`, with a fresh `jti`.
    pub fn issue(
        &self,
        user_id: &str,
        sid: &str,
        now_millis: i64,
    ) -> Result<IssuedAccessToken, AuthError> {
        let iat = now_millis.div_euclid(1000);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            sid: sid.to_owned(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat,
            exp: iat.saturating_add(ttl),
        };
        let token = self.sign(&claims)?;
        Ok(IssuedAccessToken { token, claims })
    }

    /// Signs any claims with this key: what `issue` uses, and what tests use to make tokens that
    /// are expired or otherwise wrong yet correctly signed.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::internal(format!("signing an access token failed: {e}")))
    }

    /// The claims of a token whose signature, algorithm, issuer, audience and expiry all check
    /// out. An expired token is `TokenExpired` only when its signature is good; anything else
    /// wrong is `InvalidToken`.
    pub fn decode(&self, token: &str) -> Result<AccessClaims, AuthError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(AuthError::InvalidToken);
        }
        match jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => {
                Err(AuthError::TokenExpired)
            }
            Err(e) => {
                tracing::debug!(error = %e, "refused an access token");
                Err(AuthError::InvalidToken)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use super::*;

    const NOW: i64 = 1_900_000_000_000;

    fn tokens(secret: &[u8]) -> AccessTokens {
        AccessTokens::new(secret, Duration::from_secs(900))
    }

    fn now_millis() -> i64 {
        smartflow_storage::now_millis()
    }

    #[test]
    fn a_fresh_token_decodes_to_its_claims() {
        let keys = tokens(b"0123456789abcdef0123456789abcdef");
        let issued = keys.issue("user-1", "family-1", now_millis()).unwrap();
        let claims = keys.decode(&issued.token).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(issued.expires_at_millis(), claims.exp * 1000);
    }

    #[test]
    fn each_token_has_its_own_jti() {
        let keys = tokens(b"0123456789abcdef0123456789abcdef");
        let a = keys.issue("u", "s", now_millis()).unwrap();
        let b = keys.issue("u", "s", now_millis()).unwrap();
        assert_ne!(a.claims.jti, b.claims.jti);
    }

    #[test]
    fn a_tampered_payload_is_invalid() {
        let keys = tokens(b"0123456789abcdef0123456789abcdef");
        let issued = keys.issue("user-1", "family-1", now_millis()).unwrap();
        let parts: Vec<&str> = issued.token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = "someone-else".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        assert!(matches!(keys.decode(&forged), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn another_key_is_invalid_and_expiry_needs_a_good_signature() {
        let ours = tokens(b"0123456789abcdef0123456789abcdef");
        let theirs = tokens(b"fedcba9876543210fedcba9876543210");
        let foreign = theirs.issue("user-1", "family-1", now_millis()).unwrap();
        assert!(matches!(
            ours.decode(&foreign.token),
            Err(AuthError::InvalidToken)
        ));

        let mut old = ours.issue("user-1", "family-1", NOW).unwrap().claims;
        old.iat = now_millis() / 1000 - 120;
        old.exp = now_millis() / 1000 - 60;
        assert!(matches!(
            ours.decode(&ours.sign(&old).unwrap()),
            Err(AuthError::TokenExpired)
        ));
        assert!(matches!(
            ours.decode(&theirs.sign(&old).unwrap()),
            Err(AuthError::InvalidToken)
        ));
    }

    #[test]
    fn wrong_issuer_audience_algorithm_or_garbage_is_invalid() {
        let keys = tokens(b"0123456789abcdef0123456789abcdef");
        let good = keys.issue("u", "s", now_millis()).unwrap().claims;
        let mut wrong_iss = good.clone();
        wrong_iss.iss = "someone".into();
        let mut wrong_aud = good.clone();
        wrong_aud.aud = "elsewhere".into();
        for claims in [wrong_iss, wrong_aud] {
            assert!(matches!(
                keys.decode(&keys.sign(&claims).unwrap()),
                Err(AuthError::InvalidToken)
            ));
        }
        // alg=none with the claims intact and no signature.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_string(&good).unwrap());
        for token in [
            format!("{header}.{body}."),
            "not-a-jwt".to_owned(),
            String::new(),
        ] {
            assert!(
                matches!(keys.decode(&token), Err(AuthError::InvalidToken)),
                "{token}"
            );
        }
    }
}
