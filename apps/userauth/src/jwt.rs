//! Access tokens: short-lived EdDSA (Ed25519) JWTs, signed with userauth's private key and
//! checked by anyone with its public key ([`AccessTokenVerifier`], which the other services use
//! too). The signature and the claims are checked here; whether a token has been revoked is the
//! blacklist's business ([`crate::service::AuthService`]).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use smartflow_userauth_contracts::{
    decode_base64, pem_contents, AccessTokenVerifier, PublicKey, TokenError, ALGORITHM,
};

pub use smartflow_userauth_contracts::{AccessClaims, AUDIENCE, ISSUER};

use crate::error::AuthError;

const PRIVATE_KEY_PEM_LABEL: &str = "PRIVATE KEY";

/// Userauth's Ed25519 signing key (PKCS#8). `Debug` shows its key id only.
#[derive(Clone)]
pub struct SigningKey {
    pkcs8: Vec<u8>,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid())
            .finish()
    }
}

impl SigningKey {
    /// A new key from the OS's random source.
    pub fn generate() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("the OS's random source gives an Ed25519 key");
        Self::from_pkcs8(pkcs8.as_ref()).expect("ring reads the key it made")
    }

    /// Parses a key as configured: PEM (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey
    /// -algorithm ed25519` writes) or base64 of the PKCS#8 DER. The error says what is wrong,
    /// never a byte of the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("it is empty".to_owned());
        }
        let der = if text.starts_with("-----BEGIN") {
            pem_contents(text, PRIVATE_KEY_PEM_LABEL)?
        } else {
            decode_base64(text).ok_or_else(|| "it is neither PEM nor base64".to_owned())?
        };
        Self::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| format!("it is not an Ed25519 private key in PKCS#8 ({e})"))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            pkcs8: der.to_vec(),
            public: PublicKey::from_bytes(public),
        })
    }

    /// The public key that verifies what this key signs.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key as PEM, as [`SigningKey::parse`] reads it back: what a process that wires its
    /// services together hands userauth.
    pub fn to_pem(&self) -> String {
        format!(
            "-----BEGIN {PRIVATE_KEY_PEM_LABEL}-----\n{}\n-----END {PRIVATE_KEY_PEM_LABEL}-----\n",
            STANDARD.encode(&self.pkcs8)
        )
    }
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

/// Signs access tokens with one Ed25519 key (its `kid` in every header) and checks them with
/// its public key.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    header: Header,
    verifier: AccessTokenVerifier,
    ttl: Duration,
}

