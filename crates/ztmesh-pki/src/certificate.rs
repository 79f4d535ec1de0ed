//! The node certificate profile, as parsed from DER, and the one verification routine used for
//! every peer certificate.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::oid_registry::{Oid, OID_X509_EXT_SUBJECT_ALT_NAME};
use ztmesh_core::{NodeId, Timestamp, TrustDomain};

use crate::time_conv::from_asn1_time;
use crate::tls_key::check_tls_key_algorithm;
use crate::{IdentityPublicKey, PkiError, RevocationSet, Serial};

/// OID of the non-critical extension that binds the node's identity key into its certificate.
/// extnValue = OCTET STRING containing the DER SubjectPublicKeyInfo of the identity key.
/// (Private arc `1.3.6.1.4.1.59999.7801`, ztmesh; `.1` = identity key.)
pub const IDENTITY_KEY_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7801, 1];

/// What a node certificate says, once parsed and checked against the profile.
#[derive(Debug, Clone)]
pub struct NodeCertificate {
    /// CN, SPIFFE ID path and SHA-256 of the identity key all agree on this id.
    pub node_id: NodeId,
    /// Trust domain of the SPIFFE ID.
    pub trust_domain: TrustDomain,
    /// The bound identity key.
    pub identity_key: IdentityPublicKey,
    /// Serial number.
    pub serial: Serial,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// DER SubjectPublicKeyInfo of the certificate's (TLS) key.
    pub tls_public_key_spki_der: Vec<u8>,
}

impl NodeCertificate {
    /// Parses a DER certificate and checks the node profile (CN, SPIFFE URI SAN, identity key
    /// extension whose NodeId matches, EKU clientAuth+serverAuth, not a CA). Does not check the
    /// signature, validity or revocation: see [`verify_node_certificate`].
    pub fn parse(der: &[u8]) -> Result<Self, PkiError> {
        let malformed = PkiError::MalformedCertificate;
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| malformed(format!("does not parse: {e}")))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes after the certificate".into()));
        }
        if cert.version() != x509_parser::x509::X509Version::V3 {
            return Err(malformed("not an X.509 v3 certificate".into()));
        }

        // Subject CN: exactly one, and it must be a NodeId.
        let mut common_names = cert.subject().iter_common_name();
        let (Some(cn), None) = (common_names.next(), common_names.next()) else {
            return Err(malformed("subject must have exactly one CN".into()));
        };
        let cn = cn
            .as_str()
            .map_err(|_| malformed("subject CN is not a string".into()))?;
        let node_id: NodeId = cn
            .parse()
            .map_err(|e| malformed(format!("subject CN {cn:?} is not a NodeId: {e}")))?;

        // X509-SVID: exactly one URI SAN, the SPIFFE ID, naming the same node.
        let uris = uri_sans(&cert).map_err(malformed)?;
        let [uri] = uris.as_slice() else {
            return Err(malformed(format!(
                "expected exactly one URI SAN, found {}",
                uris.len()
            )));
        };
        let (trust_domain, uri_node_id) = parse_node_spiffe_id(uri).ok_or_else(|| {
            malformed(format!(
                "URI SAN {uri:?} is not spiffe://<trust domain>/node/<NodeId>"
            ))
        })?;
        if uri_node_id != node_id {
            return Err(malformed(format!(
                "SPIFFE ID names {uri_node_id} but the CN is {node_id}"
            )));
        }

        // The identity key binding: the key must hash to the very NodeId the names claim.
        let identity_oid = identity_key_extension_oid();
        let extension = single_extension(&cert, &identity_oid)
            .map_err(malformed)?
            .ok_or_else(|| malformed("identity key extension missing".into()))?;
        let identity_key = IdentityPublicKey::from_spki_der(extension.value)
            .map_err(|e| malformed(format!("identity key extension: {e}")))?;
        if identity_key.node_id() != node_id {
            return Err(malformed(format!(
                "identity key hashes to {} but the certificate names {node_id}",
                identity_key.node_id()
            )));
        }

        // Usable both ways on a mesh link, and never as a CA.
        let eku = cert
            .extended_key_usage()
            .map_err(|e| malformed(format!("extendedKeyUsage: {e}")))?
            .ok_or_else(|| malformed("extendedKeyUsage missing".into()))?;
        if !(eku.value.client_auth && eku.value.server_auth) {
            return Err(malformed(
                "extendedKeyUsage must include clientAuth and serverAuth".into(),
            ));
        }
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| malformed(format!("basicConstraints: {e}")))?
            .is_some_and(|bc| bc.value.ca);
        if is_ca {
            return Err(malformed("a node certificate must not be a CA".into()));
        }

        let tls_key = cert.public_key();
        check_tls_key_algorithm(tls_key).map_err(|e| malformed(format!("TLS key: {e}")))?;
        let validity = cert.validity();
        let not_before = from_asn1_time(validity.not_before)
            .ok_or_else(|| malformed("notBefore before 1970".into()))?;
        let not_after = from_asn1_time(validity.not_after)
            .ok_or_else(|| malformed("notAfter before 1970".into()))?;

        Ok(NodeCertificate {
            node_id,
            trust_domain,
            identity_key,
            serial: Serial::from_bytes(cert.raw_serial()),
            not_before,
            not_after,
            tls_public_key_spki_der: tls_key.raw.to_vec(),
        })
    }
}

