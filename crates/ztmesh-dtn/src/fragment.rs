//! Fragmentation and reassembly (RFC 9171 §5.8 and §5.9).
//!
//! [`fragment`] splits a bundle into bundles whose payloads are contiguous ranges of the ADU,
//! each with a copy of the primary block plus the fragment offset and total ADU length.
//! [`FragmentCoverage`] tracks which ranges of an ADU have arrived and refuses fragments that
//! overlap without being identical; [`Reassembly`] adds the bytes and hands out the whole
//! payload exactly once. Both are bounded: the total ADU length is checked against a limit
//! before any fragment is kept, and only bytes actually received are held. A reassembly never
//! outlives its bundle: [`Reassembly::is_expired`] follows the bundle's lifetime.

use std::collections::BTreeMap;

use ztmesh_core::Timestamp;

use crate::bpv7::{Bundle, BundleFlags, BundleId, Eid, FragmentInfo, PrimaryBlock};
use crate::error::FragmentError;

/// Splits `bundle` into fragments of at most `max_payload_per_fragment` payload bytes.
///
/// A bundle that already fits is returned as is (one element). A fragment may be fragmented
/// again: offsets stay relative to the original ADU.
pub fn fragment(
    bundle: &Bundle,
    max_payload_per_fragment: usize,
) -> Result<Vec<Bundle>, FragmentError> {
    if max_payload_per_fragment == 0 {
        return Err(FragmentError::CannotFragment("zero fragment size"));
    }
    if bundle.payload.len() <= max_payload_per_fragment {
        return Ok(vec![bundle.clone()]);
    }
    if bundle
        .primary
        .flags
        .contains(BundleFlags::MUST_NOT_FRAGMENT)
    {
        return Err(FragmentError::CannotFragment(
            "flagged must not be fragmented",
        ));
    }
    let (base, total_adu_len) = match bundle.primary.fragment {
        Some(info) => (info.offset, info.total_adu_len),
        None => (0, bundle.payload.len() as u64),
    };
    let mut fragments = Vec::with_capacity(bundle.payload.len() / max_payload_per_fragment + 1);
    let mut offset = base;
    for chunk in bundle.payload.chunks(max_payload_per_fragment) {
        let mut primary = bundle.primary.clone();
        primary.flags = primary.flags.with(BundleFlags::IS_FRAGMENT);
        primary.fragment = Some(FragmentInfo {
            offset,
            total_adu_len,
        });
        fragments.push(Bundle {
            primary,
            payload: chunk.to_vec(),
        });
        offset += chunk.len() as u64;
    }
    Ok(fragments)
}

/// What [`FragmentCoverage::insert`] did with a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// The range was new and is now recorded.
    New,
    /// Exactly this range was already recorded; nothing changed.
    Duplicate,
}

/// Which byte ranges of one ADU have arrived. Ranges must not overlap unless identical
/// (identical ones are duplicates): a sender that splits one ADU two ways is refused rather
/// than merged, so no byte is ever taken from two differing sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentCoverage {
    total_adu_len: u64,
    /// offset → length.
    ranges: BTreeMap<u64, u64>,
    covered: u64,
}

impl FragmentCoverage {
    /// Nothing received yet of an ADU of `total_adu_len` bytes.
    pub fn new(total_adu_len: u64) -> Self {
        FragmentCoverage {
            total_adu_len,
            ranges: BTreeMap::new(),
            covered: 0,
        }
    }

    /// Length of the whole ADU.
    pub fn total_adu_len(&self) -> u64 {
        self.total_adu_len
    }

    /// Bytes received so far.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Number of distinct fragments received.
    pub fn fragments(&self) -> usize {
        self.ranges.len()
    }

    /// Whether every byte of the ADU has arrived.
    pub fn is_complete(&self) -> bool {
        self.covered == self.total_adu_len
    }

