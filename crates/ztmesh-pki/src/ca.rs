//! The mesh certificate authority: its own certificate, node certificates in the ztmesh profile,
//! TLS server certificates for the CA's HTTPS endpoint, and CRLs.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose,
    PublicKeyData, RevokedCertParams, SanType,
};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use ztmesh_core::{NodeId, Timestamp, TrustDomain};

use crate::certificate::{single_extension, uri_sans};
use crate::time_conv::{to_offset_date_time, truncate_to_secs};
use crate::{
    csr_public_key, IdentityPublicKey, PkiError, RevocationReason, RevokedEntry, Serial,
    TlsKeyPair, IDENTITY_KEY_EXTENSION_OID,
};

/// The public key of a CA certificate (DER) as an envelope signer: what every node uses to check
/// CA-signed gossip (revocation records). Only Ed25519 CAs sign envelopes.
pub fn ca_envelope_key(ca_cert_der: &[u8]) -> Result<IdentityPublicKey, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(ca_cert_der)
        .map_err(|e| PkiError::MalformedCertificate(format!("CA certificate: {e}")))?;
    IdentityPublicKey::from_spki_der(cert.public_key().raw)
}

/// The mesh root CA (Ed25519).
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    key: rcgen::KeyPair,
    cert_der: Vec<u8>,
    /// How to name the CA key in the authority key identifier of its CRLs: its own subject key
    /// identifier, so verifiers can pick the right CA key.
    key_identifier: KeyIdMethod,
}

/// What the CA needs to issue one node certificate. The caller has already checked the token or
/// the rotating node's identity; this only builds and signs.
pub struct NodeCertificateRequest<'a> {
    /// DER PKCS#10 CSR carrying the fresh TLS public key (self-signature verified here).
    pub csr_der: &'a [u8],
    /// The node's identity public key, bound into the certificate.
    pub identity_key: &'a IdentityPublicKey,
    /// Serial drawn by the caller (so the store can record it first).
    pub serial: Serial,
    /// Start of validity. Callers back-date by a minute for clock skew.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
}

/// A freshly signed node certificate and what the store records about it.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// DER of the certificate.
    pub der: Vec<u8>,
    /// Its serial.
    pub serial: Serial,
    /// The NodeId in CN and SAN.
    pub node_id: NodeId,
    /// Start of validity (whole seconds).
    pub not_before: Timestamp,
    /// End of validity (whole seconds).
    pub not_after: Timestamp,
}

