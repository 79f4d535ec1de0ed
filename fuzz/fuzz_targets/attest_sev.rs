//! Feeds arbitrary bytes to the AMD SEV-SNP report verifier (`ztmesh_attest::sev`) with the
//! real Milan sample report and VCEK in the crate's test fixtures. The first byte picks the
//! mode: even, the rest is the report (checked with the sample VCEK); odd, the rest is the VCEK
//! certificate, DER or PEM (checked with the sample report).
//! Invariants: typed errors, never a panic; a verdict is only ever given for an exact-length
//! report and names SEV-SNP.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztmesh_attest::sev::{verify_snp, REPORT_LEN};
use ztmesh_attest::{EvidenceType, Expectations};

const REPORT_HEX: &str =
    include_str!("../../crates/ztmesh-attest/tests/fixtures/sev/report_milan.hex");
const VCEK_MILAN: &[u8] =
    include_bytes!("../../crates/ztmesh-attest/tests/fixtures/sev/vcek_milan.der");
/// Inside the sample VCEK's validity (the crate's tests pin the same instant).
const SAMPLE_NOW: u64 = 1_751_328_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sample = hex::decode(REPORT_HEX.trim()).expect("the fixture is hex");
    let (report, vcek) = if mode & 1 == 0 {
        (rest, VCEK_MILAN)
    } else {
        (&sample[..], rest)
    };
    if let Ok(verdict) = verify_snp(report, vcek, &Expectations::default(), SAMPLE_NOW) {
        assert_eq!(report.len(), REPORT_LEN);
        assert_eq!(verdict.evidence_type, EvidenceType::SevSnp);
    }
});
