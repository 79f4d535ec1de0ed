//! TDX and SGX verification on the real sample quotes and collateral published with the
//! `dcap-qvl` crate (see `fixtures/dcap/README.md`). The collateral is valid for one month, so
//! every test pins `now` inside (or deliberately outside) that window.

use std::collections::BTreeMap;

use proptest::prelude::*;
use ztmesh_attest::dcap::{verify_sgx, verify_tdx};
use ztmesh_attest::{AttestError, Expectations, ReferenceValues, MAX_EVIDENCE_LEN};

const TDX_QUOTE: &[u8] = include_bytes!("fixtures/dcap/tdx_quote");
const TDX_COLLATERAL: &[u8] = include_bytes!("fixtures/dcap/tdx_quote_collateral.json");
const TDX_OUTDATED_QUOTE: &[u8] = include_bytes!("fixtures/dcap/tdx_quote_outdated");
const TDX_OUTDATED_COLLATERAL: &[u8] =
    include_bytes!("fixtures/dcap/tdx_quote_outdated_collateral.json");
const SGX_QUOTE: &[u8] = include_bytes!("fixtures/dcap/sgx_quote");
const SGX_COLLATERAL: &[u8] = include_bytes!("fixtures/dcap/sgx_quote_collateral.json");

/// 2025-07-01T00:00:00Z: inside the TDX and SGX sample collateral (TCB info, QE identity and
/// PCK CRL issued 2025-06-19, next update 2025-07-19).
const SAMPLE_NOW: u64 = 1_751_328_000;
/// 2026-03-01T00:00:00Z: inside the "outdated" TDX sample's collateral (2026-02-18..2026-03-20).
const OUTDATED_SAMPLE_NOW: u64 = 1_772_323_200;
/// 2025-08-01T00:00:00Z: after the sample TCB info, QE identity and PCK CRL expired.
const AFTER_COLLATERAL_EXPIRY: u64 = 1_754_006_400;
/// 2025-06-01T00:00:00Z: before the sample collateral was issued.
const BEFORE_COLLATERAL_ISSUE: u64 = 1_748_736_000;

/// Offset of the quote signature (start of the signature data after its length field):
/// SGX v3 = 48-byte header + 384-byte report + 4; TDX v4 = 48 + 584 + 4.
const SGX_SIGNATURE_OFFSET: usize = 436;
/// The TDX sample declares 4936 bytes and carries 70 bytes of zero padding after them.
const TDX_QUOTE_END: usize = 4936;
const TDX_SIGNATURE_OFFSET: usize = 636;

fn open() -> Expectations {
    Expectations::default()
}

fn tdx(
    quote: &[u8],
    expectations: &Expectations,
    now: u64,
) -> Result<ztmesh_attest::Verdict, AttestError> {
    verify_tdx(quote, Some(TDX_COLLATERAL), expectations, now)
}

fn sgx(
    quote: &[u8],
    expectations: &Expectations,
    now: u64,
) -> Result<ztmesh_attest::Verdict, AttestError> {
    verify_sgx(quote, Some(SGX_COLLATERAL), expectations, now)
}

fn reference(name: &str, value: &str) -> ReferenceValues {
    let mut values = BTreeMap::new();
    values.insert(name.to_owned(), [value.to_owned()].into_iter().collect());
    ReferenceValues(values)
}

#[test]
fn tdx_sample_verifies_with_measurements_and_tcb_status() {
    let verdict = tdx(TDX_QUOTE, &open(), SAMPLE_NOW).expect("the TDX sample verifies");
    assert_eq!(verdict.evidence_type.as_str(), "tdx");
    assert_eq!(verdict.tcb_status.as_deref(), Some("UpToDate"));
    for name in ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrseam"] {
        let value = &verdict.measurements[name];
        assert_eq!(value.len(), 96, "{name} is 48 bytes of hex");
        assert_eq!(value, &value.to_lowercase());
    }
    assert_eq!(verdict.report_data.len(), 128);
}

#[test]
fn a_platform_below_every_listed_tcb_level_is_tcb_rejected() {
    // The "outdated" sample's platform SVNs meet none of the TCB levels in its TCB info.
    assert!(matches!(
        verify_tdx(
            TDX_OUTDATED_QUOTE,
            Some(TDX_OUTDATED_COLLATERAL),
            &open(),
            OUTDATED_SAMPLE_NOW,
        ),
        Err(AttestError::TcbRejected(_))
    ));
}

