//! Revoking a refresh-token family while the family's current token is being rotated: whichever
//! commits first, the family ends revoked whole, the token the rotation issued included.

use smartflow_testkit::{on_every_backend, TestDb};
use smartflow_userauth::service::TokenPair;
use smartflow_userauth::{AuthError, RunningUserauth};

use crate::support::*;

/// Rounds per test: each round is one race; enough that the two transactions overlap in some of
/// them on every backend.
const ROUNDS: usize = 40;

/// The family of `survivor` (a pair the rotation may have issued while the family was being
/// revoked) must be dead: its refresh token refused as revoked, its access token blacklisted.
async fn assert_family_dead(app: &RunningUserauth, round: usize, survivor: Option<TokenPair>) {
    let Some(pair) = survivor else {
        return;
    };
    match app.service().refresh(&pair.refresh_token).await {
        Err(AuthError::RefreshTokenRevoked) => {}
        other => panic!(
            "round {round}: the pair rotated during the revocation survived it: refresh gave {other:?}"
        ),
    }
    match app.service().authenticate(&pair.access_token).await {
        Err(AuthError::TokenRevoked) => {}
        other => panic!(
            "round {round}: the access token rotated during the revocation survived it: {other:?}"
        ),
    }
}

/// The rotation's own outcome: a new pair, or a refusal because the revocation came first.
fn rotated(round: usize, outcome: Result<TokenPair, AuthError>) -> Option<TokenPair> {
    match outcome {
        Ok(pair) => Some(pair),
        Err(AuthError::RefreshTokenRevoked) => None,
        Err(e) => panic!("round {round}: the rotation failed with {e:?}"),
    }
}

/// A retired token of a family is replayed while the family's current token is rotated.
async fn a_replay_racing_the_next_rotation_revokes_the_whole_family(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "replay-race");
    register(&app, &address).await;
    for round in 0..ROUNDS {
        let first = login(&app, &address).await;
        let current = refresh_ok(&app, &first.refresh_token).await;
        let (replay, rotation) = {
            let (a, b) = (app.service().clone(), app.service().clone());
            let (retired, current) = (first.refresh_token.clone(), current.refresh_token.clone());
            race_two(async move { a.refresh(&retired).await }, async move {
                b.refresh(&current).await
            })
            .await
        };
        assert!(
            matches!(replay, Err(AuthError::RefreshTokenReused)),
            "round {round}: the replay gave {replay:?}"
        );
        assert_family_dead(&app, round, rotated(round, rotation)).await;
    }
    finish(app, t).await;
}

/// The session logs out while its current refresh token is rotated.
async fn a_logout_racing_a_rotation_revokes_the_whole_family(t: TestDb) {
    let app = start(config_for(&t)).await;
    let address = email(&t, "logout-race");
    register(&app, &address).await;
    for round in 0..ROUNDS {
        let session = login(&app, &address).await;
        let principal = app
            .service()
            .authenticate(&session.access_token)
            .await
            .unwrap();
        let (logout, rotation) = {
            let (a, b) = (app.service().clone(), app.service().clone());
            let current = session.refresh_token.clone();
            race_two(async move { a.logout(&principal).await }, async move {
                b.refresh(&current).await
            })
            .await
        };
        logout.unwrap_or_else(|e| panic!("round {round}: logout failed with {e:?}"));
        assert_family_dead(&app, round, rotated(round, rotation)).await;
    }
    finish(app, t).await;
}

on_every_backend!(
    a_replay_racing_the_next_rotation_revokes_the_whole_family,
    a_logout_racing_a_rotation_revokes_the_whole_family,
);
