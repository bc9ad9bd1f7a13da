//! Password hashing and verification, bounded across the whole server.
//!
//! argon2id costs 19 MiB and tens of milliseconds of one core per call, on
//! purpose. Every place that hashes or verifies a password (sign-up, sign-in,
//! password reset, change of password, the demo) goes through
//! [`PasswordHashing`], which runs at most `bound` of them at once (the
//! number of cores by default), each on a blocking thread. Callers beyond the
//! bound wait their turn, up to the request read deadline
//! (`CUSTARD_REQUEST_READ_TIMEOUT_MS`) and with at most [`WAITERS_PER_SLOT`]
//! waiters per slot; past either, they get `503 server_busy` with
//! `Retry-After`. So no route, however often it is called, can make the
//! server hash without limit: memory stays within `bound × 19 MiB` for
//! hashing, and the cores left over keep serving everything else.
//!
//! The unbounded primitives stay in [`crate::auth`] (tests and tools use
//! them); a test below checks that no other module of the server calls them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth;
use crate::error::{AppError, ErrorCode};

/// Callers that may wait per slot before the next one is turned away at once.
pub const WAITERS_PER_SLOT: usize = 16;

/// The server-wide bound on password hashing, with its counters.
#[derive(Debug)]
pub struct PasswordHashing {
    slots: Arc<Semaphore>,
    bound: usize,
    max_wait: Duration,
    max_waiting: usize,
    waiting: AtomicUsize,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Hashes and verifications started.
    started: AtomicU64,
    /// Running now.
    running: AtomicUsize,
    /// The most that ever ran at once.
    peak: AtomicUsize,
    /// Callers turned away (`server_busy`).
    refused: AtomicU64,
}

/// What the hashing bound has done so far (for tests and `/metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashingStats {
    /// How many may run at once.
    pub bound: usize,
    /// Hashes and verifications started since the server started.
    pub started: u64,
    /// The most that ever ran at once (never above `bound`).
    pub peak: usize,
    /// Callers turned away with `server_busy`.
    pub refused: u64,
}

