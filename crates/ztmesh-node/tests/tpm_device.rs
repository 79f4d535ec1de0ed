//! `TpmDevice` against a real software TPM (swtpm): the EK persisted once and reused, anything
//! else at its handle replaced, a fresh AK per call, credentials made by
//! `ztmesh_attest::tpm2_credential` activated (and refused for another AK), quotes that
//! `ztmesh_attest::tpm2` verifies, and nothing left loaded in the TPM or on disk. Skipped with a
//! printed reason when swtpm or tpm2-tools are missing, except under `CI`.

#[path = "../../ztmesh-attest/tests/swtpm/mod.rs"]
mod swtpm;

use rand_core::OsRng;
use swtpm::{tools_present, SoftwareTpm, NODE_TOOLS};
use ztmesh_attest::tpm2::{self, AttestationKey};
use ztmesh_attest::tpm2_credential::{AttestationKeyPublic, EndorsementKey};
use ztmesh_attest::{report_data_binding, Expectations, ReferenceValues};
use ztmesh_core::link::LinkMessage;
use ztmesh_node::attestation::{AttestationConfig, Attester, Attestor};
use ztmesh_node::tpm_device::{
    TpmDevice, TpmError, ATTESTATION_KEY_HANDLE, ENDORSEMENT_KEY_HANDLE,
};

/// Nothing the device loaded is still in the TPM, and no work directory is left.
fn nothing_left(tpm: &SoftwareTpm, work: &std::path::Path) {
    for capability in [
        "handles-transient",
        "handles-loaded-session",
        "handles-saved-session",
    ] {
        let listing = tpm.command("tpm2_getcap", &[capability]).unwrap();
        assert!(
            String::from_utf8_lossy(&listing).trim().is_empty(),
            "{capability}: {}",
            String::from_utf8_lossy(&listing)
        );
    }
    let left: Vec<_> = std::fs::read_dir(work)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .collect();
    assert!(left.is_empty(), "left in the work directory: {left:?}");
}

