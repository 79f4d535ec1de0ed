//! Feeds arbitrary bytes to what a CA does with the bodies of `POST /v1/enroll`,
//! `POST /v1/rotate` and `POST /v1/enroll/tpm2/credential` before it touches its store: the
//! JSON (`ztmesh_runtime::api_types`), then every field's own parser in the handler's order —
//! enrollment token, CSR (PEM or base64 DER) and its key, identity key and proof, NodeId,
//! TPM credential secret, the `attestation` payload (base64 of CBOR `{evidence, collateral?}`)
//! and its verification under a policy trusting the dev key `[7; 32]` and the fixture TPM AK.
//! Invariants: typed errors, never a panic; a parsed body re-serializes to JSON that parses to
//! the same body; a decoded attestation payload re-encodes to itself; an identity proof that
//! verifies for enrollment does not verify for rotation (domain separation).
#![no_main]

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ztmesh_attest::policy::{
    enrollment_report_data, verify_enrollment_evidence, EnrollAttestationPolicy,
};
use ztmesh_attest::tpm2::AttestationKey;
use ztmesh_attest::tpm2_credential::{AttestationKeyPublic, EndorsementKey};
use ztmesh_attest::AttestationPayload;
use ztmesh_ca::ca_service::{decode_csr, parse_attestation};
use ztmesh_ca::ca_tpm2::parse_credential_secret;
use ztmesh_core::NodeId;
use ztmesh_pki::{
    csr_public_key, EnrollmentToken, IdentityKey, IdentityProofDomain, IdentityPublicKey,
};
use ztmesh_runtime::api_types::{EnrollRequest, RotateRequest, Tpm2CredentialRequest};

const AK_PEM: &str = include_str!("../../crates/ztmesh-attest/tests/fixtures/tpm2/ak.pem");
/// Inside the dev evidence of the seed corpus's freshness window.
const NOW: u64 = 1_750_000_000;

fn b64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

/// The CSR's DER and its SubjectPublicKeyInfo, as the CA reads them.
fn csr(text: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let der = decode_csr(text).ok()?;
    let spki = csr_public_key(&der).ok()?;
    Some((der, spki))
}

/// The identity proof check, in both domains: at most the one it was made for verifies.
fn proof(identity: &IdentityPublicKey, csr_der: &[u8], proof: &str, domain: IdentityProofDomain) {
    let Some(proof) = b64(proof) else {
        return;
    };
    let other = match domain {
        IdentityProofDomain::EnrollCsr => IdentityProofDomain::RotateCsr,
        _ => IdentityProofDomain::EnrollCsr,
    };
    if identity.verify_proof(domain, csr_der, &proof).is_ok() {
        assert!(
            identity.verify_proof(other, csr_der, &proof).is_err(),
            "a proof crossed domains"
        );
    }
}

fn enroll(request: &EnrollRequest) {
    let token = EnrollmentToken::parse(&request.token).ok();
    let csr = csr(&request.csr);
    let identity =
        b64(&request.identity_key).and_then(|der| IdentityPublicKey::from_spki_der(&der).ok());
    if let (Some(identity), Some((der, _))) = (&identity, &csr) {
        proof(
            identity,
            der,
            &request.identity_proof,
            IdentityProofDomain::EnrollCsr,
        );
    }
    if let Some(claimed) = &request.node_id {
        if let Ok(claimed) = claimed.parse::<NodeId>() {
            assert_eq!(
                claimed
                    .to_string()
                    .parse::<NodeId>()
                    .expect("reprint parses"),
                claimed
            );
        }
    }
    if let Some(secret) = &request.tpm2_credential_secret {
        let _ = parse_credential_secret(secret);
    }
    let Some(attestation) = &request.attestation else {
        return;
    };
    let Ok((evidence_type, payload)) = parse_attestation(attestation) else {
        return;
    };
    assert_eq!(
        AttestationPayload::from_cbor(&payload.to_cbor()).expect("re-encoded payload decodes"),
        payload
    );
    let policy = EnrollAttestationPolicy {
        required: true,
        dev_tee_keys: vec![SigningKey::from_bytes(&[7; 32]).verifying_key()],
        tpm2_attestation_keys: vec![AttestationKey::from_pem(AK_PEM).expect("fixture AK")],
    };
    let report_data = match (&token, &csr) {
        (Some(token), Some((_, spki))) => enrollment_report_data(&token.hash().0, spki),
        _ => [0; 64],
    };
    let _ = verify_enrollment_evidence(&policy, evidence_type, &payload, &report_data, NOW);
}

fn rotate(request: &RotateRequest) {
    let Some((der, _)) = csr(&request.csr) else {
        return;
    };
    // The CA checks the proof with the identity key of the presented certificate: here the
    // fixed key of the seed corpus.
    let identity = IdentityKey::generate(&mut ChaCha8Rng::seed_from_u64(5)).public();
    proof(
        &identity,
        &der,
        &request.identity_proof,
        IdentityProofDomain::RotateCsr,
    );
}

fn tpm2_credential(request: &Tpm2CredentialRequest) {
    let _ = EnrollmentToken::parse(&request.token);
    if let Some(ek) = b64(&request.ek_public) {
        let _ = EndorsementKey::from_tpm2b_public(&ek);
    }
    if let Some(ak) = b64(&request.ak_public) {
        let _ = AttestationKeyPublic::from_tpm2b_public(&ak);
    }
}

/// Parses `data` as `T`, checks that it re-serializes to JSON parsing to the same JSON, and
/// hands it on.
fn body<T: serde::Serialize + serde::de::DeserializeOwned>(data: &[u8], then: impl FnOnce(&T)) {
    let Ok(request) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let json = serde_json::to_string(&request).expect("a parsed body serializes");
    let again: T = serde_json::from_str(&json).expect("a re-serialized body parses");
    assert_eq!(serde_json::to_string(&again).expect("serializes"), json);
    then(&request);
}

fuzz_target!(|data: &[u8]| {
    body::<EnrollRequest>(data, enroll);
    body::<RotateRequest>(data, rotate);
    body::<Tpm2CredentialRequest>(data, tpm2_credential);
});