/// The number of cores, the default bound.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl PasswordHashing {
    /// At most `bound` (at least one) at once; a caller waits at most `max_wait`.
    pub fn new(bound: usize, max_wait: Duration) -> Self {
        let bound = bound.max(1);
        PasswordHashing {
            slots: Arc::new(Semaphore::new(bound)),
            bound,
            max_wait,
            max_waiting: bound * WAITERS_PER_SLOT,
            waiting: AtomicUsize::new(0),
            counters: Arc::new(Counters::default()),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> HashingStats {
        HashingStats {
            bound: self.bound,
            started: self.counters.started.load(Ordering::Relaxed),
            peak: self.counters.peak.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
        }
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        self.run(move || auth::hash_password(&password)).await?.map_err(AppError::internal)
    }

    /// Whether `password` matches `stored`; with no stored hash (an unknown
    /// account) it spends the same time and answers `false`, so timing does
    /// not tell which accounts exist. A malformed stored hash is a mismatch.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, AppError> {
        self.run(move || match stored {
            Some(hash) => auth::verify_password(&password, &hash).unwrap_or(false),
            None => {
                auth::dummy_verify(&password);
                false
            }
        })
        .await
    }

    /// Runs `work` on a blocking thread once a slot is free. The slot goes
    /// with the work into its thread and comes back when the work ends, even
    /// if the caller went away meanwhile: a cancelled request cannot free a
    /// slot whose hash is still running.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let slot = self.slot().await?;
        let counters = Arc::clone(&self.counters);
        tokio::task::spawn_blocking(move || {
            let running = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
            counters.peak.fetch_max(running, Ordering::SeqCst);
            counters.started.fetch_add(1, Ordering::SeqCst);
            let result = work();
            counters.running.fetch_sub(1, Ordering::SeqCst);
            drop(slot);
            result
        })
        .await
        .map_err(AppError::internal)
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, AppError> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(slot);
        }
        let busy = || {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            AppError::new(
                ErrorCode::ServerBusy,
                "the server is busy checking passwords; try again in a moment",
            )
            .retry_after(Duration::from_secs(1))
        };
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(busy());
        }
        let waited =
            tokio::time::timeout(self.max_wait, Arc::clone(&self.slots).acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(closed)) => Err(AppError::internal(closed)),
            Err(_) => Err(busy()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many more callers than slots: never more than the bound at once, every
    /// caller served (they wait), and the answers right.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_more_than_the_bound_at_once() {
        tokio::time::timeout(Duration::from_secs(120), async {
            let hashing = Arc::new(PasswordHashing::new(2, Duration::from_secs(60)));
            let stored = hashing.hash("correct horse battery staple".to_owned()).await.unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..12 {
                let (hashing, stored) = (Arc::clone(&hashing), stored.clone());
                tasks.spawn(async move {
                    let guess = if i % 2 == 0 { "correct horse battery staple" } else { "wrong" };
                    (i, hashing.verify(guess.to_owned(), Some(stored)).await)
                });
            }
            while let Some(done) = tasks.join_next().await {
                let (i, verdict) = done.expect("the task");
                assert_eq!(verdict, Ok(i % 2 == 0), "caller {i}");
            }
            let stats = hashing.stats();
            assert_eq!(stats.started, 13);
            assert_eq!(stats.refused, 0);
            assert!(stats.peak >= 1 && stats.peak <= 2, "{stats:?}");
        })
        .await
        .expect("in time");
    }

    /// Past the wait, or past the waiters a slot may have, the answer is
    /// `503 server_busy` with `Retry-After`, and nothing is hashed for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_past_the_wait_are_told_to_come_back() {
        let hashing = PasswordHashing::new(1, Duration::from_millis(1));
        // Hold the only slot, as a long hash would.
        let held = Arc::clone(&hashing.slots).try_acquire_owned().expect("the slot");
        let refused = hashing.hash("a long enough passphrase".to_owned()).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::ServerBusy);
        assert_eq!(refused.code.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.retry_after, Some(1));
        let refused = hashing.verify("x".to_owned(), None).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::ServerBusy);
        assert_eq!(hashing.stats().started, 0, "nothing ran");
        assert_eq!(hashing.stats().refused, 2);
        drop(held);
        assert!(!hashing.verify("x".to_owned(), None).await.expect("a slot is free"));
        assert_eq!(hashing.stats().started, 1);

        // No waiting room at all: turned away at once, without waiting.
        let hashing = PasswordHashing::new(1, Duration::from_secs(3600));
        let held = Arc::clone(&hashing.slots).try_acquire_owned().expect("the slot");
        hashing.waiting.store(hashing.max_waiting, Ordering::SeqCst);
        let refused =
            tokio::time::timeout(Duration::from_secs(30), hashing.verify("x".into(), None))
                .await
                .expect("answered at once")
                .unwrap_err();
        assert_eq!(refused.code, ErrorCode::ServerBusy);
        drop(held);
    }

    /// Every module of the server hashes and verifies through this one: no
    /// other calls the unbounded primitives of `auth`.
    #[test]
    fn no_module_hashes_around_the_bound() {
        fn visit(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("the source directory") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    if !path.ends_with("auth") {
                        visit(&path, found);
                    }
                    continue;
                }
                if path.ends_with("hashing.rs") || path.extension() != Some("rs".as_ref()) {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("a source file");
                for primitive in ["hash_password(", "verify_password(", "dummy_verify("] {
                    if text.contains(primitive) {
                        found.push(format!("{} calls {primitive}", path.display()));
                    }
                }
            }
        }
        let mut found = Vec::new();
        visit(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        assert!(found.is_empty(), "hash through PasswordHashing: {found:#?}");
    }
}