/// The full peer check: `cert_der` chains to `ca_cert_der` (webpki, signature and EKU for
/// `usage`), is valid at `now`, follows the node profile in the CA's trust domain, and its serial
/// is not in `revocations`. Returns the parsed certificate.
pub fn verify_node_certificate(
    cert_der: &[u8],
    ca_cert_der: &[u8],
    trust_domain: &TrustDomain,
    revocations: &RevocationSet,
    now: Timestamp,
) -> Result<NodeCertificate, PkiError> {
    let cert = CertificateDer::from(cert_der);
    let end_entity = webpki::EndEntityCert::try_from(&cert)
        .map_err(|e| PkiError::MalformedCertificate(format!("does not parse: {e}")))?;
    let ca_cert = CertificateDer::from(ca_cert_der);
    let anchor = webpki::anchor_from_trusted_cert(&ca_cert).map_err(|e| {
        PkiError::Untrusted(format!("CA certificate unusable as trust anchor: {e}"))
    })?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(now.as_unix_secs()));
    // A mesh link is mutual TLS and either side may have dialled, so the certificate must be
    // good for both purposes. Revocation is not passed to webpki: it comes from `revocations`,
    // which may be newer than any CRL file.
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        end_entity
            .verify_for_usage(
                SUPPORTED_SIGNATURE_ALGORITHMS,
                std::slice::from_ref(&anchor),
                &[],
                time,
                usage,
                None,
                None,
            )
            .map_err(|e| match e {
                webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                    PkiError::Expired
                }
                other => PkiError::Untrusted(other.to_string()),
            })?;
    }

    let parsed = NodeCertificate::parse(cert_der)?;
    if &parsed.trust_domain != trust_domain {
        return Err(PkiError::Untrusted(format!(
            "certificate is for trust domain {} not {trust_domain}",
            parsed.trust_domain
        )));
    }
    if revocations.is_revoked(&parsed.serial) {
        return Err(PkiError::Revoked(parsed.serial.to_hex()));
    }
    Ok(parsed)
}

/// Signature algorithms a mesh CA may use: Ed25519 (the default, software) and ECDSA P-256
/// (a CA key held in hardware).
static SUPPORTED_SIGNATURE_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] =
    &[webpki::ring::ED25519, webpki::ring::ECDSA_P256_SHA256];

/// [`IDENTITY_KEY_EXTENSION_OID`] as an x509-parser OID.
fn identity_key_extension_oid() -> Oid<'static> {
    Oid::from(IDENTITY_KEY_EXTENSION_OID).expect("the identity extension OID is a valid OID")
}

