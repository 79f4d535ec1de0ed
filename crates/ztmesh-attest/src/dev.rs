//! `dev` evidence: a simulated TEE for demos and tests. A "dev TEE" key (Ed25519) signs a
//! measurement, the report data and a timestamp, the way a hardware TEE would sign its report.
//! It proves nothing about hardware: [`verify`] refuses it unless the policy sets
//! [`Expectations::allow_dev`], and it must never count as hardware attestation.
//!
//! # Format
//!
//! The evidence is one CBOR array `[payload, signature]`:
//!
//! - `payload` (byte string): a CBOR map with exactly the text keys
//!   `"version"` (unsigned, [`VERSION`]), `"measurement"` (32-byte string),
//!   `"report_data"` (64-byte string) and `"timestamp"` (unsigned, Unix seconds);
//! - `signature` (64-byte string): Ed25519 over [`SIGNING_CONTEXT`] ‖ `payload`.
//!
//! The signature covers the payload bytes as carried; the verifier checks it before reading the
//! payload and never re-serializes.
//!
//! Reference value name: `measurement` (lowercase hex of the 32 bytes).

use std::collections::BTreeMap;

use ciborium::Value;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::cbor_fields::{decode_cbor_item, CborFields};
use crate::evidence::{check_len, check_report_data};
use crate::{AttestError, EvidenceType, Expectations, Verdict};

/// The payload version this module writes and accepts.
pub const VERSION: u64 = 1;

/// Domain separation: a dev TEE signature can never be mistaken for another ztmesh signature.
pub const SIGNING_CONTEXT: &[u8] = b"ztmesh-attest-dev-v1\0";

/// Largest `dev` evidence: the real thing is about 150 bytes.
pub const MAX_DEV_EVIDENCE_LEN: usize = 1024;

/// How far in the future a timestamp may be (clock skew between the dev TEE and the verifier).
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Builds signed `dev` evidence (demos and tests; the simulated TEE's side).
pub fn generate(
    signing_key: &SigningKey,
    measurement: &[u8; 32],
    report_data: &[u8; 64],
    timestamp: u64,
) -> Vec<u8> {
    let payload = Value::Map(vec![
        (
            Value::Text("version".into()),
            Value::Integer(VERSION.into()),
        ),
        (
            Value::Text("measurement".into()),
            Value::Bytes(measurement.to_vec()),
        ),
        (
            Value::Text("report_data".into()),
            Value::Bytes(report_data.to_vec()),
        ),
        (
            Value::Text("timestamp".into()),
            Value::Integer(timestamp.into()),
        ),
    ]);
    let payload = to_cbor(&payload);
    let signature = signing_key.sign(&signed_message(&payload));
    to_cbor(&Value::Array(vec![
        Value::Bytes(payload),
        Value::Bytes(signature.to_bytes().to_vec()),
    ]))
}

/// Like [`verify`] against a set of dev TEE keys (one per simulated device, as each hardware
/// TEE has its own key): the evidence must be signed by one of them.
pub fn verify_any(
    evidence: &[u8],
    dev_keys: &[VerifyingKey],
    expectations: &Expectations,
    now_unix_secs: u64,
) -> Result<Verdict, AttestError> {
    if !expectations.allow_dev {
        return Err(AttestError::DevNotAllowed);
    }
    check_len("dev evidence", evidence, MAX_DEV_EVIDENCE_LEN)?;
    let (payload, signature) = split_envelope(evidence)?;
    let message = signed_message(&payload);
    let key = dev_keys
        .iter()
        .find(|key| key.verify_strict(&message, &signature).is_ok())
        .ok_or_else(|| {
            AttestError::BadSignature("dev evidence: not signed by a trusted dev key".into())
        })?;
    verify(evidence, key, expectations, now_unix_secs)
}

/// Verifies `dev` evidence signed by `dev_key` (the trusted dev TEE public key) at `now_unix_secs`.
///
/// Order: policy (`allow_dev`), size, signature (strict Ed25519), payload structure, report
/// data, freshness (`max_age` against the evidence timestamp), reference values (`measurement`).
pub fn verify(
    evidence: &[u8],
    dev_key: &VerifyingKey,
    expectations: &Expectations,
    now_unix_secs: u64,
) -> Result<Verdict, AttestError> {
    if !expectations.allow_dev {
        return Err(AttestError::DevNotAllowed);
    }
    check_len("dev evidence", evidence, MAX_DEV_EVIDENCE_LEN)?;
    let (payload, signature) = split_envelope(evidence)?;
    dev_key
        .verify_strict(&signed_message(&payload), &signature)
        .map_err(|_| AttestError::BadSignature("dev evidence: not signed by the dev key".into()))?;
    let claims = DevClaims::parse(&payload)?;

    check_report_data(&claims.report_data, expectations.report_data.as_deref())?;
    if claims.timestamp > now_unix_secs.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(AttestError::Malformed(format!(
            "dev evidence: timestamp {} is in the future (now {now_unix_secs})",
            claims.timestamp
        )));
    }
    if let Some(max_age) = expectations.max_age {
        let age_secs = now_unix_secs.saturating_sub(claims.timestamp);
        if age_secs > max_age.as_secs() {
            return Err(AttestError::Stale {
                age_secs,
                max_secs: max_age.as_secs(),
            });
        }
    }
    let measurements =
        BTreeMap::from([("measurement".to_owned(), hex::encode(claims.measurement))]);
    expectations.reference.check(&measurements)?;
    Ok(Verdict {
        evidence_type: EvidenceType::Dev,
        measurements,
        report_data: hex::encode(claims.report_data),
        tcb_status: None,
        advisories: Vec::new(),
    })
}

