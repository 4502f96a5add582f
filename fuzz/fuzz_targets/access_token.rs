//! The access-token verifier (`AccessTokenVerifier::verify`, the one check both userauth's
//! `AccessTokens::decode` and the agent's `UserauthClient` run) on arbitrary input, two ways:
//!
//! - first byte even: the rest as the token itself (header, payload and signature all the
//!   fuzzer's), as a client's `Authorization` header would carry it;
//! - first byte odd: the rest split at the first `0xff` into a header and a payload, which are
//!   then signed with the key the verifier trusts, so the fuzzer reaches the header and claim
//!   checks behind the signature.
//!
//! Never a panic; and whatever verifies has userauth's issuer and audience, a `kid` of the
//! trusted key, and has not expired.
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use ring::signature::Ed25519KeyPair;
use smartflow_userauth_contracts::{AccessTokenVerifier, PublicKey, AUDIENCE, ISSUER};

/// `openssl genpkey -algorithm ed25519` and its `openssl pkey -pubout`.
const PRIVATE_KEY: &str = "MC4CAQAwBQYDK2VwBCIEIHHUZfIacVurzAjDldZipcmuF9kXrfjzZr+CQ6Td6xFY";
const PUBLIC_KEY: &str = "MCowBQYDK2VwAyEAWci9A5P7IJ58MSq6sfHKU1BOOVkrgz6M9cGzzn/of9Q=";

static VERIFIER: LazyLock<AccessTokenVerifier> =
    LazyLock::new(|| AccessTokenVerifier::new(PublicKey::parse(PUBLIC_KEY).unwrap()));
static SIGNER: LazyLock<Ed25519KeyPair> = LazyLock::new(|| {
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&STANDARD.decode(PRIVATE_KEY).unwrap()).unwrap()
});

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let (header, payload) = match rest.iter().position(|&b| b == 0xff) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &[][..]),
        };
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = SIGNER.sign(message.as_bytes());
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    };
    if let Ok(claims) = VERIFIER.verify(&token) {
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(claims.exp >= now, "an expired token verified");
        let header = jsonwebtoken_header(&token);
        assert!(
            header.contains(VERIFIER.key().kid()),
            "a token without our kid verified"
        );
    }
});

/// The decoded header part of a token that verified.
fn jsonwebtoken_header(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    String::from_utf8_lossy(&URL_SAFE_NO_PAD.decode(header).unwrap_or_default()).into_owned()
}