#[test]
fn sgx_sample_verifies_with_measurements_and_tcb_status() {
    let verdict = sgx(SGX_QUOTE, &open(), SAMPLE_NOW).expect("the SGX sample verifies");
    assert_eq!(verdict.evidence_type.as_str(), "sgx");
    assert_eq!(
        verdict.tcb_status.as_deref(),
        Some("ConfigurationAndSWHardeningNeeded")
    );
    assert_eq!(verdict.advisories, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(verdict.measurements["mrenclave"].len(), 64);
    assert_eq!(verdict.measurements["mrsigner"].len(), 64);
    assert_eq!(verdict.measurements["isv_prod_id"].len(), 4);
    assert_eq!(verdict.measurements["isv_svn"].len(), 4);
}

#[test]
fn carried_report_data_is_accepted_and_other_report_data_is_wrong_nonce() {
    for (quote, verify) in [
        (TDX_QUOTE, tdx as fn(&[u8], &Expectations, u64) -> _),
        (SGX_QUOTE, sgx),
    ] {
        let carried = verify(quote, &open(), SAMPLE_NOW).unwrap().report_data;
        let carried = hex::decode(carried).unwrap();
        let expectations = Expectations {
            report_data: Some(carried.clone()),
            ..Expectations::default()
        };
        assert!(verify(quote, &expectations, SAMPLE_NOW).is_ok());

        let mut other = carried;
        other[0] ^= 1;
        let expectations = Expectations {
            report_data: Some(other),
            ..Expectations::default()
        };
        assert_eq!(
            verify(quote, &expectations, SAMPLE_NOW),
            Err(AttestError::WrongNonce)
        );
    }
}

#[test]
fn reference_measurements_are_checked() {
    let verdict = tdx(TDX_QUOTE, &open(), SAMPLE_NOW).unwrap();
    let matching = Expectations {
        reference: reference("mrtd", &verdict.measurements["mrtd"]),
        ..Expectations::default()
    };
    assert!(tdx(TDX_QUOTE, &matching, SAMPLE_NOW).is_ok());
    let other = Expectations {
        reference: reference("rtmr3", &("00".repeat(47) + "01")),
        ..Expectations::default()
    };
    assert!(matches!(
        tdx(TDX_QUOTE, &other, SAMPLE_NOW),
        Err(AttestError::WrongMeasurement { name, .. }) if name == "rtmr3"
    ));

    let verdict = sgx(SGX_QUOTE, &open(), SAMPLE_NOW).unwrap();
    let matching = Expectations {
        reference: reference("mrenclave", &verdict.measurements["mrenclave"]),
        ..Expectations::default()
    };
    assert!(sgx(SGX_QUOTE, &matching, SAMPLE_NOW).is_ok());
    let other = Expectations {
        reference: reference("mrsigner", &"ab".repeat(32)),
        ..Expectations::default()
    };
    assert!(matches!(
        sgx(SGX_QUOTE, &other, SAMPLE_NOW),
        Err(AttestError::WrongMeasurement { name, .. }) if name == "mrsigner"
    ));
}

#[test]
fn a_flipped_quote_signature_byte_is_a_bad_signature() {
    let mut quote = TDX_QUOTE.to_vec();
    quote[TDX_SIGNATURE_OFFSET + 5] ^= 0x01;
    assert!(matches!(
        tdx(&quote, &open(), SAMPLE_NOW),
        Err(AttestError::BadSignature(_))
    ));

    let mut quote = SGX_QUOTE.to_vec();
    quote[SGX_SIGNATURE_OFFSET + 40] ^= 0x80;
    assert!(matches!(
        sgx(&quote, &open(), SAMPLE_NOW),
        Err(AttestError::BadSignature(_))
    ));
}

#[test]
fn a_flipped_report_data_byte_breaks_the_signature_before_the_nonce_check() {
    // Report data is the last 64 bytes of the body: the signature covers it.
    let mut quote = TDX_QUOTE.to_vec();
    quote[TDX_SIGNATURE_OFFSET - 4 - 1] ^= 0x01;
    assert!(matches!(
        tdx(&quote, &open(), SAMPLE_NOW),
        Err(AttestError::BadSignature(_))
    ));
}

#[test]
fn collateral_outside_its_validity_window_is_a_bad_chain() {
    for now in [AFTER_COLLATERAL_EXPIRY, BEFORE_COLLATERAL_ISSUE] {
        assert!(matches!(
            tdx(TDX_QUOTE, &open(), now),
            Err(AttestError::BadChain(_))
        ));
        assert!(matches!(
            sgx(SGX_QUOTE, &open(), now),
            Err(AttestError::BadChain(_))
        ));
    }
}

#[test]
fn collateral_of_another_platform_is_a_bad_chain() {
    assert!(matches!(
        verify_tdx(TDX_QUOTE, Some(SGX_COLLATERAL), &open(), SAMPLE_NOW),
        Err(AttestError::BadChain(_))
    ));
}

#[test]
fn tampered_collateral_is_refused() {
    let text = std::str::from_utf8(TDX_COLLATERAL).unwrap();
    // Claim a better TCB in the signed TCB info: its signature no longer verifies.
    let tampered = text.replacen("OutOfDate", "UpToDate", 1);
    assert_ne!(tampered, text);
    assert!(matches!(
        verify_tdx(TDX_QUOTE, Some(tampered.as_bytes()), &open(), SAMPLE_NOW),
        Err(AttestError::BadChain(_))
    ));
}

#[test]
fn missing_or_malformed_collateral_has_typed_errors() {
    assert_eq!(
        verify_tdx(TDX_QUOTE, None, &open(), SAMPLE_NOW),
        Err(AttestError::MissingCollateral)
    );
    assert!(matches!(
        verify_tdx(TDX_QUOTE, Some(b"not json"), &open(), SAMPLE_NOW),
        Err(AttestError::Malformed(_))
    ));
    let oversized = vec![b' '; ztmesh_attest::MAX_COLLATERAL_LEN + 1];
    assert!(matches!(
        verify_tdx(TDX_QUOTE, Some(&oversized), &open(), SAMPLE_NOW),
        Err(AttestError::TooLarge { .. })
    ));
}

#[test]
fn truncated_oversized_and_padded_quotes_have_typed_errors() {
    for cut in [
        0,
        10,
        47,
        48,
        300,
        TDX_SIGNATURE_OFFSET - 2,
        TDX_QUOTE_END - 1,
    ] {
        assert!(
            matches!(
                tdx(&TDX_QUOTE[..cut], &open(), SAMPLE_NOW),
                Err(AttestError::Truncated(_))
            ),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        sgx(&SGX_QUOTE[..SGX_QUOTE.len() - 1], &open(), SAMPLE_NOW),
        Err(AttestError::Truncated(_))
    ));

    // The sample ends in zero padding (as quotes from a fixed-size buffer do); that is
    // accepted with or without it, anything else after the declared end is not.
    assert!(tdx(&TDX_QUOTE[..TDX_QUOTE_END], &open(), SAMPLE_NOW).is_ok());
    let mut padded = TDX_QUOTE.to_vec();
    padded.push(7);
    assert!(matches!(
        tdx(&padded, &open(), SAMPLE_NOW),
        Err(AttestError::Malformed(_))
    ));

    let mut oversized = TDX_QUOTE.to_vec();
    oversized.resize(MAX_EVIDENCE_LEN + 1, 0);
    assert!(matches!(
        tdx(&oversized, &open(), SAMPLE_NOW),
        Err(AttestError::TooLarge { .. })
    ));
}

#[test]
fn a_quote_of_the_other_tee_type_is_malformed() {
    assert!(matches!(
        verify_sgx(TDX_QUOTE, Some(SGX_COLLATERAL), &open(), SAMPLE_NOW),
        Err(AttestError::Malformed(_))
    ));
    assert!(matches!(
        verify_tdx(SGX_QUOTE, Some(TDX_COLLATERAL), &open(), SAMPLE_NOW),
        Err(AttestError::Malformed(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_quotes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let _ = tdx(&bytes, &open(), SAMPLE_NOW);
        let _ = sgx(&bytes, &open(), SAMPLE_NOW);
    }

    #[test]
    fn garbage_after_a_valid_header_never_panics(
        version in prop_oneof![Just(3u16), Just(4u16), Just(5u16)],
        tdx_type in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..1200),
    ) {
        let mut quote = TDX_QUOTE[..48].to_vec();
        quote[..2].copy_from_slice(&version.to_le_bytes());
        quote[4] = if tdx_type { 0x81 } else { 0 };
        quote.extend(tail);
        let _ = tdx(&quote, &open(), SAMPLE_NOW);
        let _ = sgx(&quote, &open(), SAMPLE_NOW);
    }

    #[test]
    fn a_flipped_signed_byte_is_always_refused(position in 0..TDX_SIGNATURE_OFFSET + 64, bit in 0..8u8) {
        let mut quote = TDX_QUOTE.to_vec();
        quote[position] ^= 1 << bit;
        prop_assert!(tdx(&quote, &open(), SAMPLE_NOW).is_err());
    }

    #[test]
    fn any_flipped_byte_never_panics(position in 0..5006usize, value in any::<u8>()) {
        let mut quote = TDX_QUOTE.to_vec();
        quote[position] = value;
        let _ = tdx(&quote, &open(), SAMPLE_NOW);
    }
}
