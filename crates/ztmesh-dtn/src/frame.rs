//! What the DTN core sends over a mesh link, inside `LinkMessage::Bundle { frame }`.
//!
//! Two frames, each a CBOR array:
//! - `[0, bstr]` — [`Frame::Bundle`]: one BPv7 bundle (or fragment), exactly as stored;
//! - `[1, [source, dtn_time_ms, seq], offset]` — [`Frame::Ack`]: hop-by-hop acknowledgement
//!   that the receiver has durably stored (or already had, delivered or discarded as
//!   receipted) the piece with this key. `source` is the 20 raw NodeId bytes.
//!
//! An ack moves responsibility for one copy; it says nothing about delivery to the
//! destination application (that is the signed receipt, carried by gossip).

use ciborium_ll::Header;
use ztmesh_core::NodeId;

use crate::bpv7::{BundleId, FragmentKey, Limits};
use crate::cbor::{push, push_bytes, Reader};
use crate::error::{DecodeError, DtnError};

/// Frame kind of [`Frame::Bundle`].
const KIND_BUNDLE: u64 = 0;
/// Frame kind of [`Frame::Ack`].
const KIND_ACK: u64 = 1;

/// Bytes a frame adds around a bundle at most (array and byte string headers).
pub const FRAME_OVERHEAD: usize = 16;

/// One DTN frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A BPv7-encoded bundle or fragment.
    Bundle {
        /// The BPv7 bytes.
        bytes: Vec<u8>,
    },
    /// The sender of this frame durably holds the piece `key` (or needs it no more).
    Ack {
        /// The acknowledged piece.
        key: FragmentKey,
    },
}

impl Frame {
    /// The frame's CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Frame::Bundle { bytes } => {
                out.reserve(bytes.len() + FRAME_OVERHEAD);
                push(&mut out, Header::Array(Some(2)));
                push(&mut out, Header::Positive(KIND_BUNDLE));
                push_bytes(&mut out, bytes);
            }
            Frame::Ack { key } => {
                push(&mut out, Header::Array(Some(3)));
                push(&mut out, Header::Positive(KIND_ACK));
                push(&mut out, Header::Array(Some(3)));
                push_bytes(&mut out, key.id.source.as_bytes());
                push(&mut out, Header::Positive(key.id.dtn_time_ms));
                push(&mut out, Header::Positive(key.id.seq));
                push(&mut out, Header::Positive(key.offset));
            }
        }
        out
    }

    /// Parses a frame received from a peer. The bundle inside is not decoded here.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Frame, DtnError> {
        Ok(decode_frame(bytes, limits)?)
    }
}

fn decode_frame(bytes: &[u8], limits: &Limits) -> Result<Frame, DecodeError> {
    let max = limits.max_bundle_bytes.saturating_add(FRAME_OVERHEAD);
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let mut reader = Reader::new(bytes);
    let items = reader.array("frame")?;
    let kind = reader.uint("frame kind")?;
    let frame = match (kind, items) {
        (KIND_BUNDLE, 2) => Frame::Bundle {
            bytes: reader.bytes("bundle", limits.max_bundle_bytes)?,
        },
        (KIND_ACK, 3) => {
            let offset = reader.offset();
            if reader.array("bundle id")? != 3 {
                return Err(DecodeError::Unexpected {
                    what: "bundle id [source, time, seq]",
                    offset,
                });
            }
            let source = reader.bytes("source node id", 20)?;
            let source: [u8; 20] = source.try_into().map_err(|_| DecodeError::Unexpected {
                what: "20-byte source node id",
                offset,
            })?;
            let id = BundleId {
                source: NodeId::from_bytes(source),
                dtn_time_ms: reader.uint("creation time")?,
                seq: reader.uint("sequence number")?,
            };
            Frame::Ack {
                key: FragmentKey {
                    id,
                    offset: reader.uint("fragment offset")?,
                },
            }
        }
        (KIND_BUNDLE | KIND_ACK, _) => {
            return Err(DecodeError::Unexpected {
                what: "frame of the kind's length",
                offset: 0,
            })
        }
        (other, _) => return Err(DecodeError::FrameKind(other)),
    };
    let trailing = reader.remaining();
    if trailing != 0 {
        return Err(DecodeError::TrailingBytes(trailing));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key() -> FragmentKey {
        FragmentKey {
            id: BundleId {
                source: NodeId::from_bytes([7; 20]),
                dtn_time_ms: 123_456,
                seq: 9,
            },
            offset: 65_536,
        }
    }

    #[test]
    fn frames_round_trip() {
        let limits = Limits::default();
        for frame in [
            Frame::Bundle {
                bytes: vec![0x9f, 0xff],
            },
            Frame::Bundle { bytes: vec![] },
            Frame::Ack { key: key() },
        ] {
            assert_eq!(Frame::decode(&frame.encode(), &limits).unwrap(), frame);
        }
    }

    #[test]
    fn known_answer_ack() {
        let mut expected = vec![0x83, 0x01, 0x83, 0x54];
        expected.extend([7u8; 20]);
        expected.extend([
            0x1a, 0x00, 0x01, 0xe2, 0x40, 0x09, 0x1a, 0x00, 0x01, 0x00, 0x00,
        ]);
        assert_eq!(Frame::Ack { key: key() }.encode(), expected);
    }

    #[test]
    fn bounds_and_garbage_are_refused() {
        let limits = Limits {
            max_bundle_bytes: 10,
            ..Limits::default()
        };
        let big = Frame::Bundle { bytes: vec![0; 11] }.encode();
        assert!(matches!(
            Frame::decode(&big, &limits),
            Err(DtnError::Malformed(DecodeError::Unexpected { .. }))
        ));
        let huge = Frame::Bundle {
            bytes: vec![0; 100],
        }
        .encode();
        assert!(matches!(
            Frame::decode(&huge, &limits),
            Err(DtnError::Malformed(DecodeError::TooLarge { .. }))
        ));
        for garbage in [
            &[][..],
            &[0x82, 0x05, 0x40],
            &[0x82, 0x01, 0x40],
            &[0x83, 0x00, 0x40, 0x00],
            &[0x82, 0x00, 0x40, 0x00],
            &[0x83, 0x01, 0x83, 0x41, 0x00, 0x00, 0x00, 0x00],
        ] {
            assert!(
                Frame::decode(garbage, &Limits::default()).is_err(),
                "{garbage:02x?}"
            );
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes, &Limits::default());
        }
    }
}
