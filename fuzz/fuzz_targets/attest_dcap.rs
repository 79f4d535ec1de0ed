//! Feeds arbitrary bytes to the Intel TDX and SGX DCAP quote verifiers (`ztmesh_attest::dcap`)
//! with the real sample quotes and collateral published with `dcap-qvl` (the crate's test
//! fixtures). The first byte picks the mode: bit 0 TDX or SGX; bit 1 whether the rest is the
//! quote (checked with the sample collateral) or the collateral JSON (checked with the sample
//! quote), so both the quote parser and the collateral parser see arbitrary input.
//! Invariants: typed errors, never a panic; a verdict names the evidence type that was asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztmesh_attest::dcap::{verify_sgx, verify_tdx};
use ztmesh_attest::{EvidenceType, Expectations};

const TDX_QUOTE: &[u8] = include_bytes!("../../crates/ztmesh-attest/tests/fixtures/dcap/tdx_quote");
const TDX_COLLATERAL: &[u8] =
    include_bytes!("../../crates/ztmesh-attest/tests/fixtures/dcap/tdx_quote_collateral.json");
const SGX_QUOTE: &[u8] = include_bytes!("../../crates/ztmesh-attest/tests/fixtures/dcap/sgx_quote");
const SGX_COLLATERAL: &[u8] =
    include_bytes!("../../crates/ztmesh-attest/tests/fixtures/dcap/sgx_quote_collateral.json");
/// 2025-07-01T00:00:00Z: inside the sample collateral's validity.
const SAMPLE_NOW: u64 = 1_751_328_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tdx = mode & 1 == 0;
    let (sample_quote, sample_collateral) = if tdx {
        (TDX_QUOTE, TDX_COLLATERAL)
    } else {
        (SGX_QUOTE, SGX_COLLATERAL)
    };
    let (quote, collateral) = if mode & 2 == 0 {
        (rest, sample_collateral)
    } else {
        (sample_quote, rest)
    };
    let expectations = Expectations::default();
    let verdict = if tdx {
        verify_tdx(quote, Some(collateral), &expectations, SAMPLE_NOW)
    } else {
        verify_sgx(quote, Some(collateral), &expectations, SAMPLE_NOW)
    };
    if let Ok(verdict) = verdict {
        let expected = if tdx {
            EvidenceType::Tdx
        } else {
            EvidenceType::Sgx
        };
        assert_eq!(verdict.evidence_type, expected);
    }
    if mode & 2 == 0 {
        // Without collateral nothing can be verified.
        let refused = if tdx {
            verify_tdx(quote, None, &expectations, SAMPLE_NOW)
        } else {
            verify_sgx(quote, None, &expectations, SAMPLE_NOW)
        };
        assert!(refused.is_err(), "verified without collateral");
    }
});
