//! Fixtures shared by the unit tests: a CA, node certificates issued by it, and a way to sign
//! certificates that break the profile on purpose.

use std::time::Duration;

use rand_core::OsRng;
use ztmesh_core::{Timestamp, TrustDomain};

use crate::{
    CertificateAuthority, IdentityKey, IssuedCertificate, NodeCertificateRequest, Serial,
    TlsKeyPair,
};

/// A fixed "now" (2023-11-14T22:13:20Z) so tests do not depend on the clock.
pub(crate) const NOW: Timestamp = Timestamp::from_unix_secs(1_700_000_000);
pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn domain() -> TrustDomain {
    "mesh.test".parse().unwrap()
}

pub(crate) fn ca() -> CertificateAuthority {
    CertificateAuthority::generate(domain(), NOW, 365 * DAY).unwrap()
}

/// A node of `ca`, with a certificate valid `[not_before, not_after)`.
pub(crate) struct TestNode {
    pub identity: IdentityKey,
    pub tls: TlsKeyPair,
    pub issued: IssuedCertificate,
}

pub(crate) fn node_valid(
    ca: &CertificateAuthority,
    not_before: Timestamp,
    not_after: Timestamp,
) -> TestNode {
    let identity = IdentityKey::generate(&mut OsRng);
    let tls = TlsKeyPair::generate().unwrap();
    let csr = tls
        .csr_der(&identity.public().node_id(), ca.trust_domain())
        .unwrap();
    let issued = ca
        .issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr,
            identity_key: &identity.public(),
            serial: Serial::random(&mut OsRng),
            not_before,
            not_after,
        })
        .unwrap();
    TestNode {
        identity,
        tls,
        issued,
    }
}

/// A node certificate valid for a day around [`NOW`].
pub(crate) fn node(ca: &CertificateAuthority) -> TestNode {
    node_valid(
        ca,
        NOW.saturating_sub(Duration::from_secs(60)),
        NOW.saturating_add(DAY),
    )
}

/// rcgen parameters of a well-formed node certificate for `identity`, to be broken by a test
/// and signed with [`sign_with`].
pub(crate) fn profile_params(
    ca: &CertificateAuthority,
    identity: &IdentityKey,
) -> rcgen::CertificateParams {
    let node_id = identity.public().node_id();
    let mut params = rcgen::CertificateParams::default();
    params.serial_number = Some(rcgen::SerialNumber::from(42u64));
    params.not_before =
        time::OffsetDateTime::from_unix_timestamp(NOW.as_unix_secs() as i64 - 60).unwrap();
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(NOW.as_unix_secs() as i64 + 3600).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, node_id.to_string());
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(ca.trust_domain().node_spiffe_id(&node_id)).unwrap(),
    )];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        crate::IDENTITY_KEY_EXTENSION_OID,
        identity.public().to_spki_der(),
    )];
    params
}

/// Signs `params` for a fresh TLS key with the CA key, bypassing the CA's profile.
pub(crate) fn sign_with(ca: &CertificateAuthority, params: &rcgen::CertificateParams) -> Vec<u8> {
    let tls = TlsKeyPair::generate().unwrap();
    params
        .signed_by(tls.rcgen_key(), &ca.issuer().unwrap())
        .unwrap()
        .der()
        .to_vec()
}
