//! Mesh transport end to end: real `ztmesh` processes on loopback, real TLS sockets.
//!
//! What is pinned here (DESIGN §3 Transport):
//! - the mesh listener refuses, at handshake, every client that is not a current mesh member
//!   speaking TLS 1.3 with ALPN `ztmesh/1` (foreign CA, expired, revoked, TLS 1.2, wrong or
//!   missing ALPN, no certificate), and accepts one that is — checked with rustls and with
//!   `openssl s_client` as an external oracle;
//! - revocation closes live links (pushed CRL) and is also learned without a push (CRL refresh);
//! - certificates rotate under live links without dropping them or a heartbeat;
//! - a node restarted after `kill -9` keeps its identity and finds its peers again from state.db;
//! - peers learned over links (peer exchange) complete the mesh without the CA;
//! - `ztmesh run` fails clearly on a wrong/missing passphrase or a bad node.toml;
//! - garbage on an authenticated link closes that link only.
//!
//! A refused TLS 1.3 client sees its handshake "complete" before the server judges its
//! certificate, so refusals are observed as an alert/EOF on the first read — and, to pin *why*
//! the node refused, every refusal test also finds the node's own log line refusing that exact
//! client port ("mesh handshake refused" with the expected reason; for a client without ALPN,
//! which completes TLS, "did not negotiate ALPN").
mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, SupportedProtocolVersion};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use ztmesh_ca::ca_service::{load_ca, CaDir};
use ztmesh_core::link::{LinkMessage, MAX_FRAME_LEN};
use ztmesh_core::{NodeId, Timestamp, TrustDomain};
use ztmesh_node::node_dir::NodeDir;
use ztmesh_node::store::NodeStore;
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::{
    CertificateAuthority, IdentityKey, NodeCertificate, NodeCertificateRequest, Serial, TlsKeyPair,
};
use ztmesh_runtime::tls::{ClientAuth, CurrentCertificate, MeshPeerVerifier, MeshTrust, ALPN_MESH};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Trust domain of every [`TestCa`].
const TRUST_DOMAIN: &str = "test.ztmesh";

/// Generous bound for one TLS dial or one frame read on a loaded 2-core machine.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

fn protection() -> Protection<'static> {
    Protection::Passphrase(PASSPHRASE.as_bytes())
}

fn trust_domain() -> TrustDomain {
    TRUST_DOMAIN.parse().unwrap()
}

fn now() -> Timestamp {
    ztmesh_runtime::timefmt::now()
}

/// A single-threaded tokio runtime for the test's own TLS clients.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A certificate (DER) and the PKCS#8 DER of its TLS key: what a TLS client presents.
struct Credentials {
    cert_der: Vec<u8>,
    key_pkcs8: Vec<u8>,
    node_id: NodeId,
}

/// The current certificate and key of an enrolled node (read from its data directory).
fn node_credentials(node: &TestNode) -> Credentials {
    let (key, cert_der) = NodeDir(node.dir.clone())
        .read_tls(&protection(), false)
        .unwrap();
    let node_id = NodeCertificate::parse(&cert_der).unwrap().node_id;
    Credentials {
        cert_der,
        key_pkcs8: key.to_pkcs8_der().to_vec(),
        node_id,
    }
}

/// The test CA's signing authority, loaded from its directory (the test holds the passphrase).
fn authority(ca: &TestCa) -> CertificateAuthority {
    load_ca(&CaDir(ca.dir.clone()), &protection(), false).unwrap()
}

/// Issues a node certificate in the mesh profile for a fresh identity and TLS key, valid from
/// `not_before` to `not_after` — without going through the CA service, so the validity can be
/// anything (an expired certificate, for instance).
fn mint(ca: &CertificateAuthority, not_before: Timestamp, not_after: Timestamp) -> Credentials {
    let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
    let node_id = identity.public().node_id();
    let key = TlsKeyPair::generate().unwrap();
    let csr = key.csr_der(&node_id, &trust_domain()).unwrap();
    let issued = ca
        .issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr,
            identity_key: &identity.public(),
            serial: Serial::random(&mut rand::rngs::OsRng),
            not_before,
            not_after,
        })
        .unwrap();
    Credentials {
        cert_der: issued.der,
        key_pkcs8: key.to_pkcs8_der().to_vec(),
        node_id,
    }
}

/// A currently valid mesh certificate for a fresh identity.
fn mint_valid(ca: &TestCa) -> Credentials {
    let t = now();
    mint(
        &authority(ca),
        t.saturating_sub(Duration::from_secs(60)),
        t.saturating_add(Duration::from_secs(3600)),
    )
}

