//! Intel TDX and SGX DCAP quotes, verified with their collateral by the `dcap-qvl` crate.
//!
//! A quote is trusted only through Intel's chain: the PCK certificate chain to Intel's SGX root
//! CA (built into `dcap-qvl`), the root CA and PCK CRLs, the signed TCB info and QE identity,
//! the QE report signed by the PCK key, and the quote body signed by the attestation key the QE
//! vouches for. All of it is checked at the `now` the caller passes, so collateral outside its
//! validity window (a stale TCB info, QE identity or CRL) is refused like a broken chain.
//!
//! This module never fetches collateral and never reads the clock: the caller brings both.
//!
//! # Collateral format
//!
//! The collateral is `dcap-qvl`'s `QuoteCollateralV3` as JSON: the object a PCCS collateral
//! fetch produces and `dcap-qvl` serializes, with the fields `pck_crl_issuer_chain`,
//! `root_ca_crl` (hex DER), `pck_crl` (hex DER), `tcb_info_issuer_chain`, `tcb_info` (the signed
//! JSON text), `tcb_info_signature` (hex), `qe_identity_issuer_chain`, `qe_identity`,
//! `qe_identity_signature` (hex) and, optionally, `pck_certificate_chain` (PEM). Collateral files
//! given to the CLI are this JSON; the SCALE encoding `dcap-qvl` also supports is not accepted.
//!
//! # Measurements
//!
//! TDX: `mrtd`, `rtmr0`..`rtmr3`, `mrseam`, `mrsignerseam`, `mrconfigid`, `mrowner`,
//! `mrownerconfig`, `td_attributes`, `xfam`. SGX: `mrenclave`, `mrsigner`, `isv_prod_id`,
//! `isv_svn` (both as 4-digit big-endian hex, e.g. `0001`), `attributes`. All lowercase hex.
//!
//! # TCB status
//!
//! The platform TCB status (merged with the QE's) and its advisory ids are reported in the
//! [`Verdict`]. `Revoked` is refused ([`AttestError::TcbRejected`]), as is a platform below every
//! TCB level the TCB info lists; every other status (`UpToDate`, `SWHardeningNeeded`,
//! `ConfigurationNeeded`, `OutOfDate`, ...) is accepted here and left to the trust policy.
//! DCAP quotes carry no timestamp, so [`Expectations::max_age`] does not apply to them;
//! freshness comes from the challenge in the report data.

use std::collections::BTreeMap;

use dcap_qvl::configs::RingConfig;
use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::QuoteCollateralV3;

use crate::evidence::{check_len, check_report_data};
use crate::{
    AttestError, EvidenceType, Expectations, Verdict, MAX_COLLATERAL_LEN, MAX_EVIDENCE_LEN,
};

/// Length of the quote header common to every quote version.
const HEADER_LEN: usize = 48;
/// SGX enclave report body.
const SGX_REPORT_LEN: usize = 384;
/// TDX 1.0 TD report body.
const TD10_REPORT_LEN: usize = 584;
/// `tee_type` of an SGX quote.
const TEE_TYPE_SGX: u32 = 0x0000_0000;
/// `tee_type` of a TDX quote.
const TEE_TYPE_TDX: u32 = 0x0000_0081;

/// Verifies an Intel TDX quote (version 4 or 5) with its collateral (JSON, see the module
/// documentation) at `now_unix_secs`.
pub fn verify_tdx(
    quote: &[u8],
    collateral: Option<&[u8]>,
    expectations: &Expectations,
    now_unix_secs: u64,
) -> Result<Verdict, AttestError> {
    verify_quote(
        EvidenceType::Tdx,
        quote,
        collateral,
        expectations,
        now_unix_secs,
    )
}

