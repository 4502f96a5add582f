//! ASVS level 2 session rules: the password policy, a password change that ends the other
//! sessions, log-out everywhere, the absolute session lifetime, and answers kept out of caches.

use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::json;
use smartflow_storage::refresh_token_families;
use smartflow_storage::refresh_tokens;
use smartflow_testkit::{on_every_backend, TestDb};
use smartflow_userauth::http::TokenResponse;
use smartflow_userauth::refresh_token::hash_refresh_token;
use smartflow_userauth::{AuthError, RunningUserauth};

use crate::support::*;

const NEW_PASSWORD: &str = "a brand new passphrase";

/// Both of a session's tokens are refused: the refresh token as revoked, the access token as
/// blacklisted.
async fn assert_session_revoked(app: &RunningUserauth, session: &TokenResponse) {
    assert_error(
        refresh(app, &session.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_revoked",
    )
    .await;
    assert_error(
        get_with(app, "/v1/auth/me", &session.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
}

async fn change(
    app: &RunningUserauth,
    access: &str,
    current: &str,
    new: &str,
) -> reqwest::Response {
    post_with(
        app,
        "/v1/auth/password",
        access,
        json!({"current_password": current, "new_password": new}),
    )
    .await
}

async fn login_with(app: &RunningUserauth, address: &str, password: &str) -> reqwest::Response {
    post_json(
        app,
        "/v1/auth/login",
        json!({"email": address, "password": password}),
    )
    .await
}

async fn new_passwords_need_twelve_characters_and_must_not_be_common(t: TestDb) {
    let app = start(config_for(&t)).await;
    for (password, says) in [
        ("eleven char", "at least 12 characters"),
        ("twelve       ", "at least 12 characters"),
        ("Password1234", "common passwords"),
        ("qwertyuiop[]", "common passwords"),
    ] {
        let response = post_json(
            &app,
            "/v1/auth/register",
            json!({"email": email(&t, "weak"), "password": password}),
        )
        .await;
        let (status, code, message) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "weak_password")
        );
        assert!(message.contains(says), "{password}: {message}");
    }
    // No composition rules: twelve lowercase letters are a password.
    let response = post_json(
        &app,
        "/v1/auth/register",
        json!({"email": email(&t, "plain"), "password": "lowercaseonly"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    finish(app, t).await;
}

async fn a_password_change_revokes_the_other_sessions(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "changer");
    register(&app, &address).await;
    let this = login(&app, &address).await;
    let other = login(&app, &address).await;
    let rotated_other = refresh_ok(&app, &other.refresh_token).await;

    // Refusals first, each with its own code; none changes anything.
    assert_error(
        change(&app, &this.access_token, "wrong horse 9", NEW_PASSWORD).await,
        StatusCode::FORBIDDEN,
        "wrong_password",
    )
    .await;
    assert_error(
        change(&app, &this.access_token, PASSWORD, "password1234").await,
        StatusCode::BAD_REQUEST,
        "weak_password",
    )
    .await;
    assert_error(
        client()
            .post(url(&app, "/v1/auth/password"))
            .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}))
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "missing_token",
    )
    .await;
    assert_error(
        post_with(
            &app,
            "/v1/auth/password",
            &this.access_token,
            json!({"new_password": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    me(&app, &other.access_token).await;

    let response = change(&app, &this.access_token, PASSWORD, NEW_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // The other session is over, both of its access tokens included; this one goes on.
    assert_session_revoked(&app, &rotated_other).await;
    assert_error(
        get_with(&app, "/v1/auth/me", &other.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    me(&app, &this.access_token).await;
    refresh_ok(&app, &this.refresh_token).await;
    // Only the new password logs in.
    assert_error(
        login_with(&app, &address, PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(
        login_with(&app, &address, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
    finish(app, t).await;
}

/// Log-ins with the old password race the change: a log-in that wins a session loses it to the
/// change, or is refused; none keeps a session opened with the old password.
async fn a_log_in_racing_a_password_change_keeps_no_session(t: TestDb) {
    let app = start(config_for(&t)).await;
    for round in 0..15 {
        let address = email(&t, "racer");
        register(&app, &address).await;
        let asking = login(&app, &address).await;
        let principal = app
            .service()
            .authenticate(&asking.access_token)
            .await
            .unwrap();
        let (a, b) = (app.service().clone(), app.service().clone());
        let racing_address = address.clone();
        let (changed, logged_in) = race_two(
            async move { a.change_password(&principal, PASSWORD, NEW_PASSWORD).await },
            async move { b.login(&racing_address, PASSWORD).await },
        )
        .await;
        changed.unwrap_or_else(|e| panic!("round {round}: the change failed with {e:?}"));
        match logged_in {
            Ok(pair) => match app.service().refresh(&pair.refresh_token).await {
                Err(AuthError::RefreshTokenRevoked) => {}
                other => panic!("round {round}: a session of the old password survived: {other:?}"),
            },
            Err(AuthError::InvalidCredentials) => {}
            Err(e) => panic!("round {round}: the log-in failed with {e:?}"),
        }
    }
    finish(app, t).await;
}

async fn logging_out_everywhere_revokes_every_session(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "everywhere");
    register(&app, &address).await;
    let stranger_address = email(&t, "stranger");
    register(&app, &stranger_address).await;
    let stranger = login(&app, &stranger_address).await;
    let first = login(&app, &address).await;
    let second = refresh_ok(&app, &login(&app, &address).await.refresh_token).await;

    let response = logout_everywhere(&app, &first.access_token).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    assert_session_revoked(&app, &first).await;
    assert_session_revoked(&app, &second).await;
    assert_error(
        logout_everywhere(&app, &first.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    // Another account is untouched, and logging in again works.
    me(&app, &stranger.access_token).await;
    refresh_ok(&app, &stranger.refresh_token).await;
    let again = login(&app, &address).await;
    refresh_ok(&app, &again.refresh_token).await;
    finish(app, t).await;
}

/// No refresh token outlives the session's absolute lifetime, and a session past it cannot be
/// refreshed, however fresh its refresh token.
async fn a_session_ends_at_its_absolute_lifetime(t: TestDb) {
    let mut config = config_for(&t);
    config.refresh_token_ttl_secs = 7 * 24 * 3600;
    config.session_max_lifetime_secs = 3600;
    let app = start(config).await;
    let address = email(&t, "lifetime");
    register(&app, &address).await;
    let session = login(&app, &address).await;
    let rotated = refresh_ok(&app, &session.refresh_token).await;
    let stored = refresh_tokens::find(app.db(), &hash_refresh_token(&rotated.refresh_token))
        .await
        .unwrap()
        .unwrap();
    let family = refresh_token_families::find(app.db(), &stored.family_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.expires_at,
        family.created_at + 3_600_000,
        "capped at the session's end"
    );

    // The log-in was two hours ago, as far as the database knows.
    let sql = format!(
        "UPDATE refresh_token_families SET created_at = created_at - 7200000 \
         WHERE family_id = '{}'",
        stored.family_id
    );
    app.db().execute_unprepared(&sql).await.unwrap();
    let (status, code, message) = error_of(refresh(&app, &rotated.refresh_token).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "session_expired")
    );
    assert!(message.contains("log in again"), "{message}");
    // A new log-in is a new session.
    let again = login(&app, &address).await;
    refresh_ok(&app, &again.refresh_token).await;
    finish(app, t).await;
}

async fn token_answers_are_kept_out_of_caches(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "cache");
    register(&app, &address).await;
    let session = login(&app, &address).await;
    for response in [
        login_with(&app, &address, PASSWORD).await,
        refresh(&app, &session.refresh_token).await,
        get_with(&app, "/v1/auth/me", &session.access_token).await,
        login_with(&app, &address, "wrong horse 9").await,
    ] {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            header("cache-control").as_deref(),
            Some("no-store"),
            "{response:?}"
        );
        assert_eq!(
            header("pragma").as_deref(),
            Some("no-cache"),
            "{response:?}"
        );
    }
    finish(app, t).await;
}

on_every_backend!(
    new_passwords_need_twelve_characters_and_must_not_be_common,
    a_password_change_revokes_the_other_sessions,
    a_log_in_racing_a_password_change_keeps_no_session,
    logging_out_everywhere_revokes_every_session,
    a_session_ends_at_its_absolute_lifetime,
    token_answers_are_kept_out_of_caches,
);
