//! The use cases of userauth: register, log in, refresh, log out, and checking an access token
//! (signature, expiry, blacklist, quota). The HTTP layer only translates to and from JSON.

use std::future::Future;
use std::time::Duration;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel,
    TransactionTrait,
};
use smartflow_storage::refresh_tokens::{self, NewRefreshToken, RefreshToken, RefreshTokenState};
use smartflow_storage::users::{self, NewUser, User};
use smartflow_storage::{now_millis, refresh_token_families, revoked_access_tokens};

use crate::error::AuthError;
use crate::jwt::{AccessClaims, AccessTokens};
use crate::passwords::PasswordHasher;
use crate::refresh_token::{hash_refresh_token, new_refresh_token};
use crate::validation::{
    check_password_bounds, check_token_bounds, normalize_email, validate_new_email,
    validate_new_password,
};

/// A new access token and the refresh token that can replace it.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// Who a valid, unrevoked access token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    /// The token's own id.
    pub jti: String,
    /// The session (refresh-token family) it belongs to.
    pub session_id: String,
    /// When the token expires, Unix milliseconds.
    pub expires_at: i64,
}

impl From<AccessClaims> for Principal {
    fn from(claims: AccessClaims) -> Self {
        Self {
            user_id: claims.sub,
            jti: claims.jti,
            session_id: claims.sid,
            expires_at: claims.exp.saturating_mul(1000),
        }
    }
}

/// What userauth needs beyond the database to serve its use cases.
#[derive(Clone)]
pub struct AuthSettings {
    pub access_tokens: AccessTokens,
    pub passwords: PasswordHasher,
    pub refresh_token_ttl: Duration,
    /// How long a session lasts from its log-in, however often it is refreshed.
    pub session_max_lifetime: Duration,
    pub default_token_quota: i64,
}

/// The use cases, over one database pool. Cheap to clone.
#[derive(Clone)]
pub struct AuthService {
    db: DatabaseConnection,
    settings: AuthSettings,
}

