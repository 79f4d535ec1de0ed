//! rustls configuration for every TLS endpoint ztmesh runs or dials: mesh links, the node API,
//! the CA API, and the enrollment client that pins the CA by fingerprint.
//!
//! Everything is TLS 1.3 only, with the ring provider. Peer certificates are judged by
//! [`MeshTrust::verify_peer`], which delegates to [`ztmesh_pki::verify_node_certificate`]
//! (chain to the mesh CA + validity + node profile + revocation); the rustls verifier types here
//! only adapt it. Certificates rotate under running configs through [`CurrentCertificate`].

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig,
    SignatureScheme,
};
use ztmesh_core::{Timestamp, TrustDomain};
use ztmesh_pki::{Crl, NodeCertificate, PkiError, RevocationSet, Serial};

/// ALPN protocol id of mesh links.
pub const ALPN_MESH: &[u8] = b"ztmesh/1";

/// The one crypto provider used everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Converts rustls' view of the clock into ours.
pub fn timestamp_of(now: UnixTime) -> Timestamp {
    Timestamp::from_unix_secs(now.as_secs())
}

/// What a node trusts: the mesh CA certificate, its trust domain and the current revocation set.
/// Shared by every verifier of the process; the revocation set is replaced when a newer CRL is
/// verified, and verifiers see the change on their next handshake.
#[derive(Debug)]
pub struct MeshTrust {
    ca_cert_der: Vec<u8>,
    trust_domain: TrustDomain,
    revocations: RwLock<RevocationSet>,
    /// The operator's local deny-list ([`crate::deny_list`]), refused like a revocation.
    denied: RwLock<crate::deny_set::DenySet>,
}

impl MeshTrust {
    /// Trust anchored at `ca_cert_der`, for `trust_domain`, with nothing revoked yet.
    pub fn new(ca_cert_der: Vec<u8>, trust_domain: TrustDomain) -> Self {
        MeshTrust {
            ca_cert_der,
            trust_domain,
            revocations: RwLock::new(RevocationSet::new()),
            denied: RwLock::new(crate::deny_set::DenySet::default()),
        }
    }

    /// Replaces the deny-list in force; verifiers see it on their next handshake.
    pub fn set_denied(&self, denied: crate::deny_set::DenySet) {
        *self.denied.write().unwrap_or_else(|p| p.into_inner()) = denied;
    }

