//! Anti-automation for the routes a password or a refresh token is guessed through: log-in,
//! registration and refresh are rate limited per client address and per account, with
//! `governor`'s GCRA limiters (a burst of the per-minute number, then one more each
//! `60 / n` seconds). A refusal is 429 `rate_limited` with `Retry-After`.
//!
//! The address is the TCP peer's IP: behind a reverse proxy every client shares the proxy's,
//! so size the per-address limit for it there (or set it to 0 and limit at the proxy). The
//! account is the normalized email (log-in, registration) or the refresh token's user.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::AuthError;

/// Attempts per minute per client address and route by default: a person behind a shared
/// address (an office, a carrier's NAT) still logs in, a script does not try thousands.
pub const DEFAULT_ADDRESS_ATTEMPTS_PER_MINUTE: u32 = 30;
/// Attempts per minute per account and route by default: a person mistypes a few times, an
/// online guessing attack gets 10 guesses a minute at most, whatever addresses it comes from.
pub const DEFAULT_ACCOUNT_ATTEMPTS_PER_MINUTE: u32 = 10;

/// The route an attempt is made on; each has its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attempt {
    Login,
    Register,
    Refresh,
}

/// The two limiters; `0` attempts per minute switches one off.
#[derive(Clone)]
pub struct Throttle {
    per_address: Option<Arc<DefaultKeyedRateLimiter<(Attempt, IpAddr)>>>,
    per_account: Option<Arc<DefaultKeyedRateLimiter<(Attempt, String)>>>,
}

impl Throttle {
    pub fn new(address_per_minute: u32, account_per_minute: u32) -> Self {
        Self {
            per_address: limiter(address_per_minute),
            per_account: limiter(account_per_minute),
        }
    }

    /// Spends one attempt of `address`'s budget for `attempt`.
    pub fn check_address(&self, attempt: Attempt, address: IpAddr) -> Result<(), AuthError> {
        check(self.per_address.as_deref(), &(attempt, address))
    }

    /// Spends one attempt of `account`'s budget for `attempt`.
    pub fn check_account(&self, attempt: Attempt, account: &str) -> Result<(), AuthError> {
        check(self.per_account.as_deref(), &(attempt, account.to_owned()))
    }

    /// Forgets the keys whose budget is full again, so the limiters' memory follows the clients
    /// of the last minute, not every client ever seen.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.per_account {
            limiter.retain_recent();
        }
    }
}

fn limiter<K: Hash + Eq + Clone>(per_minute: u32) -> Option<Arc<DefaultKeyedRateLimiter<K>>> {
    NonZeroU32::new(per_minute).map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n))))
}

fn check<K: Hash + Eq + Clone>(
    limiter: Option<&DefaultKeyedRateLimiter<K>>,
    key: &K,
) -> Result<(), AuthError> {
    let Some(limiter) = limiter else {
        return Ok(());
    };
    limiter
        .check_key(key)
        .map_err(|not_until| AuthError::RateLimited {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const AWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn an_address_gets_its_burst_then_waits_and_others_are_unaffected() {
        let throttle = Throttle::new(3, 0);
        for _ in 0..3 {
            throttle.check_address(Attempt::Login, HOME).unwrap();
        }
        let refused = throttle.check_address(Attempt::Login, HOME).unwrap_err();
        assert_eq!(refused.code(), "rate_limited");
        // One attempt comes back every 20 s.
        let wait = refused.retry_after_secs().unwrap();
        assert!((1..=20).contains(&wait), "{wait}");
        throttle.check_address(Attempt::Login, AWAY).unwrap();
        throttle.check_address(Attempt::Refresh, HOME).unwrap();
        // The account limiter is off.
        for _ in 0..100 {
            throttle
                .check_account(Attempt::Login, "a@example.com")
                .unwrap();
        }
    }

    #[test]
    fn an_account_gets_its_burst_whatever_the_address() {
        let throttle = Throttle::new(0, 2);
        throttle
            .check_account(Attempt::Login, "a@example.com")
            .unwrap();
        throttle
            .check_account(Attempt::Login, "a@example.com")
            .unwrap();
        assert_eq!(
            throttle
                .check_account(Attempt::Login, "a@example.com")
                .unwrap_err()
                .code(),
            "rate_limited"
        );
        throttle
            .check_account(Attempt::Login, "b@example.com")
            .unwrap();
        throttle
            .check_account(Attempt::Register, "a@example.com")
            .unwrap();
        for _ in 0..100 {
            throttle.check_address(Attempt::Login, HOME).unwrap();
        }
        throttle.forget_idle();
    }
}