/// The signed payload, parsed once.
struct DevClaims {
    measurement: [u8; 32],
    report_data: [u8; 64],
    timestamp: u64,
}

impl DevClaims {
    fn parse(payload: &[u8]) -> Result<Self, AttestError> {
        let mut fields = CborFields::decode("dev payload", payload)?;
        let version = fields.take_u64("version")?;
        if version != VERSION {
            return Err(AttestError::Malformed(format!(
                "dev payload: version {version}, expected {VERSION}"
            )));
        }
        let measurement = fixed::<32>("measurement", fields.take_bytes("measurement")?)?;
        let report_data = fixed::<64>("report_data", fields.take_bytes("report_data")?)?;
        let timestamp = fields.take_u64("timestamp")?;
        fields.finish()?;
        Ok(DevClaims {
            measurement,
            report_data,
            timestamp,
        })
    }
}

fn split_envelope(evidence: &[u8]) -> Result<(Vec<u8>, Signature), AttestError> {
    let Value::Array(items) = decode_cbor_item("dev evidence", evidence)? else {
        return Err(AttestError::Malformed(
            "dev evidence: not a CBOR array".into(),
        ));
    };
    let [Value::Bytes(payload), Value::Bytes(signature)] = <[Value; 2]>::try_from(items)
        .map_err(|_| AttestError::Malformed("dev evidence: not [payload, signature]".into()))?
    else {
        return Err(AttestError::Malformed(
            "dev evidence: payload and signature must be byte strings".into(),
        ));
    };
    let signature = fixed::<64>("signature", signature)?;
    Ok((payload, Signature::from_bytes(&signature)))
}

fn fixed<const N: usize>(name: &str, bytes: Vec<u8>) -> Result<[u8; N], AttestError> {
    let len = bytes.len();
    <[u8; N]>::try_from(bytes).map_err(|_| {
        AttestError::Malformed(format!("dev evidence: {name} is {len} bytes, expected {N}"))
    })
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, payload].concat()
}

