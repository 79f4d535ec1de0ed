//! Bundle identity and DTN time: the creation timestamp, the whole-ADU [`BundleId`] (source
//! node + creation timestamp, RFC 9171 §5) and the per-fragment [`FragmentKey`].
//!
//! DTN time counts milliseconds since 2000-01-01T00:00:00Z (RFC 9171 §4.2.6); ztmesh's
//! [`Timestamp`] counts them since the Unix epoch. The conversions here are the only place the
//! two meet.

use std::fmt;
use std::str::FromStr;

use ztmesh_core::{NodeId, Timestamp};

use crate::error::BundleIdError;

/// The DTN epoch, 2000-01-01T00:00:00Z, in Unix milliseconds.
pub const DTN_EPOCH_UNIX_MS: u64 = 946_684_800_000;

/// DTN time (ms since 2000-01-01) of a Unix timestamp; `None` before 2000, which no creation
/// timestamp can express (DTN time 0 means "no clock", RFC 9171 §4.2.7).
pub fn dtn_time_from_timestamp(timestamp: Timestamp) -> Option<u64> {
    timestamp
        .as_unix_millis()
        .checked_sub(DTN_EPOCH_UNIX_MS)
        .filter(|&ms| ms > 0)
}

/// The Unix timestamp of a DTN time, saturating at the far future.
pub fn timestamp_from_dtn_time(dtn_time_ms: u64) -> Timestamp {
    Timestamp::from_unix_millis(dtn_time_ms.saturating_add(DTN_EPOCH_UNIX_MS))
}

/// When and in which order a source created a bundle: `[dtn_time_ms, seq]` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CreationTimestamp {
    /// Milliseconds since 2000-01-01T00:00:00Z.
    pub dtn_time_ms: u64,
    /// Tells apart bundles one source created within the same millisecond.
    pub seq: u64,
}

impl CreationTimestamp {
    /// The creation time as a Unix timestamp.
    pub fn time(&self) -> Timestamp {
        timestamp_from_dtn_time(self.dtn_time_ms)
    }
}

/// The identity of a whole application data unit: its source node and creation timestamp
/// (RFC 9171 §5). Every fragment of a bundle carries the same id; a fragment is told apart by
/// its offset ([`FragmentKey`]).
///
/// Text form: `<source>.<dtn_time_ms>.<seq>`, numbers in canonical decimal, so that one id has
/// exactly one text (it is used as a database key).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundleId {
    /// The node that created the bundle.
    pub source: NodeId,
    /// Creation time, ms since 2000-01-01.
    pub dtn_time_ms: u64,
    /// Creation sequence number.
    pub seq: u64,
}

impl BundleId {
    /// The creation timestamp part of the id.
    pub fn creation(&self) -> CreationTimestamp {
        CreationTimestamp {
            dtn_time_ms: self.dtn_time_ms,
            seq: self.seq,
        }
    }

    /// When the bundle was created, as a Unix timestamp.
    pub fn created_at(&self) -> Timestamp {
        timestamp_from_dtn_time(self.dtn_time_ms)
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.source, self.dtn_time_ms, self.seq)
    }
}

impl fmt::Debug for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BundleId({self})")
    }
}

/// Parses a canonical decimal: digits only, no sign, no leading zero (except "0" itself).
fn canonical_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

impl FromStr for BundleId {
    type Err = BundleIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        let (Some(source), Some(time), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BundleIdError::Syntax);
        };
        Ok(BundleId {
            source: source.parse()?,
            dtn_time_ms: canonical_decimal(time).ok_or(BundleIdError::Syntax)?,
            seq: canonical_decimal(seq).ok_or(BundleIdError::Syntax)?,
        })
    }
}

/// One stored or transmitted piece of a bundle: the bundle's id and the offset of its payload
/// in the whole ADU (0 for a bundle that is not a fragment). Text form: `<id>+<offset>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FragmentKey {
    /// The whole bundle's id.
    pub id: BundleId,
    /// Offset of this piece's payload in the ADU.
    pub offset: u64,
}

impl fmt::Display for FragmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.id, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtn_epoch_is_2000_01_01() {
        // 30 years of 365 days plus 7 leap days (1972..=1996), in seconds.
        assert_eq!(DTN_EPOCH_UNIX_MS, (30 * 365 + 7) * 86_400 * 1000);
        let t = Timestamp::from_unix_millis(DTN_EPOCH_UNIX_MS + 1234);
        assert_eq!(dtn_time_from_timestamp(t), Some(1234));
        assert_eq!(timestamp_from_dtn_time(1234), t);
        assert_eq!(
            dtn_time_from_timestamp(Timestamp::from_unix_secs(1_000)),
            None
        );
        assert_eq!(
            timestamp_from_dtn_time(u64::MAX),
            Timestamp::from_unix_millis(u64::MAX)
        );
    }

    #[test]
    fn bundle_id_text_round_trips_and_is_canonical() {
        let id = BundleId {
            source: NodeId::from_spki_der(b"abc"),
            dtn_time_ms: 700_000_000_123,
            seq: 0,
        };
        let text = id.to_string();
        assert_eq!(text, "xj4bnp4pahh6uqkbidpf3lrceoyagynd.700000000123.0");
        assert_eq!(text.parse::<BundleId>().unwrap(), id);
        for bad in [
            "xj4bnp4pahh6uqkbidpf3lrceoyagynd.0700000000123.0",
            "xj4bnp4pahh6uqkbidpf3lrceoyagynd.+7.0",
            "xj4bnp4pahh6uqkbidpf3lrceoyagynd.7",
            "xj4bnp4pahh6uqkbidpf3lrceoyagynd.7.0.1",
            "xj4bnp4pahh6uqkbidpf3lrceoyagynd..0",
            "xj4bnp4pahh6uqkbidpf3lrceoyagynd.18446744073709551616.0",
        ] {
            assert_eq!(bad.parse::<BundleId>(), Err(BundleIdError::Syntax), "{bad}");
        }
        assert!(matches!(
            "nope.1.2".parse::<BundleId>(),
            Err(BundleIdError::Node(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in ".{0,80}") {
            let _ = s.parse::<BundleId>();
        }
    }
}
