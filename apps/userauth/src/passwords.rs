//! Argon2id password hashing, off the async runtime, bounded in how many run at once and in
//! how many wait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{Semaphore, TryAcquireError};

use crate::error::AuthError;

/// Hashes and verifies passwords with Argon2id (PHC string format, salt and parameters inside,
/// so hashes made with other parameters still verify).
///
/// Each hash takes tens of milliseconds of CPU and `memory_kib` of memory, so hashing runs on the
/// blocking pool and at most two per core run at once; up to `max_waiting` requests beyond that
/// wait their turn, and the rest are refused at once ([`AuthError::HashingBusy`]), so a flood
/// cannot build a queue that real log-ins wait behind until their clients give up.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// A hash of a random password, verified against when the email is unknown, so that such a
    /// login costs what a wrong password costs and timing does not reveal which accounts exist.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub fn new(memory_kib: u32, iterations: u32, max_waiting: usize) -> Result<Self, AuthError> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| AuthError::internal(format!("invalid Argon2 parameters: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dummy_hash = hash_with(&argon, &uuid::Uuid::new_v4().to_string())?;
        Ok(Self {
            argon,
            permits: Arc::new(Semaphore::new(cores * 2)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
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
        let closed = |e| AuthError::internal(format!("password hashing is shut down: {e}"));
        let _permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => {
                return Err(AuthError::internal("password hashing is shut down"))
            }
            Err(TryAcquireError::NoPermits) => {
                let _queued = Queued::join(&self.waiting, self.max_waiting)?;
                self.permits.clone().acquire_owned().await.map_err(closed)?
            }
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AuthError::internal(format!("password hashing task failed: {e}")))
    }
}

/// A place in the queue for a hashing permit, given up when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn join(waiting: &'a AtomicUsize, max_waiting: usize) -> Result<Self, AuthError> {
        let ahead = waiting.fetch_add(1, Ordering::SeqCst);
        let queued = Self(waiting);
        if ahead >= max_waiting {
            return Err(AuthError::HashingBusy);
        }
        Ok(queued)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
        let hasher = PasswordHasher::new(64, 1, 8).unwrap();
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
    async fn a_full_queue_refuses_at_once_and_the_queued_are_served() {
        let hasher = PasswordHasher::new(64, 1, 1).unwrap();
        // Every hashing slot taken, as by a flood of log-ins.
        let slots = hasher.permits.available_permits() as u32;
        let held = hasher
            .permits
            .clone()
            .acquire_many_owned(slots)
            .await
            .unwrap();
        let queued = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.hash("correct horse 9".into()).await }
        });
        while hasher.waiting.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let refused = hasher.verify("correct horse 9".into(), None).await;
        assert!(
            matches!(refused, Err(AuthError::HashingBusy)),
            "{refused:?}"
        );
        drop(held);
        let served = queued.await.unwrap().unwrap();
        assert!(served.starts_with("$argon2id$"), "{served}");
        assert_eq!(hasher.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        let hasher = PasswordHasher::new(64, 1, 8).unwrap();
        assert!(!hasher.verify("anything 1".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_still_verify() {
        let old = PasswordHasher::new(64, 1, 8).unwrap();
        let stored = old.hash("correct horse 9".into()).await.unwrap();
        let new = PasswordHasher::new(128, 2, 8).unwrap();
        assert!(new
            .verify("correct horse 9".into(), Some(stored))
            .await
            .unwrap());
    }
}