/// A TLS client config for probing a node. The node's own certificate is verified against the
/// mesh CA (`trust`), so a failed handshake is never the client refusing the server.
fn client_config(
    trust: &Arc<MeshTrust>,
    credentials: Option<&Credentials>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(ztmesh_runtime::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshPeerVerifier::new(
            trust.clone(),
            ClientAuth::Required,
        )));
    let mut config = match credentials {
        Some(c) => builder.with_client_cert_resolver(Arc::new(
            CurrentCertificate::new(vec![c.cert_der.clone()], &c.key_pkcs8).unwrap(),
        )),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The config a mesh member would use: TLS 1.3, ALPN `ztmesh/1`, the given certificate.
fn member_config(trust: &Arc<MeshTrust>, credentials: &Credentials) -> Arc<ClientConfig> {
    client_config(
        trust,
        Some(credentials),
        &[&rustls::version::TLS13],
        &[ALPN_MESH],
    )
}

fn mesh_trust(ca: &TestCa) -> Arc<MeshTrust> {
    Arc::new(MeshTrust::new(ca.ca_der(), trust_domain()))
}

/// TCP connect + TLS handshake. Returns the client's local address (what the node logs as
/// `remote`) and the handshake outcome as the client sees it.
async fn dial(
    addr: &str,
    config: Arc<ClientConfig>,
) -> (SocketAddr, std::io::Result<TlsStream<TcpStream>>) {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("TCP connect to the node");
    let local = tcp.local_addr().unwrap();
    let name = ServerName::try_from("node.ztmesh.invalid").unwrap();
    let handshake = tokio::time::timeout(IO_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("the TLS handshake neither completed nor failed in time");
    (local, handshake)
}

/// Reads one frame body. `Ok(None)` is a clean or unclean EOF.
async fn read_frame(stream: &mut TlsStream<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    assert!(len <= MAX_FRAME_LEN, "the node sent a frame of {len} bytes");
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// The rustls error inside an I/O error, if any.
fn tls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
}

/// How a refused client saw its refusal.
#[derive(Debug)]
struct Refusal {
    /// The client's local address (the node logs it as `remote`).
    local: SocketAddr,
    /// The fatal alert received, if the refusal came as one (rather than a bare EOF/reset).
    alert: Option<AlertDescription>,
    detail: String,
}

/// Dials `addr` with `config` and requires a refusal: a failed handshake, or an error/EOF on
/// the first read — never a frame. Panics if the client itself refused the node.
fn expect_refusal(addr: &str, config: Arc<ClientConfig>) -> Refusal {
    runtime().block_on(async {
        let (local, handshake) = dial(addr, config).await;
        let error = match handshake {
            Err(e) => e,
            Ok(mut stream) => match tokio::time::timeout(IO_TIMEOUT, read_frame(&mut stream))
                .await
                .expect("a refused client must see an error or EOF, not silence")
            {
                Ok(Some(body)) => panic!(
                    "the node accepted the client: it sent a frame ({:?})",
                    LinkMessage::from_body(&body)
                ),
                Ok(None) => {
                    return Refusal {
                        local,
                        alert: None,
                        detail: "EOF".into(),
                    }
                }
                Err(e) => e,
            },
        };
        let alert = match tls_error(&error) {
            Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
            Some(
                local_judgement @ (rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented),
            ) => panic!(
                "the test client refused the node, not the other way round: {local_judgement}"
            ),
            _ => None,
        };
        Refusal {
            local,
            alert,
            detail: error.to_string(),
        }
    })
}

/// Dials as a mesh member and returns the open link after reading the node's first frame,
/// which must be a Hello announcing the node's mesh listener.
async fn open_link(
    node: &TestNode,
    config: Arc<ClientConfig>,
) -> (SocketAddr, TlsStream<TcpStream>) {
    let addr = node.mesh_addr();
    let (local, handshake) = dial(&addr, config).await;
    let mut stream = handshake.expect("a valid member completes the handshake");
    let body = tokio::time::timeout(IO_TIMEOUT, read_frame(&mut stream))
        .await
        .expect("the node sends a frame promptly")
        .expect("reading the first frame")
        .expect("the node closed an accepted link");
    match LinkMessage::from_body(&body).expect("the first frame is a link message") {
        LinkMessage::Hello {
            version,
            listen_addr,
        } => {
            assert_eq!(version, ztmesh_node::daemon::PROTOCOL_VERSION);
            assert_eq!(listen_addr.as_deref(), Some(addr.as_str()));
        }
        other => panic!("the first frame must be Hello, got {other:?}"),
    }
    (local, stream)
}

/// Removes ANSI colour codes (tracing's formatter writes them even to files).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte (0x40..=0x7e)
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The node's log so far, without colour codes.
fn node_log(node: &TestNode) -> String {
    strip_ansi(&std::fs::read_to_string(node.dir.join("run.log")).unwrap_or_default())
}

fn ca_log(ca: &TestCa) -> String {
    strip_ansi(&std::fs::read_to_string(ca.dir.join("serve.log")).unwrap_or_default())
}

/// Waits until one line of the node's log contains every needle.
fn wait_log_line(node: &TestNode, needles: &[&str], timeout: Duration) -> String {
    let mut found = String::new();
    wait_until(
        &format!("a log line of {} with {needles:?}", node.name),
        timeout,
        || {
            if let Some(line) = node_log(node)
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                found = line.to_owned();
                true
            } else {
                false
            }
        },
    );
    found
}

/// Checks a refusal end to end: the alert (when the client got one) is `expected_alert`, and
/// the node logged the refusal of this very connection with `reason` in it.
fn assert_refused(
    node: &TestNode,
    refusal: &Refusal,
    expected_alert: AlertDescription,
    reason: &str,
) {
    if let Some(alert) = refusal.alert {
        assert_eq!(alert, expected_alert, "alert received ({})", refusal.detail);
    }
    let remote = format!("remote={}", refusal.local);
    wait_log_line(
        node,
        &["mesh handshake refused", &remote, reason],
        Duration::from_secs(10),
    );
}

/// The node's view of its link to `peer` (`ztmesh peers --json` entry), if it knows the peer.
fn peer_entry(node: &TestNode, peer: &str) -> Option<Value> {
    node.peers()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == peer)
        .cloned()
}