    /// The deny-list in force.
    pub fn denied(&self) -> crate::deny_set::DenySet {
        self.denied
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the operator denied `node` or `serial` on this node.
    pub fn is_denied(&self, node: &ztmesh_core::NodeId, serial: &Serial) -> bool {
        self.denied
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .denies(node, serial)
    }

    /// DER of the mesh CA certificate.
    pub fn ca_cert_der(&self) -> &[u8] {
        &self.ca_cert_der
    }

    /// The mesh trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Full check of a peer's certificate at `now`.
    pub fn verify_peer(
        &self,
        cert_der: &[u8],
        now: Timestamp,
    ) -> Result<NodeCertificate, PkiError> {
        let revocations = self.revocations.read().unwrap_or_else(|p| p.into_inner());
        let certificate = ztmesh_pki::verify_node_certificate(
            cert_der,
            &self.ca_cert_der,
            &self.trust_domain,
            &revocations,
            now,
        )?;
        if self.is_denied(&certificate.node_id, &certificate.serial) {
            return Err(PkiError::Revoked(format!(
                "{} (node {}) is on this node's deny-list",
                certificate.serial.to_hex(),
                certificate.node_id
            )));
        }
        Ok(certificate)
    }

    /// Chain, validity and profile, but not revocation: for servers that answer a revoked client
    /// with a clear 403 instead of a failed handshake.
    pub fn verify_ignoring_revocation(
        &self,
        cert_der: &[u8],
        now: Timestamp,
    ) -> Result<NodeCertificate, PkiError> {
        ztmesh_pki::verify_node_certificate(
            cert_der,
            &self.ca_cert_der,
            &self.trust_domain,
            &RevocationSet::new(),
            now,
        )
    }

    /// Chain, profile and signature as [`Self::verify_ignoring_revocation`], judged at
    /// `min(now, notAfter)`: a certificate past its expiry passes, one not yet valid does not.
    /// Revocation is not checked. Only for the two places an expired certificate may still
    /// identify a node: the CA's `POST /v1/rotate` under its grace (the caller checks how
    /// long ago it expired) and a node's API letting in its own operator. Never for links.
    pub fn verify_ignoring_expiry(
        &self,
        cert_der: &[u8],
        now: Timestamp,
    ) -> Result<NodeCertificate, PkiError> {
        // Parsing first only reads notAfter; the verification below checks everything.
        let claimed = NodeCertificate::parse(cert_der)?;
        self.verify_ignoring_revocation(cert_der, now.min(claimed.not_after))
    }

    /// Verifies a CRL (DER) against the CA and, if it is newer than the one in force, makes it
    /// the revocation set. Returns the CRL and the serials it newly revokes.
    pub fn apply_crl(&self, crl_der: &[u8]) -> Result<(Crl, Vec<Serial>), PkiError> {
        let crl = Crl::parse_and_verify(crl_der, &self.ca_cert_der)?;
        let mut revocations = self.revocations.write().unwrap_or_else(|p| p.into_inner());
        let newly = revocations.apply_crl(&crl)?;
        Ok((crl, newly))
    }

    /// Whether a serial is revoked now.
    pub fn is_revoked(&self, serial: &Serial) -> bool {
        self.revocations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_revoked(serial)
    }

    /// The CRL number in force, and how many serials it revokes.
    pub fn crl_state(&self) -> (Option<u64>, usize) {
        let r = self.revocations.read().unwrap_or_else(|p| p.into_inner());
        (r.crl_number(), r.len())
    }
}

fn to_rustls_error(error: PkiError) -> rustls::Error {
    let kind = match error {
        PkiError::Expired => CertificateError::Expired,
        PkiError::Revoked(_) => CertificateError::Revoked,
        PkiError::Untrusted(_) => CertificateError::UnknownIssuer,
        PkiError::MalformedCertificate(_) => CertificateError::BadEncoding,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(kind)
}

/// Every config here is TLS 1.3 only, so a TLS 1.2 signature check is unreachable; should it
/// ever be reached, refuse rather than trust.
fn refuse_tls12() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// How strictly a server judges client certificates at handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A valid, unrevoked mesh certificate is required to complete the handshake (mesh links).
    Required,
    /// A client certificate is optional and only proof of possession is checked at handshake;
    /// each route then judges it with [`MeshTrust`] and answers 401/403 with a reason (HTTP APIs).
    /// Nothing may trust the certificate before the route has verified it.
    DeferredToRoute,
}

/// The rustls verifier for mesh peers, on both sides of a handshake.
#[derive(Debug)]
pub struct MeshPeerVerifier {
    trust: Arc<MeshTrust>,
    client_auth: ClientAuth,
    algorithms: WebPkiSupportedAlgorithms,
}

impl MeshPeerVerifier {
    /// A verifier over `trust`.
    pub fn new(trust: Arc<MeshTrust>, client_auth: ClientAuth) -> Self {
        MeshPeerVerifier {
            trust,
            client_auth,
            algorithms: algorithms(),
        }
    }
}

impl ClientCertVerifier for MeshPeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.client_auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.client_auth {
            ClientAuth::Required => {
                self.trust
                    .verify_peer(end_entity.as_ref(), timestamp_of(now))
                    .map_err(to_rustls_error)?;
            }
            ClientAuth::DeferredToRoute => {}
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for MeshPeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        // Mesh certificates carry no DNS names: the peer is identified by the NodeId in its
        // verified certificate, which the caller compares with whom it meant to dial.
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.trust
            .verify_peer(end_entity.as_ref(), timestamp_of(now))
            .map_err(to_rustls_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The certificate and key a process presents now. Rotation swaps it in place, so running
/// server and client configs pick up the new certificate on their next handshake while links
/// already up keep going.
#[derive(Debug)]
pub struct CurrentCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CurrentCertificate {
    /// From a certificate chain (leaf first) and the PKCS#8 DER of the leaf's key.
    pub fn new(chain: Vec<Vec<u8>>, key_pkcs8_der: &[u8]) -> Result<Self, rustls::Error> {
        Ok(CurrentCertificate {
            current: RwLock::new(Arc::new(certified_key(chain, key_pkcs8_der)?)),
        })
    }

    /// Replaces the presented certificate.
    pub fn replace(&self, chain: Vec<Vec<u8>>, key_pkcs8_der: &[u8]) -> Result<(), rustls::Error> {
        let key = Arc::new(certified_key(chain, key_pkcs8_der)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }

    /// DER of the leaf certificate presented now.
    pub fn leaf_der(&self) -> Vec<u8> {
        self.get()
            .cert
            .first()
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default()
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn certified_key(chain: Vec<Vec<u8>>, key_pkcs8_der: &[u8]) -> Result<CertifiedKey, rustls::Error> {
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
    let key = provider().key_provider.load_private_key(key_der)?;
    Ok(CertifiedKey::new(
        chain.into_iter().map(CertificateDer::from).collect(),
        key,
    ))
}

impl rustls::server::ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl rustls::client::ResolvesClientCert for CurrentCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Server config for the mesh listener: TLS 1.3, client certificate required and fully
/// verified at handshake, ALPN `ztmesh/1` only.
pub fn mesh_server_config(
    trust: Arc<MeshTrust>,
    cert: Arc<CurrentCertificate>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(MeshPeerVerifier::new(trust, ClientAuth::Required)))
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_MESH.to_vec()];
    // No session resumption: a resumed TLS 1.3 session skips the certificate verifier and
    // replays the peer certificate of the original handshake, so a peer revoked (or rotated)
    // since would complete the handshake. Every mesh handshake verifies the peer afresh.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Client config for dialing mesh peers: TLS 1.3, our certificate, peers verified as mesh members,
/// ALPN `ztmesh/1`.
pub fn mesh_client_config(
    trust: Arc<MeshTrust>,
    cert: Arc<CurrentCertificate>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshPeerVerifier::new(
            trust,
            ClientAuth::Required,
        )))
        .with_client_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_MESH.to_vec()];
    // No resumption (see `mesh_server_config`): always a full handshake with the current
    // certificates on both sides.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Server config for an HTTPS API: TLS 1.3, client certificate optional and judged per route.
pub fn api_server_config(
    trust: Arc<MeshTrust>,
    cert: Arc<CurrentCertificate>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(MeshPeerVerifier::new(
            trust,
            ClientAuth::DeferredToRoute,
        )))
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client config for a node's HTTPS API (from the CA pushing a CRL, or the CLI): the server must
/// present a valid mesh certificate; we present `cert` when given.
pub fn node_api_client_config(
    trust: Arc<MeshTrust>,
    cert: Option<Arc<CurrentCertificate>>,
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshPeerVerifier::new(
            trust,
            ClientAuth::Required,
        )));
    let mut config = match cert {
        Some(cert) => builder.with_client_cert_resolver(cert),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Client config for a node's own CLI talking to its own daemon's API (`ztmesh status`,
/// `ztmesh peers`, the `api.token` commands): the server must present a certificate of this
/// mesh naming `own` (the NodeId in the data directory, the hash of its identity key), whether
/// or not it has expired, so the operator can look at a node whose certificate ran out. Any
/// other node's certificate is refused, expired or not. We present `cert` when given.
pub fn own_node_api_client_config(
    trust: Arc<MeshTrust>,
    own: ztmesh_core::NodeId,
    cert: Option<Arc<CurrentCertificate>>,
) -> Result<ClientConfig, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(OwnNodeVerifier {
            trust,
            own,
            algorithms: algorithms(),
        }));
    let mut config = match cert {
        Some(cert) => builder.with_client_cert_resolver(cert),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Server verifier pinning the node's own identity: chain to the mesh CA and the node profile
/// (expiry forgiven, see [`MeshTrust::verify_ignoring_expiry`]), and the NodeId must be `own`.
#[derive(Debug)]
struct OwnNodeVerifier {
    trust: Arc<MeshTrust>,
    own: ztmesh_core::NodeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for OwnNodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = self
            .trust
            .verify_ignoring_expiry(end_entity.as_ref(), timestamp_of(now))
            .map_err(to_rustls_error)?;
        if cert.node_id != self.own {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PkiError::Untrusted(format!(
                    "the API answering is node {}, not this data directory's node {}",
                    cert.node_id, self.own
                )))),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Client config for the CA's HTTPS API once the CA certificate is known: the server must chain
/// to it (names checked as usual by webpki); we present `cert` when given.
pub fn ca_client_config(
    ca_cert_der: &[u8],
    cert: Option<Arc<CurrentCertificate>>,
) -> Result<ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_cert_der.to_vec()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(cert) => builder.with_client_cert_resolver(cert),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A resumed session carries the client certificate of its first handshake: after a
    // rotation the CA must see the current one.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Client config for first contact with a CA whose certificate we do not have yet: the server's
/// chain must contain a certificate whose SHA-256 fingerprint equals `fingerprint`, and the
/// server certificate must chain to that one. No trust on first use.
pub fn pinned_ca_client_config(fingerprint: String) -> Result<ClientConfig, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
            fingerprint,
            algorithms: algorithms(),
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|c| ztmesh_pki::fingerprint_sha256(c.as_ref()) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                    Arc::new(PkiError::Untrusted(
                        "the server's CA certificate does not match the pinned fingerprint".into(),
                    )),
                )))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pinned.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The verified identity behind a TLS connection, if the client presented a certificate.
/// Servers with [`ClientAuth::DeferredToRoute`] must check it with [`MeshTrust`] before use.
#[derive(Debug, Clone, Default)]
pub struct PresentedCertificate(pub Option<Arc<Vec<u8>>>);