impl CertificateAuthority {
    /// Creates a new self-signed root CA certificate, valid from `now - 1 min` for `validity`.
    /// Subject: `CN=ztmesh CA <trust domain>`, `O=ztmesh`; basicConstraints CA:TRUE pathlen 0;
    /// keyUsage keyCertSign + cRLSign; a URI SAN `spiffe://<trust domain>` (the trust domain).
    pub fn generate(
        trust_domain: TrustDomain,
        now: Timestamp,
        validity: Duration,
    ) -> Result<Self, PkiError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| PkiError::Internal(format!("CA key generation: {e}")))?;
        let not_before = now.saturating_sub(CLOCK_SKEW_ALLOWANCE);
        let not_after = not_before.saturating_add(validity);
        let mut params = CertificateParams::default();
        (params.not_before, params.not_after) = validity_window(not_before, not_after)?;
        // No serial given: rcgen derives a positive 20-byte serial from the public key, which is
        // unique per CA key without drawing more randomness here.
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ztmesh CA {trust_domain}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "ztmesh");
        // pathlen 0: this root signs node certificates directly, and nothing it signs may act
        // as a CA (an intermediate, DESIGN §3, would need a root generated without this limit).
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(ia5(format!("spiffe://{trust_domain}"))?)];
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .self_signed(&key)
            .map_err(|e| PkiError::Internal(format!("CA certificate: {e}")))?;
        // Go through the same checks as a reload, so a fresh CA and a reloaded one are the same.
        Self::load(cert.der().to_vec(), key)
    }

    /// Reloads a CA from its certificate DER and its PKCS#8 DER key; checks they match.
    pub fn from_parts(cert_der: &[u8], key_pkcs8_der: &[u8]) -> Result<Self, PkiError> {
        let key = rcgen::KeyPair::try_from(key_pkcs8_der)
            .map_err(|e| PkiError::MalformedKeyFile(format!("CA key PKCS#8: {e}")))?;
        Self::load(cert_der.to_vec(), key)
    }

    /// Checks a CA certificate and key belong together and reads what later signing needs.
    fn load(cert_der: Vec<u8>, key: rcgen::KeyPair) -> Result<Self, PkiError> {
        let malformed =
            |why: String| PkiError::MalformedCertificate(format!("CA certificate: {why}"));
        let (rest, cert) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes".into()));
        }
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| malformed(e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(malformed(
                "not a CA (basicConstraints CA:TRUE missing)".into(),
            ));
        }
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(malformed(
                "the key does not match the certificate's public key".into(),
            ));
        }
        cert.verify_signature(None)
            .map_err(|e| malformed(format!("self-signature does not verify: {e}")))?;
        check_reencodable_name(&cert).map_err(malformed)?;

        let trust_domain = match uri_sans(&cert).map_err(malformed)?.as_slice() {
            [uri] => uri
                .strip_prefix("spiffe://")
                .and_then(|domain| domain.parse::<TrustDomain>().ok())
                .ok_or_else(|| {
                    malformed(format!("URI SAN {uri:?} is not spiffe://<trust domain>"))
                })?,
            _ => return Err(malformed("expected exactly one spiffe:// URI SAN".into())),
        };
        let key_identifier = match single_extension(
            &cert,
            &x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
        )
        .map_err(malformed)?
        .map(|ext| ext.parsed_extension())
        {
            Some(x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id)) => {
                KeyIdMethod::PreSpecified(id.0.to_vec())
            }
            Some(_) => return Err(malformed("subjectKeyIdentifier does not parse".into())),
            None => KeyIdMethod::Sha256,
        };
        let ca = CertificateAuthority {
            trust_domain,
            key,
            cert_der,
            key_identifier,
        };
        // Fail now, not at the first issuance, if rcgen cannot take this certificate as issuer.
        ca.issuer()?;
        Ok(ca)
    }

    /// The rcgen issuer: the CA's subject name, key usages and key, borrowed for one signing.
    /// Rebuilt from the certificate each time so the issuer name in everything we sign is, byte
    /// for byte, the subject name of the certificate verifiers hold.
    pub(crate) fn issuer(&self) -> Result<Issuer<'static, &rcgen::KeyPair>, PkiError> {
        Issuer::from_ca_cert_der(&CertificateDer::from(self.cert_der.as_slice()), &self.key)
            .map_err(|e| PkiError::Internal(format!("CA certificate as issuer: {e}")))
    }

    /// The trust domain this CA issues for (read from its certificate on reload).
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// DER of the CA certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Signs the to-be-signed bytes of a COSE_Sign1 envelope made by the CA (revocation
    /// records). The envelope's external AAD carries the domain label; a Sig_structure can never
    /// parse as a certificate, CSR or CRL body, so these signatures cannot be replayed as those.
    pub fn sign_envelope(&self, to_be_signed: &[u8]) -> Result<[u8; 64], PkiError> {
        use rcgen::SigningKey;
        let signature = self
            .key
            .sign(to_be_signed)
            .map_err(|e| PkiError::Internal(format!("CA envelope signature: {e}")))?;
        signature
            .try_into()
            .map_err(|_| PkiError::Internal("CA envelope signature is not 64 bytes".into()))
    }

    /// The CA's public key as a signer of envelopes; its NodeId names the CA as the origin of
    /// the gossip messages it signs.
    pub fn envelope_key(&self) -> Result<IdentityPublicKey, PkiError> {
        ca_envelope_key(&self.cert_der)
    }

    /// PKCS#8 DER of the CA key; the caller encrypts it before it touches disk.
    pub fn key_pkcs8_der(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(self.key.serialize_der())
    }

    /// Issues a node certificate in the ztmesh profile: subject CN = NodeId, URI SAN
    /// `spiffe://<domain>/node/<NodeId>`, EKU clientAuth + serverAuth, keyUsage digitalSignature,
    /// basicConstraints CA:FALSE, the identity key bound in the
    /// [`crate::IDENTITY_KEY_EXTENSION_OID`] extension, authority/subject key identifiers.
    pub fn issue_node_certificate(
        &self,
        request: &NodeCertificateRequest<'_>,
    ) -> Result<IssuedCertificate, PkiError> {
        // Only the public key is taken from the CSR, after its proof of possession; every other
        // field comes from the profile below, so a requester cannot smuggle in names or usages.
        let tls_spki = csr_public_key(request.csr_der)?;
        let identity_spki = request.identity_key.to_spki_der();
        if tls_spki == identity_spki {
            return Err(PkiError::MalformedCsr(
                "the CSR certifies the identity key; TLS keys must be fresh per certificate".into(),
            ));
        }
        if tls_spki == self.key.subject_public_key_info() {
            return Err(PkiError::MalformedCsr(
                "the CSR certifies the CA key".into(),
            ));
        }
        let subject_key = rcgen::SubjectPublicKeyInfo::from_der(&tls_spki)
            .map_err(|e| PkiError::MalformedCsr(format!("public key: {e}")))?;
        let node_id = request.identity_key.node_id();

        let mut params = end_entity_params(&request.serial, request.not_before, request.not_after)?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_id.to_string());
        params.subject_alt_names = vec![SanType::URI(ia5(self
            .trust_domain
            .node_spiffe_id(&node_id))?)];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        // rcgen writes `content` as the extnValue contents (inside the OCTET STRING), so the
        // identity SPKI goes in as is: extnValue = OCTET STRING { SubjectPublicKeyInfo }.
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            IDENTITY_KEY_EXTENSION_OID,
            identity_spki,
        )];
        let cert = params
            .signed_by(&subject_key, &self.issuer()?)
            .map_err(|e| PkiError::Internal(format!("signing node certificate: {e}")))?;
        Ok(IssuedCertificate {
            der: cert.der().to_vec(),
            serial: request.serial.clone(),
            node_id,
            not_before: truncate_to_secs(request.not_before),
            not_after: truncate_to_secs(request.not_after),
        })
    }

    /// Issues a TLS server certificate for the CA's own HTTPS endpoint with the given DNS names
    /// and IP addresses as SANs (EKU serverAuth).
    pub fn issue_server_certificate(
        &self,
        key: &TlsKeyPair,
        names: &[String],
        serial: Serial,
        not_before: Timestamp,
        not_after: Timestamp,
    ) -> Result<Vec<u8>, PkiError> {
        if names.is_empty() {
            return Err(PkiError::Internal(
                "a server certificate needs at least one name".into(),
            ));
        }
        let mut params = end_entity_params(&serial, not_before, not_after)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "ztmesh CA endpoint");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => ia5(name.clone()).map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(key.rcgen_key(), &self.issuer()?)
            .map_err(|e| PkiError::Internal(format!("signing server certificate: {e}")))?;
        Ok(cert.der().to_vec())
    }

    /// Signs an RFC 5280 v2 CRL listing `entries`, with the CRL number extension and an
    /// authority key identifier; `this_update`/`next_update` as given.
    pub fn sign_crl(
        &self,
        entries: &[RevokedEntry],
        crl_number: u64,
        this_update: Timestamp,
        next_update: Timestamp,
    ) -> Result<Vec<u8>, PkiError> {
        let (this_update, next_update) =
            validity_window(this_update, next_update).map_err(|_| {
                PkiError::InvalidLifetime("CRL nextUpdate must be after thisUpdate".into())
            })?;
        let revoked_certs = entries
            .iter()
            .map(|entry| {
                Ok(RevokedCertParams {
                    serial_number: serial_number(&entry.serial)?,
                    revocation_time: to_offset_date_time(entry.revoked_at)?,
                    reason_code: Some(rcgen_reason(entry.reason)),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.key_identifier.clone(),
        };
        let crl = params
            .signed_by(&self.issuer()?)
            .map_err(|e| PkiError::Internal(format!("signing CRL: {e}")))?;
        Ok(crl.der().to_vec())
    }
}

/// Node certificates start a minute before `now` elsewhere too; the CA's own certificate does
/// the same so that a peer whose clock is a little behind still accepts it.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

/// The fields every end-entity certificate of this CA shares: serial, validity, CA:FALSE with a
/// subject key identifier, digitalSignature, and the authority key identifier.
fn end_entity_params(
    serial: &Serial,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.serial_number = Some(serial_number(serial)?);
    (params.not_before, params.not_after) = validity_window(not_before, not_after)?;
    params.distinguished_name = DistinguishedName::new();
    // ExplicitNoCa writes basicConstraints CA:FALSE and the subject key identifier; plain NoCa
    // would omit both.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    Ok(params)
}

/// Validity bounds in rcgen's type; the end must be after the start once both are truncated to
/// the whole seconds the certificate will carry.
fn validity_window(
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), PkiError> {
    let start = to_offset_date_time(not_before)?;
    let end = to_offset_date_time(not_after)?;
    if end <= start {
        return Err(PkiError::InvalidLifetime(format!(
            "validity ends ({not_after}) at or before it starts ({not_before})"
        )));
    }
    Ok((start, end))
}

/// A serial as rcgen writes it. RFC 5280 §4.1.2.2: a positive INTEGER of at most 20 octets
/// (counting the sign octet DER adds when the top bit is set), and never zero.
fn serial_number(serial: &Serial) -> Result<rcgen::SerialNumber, PkiError> {
    let bytes = serial.as_bytes();
    let encoded_len = bytes.len() + usize::from(bytes.first().is_some_and(|b| b & 0x80 != 0));
    if bytes.is_empty() || encoded_len > 20 {
        return Err(PkiError::Internal(format!(
            "serial {serial} is not a positive integer of at most 20 octets"
        )));
    }
    Ok(rcgen::SerialNumber::from_slice(bytes))
}

fn ia5(text: String) -> Result<rcgen::string::Ia5String, PkiError> {
    rcgen::string::Ia5String::try_from(text.as_str())
        .map_err(|e| PkiError::Internal(format!("{text:?} is not an IA5 string: {e}")))
}

fn rcgen_reason(reason: RevocationReason) -> rcgen::RevocationReason {
    match reason {
        RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
        RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
        RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
    }
}

/// rcgen rebuilds the issuer name from the parsed certificate as a map from attribute type to
/// value, one attribute per RDN. Names outside that shape would be re-encoded differently (and
/// an empty RDN would make rcgen panic), so refuse them at load time.
fn check_reencodable_name(cert: &X509Certificate<'_>) -> Result<(), String> {
    let mut seen = Vec::new();
    for rdn in cert.subject().iter() {
        let [attribute] = rdn.iter().collect::<Vec<_>>()[..] else {
            return Err("subject name has an RDN without exactly one attribute".into());
        };
        let oid = attribute.attr_type().to_id_string();
        if seen.contains(&oid) {
            return Err(format!("subject name repeats attribute {oid}"));
        }
        seen.push(oid);
    }
    if seen.is_empty() {
        return Err("empty subject name".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use crate::{verify_node_certificate, IdentityKey, RevocationSet};
    use rand_core::OsRng;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::oid_registry::{
        OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
        OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
    };

    #[test]
    fn envelope_signatures_verify_with_the_key_read_from_the_ca_certificate() {
        use ed25519_dalek::Verifier;
        let ca = ca();
        let key = ca_envelope_key(ca.cert_der()).unwrap();
        assert_eq!(key, ca.envelope_key().unwrap());
        let signature = ca.sign_envelope(b"Signature1 test").unwrap();
        let signature = ed25519_dalek::Signature::from_bytes(&signature);
        key.verifying_key()
            .verify(b"Signature1 test", &signature)
            .unwrap();
        assert!(key
            .verifying_key()
            .verify(b"Signature1 tesT", &signature)
            .is_err());
        assert!(ca_envelope_key(b"not a certificate").is_err());
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        assert!(rest.is_empty());
        cert
    }

    fn ext<'a>(
        cert: &'a X509Certificate<'a>,
        oid: &x509_parser::oid_registry::Oid<'_>,
    ) -> &'a x509_parser::extensions::X509Extension<'a> {
        cert.get_extension_unique(oid).unwrap().unwrap()
    }

    #[test]
    fn ca_certificate_profile() {
        let ca = ca();
        let cert = parse(ca.cert_der());
        assert_eq!(
            cert.subject().to_string(),
            "CN=ztmesh CA mesh.test, O=ztmesh"
        );
        assert_eq!(cert.issuer().as_raw(), cert.subject().as_raw());
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.digital_signature());
        assert_eq!(uri_sans(&cert).unwrap(), vec!["spiffe://mesh.test"]);
        assert_eq!(cert.validity().not_before.timestamp(), 1_700_000_000 - 60);
        assert_eq!(
            cert.validity().not_after.timestamp(),
            1_700_000_000 - 60 + 365 * 24 * 3600
        );
        assert_eq!(
            cert.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ED25519
        );
        cert.verify_signature(None).unwrap();
        assert!(cert
            .get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
            .unwrap()
            .is_some());
        assert_eq!(ca.trust_domain(), &domain());
    }

    #[test]
    fn from_parts_round_trip_issues_certificates_the_original_verifies() {
        let original = ca();
        let reloaded =
            CertificateAuthority::from_parts(original.cert_der(), &original.key_pkcs8_der())
                .unwrap();
        assert_eq!(reloaded.trust_domain(), original.trust_domain());
        assert_eq!(reloaded.cert_der(), original.cert_der());
        let node = node(&reloaded);
        verify_node_certificate(
            &node.issued.der,
            original.cert_der(),
            &domain(),
            &RevocationSet::new(),
            NOW,
        )
        .unwrap();
        // Issuer name and authority key id are byte-identical to what a fresh CA writes.
        let from_reloaded = parse(&node.issued.der);
        let from_original_node = crate::test_support::node(&original);
        let from_original = parse(&from_original_node.issued.der);
        assert_eq!(
            from_reloaded.issuer().as_raw(),
            from_original.issuer().as_raw()
        );
        assert_eq!(
            ext(&from_reloaded, &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER).value,
            ext(&from_original, &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER).value
        );
    }

    #[test]
    fn from_parts_refuses_a_mismatched_key_or_a_non_ca() {
        let one = ca();
        let other = ca();
        assert!(matches!(
            CertificateAuthority::from_parts(one.cert_der(), &other.key_pkcs8_der()),
            Err(PkiError::MalformedCertificate(_))
        ));
        assert!(matches!(
            CertificateAuthority::from_parts(one.cert_der(), b"not a key"),
            Err(PkiError::MalformedKeyFile(_))
        ));
        assert!(matches!(
            CertificateAuthority::from_parts(b"not a cert", &one.key_pkcs8_der()),
            Err(PkiError::MalformedCertificate(_))
        ));
        // A node certificate with its own key is a matching pair, but not a CA.
        let node = node(&one);
        assert!(matches!(
            CertificateAuthority::from_parts(&node.issued.der, &node.tls.to_pkcs8_der()),
            Err(PkiError::MalformedCertificate(_))
        ));
    }

    #[test]
    fn node_certificate_profile() {
        let ca = ca();
        let not_before = Timestamp::from_unix_millis(1_700_000_000_750);
        let not_after = Timestamp::from_unix_millis(1_700_086_400_250);
        let node = node_valid(&ca, not_before, not_after);
        let issued = &node.issued;
        assert_eq!(issued.node_id, node.identity.public().node_id());
        assert_eq!(issued.not_before, Timestamp::from_unix_secs(1_700_000_000));
        assert_eq!(issued.not_after, Timestamp::from_unix_secs(1_700_086_400));

        let cert = parse(&issued.der);
        let ca_cert = parse(ca.cert_der());
        assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);
        assert_eq!(cert.raw_serial(), issued.serial.as_bytes());
        assert_eq!(cert.validity().not_before.timestamp(), 1_700_000_000);
        assert_eq!(cert.validity().not_after.timestamp(), 1_700_086_400);
        assert_eq!(cert.subject().to_string(), format!("CN={}", issued.node_id));
        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
        assert_eq!(
            cert.public_key().raw,
            node.tls.public_key_spki_der().as_slice()
        );
        assert_eq!(
            uri_sans(&cert).unwrap(),
            vec![format!("spiffe://mesh.test/node/{}", issued.node_id)]
        );

        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.client_auth && eku.value.server_auth);
        assert!(!eku.value.any && eku.value.other.is_empty());
        let ku = ext(&cert, &OID_X509_EXT_KEY_USAGE);
        assert!(ku.critical);
        let ParsedExtension::KeyUsage(ku) = ku.parsed_extension() else {
            panic!()
        };
        assert_eq!(ku.flags, 1, "digitalSignature only");
        let bc = ext(&cert, &OID_X509_EXT_BASIC_CONSTRAINTS);
        let ParsedExtension::BasicConstraints(bc_value) = bc.parsed_extension() else {
            panic!()
        };
        assert!(bc.critical && !bc_value.ca);

        // Key identifiers: AKI names the CA's SKI; the SKI is SHA-256(SPKI)[..20] (RFC 7093 m1).
        let ParsedExtension::SubjectKeyIdentifier(ca_ski) =
            ext(&ca_cert, &OID_X509_EXT_SUBJECT_KEY_IDENTIFIER).parsed_extension()
        else {
            panic!()
        };
        let ParsedExtension::AuthorityKeyIdentifier(aki) =
            ext(&cert, &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER).parsed_extension()
        else {
            panic!()
        };
        assert_eq!(aki.key_identifier.as_ref().unwrap().0, ca_ski.0);
        let ParsedExtension::SubjectKeyIdentifier(ski) =
            ext(&cert, &OID_X509_EXT_SUBJECT_KEY_IDENTIFIER).parsed_extension()
        else {
            panic!()
        };
        use sha2::Digest;
        assert_eq!(
            ski.0,
            &sha2::Sha256::digest(node.tls.public_key_spki_der())[..20]
        );

        // The identity binding: non-critical, extnValue = OCTET STRING { identity SPKI }.
        let oid = x509_parser::oid_registry::Oid::from(IDENTITY_KEY_EXTENSION_OID).unwrap();
        assert_eq!(oid.to_id_string(), "1.3.6.1.4.1.59999.7801.1");
        let identity = ext(&cert, &oid);
        assert!(!identity.critical);
        assert_eq!(
            identity.value,
            node.identity.public().to_spki_der().as_slice()
        );
        assert_eq!(
            cert.extensions().len(),
            7,
            "AKI, SAN, KU, EKU, SKI, BC, identity"
        );
    }

    #[test]
    fn nothing_but_the_key_is_taken_from_the_csr() {
        let ca = ca();
        let identity = IdentityKey::generate(&mut OsRng);
        let tls = TlsKeyPair::generate().unwrap();
        // A greedy CSR: CA:TRUE, a DNS name, a foreign SPIFFE ID and a custom extension.
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "root");
        params
            .subject_alt_names
            .push(SanType::URI(ia5("spiffe://other/node/x".into()).unwrap()));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.custom_extensions =
            vec![CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0])];
        let csr = params.serialize_request(tls.rcgen_key()).unwrap();
        let issued = ca
            .issue_node_certificate(&NodeCertificateRequest {
                csr_der: csr.der(),
                identity_key: &identity.public(),
                serial: Serial::random(&mut OsRng),
                not_before: NOW,
                not_after: NOW.saturating_add(DAY),
            })
            .unwrap();
        let cert = parse(&issued.der);
        assert!(!cert.is_ca());
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::URI(u) => u.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            vec![domain().node_spiffe_id(&identity.public().node_id())]
        );
        assert_eq!(
            cert.subject().to_string(),
            format!("CN={}", identity.public().node_id())
        );
        assert_eq!(cert.extensions().len(), 7);
        crate::NodeCertificate::parse(&issued.der).unwrap();
    }

    fn request<'a>(csr: &'a [u8], identity: &'a IdentityPublicKey) -> NodeCertificateRequest<'a> {
        NodeCertificateRequest {
            csr_der: csr,
            identity_key: identity,
            serial: Serial::random(&mut OsRng),
            not_before: NOW,
            not_after: NOW.saturating_add(DAY),
        }
    }

    #[test]
    fn issuance_refuses_bad_requests() {
        let ca = ca();
        let identity = IdentityKey::generate(&mut OsRng);
        let public = identity.public();
        let tls = TlsKeyPair::generate().unwrap();
        let csr = tls.csr_der(&public.node_id(), &domain()).unwrap();

        let mut backwards = request(&csr, &public);
        backwards.not_after = NOW;
        assert!(matches!(
            ca.issue_node_certificate(&backwards),
            Err(PkiError::InvalidLifetime(_))
        ));
        // Less than a second apart is the same second in the certificate.
        backwards.not_after = NOW.saturating_add(Duration::from_millis(999));
        assert!(matches!(
            ca.issue_node_certificate(&backwards),
            Err(PkiError::InvalidLifetime(_))
        ));
        let mut far = request(&csr, &public);
        far.not_after = Timestamp::from_unix_millis(u64::MAX);
        assert!(matches!(
            ca.issue_node_certificate(&far),
            Err(PkiError::InvalidLifetime(_))
        ));

        let mut zero = request(&csr, &public);
        zero.serial = Serial::from_bytes(&[0, 0]);
        assert!(ca.issue_node_certificate(&zero).is_err());
        let mut long = request(&csr, &public);
        long.serial = Serial::from_bytes(&[0x80; 20]);
        assert!(ca.issue_node_certificate(&long).is_err());
        let mut longest = request(&csr, &public);
        longest.serial = Serial::from_bytes(&[0x7f; 20]);
        assert!(ca.issue_node_certificate(&longest).is_ok());

        assert!(matches!(
            ca.issue_node_certificate(&request(b"garbage", &public)),
            Err(PkiError::MalformedCsr(_))
        ));

        // The identity key itself presented as the TLS key.
        let identity_as_tls = TlsKeyPair::from_pkcs8_der(&identity.to_pkcs8_der()).unwrap();
        let csr = identity_as_tls
            .csr_der(&public.node_id(), &domain())
            .unwrap();
        assert!(matches!(
            ca.issue_node_certificate(&request(&csr, &public)),
            Err(PkiError::MalformedCsr(_))
        ));
    }

    #[test]
    fn p256_tls_keys_are_certified() {
        let ca = ca();
        let identity = IdentityKey::generate(&mut OsRng).public();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let tls = TlsKeyPair::from_pkcs8_der(&key.serialize_der()).unwrap();
        let csr = tls.csr_der(&identity.node_id(), &domain()).unwrap();
        let issued = ca
            .issue_node_certificate(&request(&csr, &identity))
            .unwrap();
        let parsed = verify_node_certificate(
            &issued.der,
            ca.cert_der(),
            &domain(),
            &RevocationSet::new(),
            NOW,
        )
        .unwrap();
        assert_eq!(parsed.tls_public_key_spki_der, tls.public_key_spki_der());
    }

    #[test]
    fn server_certificate_profile() {
        let ca = ca();
        let key = TlsKeyPair::generate().unwrap();
        let names = vec![
            "ca.mesh.test".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let der = ca
            .issue_server_certificate(
                &key,
                &names,
                Serial::random(&mut OsRng),
                NOW,
                NOW.saturating_add(DAY),
            )
            .unwrap();
        let cert = parse(&der);
        assert_eq!(cert.subject().to_string(), "CN=ztmesh CA endpoint");
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && !eku.value.client_auth);
        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(sans[0], GeneralName::DNSName("ca.mesh.test"));
        assert_eq!(sans[1], GeneralName::IPAddress(&[127, 0, 0, 1]));
        assert_eq!(
            sans[2],
            GeneralName::IPAddress(&std::net::Ipv6Addr::LOCALHOST.octets())
        );

        // webpki accepts it as a server certificate for each name.
        let cert_der = CertificateDer::from(der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&cert_der).unwrap();
        let ca_der = CertificateDer::from(ca.cert_der());
        let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
        ee.verify_for_usage(
            &[webpki::ring::ED25519],
            &[anchor],
            &[],
            rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                NOW.as_unix_secs() + 10,
            )),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
        for name in ["ca.mesh.test", "127.0.0.1", "::1"] {
            let server_name = rustls_pki_types::ServerName::try_from(name).unwrap();
            ee.verify_is_valid_for_subject_name(&server_name).unwrap();
        }
        // It is not a node certificate.
        assert!(matches!(
            verify_node_certificate(&der, ca.cert_der(), &domain(), &RevocationSet::new(), NOW),
            Err(PkiError::Untrusted(_))
        ));
        assert!(ca
            .issue_server_certificate(
                &key,
                &[],
                Serial::random(&mut OsRng),
                NOW,
                NOW.saturating_add(DAY)
            )
            .is_err());
    }

    #[test]
    fn reason_codes_map_to_rfc5280_values() {
        assert_eq!(rcgen_reason(RevocationReason::Unspecified) as u8, 0);
        assert_eq!(rcgen_reason(RevocationReason::KeyCompromise) as u8, 1);
        assert_eq!(rcgen_reason(RevocationReason::Superseded) as u8, 4);
        assert_eq!(
            rcgen_reason(RevocationReason::CessationOfOperation) as u8,
            5
        );
    }
}