/// The extension with this OID, if present; an error if it appears more than once (RFC 5280
/// §4.2: a certificate MUST NOT include more than one instance of an extension).
pub(crate) fn single_extension<'c, 'a>(
    cert: &'c X509Certificate<'a>,
    oid: &Oid<'_>,
) -> Result<Option<&'c X509Extension<'a>>, String> {
    cert.get_extension_unique(oid)
        .map_err(|_| format!("extension {oid} appears more than once"))
}

/// All URI entries of the subjectAltName extension.
pub(crate) fn uri_sans<'c>(cert: &'c X509Certificate<'_>) -> Result<Vec<&'c str>, String> {
    let Some(extension) = single_extension(cert, &OID_X509_EXT_SUBJECT_ALT_NAME)? else {
        return Ok(Vec::new());
    };
    let ParsedExtension::SubjectAlternativeName(san) = extension.parsed_extension() else {
        return Err("subjectAltName does not parse".into());
    };
    Ok(san
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect())
}

/// Splits `spiffe://<trust domain>/node/<NodeId>`; `None` for anything else (other paths,
/// query, fragment, port, or a non-canonical NodeId).
fn parse_node_spiffe_id(uri: &str) -> Option<(TrustDomain, NodeId)> {
    let (domain, path) = uri.strip_prefix("spiffe://")?.split_once('/')?;
    let node = path.strip_prefix("node/")?;
    Some((domain.parse().ok()?, node.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use crate::{IdentityKey, RevocationReason, RevokedEntry};
    use proptest::prelude::*;
    use rand_core::OsRng;

    fn verify(
        cert: &[u8],
        ca: &crate::CertificateAuthority,
        revocations: &RevocationSet,
        now: Timestamp,
    ) -> Result<NodeCertificate, PkiError> {
        verify_node_certificate(cert, ca.cert_der(), &domain(), revocations, now)
    }

    #[test]
    fn issue_then_parse_round_trip() {
        let ca = ca();
        let node = node(&ca);
        let parsed = NodeCertificate::parse(&node.issued.der).unwrap();
        assert_eq!(parsed.node_id, node.issued.node_id);
        assert_eq!(parsed.trust_domain, domain());
        assert_eq!(parsed.identity_key, node.identity.public());
        assert_eq!(parsed.serial, node.issued.serial);
        assert_eq!(parsed.not_before, node.issued.not_before);
        assert_eq!(parsed.not_after, node.issued.not_after);
        assert_eq!(
            parsed.tls_public_key_spki_der,
            node.tls.public_key_spki_der()
        );
    }

    #[test]
    fn verifies_at_any_instant_of_its_validity() {
        let ca = ca();
        let node = node(&ca);
        let none = RevocationSet::new();
        for now in [node.issued.not_before, NOW, node.issued.not_after] {
            let parsed = verify(&node.issued.der, &ca, &none, now).unwrap();
            assert_eq!(parsed.node_id, node.identity.public().node_id());
        }
    }

    #[test]
    fn another_ca_is_untrusted() {
        let ours = ca();
        let theirs = ca();
        let node = node(&theirs);
        assert!(matches!(
            verify(&node.issued.der, &ours, &RevocationSet::new(), NOW),
            Err(PkiError::Untrusted(_))
        ));
        // Not even the CA certificate itself passes as a node.
        assert!(verify(ours.cert_der(), &ours, &RevocationSet::new(), NOW).is_err());
    }

    #[test]
    fn outside_validity_is_expired() {
        let ca = ca();
        let past = node_valid(&ca, NOW.saturating_sub(2 * DAY), NOW.saturating_sub(DAY));
        assert_eq!(
            verify(&past.issued.der, &ca, &RevocationSet::new(), NOW).unwrap_err(),
            PkiError::Expired
        );
        let node = node(&ca);
        let after = node
            .issued
            .not_after
            .saturating_add(std::time::Duration::from_secs(1));
        assert_eq!(
            verify(&node.issued.der, &ca, &RevocationSet::new(), after).unwrap_err(),
            PkiError::Expired
        );
        let before = node
            .issued
            .not_before
            .saturating_sub(std::time::Duration::from_secs(1));
        assert_eq!(
            verify(&node.issued.der, &ca, &RevocationSet::new(), before).unwrap_err(),
            PkiError::Expired
        );
    }

    #[test]
    fn revoked_serial_is_refused() {
        let ca = ca();
        let node = node(&ca);
        let bystander = crate::test_support::node(&ca);
        let crl = ca
            .sign_crl(
                &[RevokedEntry {
                    serial: node.issued.serial.clone(),
                    revoked_at: NOW,
                    reason: RevocationReason::KeyCompromise,
                }],
                1,
                NOW,
                NOW.saturating_add(DAY),
            )
            .unwrap();
        let mut revocations = RevocationSet::new();
        revocations
            .apply_crl(&crate::Crl::parse_and_verify(&crl, ca.cert_der()).unwrap())
            .unwrap();
        assert_eq!(
            verify(&node.issued.der, &ca, &revocations, NOW).unwrap_err(),
            PkiError::Revoked(node.issued.serial.to_hex())
        );
        verify(&bystander.issued.der, &ca, &revocations, NOW).unwrap();
    }

    #[test]
    fn wrong_trust_domain_is_untrusted() {
        let ca = ca();
        let node = node(&ca);
        let elsewhere: TrustDomain = "other.test".parse().unwrap();
        assert!(matches!(
            verify_node_certificate(
                &node.issued.der,
                ca.cert_der(),
                &elsewhere,
                &RevocationSet::new(),
                NOW
            ),
            Err(PkiError::Untrusted(_))
        ));
    }

    #[test]
    fn garbage_ca_is_untrusted_and_garbage_cert_malformed() {
        let ca = ca();
        let node = node(&ca);
        assert!(matches!(
            verify_node_certificate(
                &node.issued.der,
                b"junk",
                &domain(),
                &RevocationSet::new(),
                NOW
            ),
            Err(PkiError::Untrusted(_))
        ));
        assert!(matches!(
            verify_node_certificate(
                b"junk",
                ca.cert_der(),
                &domain(),
                &RevocationSet::new(),
                NOW
            ),
            Err(PkiError::MalformedCertificate(_))
        ));
    }

    /// Signs a certificate that breaks the profile in one way and checks both `parse` and the
    /// full verification refuse it, although the chain itself is fine.
    fn assert_profile_violation(
        ca: &crate::CertificateAuthority,
        params: &rcgen::CertificateParams,
        why: &str,
    ) {
        let der = sign_with(ca, params);
        let err = NodeCertificate::parse(&der).unwrap_err();
        assert!(
            matches!(err, PkiError::MalformedCertificate(_)),
            "{why}: {err:?}"
        );
        assert!(
            verify(&der, ca, &RevocationSet::new(), NOW).is_err(),
            "{why}"
        );
    }

    #[test]
    fn profile_violations_are_malformed() {
        let ca = ca();
        let identity = IdentityKey::generate(&mut OsRng);
        let other = IdentityKey::generate(&mut OsRng);
        let good = profile_params(&ca, &identity);
        // The unmodified parameters pass, so each failure below is due to its one change.
        let der = sign_with(&ca, &good);
        verify(&der, &ca, &RevocationSet::new(), NOW).unwrap();

        let mut p = good.clone();
        p.custom_extensions.clear();
        assert_profile_violation(&ca, &p, "no identity extension");

        let mut p = good.clone();
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            IDENTITY_KEY_EXTENSION_OID,
            other.public().to_spki_der(),
        )];
        assert_profile_violation(&ca, &p, "identity key of another node");

        let mut p = good.clone();
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            IDENTITY_KEY_EXTENSION_OID,
            vec![4, 0],
        )];
        assert_profile_violation(&ca, &p, "identity extension not an SPKI");

        let mut p = good.clone();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            other.public().node_id().to_string(),
        );
        assert_profile_violation(&ca, &p, "CN of another node");

        let mut p = good.clone();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "not-a-node-id");
        assert_profile_violation(&ca, &p, "CN not a NodeId");

        let mut p = good.clone();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "no CN");
        assert_profile_violation(&ca, &p, "no CN");

        let node_id = identity.public().node_id();
        for uri in [
            format!("spiffe://mesh.test/node/{}", other.public().node_id()),
            format!("spiffe://mesh.test/nodes/{node_id}"),
            format!("spiffe://mesh.test/node/{node_id}/x"),
            format!("spiffe://Mesh.test/node/{node_id}"),
            format!("https://mesh.test/node/{node_id}"),
            format!(
                "spiffe://mesh.test/node/{}",
                node_id.to_string().to_uppercase()
            ),
        ] {
            let mut p = good.clone();
            p.subject_alt_names = vec![rcgen::SanType::URI(
                rcgen::string::Ia5String::try_from(uri.as_str()).unwrap(),
            )];
            assert_profile_violation(&ca, &p, &uri);
        }
        let mut p = good.clone();
        p.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(domain().node_spiffe_id(&node_id)).unwrap(),
        ));
        assert_profile_violation(&ca, &p, "two URI SANs");
        let mut p = good.clone();
        p.subject_alt_names = vec![rcgen::SanType::DnsName("node.example".try_into().unwrap())];
        assert_profile_violation(&ca, &p, "no URI SAN");

        let mut p = good.clone();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        assert_profile_violation(&ca, &p, "serverAuth only");
        let mut p = good.clone();
        p.extended_key_usages.clear();
        assert_profile_violation(&ca, &p, "no EKU");

        let mut p = good.clone();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        assert_profile_violation(&ca, &p, "CA:TRUE");
    }

    #[test]
    fn profile_check_does_not_need_the_ca() {
        // `parse` alone checks the profile, not the chain: a certificate of another CA parses.
        let node = node(&ca());
        assert!(NodeCertificate::parse(&node.issued.der).is_ok());
        let mut trailing = node.issued.der.clone();
        trailing.push(0);
        assert!(matches!(
            NodeCertificate::parse(&trailing),
            Err(PkiError::MalformedCertificate(_))
        ));
    }

    #[test]
    fn tampered_certificate_is_untrusted_or_malformed() {
        let ca = ca();
        let node = node(&ca);
        let cn = node.issued.node_id.to_string();
        let mut der = node.issued.der.clone();
        let at = der
            .windows(cn.len())
            .position(|w| w == cn.as_bytes())
            .unwrap();
        der[at] = if der[at] == b'a' { b'b' } else { b'a' };
        assert!(matches!(
            verify(&der, &ca, &RevocationSet::new(), NOW),
            Err(PkiError::Untrusted(_) | PkiError::MalformedCertificate(_))
        ));
    }

    #[test]
    fn spiffe_id_parser_known_answers() {
        let id = NodeId::from_spki_der(b"abc");
        assert_eq!(
            parse_node_spiffe_id("spiffe://example.org/node/xj4bnp4pahh6uqkbidpf3lrceoyagynd"),
            Some(("example.org".parse().unwrap(), id))
        );
        for bad in [
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://example.org/node/",
            "spiffe://example.org:443/node/xj4bnp4pahh6uqkbidpf3lrceoyagynd",
            "spiffe://example.org/node/xj4bnp4pahh6uqkbidpf3lrceoyagynd?x",
            "spiffe:///node/xj4bnp4pahh6uqkbidpf3lrceoyagynd",
        ] {
            assert_eq!(parse_node_spiffe_id(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            prop_assert!(NodeCertificate::parse(&bytes).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn mutated_certificates_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4)) {
            let ca = ca();
            let node = node(&ca);
            let mut der = node.issued.der.clone();
            for (index, bit) in flips {
                let i = index.index(der.len());
                der[i] ^= 1 << bit;
            }
            let _ = NodeCertificate::parse(&der);
            // Any surviving certificate must still be exactly the one issued.
            if let Ok(parsed) = verify(&der, &ca, &RevocationSet::new(), NOW) {
                prop_assert_eq!(parsed.node_id, node.issued.node_id);
            }
        }
    }
}
