//! Arbitrary bytes into every PKI parser that sees peer input: CSRs, certificates, CRLs,
//! identity keys, tokens, fingerprints. Invariant: typed errors, never a panic; a
//! parsed node certificate names the NodeId of its own identity key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ztmesh_pki::csr_public_key(data);
    if let Ok(cert) = ztmesh_pki::NodeCertificate::parse(data) {
        assert_eq!(cert.node_id, cert.identity_key.node_id());
    }
    let _ = ztmesh_pki::Crl::parse_and_verify(data, data);
    let _ = ztmesh_pki::IdentityPublicKey::from_spki_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ztmesh_pki::EnrollmentToken::parse(text);
        let _ = ztmesh_pki::parse_fingerprint(text);
        let _ = ztmesh_pki::cert_pem_to_der(text);
    }
});
