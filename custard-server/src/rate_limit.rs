//! Rate limits for the authentication endpoints, per client IP and per
//! account, so neither one address nor a botnet against one account can
//! guess passwords quickly.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

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

/// Checks between two prunings of the keys that are back to full capacity.
const PRUNE_EVERY: u32 = 1024;

/// Keyed limiters for one kind of attempt (login, signup, password reset).
/// Accounts are keyed by the SHA-256 of the normalised email, so a key costs
/// the same however long the email a client sends, and keys back at full
/// capacity are forgotten every 1,024 checks: memory follows the
/// attempts of the last few minutes, not of all time.
#[derive(Debug)]
pub struct AttemptLimiter {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_account: DefaultKeyedRateLimiter<[u8; 32]>,
    checks: AtomicU32,
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
            checks: AtomicU32::new(0),
        }
    }

    /// Counts one attempt from `ip` on `account`; refuses when either is over its limit.
    pub fn check(&self, ip: IpAddr, account: Option<&str>) -> Result<(), AppError> {
        let refused = || {
            AppError::new(ErrorCode::RateLimited, "too many attempts; wait a minute and try again")
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        self.by_ip.check_key(&ip).map_err(|_| refused())?;
        if let Some(account) = account {
            let key: [u8; 32] = Sha256::digest(account.trim().to_lowercase()).into();
            self.by_account.check_key(&key).map_err(|_| refused())?;
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

    #[test]
    fn keys_are_bounded_however_many_and_however_long() {
        let limiter = AttemptLimiter::new(Limits {
            per_ip: 1,
            per_account: 1,
            replenish: Duration::from_millis(1),
        });
        let long = "x".repeat(6_000);
        for i in 0..(3 * PRUNE_EVERY) {
            let ip: IpAddr = std::net::Ipv6Addr::from(u128::from(i)).into();
            let _ = limiter.check(ip, Some(&format!("{i}{long}@example.com")));
            if i % 256 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // Pruned along the way: what is left is what came since the last pruning.
        assert!(limiter.by_ip.len() <= PRUNE_EVERY as usize, "{}", limiter.by_ip.len());
        assert!(limiter.by_account.len() <= PRUNE_EVERY as usize, "{}", limiter.by_account.len());
    }
}
