//! Feeds arbitrary bytes to the `tpm2` evidence decoder and verifier (`ztmesh_attest::tpm2`)
//! with the attestation key of the real swtpm quote in the crate's fixtures, and to the TPM
//! structure parsers behind them (TPMS_ATTEST, TPMT_SIGNATURE, TPM2B_PUBLIC, the tpm2-tools
//! credential file) that a CA and a node read from peers.
//! Invariants: typed errors, never a panic; decoded evidence re-encodes to bytes that decode to
//! the same evidence, and so does a credential file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztmesh_attest::tpm2::{self, AttestationKey, QuoteAttest, Tpm2Evidence, TpmSignature};
use ztmesh_attest::tpm2_credential::{AttestationKeyPublic, Credential, EndorsementKey};
use ztmesh_attest::Expectations;

const AK_PEM: &str = include_str!("../../crates/ztmesh-attest/tests/fixtures/tpm2/ak.pem");

fuzz_target!(|data: &[u8]| {
    let ak = AttestationKey::from_pem(AK_PEM).expect("the fixture key parses");
    if let Ok(evidence) = Tpm2Evidence::decode(data) {
        let bytes = evidence.encode();
        assert_eq!(
            Tpm2Evidence::decode(&bytes).expect("re-encoded evidence decodes"),
            evidence
        );
        let _ = QuoteAttest::parse(&evidence.quoted);
        let _ = TpmSignature::parse(&evidence.signature);
        let _ = AttestationKey::from_spki_der(&evidence.ak_public);
    }
    let _ = tpm2::verify(data, &ak, &Expectations::default());
    let _ = tpm2::verify(
        data,
        &ak,
        &Expectations {
            report_data: Some(vec![0x5a; 64]),
            ..Expectations::default()
        },
    );
    let _ = QuoteAttest::parse(data);
    let _ = TpmSignature::parse(data);
    let _ = AttestationKey::from_spki_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = AttestationKey::from_pem(text);
    }
    let _ = EndorsementKey::from_tpm2b_public(data);
    let _ = AttestationKeyPublic::from_tpm2b_public(data);
    if let Ok(credential) = Credential::from_tpm2_tools_file(data) {
        let file = credential.to_tpm2_tools_file();
        assert_eq!(
            Credential::from_tpm2_tools_file(&file).expect("re-encoded file reads"),
            credential
        );
    }
});