/// The id of the link `node` has up to `peer` (panics if none).
fn link_id(node: &TestNode, peer: &str) -> u64 {
    peer_entry(node, peer)
        .and_then(|p| p["link_id"].as_u64())
        .unwrap_or_else(|| panic!("{} has no link to {peer}", node.name))
}

fn crl_number(node: &TestNode) -> u64 {
    node.status()["status"]["crl_number"].as_u64().unwrap_or(0)
}

fn pid(node: &TestNode) -> u32 {
    node.proc.as_ref().expect("node running").child.id()
}

/// Sends a signal with the `kill` utility (SIGSTOP/SIGCONT).
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Runs a command to completion with a deadline (kills it and panics on timeout).
fn output_within(mut command: Command, timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{command:?} still running after {timeout:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Whether `openssl` can be used; when it cannot, tests skip their openssl part (and fail on CI).
fn have_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is required on CI (external oracle for TLS)"
        );
        eprintln!("SKIP: openssl not found; the openssl checks of this test are skipped");
    }
    found
}

fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A CA and one running node, plus what a test client needs to verify that node.
struct OneNode {
    root: tempfile::TempDir,
    ca: TestCa,
    node: TestNode,
    trust: Arc<MeshTrust>,
}

fn one_node() -> OneNode {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut node = ca.enroll(root.path(), "target");
    node.start();
    let trust = mesh_trust(&ca);
    OneNode {
        root,
        ca,
        node,
        trust,
    }
}

/// Starts every node and waits for the full mesh.
fn start_mesh(nodes: &mut [&mut TestNode]) {
    for n in nodes.iter_mut() {
        n.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().map(|n| &**n).collect();
    wait_full_mesh(&refs, Duration::from_secs(60));
}

fn set_bootstrap(dir: &Path, peers: &[String]) {
    let dir = NodeDir(dir.to_path_buf());
    let mut config = dir.read_config().unwrap();
    config.bootstrap_peers = peers.to_vec();
    dir.write_config(&config).unwrap();
}

/// `ztmesh run` for `dir` with a custom environment; it must exit (non-zero) on its own.
fn run_must_fail(dir: &Path, passphrase: Option<&str>) -> (bool, String) {
    let mut command = Command::new(bin());
    command
        .args(["run", "--data-dir", dir.to_str().unwrap()])
        .env_remove("ZTMESH_PASSPHRASE");
    if let Some(p) = passphrase {
        command.env("ZTMESH_PASSPHRASE", p);
    }
    let out = output_within(command, Duration::from_secs(60));
    (out.status.success(), combined(&out))
}

// ---------------------------------------------------------------------------------------------
// 1. Handshake: who the mesh listener accepts and refuses
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_accepts_a_member_with_alpn_and_sends_hello_first() {
    let f = one_node();
    let member = mint_valid(&f.ca);
    runtime().block_on(async {
        let (_, _stream) = open_link(&f.node, member_config(&f.trust, &member)).await;
    });
    wait_log_line(
        &f.node,
        &["link up", &format!("peer={}", member.node_id)],
        Duration::from_secs(10),
    );
}

#[test]
fn handshake_refuses_a_certificate_from_another_ca() {
    let f = one_node();
    let other_root = f.root.path().join("other");
    std::fs::create_dir_all(&other_root).unwrap();
    let other_ca = TestCa::start(&other_root, &[]);
    let foreign = other_ca.enroll(&other_root, "foreign");
    let credentials = node_credentials(&foreign);
    let refusal = expect_refusal(&f.node.mesh_addr(), member_config(&f.trust, &credentials));
    assert_refused(
        &f.node,
        &refusal,
        AlertDescription::UnknownCA,
        "invalid peer certificate: UnknownIssuer",
    );
}

#[test]
fn handshake_refuses_an_expired_certificate() {
    let f = one_node();
    let t = now();
    let expired = mint(
        &authority(&f.ca),
        t.saturating_sub(Duration::from_secs(7200)),
        t.saturating_sub(Duration::from_secs(3600)),
    );
    let refusal = expect_refusal(&f.node.mesh_addr(), member_config(&f.trust, &expired));
    assert_refused(
        &f.node,
        &refusal,
        AlertDescription::CertificateExpired,
        "invalid peer certificate: Expired",
    );
}

#[test]
fn handshake_refuses_a_revoked_certificate_once_the_crl_arrives() {
    let f = one_node();
    let victim = f.ca.enroll(f.root.path(), "victim");
    let credentials = node_credentials(&victim);
    // One client config for both dials: it caches TLS sessions, so the second dial would resume
    // the first session if the node allowed it — and a resumed session skips certificate
    // verification. The refusal must still come from the handshake.
    let config = member_config(&f.trust, &credentials);
    // Control: the same certificate is accepted before the revocation.
    runtime().block_on(async {
        open_link(&f.node, config.clone()).await;
    });
    let before = crl_number(&f.node);
    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        f.ca.dir.to_str().unwrap(),
        "--node-id",
        &victim.node_id,
    ]);
    wait_until(
        "the node to apply the new CRL",
        Duration::from_secs(30),
        || crl_number(&f.node) > before,
    );
    assert_eq!(f.node.status()["status"]["revoked_serials"], 1);
    let refusal = expect_refusal(&f.node.mesh_addr(), config);
    assert_refused(
        &f.node,
        &refusal,
        AlertDescription::CertificateRevoked,
        "invalid peer certificate: Revoked",
    );
}