/// Verifies an Intel SGX DCAP quote (version 3) with its collateral (JSON, see the module
/// documentation) at `now_unix_secs`.
pub fn verify_sgx(
    quote: &[u8],
    collateral: Option<&[u8]>,
    expectations: &Expectations,
    now_unix_secs: u64,
) -> Result<Verdict, AttestError> {
    verify_quote(
        EvidenceType::Sgx,
        quote,
        collateral,
        expectations,
        now_unix_secs,
    )
}

fn verify_quote(
    expected_type: EvidenceType,
    quote: &[u8],
    collateral: Option<&[u8]>,
    expectations: &Expectations,
    now_unix_secs: u64,
) -> Result<Verdict, AttestError> {
    check_len("quote", quote, MAX_EVIDENCE_LEN)?;
    let collateral = collateral.ok_or(AttestError::MissingCollateral)?;
    check_len("collateral", collateral, MAX_COLLATERAL_LEN)?;

    // Frame the quote ourselves first: the declared lengths must add up to exactly the bytes
    // given, so truncation and trailing bytes get their own typed errors and nothing is
    // allocated from a length field that the bytes cannot back.
    let framed_type = frame_quote(quote)?;
    if framed_type != expected_type {
        return Err(AttestError::Malformed(format!(
            "a {} quote where a {} quote was expected",
            framed_type.as_str(),
            expected_type.as_str()
        )));
    }
    let parsed =
        Quote::parse(quote).map_err(|err| AttestError::Malformed(format!("quote: {err:#}")))?;
    let collateral: QuoteCollateralV3 = serde_json::from_slice(collateral)
        .map_err(|err| AttestError::Malformed(format!("collateral JSON: {err}")))?;

    let verified = QuoteVerifier::new_prod()
        .with_config::<RingConfig>()
        .verify(quote, &collateral, now_unix_secs)
        .map_err(|err| classify_error(&format!("{err:#}"), &parsed.report))?;

    let (report_data, measurements) = match (&verified.report, expected_type) {
        (Report::SgxEnclave(enclave), EvidenceType::Sgx) => {
            (enclave.report_data.to_vec(), sgx_measurements(enclave))
        }
        (report, EvidenceType::Tdx) => match report.as_td10() {
            Some(td) => (td.report_data.to_vec(), tdx_measurements(td)),
            None => {
                return Err(AttestError::Malformed(
                    "TDX quote without a TD report".into(),
                ))
            }
        },
        _ => {
            return Err(AttestError::Malformed(format!(
                "quote body does not match the {} evidence type",
                expected_type.as_str()
            )))
        }
    };

    check_report_data(&report_data, expectations.report_data.as_deref())?;
    expectations.reference.check(&measurements)?;

    Ok(Verdict {
        evidence_type: expected_type,
        measurements,
        report_data: hex::encode(report_data),
        tcb_status: Some(verified.status),
        advisories: verified.advisory_ids,
    })
}