    /// Checks `offset..offset + len` without recording it.
    pub fn check(&self, offset: u64, len: u64) -> Result<Coverage, FragmentError> {
        if len == 0 {
            return Err(FragmentError::Empty);
        }
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.total_adu_len)
            .ok_or(FragmentError::Inconsistent("fragment beyond the ADU"))?;
        if self.ranges.get(&offset) == Some(&len) {
            return Ok(Coverage::Duplicate);
        }
        let overlaps_before = self
            .ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(&start, &length)| start + length > offset);
        let overlaps_after = self
            .ranges
            .range(offset..)
            .next()
            .is_some_and(|(&start, _)| start < end);
        if overlaps_before || overlaps_after {
            return Err(FragmentError::Overlap { offset, len });
        }
        Ok(Coverage::New)
    }

    /// Records `offset..offset + len`.
    pub fn insert(&mut self, offset: u64, len: u64) -> Result<Coverage, FragmentError> {
        let coverage = self.check(offset, len)?;
        if coverage == Coverage::New {
            self.ranges.insert(offset, len);
            self.covered += len;
        }
        Ok(coverage)
    }
}

/// Collects the fragments of one bundle and yields its whole payload once, when the last
/// missing byte arrives.
#[derive(Debug, Clone)]
pub struct Reassembly {
    id: BundleId,
    destination: Eid,
    lifetime_ms: u64,
    expires_at: Timestamp,
    coverage: FragmentCoverage,
    /// Received payload pieces by offset; emptied when the payload is handed out.
    pieces: BTreeMap<u64, Vec<u8>>,
    complete: bool,
}

impl Reassembly {
    /// Starts the reassembly of the bundle that `fragment` (any of its fragments' primary
    /// block) belongs to, refusing ADUs longer than `max_adu_len` bytes.
    pub fn new(fragment: &PrimaryBlock, max_adu_len: u64) -> Result<Self, FragmentError> {
        let info = fragment.fragment.ok_or(FragmentError::NotAFragment)?;
        if info.total_adu_len > max_adu_len {
            return Err(FragmentError::TooLarge {
                total: info.total_adu_len,
                max: max_adu_len,
            });
        }
        if info.total_adu_len == 0 {
            return Err(FragmentError::Empty);
        }
        Ok(Reassembly {
            id: fragment.id(),
            destination: fragment.destination.clone(),
            lifetime_ms: fragment.lifetime_ms,
            expires_at: fragment.expires_at(),
            coverage: FragmentCoverage::new(info.total_adu_len),
            pieces: BTreeMap::new(),
            complete: false,
        })
    }

    /// The bundle being reassembled.
    pub fn id(&self) -> BundleId {
        self.id
    }

    /// When the bundle, and so this reassembly, expires.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }

    /// Whether the bundle's lifetime is over at `now`; the caller then drops the reassembly.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// Which ranges have arrived.
    pub fn coverage(&self) -> &FragmentCoverage {
        &self.coverage
    }

