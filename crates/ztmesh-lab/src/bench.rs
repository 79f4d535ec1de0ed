//! `ztmesh bench`: measurements printed as ratios against a baseline measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use ztmesh_core::{Timestamp, TrustDomain};
use ztmesh_pki::{
    CertificateAuthority, IdentityKey, NodeCertificateRequest, RevocationReason, RevokedEntry,
    Serial, TlsKeyPair,
};
use ztmesh_runtime::tls::{CurrentCertificate, MeshTrust};

/// Options of `ztmesh bench handshake` (the CLI gives the bounds and the defaults).
#[derive(Debug, Clone)]
pub struct HandshakeOptions {
    /// Handshakes per measured round (each verifier runs this many, interleaved in 4 rounds).
    pub iterations: u32,
    /// Revoked serials in the CRL the ztmesh verifier checks against.
    pub revoked: u32,
}

struct Material {
    trust: Arc<MeshTrust>,
    server: Arc<CurrentCertificate>,
    client: Arc<CurrentCertificate>,
    ca_der: Vec<u8>,
}

fn now() -> Timestamp {
    ztmesh_runtime::timefmt::now()
}

fn material(revoked: u32) -> Result<Material> {
    let domain: TrustDomain = "bench.ztmesh.test".parse().map_err(|e| anyhow!("{e}"))?;
    let t = now();
    let ca = CertificateAuthority::generate(domain.clone(), t, Duration::from_secs(3600))?;
    let node = || -> Result<Arc<CurrentCertificate>> {
        let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
        let key = TlsKeyPair::generate()?;
        let csr = key.csr_der(&identity.public().node_id(), &domain)?;
        let issued = ca.issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr,
            identity_key: &identity.public(),
            serial: Serial::random(&mut rand::rngs::OsRng),
            not_before: t.saturating_sub(Duration::from_secs(60)),
            not_after: t.saturating_add(Duration::from_secs(3600)),
        })?;
        Ok(Arc::new(CurrentCertificate::new(
            vec![issued.der],
            &key.to_pkcs8_der(),
        )?))
    };
    let server = node()?;
    let client = node()?;
    let entries: Vec<RevokedEntry> = (0..revoked)
        .map(|_| RevokedEntry {
            serial: Serial::random(&mut rand::rngs::OsRng),
            revoked_at: t,
            reason: RevocationReason::Unspecified,
        })
        .collect();
    let crl = ca.sign_crl(&entries, 1, t, t.saturating_add(Duration::from_secs(3600)))?;
    let trust = Arc::new(MeshTrust::new(ca.cert_der().to_vec(), domain));
    trust.apply_crl(&crl)?;
    Ok(Material {
        trust,
        server,
        client,
        ca_der: ca.cert_der().to_vec(),
    })
}

fn baseline_server_config(m: &Material) -> Result<Arc<rustls::ServerConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(m.ca_der.clone()))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        ztmesh_runtime::tls::provider(),
    )
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(ztmesh_runtime::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(m.server.clone());
    config.alpn_protocols = vec![ztmesh_runtime::tls::ALPN_MESH.to_vec()];
    Ok(Arc::new(config))
}

/// Runs `count` sequential handshakes against a server using `server_config`; returns the time.
async fn measure(
    server_config: Arc<rustls::ServerConfig>,
    client_config: Arc<rustls::ClientConfig>,
    count: u32,
) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let server = tokio::spawn(async move {
        for _ in 0..count {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            // One byte back proves the server accepted the client certificate.
            tls.write_all(b"k").await?;
            tls.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let connector = tokio_rustls::TlsConnector::from(client_config);
    let start = Instant::now();
    for _ in 0..count {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from("mesh.ztmesh.invalid")?;
        let mut tls = connector.connect(name, tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte)
            .await
            .context("server refused the handshake")?;
    }
    let elapsed = start.elapsed();
    server.await??;
    Ok(elapsed)
}

/// `ztmesh bench handshake`.
pub async fn handshake(args: HandshakeOptions) -> Result<()> {
    crate::check_bounds("iterations", args.iterations, 10..=100_000)?;
    crate::check_bounds("revoked", args.revoked, 0..=1_000_000)?;
    let m = material(args.revoked)?;
    let ztmesh_server = ztmesh_runtime::tls::mesh_server_config(m.trust.clone(), m.server.clone())?;
    let baseline_server = baseline_server_config(&m)?;
    let client = ztmesh_runtime::tls::mesh_client_config(m.trust.clone(), m.client.clone())?;
    // Warm-up, then interleaved rounds so drift on a shared machine hits both sides alike.
    measure(ztmesh_server.clone(), client.clone(), 20).await?;
    measure(baseline_server.clone(), client.clone(), 20).await?;
    let per_round = (args.iterations / 2).max(5);
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..2 {
        ours += measure(ztmesh_server.clone(), client.clone(), per_round).await?;
        base += measure(baseline_server.clone(), client.clone(), per_round).await?;
    }
    let total = f64::from(per_round * 2);
    let ours_rate = total / ours.as_secs_f64();
    let base_rate = total / base.as_secs_f64();
    out!(
        "mutual TLS 1.3 handshakes over loopback, {} per verifier, {} revoked serials in the CRL",
        per_round * 2,
        args.revoked
    );
    out!("  rustls WebPkiClientVerifier (baseline): {base_rate:>8.1} handshakes/s");
    out!("  ztmesh MeshPeerVerifier:                {ours_rate:>8.1} handshakes/s");
    out!(
        "  ratio ztmesh / baseline:                {:>8.3}",
        ours_rate / base_rate
    );
    Ok(())
}
