//! Reconnect delays: exponential backoff with full jitter, reset once a
//! connection has been stable for a while.

use std::time::Duration;

use rand::Rng;

/// Delays between reconnect attempts.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    stable_after: Duration,
    attempt: u32,
}

impl Backoff {
    /// 0.5 s doubling up to 30 s, reset after a stable minute (the wire protocol's rule).
    pub fn new() -> Self {
        Self::with(Duration::from_millis(500), Duration::from_secs(30), Duration::from_secs(60))
    }

    /// Custom bounds, for tests and tuning.
    pub fn with(base: Duration, cap: Duration, stable_after: Duration) -> Self {
        Backoff { base, cap, stable_after, attempt: 0 }
    }

    /// The ceiling of the next delay: `base * 2^attempt`, at most `cap`.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, uniformly random below the ceiling ("full jitter"),
    /// so many agents cut off at once do not reconnect in step.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Whether a connection that lasted `connected_for` counts as stable.
    pub fn is_stable(&self, connected_for: Duration) -> bool {
        connected_for >= self.stable_after
    }

    /// Called when a connection ends after lasting `connected_for`: a stable
    /// connection starts the delays over.
    pub fn connection_ended(&mut self, connected_for: Duration) {
        if self.is_stable(connected_for) {
            self.attempt = 0;
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_to_the_cap_and_reset_after_a_stable_connection() {
        let mut b = Backoff::new();
        let ceilings: Vec<u128> = (0..9)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay();
                assert!(d <= c, "{d:?} above {c:?}");
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        b.connection_ended(Duration::from_secs(5));
        assert_eq!(b.ceiling(), Duration::from_secs(30), "a short connection does not reset");
        b.connection_ended(Duration::from_secs(61));
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn delays_are_spread_out() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let mut b =
                Backoff::with(Duration::from_secs(10), Duration::from_secs(10), Duration::MAX);
            seen.insert(b.next_delay().as_millis());
        }
        assert!(seen.len() > 10, "full jitter gives varied delays: {seen:?}");
    }
}
