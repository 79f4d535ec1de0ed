//! The ztmesh public-key infrastructure, as pure functions and values: identity keys and their
//! encrypted key files, the mesh CA and its certificate profile, CSRs, CRLs, the revocation set,
//! one-time enrollment tokens and the rotation schedule.
//!
//! Nothing here reads a clock, touches a file or draws randomness on its own: callers pass `now`,
//! bytes and an RNG. Verification of a peer certificate ([`verify_node_certificate`]) is the one
//! place where chain, validity, revocation and identity binding are checked together; the TLS
//! layer only adapts it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ca;
mod certificate;
mod crl;
mod error;
mod identity;
pub mod keyfile;
mod revocation;
mod rotation;
mod serial;
#[cfg(test)]
mod test_support;
mod time_conv;
mod tls_key;
mod token;

pub use ca::{ca_envelope_key, CertificateAuthority, IssuedCertificate, NodeCertificateRequest};
pub use certificate::{verify_node_certificate, NodeCertificate, IDENTITY_KEY_EXTENSION_OID};
pub use crl::{Crl, RevocationReason, RevokedEntry};
pub use error::PkiError;
pub use identity::{IdentityKey, IdentityProofDomain, IdentityPublicKey};
pub use revocation::RevocationSet;
pub use rotation::{renew_at, DEFAULT_CERT_LIFETIME, MIN_CERT_LIFETIME};
pub use serial::Serial;
pub use tls_key::{csr_public_key, TlsKeyPair};
pub use token::{EnrollmentToken, TokenHash};

/// SHA-256 fingerprint of a DER certificate, lowercase hex without separators.
pub fn fingerprint_sha256(cert_der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(cert_der))
}

/// Parses a fingerprint given by a user: 64 hex digits, optionally with `:` separators and an
/// optional `sha256:` / `SHA256:` prefix, any case. Returns lowercase hex without separators.
pub fn parse_fingerprint(text: &str) -> Result<String, PkiError> {
    let text = text.trim();
    // Accept the spellings users paste from `openssl x509 -fingerprint -sha256` and from our own
    // output; the prefix is matched case-insensitively because tools disagree on its case.
    let body = match text.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sha256:") => &text[7..],
        _ => text,
    };
    let digits: String = body.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PkiError::MalformedFingerprint);
    }
    Ok(digits.to_ascii_lowercase())
}

/// PEM-encodes a DER certificate (`-----BEGIN CERTIFICATE-----`).
pub fn cert_der_to_pem(der: &[u8]) -> String {
    // LF line endings: these files are read by openssl and by humans on Unix.
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(PEM_CERTIFICATE, der), config)
}

/// Reads the first `CERTIFICATE` block of a PEM text.
pub fn cert_pem_to_der(pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let blocks = pem::parse_many(pem_text)
        .map_err(|e| PkiError::MalformedCertificate(format!("PEM: {e}")))?;
    blocks
        .into_iter()
        .find(|block| block.tag() == PEM_CERTIFICATE)
        .map(pem::Pem::into_contents)
        .ok_or_else(|| PkiError::MalformedCertificate("no CERTIFICATE block in PEM text".into()))
}

/// PEM label of an X.509 certificate (RFC 7468 §5).
const PEM_CERTIFICATE: &str = "CERTIFICATE";

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256("abc"), FIPS 180-2 appendix B.1.
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn fingerprint_known_answer() {
        assert_eq!(fingerprint_sha256(b"abc"), ABC_SHA256);
    }

    #[test]
    fn fingerprint_spellings_are_accepted() {
        let colons = ABC_SHA256
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        for text in [
            ABC_SHA256.to_string(),
            ABC_SHA256.to_uppercase(),
            format!("sha256:{ABC_SHA256}"),
            format!("SHA256:{colons}"),
            format!("  Sha256:{colons}\n"),
            colons.clone(),
        ] {
            assert_eq!(parse_fingerprint(&text).unwrap(), ABC_SHA256, "{text:?}");
        }
    }

    #[test]
    fn malformed_fingerprints_are_refused() {
        for text in [
            String::new(),
            ABC_SHA256[..62].to_string(),
            format!("{ABC_SHA256}00"),
            format!("sha1:{ABC_SHA256}"),
            ABC_SHA256.replace('b', "g"),
            format!("sha256:sha256:{ABC_SHA256}"),
            format!("{} {}", &ABC_SHA256[..32], &ABC_SHA256[32..]),
            // Multi-byte characters must not confuse the prefix check.
            format!("ééé{ABC_SHA256}"),
        ] {
            assert_eq!(
                parse_fingerprint(&text),
                Err(PkiError::MalformedFingerprint),
                "{text:?}"
            );
        }
    }

    #[test]
    fn pem_round_trip_and_first_certificate_block() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let text = cert_der_to_pem(&der);
        assert_eq!(
            text,
            "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(cert_pem_to_der(&text).unwrap(), der);
        // Other blocks before it are skipped; the first certificate wins.
        let mixed = format!(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{text}{}",
            cert_der_to_pem(&[0x30, 0x00])
        );
        assert_eq!(cert_pem_to_der(&mixed).unwrap(), der);
        assert!(matches!(
            cert_pem_to_der("no pem here"),
            Err(PkiError::MalformedCertificate(_))
        ));
        assert!(matches!(
            cert_pem_to_der("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(PkiError::MalformedCertificate(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn text_inputs_never_panic(text in ".{0,200}") {
            let _ = parse_fingerprint(&text);
            let _ = cert_pem_to_der(&text);
        }
    }
}
