//! The migration that adds `refresh_token_families` gives every refresh token stored before it a
//! family row: begun at its first token, revoked when its tokens were.

use sea_orm_migration::sea_orm::{self, ConnectionTrait, FromQueryResult, Statement};
use smartflow_migrations::{userauth, MigratorTrait};
use smartflow_testkit::{on_every_backend, TestDb};

#[derive(Debug, PartialEq, Eq, FromQueryResult)]
struct Family {
    family_id: String,
    user_id: String,
    created_at: i64,
    rotations: i64,
    revoked_at: Option<i64>,
}

async fn existing_refresh_tokens_get_their_families(t: TestDb) {
    let before_families = userauth::Migrator::migrations().len() - 1;
    let before_families = u32::try_from(before_families).unwrap();
    userauth::Migrator::up(&t.db, Some(before_families))
        .await
        .unwrap();
    for (hash, family, issued, revoked) in [
        ("h1", "family-live", 100, "NULL"),
        ("h2", "family-live", 200, "NULL"),
        ("h3", "family-revoked", 300, "350"),
        ("h4", "family-revoked", 320, "350"),
    ] {
        let sql = format!(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, access_jti, \
             access_expires_at, issued_at, expires_at, retired_at, revoked_at) \
             VALUES ('{hash}', '{family}', 'user-1', 'jti-{hash}', 0, {issued}, 9999, NULL, {revoked})"
        );
        t.db.execute_unprepared(&sql).await.unwrap();
    }
    t.migrate::<userauth::Migrator>().await;

    let families = Family::find_by_statement(Statement::from_string(
        t.db.get_database_backend(),
        "SELECT family_id, user_id, created_at, rotations, revoked_at \
         FROM refresh_token_families ORDER BY family_id"
            .to_owned(),
    ))
    .all(&t.db)
    .await
    .unwrap();
    let family = |family_id: &str, created_at, revoked_at| Family {
        family_id: family_id.to_owned(),
        user_id: "user-1".to_owned(),
        created_at,
        rotations: 0,
        revoked_at,
    };
    assert_eq!(
        families,
        [
            family("family-live", 100, None),
            family("family-revoked", 300, Some(350)),
        ]
    );
    t.cleanup().await;
}

on_every_backend!(empty: existing_refresh_tokens_get_their_families);
