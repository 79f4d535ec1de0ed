//! Tunables and bounds of a [`Router`](crate::Router).

use std::time::Duration;

use crate::bpv7::Limits;
use crate::error::DtnError;
use crate::frame::FRAME_OVERHEAD;

/// Room for the primary block and block headers around a fragment's payload: two endpoint ids
/// of at most 99 characters, a dtn:none report-to, ten integers of at most 9 bytes and the
/// CRCs stay well under this.
pub const MAX_BUNDLE_OVERHEAD: usize = 512;

/// Configuration of a [`Router`](crate::Router). Every field bounds something a peer or the
/// application can make grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtnConfig {
    /// Largest payload in one bundle; longer ADUs are fragmented at this size.
    pub max_fragment_payload: usize,
    /// Largest ADU accepted, locally or as announced by fragments.
    pub max_adu_len: u64,
    /// Bound on bytes held (held pieces plus delivered payloads).
    pub max_stored_bytes: u64,
    /// Bound on pieces held plus delivered bundles.
    pub max_stored_bundles: u64,
    /// Bound on tombstones (ids remembered after delivery or receipt).
    pub max_tombstones: u64,
    /// Bound on ADUs being reassembled here at once.
    pub max_reassemblies: usize,
    /// Longest lifetime accepted; also how long a receipt for an unknown bundle is remembered.
    pub max_lifetime: Duration,
    /// How far ahead of this node's clock another node's clock may run: a received bundle may
    /// expire up to `max_lifetime + max_clock_skew` from now.
    pub max_clock_skew: Duration,
    /// First retry delay after an unacknowledged send.
    pub retry_min: Duration,
    /// Longest retry delay (the delay doubles per attempt up to this).
    pub retry_max: Duration,
    /// How long a send occupies one of a peer's outstanding slots without an ack.
    pub ack_timeout: Duration,
    /// Bound on unacknowledged sends per peer within `ack_timeout`.
    pub max_outstanding_per_peer: usize,
    /// Bound on frames waiting for [`Router::poll_transmit`](crate::Router::poll_transmit).
    pub max_queued_transmits: usize,
    /// Bound on events waiting for [`Router::poll_event`](crate::Router::poll_event).
    pub max_queued_events: usize,
    /// Decoding bounds for received bundles.
    pub limits: Limits,
}

impl Default for DtnConfig {
    fn default() -> Self {
        DtnConfig {
            max_fragment_payload: 64 * 1024,
            max_adu_len: 16 * 1024 * 1024,
            max_stored_bytes: 256 * 1024 * 1024,
            max_stored_bundles: 10_000,
            max_tombstones: 100_000,
            max_reassemblies: 64,
            max_lifetime: Duration::from_secs(7 * 24 * 3600),
            max_clock_skew: Duration::from_secs(300),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(10),
            max_outstanding_per_peer: 32,
            max_queued_transmits: 1024,
            max_queued_events: 1024,
            limits: Limits::default(),
        }
    }
}

impl DtnConfig {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), DtnError> {
        let fail = |what: &str| Err(DtnError::Config(what.to_owned()));
        if self.max_fragment_payload == 0 {
            return fail("max_fragment_payload must be positive");
        }
        if self
            .max_fragment_payload
            .saturating_add(MAX_BUNDLE_OVERHEAD)
            > self.limits.max_bundle_bytes
        {
            return fail(
                "max_fragment_payload plus bundle overhead exceeds limits.max_bundle_bytes",
            );
        }
        if self.limits.max_bundle_bytes.saturating_add(FRAME_OVERHEAD)
            > ztmesh_core::link::MAX_FRAME_LEN - 64
        {
            return fail("limits.max_bundle_bytes does not fit in a link frame");
        }
        if self.limits.max_blocks < 2 {
            return fail("limits.max_blocks must allow a primary and a payload block");
        }
        if self.max_outstanding_per_peer == 0
            || self.max_queued_transmits == 0
            || self.max_queued_events == 0
        {
            return fail("queue bounds must be positive");
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return fail("retry delays must satisfy 0 < retry_min <= retry_max");
        }
        if self.ack_timeout.is_zero() || self.max_lifetime.is_zero() {
            return fail("ack_timeout and max_lifetime must be positive");
        }
        Ok(())
    }

    /// The furthest expiry a received bundle may have, from `now`.
    pub(crate) fn latest_expiry(&self, now: ztmesh_core::Timestamp) -> ztmesh_core::Timestamp {
        now.saturating_add(self.max_lifetime)
            .saturating_add(self.max_clock_skew)
    }

    /// Delay before the next attempt after `attempts` unacknowledged sends (1 → `retry_min`,
    /// doubling up to `retry_max`).
    pub(crate) fn retry_delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        self.retry_min
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_backoff_doubles_to_the_cap() {
        let config = DtnConfig::default();
        config.validate().unwrap();
        let delays: Vec<u64> = (1..=9).map(|n| config.retry_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(config.retry_delay(u32::MAX).as_secs(), 60);
    }

    #[test]
    fn unworkable_configs_are_refused() {
        let base = DtnConfig::default();
        let mut too_big = base.clone();
        too_big.max_fragment_payload = base.limits.max_bundle_bytes;
        assert!(too_big.validate().is_err());
        let mut frame = base.clone();
        frame.limits.max_bundle_bytes = ztmesh_core::link::MAX_FRAME_LEN;
        assert!(frame.validate().is_err());
        let mut window = base.clone();
        window.max_outstanding_per_peer = 0;
        assert!(window.validate().is_err());
        let mut retry = base;
        retry.retry_max = Duration::from_millis(10);
        assert!(retry.validate().is_err());
    }
}