impl AccessTokens {
    pub fn new(key: &SigningKey, ttl: Duration) -> Self {
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(key.public_key().kid().to_owned());
        Self {
            encoding: EncodingKey::from_ed_der(&key.pkcs8),
            header,
            verifier: AccessTokenVerifier::new(key.public_key().clone()),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The public key other services verify these tokens with.
    pub fn public_key(&self) -> &PublicKey {
        self.verifier.key()
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
        jsonwebtoken::encode(&self.header, claims, &self.encoding)
            .map_err(|e| AuthError::internal(format!("signing an access token failed: {e}")))
    }

    /// The claims of a token whose signature, algorithm, key, issuer, audience and expiry all
    /// check out ([`AccessTokenVerifier::verify`]). An expired token is `TokenExpired` only
    /// when its signature is good; anything else wrong is `InvalidToken`.
    pub fn decode(&self, token: &str) -> Result<AccessClaims, AuthError> {
        self.verifier.verify(token).map_err(|e| match e {
            TokenError::Expired => AuthError::TokenExpired,
            TokenError::Invalid => {
                tracing::debug!("refused an access token");
                AuthError::InvalidToken
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use smartflow_userauth_contracts::MAX_ACCESS_TOKEN_CHARS;

    use super::*;

    const NOW: i64 = 1_900_000_000_000;

    fn tokens(key: &SigningKey) -> AccessTokens {
        AccessTokens::new(key, Duration::from_secs(900))
    }

    /// `openssl genpkey -algorithm ed25519` (PKCS#8 v1) and its `openssl pkey -pubout`.
    const OPENSSL_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIHHUZfIacVurzAjDldZipcmuF9kXrfjzZr+CQ6Td6xFY
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAWci9A5P7IJ58MSq6sfHKU1BOOVkrgz6M9cGzzn/of9Q=
-----END PUBLIC KEY-----
";

    /// A token with `header` and `claims` as JSON and `signature` as its third part.
    fn assemble(header: &str, claims: &AccessClaims, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap())
        )
    }

    fn now_millis() -> i64 {
        smartflow_storage::now_millis()
    }

    #[test]
    fn a_fresh_token_decodes_to_its_claims() {
        let keys = tokens(&SigningKey::generate());
        let issued = keys.issue("user-1", "family-1", now_millis()).unwrap();
        let claims = keys.decode(&issued.token).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(issued.expires_at_millis(), claims.exp * 1000);
    }

    #[test]
    fn each_token_has_its_own_jti() {
        let keys = tokens(&SigningKey::generate());
        let a = keys.issue("u", "s", now_millis()).unwrap();
        let b = keys.issue("u", "s", now_millis()).unwrap();
        assert_ne!(a.claims.jti, b.claims.jti);
    }

    #[test]
    fn a_tampered_payload_is_invalid() {
        let keys = tokens(&SigningKey::generate());
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
        let ours = tokens(&SigningKey::generate());
        let theirs = tokens(&SigningKey::generate());
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
        let keys = tokens(&SigningKey::generate());
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

    #[test]
    fn keys_parse_from_openssl_pem_and_base64_and_round_trip() {
        let key = SigningKey::parse(OPENSSL_PRIVATE_PEM).unwrap();
        assert_eq!(
            key.public_key(),
            &PublicKey::parse(OPENSSL_PUBLIC_PEM).unwrap()
        );
        let again = SigningKey::parse(&key.to_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let der = "MC4CAQAwBQYDK2VwBCIEIHHUZfIacVurzAjDldZipcmuF9kXrfjzZr+CQ6Td6xFY";
        assert_eq!(
            SigningKey::parse(der).unwrap().public_key(),
            key.public_key()
        );
        // A generated key (PKCS#8 v2) survives PEM too, and signs what its public key verifies.
        let fresh = SigningKey::generate();
        let issuer = tokens(&SigningKey::parse(&fresh.to_pem()).unwrap());
        let token = issuer.issue("u", "s", now_millis()).unwrap().token;
        let verifier = AccessTokenVerifier::new(fresh.public_key().clone());
        assert_eq!(verifier.verify(&token).unwrap().sub, "u");
    }

    #[test]
    fn unusable_signing_keys_are_refused_with_the_reason_and_never_shown() {
        for (text, reason) in [
            ("", "empty"),
            ("not base64 !", "neither PEM nor base64"),
            ("AAAA", "not an Ed25519 private key"),
            (OPENSSL_PUBLIC_PEM, "BEGIN PRIVATE KEY"),
            (
                "-----BEGIN PRIVATE KEY-----\n***\n-----END PRIVATE KEY-----",
                "not base64",
            ),
        ] {
            let err = SigningKey::parse(text).unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
        let key = SigningKey::parse(OPENSSL_PRIVATE_PEM).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("MC4CAQAw"), "{shown}");
        assert!(shown.contains(key.public_key().kid()), "{shown}");
    }

    #[test]
    fn every_token_names_its_key_and_a_token_without_it_is_invalid() {
        let key = SigningKey::generate();
        let keys = tokens(&key);
        let issued = keys.issue("u", "s", now_millis()).unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, ALGORITHM);
        assert_eq!(header.kid.as_deref(), Some(key.public_key().kid()));
        // Signed by our key, but the header names no key or another one.
        for kid in [None, Some("another-key".to_owned())] {
            let mut header = Header::new(ALGORITHM);
            header.kid = kid;
            let token = jsonwebtoken::encode(
                &header,
                &issued.claims,
                &EncodingKey::from_ed_der(&key.pkcs8),
            )
            .unwrap();
            assert!(matches!(keys.decode(&token), Err(AuthError::InvalidToken)));
        }
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_invalid() {
        // The algorithm-confusion attack: the public key is public, so a verifier that let the
        // header choose HMAC would check an HS256 signature made with it as the secret.
        let key = SigningKey::generate();
        let keys = tokens(&key);
        let claims = keys.issue("u", "s", now_millis()).unwrap().claims;
        let public = key.public_key();
        for secret in [
            public.bytes().to_vec(),
            public.to_pem().into_bytes(),
            URL_SAFE_NO_PAD.encode(public.bytes()).into_bytes(),
        ] {
            let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some(public.kid().to_owned());
            let token =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
            assert!(matches!(keys.decode(&token), Err(AuthError::InvalidToken)));
        }
        // `alg: none` naming our key, with and without a signature part.
        let none = format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, public.kid());
        for signature in ["", "AAAA"] {
            let token = assemble(&none, &claims, signature);
            assert!(matches!(keys.decode(&token), Err(AuthError::InvalidToken)));
        }
    }

    #[test]
    fn an_oversized_token_is_invalid_unread() {
        let keys = tokens(&SigningKey::generate());
        let mut claims = keys.issue("u", "s", now_millis()).unwrap().claims;
        claims.sub = "u".repeat(MAX_ACCESS_TOKEN_CHARS);
        let token = keys.sign(&claims).unwrap();
        assert!(token.len() > MAX_ACCESS_TOKEN_CHARS);
        assert!(matches!(keys.decode(&token), Err(AuthError::InvalidToken)));
    }
}