impl AuthService {
    pub fn new(db: DatabaseConnection, settings: AuthSettings) -> Self {
        Self { db, settings }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn access_tokens(&self) -> &AccessTokens {
        &self.settings.access_tokens
    }

    /// Creates an account with the default quota. The email is stored normalized; an email
    /// already registered (in any letter case) is `EmailTaken`, also when two sign-ups race.
    pub async fn register(&self, email: &str, password: &str) -> Result<User, AuthError> {
        let email = normalize_email(email)?;
        validate_new_email(&email)?;
        validate_new_password(password, &email)?;
        let password_hash = self.settings.passwords.hash(password.to_owned()).await?;
        let user = NewUser {
            id: uuid::Uuid::new_v4().to_string(),
            email,
            password_hash,
            token_quota: self.settings.default_token_quota,
        };
        match users::insert(&self.db, &user).await {
            Ok(()) => {}
            Err(e) if e.is_unique_violation() => return Err(AuthError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        users::find_by_id(&self.db, &user.id)
            .await?
            .ok_or_else(|| AuthError::internal("a registered user cannot be read back"))
    }

    /// Checks the password and opens a new session (refresh-token family). An unknown email and
    /// a wrong password are the same `InvalidCredentials`, after the same hashing effort.
    pub async fn login(&self, email: &str, password: &str) -> Result<TokenPair, AuthError> {
        let email = normalize_email(email)?;
        check_password_bounds(password)?;
        let user = users::find_by_email(&self.db, &email).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let matches = self
            .settings
            .passwords
            .verify(password.to_owned(), stored)
            .await?;
        let Some(user) = user.filter(|_| matches) else {
            return Err(AuthError::InvalidCredentials);
        };
        let session_id = uuid::Uuid::new_v4().to_string();
        let pair = retry_on_conflict("login", || self.open_session(&user, &session_id)).await?;
        tracing::info!(user_id = %user.id, session_id, "logged in");
        Ok(pair)
    }

    /// Stores a new family (session) and its first pair in one transaction, under the account's
    /// lock and only while the password is still the one verified: a password change racing
    /// this log-in either revokes the session or makes it `InvalidCredentials`.
    async fn open_session(&self, user: &User, session_id: &str) -> Result<TokenPair, AuthError> {
        let now = now_millis();
        let txn = self.begin().await?;
        if !users::lock_if_password_is(&txn, &user.id, &user.password_hash).await? {
            txn.rollback().await?;
            return Err(AuthError::InvalidCredentials);
        }
        refresh_token_families::insert(&txn, session_id, &user.id, now).await?;
        let session_ends = now.saturating_add(self.session_max_lifetime_millis());
        let pair = self
            .issue_pair(&txn, &user.id, session_id, now, session_ends)
            .await?;
        txn.commit().await?;
        Ok(pair)
    }

    /// Replaces the password of `principal`'s account after checking `current`, and revokes
    /// every other session of the account (ASVS 3.3.3); the session asking keeps going. Under
    /// the account's lock, which every log-in takes too, so no session opened with the old
    /// password survives.
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: &str,
        new: &str,
    ) -> Result<(), AuthError> {
        check_password_bounds(current)?;
        let user = self.user_of(principal).await?;
        validate_new_password(new, &user.email)?;
        let matches = self
            .settings
            .passwords
            .verify(current.to_owned(), Some(user.password_hash.clone()))
            .await?;
        if !matches {
            return Err(AuthError::WrongPassword);
        }
        let new_hash = self.settings.passwords.hash(new.to_owned()).await?;
        retry_on_conflict("password change", || async {
            let now = now_millis();
            let txn = self.begin().await?;
            if !users::replace_password_hash(&txn, &user.id, &user.password_hash, &new_hash).await?
            {
                // Another change came first: the password checked is no longer the account's.
                txn.rollback().await?;
                return Err(AuthError::WrongPassword);
            }
            self.revoke_sessions_of(&txn, &user.id, Some(&principal.session_id), now)
                .await?;
            txn.commit().await?;
            Ok(())
        })
        .await?;
        tracing::info!(user_id = %user.id, session_id = %principal.session_id, "password changed; other sessions revoked");
        Ok(())
    }

    /// Logs out every session of `principal`'s account, this one included.
    pub async fn logout_everywhere(&self, principal: &Principal) -> Result<(), AuthError> {
        retry_on_conflict("logout everywhere", || async {
            let now = now_millis();
            let txn = self.begin().await?;
            revoked_access_tokens::insert(
                &txn,
                &principal.jti,
                &principal.user_id,
                principal.expires_at,
                now,
            )
            .await?;
            self.revoke_sessions_of(&txn, &principal.user_id, None, now)
                .await?;
            txn.commit().await?;
            Ok(())
        })
        .await?;
        tracing::info!(user_id = %principal.user_id, "logged out everywhere");
        Ok(())
    }

    /// Revokes every unrevoked family of `user_id` but `except`, in `txn`.
    async fn revoke_sessions_of(
        &self,
        txn: &DatabaseTransaction,
        user_id: &str,
        except: Option<&str>,
        now: i64,
    ) -> Result<(), AuthError> {
        for family_id in refresh_token_families::unrevoked_of_user(txn, user_id).await? {
            if Some(family_id.as_str()) != except {
                revoke_family_in(txn, &family_id, now).await?;
            }
        }
        Ok(())
    }

    fn session_max_lifetime_millis(&self) -> i64 {
        i64::try_from(self.settings.session_max_lifetime.as_millis()).unwrap_or(i64::MAX)
    }

    /// Exchanges a refresh token for a new pair and retires it.
    ///
    /// The retirement is a conditional update (`... WHERE token_hash = ? AND retired_at IS NULL
    /// AND revoked_at IS NULL`) counted by rows affected, in the transaction that stores the new
    /// token: of several concurrent refreshes with one token exactly one matches. Every other
    /// presentation of a retired token, concurrent or later, is a replay: the whole family is
    /// revoked (the new pair too) and the answer is `RefreshTokenReused`. A legitimate client
    /// therefore refreshes one request at a time, as OAuth's rotation expects.
    ///
    /// The rotation first takes its family's lock ([`refresh_token_families::lock_for_rotation`]),
    /// as every revocation does, so a replay or a log-out racing it either sees the token it
    /// issues or makes it issue none.
    pub async fn refresh(&self, presented: &str) -> Result<TokenPair, AuthError> {
        check_token_bounds(presented, "refresh_token")?;
        let hash = hash_refresh_token(presented);
        retry_on_conflict("refresh", || self.refresh_once(&hash)).await
    }

    /// The user whose refresh token `presented` is (retired and revoked ones included), so that
    /// refreshes can be rate limited per account; `None` for a token that was never issued.
    pub async fn owner_of_refresh_token(
        &self,
        presented: &str,
    ) -> Result<Option<String>, AuthError> {
        check_token_bounds(presented, "refresh_token")?;
        let row = refresh_tokens::find(&self.db, &hash_refresh_token(presented)).await?;
        Ok(row.map(|row| row.user_id))
    }

    async fn refresh_once(&self, hash: &str) -> Result<TokenPair, AuthError> {
        let now = now_millis();
        let Some(row) = refresh_tokens::find(&self.db, hash).await? else {
            return Err(AuthError::InvalidRefreshToken);
        };
        let state = row.state(now);
        if state != RefreshTokenState::Active {
            return Err(self.refuse(&row, state, now).await);
        }
        let txn = self.begin().await?;
        let born_after = now.saturating_sub(self.session_max_lifetime_millis());
        if !refresh_token_families::lock_for_rotation(&txn, &row.family_id, born_after).await? {
            txn.rollback().await?;
            return Err(self.refuse_family(&row.family_id, born_after).await);
        }
        let Some(family) = refresh_token_families::find(&txn, &row.family_id).await? else {
            return Err(AuthError::internal(
                "a locked refresh-token family cannot be read",
            ));
        };
        let session_ends = family
            .created_at
            .saturating_add(self.session_max_lifetime_millis());
        if !refresh_tokens::retire(&txn, hash, now).await? {
            txn.rollback().await?;
            // Another request retired or revoked it between our read and our update; read what
            // it left, outside any snapshot of ours.
            let Some(row) = refresh_tokens::find(&self.db, hash).await? else {
                return Err(AuthError::InvalidRefreshToken);
            };
            let state = row.state(now);
            if state == RefreshTokenState::Active {
                return Err(AuthError::internal(
                    "a refresh token was neither retired nor left active",
                ));
            }
            return Err(self.refuse(&row, state, now).await);
        }
        let pair = self
            .issue_pair(&txn, &row.user_id, &row.family_id, now, session_ends)
            .await?;
        txn.commit().await?;
        Ok(pair)
    }

    /// The answer to a rotation whose family could not be locked: past its absolute lifetime,
    /// or revoked since our read (a replay or a log-out committed first), or gone.
    async fn refuse_family(&self, family_id: &str, born_after: i64) -> AuthError {
        match refresh_token_families::find(&self.db, family_id).await {
            Ok(Some(family)) if family.revoked_at.is_none() && family.created_at <= born_after => {
                AuthError::SessionExpired
            }
            Ok(_) => AuthError::RefreshTokenRevoked,
            Err(e) => e.into(),
        }
    }

    /// The answer to a refresh token that is not active; a retired one revokes its family.
    async fn refuse(&self, row: &RefreshToken, state: RefreshTokenState, now: i64) -> AuthError {
        match state {
            RefreshTokenState::Revoked => AuthError::RefreshTokenRevoked,
            RefreshTokenState::Expired => AuthError::RefreshTokenExpired,
            RefreshTokenState::Active => AuthError::internal("refusing an active refresh token"),
            RefreshTokenState::Retired => {
                tracing::warn!(
                    user_id = %row.user_id,
                    session_id = %row.family_id,
                    "a retired refresh token was presented again; revoking its session"
                );
                match self.revoke_session(&row.family_id, None, now).await {
                    Ok(()) => AuthError::RefreshTokenReused,
                    Err(e) => e,
                }
            }
        }
    }

    /// Logs out the session of `principal`: its refresh family is revoked and its access tokens
    /// (this one included) are blacklisted until they would have expired.
    pub async fn logout(&self, principal: &Principal) -> Result<(), AuthError> {
        retry_on_conflict("logout", || {
            self.revoke_session(&principal.session_id, Some(principal), now_millis())
        })
        .await?;
        tracing::info!(user_id = %principal.user_id, session_id = %principal.session_id, "logged out");
        Ok(())
    }

    /// Revokes a family and blacklists every access token issued in it that is still alive, in
    /// one transaction.
    ///
    /// Why nothing escapes it: its first statement marks the family revoked and so takes the
    /// family's lock, which every rotation takes first too. A rotation that holds the lock has
    /// committed its new token before this goes on, and in read committed the statements after
    /// the lock read that commit, so the new token is revoked and its access token blacklisted
    /// here; a rotation that comes after finds the family revoked under the lock and issues
    /// nothing. (SQLite: the first statement is a write, which waits for the one writer.)
    async fn revoke_session(
        &self,
        family_id: &str,
        presented: Option<&Principal>,
        now: i64,
    ) -> Result<(), AuthError> {
        let txn = self.begin().await?;
        revoke_family_in(&txn, family_id, now).await?;
        if let Some(p) = presented {
            revoked_access_tokens::insert(&txn, &p.jti, &p.user_id, p.expires_at, now).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The principal of an access token that is correctly signed, unexpired and not blacklisted.
    /// This is the check every endpoint that takes an access token runs.
    pub async fn authenticate(&self, access_token: &str) -> Result<Principal, AuthError> {
        let claims = self.settings.access_tokens.decode(access_token)?;
        if revoked_access_tokens::contains(&self.db, &claims.jti).await? {
            return Err(AuthError::TokenRevoked);
        }
        Ok(claims.into())
    }

    /// The account of an authenticated principal. A token whose user no longer exists is
    /// invalid.
    pub async fn user_of(&self, principal: &Principal) -> Result<User, AuthError> {
        users::find_by_id(&self.db, &principal.user_id)
            .await?
            .ok_or(AuthError::InvalidToken)
    }

    /// What another service asks before doing work for a user: the token must authenticate and
    /// the user's usage must be below the quota (`usage >= quota` is refused).
    pub async fn authorize(&self, access_token: &str) -> Result<User, AuthError> {
        let principal = self.authenticate(access_token).await?;
        let user = self.user_of(&principal).await?;
        if user.is_over_quota() {
            return Err(AuthError::QuotaExceeded {
                usage: user.token_usage,
                quota: user.token_quota,
            });
        }
        Ok(user)
    }

    /// Deletes blacklist entries and refresh tokens that expired over a minute ago (the margin
    /// covers the second-granularity of JWT expiry), then the families left without tokens;
    /// returns how many rows.
    pub async fn prune_expired(&self) -> Result<u64, AuthError> {
        const MARGIN_MILLIS: i64 = 60_000;
        let now = now_millis().saturating_sub(MARGIN_MILLIS);
        let blacklist = revoked_access_tokens::delete_expired(&self.db, now).await?;
        let refresh = refresh_tokens::delete_expired(&self.db, now).await?;
        let families = refresh_token_families::delete_without_tokens(&self.db).await?;
        Ok(blacklist + refresh + families)
    }

    /// A transaction in read committed where the backend has a choice. On MySQL/MariaDB the
    /// default repeatable read takes next-key locks: a refresh waiting on the token being rotated
    /// then blocks the gap where the rotation inserts its new token, and one of them dies in a
    /// deadlock. PostgreSQL's default is read committed already; SQLite has one writer.
    async fn begin(&self) -> Result<DatabaseTransaction, AuthError> {
        Ok(match self.db.get_database_backend() {
            DbBackend::Sqlite => self.db.begin().await?,
            DbBackend::MySql | DbBackend::Postgres => {
                self.db
                    .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
                    .await?
            }
        })
    }

    /// Signs an access token and stores a new refresh token of family `session_id` beside it,
    /// expiring after its lifetime or at `session_ends`, whichever is first.
    async fn issue_pair<C: ConnectionTrait>(
        &self,
        conn: &C,
        user_id: &str,
        session_id: &str,
        now: i64,
        session_ends: i64,
    ) -> Result<TokenPair, AuthError> {
        let access = self
            .settings
            .access_tokens
            .issue(user_id, session_id, now)?;
        let refresh_token = new_refresh_token();
        let ttl = i64::try_from(self.settings.refresh_token_ttl.as_millis()).unwrap_or(i64::MAX);
        refresh_tokens::insert(
            conn,
            &NewRefreshToken {
                token_hash: hash_refresh_token(&refresh_token),
                family_id: session_id.to_owned(),
                user_id: user_id.to_owned(),
                access_jti: access.claims.jti.clone(),
                access_expires_at: access.expires_at_millis(),
                issued_at: now,
                expires_at: now.saturating_add(ttl).min(session_ends),
            },
        )
        .await?;
        Ok(TokenPair {
            access_token: access.token,
            refresh_token,
            expires_in: self.settings.access_tokens.ttl().as_secs(),
        })
    }
}

/// Revokes family `family_id` in `txn`: marks it revoked first (taking its lock, see
/// [`AuthService::revoke_session`]), then its tokens, and blacklists the access tokens issued in
/// it that are still alive.
async fn revoke_family_in(
    txn: &DatabaseTransaction,
    family_id: &str,
    now: i64,
) -> Result<(), AuthError> {
    refresh_token_families::revoke(txn, family_id, now).await?;
    refresh_tokens::revoke_family(txn, family_id, now).await?;
    for live in refresh_tokens::live_access_tokens(txn, family_id, now).await? {
        revoked_access_tokens::insert(txn, &live.jti, &live.user_id, live.expires_at, now).await?;
    }
    Ok(())
}

/// Runs `op` again, up to three times in all, when it failed on a transient conflict with
/// another transaction; every operation passed here is safe to repeat from its start.
async fn retry_on_conflict<T, F, Fut>(what: &str, mut op: F) -> Result<T, AuthError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AuthError>>,
{
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < ATTEMPTS && e.is_transient_conflict() => {
                tracing::debug!(error = %crate::error::ErrorChain(&e), attempt, "{what} met a conflicting transaction; running it again");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
