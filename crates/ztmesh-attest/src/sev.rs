//! AMD SEV-SNP attestation reports, verified against the chip's VCEK and AMD's key chain.
//!
//! A report is trusted only when: the VCEK certificate is signed by an ASK that AMD's ARK
//! signed (the Milan, Genoa and Turin ARK/ASK pairs built into the `sev` crate; the ARK is
//! self-signed and pinned by being built in), all three certificates are valid at `now`, the
//! VCEK was issued for this chip (`hwID` = the report's `chip_id`, where the chip id is not
//! masked) and for the TCB the report says signed it (`reported_tcb`), and the VCEK's P-384 key
//! signs the report's first 0x2A0 bytes exactly as received. Guests launched with the DEBUG
//! policy bit are refused: the host can read and change their memory.
//!
//! This module never fetches a VCEK (from AMD's KDS or the host's certificate table) and never
//! reads the clock: the caller brings both.
//!
//! # Measurements
//!
//! All lowercase hex: `measurement` (48 bytes, the launch digest), `host_data` (32),
//! `id_key_digest` and `author_key_digest` (48), `family_id` and `image_id` (16), `chip_id`
//! (64), and as big-endian numbers: `policy` (u64), `guest_svn` and `vmpl` (u32),
//! `reported_tcb`, `current_tcb`, `committed_tcb` and `launch_tcb` (u64, the raw TCB version
//! words), plus `product` (`milan`, `genoa` or `turin`: the one value that is a name, not hex). SNP reports
//! carry no timestamp, so [`Expectations::max_age`] does not apply: freshness comes from the
//! challenge in the report data.

use std::collections::BTreeMap;

use p384::ecdsa::signature::Verifier;
use sev::certs::snp::{builtin, ca, Certificate, Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::evidence::{check_len, check_report_data};
use crate::{
    AttestError, EvidenceType, Expectations, Verdict, MAX_COLLATERAL_LEN, MAX_EVIDENCE_LEN,
};

/// Size of an SNP attestation report (versions 2 to 5).
pub const REPORT_LEN: usize = 0x4A0;
/// The signature covers bytes 0..0x2A0.
const SIGNED_LEN: usize = 0x2A0;
/// Signature algorithm 1: ECDSA P-384 with SHA-384.
const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Guest policy bit 19: the guest may be debugged by the host.
const POLICY_DEBUG: u64 = 1 << 19;

/// The processor generations whose AMD root keys are built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    fn name(self) -> &'static str {
        match self {
            Product::Milan => "milan",
            Product::Genoa => "genoa",
            Product::Turin => "turin",
        }
    }

    fn ca_chain(self) -> std::io::Result<ca::Chain> {
        let (ark, ask) = match self {
            Product::Milan => (builtin::milan::ark()?, builtin::milan::ask()?),
            Product::Genoa => (builtin::genoa::ark()?, builtin::genoa::ask()?),
            Product::Turin => (builtin::turin::ark()?, builtin::turin::ask()?),
        };
        Ok(ca::Chain { ark, ask })
    }
}

