//! Per-certificate TLS key pairs (Ed25519) and the CSRs that carry their public keys.

use rcgen::PublicKeyData;
use ztmesh_core::{NodeId, TrustDomain};

use crate::PkiError;

/// A fresh TLS key pair; one per certificate, never reused across rotations.
pub struct TlsKeyPair {
    /// The rcgen key pair (PKCS#8 inside).
    key: rcgen::KeyPair,
}

impl TlsKeyPair {
    /// Generates a fresh Ed25519 key pair.
    pub fn generate() -> Result<Self, PkiError> {
        // rcgen draws from ring's system RNG here; the key never leaves this process.
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map(|key| TlsKeyPair { key })
            .map_err(|e| PkiError::Internal(format!("TLS key generation: {e}")))
    }

    /// From PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, PkiError> {
        let key = rcgen::KeyPair::try_from(der)
            .map_err(|e| PkiError::MalformedKeyFile(format!("TLS key PKCS#8: {e}")))?;
        // Same key types the CA accepts in a CSR; anything else could not be certified anyway.
        let alg = key.algorithm();
        if alg != &rcgen::PKCS_ED25519 && alg != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(PkiError::MalformedKeyFile(
                "TLS key must be Ed25519 or ECDSA P-256".into(),
            ));
        }
        Ok(TlsKeyPair { key })
    }

    /// PKCS#8 DER of the secret key (for the encrypted key file and for rustls).
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.serialize_der())
    }

    /// DER SubjectPublicKeyInfo of the public key.
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    /// A PKCS#10 CSR (DER) signed by this key with subject CN = `node_id` and the node's SPIFFE
    /// URI SAN requested. The CA takes only the public key from it; everything else in the
    /// certificate is set by the CA's profile.
    pub fn csr_der(
        &self,
        node_id: &NodeId,
        trust_domain: &TrustDomain,
    ) -> Result<Vec<u8>, PkiError> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node_id.to_string());
        let uri = rcgen::string::Ia5String::try_from(trust_domain.node_spiffe_id(node_id))
            .map_err(|e| PkiError::Internal(format!("SPIFFE ID: {e}")))?;
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        let csr = params
            .serialize_request(&self.key)
            .map_err(|e| PkiError::Internal(format!("CSR: {e}")))?;
        Ok(csr.der().to_vec())
    }

    /// The underlying rcgen key pair (for signing certificates in tests and for the CA's own
    /// server certificate).
    pub fn rcgen_key(&self) -> &rcgen::KeyPair {
        &self.key
    }
}

use zeroize::Zeroizing;

/// Parses a CSR (DER), verifies its self-signature, and returns the DER SubjectPublicKeyInfo of
/// the key it certifies. Only Ed25519 and ECDSA P-256 keys are accepted.
pub fn csr_public_key(csr_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;

    let (rest, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| PkiError::MalformedCsr(format!("does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(PkiError::MalformedCsr(
            "trailing bytes after the CSR".into(),
        ));
    }
    let spki = &csr.certification_request_info.subject_pki;
    check_tls_key_algorithm(spki).map_err(PkiError::MalformedCsr)?;
    // Proof of possession: the requester holds the secret half of the key it asks us to certify.
    csr.verify_signature()
        .map_err(|e| PkiError::MalformedCsr(format!("self-signature does not verify: {e}")))?;
    Ok(spki.raw.to_vec())
}

