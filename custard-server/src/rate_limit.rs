//! Rate limits: the authentication endpoints per client IP and per account
//! (so neither one address nor a botnet against one account can guess
//! passwords quickly), wrong current passwords per account, invitations per
//! organisation and per recipient, and questions per user and in flight per
//! organisation. Every refusal says when to come back (`Retry-After`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::Clock;
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

/// The SHA-256 of a text: a key of 32 bytes however long the text.
fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text).into()
}

/// One keyed limiter that forgets keys back at full capacity every 1,024
/// checks, so memory follows the attempts of the last few minutes, not of all
/// time.
#[derive(Debug)]
struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU32,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    /// `burst` at once, one more every `replenish`.
    fn new(burst: u32, replenish: Duration) -> Self {
        let quota = Quota::with_period(replenish)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Keyed { limiter: RateLimiter::keyed(quota), checks: AtomicU32::new(0) }
    }

    /// Counts one for `key`; when it is over its limit, how long until it is not.
    fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// Keyed limiters for one kind of attempt (login, signup, password reset).
/// Accounts are keyed by the SHA-256 of the normalised email, so a key costs
/// the same however long the email a client sends.
#[derive(Debug)]
pub struct AttemptLimiter {
    by_ip: Keyed<IpAddr>,
    by_account: Keyed<[u8; 32]>,
}

impl AttemptLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: Limits) -> Self {
        AttemptLimiter {
            by_ip: Keyed::new(limits.per_ip, limits.replenish),
            by_account: Keyed::new(limits.per_account, limits.replenish),
        }
    }

    /// Counts one attempt from `ip` on `account`; refuses when either is over
    /// its limit, with the wait in `Retry-After`.
    pub fn check(&self, ip: IpAddr, account: Option<&str>) -> Result<(), AppError> {
        let refused = |wait: Duration| {
            AppError::new(ErrorCode::RateLimited, "too many attempts; wait a minute and try again")
                .retry_after(wait)
        };
        self.by_ip.check(&ip).map_err(refused)?;
        if let Some(account) = account {
            let key = digest(&account.trim().to_lowercase());
            self.by_account.check(&key).map_err(refused)?;
        }
        Ok(())
    }

    /// Forgets keys that are back to full capacity, so memory stays bounded.
    pub fn prune(&self) {
        self.by_ip.prune();
        self.by_account.prune();
    }
}

/// Counts failures only (a wrong current password), per account: `burst`
/// failures at once, one more every `replenish`. [`FailureLimiter::begin`]
/// counts an attempt as a failure before the password is verified (so
/// concurrent guesses cannot all slip through) and refuses once the account
/// is over its limit, so a guess is not even tried;
/// [`FailureLimiter::forgive`] takes the count back when the attempt succeeded.
#[derive(Debug)]
pub struct FailureLimiter {
    burst: u32,
    replenish: Duration,
    /// Per account: when its failures are all forgiven (a theoretical arrival time).
    forgiven_at: Mutex<HashMap<[u8; 32], Instant>>,
    checks: AtomicU32,
}