    /// Whether the payload has been handed out.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Adds a fragment. Returns the whole payload when this fragment completes it, `None`
    /// otherwise (including for duplicates, and for anything arriving after completion that
    /// is a duplicate).
    pub fn insert(&mut self, fragment: Bundle) -> Result<Option<Vec<u8>>, FragmentError> {
        let primary = &fragment.primary;
        let info = primary.fragment.ok_or(FragmentError::NotAFragment)?;
        if primary.id() != self.id {
            return Err(FragmentError::OtherBundle);
        }
        if info.total_adu_len != self.coverage.total_adu_len() {
            return Err(FragmentError::Inconsistent("total ADU length"));
        }
        if primary.destination != self.destination {
            return Err(FragmentError::Inconsistent("destination"));
        }
        if primary.lifetime_ms != self.lifetime_ms {
            return Err(FragmentError::Inconsistent("lifetime"));
        }
        let len = fragment.payload.len() as u64;
        if self.coverage.insert(info.offset, len)? == Coverage::Duplicate {
            return Ok(None);
        }
        self.pieces.insert(info.offset, fragment.payload);
        if !self.coverage.is_complete() {
            return Ok(None);
        }
        self.complete = true;
        // Ranges are disjoint and cover 0..total, so in offset order they concatenate to the
        // ADU.
        let total = usize::try_from(self.coverage.total_adu_len()).map_err(|_| {
            FragmentError::TooLarge {
                total: self.coverage.total_adu_len(),
                max: usize::MAX as u64,
            }
        })?;
        let mut payload = Vec::with_capacity(total);
        for piece in std::mem::take(&mut self.pieces).into_values() {
            payload.extend_from_slice(&piece);
        }
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use ztmesh_core::NodeId;

    use super::*;
    use crate::bpv7::{CreationTimestamp, Limits};

    fn bundle(payload: Vec<u8>) -> Bundle {
        Bundle {
            primary: PrimaryBlock::new(
                Eid::new(NodeId::from_bytes([2; 20]), "inbox").unwrap(),
                Eid::new(NodeId::from_bytes([1; 20]), "app").unwrap(),
                CreationTimestamp {
                    dtn_time_ms: 700_000_000_000,
                    seq: 0,
                },
                Duration::from_secs(60),
            ),
            payload,
        }
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn fragments_carry_offsets_and_total_and_survive_encoding() {
        let original = bundle(payload(10));
        let fragments = fragment(&original, 4).unwrap();
        let layout: Vec<_> = fragments
            .iter()
            .map(|f| (f.primary.fragment.unwrap().offset, f.payload.len()))
            .collect();
        assert_eq!(layout, vec![(0, 4), (4, 4), (8, 2)]);
        for f in &fragments {
            assert_eq!(f.id(), original.id());
            assert_eq!(f.total_adu_len(), 10);
            assert!(f.primary.flags.contains(BundleFlags::IS_FRAGMENT));
            let decoded = Bundle::decode(&f.encode(), &Limits::default()).unwrap();
            assert_eq!(&decoded, f);
        }
        // Fits already: returned unchanged.
        assert_eq!(fragment(&original, 10).unwrap(), vec![original.clone()]);
        assert_eq!(
            fragment(&original, 0),
            Err(FragmentError::CannotFragment("zero fragment size"))
        );
        let mut pinned = original.clone();
        pinned.primary.flags = BundleFlags::MUST_NOT_FRAGMENT;
        assert!(fragment(&pinned, 4).is_err());
    }

    #[test]
    fn refragmenting_keeps_offsets_relative_to_the_adu() {
        let fragments = fragment(&bundle(payload(10)), 6).unwrap();
        let again = fragment(&fragments[1], 3).unwrap();
        let layout: Vec<_> = again
            .iter()
            .map(|f| (f.primary.fragment.unwrap(), f.payload.len()))
            .collect();
        assert_eq!(
            layout,
            vec![
                (
                    FragmentInfo {
                        offset: 6,
                        total_adu_len: 10
                    },
                    3
                ),
                (
                    FragmentInfo {
                        offset: 9,
                        total_adu_len: 10
                    },
                    1
                )
            ]
        );
    }

    #[test]
    fn reassembly_yields_the_payload_exactly_once_in_any_order() {
        let data = payload(1000);
        let mut fragments = fragment(&bundle(data.clone()), 64).unwrap();
        fragments.reverse();
        let mut reassembly = Reassembly::new(&fragments[0].primary, 1 << 20).unwrap();
        let mut outputs = Vec::new();
        for f in fragments.iter().chain(fragments.iter()) {
            if let Some(payload) = reassembly.insert(f.clone()).unwrap() {
                outputs.push(payload);
            }
        }
        assert_eq!(outputs, vec![data]);
        assert!(reassembly.is_complete());
    }

    #[test]
    fn overlapping_inconsistent_and_oversized_fragments_are_refused() {
        let data = payload(100);
        let by_10 = fragment(&bundle(data.clone()), 10).unwrap();
        let by_15 = fragment(&bundle(data), 15).unwrap();
        let mut reassembly = Reassembly::new(&by_10[0].primary, 1000).unwrap();
        assert_eq!(reassembly.insert(by_10[0].clone()), Ok(None));
        assert_eq!(
            reassembly.insert(by_15[0].clone()),
            Err(FragmentError::Overlap { offset: 0, len: 15 })
        );
        // 15..30 overlaps nothing received (0..10) but 10..20 arrives later and is refused.
        assert_eq!(reassembly.insert(by_15[1].clone()), Ok(None));
        assert!(matches!(
            reassembly.insert(by_10[1].clone()),
            Err(FragmentError::Overlap { offset: 10, .. })
        ));

        let mut other_total = by_10[2].clone();
        other_total.primary.fragment = Some(FragmentInfo {
            offset: 20,
            total_adu_len: 200,
        });
        assert_eq!(
            reassembly.insert(other_total),
            Err(FragmentError::Inconsistent("total ADU length"))
        );
        let mut other_bundle = by_10[2].clone();
        other_bundle.primary.creation.seq = 1;
        assert_eq!(
            reassembly.insert(other_bundle),
            Err(FragmentError::OtherBundle)
        );
        assert_eq!(
            reassembly.insert(bundle(vec![1])),
            Err(FragmentError::NotAFragment)
        );

        assert_eq!(
            Reassembly::new(&by_10[0].primary, 99).err(),
            Some(FragmentError::TooLarge {
                total: 100,
                max: 99
            })
        );
    }

    #[test]
    fn reassembly_expires_with_the_bundle_lifetime() {
        let fragments = fragment(&bundle(payload(20)), 10).unwrap();
        let reassembly = Reassembly::new(&fragments[0].primary, 100).unwrap();
        let expiry = fragments[0].primary.expires_at();
        assert_eq!(reassembly.expires_at(), expiry);
        assert!(!reassembly.is_expired(expiry.saturating_sub(Duration::from_millis(1))));
        assert!(reassembly.is_expired(expiry));
    }

    #[test]
    fn coverage_rules() {
        let mut coverage = FragmentCoverage::new(10);
        assert_eq!(coverage.insert(0, 0), Err(FragmentError::Empty));
        assert_eq!(
            coverage.insert(8, 3),
            Err(FragmentError::Inconsistent("fragment beyond the ADU"))
        );
        assert_eq!(
            coverage.insert(u64::MAX, 2),
            Err(FragmentError::Inconsistent("fragment beyond the ADU"))
        );
        assert_eq!(coverage.insert(2, 3), Ok(Coverage::New));
        assert_eq!(coverage.insert(2, 3), Ok(Coverage::Duplicate));
        assert!(coverage.insert(4, 1).is_err());
        assert!(coverage.insert(0, 3).is_err());
        assert!(coverage.insert(2, 2).is_err());
        assert_eq!(coverage.insert(0, 2), Ok(Coverage::New));
        assert_eq!(coverage.insert(5, 5), Ok(Coverage::New));
        assert!(coverage.is_complete());
        assert_eq!(coverage.fragments(), 3);
    }

    proptest! {
        #[test]
        fn any_split_reassembles(
            len in 1usize..2000,
            size in 1usize..300,
            seed in any::<u64>(),
        ) {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            let data = payload(len);
            let mut fragments = fragment(&bundle(data.clone()), size).unwrap();
            if fragments.len() == 1 {
                // Not fragmented: nothing to reassemble.
                prop_assert_eq!(&fragments[0].payload, &data);
                return Ok(());
            }
            fragments.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            let mut reassembly = Reassembly::new(&fragments[0].primary, len as u64).unwrap();
            let mut out = None;
            for f in fragments {
                if let Some(p) = reassembly.insert(f).unwrap() {
                    prop_assert!(out.is_none());
                    out = Some(p);
                }
            }
            prop_assert_eq!(out, Some(data));
        }

        #[test]
        fn coverage_never_counts_a_byte_twice(
            ranges in proptest::collection::vec((0u64..100, 1u64..30), 0..40),
        ) {
            let mut coverage = FragmentCoverage::new(100);
            let mut bytes = [false; 100];
            for (offset, len) in ranges {
                if coverage.insert(offset, len) == Ok(Coverage::New) {
                    for b in &mut bytes[offset as usize..(offset + len) as usize] {
                        prop_assert!(!*b);
                        *b = true;
                    }
                }
            }
            prop_assert_eq!(coverage.covered(), bytes.iter().filter(|b| **b).count() as u64);
        }
    }
}
