//! Shared builders for the unit tests.

use std::time::Duration;

use ztmesh_core::{NodeId, Timestamp};

use crate::{BinaryHash, Platform, TrustBook, TrustPolicy};

pub(crate) const T0: Timestamp = Timestamp::from_unix_secs(1_700_000_000);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn node(n: u8) -> NodeId {
    NodeId::from_bytes([n; 20])
}

pub(crate) fn at(offset: Duration) -> Timestamp {
    T0.saturating_add(offset)
}

pub(crate) const GOOD_BINARY: BinaryHash = BinaryHash([7; 32]);
pub(crate) const BAD_BINARY: BinaryHash = BinaryHash([9; 32]);

pub(crate) fn book() -> TrustBook {
    TrustBook::new(TrustPolicy::default()).expect("default policy is valid")
}

/// A certificate valid from an hour before `T0` to a day after it.
pub(crate) fn certify(book: &mut TrustBook, peer: NodeId) {
    book.handle_certificate(peer, T0.saturating_sub(HOUR), at(DAY), T0);
}

/// `ok` successes then `failed` failures at `T0`.
pub(crate) fn health(book: &mut TrustBook, peer: NodeId, ok: usize, failed: usize) {
    for _ in 0..ok {
        book.handle_health_check(peer, true, T0);
    }
    for _ in 0..failed {
        book.handle_health_check(peer, false, T0);
    }
}

/// Everything Tier 1 needs, at `T0`: certificate, TPM attestation, manifest binary, 100/100.
pub(crate) fn make_tier1(book: &mut TrustBook, peer: NodeId) {
    certify(book, peer);
    book.handle_verification_success(peer, Platform::Tpm2, T0);
    book.handle_binary(peer, GOOD_BINARY, true, T0);
    health(book, peer, 100, 0);
}

pub(crate) fn drain(book: &mut TrustBook) -> Vec<crate::TierChange> {
    std::iter::from_fn(|| book.poll_event()).collect()
}