impl FailureLimiter {
    /// `limits.per_account` failures at once, one more every `limits.replenish`.
    pub fn new(limits: Limits) -> Self {
        FailureLimiter {
            burst: limits.per_account.max(1),
            replenish: limits.replenish,
            forgiven_at: Mutex::new(HashMap::new()),
            checks: AtomicU32::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.forgiven_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one attempt of `account` as a failure, or refuses it (with the
    /// wait) when the account is over its limit.
    pub fn begin(&self, account: &str) -> Result<(), AppError> {
        let now = Instant::now();
        let mut accounts = self.lock();
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            accounts.retain(|_, forgiven| *forgiven > now);
            accounts.shrink_to_fit();
        }
        let forgiven = accounts.entry(digest(account)).or_insert(now);
        let debt = forgiven.saturating_duration_since(now);
        let allowed = self.replenish * (self.burst - 1);
        if debt > allowed {
            return Err(AppError::new(
                ErrorCode::RateLimited,
                "the current password was wrong too many times; wait a few minutes and try again",
            )
            .retry_after(debt - allowed));
        }
        *forgiven = (*forgiven).max(now) + self.replenish;
        Ok(())
    }

    /// Takes back the failure [`FailureLimiter::begin`] counted: the attempt succeeded.
    pub fn forgive(&self, account: &str) {
        let now = Instant::now();
        let mut accounts = self.lock();
        if let Some(forgiven) = accounts.get_mut(&digest(account)) {
            *forgiven = forgiven.checked_sub(self.replenish).unwrap_or(now).max(now);
        }
    }
}

/// Invitations one organisation may send at once, then one more every three
/// minutes (20 an hour).
pub const INVITATIONS_PER_ORG: u32 = 20;
const INVITATIONS_REPLENISH: Duration = Duration::from_secs(3 * 60);
/// Invitations one address may receive at once (from every organisation
/// together), then one more every twenty minutes.
pub const INVITATIONS_PER_RECIPIENT: u32 = 3;
const RECIPIENT_REPLENISH: Duration = Duration::from_secs(20 * 60);

/// Limits on sending invitations: per organisation and per sending user (so
/// a tenant cannot mail the world in its name, not even by making new
/// organisations) and per recipient address (so nobody's inbox fills with
/// invitations, from one organisation or many).
#[derive(Debug)]
pub struct InvitationLimiter {
    by_org: Keyed<[u8; 32]>,
    by_sender: Keyed<[u8; 32]>,
    by_recipient: Keyed<[u8; 32]>,
}

impl Default for InvitationLimiter {
    fn default() -> Self {
        InvitationLimiter {
            by_org: Keyed::new(INVITATIONS_PER_ORG, INVITATIONS_REPLENISH),
            by_sender: Keyed::new(INVITATIONS_PER_ORG, INVITATIONS_REPLENISH),
            by_recipient: Keyed::new(INVITATIONS_PER_RECIPIENT, RECIPIENT_REPLENISH),
        }
    }
}

impl InvitationLimiter {
    /// Counts one invitation from user `sender` of `org` to `recipient` (a
    /// normalised email).
    pub fn check(&self, org: &str, sender: &str, recipient: &str) -> Result<(), AppError> {
        self.by_recipient.check(&digest(&recipient.trim().to_lowercase())).map_err(|wait| {
            AppError::new(
                ErrorCode::RateLimited,
                "this address was sent too many invitations lately; try again later",
            )
            .retry_after(wait)
        })?;
        self.by_sender.check(&digest(sender)).map_err(|wait| {
            AppError::new(
                ErrorCode::RateLimited,
                "you sent too many invitations lately; try again later",
            )
            .retry_after(wait)
        })?;
        self.by_org.check(&digest(org)).map_err(|wait| {
            AppError::new(
                ErrorCode::RateLimited,
                "the organisation sent too many invitations lately; try again later",
            )
            .retry_after(wait)
        })
    }
}

/// Limits on questions: each one costs model calls on the server's key and a
/// query on the tenant's database. Per user a number per minute, per
/// organisation a number in flight; `0` is unlimited.
#[derive(Debug)]
pub struct QuestionLimiter {
    per_user: Option<Keyed<String>>,
    in_flight_cap: usize,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

/// A question admitted by [`QuestionLimiter::admit`]; it counts as in flight
/// for its organisation until dropped.
#[derive(Debug)]
#[must_use = "the question counts as in flight only while its permit lives"]
pub struct QuestionPermit {
    org: Option<String>,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for QuestionPermit {
    fn drop(&mut self) {
        let Some(org) = self.org.take() else { return };
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = in_flight.get_mut(&org) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(&org);
            }
        }
    }
}

impl QuestionLimiter {
    /// `per_minute` questions per user (a burst of that many, then one every
    /// `60 / per_minute` seconds) and `in_flight` per organisation; `0` leaves
    /// either unlimited.
    pub fn new(per_minute: u32, in_flight: u32) -> Self {
        QuestionLimiter {
            per_user: (per_minute > 0)
                .then(|| Keyed::new(per_minute, Duration::from_secs(60) / per_minute)),
            in_flight_cap: in_flight as usize,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Admits one question of `user` in `org`, or says when to come back. A
    /// question refused for the organisation's cap does not count against
    /// the user's rate.
    pub fn admit(&self, user: &str, org: &str) -> Result<QuestionPermit, AppError> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        let count = in_flight.get(org).copied().unwrap_or(0);
        if self.in_flight_cap > 0 && count >= self.in_flight_cap {
            return Err(AppError::new(
                ErrorCode::TooManyQuestions,
                format!(
                    "your organisation has {count} questions in flight, as many as it may; \
                     wait for one to finish and ask again"
                ),
            )
            .retry_after(Duration::from_secs(1)));
        }
        if let Some(per_user) = &self.per_user {
            per_user.check(&user.to_owned()).map_err(|wait| {
                AppError::new(
                    ErrorCode::RateLimited,
                    "you asked too many questions in the last minute; wait a moment and ask again",
                )
                .retry_after(wait)
            })?;
        }
        if self.in_flight_cap == 0 {
            return Ok(QuestionPermit { org: None, in_flight: Arc::clone(&self.in_flight) });
        }
        *in_flight.entry(org.to_owned()).or_insert(0) += 1;
        Ok(QuestionPermit { org: Some(org.to_owned()), in_flight: Arc::clone(&self.in_flight) })
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
    fn refusals_say_when_to_come_back() {
        let limiter = AttemptLimiter::new(Limits {
            per_ip: 1,
            per_account: 1,
            replenish: Duration::from_secs(90),
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        limiter.check(ip, None).expect("the first");
        let refused = limiter.check(ip, None).expect_err("the second");
        let wait = refused.retry_after.expect("a Retry-After");
        assert!((1..=90).contains(&wait), "{wait}");
    }

    /// Only failures count; an account over its limit is refused before its
    /// password is tried, whatever comes at once; others are not touched.
    #[test]
    fn wrong_current_passwords_are_limited_per_account() {
        let limits = Limits { per_ip: 100, per_account: 3, replenish: Duration::from_secs(60) };
        let limiter = FailureLimiter::new(limits);
        // (account, attempt succeeds, allowed)
        let steps = [
            ("ada", true, true),
            ("ada", true, true),
            ("ada", true, true),
            ("ada", true, true),
            ("ada", false, true),
            ("ada", false, true),
            ("ada", false, true),
            ("ada", false, false),
            ("ada", true, false),
            ("bob", false, true),
        ];
        for (i, (account, succeeds, allowed)) in steps.into_iter().enumerate() {
            match limiter.begin(account) {
                Ok(()) => {
                    assert!(allowed, "step {i}: {account} was let through");
                    if succeeds {
                        limiter.forgive(account);
                    }
                }
                Err(e) => {
                    assert!(!allowed, "step {i}: {account} was refused: {e}");
                    assert_eq!(e.code, ErrorCode::RateLimited);
                    let wait = e.retry_after.expect("a Retry-After");
                    assert!((1..=60).contains(&wait), "{wait}");
                }
            }
        }
        // Concurrent guesses each count before they are tried.
        let limiter = FailureLimiter::new(limits);
        let through = std::thread::scope(|scope| {
            let tries: Vec<_> =
                (0..20).map(|_| scope.spawn(|| limiter.begin("eve").is_ok())).collect();
            tries.into_iter().map(|t| t.join().expect("thread")).filter(|ok| *ok).count()
        });
        assert_eq!(through, 3);
    }

    #[test]
    fn invitations_are_limited_per_organisation_sender_and_recipient() {
        let limiter = InvitationLimiter::default();
        for _ in 0..INVITATIONS_PER_RECIPIENT {
            limiter.check("org-a", "u1", "Someone@example.com").expect("within the recipient's");
        }
        let refused = limiter.check("org-b", "u2", "someone@example.com ").expect_err("any org");
        assert!(refused.message.contains("this address"), "{refused}");
        assert!(refused.retry_after.is_some());
        for i in INVITATIONS_PER_RECIPIENT..INVITATIONS_PER_ORG {
            let to = format!("r{i}@example.com");
            limiter.check("org-a", "u3", &to).expect("within the org's limit");
        }
        let refused = limiter.check("org-a", "u4", "new@example.com").expect_err("the org's limit");
        assert!(refused.message.contains("organisation"), "{refused}");
        limiter.check("org-c", "u4", "new@example.com").expect("another organisation");

        // New organisations do not give a sender a new budget.
        for i in 0..INVITATIONS_PER_ORG {
            let (org, to) = (format!("fresh-{i}"), format!("s{i}@example.com"));
            limiter.check(&org, "u5", &to).expect("within the sender's limit");
        }
        let refused = limiter.check("fresh-x", "u5", "x@example.com").expect_err("the sender's");
        assert!(refused.message.contains("you sent"), "{refused}");
    }

    #[test]
    fn questions_are_limited_per_user_per_minute_and_in_flight_per_organisation() {
        // (per minute, in flight, user, organisation, hold the permit, expected)
        type Step = (&'static str, &'static str, bool, Result<(), ErrorCode>);
        let cases: &[(u32, u32, &[Step])] = &[
            (
                2,
                0,
                &[
                    ("u1", "o1", false, Ok(())),
                    ("u1", "o1", false, Ok(())),
                    ("u1", "o1", false, Err(ErrorCode::RateLimited)),
                    ("u2", "o1", false, Ok(())),
                ],
            ),
            (
                0,
                2,
                &[
                    ("u1", "o1", true, Ok(())),
                    ("u2", "o1", true, Ok(())),
                    ("u3", "o1", true, Err(ErrorCode::TooManyQuestions)),
                    ("u3", "o2", true, Ok(())),
                ],
            ),
            (
                // Refused for the organisation's cap: not counted against the user.
                1,
                1,
                &[
                    ("u1", "o1", true, Ok(())),
                    ("u2", "o1", false, Err(ErrorCode::TooManyQuestions)),
                    ("u2", "o2", false, Ok(())),
                ],
            ),
            (0, 0, &[("u1", "o1", true, Ok(())), ("u1", "o1", true, Ok(()))]),
        ];
        for (per_minute, in_flight, steps) in cases {
            let limiter = QuestionLimiter::new(*per_minute, *in_flight);
            let mut held = Vec::new();
            for (i, (user, org, hold, expected)) in steps.iter().enumerate() {
                let got = limiter.admit(user, org);
                let what = format!("{per_minute}/min, {in_flight} in flight, step {i}");
                match (got, expected) {
                    (Ok(permit), Ok(())) if *hold => held.push(permit),
                    (Ok(_), Ok(())) => {}
                    (Err(e), Err(code)) => {
                        assert_eq!(e.code, *code, "{what}");
                        assert!(e.retry_after.is_some_and(|s| s >= 1), "{what}");
                    }
                    (got, _) => panic!("{what}: {got:?}"),
                }
            }
        }
        // A finished question frees its place.
        let limiter = QuestionLimiter::new(0, 1);
        let permit = limiter.admit("u1", "o1").expect("the first");
        assert!(limiter.admit("u1", "o1").is_err());
        drop(permit);
        let _again = limiter.admit("u1", "o1").expect("its place is free");
        assert_eq!(limiter.in_flight.lock().unwrap().get("o1"), Some(&1));
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
