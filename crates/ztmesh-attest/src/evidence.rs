//! Types shared by every verifier.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

/// Largest evidence accepted by any verifier (checked before parsing).
pub const MAX_EVIDENCE_LEN: usize = 64 * 1024;

/// Largest collateral accepted (certificate chains, CRLs, TCB info).
pub const MAX_COLLATERAL_LEN: usize = 1024 * 1024;

/// Kinds of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EvidenceType {
    /// A TPM 2.0 quote over PCRs.
    #[serde(rename = "tpm2")]
    Tpm2,
    /// An Intel TDX DCAP quote.
    #[serde(rename = "tdx")]
    Tdx,
    /// An Intel SGX DCAP quote.
    #[serde(rename = "sgx")]
    Sgx,
    /// An AMD SEV-SNP attestation report.
    #[serde(rename = "sev-snp")]
    SevSnp,
    /// The simulated TEE (no hardware).
    #[serde(rename = "dev")]
    Dev,
}

impl EvidenceType {
    /// The name used in the API, CLI and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceType::Tpm2 => "tpm2",
            EvidenceType::Tdx => "tdx",
            EvidenceType::Sgx => "sgx",
            EvidenceType::SevSnp => "sev-snp",
            EvidenceType::Dev => "dev",
        }
    }

    /// Whether this is real hardware (everything but `dev`).
    pub fn is_hardware(self) -> bool {
        !matches!(self, EvidenceType::Dev)
    }
}

impl std::str::FromStr for EvidenceType {
    type Err = AttestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "tpm2" => EvidenceType::Tpm2,
            "tdx" => EvidenceType::Tdx,
            "sgx" => EvidenceType::Sgx,
            "sev-snp" => EvidenceType::SevSnp,
            "dev" => EvidenceType::Dev,
            other => {
                return Err(AttestError::Malformed(format!(
                    "unknown evidence type {other:?} (tpm2, tdx, sgx, sev-snp, dev)"
                )))
            }
        })
    }
}

/// Allowed values per measurement name (lowercase hex). A name absent from the map is not
/// checked; a name present must match one of its values. Each verifier documents its names
/// (e.g. `mrtd`, `rtmr0`..`rtmr3`, `mrenclave`, `mrsigner`, `measurement`, `pcr<N>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceValues(pub BTreeMap<String, BTreeSet<String>>);

impl ReferenceValues {
    /// Checks `measured` (name → hex) against the reference values.
    pub fn check(&self, measured: &BTreeMap<String, String>) -> Result<(), AttestError> {
        for (name, allowed) in &self.0 {
            let Some(got) = measured.get(name) else {
                return Err(AttestError::WrongMeasurement {
                    name: name.clone(),
                    got: "(not measured)".into(),
                });
            };
            if !allowed.contains(&got.to_lowercase()) {
                return Err(AttestError::WrongMeasurement {
                    name: name.clone(),
                    got: got.clone(),
                });
            }
        }
        Ok(())
    }
}

/// What a verifier requires of the evidence besides its own signatures and chains.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// The report data the evidence must carry (compared over its length; TEEs pad to 64
    /// bytes). `None` only for offline inspection (`ztmesh attest verify` without `--nonce`).
    pub report_data: Option<Vec<u8>>,
    /// Reference measurements.
    pub reference: ReferenceValues,
    /// Evidence older than this (by its own timestamp, where it has one) is stale.
    pub max_age: Option<Duration>,
    /// Accept `dev` evidence. Off by default: a simulated TEE proves nothing.
    pub allow_dev: bool,
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// What was verified.
    pub evidence_type: EvidenceType,
    /// Measured values (name → lowercase hex), as named in [`ReferenceValues`].
    pub measurements: BTreeMap<String, String>,
    /// The report data the evidence carries (hex).
    pub report_data: String,
    /// Platform TCB status where the evidence has one (e.g. `UpToDate`, `OutOfDate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcb_status: Option<String>,
    /// Advisory ids reported with the TCB status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advisories: Vec<String>,
}

