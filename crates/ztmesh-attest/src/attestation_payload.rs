//! The payload that carries evidence to its verifier: the CBOR map
//! `{"evidence": bstr, "collateral"?: bstr}`, sent base64-encoded as the `attestation.payload`
//! of an enrollment request and as the evidence of a link attestation. Collateral is the DCAP
//! collateral JSON (`tdx`, `sgx`), the VCEK certificate (`sev-snp`) or the attestation key PEM
//! (`tpm2`); `dev` has none.
//!
//! Decoding is strict, through [`CborFields`]: exactly one CBOR item, a map with text keys each
//! present once, byte-string values, no field other than these two. It must never judge the
//! evidence: which verifier runs, and whether the collateral is required or refused, is the
//! caller's decision once the payload is decoded.

use ciborium::Value;

use crate::cbor_fields::CborFields;
use crate::evidence::check_len;
use crate::{AttestError, MAX_COLLATERAL_LEN, MAX_EVIDENCE_LEN};

/// Bytes of CBOR framing a payload can need around its two byte strings: the map header, the
/// two keys and two byte-string headers of at most five bytes each come to 31.
const PAYLOAD_FRAMING_LEN: usize = 64;

/// Largest encoded payload decoded (checked before decoding). Anything longer cannot hold
/// evidence and collateral within [`MAX_EVIDENCE_LEN`] and [`MAX_COLLATERAL_LEN`], which the
/// verifiers enforce.
pub const MAX_ATTESTATION_PAYLOAD_LEN: usize =
    MAX_EVIDENCE_LEN + MAX_COLLATERAL_LEN + PAYLOAD_FRAMING_LEN;

/// What the evidence decoders name in their errors.
const WHAT: &str = "attestation payload";

/// Evidence as the TEE produced it, and the collateral it is checked with where its kind needs
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationPayload {
    /// The evidence bytes, as the TEE produced them.
    pub evidence: Vec<u8>,
    /// What the evidence is checked with, where its kind needs it.
    pub collateral: Option<Vec<u8>>,
}

