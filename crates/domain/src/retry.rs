use std::time::Duration;

use crate::DomainError;

/// Exponential backoff: the n-th retry waits `base * 2^n`, capped at `max_delay`; a row that has
/// failed `max_retry` times is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_retry: 20,
        }
    }
}

impl RetryPolicy {
    /// Checks the policy before it is used; a zero base or a cap below the base is a mistake.
    pub fn validated(self) -> Result<Self, DomainError> {
        if self.base_delay.is_zero() {
            return Err(DomainError::InvalidRetryPolicy(
                "base_delay must be above zero",
            ));
        }
        if self.max_delay < self.base_delay {
            return Err(DomainError::InvalidRetryPolicy(
                "max_delay must not be below base_delay",
            ));
        }
        if self.max_retry == 0 {
            return Err(DomainError::InvalidRetryPolicy(
                "max_retry must be at least 1",
            ));
        }
        Ok(self)
    }

    /// How long to wait before the attempt that follows `failures_so_far` failures.
    pub fn delay_after(&self, failures_so_far: u32) -> Duration {
        let exp = failures_so_far.saturating_sub(1).min(31);
        self.base_delay
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The decision after a row's `failures`-th failure (counting this one): `Some(delay)` to try
    /// again after `delay`, `None` when the row is dead (a permanent error, or out of retries).
    pub fn after_failure(
        &self,
        failures: u32,
        row_max_retry: Option<u32>,
        retryable: bool,
    ) -> Option<Duration> {
        if !retryable || self.exhausted(failures, row_max_retry) {
            None
        } else {
            Some(self.delay_after(failures))
        }
    }

    /// Whether a row that has now failed `failures` times (counting this one) is out of retries.
    pub fn exhausted(&self, failures: u32, row_max_retry: Option<u32>) -> bool {
        failures >= row_max_retry.unwrap_or(self.max_retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry: 5,
        };
        assert_eq!(p.delay_after(1), Duration::from_millis(100));
        assert_eq!(p.delay_after(2), Duration::from_millis(200));
        assert_eq!(p.delay_after(4), Duration::from_millis(800));
        assert_eq!(p.delay_after(5), Duration::from_secs(1));
        assert_eq!(p.delay_after(200), Duration::from_secs(1));
        assert!(!p.exhausted(4, None));
        assert!(p.exhausted(5, None));
        assert!(p.exhausted(2, Some(2)));
    }

    #[test]
    fn a_failure_retries_with_backoff_until_dead() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry: 3,
        };
        assert_eq!(
            p.after_failure(1, None, true),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            p.after_failure(2, None, true),
            Some(Duration::from_millis(200))
        );
        assert_eq!(p.after_failure(3, None, true), None, "out of retries");
        assert_eq!(
            p.after_failure(1, Some(1), true),
            None,
            "the row's own limit wins"
        );
        assert_eq!(
            p.after_failure(1, None, false),
            None,
            "permanent errors die at once"
        );
    }

    #[test]
    fn nonsense_policies_are_refused() {
        let zero = RetryPolicy {
            base_delay: Duration::ZERO,
            ..RetryPolicy::default()
        };
        assert!(zero.validated().is_err());
        let inverted = RetryPolicy {
            base_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(1),
            max_retry: 3,
        };
        assert!(inverted.validated().is_err());
        assert!(RetryPolicy::default().validated().is_ok());
    }
}