/// Verifies an SEV-SNP attestation report (1184 bytes, as the guest's `SNP_GET_REPORT`
/// returns it) with the chip's VCEK certificate (DER or PEM) at `now_unix_secs`.
pub fn verify_snp(
    report: &[u8],
    vcek_der_or_pem: &[u8],
    expectations: &Expectations,
    now_unix_secs: u64,
) -> Result<Verdict, AttestError> {
    check_len("report", report, MAX_EVIDENCE_LEN)?;
    check_len("VCEK certificate", vcek_der_or_pem, MAX_COLLATERAL_LEN)?;
    if report.len() < REPORT_LEN {
        return Err(AttestError::Truncated(format!(
            "SNP report of {} bytes, {REPORT_LEN} expected",
            report.len()
        )));
    }
    if report.len() > REPORT_LEN {
        return Err(AttestError::Malformed(format!(
            "SNP report of {} bytes, {REPORT_LEN} expected",
            report.len()
        )));
    }
    if vcek_der_or_pem.is_empty() {
        return Err(AttestError::MissingCollateral);
    }
    let parsed = AttestationReport::from_bytes(report)
        .map_err(|err| AttestError::Malformed(format!("SNP report: {err}")))?;
    if parsed.sig_algo != SIG_ALGO_ECDSA_P384_SHA384 {
        return Err(AttestError::Malformed(format!(
            "unsupported SNP signature algorithm {}",
            parsed.sig_algo
        )));
    }

    let vcek = if vcek_der_or_pem.starts_with(b"-----BEGIN") {
        Certificate::from_pem(vcek_der_or_pem)
    } else {
        Certificate::from_der(vcek_der_or_pem)
    }
    .map_err(|err| AttestError::Malformed(format!("VCEK certificate: {err}")))?;

    let (product, ca) = find_ca(&vcek)?;
    for (what, certificate) in [("ARK", &ca.ark), ("ASK", &ca.ask), ("VCEK", &vcek)] {
        check_validity(what, certificate, now_unix_secs)?;
    }
    let vcek_der = vcek
        .to_der()
        .map_err(|err| AttestError::Malformed(format!("VCEK certificate: {err}")))?;
    check_vcek_binding(&vcek_der, report, product)?;
    verify_report_signature(report, vcek.public_key_sec1())?;

    let policy = read_u64(report, 0x08);
    if policy & POLICY_DEBUG != 0 {
        return Err(AttestError::WrongMeasurement {
            name: "policy".into(),
            got: format!("{policy:016x} (DEBUG allowed)"),
        });
    }

    let mut measurements: BTreeMap<String, String> = [
        ("measurement", hex::encode(parsed.measurement)),
        ("host_data", hex::encode(parsed.host_data)),
        ("id_key_digest", hex::encode(parsed.id_key_digest)),
        ("author_key_digest", hex::encode(parsed.author_key_digest)),
        ("family_id", hex::encode(parsed.family_id)),
        ("image_id", hex::encode(parsed.image_id)),
        ("chip_id", hex::encode(parsed.chip_id)),
        ("policy", format!("{policy:016x}")),
        ("guest_svn", format!("{:08x}", parsed.guest_svn)),
        ("vmpl", format!("{:08x}", parsed.vmpl)),
        ("current_tcb", format!("{:016x}", read_u64(report, 0x38))),
        ("reported_tcb", format!("{:016x}", read_u64(report, 0x180))),
        ("committed_tcb", format!("{:016x}", read_u64(report, 0x1E0))),
        ("launch_tcb", format!("{:016x}", read_u64(report, 0x1F0))),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    measurements.insert("product".into(), product.name().into());

    check_report_data(&parsed.report_data, expectations.report_data.as_deref())?;
    expectations.reference.check(&measurements)?;

    Ok(Verdict {
        evidence_type: EvidenceType::SevSnp,
        measurements,
        report_data: hex::encode(parsed.report_data),
        tcb_status: None,
        advisories: Vec::new(),
    })
}

/// Finds the built-in ARK/ASK pair that signs this VCEK.
fn find_ca(vcek: &Certificate) -> Result<(Product, ca::Chain), AttestError> {
    for product in [Product::Milan, Product::Genoa, Product::Turin] {
        let ca = product
            .ca_chain()
            .map_err(|err| AttestError::BadChain(format!("built-in AMD keys: {err}")))?;
        let chain = Chain {
            ca,
            vek: vcek.clone(),
        };
        if chain.verify().is_ok() {
            return Ok((product, chain.ca));
        }
    }
    Err(AttestError::BadChain(
        "the VCEK is not signed by the AMD Milan, Genoa or Turin ASK/ARK".into(),
    ))
}

fn check_validity(what: &str, certificate: &Certificate, now: u64) -> Result<(), AttestError> {
    let der = certificate
        .to_der()
        .map_err(|err| AttestError::Malformed(format!("{what} certificate: {err}")))?;
    let (_, parsed) = X509Certificate::from_der(&der)
        .map_err(|err| AttestError::Malformed(format!("{what} certificate: {err}")))?;
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let validity = parsed.validity();
    if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
        return Err(AttestError::BadChain(format!(
            "the {what} certificate is not valid at {now} (valid {} to {})",
            validity.not_before, validity.not_after
        )));
    }
    Ok(())
}

/// AMD's VCEK extensions: the chip (`hwID`) and the TCB components the key was derived for.
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_BOOTLOADER_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_MICROCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";

