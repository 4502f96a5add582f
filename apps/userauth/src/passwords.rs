//! Argon2id password hashing, off the async runtime and bounded in how many run at once.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::AuthError;

/// Hashes and verifies passwords with Argon2id (PHC string format, salt and parameters inside,
/// so hashes made with other parameters still verify).
///
/// Each hash takes tens of milliseconds of CPU and `memory_kib` of memory, so hashing runs on the
/// blocking pool and at most two per core run at once; requests beyond that wait their turn.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the email is unknown, so that such a
    /// login costs what a wrong password costs and timing does not reveal which accounts exist.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, AuthError> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| AuthError::internal(format!("invalid Argon2 parameters: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dummy_hash = hash_with(&argon, &uuid::Uuid::new_v4().to_string())?;
        Ok(Self {
            argon,
            permits: Arc::new(Semaphore::new(cores * 2)),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The PHC string of a fresh salted hash of `password`.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        let argon = self.argon.clone();
        self.run(move || hash_with(&argon, &password)).await?
    }

    /// Whether `password` matches `stored`; with no stored hash, spends the same effort on the
    /// dummy hash and answers `false`.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, AuthError> {
        let argon = self.argon.clone();
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .run(move || {
                let parsed = PasswordHash::new(&phc).map_err(|e| {
                    AuthError::internal(format!("stored password hash is unreadable: {e}"))
                })?;
                Ok::<_, AuthError>(argon.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await??;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| AuthError::internal(format!("password hashing is shut down: {e}")))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AuthError::internal(format!("password hashing task failed: {e}")))
    }
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::internal(format!("hashing a password failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let hasher = PasswordHasher::new(64, 1).unwrap();
        let a = hasher.hash("correct horse 9".into()).await.unwrap();
        let b = hasher.hash("correct horse 9".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "every hash has its own salt");
        assert!(hasher
            .verify("correct horse 9".into(), Some(a.clone()))
            .await
            .unwrap());
        assert!(!hasher
            .verify("correct horse 8".into(), Some(a))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let hasher = PasswordHasher::new(64, 1).unwrap();
        assert!(!hasher.verify("anything 1".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_still_verify() {
        let old = PasswordHasher::new(64, 1).unwrap();
        let stored = old.hash("correct horse 9".into()).await.unwrap();
        let new = PasswordHasher::new(128, 2).unwrap();
        assert!(new
            .verify("correct horse 9".into(), Some(stored))
            .await
            .unwrap());
    }
}