#[test]
fn handshake_refuses_tls12_clients_rustls_and_openssl() {
    let f = one_node();
    let member = mint_valid(&f.ca);
    let tls12 = client_config(
        &f.trust,
        Some(&member),
        &[&rustls::version::TLS12],
        &[ALPN_MESH],
    );
    let refusal = expect_refusal(&f.node.mesh_addr(), tls12);
    assert_refused(
        &f.node,
        &refusal,
        AlertDescription::ProtocolVersion,
        "peer is incompatible",
    );

    if !have_openssl() {
        return;
    }
    let mut command = Command::new("openssl");
    command.args(["s_client", "-tls1_2", "-connect", &f.node.mesh_addr()]);
    let out = output_within(command, Duration::from_secs(60));
    let text = combined(&out);
    assert!(
        !out.status.success(),
        "openssl completed a TLS 1.2 handshake:\n{text}"
    );
    assert!(
        text.contains("alert protocol version") || text.contains("no protocols available"),
        "openssl should report a protocol version refusal:\n{text}"
    );
    assert!(
        !text.contains("Cipher is ECDHE") && !text.contains("Cipher    : ECDHE"),
        "openssl negotiated a TLS 1.2 cipher:\n{text}"
    );
}

#[test]
fn handshake_refuses_a_client_offering_only_another_alpn() {
    let f = one_node();
    let member = mint_valid(&f.ca);
    let h2 = client_config(
        &f.trust,
        Some(&member),
        &[&rustls::version::TLS13],
        &[b"h2"],
    );
    let refusal = expect_refusal(&f.node.mesh_addr(), h2);
    // rustls answers a ClientHello without a common protocol with no_application_protocol, so
    // here the alert is certain (it precedes anything the client could misread).
    assert_eq!(
        refusal.alert,
        Some(AlertDescription::NoApplicationProtocol),
        "{refusal:?}"
    );
    assert_refused(
        &f.node,
        &refusal,
        AlertDescription::NoApplicationProtocol,
        "peer doesn't support any known protocol",
    );
}

#[test]
fn handshake_without_alpn_is_closed_before_any_frame() {
    let f = one_node();
    let member = mint_valid(&f.ca);
    let no_alpn = client_config(&f.trust, Some(&member), &[&rustls::version::TLS13], &[]);
    let refusal = expect_refusal(&f.node.mesh_addr(), no_alpn);
    // The TLS handshake itself succeeds (the certificate is valid); the node then drops the
    // connection because ALPN ztmesh/1 was not negotiated.
    wait_log_line(
        &f.node,
        &[
            "did not negotiate ALPN",
            &format!("remote={}", refusal.local),
        ],
        Duration::from_secs(10),
    );
    assert!(
        !node_log(&f.node).contains(&format!("peer={}", member.node_id)),
        "no link may come up for a client without ALPN"
    );
}

