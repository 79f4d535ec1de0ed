//! SEV-SNP verification on the real Milan report and VCEK published with the `sev` crate
//! (see `fixtures/sev/README.md`), against the ARK/ASK built into that crate.

use std::collections::BTreeMap;

use proptest::prelude::*;
use ztmesh_attest::sev::{verify_snp, REPORT_LEN};
use ztmesh_attest::{AttestError, Expectations, ReferenceValues, Verdict, MAX_EVIDENCE_LEN};

const REPORT_HEX: &str = include_str!("fixtures/sev/report_milan.hex");
const VCEK_MILAN: &[u8] = include_bytes!("fixtures/sev/vcek_milan.der");
const VCEK_TURIN: &[u8] = include_bytes!("fixtures/sev/vcek_turin.der");

/// 2025-07-01T00:00:00Z, inside the VCEK's validity (2023-04-03 to 2030-04-03).
const SAMPLE_NOW: u64 = 1_751_328_000;
/// 2031-01-01T00:00:00Z, after the VCEK expired.
const AFTER_VCEK_EXPIRY: u64 = 1_924_992_000;
/// Start of the signature (R then S, 72 bytes each).
const SIGNATURE_OFFSET: usize = 0x2A0;
/// Report data (64 bytes) and measurement (48 bytes) offsets.
const REPORT_DATA_OFFSET: usize = 0x50;

fn report() -> Vec<u8> {
    hex::decode(REPORT_HEX.trim()).expect("the sample report is hex")
}

fn open() -> Expectations {
    Expectations::default()
}

fn verify(report: &[u8], expectations: &Expectations) -> Result<Verdict, AttestError> {
    verify_snp(report, VCEK_MILAN, expectations, SAMPLE_NOW)
}

fn reference(name: &str, value: &str) -> ReferenceValues {
    let mut values = BTreeMap::new();
    values.insert(name.to_owned(), [value.to_owned()].into_iter().collect());
    ReferenceValues(values)
}

#[test]
fn milan_sample_verifies_with_its_measurement_and_fields() {
    let report = report();
    assert_eq!(report.len(), REPORT_LEN);
    let verdict = verify(&report, &open()).expect("the Milan sample verifies");
    assert_eq!(verdict.evidence_type.as_str(), "sev-snp");
    assert_eq!(verdict.measurements["measurement"].len(), 96);
    assert_eq!(verdict.measurements["host_data"].len(), 64);
    assert_eq!(verdict.measurements["product"], "milan");
    assert_eq!(verdict.measurements["policy"], "0000000000030000");
    assert!(verdict.measurements.contains_key("reported_tcb"));
    assert_eq!(
        verdict.report_data,
        hex::encode(&report[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64])
    );
}

#[test]
fn a_pem_vcek_is_accepted_too() {
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", VCEK_MILAN.to_vec()));
    assert!(verify_snp(&report(), pem.as_bytes(), &open(), SAMPLE_NOW).is_ok());
}

#[test]
fn carried_report_data_is_accepted_and_other_report_data_is_wrong_nonce() {
    let report = report();
    let carried = report[REPORT_DATA_OFFSET..REPORT_DATA_OFFSET + 64].to_vec();
    let expectations = Expectations {
        report_data: Some(carried.clone()),
        ..Expectations::default()
    };
    assert!(verify(&report, &expectations).is_ok());

    let mut other = carried;
    other[63] ^= 0x10;
    let expectations = Expectations {
        report_data: Some(other),
        ..Expectations::default()
    };
    assert_eq!(verify(&report, &expectations), Err(AttestError::WrongNonce));
}

