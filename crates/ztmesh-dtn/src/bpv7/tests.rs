use proptest::prelude::*;
use ztmesh_core::NodeId;

use super::*;
use crate::cbor::push_bytes;

fn node(n: u8) -> NodeId {
    NodeId::from_bytes([n; 20])
}

fn eid(n: u8, service: &str) -> Eid {
    Eid::new(node(n), service).unwrap()
}

fn sample(payload: &[u8]) -> Bundle {
    let mut primary = PrimaryBlock::new(
        eid(2, "inbox"),
        eid(1, "app"),
        CreationTimestamp {
            dtn_time_ms: 700_000_000_000,
            seq: 3,
        },
        Duration::from_secs(3600),
    );
    primary.report_to = Some(eid(1, "reports"));
    Bundle {
        primary,
        payload: payload.to_vec(),
    }
}

fn decode(bytes: &[u8]) -> Result<Bundle, DecodeError> {
    decode_bundle(bytes, &Limits::default())
}

/// Appends a canonical block with arbitrary fields, for bundles this codec would not write.
fn push_block(
    out: &mut Vec<u8>,
    block_type: u64,
    number: u64,
    flags: u64,
    crc: Option<CrcType>,
    data: &[u8],
) {
    let start = out.len();
    push(out, Header::Array(Some(if crc.is_some() { 6 } else { 5 })));
    push(out, Header::Positive(block_type));
    push(out, Header::Positive(number));
    push(out, Header::Positive(flags));
    push(out, Header::Positive(crc.map_or(0, CrcType::code)));
    push_bytes(out, data);
    if let Some(crc) = crc {
        append_crc(out, start, crc);
    }
}

/// A canonical block spelled out: type, number, flags, CRC, data.
type RawBlock<'a> = (u64, u64, u64, Option<CrcType>, &'a [u8]);