#[test]
fn keys_activation_and_quotes_on_swtpm() {
    if !tools_present("keys_activation_and_quotes_on_swtpm", NODE_TOOLS) {
        return;
    }
    let tpm = SoftwareTpm::start();
    let work = tempfile::tempdir().unwrap();
    let device = TpmDevice::new(&tpm.tcti(), work.path()).unwrap();

    // The EK: persisted, then reused as it is.
    let ek = device.endorsement_key().unwrap();
    assert_eq!(device.endorsement_key().unwrap(), ek);
    assert_eq!(device.read_public(ENDORSEMENT_KEY_HANDLE).unwrap(), ek);
    let endorsement = EndorsementKey::from_tpm2b_public(&ek).unwrap();

    // Another key at the EK handle (the ECC EK) is replaced by the RSA EK.
    tpm.run(
        "tpm2_evictcontrol",
        &["-C", "o", "-c", ENDORSEMENT_KEY_HANDLE],
    );
    tpm.run(
        "tpm2_createek",
        &["-c", "ecc.ctx", "-G", "ecc", "-u", "ecc.pub"],
    );
    tpm.run(
        "tpm2_evictcontrol",
        &["-C", "o", "-c", "ecc.ctx", ENDORSEMENT_KEY_HANDLE],
    );
    assert_eq!(
        device.read_public(ENDORSEMENT_KEY_HANDLE).unwrap(),
        tpm.read("ecc.pub")
    );
    assert_eq!(device.endorsement_key().unwrap(), ek);
    assert_eq!(device.read_public(ENDORSEMENT_KEY_HANDLE).unwrap(), ek);

    // The AK: a fresh one each time, replacing the persisted one.
    let first = device.create_attestation_key().unwrap();
    let ak = device.create_attestation_key().unwrap();
    assert_ne!(first, ak);
    assert_eq!(device.read_public(ATTESTATION_KEY_HANDLE).unwrap(), ak);
    let first = AttestationKeyPublic::from_tpm2b_public(&first).unwrap();
    let ak = AttestationKeyPublic::from_tpm2b_public(&ak).unwrap();
    assert!(matches!(ak.attestation_key(), AttestationKey::EcdsaP256(_)));

    // Credential activation: the secret for the persisted AK, a TPM refusal for another name.
    let secret = [0x42u8; 32];
    let credential = endorsement
        .make_credential(ak.name(), &secret, &mut OsRng)
        .unwrap();
    assert_eq!(
        device
            .activate_credential(&credential.to_tpm2_tools_file())
            .unwrap()
            .as_slice(),
        secret
    );
    let for_another = endorsement
        .make_credential(first.name(), &secret, &mut OsRng)
        .unwrap();
    let error = device
        .activate_credential(&for_another.to_tpm2_tools_file())
        .unwrap_err();
    assert!(
        matches!(
            error,
            TpmError::ToolFailed {
                tool: "tpm2_activatecredential",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("integrity"), "{error}");
    // The refused activation left its session behind no more than the good one did.
    nothing_left(&tpm, work.path());

    // A quote verifies with the AK it carries, the binding and the PCRs read now.
    let binding = report_data_binding(b"a nonce", b"a TLS SubjectPublicKeyInfo");
    let payload = device.quote(&binding).unwrap();
    let pem = String::from_utf8(payload.collateral.clone().unwrap()).unwrap();
    let key = AttestationKey::from_pem(&pem).unwrap();
    assert_eq!(&key, ak.attestation_key());
    let mut reference = ReferenceValues::default();
    for (index, value) in device.read_pcrs().unwrap() {
        reference.0.insert(
            format!("pcr{index}"),
            [hex::encode(value)].into_iter().collect(),
        );
    }
    let expectations = Expectations {
        report_data: Some(binding.to_vec()),
        reference,
        ..Expectations::default()
    };
    let verdict = tpm2::verify(&payload.evidence, &key, &expectations).unwrap();
    assert_eq!(verdict.report_data, hex::encode(binding));
    let mut other = expectations.clone();
    other.report_data =
        Some(report_data_binding(b"another nonce", b"a TLS SubjectPublicKeyInfo").to_vec());
    assert_eq!(
        tpm2::verify(&payload.evidence, &key, &other)
            .unwrap_err()
            .reason(),
        "wrong_nonce"
    );
    nothing_left(&tpm, work.path());

    // The node's tpm2 attester answers a challenge with such a quote, which the node's own
    // verifier accepts (it trusts its own AK) for its TLS key only.
    let node_dir = tempfile::tempdir().unwrap();
    let config = AttestationConfig {
        attester: Attester::Tpm2,
        tpm_tcti: Some(tpm.tcti()),
        ..AttestationConfig::default()
    };
    let now = 1_800_000_000;
    let attestor = Attestor::load(node_dir.path(), &config, [0xb1; 32], now).unwrap();
    let LinkMessage::TeeResponse {
        nonce,
        evidence_type,
        evidence,
        binary_sha256,
    } = attestor.respond_blocking(&[7; 32], b"tls-key", now)
    else {
        panic!("not a response")
    };
    assert_eq!(evidence_type, "tpm2");
    let verified = attestor
        .verify(
            Some(&[7; 32]),
            &nonce,
            &evidence_type,
            &evidence,
            &binary_sha256,
            &[b"tls-key"],
            now,
        )
        .unwrap();
    assert_eq!(verified.platform, ztmesh_trust::Platform::Tpm2);
    let refused = attestor
        .verify(
            Some(&[7; 32]),
            &nonce,
            &evidence_type,
            &evidence,
            &binary_sha256,
            &[b"another-key"],
            now,
        )
        .unwrap_err();
    assert_eq!(refused.reason(), "wrong_nonce", "{refused}");
    nothing_left(&tpm, node_dir.path());
}
