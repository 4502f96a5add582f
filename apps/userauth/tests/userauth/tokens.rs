//! Access and refresh tokens: rotation, the refresh race, replay revocation, log-out and the
//! blacklist, and forged, foreign-key and expired JWTs.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;
use smartflow_service::Secret;
use smartflow_storage::now_millis;
use smartflow_storage::refresh_tokens::{self, NewRefreshToken};
use smartflow_testkit::{on_every_backend, TestDb};
use smartflow_userauth::jwt::{AccessClaims, AccessTokens, SigningKey};
use smartflow_userauth::refresh_token::{hash_refresh_token, new_refresh_token};
use smartflow_userauth::{AuthorizeError, Userauth, UserauthConfig};
use smartflow_userauth_contracts::AccessTokenVerifier;

use crate::support::*;

async fn refresh_rotates_and_retires_the_old_token(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "ada");
    let user = register(&app, &address).await;
    let first = login(&app, &address).await;
    let second = refresh_ok(&app, &first.refresh_token).await;
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_ne!(second.access_token, first.access_token);
    assert_eq!(me(&app, &second.access_token).await.user_id, user.user_id);
    let third = refresh_ok(&app, &second.refresh_token).await;
    assert_eq!(me(&app, &third.access_token).await.user_id, user.user_id);

    // At rest only hashes, and the rotated ones are retired in one family.
    let old = refresh_tokens::find(app.db(), &hash_refresh_token(&first.refresh_token))
        .await
        .unwrap()
        .expect("stored by hash");
    let current = refresh_tokens::find(app.db(), &hash_refresh_token(&third.refresh_token))
        .await
        .unwrap()
        .unwrap();
    assert!(old.retired_at.is_some() && old.revoked_at.is_none());
    assert!(current.retired_at.is_none() && current.revoked_at.is_none());
    assert_eq!(old.family_id, current.family_id);
    assert!(refresh_tokens::find(app.db(), &third.refresh_token)
        .await
        .unwrap()
        .is_none());

    assert_error(
        refresh(&app, "not-a-token-we-issued").await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    finish(app, t).await;
}

/// Several real concurrent HTTP refreshes with one token, five rounds: exactly one gets a new
/// pair; every other one is a replay that revokes the family, the winner's new tokens included.
async fn concurrent_refreshes_with_one_token_let_exactly_one_win(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "race");
    register(&app, &address).await;
    for round in 0..5 {
        let tokens = login(&app, &address).await;
        let base = app.base_url();
        let outcomes = race(6, || {
            let url = format!("{base}/v1/auth/refresh");
            let body = serde_json::json!({"refresh_token": tokens.refresh_token});
            async move {
                let response = client().post(url).json(&body).send().await.unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap();
                (status, body)
            }
        })
        .await;
        let winners: Vec<&Value> = outcomes
            .iter()
            .filter(|(s, _)| *s == StatusCode::OK)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let codes: Vec<&str> = outcomes
            .iter()
            .filter(|(s, _)| *s != StatusCode::OK)
            .map(|(s, b)| {
                assert_eq!(*s, StatusCode::UNAUTHORIZED, "{b}");
                b["error"]["code"].as_str().unwrap()
            })
            .collect();
        assert!(
            codes
                .iter()
                .all(|c| matches!(*c, "refresh_token_reused" | "refresh_token_revoked")),
            "round {round}: {codes:?}"
        );
        assert!(
            codes.contains(&"refresh_token_reused"),
            "the first loser detects the replay"
        );

        // The replay revoked the whole family, so the winner's pair is dead too.
        let winner = winners[0];
        let new_refresh = winner["refresh_token"].as_str().unwrap();
        let new_access = winner["access_token"].as_str().unwrap();
        assert_error(
            refresh(&app, new_refresh).await,
            StatusCode::UNAUTHORIZED,
            "refresh_token_revoked",
        )
        .await;
        assert_error(
            get_with(&app, "/v1/auth/me", new_access).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
    }
    finish(app, t).await;
}

