//! The BPv7 bundle format (RFC 9171 §4), so that the bytes ztmesh stores and forwards mean the
//! same to any other Bundle Protocol implementation.
//!
//! A bundle is a CBOR indefinite-length array of blocks: the primary block, any extension
//! blocks, and the payload block (type 1, number 1) last. ztmesh writes a CRC-32C on every
//! block. [`Bundle::decode`] verifies each CRC over the block's *received* bytes (their byte
//! range is found while parsing), so a bundle is never re-serialized to be checked, and
//! unknown extension blocks are stepped over unless they are flagged "delete bundle if
//! unprocessable". Input length is checked against [`Limits`] before anything is allocated;
//! no input makes the decoder panic.

mod bundle_id;
mod crc;
mod eid;

use std::time::Duration;

use ciborium_ll::Header;
use ztmesh_core::Timestamp;

pub use bundle_id::{
    dtn_time_from_timestamp, timestamp_from_dtn_time, BundleId, CreationTimestamp, FragmentKey,
    DTN_EPOCH_UNIX_MS,
};
pub use crc::CrcType;
pub use eid::{Eid, DTN_SCHEME_CODE, MAX_SERVICE_LEN};

use crate::cbor::{push, push_bytes, Reader};
use crate::error::{DecodeError, DtnError, EidError};
use eid::{decode_eid, encode_eid};

/// The Bundle Protocol version this codec speaks.
pub const BP_VERSION: u64 = 7;

/// Block type code of the payload block.
pub const PAYLOAD_BLOCK_TYPE: u64 = 1;

/// Block number of the payload block (RFC 9171 §4.3.3).
pub const PAYLOAD_BLOCK_NUMBER: u64 = 1;

/// Block processing control flag: the block must be replicated in every fragment.
pub const BLOCK_REPLICATE_IN_FRAGMENTS: u64 = 0x01;
/// Block processing control flag: transmit a status report if the block cannot be processed.
pub const BLOCK_REPORT_IF_UNPROCESSABLE: u64 = 0x02;
/// Block processing control flag: delete the bundle if the block cannot be processed.
pub const BLOCK_DELETE_BUNDLE_IF_UNPROCESSABLE: u64 = 0x04;
/// Block processing control flag: discard the block if it cannot be processed.
pub const BLOCK_DISCARD_IF_UNPROCESSABLE: u64 = 0x10;

/// Bundle processing control flags (RFC 9171 §4.2.3). Bits this codec does not name are kept
/// as received.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BundleFlags(u64);

impl BundleFlags {
    /// The bundle is a fragment. [`Bundle::encode`] derives this bit from
    /// [`PrimaryBlock::fragment`], so the two cannot disagree on the wire.
    pub const IS_FRAGMENT: BundleFlags = BundleFlags(0x01);
    /// The payload is an administrative record.
    pub const ADMINISTRATIVE_RECORD: BundleFlags = BundleFlags(0x02);
    /// The bundle must not be fragmented.
    pub const MUST_NOT_FRAGMENT: BundleFlags = BundleFlags(0x04);
    /// The destination application is asked to acknowledge the bundle.
    pub const APP_ACK_REQUESTED: BundleFlags = BundleFlags(0x20);
    /// Status reports are asked to carry the time of the reported event.
    pub const STATUS_TIME_REQUESTED: BundleFlags = BundleFlags(0x40);
    /// A status report is requested on reception.
    pub const REPORT_RECEPTION: BundleFlags = BundleFlags(0x4000);
    /// A status report is requested on forwarding.
    pub const REPORT_FORWARDING: BundleFlags = BundleFlags(0x1_0000);
    /// A status report is requested on delivery.
    pub const REPORT_DELIVERY: BundleFlags = BundleFlags(0x2_0000);
    /// A status report is requested on deletion.
    pub const REPORT_DELETION: BundleFlags = BundleFlags(0x4_0000);

    /// No flag set.
    pub const fn empty() -> Self {
        BundleFlags(0)
    }

    /// Flags from their wire value.
    pub const fn from_bits(bits: u64) -> Self {
        BundleFlags(bits)
    }

    /// The wire value.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: BundleFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags plus `other`.
    pub const fn with(self, other: BundleFlags) -> Self {
        BundleFlags(self.0 | other.0)
    }

    /// These flags without `other`.
    pub const fn without(self, other: BundleFlags) -> Self {
        BundleFlags(self.0 & !other.0)
    }
}

