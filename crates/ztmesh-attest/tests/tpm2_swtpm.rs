//! `tpm2` quotes from a real software TPM (swtpm), made with tpm2-tools and verified by
//! `ztmesh_attest::tpm2`. Skipped with a printed reason when swtpm or tpm2-tools are missing,
//! except under `CI`, where a missing tool fails the test.

mod swtpm;

use sha2::{Digest, Sha256};
use swtpm::{tools_present, SoftwareTpm};
use ztmesh_attest::tpm2::{self, AttestationKey, Tpm2Evidence};
use ztmesh_attest::{report_data_binding, AttestError, Expectations, ReferenceValues};

const TOOLS: &[&str] = &[
    "swtpm",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_pcrextend",
    "tpm2_quote",
    "tpm2_readpublic",
    "tpm2_flushcontext",
];

/// PCR 7 is extended with this in every test, so the policy has something non-zero to pin.
const EXTEND_DATA: [u8; 32] = [0xab; 32];

/// What one quote session produced.
struct Quote {
    ak: AttestationKey,
    evidence: Tpm2Evidence,
    binding: [u8; 64],
}

/// Enrols an AK under the EK (`key_algorithm` `ecc` or `rsa`, `signing_scheme` e.g. `ecdsa`,
/// `rsassa`, `rsapss`), extends PCR 7 and quotes sha256 PCRs 0, 1, 2, 7 with the binding of
/// `nonce` as qualifying data.
fn quote(tpm: &SoftwareTpm, key_algorithm: &str, signing_scheme: &str, nonce: &[u8]) -> Quote {
    tpm.run(
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", key_algorithm, "-u", "ek.pub"],
    );
    tpm.run(
        "tpm2_createak",
        &[
            "-C",
            "ek.ctx",
            "-c",
            "ak.ctx",
            "-G",
            key_algorithm,
            "-g",
            "sha256",
            "-s",
            signing_scheme,
            "-u",
            "ak.pub",
            "-n",
            "ak.name",
        ],
    );
    tpm.run(
        "tpm2_readpublic",
        &["-c", "ak.ctx", "-f", "pem", "-o", "ak.pem"],
    );
    let ak = AttestationKey::from_pem(&String::from_utf8(tpm.read("ak.pem")).unwrap()).unwrap();

    tpm.run(
        "tpm2_pcrextend",
        &[&format!("7:sha256={}", hex::encode(EXTEND_DATA))],
    );
    let binding = report_data_binding(nonce, b"the responder's TLS SubjectPublicKeyInfo");
    tpm.run(
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            "sha256:0,1,2,7",
            "-q",
            &hex::encode(binding),
            "-g",
            "sha256",
            "--scheme",
            signing_scheme,
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-o",
            "pcrs.out",
            "-F",
            "values",
        ],
    );
    let evidence = Tpm2Evidence::from_quote_outputs(
        &tpm.read("quote.msg"),
        &tpm.read("quote.sig"),
        &ak.to_spki_der(),
        &tpm.read("pcrs.out"),
    )
    .unwrap();
    Quote {
        ak,
        evidence,
        binding,
    }
}

/// PCR 7 after one extend from zero: SHA-256(0³² ‖ data).
fn expected_pcr7() -> String {
    hex::encode(
        Sha256::new()
            .chain_update([0u8; 32])
            .chain_update(EXTEND_DATA)
            .finalize(),
    )
}

fn policy(binding: &[u8; 64]) -> Expectations {
    let mut reference = ReferenceValues::default();
    reference
        .0
        .insert("pcr7".into(), [expected_pcr7()].into_iter().collect());
    reference.0.insert(
        "pcr0".into(),
        [hex::encode([0u8; 32])].into_iter().collect(),
    );
    Expectations {
        report_data: Some(binding.to_vec()),
        reference,
        ..Expectations::default()
    }
}

