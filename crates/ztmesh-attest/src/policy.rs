//! Which evidence a verifier accepts and the payload evidence travels in: the
//! [`EnrollAttestationPolicy`] (dev TEE keys, trusted TPM attestation keys, whether evidence is
//! required), the [`AttestationPayload`] CBOR map `{evidence, collateral?}` of the HTTP API and
//! of link messages, and [`verify_evidence`], which dispatches to the verifier of each evidence
//! type. Used by the CA at enrollment and attestation, and by nodes for their peers' evidence.
//!
//! Pure: no IO, no clock (`now` is passed in). It must never accept evidence of a kind the
//! policy has no anchor for (a `dev` key, a trusted TPM key, a vendor root).

use std::time::Duration;

pub use crate::AttestationPayload;

/// The CA's attestation policy for `POST /v1/enroll`. The default requires nothing, still
/// verifies whatever evidence arrives, and can verify only the evidence anchored in a vendor
/// root (`tdx`, `sgx`, `sev-snp`).
#[derive(Debug, Clone, Default)]
pub struct EnrollAttestationPolicy {
    /// Refuse enrollment without evidence (403 `attestation_required`).
    pub required: bool,
    /// The dev TEE public keys whose simulated evidence is accepted, one per simulated device.
    /// Empty refuses every `dev` evidence (`dev_not_allowed`): a simulated TEE proves nothing
    /// about hardware, so accepting it is an explicit, logged choice for demos.
    pub dev_tee_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// TPM attestation keys this CA trusts. A TPM quote is only as good as the key that signs
    /// it, and a key the node merely names could be any software key, so a quote by a key not
    /// listed here is refused (`bad_chain`).
    pub tpm2_attestation_keys: Vec<crate::tpm2::AttestationKey>,
}

/// How old `dev` evidence may be at enrollment (the other kinds carry no timestamp; their
/// freshness comes from the one-time token in the report data).
pub const ENROLL_EVIDENCE_MAX_AGE: Duration = Duration::from_secs(86_400);

/// The report data enrollment evidence must carry:
/// `report_data_binding(SHA-256(token text), TLS SubjectPublicKeyInfo DER of the CSR)`
/// (`token_hash` is the enrollment token's SHA-256). The
/// token makes it single-use, the key ties it to the certificate about to be issued.
pub fn enrollment_report_data(token_hash: &[u8; 32], csr_spki_der: &[u8]) -> [u8; 64] {
    crate::report_data_binding(token_hash, csr_spki_der)
}

/// Verifies enrollment evidence of `evidence_type` against `policy`, expecting `report_data`
/// (see [`enrollment_report_data`]), at `now_unix_secs`. Pure: no IO, no clock.
pub fn verify_enrollment_evidence(
    policy: &EnrollAttestationPolicy,
    evidence_type: crate::EvidenceType,
    payload: &AttestationPayload,
    report_data: &[u8; 64],
    now_unix_secs: u64,
) -> Result<crate::Verdict, crate::AttestError> {
    let expectations = crate::Expectations {
        report_data: Some(report_data.to_vec()),
        max_age: Some(ENROLL_EVIDENCE_MAX_AGE),
        ..crate::Expectations::default()
    };
    verify_evidence(policy, evidence_type, payload, expectations, now_unix_secs)
}