impl std::fmt::Debug for BundleFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BundleFlags({:#x})", self.0)
    }
}

/// Where a fragment's payload sits in the whole application data unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentInfo {
    /// Offset of the fragment's payload in the ADU.
    pub offset: u64,
    /// Length of the whole ADU.
    pub total_adu_len: u64,
}

/// The primary block (RFC 9171 §4.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryBlock {
    /// Bundle processing control flags.
    pub flags: BundleFlags,
    /// The CRC written on every block of the bundle (a primary block must carry one).
    pub crc_type: CrcType,
    /// Where the bundle goes.
    pub destination: Eid,
    /// The endpoint that created it.
    pub source: Eid,
    /// Where status reports go; `None` is `dtn:none` (ztmesh requests no reports).
    pub report_to: Option<Eid>,
    /// When and in which order the source created it.
    pub creation: CreationTimestamp,
    /// Milliseconds after creation at which the bundle expires everywhere.
    pub lifetime_ms: u64,
    /// Set on fragments.
    pub fragment: Option<FragmentInfo>,
}

impl PrimaryBlock {
    /// A primary block with no flags, CRC-32C and no status reports.
    pub fn new(
        destination: Eid,
        source: Eid,
        creation: CreationTimestamp,
        lifetime: Duration,
    ) -> Self {
        PrimaryBlock {
            flags: BundleFlags::empty(),
            crc_type: CrcType::Crc32c,
            destination,
            source,
            report_to: None,
            creation,
            lifetime_ms: u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX),
            fragment: None,
        }
    }

    /// Whether this is a fragment.
    pub fn is_fragment(&self) -> bool {
        self.fragment.is_some()
    }

    /// The whole bundle's id.
    pub fn id(&self) -> BundleId {
        BundleId {
            source: self.source.node(),
            dtn_time_ms: self.creation.dtn_time_ms,
            seq: self.creation.seq,
        }
    }

    /// When the bundle expires: creation time plus lifetime (saturating).
    pub fn expires_at(&self) -> Timestamp {
        self.creation
            .time()
            .saturating_add(Duration::from_millis(self.lifetime_ms))
    }

    /// Flags as written on the wire: the fragment bit follows [`PrimaryBlock::fragment`].
    fn wire_flags(&self) -> u64 {
        if self.fragment.is_some() {
            self.flags.with(BundleFlags::IS_FRAGMENT).bits()
        } else {
            self.flags.without(BundleFlags::IS_FRAGMENT).bits()
        }
    }
}

/// Bounds applied while decoding untrusted bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded bundle accepted, in bytes. The default fills a link frame.
    pub max_bundle_bytes: usize,
    /// Most blocks (primary included) in one bundle.
    pub max_blocks: usize,
}

/// Room left in a link frame around a bundle for the link message and DTN frame headers.
pub const FRAME_HEADROOM: usize = 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bundle_bytes: ztmesh_core::link::MAX_FRAME_LEN - FRAME_HEADROOM,
            max_blocks: 16,
        }
    }
}

/// A bundle as ztmesh handles it: the primary block and the payload. Extension blocks of
/// received bundles are verified and stepped over; relays forward the bytes they received, so
/// such blocks travel on unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The primary block.
    pub primary: PrimaryBlock,
    /// The payload block's data (a fragment's share of the ADU for fragments).
    pub payload: Vec<u8>,
}

impl Bundle {
    /// The whole bundle's id (the same for all its fragments).
    pub fn id(&self) -> BundleId {
        self.primary.id()
    }

    /// The id and fragment offset of this piece.
    pub fn key(&self) -> FragmentKey {
        FragmentKey {
            id: self.id(),
            offset: self.primary.fragment.map_or(0, |f| f.offset),
        }
    }

    /// Length of the whole ADU: the payload length, or the announced total for a fragment.
    pub fn total_adu_len(&self) -> u64 {
        self.primary
            .fragment
            .map_or(self.payload.len() as u64, |f| f.total_adu_len)
    }

    /// The BPv7 encoding: `[_ primary, payload ]` with a CRC on each block.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 256);
        push(&mut out, Header::Array(None));
        encode_primary(&mut out, &self.primary);
        encode_payload_block(&mut out, &self.payload, self.primary.crc_type);
        push(&mut out, Header::Break);
        out
    }

    /// Parses and verifies a bundle received from anywhere.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Bundle, DtnError> {
        Ok(decode_bundle(bytes, limits)?)
    }
}