/// Why evidence was refused. Every variant is a fault of the evidence (or its collateral).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// Over the size limit (checked before parsing).
    #[error("{what} of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Evidence or collateral.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Shorter than its structure requires.
    #[error("truncated: {0}")]
    Truncated(String),
    /// Not the structure it claims to be.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A signature does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// A certificate chain or collateral does not verify (or is expired/revoked at `now`).
    #[error("bad chain or collateral: {0}")]
    BadChain(String),
    /// Collateral is required and missing.
    #[error("collateral is required for this evidence type")]
    MissingCollateral,
    /// The report data is not the expected binding (wrong nonce or wrong key).
    #[error("report data does not match the expected binding (wrong nonce or key)")]
    WrongNonce,
    /// Older than the freshness window.
    #[error("stale evidence: {age_secs} s old, at most {max_secs} s allowed")]
    Stale {
        /// Its age.
        age_secs: u64,
        /// The limit.
        max_secs: u64,
    },
    /// A measurement is not among the reference values.
    #[error("measurement {name} = {got} is not an allowed reference value")]
    WrongMeasurement {
        /// Measurement name.
        name: String,
        /// Measured value.
        got: String,
    },
    /// The platform TCB status is not acceptable.
    #[error("TCB status refused: {0}")]
    TcbRejected(String),
    /// `dev` evidence while the policy does not allow it.
    #[error("dev (simulated) attestation is not allowed by this policy")]
    DevNotAllowed,
}

impl AttestError {
    /// A stable machine-readable reason, for APIs and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AttestError::TooLarge { .. } => "too_large",
            AttestError::Truncated(_) => "truncated",
            AttestError::Malformed(_) => "malformed",
            AttestError::BadSignature(_) => "bad_signature",
            AttestError::BadChain(_) => "bad_chain",
            AttestError::MissingCollateral => "missing_collateral",
            AttestError::WrongNonce => "wrong_nonce",
            AttestError::Stale { .. } => "stale",
            AttestError::WrongMeasurement { .. } => "wrong_measurement",
            AttestError::TcbRejected(_) => "tcb_rejected",
            AttestError::DevNotAllowed => "dev_not_allowed",
        }
    }
}

/// The report data that binds evidence to a challenge and a live link:
/// SHA-512(nonce ‖ the responder's TLS certificate public key (SPKI DER)), 64 bytes — the size
/// of TDX/SGX/SEV-SNP report data. TPM quotes carry it as their qualifying data.
pub fn report_data_binding(nonce: &[u8], tls_spki_der: &[u8]) -> [u8; 64] {
    let mut hasher = Sha512::new();
    hasher.update(nonce);
    hasher.update(tls_spki_der);
    hasher.finalize().into()
}

/// Checks evidence length before any parsing.
pub(crate) fn check_len(what: &'static str, bytes: &[u8], max: usize) -> Result<(), AttestError> {
    if bytes.len() > max {
        return Err(AttestError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    Ok(())
}

/// Compares carried report data with the expectation (over the expectation's length, the rest
/// must be zero padding).
pub(crate) fn check_report_data(
    carried: &[u8],
    expected: Option<&[u8]>,
) -> Result<(), AttestError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    if carried.len() < expected.len()
        || carried[..expected.len()] != *expected
        || carried[expected.len()..].iter().any(|b| *b != 0)
    {
        return Err(AttestError::WrongNonce);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_must_match_and_the_rest_must_be_zero() {
        let expected = report_data_binding(b"nonce", b"spki");
        assert!(check_report_data(&expected, Some(&expected)).is_ok());
        let mut other = expected;
        other[0] ^= 1;
        assert_eq!(
            check_report_data(&other, Some(&expected)),
            Err(AttestError::WrongNonce)
        );
        let mut padded = vec![1u8, 2, 3];
        padded.extend([0u8; 61]);
        assert!(check_report_data(&padded, Some(&[1, 2, 3])).is_ok());
        padded[63] = 9;
        assert!(check_report_data(&padded, Some(&[1, 2, 3])).is_err());
        assert!(check_report_data(&[1], None).is_ok());
    }

    #[test]
    fn reference_values_refuse_missing_and_unlisted_measurements() {
        let mut reference = ReferenceValues::default();
        reference
            .0
            .insert("mrtd".into(), ["aa".to_owned()].into_iter().collect());
        let mut measured = BTreeMap::new();
        assert!(reference.check(&measured).is_err());
        measured.insert("mrtd".into(), "AA".into());
        assert!(reference.check(&measured).is_ok());
        measured.insert("mrtd".into(), "bb".into());
        assert!(matches!(
            reference.check(&measured),
            Err(AttestError::WrongMeasurement { .. })
        ));
    }
}
