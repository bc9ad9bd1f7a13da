//! Rate limits: the authentication endpoints per client IP and per account
//! (so neither one address nor a botnet against one account can guess
//! passwords quickly), wrong current passwords per account, invitations per
//! organisation and per recipient, and questions per user and in flight per
//! organisation. Every refusal says when to come back (`Retry-After`).
//!
//! Per-address and per-organisation limits count in this process. The
//! per-account limits count in the store when servers share one
//! ([`AttemptLimiter::shared`], [`FailureLimiter::shared`]), so spreading
//! guesses at one account over several replicas gains nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use crate::error::{AppError, ErrorCode};
use crate::store::Store;

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

/// Where the per-account counts of a limiter live.
#[derive(Debug)]
enum AccountCounts {
    /// In this process.
    Local(Keyed<[u8; 32]>),
    /// In a store servers share, under `purpose:` and the account's SHA-256.
    Shared(SharedCounts),
}

/// Per-account counts kept in a shared store.
#[derive(Debug)]
struct SharedCounts {
    store: Arc<dyn Store>,
    purpose: &'static str,
    burst: u32,
    every: Duration,
}

impl SharedCounts {
    fn key(&self, account: &[u8; 32]) -> String {
        format!("{}:{}", self.purpose, hex::encode(account))
    }

    /// Counts one attempt; `Err(wait)` over the limit. A store that cannot
    /// count refuses the attempt (503): no limit is skipped.
    async fn take(&self, account: &[u8; 32]) -> Result<Result<(), Duration>, AppError> {
        let key = self.key(account);
        let taken = self.store.take_attempt(&key, self.burst, self.every, Utc::now());
        Ok(match taken.await? {
            None => Ok(()),
            Some(wait) => Err(wait),
        })
    }
}

/// Keyed limiters for one kind of attempt (login, signup, password reset).
/// Accounts are keyed by the SHA-256 of the normalised email, so a key costs
/// the same however long the email a client sends.
#[derive(Debug)]
pub struct AttemptLimiter {
    by_ip: Keyed<IpAddr>,
    by_account: AccountCounts,
}

impl AttemptLimiter {
    /// A limiter with `limits`, counting in this process.
    pub fn new(limits: Limits) -> Self {
        AttemptLimiter {
            by_ip: Keyed::new(limits.per_ip, limits.replenish),
            by_account: AccountCounts::Local(Keyed::new(limits.per_account, limits.replenish)),
        }
    }

    /// A limiter with `limits` whose per-account counts live in `store`,
    /// shared by the servers using it, under `purpose` (one per kind of attempt).
    pub fn shared(limits: Limits, store: Arc<dyn Store>, purpose: &'static str) -> Self {
        AttemptLimiter {
            by_ip: Keyed::new(limits.per_ip, limits.replenish),
            by_account: AccountCounts::Shared(SharedCounts {
                store,
                purpose,
                burst: limits.per_account,
                every: limits.replenish,
            }),
        }
    }

    /// Counts one attempt from `ip` on `account`; refuses when either is over
    /// its limit, with the wait in `Retry-After`.
    pub async fn check(&self, ip: IpAddr, account: Option<&str>) -> Result<(), AppError> {
        let refused = |wait: Duration| {
            AppError::new(ErrorCode::RateLimited, "too many attempts; wait a minute and try again")
                .retry_after(wait)
        };
        self.by_ip.check(&ip).map_err(refused)?;
        if let Some(account) = account {
            let key = digest(&account.trim().to_lowercase());
            match &self.by_account {
                AccountCounts::Local(counts) => counts.check(&key).map_err(refused)?,
                AccountCounts::Shared(counts) => counts.take(&key).await?.map_err(refused)?,
            }
        }
        Ok(())
    }

    /// Forgets keys that are back to full capacity, so memory stays bounded.
    pub fn prune(&self) {
        self.by_ip.prune();
        if let AccountCounts::Local(counts) = &self.by_account {
            counts.prune();
        }
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
    /// Set when the counts live in a shared store instead.
    shared: Option<SharedCounts>,
}

impl FailureLimiter {
    /// `limits.per_account` failures at once, one more every `limits.replenish`.
    pub fn new(limits: Limits) -> Self {
        FailureLimiter {
            burst: limits.per_account.max(1),
            replenish: limits.replenish,
            forgiven_at: Mutex::new(HashMap::new()),
            checks: AtomicU32::new(0),
            shared: None,
        }
    }