/// Appends a CRC field of `crc_type` to the block that started at `start` in `out`, computed
/// over everything from `start` with the field's value as zeros.
fn append_crc(out: &mut Vec<u8>, start: usize, crc_type: CrcType) {
    push(out, Header::Bytes(Some(crc_type.width())));
    let value_at = out.len();
    out.resize(value_at + crc_type.width(), 0);
    let value = crc_type.compute(&out[start..], value_at - start);
    out[value_at..].copy_from_slice(&value);
}

fn encode_primary(out: &mut Vec<u8>, primary: &PrimaryBlock) {
    let start = out.len();
    let items = if primary.fragment.is_some() { 11 } else { 9 };
    push(out, Header::Array(Some(items)));
    push(out, Header::Positive(BP_VERSION));
    push(out, Header::Positive(primary.wire_flags()));
    push(out, Header::Positive(primary.crc_type.code()));
    encode_eid(out, Some(&primary.destination));
    encode_eid(out, Some(&primary.source));
    encode_eid(out, primary.report_to.as_ref());
    push(out, Header::Array(Some(2)));
    push(out, Header::Positive(primary.creation.dtn_time_ms));
    push(out, Header::Positive(primary.creation.seq));
    push(out, Header::Positive(primary.lifetime_ms));
    if let Some(fragment) = primary.fragment {
        push(out, Header::Positive(fragment.offset));
        push(out, Header::Positive(fragment.total_adu_len));
    }
    append_crc(out, start, primary.crc_type);
}

fn encode_payload_block(out: &mut Vec<u8>, payload: &[u8], crc_type: CrcType) {
    let start = out.len();
    push(out, Header::Array(Some(6)));
    push(out, Header::Positive(PAYLOAD_BLOCK_TYPE));
    push(out, Header::Positive(PAYLOAD_BLOCK_NUMBER));
    push(out, Header::Positive(0));
    push(out, Header::Positive(crc_type.code()));
    push_bytes(out, payload);
    append_crc(out, start, crc_type);
}

fn decode_bundle(bytes: &[u8], limits: &Limits) -> Result<Bundle, DecodeError> {
    if bytes.len() > limits.max_bundle_bytes {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits.max_bundle_bytes,
        });
    }
    let mut reader = Reader::new(bytes);
    let offset = reader.offset();
    if reader.pull()? != Header::Array(None) {
        return Err(DecodeError::Unexpected {
            what: "indefinite-length array of blocks",
            offset,
        });
    }
    let primary = decode_primary(&mut reader, bytes)?;
    let mut block_numbers: Vec<u64> = Vec::new();
    let mut payload = None;
    loop {
        let start = reader.offset();
        let items = match reader.pull()? {
            Header::Break => break,
            Header::Array(Some(items)) => items,
            _ => {
                return Err(DecodeError::Unexpected {
                    what: "canonical block or break",
                    offset: start,
                })
            }
        };
        if payload.is_some() {
            // RFC 9171 §4.1: the payload block is the last block.
            return Err(DecodeError::PayloadBlock);
        }
        // +1 for the primary block, +1 for the block being read.
        if block_numbers.len() + 2 > limits.max_blocks {
            return Err(DecodeError::TooManyBlocks {
                max: limits.max_blocks,
            });
        }
        let block = decode_canonical(&mut reader, bytes, start, items)?;
        if block.number == 0 || block_numbers.contains(&block.number) {
            return Err(DecodeError::BlockNumber(block.number));
        }
        block_numbers.push(block.number);
        payload = block.payload;
    }
    let trailing = reader.remaining();
    if trailing != 0 {
        return Err(DecodeError::TrailingBytes(trailing));
    }
    let payload = payload.ok_or(DecodeError::PayloadBlock)?;
    if let Some(fragment) = primary.fragment {
        let len = payload.len() as u64;
        let fits = fragment
            .offset
            .checked_add(len)
            .is_some_and(|end| end <= fragment.total_adu_len);
        if !fits {
            return Err(DecodeError::FragmentRange {
                offset: fragment.offset,
                len,
                total: fragment.total_adu_len,
            });
        }
    }
    Ok(Bundle { primary, payload })
}