fn to_cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a `Value` into a Vec has no failure path (no IO error, no unsupported type).
    #[allow(clippy::expect_used)]
    ciborium::ser::into_writer(value, &mut out).expect("CBOR into a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::{report_data_binding, ReferenceValues};

    const NOW: u64 = 1_750_000_000;
    const MEASUREMENT: [u8; 32] = [0x11; 32];

    fn dev_key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn binding() -> [u8; 64] {
        report_data_binding(b"nonce-1", b"tls spki")
    }

    fn expectations() -> Expectations {
        let mut reference = ReferenceValues::default();
        reference.0.insert(
            "measurement".into(),
            [hex::encode(MEASUREMENT)].into_iter().collect(),
        );
        Expectations {
            report_data: Some(binding().to_vec()),
            reference,
            max_age: Some(Duration::from_secs(60)),
            allow_dev: true,
        }
    }

    fn good_evidence() -> Vec<u8> {
        generate(&dev_key(), &MEASUREMENT, &binding(), NOW - 10)
    }

    fn check(evidence: &[u8]) -> Result<Verdict, AttestError> {
        verify(evidence, &dev_key().verifying_key(), &expectations(), NOW)
    }

    #[test]
    fn each_device_key_verifies_its_own_evidence_and_no_untrusted_one() {
        let others: Vec<VerifyingKey> = (1u8..=3)
            .map(|i| SigningKey::from_bytes(&[i; 32]).verifying_key())
            .collect();
        let mut trusted = others.clone();
        trusted.push(dev_key().verifying_key());
        assert!(verify_any(&good_evidence(), &trusted, &expectations(), NOW).is_ok());
        assert!(matches!(
            verify_any(&good_evidence(), &others, &expectations(), NOW),
            Err(AttestError::BadSignature(_))
        ));
        assert_eq!(
            verify_any(&good_evidence(), &[], &expectations(), NOW).unwrap_err(),
            AttestError::BadSignature("dev evidence: not signed by a trusted dev key".into())
        );
    }

    #[test]
    fn accepts_good_evidence() {
        let verdict = check(&good_evidence()).unwrap();
        assert_eq!(verdict.evidence_type, EvidenceType::Dev);
        assert_eq!(
            verdict.measurements["measurement"],
            hex::encode(MEASUREMENT)
        );
        assert_eq!(verdict.report_data, hex::encode(binding()));
    }

    #[test]
    fn refuses_unless_the_policy_allows_dev() {
        let mut expectations = expectations();
        expectations.allow_dev = false;
        let error = verify(
            &good_evidence(),
            &dev_key().verifying_key(),
            &expectations,
            NOW,
        )
        .unwrap_err();
        assert_eq!(error, AttestError::DevNotAllowed);
        assert_eq!(error.reason(), "dev_not_allowed");
    }

    #[test]
    fn refuses_a_wrong_nonce() {
        let other = report_data_binding(b"nonce-2", b"tls spki");
        let evidence = generate(&dev_key(), &MEASUREMENT, &other, NOW);
        assert_eq!(check(&evidence), Err(AttestError::WrongNonce));
    }

    #[test]
    fn refuses_stale_evidence() {
        let evidence = generate(&dev_key(), &MEASUREMENT, &binding(), NOW - 61);
        assert_eq!(
            check(&evidence),
            Err(AttestError::Stale {
                age_secs: 61,
                max_secs: 60
            })
        );
    }

    #[test]
    fn refuses_a_timestamp_far_in_the_future() {
        let evidence = generate(
            &dev_key(),
            &MEASUREMENT,
            &binding(),
            NOW + MAX_CLOCK_SKEW_SECS + 1,
        );
        assert_eq!(check(&evidence).unwrap_err().reason(), "malformed");
        let within_skew = generate(&dev_key(), &MEASUREMENT, &binding(), NOW + 5);
        assert!(check(&within_skew).is_ok());
    }

    #[test]
    fn refuses_a_wrong_measurement() {
        let evidence = generate(&dev_key(), &[0x22; 32], &binding(), NOW);
        assert!(matches!(
            check(&evidence),
            Err(AttestError::WrongMeasurement { name, .. }) if name == "measurement"
        ));
    }

    #[test]
    fn refuses_a_broken_signature() {
        let mut evidence = good_evidence();
        let last = evidence.len() - 1;
        evidence[last] ^= 0x01;
        assert_eq!(check(&evidence).unwrap_err().reason(), "bad_signature");
    }

    #[test]
    fn refuses_another_dev_key() {
        let evidence = generate(
            &SigningKey::from_bytes(&[8; 32]),
            &MEASUREMENT,
            &binding(),
            NOW,
        );
        assert_eq!(check(&evidence).unwrap_err().reason(), "bad_signature");
    }

    #[test]
    fn refuses_truncated_evidence() {
        let evidence = good_evidence();
        for len in [0, 1, evidence.len() / 2, evidence.len() - 1] {
            assert_eq!(
                check(&evidence[..len]).unwrap_err().reason(),
                "truncated",
                "length {len}"
            );
        }
    }

    #[test]
    fn refuses_oversized_evidence_before_parsing() {
        let mut evidence = good_evidence();
        evidence.resize(MAX_DEV_EVIDENCE_LEN + 1, 0);
        assert_eq!(
            check(&evidence),
            Err(AttestError::TooLarge {
                what: "dev evidence",
                len: MAX_DEV_EVIDENCE_LEN + 1,
                max: MAX_DEV_EVIDENCE_LEN
            })
        );
    }

    #[test]
    fn refuses_trailing_bytes() {
        let mut evidence = good_evidence();
        evidence.push(0);
        assert_eq!(check(&evidence).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn refuses_a_signed_payload_with_an_unknown_field() {
        let payload = to_cbor(&Value::Map(vec![
            (Value::Text("version".into()), Value::Integer(1.into())),
            (
                Value::Text("measurement".into()),
                Value::Bytes(MEASUREMENT.to_vec()),
            ),
            (
                Value::Text("report_data".into()),
                Value::Bytes(binding().to_vec()),
            ),
            (Value::Text("timestamp".into()), Value::Integer(NOW.into())),
            (Value::Text("extra".into()), Value::Bool(true)),
        ]));
        let signature = dev_key().sign(&signed_message(&payload));
        let evidence = to_cbor(&Value::Array(vec![
            Value::Bytes(payload),
            Value::Bytes(signature.to_bytes().to_vec()),
        ]));
        assert_eq!(check(&evidence).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn without_expected_report_data_any_binding_is_reported() {
        let mut expectations = expectations();
        expectations.report_data = None;
        let other = report_data_binding(b"x", b"y");
        let evidence = generate(&dev_key(), &MEASUREMENT, &other, NOW);
        let verdict = verify(&evidence, &dev_key().verifying_key(), &expectations, NOW).unwrap();
        assert_eq!(verdict.report_data, hex::encode(other));
    }

    proptest! {
        #[test]
        fn garbage_is_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            prop_assert!(check(&bytes).is_err());
        }

        #[test]
        fn any_single_byte_change_is_refused(index in 0usize..1000, flip in 1u8..=255) {
            let mut evidence = good_evidence();
            let index = index % evidence.len();
            evidence[index] ^= flip;
            prop_assert!(check(&evidence).is_err());
        }
    }
}