/// Accepts the key types ztmesh certifies: Ed25519 (software) and ECDSA P-256 (hardware keys).
pub(crate) fn check_tls_key_algorithm(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<(), String> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ED25519};

    let algorithm = &spki.algorithm;
    if algorithm.algorithm == OID_SIG_ED25519 {
        // RFC 8410 §3: the parameters MUST be absent.
        if algorithm.parameters.is_some() {
            return Err("Ed25519 key with algorithm parameters".into());
        }
        return Ok(());
    }
    if algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
        if curve.as_ref() == Some(&OID_EC_P256) {
            return Ok(());
        }
        return Err("EC key on a curve other than P-256".into());
    }
    Err(format!("unsupported key algorithm {}", algorithm.algorithm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use x509_parser::prelude::FromDer;

    fn node_and_domain() -> (NodeId, TrustDomain) {
        (
            NodeId::from_spki_der(b"identity"),
            "mesh.test".parse().unwrap(),
        )
    }

    #[test]
    fn csr_carries_the_key_cn_and_spiffe_id() {
        let key = TlsKeyPair::generate().unwrap();
        let (node, domain) = node_and_domain();
        let csr = key.csr_der(&node, &domain).unwrap();
        assert_eq!(csr_public_key(&csr).unwrap(), key.public_key_spki_der());

        let (_, parsed) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&csr).unwrap();
        let subject = &parsed.certification_request_info.subject;
        let cn = subject.iter_common_name().next().unwrap().as_str().unwrap();
        assert_eq!(cn, node.to_string());
        let uris: Vec<String> = parsed
            .requested_extensions()
            .unwrap()
            .filter_map(|ext| match ext {
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec![domain.node_spiffe_id(&node)]);
    }

    #[test]
    fn ed25519_spki_is_rfc8410_shaped() {
        let spki = TlsKeyPair::generate().unwrap().public_key_spki_der();
        assert_eq!(spki.len(), 44);
        assert_eq!(hex::encode(&spki[..12]), "302a300506032b6570032100");
    }

    #[test]
    fn pkcs8_round_trip_keeps_the_key() {
        let key = TlsKeyPair::generate().unwrap();
        let back = TlsKeyPair::from_pkcs8_der(&key.to_pkcs8_der()).unwrap();
        assert_eq!(back.public_key_spki_der(), key.public_key_spki_der());
        assert!(matches!(
            TlsKeyPair::from_pkcs8_der(b"junk"),
            Err(PkiError::MalformedKeyFile(_))
        ));
    }

    #[test]
    fn p256_csr_is_accepted_and_p384_refused() {
        let (node, domain) = node_and_domain();
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let p256 = TlsKeyPair::from_pkcs8_der(&p256.serialize_der()).unwrap();
        let csr = p256.csr_der(&node, &domain).unwrap();
        assert_eq!(csr_public_key(&csr).unwrap(), p256.public_key_spki_der());

        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(TlsKeyPair::from_pkcs8_der(&p384.serialize_der()).is_err());
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&p384)
            .unwrap();
        assert!(matches!(
            csr_public_key(csr.der()),
            Err(PkiError::MalformedCsr(_))
        ));
    }

    #[test]
    fn tampered_csr_fails_its_self_signature() {
        let key = TlsKeyPair::generate().unwrap();
        let (node, domain) = node_and_domain();
        let mut csr = key.csr_der(&node, &domain).unwrap();
        // Flip a bit inside the CN (well inside the signed part, so it still parses).
        let cn = node.to_string();
        let at = csr
            .windows(cn.len())
            .position(|w| w == cn.as_bytes())
            .unwrap();
        csr[at] ^= 0x01;
        assert!(matches!(
            csr_public_key(&csr),
            Err(PkiError::MalformedCsr(_))
        ));
        let mut trailing = key.csr_der(&node, &domain).unwrap();
        trailing.push(0);
        assert!(matches!(
            csr_public_key(&trailing),
            Err(PkiError::MalformedCsr(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_csr_is_malformed_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            prop_assert!(matches!(csr_public_key(&bytes), Err(PkiError::MalformedCsr(_))));
        }

        #[test]
        fn mutated_csr_never_panics(index in any::<prop::sample::Index>(), bit in 0u8..8) {
            let key = TlsKeyPair::generate().unwrap();
            let (node, domain) = node_and_domain();
            let mut csr = key.csr_der(&node, &domain).unwrap();
            let i = index.index(csr.len());
            csr[i] ^= 1 << bit;
            // Most flips are refused; a flip in the unsigned outer framing may survive. Never a panic.
            if let Ok(spki) = csr_public_key(&csr) {
                prop_assert_eq!(spki, key.public_key_spki_der());
            }
        }
    }
}