    /// The same limits, counted in `store` under `purpose`, shared by the
    /// servers using it.
    pub fn shared(limits: Limits, store: Arc<dyn Store>, purpose: &'static str) -> Self {
        FailureLimiter {
            shared: Some(SharedCounts {
                store,
                purpose,
                burst: limits.per_account.max(1),
                every: limits.replenish,
            }),
            ..FailureLimiter::new(limits)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.forgiven_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one attempt of `account` as a failure, or refuses it (with the
    /// wait) when the account is over its limit.
    pub async fn begin(&self, account: &str) -> Result<(), AppError> {
        let refused = |wait: Duration| {
            AppError::new(
                ErrorCode::RateLimited,
                "the current password was wrong too many times; wait a few minutes and try again",
            )
            .retry_after(wait)
        };
        if let Some(shared) = &self.shared {
            return shared.take(&digest(account)).await?.map_err(refused);
        }
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
            return Err(refused(debt - allowed));
        }
        *forgiven = (*forgiven).max(now) + self.replenish;
        Ok(())
    }

    /// Takes back the failure [`FailureLimiter::begin`] counted: the attempt succeeded.
    pub async fn forgive(&self, account: &str) {
        if let Some(shared) = &self.shared {
            let key = shared.key(&digest(account));
            if let Err(e) = shared.store.forgive_attempt(&key, shared.every, Utc::now()).await {
                // The cost: one failure counted too many, which time pays back.
                tracing::warn!(error = %e, "could not take back a counted password attempt");
            }
            return;
        }
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

    #[tokio::test]
    async fn ip_and_account_limits_apply_separately() {
        let limiter = AttemptLimiter::new(Limits {
            per_ip: 3,
            per_account: 2,
            replenish: Duration::from_secs(60),
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(limiter.check(a, Some("x@example.com")).await.is_ok());
        assert!(limiter.check(b, Some("X@example.com ")).await.is_ok());
        let third = limiter
            .check(b, Some("x@example.com"))
            .await
            .expect_err("the account is over its limit");
        assert_eq!(third.code, ErrorCode::RateLimited);
        assert!(limiter.check(a, Some("y@example.com")).await.is_ok());
        assert!(limiter.check(a, None).await.is_ok());
        assert!(limiter.check(a, None).await.is_err(), "the IP is over its limit");
        limiter.prune();
    }

    #[tokio::test]
    async fn refusals_say_when_to_come_back() {
        let limiter = AttemptLimiter::new(Limits {
            per_ip: 1,
            per_account: 1,
            replenish: Duration::from_secs(90),
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        limiter.check(ip, None).await.expect("the first");
        let refused = limiter.check(ip, None).await.expect_err("the second");
        let wait = refused.retry_after.expect("a Retry-After");
        assert!((1..=90).contains(&wait), "{wait}");
    }

    /// Only failures count; an account over its limit is refused before its
    /// password is tried, whatever comes at once; others are not touched.
    #[tokio::test]
    async fn wrong_current_passwords_are_limited_per_account() {
        let limits = Limits { per_ip: 100, per_account: 3, replenish: Duration::from_secs(60) };
        failures_are_limited(FailureLimiter::new(limits), FailureLimiter::new(limits)).await;
        // The same, counted in a store.
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("custard.db")).expect("store"),
        );
        let shared = || FailureLimiter::shared(limits, Arc::clone(&store), "password");
        failures_are_limited(shared(), shared()).await;
    }

    /// Three failures at once, one more a minute; a success is forgiven.
    /// `fresh` has counted nothing yet.
    async fn failures_are_limited(limiter: FailureLimiter, fresh: FailureLimiter) {
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
            match limiter.begin(account).await {
                Ok(()) => {
                    assert!(allowed, "step {i}: {account} was let through");
                    if succeeds {
                        limiter.forgive(account).await;
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
        let limiter = Arc::new(fresh);
        let tries: Vec<_> = (0..20)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move { limiter.begin("eve").await.is_ok() })
            })
            .collect();
        let mut through = 0;
        for t in tries {
            through += usize::from(t.await.expect("task"));
        }
        assert_eq!(through, 3);
    }

    /// Sign-in attempts at one account spread over three servers that share
    /// a PostgreSQL store are limited as if one server took them all; the
    /// per-address limits stay each server's own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_spread_over_servers_is_limited_per_account() {
        let db = custard_testkit::ScratchDb::create("limits").await;
        let options = crate::store::PostgresOptions {
            sharing: crate::store::Sharing::Routed,
            ..Default::default()
        };
        let limits = Limits { per_ip: 1000, per_account: 5, replenish: Duration::from_secs(60) };
        let mut servers = Vec::new();
        for _ in 0..3 {
            let store: Arc<dyn Store> = Arc::new(
                crate::store::PostgresStore::open(&db.url, &options).await.expect("store"),
            );
            servers.push(Arc::new(AttemptLimiter::shared(limits, store, "login")));
        }
        let tries: Vec<_> = (0..30)
            .map(|i| {
                let server = Arc::clone(&servers[i % 3]);
                let ip: IpAddr = std::net::Ipv4Addr::new(10, 0, 0, i as u8).into();
                tokio::spawn(async move { server.check(ip, Some("Ada@Example.com")).await })
            })
            .collect();
        let mut through = 0;
        for t in tries {
            match t.await.expect("task") {
                Ok(()) => through += 1,
                Err(e) => assert_eq!(e.code, ErrorCode::RateLimited, "{e}"),
            }
        }
        assert_eq!(through, 5, "the account's burst, over all servers together");
        // Another account is not affected.
        let ip: IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
        servers[0].check(ip, Some("grace@example.com")).await.expect("another account");
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

    #[tokio::test]
    async fn keys_are_bounded_however_many_and_however_long() {
        let limiter = AttemptLimiter::new(Limits {
            per_ip: 1,
            per_account: 1,
            replenish: Duration::from_millis(1),
        });
        let long = "x".repeat(6_000);
        for i in 0..(3 * PRUNE_EVERY) {
            let ip: IpAddr = std::net::Ipv6Addr::from(u128::from(i)).into();
            let _ = limiter.check(ip, Some(&format!("{i}{long}@example.com"))).await;
            if i % 256 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // Pruned along the way: what is left is what came since the last pruning.
        assert!(limiter.by_ip.len() <= PRUNE_EVERY as usize, "{}", limiter.by_ip.len());
        let AccountCounts::Local(by_account) = &limiter.by_account else {
            panic!("a local limiter counts locally")
        };
        assert!(by_account.len() <= PRUNE_EVERY as usize, "{}", by_account.len());
    }
}