/// Checks the quote's framing (header, body and signature-data lengths) and answers which
/// kind of quote it is.
fn frame_quote(quote: &[u8]) -> Result<EvidenceType, AttestError> {
    let header = quote.get(..HEADER_LEN).ok_or_else(|| {
        AttestError::Truncated(format!(
            "quote of {} bytes is shorter than its {HEADER_LEN}-byte header",
            quote.len()
        ))
    })?;
    let version = u16::from_le_bytes([header[0], header[1]]);
    let tee_type = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let evidence_type = match tee_type {
        TEE_TYPE_SGX => EvidenceType::Sgx,
        TEE_TYPE_TDX => EvidenceType::Tdx,
        other => {
            return Err(AttestError::Malformed(format!(
                "unknown quote TEE type {other:#x}"
            )))
        }
    };
    let body_end = match (version, evidence_type) {
        (3 | 4, EvidenceType::Sgx) => HEADER_LEN + SGX_REPORT_LEN,
        (4, EvidenceType::Tdx) => HEADER_LEN + TD10_REPORT_LEN,
        (5, _) => {
            // Version 5 announces its body: type (u16) and size (u32).
            let descriptor = read_at(quote, HEADER_LEN, 6, "quote body descriptor")?;
            let size =
                u32::from_le_bytes([descriptor[2], descriptor[3], descriptor[4], descriptor[5]]);
            let size = usize::try_from(size)
                .map_err(|_| AttestError::Malformed("quote body size overflows".into()))?;
            (HEADER_LEN + 6)
                .checked_add(size)
                .ok_or_else(|| AttestError::Malformed("quote body size overflows".into()))?
        }
        (version, _) => {
            return Err(AttestError::Malformed(format!(
                "unsupported {} quote version {version}",
                evidence_type.as_str()
            )))
        }
    };
    let length_field = read_at(quote, body_end, 4, "quote signature data length")?;
    let signature_len = u32::from_le_bytes([
        length_field[0],
        length_field[1],
        length_field[2],
        length_field[3],
    ]);
    let total = usize::try_from(signature_len)
        .ok()
        .and_then(|len| (body_end + 4).checked_add(len))
        .ok_or_else(|| AttestError::Malformed("quote signature data length overflows".into()))?;
    if quote.len() < total {
        return Err(AttestError::Truncated(format!(
            "quote declares {total} bytes, {} given",
            quote.len()
        )));
    }
    // Quote generation hands out a fixed-size buffer, so real quotes often end in zero
    // padding; anything else after the declared end is not part of a quote.
    if quote[total..].iter().any(|byte| *byte != 0) {
        return Err(AttestError::Malformed(format!(
            "{} bytes after the quote's declared end are not zero padding",
            quote.len() - total
        )));
    }
    Ok(evidence_type)
}

fn read_at<'a>(
    bytes: &'a [u8],
    offset: usize,
    len: usize,
    what: &str,
) -> Result<&'a [u8], AttestError> {
    offset
        .checked_add(len)
        .and_then(|end| bytes.get(offset..end))
        .ok_or_else(|| {
            AttestError::Truncated(format!(
                "{what} at byte {offset} is past the end of a {}-byte quote",
                bytes.len()
            ))
        })
}

/// Maps a `dcap-qvl` failure (an error chain rendered as text) to a typed error.
///
/// `dcap-qvl` reports failures as `anyhow` chains, so this matches the messages of the checks
/// in its `verify` module. Anything not recognised is a chain/collateral failure: the
/// classification may be coarse after an upgrade, but never turns a failure into a success.
fn classify_error(message: &str, report: &Report) -> AttestError {
    let message_has = |needle: &str| message.contains(needle);
    if message_has("TCB status is invalid: Revoked") {
        return AttestError::TcbRejected(message.to_owned());
    }
    if message_has("No matching TCB level") || message_has("is below minimum required") {
        return AttestError::TcbRejected(message.to_owned());
    }
    if message_has("ISV enclave report signature is invalid")
        || message_has("Signature is invalid for qe_report")
        || message_has("QE report hash mismatch")
        || message_has("Invalid key length")
    {
        return AttestError::BadSignature(message.to_owned());
    }
    const ATTRIBUTE_REFUSALS: [&str; 7] = [
        "Debug mode is enabled",
        "TD profiling is enabled",
        "Reserved bits in TD attributes",
        "TD migration is enabled",
        "SERVTD_EXT is enabled",
        "SEPT_VE_DISABLE is not enabled",
        "Invalid MR service TD",
    ];
    if !message_has("QE report validation failed")
        && ATTRIBUTE_REFUSALS.iter().any(|needle| message_has(needle))
    {
        let (name, got) = match report {
            Report::SgxEnclave(enclave) => ("attributes", hex::encode(enclave.attributes)),
            other => match other.as_td10() {
                Some(td) => ("td_attributes", hex::encode(td.td_attributes)),
                None => ("td_attributes", String::new()),
            },
        };
        return AttestError::WrongMeasurement {
            name: name.into(),
            got: format!("{got} ({message})"),
        };
    }
    if message_has("Failed to decode TcbInfo") || message_has("Failed to decode QeIdentity") {
        return AttestError::Malformed(message.to_owned());
    }
    if message_has("Unsupported DCAP quote version")
        || message_has("Unknown QE vendor ID")
        || message_has("Unsupported TEE type")
        || message_has("must have version")
        || message_has("Unsupported DCAP attestation key type")
        || message_has("Failed to decode quote")
    {
        return AttestError::Malformed(message.to_owned());
    }
    AttestError::BadChain(message.to_owned())
}