#[test]
fn handshake_refuses_a_client_without_certificate() {
    let f = one_node();
    let anonymous = client_config(&f.trust, None, &[&rustls::version::TLS13], &[ALPN_MESH]);
    let refusal = expect_refusal(&f.node.mesh_addr(), anonymous);
    assert_refused(
        &f.node,
        &refusal,
        AlertDescription::CertificateRequired,
        "peer sent no certificates",
    );
}

/// openssl as a mesh member: a key made by openssl, a CSR made by openssl, the certificate
/// issued by the mesh CA; s_client must complete TLS 1.3 with ALPN ztmesh/1, verify the node's
/// certificate against ca.pem, and the node must bring the link up for that identity.
#[test]
fn handshake_openssl_s_client_with_a_mesh_certificate_links_up() {
    if !have_openssl() {
        return;
    }
    let f = one_node();
    let work = f.root.path().join("openssl");
    std::fs::create_dir_all(&work).unwrap();
    let key_pem = work.join("key.pem");
    let csr_der_path = work.join("csr.der");
    let cert_pem = work.join("cert.pem");
    let openssl = |args: &[&str]| {
        let mut command = Command::new("openssl");
        command.args(args);
        let out = output_within(command, Duration::from_secs(60));
        assert!(out.status.success(), "openssl {args:?}: {}", combined(&out));
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        key_pem.to_str().unwrap(),
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        key_pem.to_str().unwrap(),
        "-subj",
        "/CN=openssl-member",
        "-outform",
        "DER",
        "-out",
        csr_der_path.to_str().unwrap(),
    ]);
    let csr = std::fs::read(&csr_der_path).unwrap();
    let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
    let node_id = identity.public().node_id();
    let t = now();
    let issued = authority(&f.ca)
        .issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr,
            identity_key: &identity.public(),
            serial: Serial::random(&mut rand::rngs::OsRng),
            not_before: t.saturating_sub(Duration::from_secs(60)),
            not_after: t.saturating_add(Duration::from_secs(3600)),
        })
        .unwrap();
    std::fs::write(&cert_pem, ztmesh_pki::cert_der_to_pem(&issued.der)).unwrap();

    let out_path = work.join("s_client.out");
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_3",
            "-alpn",
            "ztmesh/1",
            "-cert",
            cert_pem.to_str().unwrap(),
            "-key",
            key_pem.to_str().unwrap(),
            "-CAfile",
            f.ca.dir.join("ca.pem").to_str().unwrap(),
            "-verify_return_error",
            "-connect",
            &f.node.mesh_addr(),
        ])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = wait_log_line(
        &f.node,
        &["link up", &format!("peer={node_id}")],
        Duration::from_secs(30),
    );
    assert!(line.contains("direction=\"inbound\""), "{line}");
    // EOF on stdin makes s_client close the connection and exit, flushing its report.
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("openssl s_client did not exit after stdin EOF");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The report includes the raw bytes the node sent (its Hello frame), hence lossy.
    let report = String::from_utf8_lossy(&std::fs::read(&out_path).unwrap()).into_owned();
    assert!(report.contains("ALPN protocol: ztmesh/1"), "{report}");
    assert!(report.contains("TLSv1.3"), "{report}");
    assert!(report.contains("Verify return code: 0 (ok)"), "{report}");
    assert!(
        report.contains("listen_addr"),
        "openssl should have received the node's Hello frame:\n{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2–3. Revocation
// ---------------------------------------------------------------------------------------------

/// A pushed CRL closes live links to the revoked node at once; it cannot link again; links
/// between the others are untouched.
#[test]
fn revocation_push_closes_live_links_and_blocks_relinking() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    let mut c = ca.enroll(root.path(), "c");
    start_mesh(&mut [&mut a, &mut b, &mut c]);
    let ab = link_id(&a, &b.node_id);
    let ba = link_id(&b, &a.node_id);

    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--node-id",
        &c.node_id,
    ]);
    wait_until(
        "A and B to drop their links to C",
        Duration::from_secs(20),
        || !a.connected_to(&c.node_id) && !b.connected_to(&c.node_id),
    );
    for n in [&a, &b] {
        let line = wait_log_line(
            n,
            &[
                "closing link to revoked peer",
                &format!("peer={}", c.node_id),
            ],
            Duration::from_secs(10),
        );
        assert!(line.contains("WARN"), "{line}");
    }

    // C hears of its own revocation (the CA-signed record reaches it too), says so, and
    // stops dialing; a handshake it might still attempt is refused (see the handshake tests).
    wait_until("C to know it is revoked", Duration::from_secs(30), || {
        c.status()["status"]["self_revoked"] == true
    });
    let window = Instant::now() + Duration::from_secs(10);
    while Instant::now() < window {
        assert!(!a.connected_to(&c.node_id), "C re-linked with A");
        assert!(!b.connected_to(&c.node_id), "C re-linked with B");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(link_id(&a, &b.node_id), ab, "the A–B link must stay up");
    assert_eq!(link_id(&b, &a.node_id), ba, "the B–A link must stay up");
    // The revoked peer disappears from the peer lists too.
    assert!(peer_entry(&a, &c.node_id).is_none());
    assert!(peer_entry(&b, &c.node_id).is_none());
}

