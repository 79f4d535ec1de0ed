//! Per-peer rate limiting: token buckets refilled from the `now` the caller passes in.

use ztmesh_core::Timestamp;

/// Tokens are counted in thousandths so that a per-second rate refills exactly per millisecond.
const SCALE: u64 = 1000;

/// A token bucket holding at most one second's worth of tokens (so a peer may burst up to its
/// per-second rate, then is held to the rate).
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: u64,
    /// Thousandths of a token.
    tokens: u64,
    last_refill: Timestamp,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(per_second: u64, now: Timestamp) -> Self {
        TokenBucket {
            per_second,
            tokens: per_second.saturating_mul(SCALE),
            last_refill: now,
        }
    }

    fn refill(&mut self, now: Timestamp) {
        // A clock that steps backwards refills nothing rather than underflowing.
        let elapsed_ms = now.duration_since(self.last_refill).as_millis();
        let elapsed_ms = u64::try_from(elapsed_ms).unwrap_or(u64::MAX);
        self.tokens = self
            .tokens
            .saturating_add(elapsed_ms.saturating_mul(self.per_second))
            .min(self.per_second.saturating_mul(SCALE));
        self.last_refill = self.last_refill.max(now);
    }

    /// Whether `amount` tokens are available at `now` (after refilling).
    pub(crate) fn has(&mut self, amount: u64, now: Timestamp) -> bool {
        self.refill(now);
        self.tokens >= amount.saturating_mul(SCALE)
    }

    /// Changes the rate from `now` on: tokens earned so far at the old rate are kept, capped
    /// at one second of the new rate.
    pub(crate) fn set_rate(&mut self, per_second: u64, now: Timestamp) {
        self.refill(now);
        self.per_second = per_second;
        self.tokens = self.tokens.min(per_second.saturating_mul(SCALE));
    }

    /// Takes `amount` tokens; call only after [`TokenBucket::has`] returned true.
    pub(crate) fn take(&mut self, amount: u64) {
        self.tokens = self.tokens.saturating_sub(amount.saturating_mul(SCALE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_rate_caps_the_burst_and_refills_at_the_new_rate() {
        let start = Timestamp::from_unix_millis(1_000_000);
        let mut bucket = TokenBucket::new(100, start);
        bucket.set_rate(2, start);
        assert!(bucket.has(2, start));
        assert!(!bucket.has(3, start));
        bucket.take(2);
        assert!(!bucket.has(1, start));
        let later = Timestamp::from_unix_millis(1_000_500);
        assert!(bucket.has(1, later));
        assert!(!bucket.has(2, later));
        // Raising the rate does not hand out the new burst at once.
        bucket.set_rate(50, later);
        assert!(!bucket.has(2, later));
    }

    #[test]
    fn bursts_one_second_then_refills_at_the_rate() {
        let start = Timestamp::from_unix_secs(100);
        let mut bucket = TokenBucket::new(10, start);
        for _ in 0..10 {
            assert!(bucket.has(1, start));
            bucket.take(1);
        }
        assert!(!bucket.has(1, start));
        // 10 per second = one per 100 ms.
        assert!(!bucket.has(1, Timestamp::from_unix_millis(100_099)));
        assert!(bucket.has(1, Timestamp::from_unix_millis(100_100)));
        // Never more than one second's worth, however long the pause.
        assert!(bucket.has(10, Timestamp::from_unix_secs(10_000)));
        assert!(!bucket.has(11, Timestamp::from_unix_secs(10_000)));
        // Time going backwards neither panics nor refills.
        bucket.take(10);
        assert!(!bucket.has(1, start));
    }
}
