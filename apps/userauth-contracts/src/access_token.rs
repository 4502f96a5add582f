//! Userauth's access tokens as every service checks them: EdDSA (Ed25519) JWTs, verified with
//! userauth's public key alone. A service holding only the public key can tell a token userauth
//! signed from anything else, and cannot sign one itself; so whoever answers on userauth's
//! address can refuse a token (revoked, over quota) but never vouch for one.
//!
//! The checks, in order: the token's size, its header (`alg` must be `EdDSA`, nothing else is
//! even tried, so `alg: none` and HS256 with the public key as its secret are refused before
//! any signature check; `kid` must name the configured key), the signature, then the claims
//! (`iss`, `aud`, `exp` with no leeway, `sub`, `jti` and `sid` present).

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// The `iss` of every access token.
pub const ISSUER: &str = "smartflow-userauth";
/// The `aud` of every access token: the smartflow services that accept them.
pub const AUDIENCE: &str = "smartflow";
/// The longest access token looked at; a longer one is invalid without being parsed.
pub const MAX_ACCESS_TOKEN_CHARS: usize = 4096;
/// The one algorithm access tokens are signed with.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;

/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const PUBLIC_KEY_PEM_LABEL: &str = "PUBLIC KEY";

/// The claims of an access token. Times are JWT NumericDates (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// This token's id: what userauth's blacklist holds after log-out.
    pub jti: String,
    /// The session (refresh-token family) the token was issued in; log-out revokes it.
    pub sid: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    /// Well signed by the configured key, but past its `exp`.
    #[error("the access token has expired")]
    Expired,
    /// Anything else: not a JWT, another algorithm or key, a bad signature, wrong claims.
    #[error("the access token is not valid")]
    Invalid,
}

/// A public key that cannot be used, naming what is wrong with it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not an Ed25519 public key: {0}")]
pub struct KeyError(pub String);

/// Userauth's Ed25519 public key, and its key id (`kid`): the RFC 7638 thumbprint of its JWK.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    kid: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).finish()
    }
}

impl PublicKey {
    /// The key of 32 raw Ed25519 public-key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let x = URL_SAFE_NO_PAD.encode(bytes);
        // RFC 7638: the required members in lexicographic order, no whitespace.
        let jwk = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.as_bytes()));
        Self { bytes, kid }
    }

    /// Parses a key as configured: PEM (`-----BEGIN PUBLIC KEY-----`, what `openssl pkey
    /// -pubout` writes), or base64 (standard or URL-safe, padded or not) of the DER
    /// `SubjectPublicKeyInfo` or of the 32 raw key bytes.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError("it is empty".to_owned()));
        }
        let der = if text.starts_with("-----BEGIN") {
            pem_contents(text, PUBLIC_KEY_PEM_LABEL).map_err(KeyError)?
        } else {
            decode_base64(text)
                .ok_or_else(|| KeyError("it is neither PEM nor base64".to_owned()))?
        };
        let raw: &[u8] = match der.len() {
            32 => &der,
            44 if der[..12] == SPKI_PREFIX => &der[12..],
            44 => {
                return Err(KeyError(
                    "it is a public key of another algorithm (Ed25519 is needed)".to_owned(),
                ))
            }
            n => {
                return Err(KeyError(format!(
                    "it holds {n} bytes; an Ed25519 key is 32 raw bytes or a 44-byte \
                     SubjectPublicKeyInfo"
                )))
            }
        };
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(raw);
        Ok(Self::from_bytes(bytes))
    }

    /// The 32 raw key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The key id every token signed with the matching private key carries in its header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as PEM, as [`PublicKey::parse`] reads it back.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.bytes);
        format!(
            "-----BEGIN {PUBLIC_KEY_PEM_LABEL}-----\n{}\n-----END {PUBLIC_KEY_PEM_LABEL}-----\n",
            STANDARD.encode(der)
        )
    }
}

/// The base64 between a PEM block's `BEGIN` and `END` lines labelled `label`, decoded.
pub fn pem_contents(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .trim()
        .strip_prefix(begin.as_str())
        .and_then(|rest| rest.trim_end().strip_suffix(end.as_str()))
        .ok_or_else(|| format!("a PEM key here must be one `{begin}` block"))?;
    let joined: String = body.split_whitespace().collect();
    STANDARD
        .decode(joined)
        .map_err(|_| "its PEM body is not base64".to_owned())
}

/// Base64 in any of its usual spellings (standard or URL-safe, padded or not).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let unpadded = text.trim_end_matches('=');
    let url_safe = unpadded.replace('+', "-").replace('/', "_");
    URL_SAFE_NO_PAD.decode(url_safe).ok()
}

/// Checks access tokens against userauth's public key; see the module's documentation.
#[derive(Clone)]
pub struct AccessTokenVerifier {
    key: PublicKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for AccessTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenVerifier")
            .field("kid", &self.key.kid)
            .finish()
    }
}

impl AccessTokenVerifier {
    pub fn new(key: PublicKey) -> Self {
        // Pinned to EdDSA: the header's `alg` is never believed.
        let mut validation = Validation::new(ALGORITHM);
        // Expiry is exact: no grace period beyond `exp`.
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Self {
            decoding: DecodingKey::from_ed_der(key.bytes()),
            key,
            validation,
        }
    }

    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The claims of a token whose size, algorithm, key id, signature, issuer, audience and
    /// expiry all check out. An expired token is [`TokenError::Expired`] only when its
    /// signature is good; anything else wrong is [`TokenError::Invalid`].
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_ACCESS_TOKEN_CHARS {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != ALGORITHM || header.kid.as_deref() != Some(self.key.kid()) {
            return Err(TokenError::Invalid);
        }
        match jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genpkey -algorithm ed25519 | openssl pkey -pubout`.
    const OPENSSL_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAWci9A5P7IJ58MSq6sfHKU1BOOVkrgz6M9cGzzn/of9Q=
-----END PUBLIC KEY-----
";

    #[test]
    fn public_keys_parse_in_every_spelling_and_round_trip() {
        let key = PublicKey::parse(OPENSSL_PUBLIC_PEM).unwrap();
        assert_eq!(PublicKey::parse(&key.to_pem()).unwrap(), key);
        let spki = "MCowBQYDK2VwAyEAWci9A5P7IJ58MSq6sfHKU1BOOVkrgz6M9cGzzn/of9Q=";
        assert_eq!(PublicKey::parse(spki).unwrap(), key);
        assert_eq!(PublicKey::parse(spki.trim_end_matches('=')).unwrap(), key);
        let raw = URL_SAFE_NO_PAD.encode(key.bytes());
        assert_eq!(PublicKey::parse(&raw).unwrap(), key);
        assert_eq!(key.kid().len(), 43);
        assert!(!format!("{key:?}").contains(&raw));
    }

    #[test]
    fn unusable_public_keys_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("not base64 !", "neither PEM nor base64"),
            ("AAAA", "holds 3 bytes"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                "BEGIN PUBLIC KEY",
            ),
            (
                "-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----",
                "not base64",
            ),
            // An X25519 key: the right size, another algorithm.
            (
                "MCowBQYDK2VuAyEAKPWz5E3+8+gj4sh6hEjxjp/fK09sULXiMlEa2vvUix0=",
                "another algorithm",
            ),
        ] {
            let err = PublicKey::parse(text).unwrap_err().to_string();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