/// A bundle made of the sample primary block and the given canonical blocks.
fn with_blocks(blocks: &[RawBlock<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    push(&mut out, Header::Array(None));
    encode_primary(&mut out, &sample(b"").primary);
    for &(block_type, number, flags, crc, data) in blocks {
        push_block(&mut out, block_type, number, flags, crc, data);
    }
    push(&mut out, Header::Break);
    out
}

#[test]
fn round_trip_whole_bundle() {
    let bundle = sample(b"hello, delay-tolerant world");
    let bytes = bundle.encode();
    assert_eq!(decode(&bytes).unwrap(), bundle);
    assert_eq!(bundle.key().offset, 0);
    assert_eq!(
        bundle.id().to_string(),
        format!("{}.700000000000.3", node(1))
    );
}

#[test]
fn round_trip_fragment_crc16_and_empty_payload() {
    let mut bundle = sample(b"middle");
    bundle.primary.crc_type = CrcType::Crc16X25;
    bundle.primary.fragment = Some(FragmentInfo {
        offset: 10,
        total_adu_len: 100,
    });
    bundle.primary.flags = BundleFlags::IS_FRAGMENT.with(BundleFlags::APP_ACK_REQUESTED);
    let decoded = decode(&bundle.encode()).unwrap();
    assert_eq!(decoded, bundle);
    assert_eq!(decoded.key().offset, 10);
    assert_eq!(decoded.total_adu_len(), 100);

    let empty = sample(b"");
    assert_eq!(decode(&empty.encode()).unwrap(), empty);
}

#[test]
fn fragment_bit_follows_the_fragment_field() {
    // A fragment bit set by hand without fragment fields is not written.
    let mut bundle = sample(b"x");
    bundle.primary.flags = BundleFlags::IS_FRAGMENT;
    let decoded = decode(&bundle.encode()).unwrap();
    assert!(!decoded.primary.flags.contains(BundleFlags::IS_FRAGMENT));
    assert_eq!(decoded.primary.fragment, None);
}

/// The layout of RFC 9171 §4.3 spelled out byte by byte for a known bundle.
#[test]
fn known_answer_layout() {
    let mut primary = PrimaryBlock::new(
        eid(2, "b"),
        eid(1, "a"),
        CreationTimestamp {
            dtn_time_ms: 1,
            seq: 2,
        },
        Duration::from_millis(3),
    );
    primary.report_to = None;
    let bytes = Bundle {
        primary,
        payload: b"hi".to_vec(),
    }
    .encode();
    let mut expected = vec![0x9f, 0x89, 0x07, 0x00, 0x02];
    for (n, service) in [(2u8, "b"), (1, "a")] {
        expected.extend([0x82, 0x01, 0x78, 36]);
        expected.extend(format!("//{}/{service}", node(n)).as_bytes());
    }
    // report-to dtn:none, creation [1, 2], lifetime 3.
    expected.extend([0x82, 0x01, 0x00, 0x82, 0x01, 0x02, 0x03, 0x44]);
    let primary_end = expected.len() + 4;
    assert_eq!(&bytes[..expected.len()], &expected[..]);
    // The primary CRC-32C covers the block (from 0x89) with its value zeroed.
    let mut zeroed = bytes[1..primary_end].to_vec();
    let n = zeroed.len();
    zeroed[n - 4..].fill(0);
    let crc32c = ::crc::Crc::<u32>::new(&::crc::CRC_32_ISCSI).checksum(&zeroed);
    assert_eq!(&bytes[primary_end - 4..primary_end], crc32c.to_be_bytes());
    // Payload block [1, 1, 0, 2, h'6869', crc], then break.
    assert_eq!(
        &bytes[primary_end..primary_end + 9],
        &[0x86, 0x01, 0x01, 0x00, 0x02, 0x42, b'h', b'i', 0x44]
    );
    assert_eq!(bytes.len(), primary_end + 9 + 4 + 1);
    assert_eq!(bytes.last(), Some(&0xff));
}

#[test]
fn crc_mismatch_anywhere_is_refused() {
    let bytes = sample(b"payload bytes").encode();
    // Flip the last payload byte (payload block) and the lifetime's last byte (primary).
    // ... payload | 0x44 | crc (4) | break
    let payload_at = bytes.len() - 7;
    let mut bad = bytes.clone();
    bad[payload_at] ^= 0x01;
    assert_eq!(
        decode(&bad),
        Err(DecodeError::CrcMismatch { block_number: 1 })
    );
    let lifetime_at = bytes
        .windows(5)
        .position(|w| w == [0x1a, 0x00, 0x36, 0xee, 0x80])
        .unwrap();
    let mut bad = bytes.clone();
    bad[lifetime_at + 4] ^= 0x01;
    assert_eq!(
        decode(&bad),
        Err(DecodeError::CrcMismatch { block_number: 0 })
    );
    // A corrupted CRC value itself.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 2] ^= 0x80;
    assert_eq!(
        decode(&bad),
        Err(DecodeError::CrcMismatch { block_number: 1 })
    );
}

#[test]
fn every_truncation_is_refused() {
    let bytes = sample(b"abc").encode();
    for len in 0..bytes.len() {
        assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes");
    }
    let mut trailing = bytes.clone();
    trailing.push(0x00);
    assert_eq!(decode(&trailing), Err(DecodeError::TrailingBytes(1)));
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let limits = Limits {
        max_bundle_bytes: 100,
        ..Limits::default()
    };
    let bytes = sample(&[7u8; 200]).encode();
    assert!(matches!(
        Bundle::decode(&bytes, &limits),
        Err(DtnError::Malformed(DecodeError::TooLarge { max: 100, .. }))
    ));
    // A byte string announcing more than the input holds is refused without allocating it.
    let mut lying = with_blocks(&[]);
    lying.pop();
    push(&mut lying, Header::Array(Some(6)));
    for v in [1, 1, 0, 2] {
        push(&mut lying, Header::Positive(v));
    }
    push(&mut lying, Header::Bytes(Some(usize::MAX / 2)));
    assert_eq!(decode(&lying), Err(DecodeError::Truncated));
}

#[test]
fn unknown_extension_blocks_are_skipped_unless_critical() {
    let hop_count: &[u8] = &[0x82, 0x18, 0x20, 0x00];
    let payload: &[u8] = b"data";
    // Hop count block (type 10) without CRC, bundle age (type 7) with CRC-16, then payload.
    let bytes = with_blocks(&[
        (10, 2, 0, None, hop_count),
        (
            7,
            3,
            BLOCK_DISCARD_IF_UNPROCESSABLE,
            Some(CrcType::Crc16X25),
            &[0x00],
        ),
        (1, 1, 0, Some(CrcType::Crc32c), payload),
    ]);
    let bundle = decode(&bytes).unwrap();
    assert_eq!(bundle.payload, payload);

    let critical = with_blocks(&[
        (
            192,
            2,
            BLOCK_DELETE_BUNDLE_IF_UNPROCESSABLE,
            Some(CrcType::Crc32c),
            &[],
        ),
        (1, 1, 0, Some(CrcType::Crc32c), payload),
    ]);
    assert_eq!(
        decode(&critical),
        Err(DecodeError::UnknownCriticalBlock { block_type: 192 })
    );
}

#[test]
fn block_structure_rules_are_enforced() {
    let p: &[u8] = b"p";
    let crc = Some(CrcType::Crc32c);
    // No payload block.
    assert_eq!(
        decode(&with_blocks(&[(10, 2, 0, crc, &[0x00])])),
        Err(DecodeError::PayloadBlock)
    );
    // Payload not last.
    assert_eq!(
        decode(&with_blocks(&[(1, 1, 0, crc, p), (10, 2, 0, crc, &[0x00])])),
        Err(DecodeError::PayloadBlock)
    );
    // Payload numbered other than 1.
    assert_eq!(
        decode(&with_blocks(&[(1, 2, 0, crc, p)])),
        Err(DecodeError::PayloadBlock)
    );
    // Repeated block number, block number 0.
    assert_eq!(
        decode(&with_blocks(&[
            (10, 2, 0, crc, &[0x00]),
            (11, 2, 0, crc, &[0x00]),
            (1, 1, 0, crc, p)
        ])),
        Err(DecodeError::BlockNumber(2))
    );
    assert_eq!(
        decode(&with_blocks(&[(10, 0, 0, crc, &[0x00]), (1, 1, 0, crc, p)])),
        Err(DecodeError::BlockNumber(0))
    );
    // Unknown CRC type.
    let mut unknown_crc = with_blocks(&[(1, 1, 0, None, p)]);
    // ... crc type | 0x41 'p' | break
    let at = unknown_crc.len() - 4;
    assert_eq!(unknown_crc[at], 0x00);
    unknown_crc[at] = 0x03;
    assert_eq!(decode(&unknown_crc), Err(DecodeError::CrcType(3)));
    // Too many blocks.
    let many: Vec<RawBlock<'_>> = (2..20)
        .map(|n| (10, n, 0, crc, &[0x00][..]))
        .chain(std::iter::once((1, 1, 0, crc, p)))
        .collect();
    assert_eq!(
        decode(&with_blocks(&many)),
        Err(DecodeError::TooManyBlocks { max: 16 })
    );
}

/// Re-encodes the sample primary block with one field replaced, fixing up the CRC, so each
/// refusal below is about the field and not the CRC.
fn primary_with(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut block = Vec::new();
    edit(&mut block);
    let mut out = Vec::new();
    push(&mut out, Header::Array(None));
    out.extend(block);
    push_block(&mut out, 1, 1, 0, Some(CrcType::Crc32c), b"p");
    push(&mut out, Header::Break);
    out
}

#[test]
fn primary_block_rules_are_enforced() {
    fn fields(out: &mut Vec<u8>, version: u64, crc: u64, source: Option<&Eid>) {
        let start = out.len();
        push(out, Header::Array(Some(if crc == 0 { 8 } else { 9 })));
        push(out, Header::Positive(version));
        push(out, Header::Positive(0));
        push(out, Header::Positive(crc));
        encode_eid(out, Some(&eid(2, "inbox")));
        encode_eid(out, source);
        encode_eid(out, None);
        push(out, Header::Array(Some(2)));
        push(out, Header::Positive(700_000_000_000));
        push(out, Header::Positive(0));
        push(out, Header::Positive(60_000));
        if crc != 0 {
            append_crc(out, start, CrcType::from_code(crc).unwrap());
        }
    }
    let a = eid(1, "a");
    assert!(decode(&primary_with(|o| fields(o, 7, 2, Some(&a)))).is_ok());
    assert_eq!(
        decode(&primary_with(|o| fields(o, 6, 2, Some(&a)))),
        Err(DecodeError::Version(6))
    );
    assert_eq!(
        decode(&primary_with(|o| fields(o, 7, 0, Some(&a)))),
        Err(DecodeError::MissingPrimaryCrc)
    );
    assert_eq!(
        decode(&primary_with(|o| fields(o, 7, 2, None))),
        Err(DecodeError::Eid(EidError::NullEndpoint))
    );
}

#[test]
fn garbage_is_refused() {
    for garbage in [
        &b""[..],
        &[0xff],
        &[0x9f, 0xff],
        &[0x80],
        &[0x9f, 0x9f, 0xff, 0xff],
        &[0x1c],
        &[0x9f, 0x89, 0x07],
    ] {
        assert!(decode(garbage).is_err(), "{garbage:02x?}");
    }
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn mutated_bundles_never_panic_and_never_pass_corrupted(
        payload in proptest::collection::vec(any::<u8>(), 0..256),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut bytes = sample(&payload).encode();
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        // A single corrupted byte is caught by the CRC or the structure; at worst the result
        // is a different valid bundle whose CRCs happen to match, which CRC-32C rules out for
        // single-byte errors.
        prop_assert!(decode(&bytes).is_err());
    }

    #[test]
    fn arbitrary_bundles_round_trip(
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        time in 1u64..u64::MAX,
        seq in any::<u64>(),
        lifetime in any::<u64>(),
        fragment in proptest::option::of((any::<u32>(), any::<u32>())),
        crc16 in any::<bool>(),
        service in "[a-z0-9._-]{1,64}",
    ) {
        let mut bundle = sample(&payload);
        bundle.primary.creation = CreationTimestamp { dtn_time_ms: time, seq };
        bundle.primary.lifetime_ms = lifetime;
        bundle.primary.destination = Eid::new(node(9), &service).unwrap();
        if crc16 {
            bundle.primary.crc_type = CrcType::Crc16X25;
        }
        if let Some((offset, extra)) = fragment {
            bundle.primary.flags = BundleFlags::IS_FRAGMENT;
            bundle.primary.fragment = Some(FragmentInfo {
                offset: u64::from(offset),
                total_adu_len: u64::from(offset) + payload.len() as u64 + u64::from(extra),
            });
        }
        prop_assert_eq!(decode(&bundle.encode()).unwrap(), bundle);
    }
}