/// A running node that misses the CA's push learns the revocation at its next CRL refresh.
///
/// How the push is made to miss: node A is frozen with SIGSTOP while C is revoked. The CA's
/// push to A connects (the kernel accepts) but gets no TLS answer and times out; the test waits
/// for the CA's own "CRL push failed" line for A, so the push attempt is over and nothing of it
/// can arrive later. Then A is resumed (SIGCONT): the CA never pushes again, revocations are not
/// gossiped yet, so the only way A can learn the new CRL is its refresh loop
/// (`crl_refresh_secs = 2`) fetching `GET /v1/crl` — which this test then observes.
#[test]
fn revocation_without_push_is_learned_by_crl_refresh() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    let mut c = ca.enroll(root.path(), "c");
    set_config(&a.dir, "crl_refresh_secs", "2");
    start_mesh(&mut [&mut a, &mut b, &mut c]);
    let before = crl_number(&a);

    signal(pid(&a), "-STOP");
    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--node-id",
        &c.node_id,
    ]);
    wait_until(
        "the CA's CRL push to the frozen node A to fail",
        Duration::from_secs(60),
        || {
            ca_log(&ca)
                .lines()
                .any(|l| l.contains("CRL push failed") && l.contains(&a.node_id))
        },
    );
    // B got the push (control: the revocation is real and pushed where possible).
    wait_until("B to apply the pushed CRL", Duration::from_secs(30), || {
        crl_number(&b) > before
    });
    signal(pid(&a), "-CONT");

    wait_until(
        "A to fetch the new CRL by refresh",
        Duration::from_secs(30),
        || crl_number(&a) > before,
    );
    wait_until("A to drop C", Duration::from_secs(20), || {
        !a.connected_to(&c.node_id)
    });
    wait_until(
        "A to refuse a handshake from C as revoked",
        Duration::from_secs(30),
        || node_log(&a).contains("invalid peer certificate: Revoked"),
    );
    let window = Instant::now() + Duration::from_secs(10);
    while Instant::now() < window {
        assert!(!a.connected_to(&c.node_id), "C re-linked with A");
        std::thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Rotation under live links
// ---------------------------------------------------------------------------------------------

/// Certificates of 60 s (plus the CA's 60 s back-dating) renew every ~20 s. Three rotations on
/// each side must happen under the same TLS sessions: link ids unchanged, no heartbeat lost,
/// heartbeats flowing throughout, and the new certificate installed on disk and valid for
/// openssl.
#[test]
fn rotation_keeps_links_and_heartbeats() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &["--cert-lifetime", "60s"]);
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    start_mesh(&mut [&mut a, &mut b]);
    let serial_a = a.status()["status"]["certificate_serial"].clone();
    let serial_b = b.status()["status"]["certificate_serial"].clone();
    let ab = link_id(&a, &b.node_id);
    let ba = link_id(&b, &a.node_id);

    let mut samples: Vec<(u64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let view_ab = peer_entry(&a, &b.node_id).expect("A knows B");
        let view_ba = peer_entry(&b, &a.node_id).expect("B knows A");
        assert_eq!(
            view_ab["link_id"].as_u64(),
            Some(ab),
            "A's link to B was replaced"
        );
        assert_eq!(
            view_ba["link_id"].as_u64(),
            Some(ba),
            "B's link to A was replaced"
        );
        assert_eq!(view_ab["heartbeat_gaps"], 0, "A lost heartbeats: {view_ab}");
        assert_eq!(view_ba["heartbeat_gaps"], 0, "B lost heartbeats: {view_ba}");
        let sample = (
            view_ab["heartbeats_received"].as_u64().unwrap(),
            view_ba["heartbeats_received"].as_u64().unwrap(),
        );
        if let Some(last) = samples.last() {
            assert!(
                sample.0 > last.0 && sample.1 > last.1,
                "heartbeats stalled: {last:?} then {sample:?}"
            );
        }
        samples.push(sample);
        let rotations = |n: &TestNode| n.status()["status"]["rotations"].as_u64().unwrap();
        if rotations(&a) >= 3 && rotations(&b) >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for 3 rotations on each node"
        );
        // Sampling cadence (several heartbeat intervals apart), not a timing assertion.
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(samples.len() >= 3, "too few samples: {samples:?}");
    for n in [&a, &b] {
        let log = node_log(n);
        assert!(
            !log.contains("certificate rotation failed"),
            "{} had a failed rotation:\n{log}",
            n.name
        );
    }

    for (node, peer, old_serial) in [(&a, &b, &serial_a), (&b, &a, &serial_b)] {
        let status = node.status()["status"].clone();
        let serial = status["certificate_serial"].as_str().unwrap().to_owned();
        assert_ne!(
            &Value::String(serial.clone()),
            old_serial,
            "serial unchanged"
        );
        // The running certificate is the one on disk (compare serials; a rotation may land
        // between the two reads, so wait for agreement).
        wait_until(
            &format!("{}'s node.pem to match its status", node.name),
            Duration::from_secs(30),
            || {
                let on_disk = NodeDir::read_cert(&node.dir.join("node.pem")).unwrap();
                NodeCertificate::parse(&on_disk).unwrap().serial.to_hex()
                    == node.status()["status"]["certificate_serial"]
            },
        );
        // The peer saw the rotation (CertificateUpdate on the link).
        wait_until(
            &format!("{} to see {}'s current certificate", peer.name, node.name),
            Duration::from_secs(30),
            || {
                peer_entry(peer, &node.node_id).unwrap()["certificate_serial"]
                    == node.status()["status"]["certificate_serial"]
            },
        );
        if have_openssl() {
            let mut command = Command::new("openssl");
            command.args([
                "verify",
                "-CAfile",
                node.dir.join("ca.pem").to_str().unwrap(),
                node.dir.join("node.pem").to_str().unwrap(),
            ]);
            let out = output_within(command, Duration::from_secs(60));
            assert!(out.status.success(), "openssl verify: {}", combined(&out));
        }
    }
    assert_eq!(link_id(&a, &b.node_id), ab);
    assert_eq!(link_id(&b, &a.node_id), ba);
}