#[test]
fn reference_measurements_are_checked() {
    let report = report();
    let verdict = verify(&report, &open()).unwrap();
    let matching = Expectations {
        reference: reference("measurement", &verdict.measurements["measurement"]),
        ..Expectations::default()
    };
    assert!(verify(&report, &matching).is_ok());

    let other = Expectations {
        reference: reference("measurement", &"00".repeat(48)),
        ..Expectations::default()
    };
    assert!(matches!(
        verify(&report, &other),
        Err(AttestError::WrongMeasurement { name, .. }) if name == "measurement"
    ));
    let other = Expectations {
        reference: reference("host_data", &"11".repeat(32)),
        ..Expectations::default()
    };
    assert!(matches!(
        verify(&report, &other),
        Err(AttestError::WrongMeasurement { name, .. }) if name == "host_data"
    ));
}

#[test]
fn a_flipped_signature_byte_is_a_bad_signature() {
    let mut report = report();
    report[SIGNATURE_OFFSET + 3] ^= 0x01;
    assert!(matches!(
        verify(&report, &open()),
        Err(AttestError::BadSignature(_))
    ));
}

#[test]
fn a_flipped_measurement_byte_is_a_bad_signature() {
    let mut report = report();
    report[0x90] ^= 0x01;
    assert!(matches!(
        verify(&report, &open()),
        Err(AttestError::BadSignature(_))
    ));
}

#[test]
fn a_vcek_of_another_chip_is_refused() {
    assert!(matches!(
        verify_snp(&report(), VCEK_TURIN, &open(), SAMPLE_NOW),
        Err(AttestError::BadChain(_))
    ));
}

#[test]
fn a_tampered_vcek_is_a_bad_chain() {
    // Byte 40 is inside the signed TBS certificate: AMD's signature no longer verifies.
    let mut vcek = VCEK_MILAN.to_vec();
    vcek[40] ^= 0xff;
    assert!(matches!(
        verify_snp(&report(), &vcek, &open(), SAMPLE_NOW),
        Err(AttestError::BadChain(_))
    ));
}

#[test]
fn an_expired_vcek_is_a_bad_chain() {
    assert!(matches!(
        verify_snp(&report(), VCEK_MILAN, &open(), AFTER_VCEK_EXPIRY),
        Err(AttestError::BadChain(_))
    ));
}

#[test]
fn missing_or_garbage_vcek_has_typed_errors() {
    assert_eq!(
        verify_snp(&report(), b"", &open(), SAMPLE_NOW),
        Err(AttestError::MissingCollateral)
    );
    assert!(matches!(
        verify_snp(&report(), b"not a certificate", &open(), SAMPLE_NOW),
        Err(AttestError::Malformed(_))
    ));
}

#[test]
fn truncated_and_oversized_reports_have_typed_errors() {
    let report = report();
    for cut in [0, 1, 0x50, SIGNATURE_OFFSET, REPORT_LEN - 1] {
        assert!(
            matches!(
                verify(&report[..cut], &open()),
                Err(AttestError::Truncated(_))
            ),
            "cut at {cut}"
        );
    }
    let mut longer = report.clone();
    longer.push(0);
    assert!(matches!(
        verify(&longer, &open()),
        Err(AttestError::Malformed(_))
    ));
    let mut oversized = report;
    oversized.resize(MAX_EVIDENCE_LEN + 1, 0);
    assert!(matches!(
        verify(&oversized, &open()),
        Err(AttestError::TooLarge { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_reports_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
        let _ = verify(&bytes, &open());
    }

    #[test]
    fn garbage_of_report_length_never_panics(bytes in proptest::collection::vec(any::<u8>(), REPORT_LEN)) {
        let _ = verify(&bytes, &open());
    }

    #[test]
    fn garbage_vceks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = verify_snp(&report(), &bytes, &open(), SAMPLE_NOW);
    }

    #[test]
    fn a_flipped_signed_or_signature_byte_is_always_refused(
        position in 0..SIGNATURE_OFFSET + 144,
        bit in 0..8u8,
    ) {
        let mut report = report();
        report[position] ^= 1 << bit;
        prop_assert!(verify(&report, &open()).is_err());
    }
}