fn decode_primary(reader: &mut Reader<'_>, bytes: &[u8]) -> Result<PrimaryBlock, DecodeError> {
    let start = reader.offset();
    let items = reader.array("primary block")?;
    let version = reader.uint("bundle protocol version")?;
    if version != BP_VERSION {
        return Err(DecodeError::Version(version));
    }
    let flags = BundleFlags::from_bits(reader.uint("bundle processing control flags")?);
    let crc_code = reader.uint("CRC type")?;
    let crc_type = match crc_code {
        0 => return Err(DecodeError::MissingPrimaryCrc),
        code => CrcType::from_code(code).ok_or(DecodeError::CrcType(code))?,
    };
    let is_fragment = flags.contains(BundleFlags::IS_FRAGMENT);
    if items != if is_fragment { 11 } else { 9 } {
        return Err(DecodeError::Unexpected {
            what: "primary block of 9 items (11 for a fragment)",
            offset: start,
        });
    }
    let destination = decode_eid(reader)?.ok_or(EidError::NullEndpoint)?;
    let source = decode_eid(reader)?.ok_or(EidError::NullEndpoint)?;
    let report_to = decode_eid(reader)?;
    let offset = reader.offset();
    if reader.array("creation timestamp")? != 2 {
        return Err(DecodeError::Unexpected {
            what: "creation timestamp [time, seq]",
            offset,
        });
    }
    let creation = CreationTimestamp {
        dtn_time_ms: reader.uint("creation time")?,
        seq: reader.uint("sequence number")?,
    };
    let lifetime_ms = reader.uint("lifetime")?;
    let fragment = if is_fragment {
        Some(FragmentInfo {
            offset: reader.uint("fragment offset")?,
            total_adu_len: reader.uint("total ADU length")?,
        })
    } else {
        None
    };
    verify_crc(reader, bytes, start, crc_type, 0)?;
    Ok(PrimaryBlock {
        flags,
        crc_type,
        destination,
        source,
        report_to,
        creation,
        lifetime_ms,
        fragment,
    })
}

/// What the bundle keeps of a canonical block.
struct CanonicalBlock {
    number: u64,
    /// The data, for the payload block only.
    payload: Option<Vec<u8>>,
}

/// Reads a canonical block whose array header (`items` items, at `start`) was just pulled.
fn decode_canonical(
    reader: &mut Reader<'_>,
    bytes: &[u8],
    start: usize,
    items: usize,
) -> Result<CanonicalBlock, DecodeError> {
    let block_type = reader.uint("block type code")?;
    let number = reader.uint("block number")?;
    let flags = reader.uint("block processing control flags")?;
    let crc_code = reader.uint("CRC type")?;
    let crc_type = match crc_code {
        // RFC 9171 lets canonical blocks go without a CRC; ztmesh always writes one.
        0 => None,
        code => Some(CrcType::from_code(code).ok_or(DecodeError::CrcType(code))?),
    };
    if items != if crc_type.is_some() { 6 } else { 5 } {
        return Err(DecodeError::Unexpected {
            what: "canonical block of 5 items (6 with a CRC)",
            offset: start,
        });
    }
    let data_len = reader.bytes_header("block-type-specific data")?;
    let payload = if block_type == PAYLOAD_BLOCK_TYPE {
        if number != PAYLOAD_BLOCK_NUMBER {
            return Err(DecodeError::PayloadBlock);
        }
        Some(reader.bytes_content(data_len)?)
    } else {
        // ztmesh processes no extension block. One whose loss must kill the bundle is refused;
        // any other is left in the received bytes, which relays forward unchanged.
        if flags & BLOCK_DELETE_BUNDLE_IF_UNPROCESSABLE != 0 {
            return Err(DecodeError::UnknownCriticalBlock { block_type });
        }
        reader.skip_content(data_len)?;
        None
    };
    if let Some(crc_type) = crc_type {
        verify_crc(reader, bytes, start, crc_type, number)?;
    }
    Ok(CanonicalBlock { number, payload })
}

/// Reads the CRC field that ends the block begun at `start`, and checks it against the CRC of
/// the block's received bytes.
fn verify_crc(
    reader: &mut Reader<'_>,
    bytes: &[u8],
    start: usize,
    crc_type: CrcType,
    block_number: u64,
) -> Result<(), DecodeError> {
    let offset = reader.offset();
    let value = reader.bytes("CRC value", crc_type.width())?;
    if value.len() != crc_type.width() {
        return Err(DecodeError::Unexpected {
            what: "CRC value of the announced type's width",
            offset,
        });
    }
    let end = reader.offset();
    let block = bytes.get(start..end).ok_or(DecodeError::Truncated)?;
    let value_at = block.len().saturating_sub(value.len());
    if crc_type.compute(block, value_at) != value {
        return Err(DecodeError::CrcMismatch { block_number });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