// ---------------------------------------------------------------------------------------------
// 5–6. Restart and peer exchange
// ---------------------------------------------------------------------------------------------

/// After SIGKILL, a node restarts from its data dir with the same identity and re-joins using
/// the peers persisted in state.db. The CA is stopped and the node's bootstrap list emptied
/// first, so state.db is the only place it can learn where its peers are; its new listener
/// port is unknown to them, so the re-join must be its own doing.
#[test]
fn restart_after_kill9_keeps_identity_and_rejoins_from_state_db() {
    let root = tempfile::tempdir().unwrap();
    let mut ca = TestCa::start(root.path(), &[]);
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    let mut c = ca.enroll(root.path(), "c");
    start_mesh(&mut [&mut a, &mut b, &mut c]);
    let identity_before = std::fs::read(c.dir.join("identity.key")).unwrap();
    let status_before = c.status()["status"].clone();

    c.kill9();
    if let Some(mut p) = ca.proc.take() {
        p.kill9();
    }
    set_bootstrap(&c.dir, &[]);
    {
        let store = NodeStore::open(&c.dir.join("state.db")).unwrap();
        let stored: Vec<String> = store
            .peers(100)
            .unwrap()
            .into_iter()
            .map(|p| p.node_id.to_string())
            .collect();
        assert!(
            stored.contains(&a.node_id) && stored.contains(&b.node_id),
            "state.db of C lists {stored:?}"
        );
    }

    c.start();
    let status_after = c.status()["status"].clone();
    assert_eq!(status_after["node_id"], c.node_id.as_str());
    assert_eq!(status_after["node_id"], status_before["node_id"]);
    assert_eq!(
        status_after["certificate_serial"],
        status_before["certificate_serial"]
    );
    assert_eq!(
        std::fs::read(c.dir.join("identity.key")).unwrap(),
        identity_before,
        "identity key file changed"
    );
    wait_until("C to re-join A and B", Duration::from_secs(30), || {
        c.connected_to(&a.node_id)
            && c.connected_to(&b.node_id)
            && a.connected_to(&c.node_id)
            && b.connected_to(&c.node_id)
    });
}

/// Peer exchange over links completes the mesh. The CA is stopped before any node starts (so
/// no CA announce can tell nodes about each other), and B and C bootstrap only to A: B and C
/// can only learn of each other from A's peer lists.
#[test]
fn peer_exchange_completes_the_mesh_and_peers_table_matches_json() {
    let root = tempfile::tempdir().unwrap();
    let mut ca = TestCa::start(root.path(), &[]);
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    let mut c = ca.enroll(root.path(), "c");
    if let Some(mut p) = ca.proc.take() {
        p.kill9();
    }
    set_bootstrap(&a.dir, &[]);
    a.start();
    set_bootstrap(&b.dir, &[a.mesh_addr()]);
    set_bootstrap(&c.dir, &[a.mesh_addr()]);
    b.start();
    c.start();
    wait_full_mesh(&[&a, &b, &c], Duration::from_secs(60));
    assert!(b.connected_to(&c.node_id) && c.connected_to(&b.node_id));

    for node in [&a, &b, &c] {
        let json = node.peers();
        assert_eq!(json["node_id"], node.node_id.as_str());
        let table = ztmesh_ok(&["peers", "--data-dir", node.dir.to_str().unwrap()]);
        let mut lines = table.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(header[..3], ["NODE", "STATE", "ADDRESS"], "{table}");
        let rows: Vec<(String, String, String)> = lines
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols[0].into(), cols[1].into(), cols[2].into())
            })
            .collect();
        let from_json: Vec<(String, String, String)> = json["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["node_id"].as_str().unwrap().into(),
                    if p["connected"] == true {
                        "connected"
                    } else {
                        "down"
                    }
                    .into(),
                    p["address"].as_str().unwrap_or("-").into(),
                )
            })
            .collect();
        assert_eq!(rows, from_json, "table:\n{table}\njson:\n{json}");
        assert_eq!(rows.len(), 2, "{table}");
        assert!(rows.iter().all(|r| r.1 == "connected"), "{table}");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Start-up failures