impl AttestationPayload {
    /// The CBOR encoding (before base64): `evidence`, then `collateral` when there is one.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut entries = vec![(
            Value::Text("evidence".into()),
            Value::Bytes(self.evidence.clone()),
        )];
        if let Some(collateral) = &self.collateral {
            entries.push((
                Value::Text("collateral".into()),
                Value::Bytes(collateral.clone()),
            ));
        }
        let mut out = Vec::new();
        // Writing a `Value` into a Vec has no failure path (no IO error, no unsupported type).
        #[allow(clippy::expect_used)]
        ciborium::ser::into_writer(&Value::Map(entries), &mut out)
            .expect("CBOR into a Vec cannot fail");
        out
    }

    /// Decodes the CBOR map (after base64). Over [`MAX_ATTESTATION_PAYLOAD_LEN`] bytes it is
    /// [`AttestError::TooLarge`]; CBOR that ends early is [`AttestError::Truncated`]; anything
    /// else that is not exactly the map above is [`AttestError::Malformed`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, AttestError> {
        check_len(WHAT, bytes, MAX_ATTESTATION_PAYLOAD_LEN)?;
        let mut fields = CborFields::decode(WHAT, bytes)?;
        let payload = AttestationPayload {
            evidence: fields.take_bytes("evidence")?,
            collateral: fields.take_optional_bytes("collateral")?,
        };
        fields.finish()?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    fn map(entries: Vec<(Value, Value)>) -> Vec<u8> {
        encode(&Value::Map(entries))
    }

    fn text(key: &str) -> Value {
        Value::Text(key.into())
    }

    /// The cases the node's own decoder was pinned with, plus one per rule of the map.
    #[test]
    fn round_trips_and_refuses_anything_else() {
        for collateral in [None, Some(b"vcek".to_vec())] {
            let payload = AttestationPayload {
                evidence: vec![1, 2, 3],
                collateral,
            };
            assert_eq!(
                AttestationPayload::from_cbor(&payload.to_cbor()),
                Ok(payload)
            );
        }
        let mut trailing = AttestationPayload {
            evidence: vec![1],
            collateral: None,
        }
        .to_cbor();
        trailing.push(0);
        let evidence = || (text("evidence"), Value::Bytes(vec![1]));
        let cases: [(Vec<u8>, &str); 11] = [
            (vec![], "truncated: attestation payload: CBOR ends early"),
            (vec![0x80], "malformed: attestation payload: not a CBOR map"),
            (
                vec![0xa0],
                "malformed: attestation payload: missing \"evidence\"",
            ),
            (
                b"\xa1\x61x\x40".to_vec(),
                "malformed: attestation payload: missing \"evidence\"",
            ),
            (
                trailing,
                "malformed: attestation payload: 1 bytes after the CBOR item",
            ),
            (
                map(vec![evidence(), (text("x"), Value::Bytes(vec![]))]),
                "malformed: attestation payload: unknown field \"x\"",
            ),
            (
                map(vec![evidence(), (Value::from(1), Value::Bytes(vec![]))]),
                "malformed: attestation payload: a key is not text",
            ),
            (
                map(vec![evidence(), evidence()]),
                "malformed: attestation payload: duplicate key \"evidence\"",
            ),
            (
                map(vec![(text("evidence"), Value::from("text"))]),
                "malformed: attestation payload: \"evidence\" is not a byte string",
            ),
            (
                map(vec![evidence(), (text("collateral"), Value::Null)]),
                "malformed: attestation payload: \"collateral\" is not a byte string",
            ),
            (
                map(vec![(
                    text("evidence"),
                    Value::Tag(24, Box::new(Value::Bytes(vec![1]))),
                )]),
                "malformed: attestation payload: \"evidence\" is not a byte string",
            ),
        ];
        for (bytes, expected) in cases {
            let error = AttestationPayload::from_cbor(&bytes).unwrap_err();
            assert_eq!(error.to_string(), expected, "{bytes:?}");
        }
    }

    /// The wire form the node and the CA already exchange: a two-entry map, `evidence` first.
    #[test]
    fn encoding_is_the_one_on_the_wire() {
        let payload = AttestationPayload {
            evidence: vec![1, 2, 3],
            collateral: Some(b"vcek".to_vec()),
        };
        let mut expected = vec![0xa2, 0x68];
        expected.extend(b"evidence");
        expected.extend([0x43, 1, 2, 3, 0x6a]);
        expected.extend(b"collateral");
        expected.push(0x44);
        expected.extend(b"vcek");
        assert_eq!(payload.to_cbor(), expected);
        let without = AttestationPayload {
            evidence: vec![],
            collateral: None,
        };
        assert_eq!(without.to_cbor(), b"\xa1\x68evidence\x40");
    }

    #[test]
    fn the_largest_payload_decodes_and_one_byte_more_is_refused_before_decoding() {
        let largest = AttestationPayload {
            evidence: vec![7; MAX_EVIDENCE_LEN],
            collateral: Some(vec![8; MAX_COLLATERAL_LEN]),
        };
        let encoded = largest.to_cbor();
        assert!(encoded.len() <= MAX_ATTESTATION_PAYLOAD_LEN);
        assert_eq!(AttestationPayload::from_cbor(&encoded), Ok(largest));
        // Not CBOR at all: the length alone refuses it.
        let over = vec![0xff; MAX_ATTESTATION_PAYLOAD_LEN + 1];
        assert_eq!(
            AttestationPayload::from_cbor(&over),
            Err(AttestError::TooLarge {
                what: "attestation payload",
                len: MAX_ATTESTATION_PAYLOAD_LEN + 1,
                max: MAX_ATTESTATION_PAYLOAD_LEN,
            })
        );
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(
            evidence in proptest::collection::vec(any::<u8>(), 0..512),
            collateral in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..512)),
        ) {
            let payload = AttestationPayload { evidence, collateral };
            prop_assert_eq!(AttestationPayload::from_cbor(&payload.to_cbor()), Ok(payload));
        }

        #[test]
        fn arbitrary_bytes_get_an_answer_never_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = AttestationPayload::from_cbor(&bytes);
        }
    }
}
