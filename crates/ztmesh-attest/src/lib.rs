//! Attestation evidence and its verifiers, as pure functions of bytes, reference values and the
//! time: `tpm2` (TPM 2.0 quotes), `dcap` (Intel TDX and SGX DCAP quotes with their collateral),
//! `sev` (AMD SEV-SNP reports with the VCEK → ASK → ARK chain) and `dev` (a simulated TEE for
//! demos, refused unless the policy allows it).
//!
//! Every verifier takes the evidence bytes, optional collateral, [`Expectations`] (the report
//! data the evidence must carry — the challenge binding —, reference measurements, freshness)
//! and `now`, and answers a [`Verdict`] or a typed [`AttestError`]. Nothing here performs IO,
//! reads a clock or draws randomness.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attestation_payload;
mod cbor_fields;
pub mod dcap;
pub mod dev;
mod evidence;
pub mod manifest;
pub mod policy;
pub mod sev;
pub mod token;
pub mod tpm2;
pub mod tpm2_credential;
mod tpm_reader;

pub use attestation_payload::{AttestationPayload, MAX_ATTESTATION_PAYLOAD_LEN};
pub use evidence::{
    report_data_binding, AttestError, EvidenceType, Expectations, ReferenceValues, Verdict,
    MAX_COLLATERAL_LEN, MAX_EVIDENCE_LEN,
};
pub use token::{
    AttestationToken, TokenError, TokenPolicy, MAX_CLOCK_SKEW_SECS, MAX_TOKEN_LEN,
    TOKEN_CONTENT_TYPE, TOKEN_LABEL,
};