// ---------------------------------------------------------------------------------------------

#[test]
fn run_fails_clearly_on_wrong_or_missing_passphrase_and_bad_config() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let node = ca.enroll(root.path(), "n");

    let (ok, text) = run_must_fail(&node.dir, Some("wrong"));
    assert!(!ok, "ran with a wrong passphrase: {text}");
    assert!(text.contains("wrong passphrase"), "{text}");

    let (ok, text) = run_must_fail(&node.dir, None);
    assert!(!ok, "ran without a passphrase: {text}");
    assert!(
        text.contains("passphrase is required") && text.contains("ZTMESH_PASSPHRASE"),
        "{text}"
    );

    let config = node.dir.join("node.toml");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap();
    writeln!(file, "heartbeat_intervall_ms = 100").unwrap();
    drop(file);
    let (ok, text) = run_must_fail(&node.dir, Some(PASSPHRASE));
    assert!(!ok, "ran with an unknown key in node.toml: {text}");
    assert!(text.contains(config.to_str().unwrap()), "{text}");
    assert!(text.contains("heartbeat_intervall_ms"), "{text}");
    assert!(!node.dir.join("node.addr.json").exists());
}

// ---------------------------------------------------------------------------------------------
// 8. Hostile frames on an authenticated link
// ---------------------------------------------------------------------------------------------

/// Each kind of garbage, sent by a fresh authenticated member, closes that member's link for
/// the reason "malformed frame" (so not because the probe stays silent), while the node stays
/// up and its link to B keeps the same id.
#[test]
fn garbage_frames_close_only_the_offending_link() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    start_mesh(&mut [&mut a, &mut b]);
    let ab = link_id(&a, &b.node_id);
    let trust = mesh_trust(&ca);

    let mut random_body = vec![0u8; 4096];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random_body);
    let mut random_frame = (random_body.len() as u32).to_be_bytes().to_vec();
    random_frame.extend_from_slice(&random_body);
    // Well-formed CBOR, but no link message: {"type": "bogus"}.
    let cbor: &[u8] = b"\xa1\x64type\x65bogus";
    let mut cbor_frame = (cbor.len() as u32).to_be_bytes().to_vec();
    cbor_frame.extend_from_slice(cbor);
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "oversized length prefix",
            vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        ),
        ("a frame of random bytes", random_frame),
        ("a frame of CBOR that is no message", cbor_frame),
    ];

    let rt = runtime();
    for (what, garbage) in cases {
        let member = mint_valid(&ca);
        let (_, mut stream) = rt.block_on(open_link(&a, member_config(&trust, &member)));
        wait_until(
            &format!("A to list the probe as linked ({what})"),
            Duration::from_secs(20),
            || a.connected_to(&member.node_id.to_string()),
        );
        rt.block_on(async {
            stream.write_all(&garbage).await.unwrap();
            stream.flush().await.unwrap();
            // Drain what A sends until it closes the link.
            let closed = tokio::time::timeout(IO_TIMEOUT, async {
                while let Ok(Some(_)) = read_frame(&mut stream).await {}
            })
            .await;
            assert!(closed.is_ok(), "A did not close the link after {what}");
        });
        let line = wait_log_line(
            &a,
            &[
                "link down",
                &format!("peer={}", member.node_id),
                "malformed frame",
            ],
            Duration::from_secs(10),
        );
        assert!(!line.contains("peer silent"), "{line}");
        a.proc.as_mut().unwrap().assert_running();
        let status = a.status();
        assert_eq!(status["status"]["node_id"], a.node_id.as_str(), "{what}");
        assert!(!a.connected_to(&member.node_id.to_string()), "{what}");
        assert_eq!(
            link_id(&a, &b.node_id),
            ab,
            "A–B link replaced after {what}"
        );
    }
    assert!(
        !node_log(&a).contains("panicked"),
        "the node panicked:\n{}",
        node_log(&a)
    );
}