/// The guard of the retiring `UPDATE` alone, raced from two separate pools (as two processes
/// would): exactly one of them retires the token.
async fn the_retiring_update_has_exactly_one_winner(t: TestDb) {
    let app = start(config_for(&t)).await;
    let user = register(&app, &email(&t, "pools")).await;
    for _ in 0..5 {
        let token = new_refresh_token();
        let now = now_millis();
        refresh_tokens::insert(
            app.db(),
            &NewRefreshToken {
                token_hash: hash_refresh_token(&token),
                family_id: uuid::Uuid::new_v4().to_string(),
                user_id: user.user_id.clone(),
                access_jti: uuid::Uuid::new_v4().to_string(),
                access_expires_at: now + 60_000,
                issued_at: now,
                expires_at: now + 60_000,
            },
        )
        .await
        .unwrap();
        let pools = [t.connect_again().await, t.connect_again().await];
        let hash = hash_refresh_token(&token);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = pools
            .iter()
            .cloned()
            .map(|db| {
                let hash = hash.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    refresh_tokens::retire(&db, &hash, now_millis())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.unwrap());
        }
        assert_eq!(won, 1);
        for pool in pools {
            pool.close().await.unwrap();
        }
    }
    finish(app, t).await;
}

async fn a_replayed_refresh_token_revokes_its_family(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "replay");
    register(&app, &address).await;
    let first = login(&app, &address).await;
    let other_session = login(&app, &address).await;
    let second = refresh_ok(&app, &first.refresh_token).await;

    let (status, code, message) = error_of(refresh(&app, &first.refresh_token).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "refresh_token_reused")
    );
    assert!(
        message.contains("revoked"),
        "the answer says the session was revoked: {message}"
    );

    assert_error(
        refresh(&app, &second.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_revoked",
    )
    .await;
    for access in [&first.access_token, &second.access_token] {
        assert_error(
            get_with(&app, "/v1/auth/me", access).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
    }
    // Another session of the same user is not part of the family.
    me(&app, &other_session.access_token).await;
    refresh_ok(&app, &other_session.refresh_token).await;
    // Logging in again starts a fresh family.
    let again = login(&app, &address).await;
    refresh_ok(&app, &again.refresh_token).await;
    finish(app, t).await;
}

async fn logout_revokes_the_session_and_blacklists_its_access_tokens(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "bye");
    register(&app, &address).await;
    let session = login(&app, &address).await;
    let rotated = refresh_ok(&app, &session.refresh_token).await;
    let other = login(&app, &address).await;

    let response = logout(&app, &rotated.access_token).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // Rejected everywhere: every endpoint that takes an access token, for both of the
    // session's access tokens (the one logged out with, and the older one still unexpired).
    for access in [&rotated.access_token, &session.access_token] {
        for path in ["/v1/auth/me", "/v1/auth/authorize"] {
            let response = get_with(&app, path, access).await;
            assert_eq!(
                response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer error=\"invalid_token\"")
            );
            assert_error(response, StatusCode::UNAUTHORIZED, "token_revoked").await;
        }
        assert_error(
            logout(&app, access).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
    }
    assert_error(
        refresh(&app, &rotated.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_revoked",
    )
    .await;

    // Another session of the same user is untouched.
    me(&app, &other.access_token).await;
    refresh_ok(&app, &other.refresh_token).await;
    finish(app, t).await;
}

fn with_payload(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

/// A valid token of `alice` whose payload is rewritten to name `mallory`'s account, or to live
/// longer, keeps its signature and is refused; so is a well-formed token signed with another key.
async fn tampered_and_foreign_key_tokens_are_refused(t: TestDb) {
    let app = start(config_for(&t)).await;
    let alice = email(&t, "alice");
    register(&app, &alice).await;
    let mallory = register(&app, &email(&t, "mallory")).await;
    let tokens = login(&app, &alice).await;
    me(&app, &tokens.access_token).await;

    let as_mallory = with_payload(&tokens.access_token, |c| {
        c["sub"] = mallory.user_id.clone().into()
    });
    let longer = with_payload(&tokens.access_token, |c| {
        c["exp"] = (c["exp"].as_i64().unwrap() + 86_400).into()
    });
    let claims = our_keys().decode(&tokens.access_token).unwrap();
    let foreign = AccessTokens::new(&SigningKey::generate(), Duration::from_secs(900))
        .sign(&claims)
        .unwrap();
    let verifier = userauth_client(&app.base_url());
    for forged in [as_mallory, longer, foreign] {
        for path in ["/v1/auth/me", "/v1/auth/authorize"] {
            assert_error(
                get_with(&app, path, &forged).await,
                StatusCode::UNAUTHORIZED,
                "invalid_token",
            )
            .await;
        }
        assert_error(
            logout(&app, &forged).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
        assert!(matches!(
            verifier.authorize(&forged).await,
            Err(AuthorizeError::Rejected { status: 401, ref code, .. }) if code == "invalid_token"
        ));
    }
    // The original still works: the refusals were about the forgeries, not the account.
    me(&app, &tokens.access_token).await;
    finish(app, t).await;
}

async fn expired_tokens_are_refused(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "old");
    let user = register(&app, &address).await;
    let tokens = login(&app, &address).await;

    // Correctly signed, but expired a minute ago.
    let mut claims: AccessClaims = our_keys().decode(&tokens.access_token).unwrap();
    claims.iat = now_millis() / 1000 - 960;
    claims.exp = now_millis() / 1000 - 60;
    let expired = our_keys().sign(&claims).unwrap();
    for path in ["/v1/auth/me", "/v1/auth/authorize"] {
        assert_error(
            get_with(&app, path, &expired).await,
            StatusCode::UNAUTHORIZED,
            "token_expired",
        )
        .await;
    }
    let verifier = userauth_client(&app.base_url());
    assert!(matches!(
        verifier.authorize(&expired).await,
        Err(AuthorizeError::Rejected { status: 401, ref code, .. }) if code == "token_expired"
    ));

    // A refresh token past its lifetime.
    let token = new_refresh_token();
    let now = now_millis();
    refresh_tokens::insert(
        app.db(),
        &NewRefreshToken {
            token_hash: hash_refresh_token(&token),
            family_id: uuid::Uuid::new_v4().to_string(),
            user_id: user.user_id,
            access_jti: uuid::Uuid::new_v4().to_string(),
            access_expires_at: now - 120_000,
            issued_at: now - 240_000,
            expires_at: now - 60_000,
        },
    )
    .await
    .unwrap();
    assert_error(
        refresh(&app, &token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_expired",
    )
    .await;
    finish(app, t).await;
}

/// A key file is read at start and signs every token, with its key id in the header; the
/// public key alone verifies them.
async fn tokens_are_signed_with_the_configured_key_file(t: TestDb) {
    let key = SigningKey::generate();
    let file = std::env::temp_dir().join(format!("userauth-key-{}.pem", t.unique("k")));
    std::fs::write(&file, key.to_pem()).unwrap();
    let mut config = config_for(&t);
    config.signing.signing_key = None;
    config.signing.signing_key_file = Some(file.clone());
    let app = start(config).await;
    std::fs::remove_file(&file).unwrap();
    let address = email(&t, "filed");
    let user = register(&app, &address).await;
    let tokens = login(&app, &address).await;
    let header = jsonwebtoken::decode_header(&tokens.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(key.public_key().kid()));
    let verifier = AccessTokenVerifier::new(key.public_key().clone());
    assert_eq!(
        verifier.verify(&tokens.access_token).unwrap().sub,
        user.user_id
    );
    // The tests' usual key did not sign it.
    assert!(our_keys().decode(&tokens.access_token).is_err());
    finish(app, t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_settings_that_cannot_work_fail_start_by_name() {
    let missing = std::env::temp_dir().join("no-such-userauth-key.pem");
    let cases: [(Option<&str>, Option<&std::path::Path>, &str); 4] = [
        (
            Some("a-password-not-a-key-s3cret"),
            None,
            "SMARTFLOW_USERAUTH_SIGNING_KEY is not usable: it is neither PEM nor base64",
        ),
        (
            Some("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAWci9A5P7IJ58MSq6sfHKU1BOOVkrgz6M9cGzzn/of9Q=\n-----END PUBLIC KEY-----"),
            None,
            "SMARTFLOW_USERAUTH_SIGNING_KEY is not usable: a PEM key here must be one `-----BEGIN PRIVATE KEY-----` block",
        ),
        (
            Some(SIGNING_KEY),
            Some(&missing),
            "not both",
        ),
        (None, Some(&missing), "reading SMARTFLOW_USERAUTH_SIGNING_KEY_FILE"),
    ];
    for (key, file, expected) in cases {
        let mut config = UserauthConfig::embedded("sqlite::memory:");
        config.signing.signing_key = key.map(Secret::new);
        config.signing.signing_key_file = file.map(std::path::Path::to_path_buf);
        let err = match Userauth::start(config).await {
            Ok(_) => panic!("userauth started with {key:?} {file:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("s3cret") && !err.contains("MCowBQ"), "{err}");
    }
}

on_every_backend!(
    tokens_are_signed_with_the_configured_key_file,
    refresh_rotates_and_retires_the_old_token,
    concurrent_refreshes_with_one_token_let_exactly_one_win,
    the_retiring_update_has_exactly_one_winner,
    a_replayed_refresh_token_revokes_its_family,
    logout_revokes_the_session_and_blacklists_its_access_tokens,
    tampered_and_foreign_key_tokens_are_refused,
    expired_tokens_are_refused,
);