fn tdx_measurements(td: &dcap_qvl::quote::TDReport10) -> BTreeMap<String, String> {
    [
        ("mrtd", hex::encode(td.mr_td)),
        ("rtmr0", hex::encode(td.rt_mr0)),
        ("rtmr1", hex::encode(td.rt_mr1)),
        ("rtmr2", hex::encode(td.rt_mr2)),
        ("rtmr3", hex::encode(td.rt_mr3)),
        ("mrseam", hex::encode(td.mr_seam)),
        ("mrsignerseam", hex::encode(td.mr_signer_seam)),
        ("mrconfigid", hex::encode(td.mr_config_id)),
        ("mrowner", hex::encode(td.mr_owner)),
        ("mrownerconfig", hex::encode(td.mr_owner_config)),
        ("td_attributes", hex::encode(td.td_attributes)),
        ("xfam", hex::encode(td.xfam)),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

fn sgx_measurements(enclave: &dcap_qvl::quote::EnclaveReport) -> BTreeMap<String, String> {
    [
        ("mrenclave", hex::encode(enclave.mr_enclave)),
        ("mrsigner", hex::encode(enclave.mr_signer)),
        (
            "isv_prod_id",
            hex::encode(enclave.isv_prod_id.to_be_bytes()),
        ),
        ("isv_svn", hex::encode(enclave.isv_svn.to_be_bytes())),
        ("attributes", hex::encode(enclave.attributes)),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sgx_report() -> Report {
        Report::SgxEnclave(dcap_qvl::quote::EnclaveReport {
            cpu_svn: [0; 16],
            misc_select: 0,
            reserved1: [0; 28],
            attributes: [2; 16],
            mr_enclave: [0; 32],
            reserved2: [0; 32],
            mr_signer: [0; 32],
            reserved3: [0; 96],
            isv_prod_id: 0,
            isv_svn: 0,
            reserved4: [0; 60],
            report_data: [0; 64],
        })
    }

    #[test]
    fn revoked_tcb_is_refused_as_tcb_rejected() {
        let error = classify_error("TCB status is invalid: Revoked", &sgx_report());
        assert_eq!(error.reason(), "tcb_rejected");
    }

    #[test]
    fn signature_and_chain_failures_are_told_apart() {
        let report = sgx_report();
        assert_eq!(
            classify_error("ISV enclave report signature is invalid", &report).reason(),
            "bad_signature"
        );
        assert_eq!(
            classify_error("TCBInfo expired", &report).reason(),
            "bad_chain"
        );
        assert_eq!(
            classify_error("something new in a later release", &report).reason(),
            "bad_chain"
        );
    }

    #[test]
    fn debug_enclaves_are_refused_by_attributes() {
        let error = classify_error("Debug mode is enabled", &sgx_report());
        assert!(
            matches!(error, AttestError::WrongMeasurement { ref name, .. } if name == "attributes")
        );
    }

    #[test]
    fn framing_refuses_short_and_unknown_quotes() {
        assert_eq!(frame_quote(&[0; 10]).unwrap_err().reason(), "truncated");
        let mut header = [0u8; HEADER_LEN];
        header[0] = 3;
        header[4] = 0x42;
        assert_eq!(frame_quote(&header).unwrap_err().reason(), "malformed");
        header[4] = 0;
        assert_eq!(frame_quote(&header).unwrap_err().reason(), "truncated");
        header[0] = 9;
        assert_eq!(frame_quote(&header).unwrap_err().reason(), "malformed");
    }
}