fn reason(result: Result<ztmesh_attest::Verdict, AttestError>) -> &'static str {
    result.unwrap_err().reason()
}

#[test]
fn ecc_p256_quote_from_swtpm_verifies_and_every_tampering_is_refused() {
    if !tools_present("ecc_p256_quote_from_swtpm", TOOLS) {
        return;
    }
    let tpm = SoftwareTpm::start();
    let Quote {
        ak,
        evidence,
        binding,
    } = quote(&tpm, "ecc", "ecdsa", b"nonce for the ecc test");
    assert!(matches!(ak, AttestationKey::EcdsaP256(_)));
    let expectations = policy(&binding);
    let bytes = evidence.encode();

    let verdict = tpm2::verify(&bytes, &ak, &expectations).unwrap();
    assert_eq!(verdict.measurements["pcr7"], expected_pcr7());
    assert_eq!(verdict.report_data, hex::encode(binding));

    // Wrong nonce.
    let mut other = expectations.clone();
    other.report_data = Some(
        report_data_binding(
            b"another nonce",
            b"the responder's TLS SubjectPublicKeyInfo",
        )
        .to_vec(),
    );
    assert_eq!(reason(tpm2::verify(&bytes, &ak, &other)), "wrong_nonce");

    // A changed value in the reported PCR set.
    let mut changed = evidence.clone();
    changed.pcrs_sha256.insert(2, [1u8; 32]);
    assert_eq!(
        reason(tpm2::verify(&changed.encode(), &ak, &expectations)),
        "bad_signature"
    );

    // The PCR policy wants another pcr7.
    let mut other = expectations.clone();
    other.reference.0.insert(
        "pcr7".into(),
        [hex::encode([0u8; 32])].into_iter().collect(),
    );
    assert_eq!(
        reason(tpm2::verify(&bytes, &ak, &other)),
        "wrong_measurement"
    );

    // A flipped signature bit.
    let mut flipped = evidence.clone();
    let last = flipped.signature.len() - 1;
    flipped.signature[last] ^= 0x01;
    assert_eq!(
        reason(tpm2::verify(&flipped.encode(), &ak, &expectations)),
        "bad_signature"
    );

    // Truncated and oversized evidence.
    assert_eq!(
        reason(tpm2::verify(&bytes[..bytes.len() - 1], &ak, &expectations)),
        "truncated"
    );
    let mut oversized = bytes.clone();
    oversized.resize(tpm2::MAX_TPM2_EVIDENCE_LEN + 1, 0);
    assert_eq!(
        reason(tpm2::verify(&oversized, &ak, &expectations)),
        "too_large"
    );

    // PCR 7 moves on: a new quote no longer meets the policy.
    let requote = quote(&tpm, "ecc", "ecdsa", b"nonce for the ecc test");
    assert_eq!(
        reason(tpm2::verify(
            &requote.evidence.encode(),
            &requote.ak,
            &policy(&requote.binding)
        )),
        "wrong_measurement"
    );
}

#[test]
fn rsa_quotes_from_swtpm_verify() {
    if !tools_present("rsa_quotes_from_swtpm", TOOLS) {
        return;
    }
    for scheme in ["rsassa", "rsapss"] {
        let tpm = SoftwareTpm::start();
        let Quote {
            ak,
            evidence,
            binding,
        } = quote(&tpm, "rsa", scheme, b"nonce for the rsa test");
        assert!(matches!(ak, AttestationKey::Rsa(_)), "{scheme}");
        let expectations = policy(&binding);
        tpm2::verify(&evidence.encode(), &ak, &expectations)
            .unwrap_or_else(|error| panic!("{scheme}: {error}"));

        let mut flipped = evidence.clone();
        flipped.signature[10] ^= 0x80;
        assert_eq!(
            reason(tpm2::verify(&flipped.encode(), &ak, &expectations)),
            "bad_signature",
            "{scheme}"
        );
    }
}
