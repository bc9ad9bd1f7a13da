//! Rate limits for the authentication endpoints, per client IP and per
//! account, so neither one address nor a botnet against one account can
//! guess passwords quickly.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{AppError, ErrorCode};

/// Attempts allowed per IP and per account, and how fast they come back.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Burst of attempts per IP address.
    pub per_ip: u32,
    /// Burst of attempts per account (normalized email).
    pub per_account: u32,
    /// Time for one attempt to come back.
    pub replenish: Duration,
}

impl Default for Limits {
    /// 20 attempts per IP and 5 per account, one more every 12 seconds.
    fn default() -> Self {
        Limits { per_ip: 20, per_account: 5, replenish: Duration::from_secs(12) }
    }
}

/// Keyed limiters for one kind of attempt (login, signup, password reset).
#[derive(Debug)]
pub struct AttemptLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_account: DefaultKeyedRateLimiter<String>,
}

impl AttemptLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: Limits) -> Self {
        let quota = |burst: u32| {
            Quota::with_period(limits.replenish)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
        };
        AttemptLimiter {
            by_ip: RateLimiter::keyed(quota(limits.per_ip)),
            by_account: RateLimiter::keyed(quota(limits.per_account)),
        }
    }

    /// Counts one attempt from `ip` on `account`; refuses when either is over its limit.
    pub fn check(&self, ip: IpAddr, account: Option<&str>) -> Result<(), AppError> {
        let refused = || {
            AppError::new(ErrorCode::RateLimited, "too many attempts; wait a minute and try again")
        };
        self.by_ip.check_key(&ip).map_err(|_| refused())?;
        if let Some(account) = account {
            self.by_account.check_key(&account.trim().to_lowercase()).map_err(|_| refused())?;
        }
        Ok(())
    }

    /// Forgets keys that are back to full capacity, so memory stays bounded.
    pub fn prune(&self) {
        self.by_ip.retain_recent();
        self.by_account.retain_recent();
        self.by_ip.shrink_to_fit();
        self.by_account.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_and_account_limits_apply_separately() {
        let limiter = AttemptLimiter::new(Limits {
            per_ip: 3,
            per_account: 2,
            replenish: Duration::from_secs(60),
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(limiter.check(a, Some("x@example.com")).is_ok());
        assert!(limiter.check(b, Some("X@example.com ")).is_ok());
        let third =
            limiter.check(b, Some("x@example.com")).expect_err("the account is over its limit");
        assert_eq!(third.code, ErrorCode::RateLimited);
        assert!(limiter.check(a, Some("y@example.com")).is_ok());
        assert!(limiter.check(a, None).is_ok());
        assert!(limiter.check(a, None).is_err(), "the IP is over its limit");
        limiter.prune();
    }
}