/// Verifies evidence of `evidence_type` against the keys of `policy` and `expectations`
/// (report data, reference values, freshness), at `now_unix_secs`. `dev` evidence needs the
/// policy's dev TEE key; `expectations.allow_dev` is set from it. Pure: no IO, no clock.
pub fn verify_evidence(
    policy: &EnrollAttestationPolicy,
    evidence_type: crate::EvidenceType,
    payload: &AttestationPayload,
    mut expectations: crate::Expectations,
    now_unix_secs: u64,
) -> Result<crate::Verdict, crate::AttestError> {
    use crate::{AttestError, EvidenceType};
    let evidence = &payload.evidence;
    let collateral = payload.collateral.as_deref();
    match evidence_type {
        EvidenceType::Dev => {
            if policy.dev_tee_keys.is_empty() {
                return Err(AttestError::DevNotAllowed);
            }
            if collateral.is_some() {
                return Err(AttestError::Malformed(
                    "dev evidence takes no collateral".into(),
                ));
            }
            expectations.allow_dev = true;
            crate::dev::verify_any(evidence, &policy.dev_tee_keys, &expectations, now_unix_secs)
        }
        EvidenceType::Tpm2 => {
            let pem = collateral.ok_or(AttestError::MissingCollateral)?;
            let pem = std::str::from_utf8(pem).map_err(|_| {
                AttestError::Malformed("tpm2 collateral: the attestation key is not PEM".into())
            })?;
            let key = crate::tpm2::AttestationKey::from_pem(pem)
                .map_err(|e| AttestError::Malformed(format!("tpm2 collateral: {e}")))?;
            if !policy.tpm2_attestation_keys.contains(&key) {
                return Err(AttestError::BadChain(
                    "tpm2: the attestation key is not one this node trusts".into(),
                ));
            }
            crate::tpm2::verify(evidence, &key, &expectations)
        }
        EvidenceType::Tdx => {
            crate::dcap::verify_tdx(evidence, collateral, &expectations, now_unix_secs)
        }
        EvidenceType::Sgx => {
            crate::dcap::verify_sgx(evidence, collateral, &expectations, now_unix_secs)
        }
        EvidenceType::SevSnp => crate::sev::verify_snp(
            evidence,
            collateral.ok_or(AttestError::MissingCollateral)?,
            &expectations,
            now_unix_secs,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttestError, EvidenceType};

    const NOW: u64 = 1_750_000_000;

    fn binding() -> [u8; 64] {
        crate::report_data_binding(b"token hash", b"tls spki")
    }

    #[test]
    fn dev_evidence_needs_the_dev_key_in_the_policy() {
        let tee = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let payload = AttestationPayload {
            evidence: crate::dev::generate(&tee, &[0; 32], &binding(), NOW),
            collateral: None,
        };
        let refused = EnrollAttestationPolicy::default();
        assert_eq!(
            verify_enrollment_evidence(&refused, EvidenceType::Dev, &payload, &binding(), NOW),
            Err(AttestError::DevNotAllowed)
        );
        let allowed = EnrollAttestationPolicy {
            dev_tee_keys: vec![tee.verifying_key()],
            ..EnrollAttestationPolicy::default()
        };
        assert!(
            verify_enrollment_evidence(&allowed, EvidenceType::Dev, &payload, &binding(), NOW)
                .is_ok()
        );
        let stale = NOW + ENROLL_EVIDENCE_MAX_AGE.as_secs() + 1;
        assert_eq!(
            verify_enrollment_evidence(&allowed, EvidenceType::Dev, &payload, &binding(), stale)
                .unwrap_err()
                .reason(),
            "stale"
        );
    }

    #[test]
    fn hardware_evidence_without_its_collateral_or_trusted_key_is_refused() {
        let policy = EnrollAttestationPolicy::default();
        let bare = AttestationPayload {
            evidence: vec![0; 16],
            collateral: None,
        };
        for kind in [EvidenceType::SevSnp, EvidenceType::Tpm2] {
            assert_eq!(
                verify_enrollment_evidence(&policy, kind, &bare, &binding(), NOW),
                Err(AttestError::MissingCollateral),
                "{kind:?}"
            );
        }
        // A well-formed key the CA was never given.
        let untrusted = p256_pem();
        let with_key = AttestationPayload {
            evidence: vec![0; 16],
            collateral: Some(untrusted.into_bytes()),
        };
        assert_eq!(
            verify_enrollment_evidence(&policy, EvidenceType::Tpm2, &with_key, &binding(), NOW)
                .unwrap_err()
                .reason(),
            "bad_chain"
        );
    }

    /// A P-256 public key PEM (the generator point as the key: valid, owned by nobody here).
    fn p256_pem() -> String {
        let spki = hex::decode(concat!(
            "3059301306072a8648ce3d020106082a8648ce3d030107034200",
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        ))
        .unwrap();
        pem::encode(&pem::Pem::new("PUBLIC KEY", spki))
    }
}