/// Checks that the VCEK was issued for the chip and the TCB the report names.
fn check_vcek_binding(vcek_der: &[u8], report: &[u8], product: Product) -> Result<(), AttestError> {
    let (_, certificate) = X509Certificate::from_der(vcek_der)
        .map_err(|err| AttestError::Malformed(format!("VCEK certificate: {err}")))?;
    let mut extensions = BTreeMap::new();
    for extension in certificate.extensions() {
        extensions.insert(extension.oid.to_id_string(), extension.value);
    }

    let chip_id = &report[0x1A0..0x1E0];
    if chip_id.iter().any(|byte| *byte != 0) {
        // AMD's KDS puts the raw id in the extension; accept a DER-wrapped one as well.
        let hw_id = extensions
            .get(OID_HW_ID)
            .map(|value| {
                der_octet_string(value)
                    .filter(|inner| inner.len() == 64 || inner.len() == 8)
                    .unwrap_or(value)
            })
            .ok_or_else(|| AttestError::BadChain("the VCEK has no hwID".into()))?;
        // Turin's hwID is 8 bytes: the report's chip id is then zero-extended.
        let matches = hw_id.len() <= chip_id.len()
            && chip_id[..hw_id.len()] == *hw_id
            && chip_id[hw_id.len()..].iter().all(|byte| *byte == 0);
        if !matches {
            return Err(AttestError::BadChain(
                "the VCEK was issued for another chip (hwID != chip_id)".into(),
            ));
        }
    }

    // TCB_VERSION layout: Milan/Genoa [bootloader, tee, 0, 0, 0, 0, snp, microcode],
    // Turin [fmc, bootloader, tee, snp, 0, 0, 0, microcode].
    let tcb = &report[0x180..0x188];
    let expected: &[(&str, u8)] = match product {
        Product::Milan | Product::Genoa => &[
            (OID_BOOTLOADER_SPL, tcb[0]),
            (OID_TEE_SPL, tcb[1]),
            (OID_SNP_SPL, tcb[6]),
            (OID_MICROCODE_SPL, tcb[7]),
        ],
        Product::Turin => &[
            (OID_FMC_SPL, tcb[0]),
            (OID_BOOTLOADER_SPL, tcb[1]),
            (OID_TEE_SPL, tcb[2]),
            (OID_SNP_SPL, tcb[3]),
            (OID_MICROCODE_SPL, tcb[7]),
        ],
    };
    for (oid, reported) in expected {
        let certified = extensions
            .get(*oid)
            .and_then(|value| der_small_integer(value))
            .ok_or_else(|| AttestError::BadChain(format!("the VCEK has no TCB extension {oid}")))?;
        if certified != u64::from(*reported) {
            return Err(AttestError::BadChain(format!(
                "the VCEK was issued for another TCB ({oid}: certified {certified}, reported {reported})"
            )));
        }
    }
    Ok(())
}

/// A DER OCTET STRING with a short-form length.
fn der_octet_string(value: &[u8]) -> Option<&[u8]> {
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => Some(rest),
        _ => None,
    }
}

/// A small non-negative DER INTEGER (at most 8 content bytes).
fn der_small_integer(value: &[u8]) -> Option<u64> {
    match value {
        [0x02, len, rest @ ..]
            if usize::from(*len) == rest.len() && !rest.is_empty() && rest.len() <= 9 =>
        {
            if rest[0] & 0x80 != 0 {
                return None;
            }
            let mut number: u64 = 0;
            for byte in rest {
                number = number.checked_mul(256)? | u64::from(*byte);
            }
            Some(number)
        }
        _ => None,
    }
}

/// Verifies the report signature over the bytes as received (never a re-encoding).
/// The signature holds R and S as 72-byte little-endian numbers, zero beyond 48 bytes.
fn verify_report_signature(report: &[u8], vcek_sec1: &[u8]) -> Result<(), AttestError> {
    let scalar = |offset: usize| -> Result<[u8; 48], AttestError> {
        let little_endian = &report[offset..offset + 72];
        if little_endian[48..].iter().any(|byte| *byte != 0) {
            return Err(AttestError::BadSignature(
                "signature component wider than 48 bytes".into(),
            ));
        }
        let mut big_endian = [0u8; 48];
        for (target, source) in big_endian.iter_mut().zip(little_endian[..48].iter().rev()) {
            *target = *source;
        }
        Ok(big_endian)
    };
    let r = scalar(SIGNED_LEN)?;
    let s = scalar(SIGNED_LEN + 72)?;
    let signature = p384::ecdsa::Signature::from_scalars(r, s)
        .map_err(|err| AttestError::BadSignature(format!("signature: {err}")))?;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(vcek_sec1)
        .map_err(|err| AttestError::BadChain(format!("VCEK public key: {err}")))?;
    key.verify(&report[..SIGNED_LEN], &signature)
        .map_err(|_| AttestError::BadSignature("the VCEK does not sign this report".into()))
}

fn read_u64(report: &[u8], offset: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&report[offset..offset + 8]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_der_values_are_parsed_strictly() {
        assert_eq!(der_small_integer(&[0x02, 0x01, 0x73]), Some(0x73));
        assert_eq!(der_small_integer(&[0x02, 0x02, 0x00, 0xdb]), Some(0xdb));
        assert_eq!(der_small_integer(&[0x02, 0x01, 0x80]), None);
        assert_eq!(der_small_integer(&[0x02, 0x02, 0x01]), None);
        assert_eq!(der_small_integer(&[0x04, 0x01, 0x01]), None);
        assert_eq!(der_octet_string(&[0x04, 0x02, 1, 2]), Some(&[1u8, 2][..]));
        assert_eq!(der_octet_string(&[0x04, 0x03, 1, 2]), None);
    }
}
