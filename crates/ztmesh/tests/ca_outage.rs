//! A CA outage longer than a certificate lifetime, with real `ztmesh` processes on loopback.
//!
//! What is pinned here:
//! - the mesh heals by itself once the CA is back: every node whose certificate expired during
//!   the outage rotates by proving its identity key (`ca serve --rotation-grace`), installs the
//!   new certificate, and the full mesh links again, with no operator;
//! - `ztmesh status`, `ztmesh peers` and the `api.token` commands keep working on a node whose
//!   certificate expired, while another node's expired certificate stays refused on the node's
//!   API, and the CLI refuses any node but its own as the server, expired or not;
//! - what an attacker tries against the grace is refused: a revoked node, an expired
//!   certificate without its identity key's proof, a certificate signed with the CA key but
//!   never logged, a certificate expired longer ago than the grace (and grace 0), and
//!   hammering the route (429 per node).
//!
//! Certificates live 60 s (the least the CA issues); every wait is on the state asserted.
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use ztmesh_ca::ca_service::{self, CaDir, EXPIRED_ROTATIONS_BURST};
use ztmesh_ca::store::{CaStore, IssueKind};
use ztmesh_core::{NodeId, Timestamp, TrustDomain};
use ztmesh_node::node_dir::NodeDir;
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::{
    IdentityKey, IdentityProofDomain, NodeCertificate, NodeCertificateRequest, Serial, TlsKeyPair,
};
use ztmesh_runtime::timefmt::{now, parse_rfc3339};
use ztmesh_runtime::tls::{CurrentCertificate, MeshTrust};

/// Generous deadline for anything on a shared 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(180);

/// `ca serve` arguments of every CA here: the shortest certificates the CA issues.
const SHORT_CERTS: &[&str] = &["--cert-lifetime", "60s"];

fn trust_domain() -> TrustDomain {
    "test.ztmesh".parse().unwrap()
}

fn protection() -> Protection<'static> {
    Protection::Passphrase(PASSPHRASE.as_bytes())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn log_of(path: &Path) -> String {
    strip_ansi(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The certificate a node's `ztmesh status --json` reports: serial and notAfter. Panics (with
/// the CLI's output) when `ztmesh status` does not exit 0.
/// Whether `not_after` is past by more than the second the verifiers round validity to: a
/// certificate is still valid during the second of its `notAfter`.
fn past(not_after: Timestamp) -> bool {
    not_after.saturating_add(Duration::from_secs(2)) < now()
}

fn status_cert(node: &TestNode) -> (String, Timestamp) {
    let status = node.status();
    let serial = status["status"]["certificate_serial"]
        .as_str()
        .unwrap()
        .to_owned();
    let not_after = parse_rfc3339(status["status"]["certificate_not_after"].as_str().unwrap())
        .expect("certificate_not_after is RFC 3339");
    (serial, not_after)
}

/// What a node holds on disk: identity key, TLS key, certificate.
struct Creds {
    identity: IdentityKey,
    tls_key: TlsKeyPair,
    cert_der: Vec<u8>,
}

impl Creds {
    fn read(node: &TestNode) -> Creds {
        let dir = NodeDir(node.dir.clone());
        let identity = dir.read_identity(&protection(), false).unwrap();
        let (tls_key, cert_der) = dir.read_tls(&protection(), false).unwrap();
        Creds {
            identity,
            tls_key,
            cert_der,
        }
    }

    fn cert(&self) -> NodeCertificate {
        NodeCertificate::parse(&self.cert_der).unwrap()
    }

    fn current(&self) -> Arc<CurrentCertificate> {
        Arc::new(
            CurrentCertificate::new(vec![self.cert_der.clone()], &self.tls_key.to_pkcs8_der())
                .unwrap(),
        )
    }
}

/// A `POST /v1/rotate` body for a fresh TLS key of `node_id`, its CSR proven by `prover`.
fn rotate_body(node_id: &NodeId, prover: &IdentityKey) -> Value {
    let key = TlsKeyPair::generate().unwrap();
    let csr = key.csr_der(node_id, &trust_domain()).unwrap();
    json!({
        "csr": b64(&csr),
        "identity_proof": b64(&prover.sign_proof(IdentityProofDomain::RotateCsr, &csr)),
    })
}

/// One answer: status and JSON body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.body["error"].as_str()),
            (status, Some(code)),
            "answer: {self:?}"
        );
    }
}

/// POSTs `body` as JSON to `url` with `config`, a fresh connection each time.
fn post(config: rustls::ClientConfig, url: &str, body: &Value) -> Reply {
    request(config, |c| c.post(url).json(body))
}

fn get(config: rustls::ClientConfig, url: &str) -> Reply {
    request(config, |c| c.get(url))
}

fn request(
    config: rustls::ClientConfig,
    build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Reply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let response = build(&client).send().await.expect("an answer");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    })
}

/// Client of the CA presenting `creds`' certificate (mutual TLS).
fn ca_client(ca: &TestCa, cert: Arc<CurrentCertificate>) -> rustls::ClientConfig {
    ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), Some(cert)).unwrap()
}

/// `POST /v1/rotate` on `ca` presenting `creds`, the CSR proven by `prover`.
fn rotate(ca: &TestCa, creds: &Creds, prover: &IdentityKey) -> Reply {
    let node_id = creds.cert().node_id;
    post(
        ca_client(ca, creds.current()),
        &format!("{}/v1/rotate", ca.url),
        &rotate_body(&node_id, prover),
    )
}

#[test]
fn the_mesh_heals_by_itself_after_a_ca_outage_longer_than_a_certificate_lifetime() {
    let root = tempfile::tempdir().unwrap();
    let mut ca = TestCa::start(root.path(), SHORT_CERTS);
    let mut nodes: Vec<TestNode> = ["a", "b", "c"]
        .iter()
        .map(|name| ca.enroll(root.path(), name))
        .collect();
    for node in nodes.iter_mut() {
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, TIMEOUT);

    // The CA goes away (kill -9) until every node's certificate has expired. `ztmesh status`
    // answers (exit 0, asserted by `status_cert`) on every node all along.
    let ca_addr = ca.addr.clone();
    ca.proc.take().expect("the CA runs").kill9();
    let killed = std::time::Instant::now();
    let mut expired: Vec<Option<String>> = vec![None; nodes.len()];
    wait_until("every node's certificate to expire", TIMEOUT, || {
        for (node, slot) in nodes.iter().zip(expired.iter_mut()) {
            let (serial, not_after) = status_cert(node);
            if past(not_after) {
                *slot = Some(serial);
            }
        }
        expired.iter().all(Option::is_some)
    });
    let expired: Vec<String> = expired.into_iter().map(Option::unwrap).collect();
    for node in &nodes {
        let (serial, not_after) = status_cert(node);
        assert!(past(not_after), "{} holds a valid certificate", node.name);
        assert!(expired.contains(&serial));
        node.cli_ok(&["peers", "--json"]);
    }
    // Expired certificates close the links (the peer verifier refuses them).
    wait_until(
        "the links to close on expired certificates",
        TIMEOUT,
        || nodes.iter().all(|n| n.connected_count() == 0),
    );
    // The outage outlasts a whole certificate lifetime (60 s) with room to spare; status keeps
    // answering on every node meanwhile.
    wait_until(
        "the outage to outlast a certificate lifetime",
        TIMEOUT,
        || {
            for node in &nodes {
                status_cert(node);
            }
            killed.elapsed() > Duration::from_secs(75)
        },
    );

    // The CA comes back on the same address; nobody touches the nodes.
    let outage = killed.elapsed();
    ca.serve(&ca_addr, SHORT_CERTS);
    let back = std::time::Instant::now();
    wait_until(
        "every node to hold a new valid certificate",
        TIMEOUT,
        || {
            nodes.iter().zip(&expired).all(|(node, old)| {
                let (serial, not_after) = status_cert(node);
                &serial != old && not_after > now()
            })
        },
    );
    let certified = back.elapsed();
    wait_full_mesh(&refs, TIMEOUT);
    // Reported, not asserted: how long the outage lasted and the healing took.
    eprintln!(
        "CA outage {:.0?}; every node re-certified {:.0?} and the full mesh back {:.0?} after the CA returned",
        outage,
        certified,
        back.elapsed()
    );

    // Each re-establishment is logged by the CA and is a `rotate` entry of the membership log.
    let serve_log = log_of(&ca.dir.join("serve.log"));
    let store = CaStore::open(&ca.dir.join("state.db")).unwrap();
    for (node, old) in nodes.iter().zip(&expired) {
        assert!(
            serve_log.lines().any(|l| l
                .contains("certificate re-established after expiry by identity proof")
                && l.contains(&node.node_id)
                && l.contains(old.as_str())),
            "no re-establishment of {} ({old}) in the CA log:\n{serve_log}",
            node.name
        );
        let (serial, _) = status_cert(node);
        let record = store
            .certificate(&Serial::from_hex(&serial).unwrap())
            .unwrap()
            .expect("the new certificate is in the CA's records");
        assert_eq!(record.kind, IssueKind::Rotate);
        assert_eq!(record.node_id.to_string(), node.node_id);
        let run_log = log_of(&node.dir.join("run.log"));
        assert!(
            run_log.contains("certificate re-established after it had expired"),
            "{} did not log its re-establishment:\n{run_log}",
            node.name
        );
    }
}

#[test]
fn status_works_with_an_expired_certificate() {
    let root = tempfile::tempdir().unwrap();
    let mut ca = TestCa::start(root.path(), SHORT_CERTS);
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    a.start();
    b.start();
    wait_full_mesh(&[&a, &b], TIMEOUT);
    ca.proc.take().expect("the CA runs").kill9();
    wait_until("both certificates to expire", TIMEOUT, || {
        past(status_cert(&a).1) && past(status_cert(&b).1)
    });

    // The node's own CLI: status (text and JSON), peers, and a local-application command
    // authenticated by api.token, all exit 0 with the certificate expired.
    let text = a.cli_ok(&["status"]);
    assert!(text.contains(&a.node_id), "status: {text}");
    assert!(text.contains("EXPIRED"), "status does not say so: {text}");
    a.cli_ok(&["peers", "--json"]);
    a.cli_ok(&["anomalies", "--json"]);

    // Another node's expired certificate stays refused on the node's API, on the views and
    // on the mesh routes alike.
    let b_creds = Creds::read(&b);
    assert!(past(b_creds.cert().not_after));
    let trust = Arc::new(MeshTrust::new(ca.ca_der(), trust_domain()));
    let a_id: NodeId = a.node_id.parse().unwrap();
    let as_b = || {
        ztmesh_runtime::tls::own_node_api_client_config(
            trust.clone(),
            a_id,
            Some(b_creds.current()),
        )
        .unwrap()
    };
    let a_api = format!("https://{}", a.api_addr());
    for path in ["/v1/status", "/v1/mesh/peers"] {
        get(as_b(), &format!("{a_api}{path}")).assert_error(401, "invalid_client_certificate");
    }
    post(as_b(), &format!("{a_api}/v1/mesh/gossip"), &json!({}))
        .assert_error(401, "invalid_client_certificate");
    // A's own expired certificate is let in on the views only.
    let a_creds = Creds::read(&a);
    let as_a = || {
        ztmesh_runtime::tls::own_node_api_client_config(
            trust.clone(),
            a_id,
            Some(a_creds.current()),
        )
        .unwrap()
    };
    assert_eq!(get(as_a(), &format!("{a_api}/v1/status")).status, 200);
    post(as_a(), &format!("{a_api}/v1/mesh/gossip"), &json!({}))
        .assert_error(401, "invalid_client_certificate");

    // The CLI trusts its own node only: pointed at B's API (a mesh member, expired like A),
    // every command refuses the server instead of talking to it.
    let addr_file = a.dir.join("node.addr.json");
    let saved = std::fs::read_to_string(&addr_file).unwrap();
    let mut addrs: Value = serde_json::from_str(&saved).unwrap();
    addrs["api"] = b.addrs()["api"].clone();
    std::fs::write(&addr_file, addrs.to_string()).unwrap();
    for args in [&["status"][..], &["peers"], &["anomalies"]] {
        let out = a.cli(args);
        assert!(
            !out.status.success(),
            "`ztmesh {args:?}` accepted node B as its own node: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    std::fs::write(&addr_file, saved).unwrap();
    a.cli_ok(&["status"]);
}

#[test]
fn rotation_after_expiry_is_refused_when_revoked_unproven_unlogged_past_the_grace_or_hammered() {
    let root = tempfile::tempdir().unwrap();
    let mut ca = TestCa::start(root.path(), SHORT_CERTS);
    // Enrolled, never started: their certificates just run out.
    let names = ["healthy", "revoked", "unproven", "hammer", "late"];
    let nodes: Vec<TestNode> = names.iter().map(|n| ca.enroll(root.path(), n)).collect();
    let creds: Vec<Creds> = nodes.iter().map(Creds::read).collect();
    let [healthy, revoked, unproven, hammer, late] = [0, 1, 2, 3, 4].map(|i| &creds[i]);

    // A certificate signed with the CA key, for a real identity, but never recorded nor
    // logged (what a thief of the CA key would make), expiring with the others.
    let ca_key = ca_service::load_ca(&CaDir(ca.dir.clone()), &protection(), false).unwrap();
    let forged = {
        let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
        let tls_key = TlsKeyPair::generate().unwrap();
        let csr = tls_key
            .csr_der(&identity.public().node_id(), &trust_domain())
            .unwrap();
        let t = now();
        let cert_der = ca_key
            .issue_node_certificate(&NodeCertificateRequest {
                csr_der: &csr,
                identity_key: &identity.public(),
                serial: Serial::random(&mut rand::rngs::OsRng),
                not_before: t.saturating_sub(Duration::from_secs(60)),
                not_after: t.saturating_add(Duration::from_secs(1)),
            })
            .unwrap()
            .der;
        Creds {
            identity,
            tls_key,
            cert_der,
        }
    };
    // The same, copying the serial of a logged certificate into a different certificate.
    let copied_serial = {
        let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
        let tls_key = TlsKeyPair::generate().unwrap();
        let csr = tls_key
            .csr_der(&identity.public().node_id(), &trust_domain())
            .unwrap();
        let t = now();
        let cert_der = ca_key
            .issue_node_certificate(&NodeCertificateRequest {
                csr_der: &csr,
                identity_key: &identity.public(),
                serial: late.cert().serial,
                not_before: t.saturating_sub(Duration::from_secs(60)),
                not_after: t.saturating_add(Duration::from_secs(1)),
            })
            .unwrap()
            .der;
        Creds {
            identity,
            tls_key,
            cert_der,
        }
    };

    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--node-id",
        &nodes[1].node_id,
    ]);
    wait_until("every certificate to expire", TIMEOUT, || {
        creds
            .iter()
            .chain([&forged, &copied_serial])
            .all(|c| past(c.cert().not_after))
    });

    // A revoked node: refused, grace or not.
    rotate(&ca, revoked, &revoked.identity).assert_error(403, "revoked");
    // The certificate and its TLS key without the identity key (a stolen certificate).
    let thief = IdentityKey::generate(&mut rand::rngs::OsRng);
    rotate(&ca, unproven, &thief).assert_error(400, "bad_identity_proof");
    // Signed with the CA key but never in the CA's records nor its log.
    rotate(&ca, &forged, &forged.identity).assert_error(403, "unknown_certificate");
    rotate(&ca, &copied_serial, &copied_serial.identity).assert_error(403, "unknown_certificate");
    // Hammering one node's route without its identity key: the budget of failed proofs runs
    // out (429), and the node itself, proving its key, is not locked out.
    for _ in 0..EXPIRED_ROTATIONS_BURST {
        rotate(&ca, hammer, &thief).assert_error(400, "bad_identity_proof");
    }
    rotate(&ca, hammer, &thief).assert_error(429, "rate_limited");
    let reply = rotate(&ca, hammer, &hammer.identity);
    assert_eq!(reply.status, 200, "answer: {reply:?}");
    // Even with the identity key, an expired certificate yields a bounded number of new ones.
    for _ in 1..EXPIRED_ROTATIONS_BURST {
        let reply = rotate(&ca, hammer, &hammer.identity);
        assert_eq!(reply.status, 200, "answer: {reply:?}");
    }
    rotate(&ca, hammer, &hammer.identity).assert_error(429, "rate_limited");

    // The healthy node, expired within the grace, with its identity proof: a new certificate,
    // recorded as a rotation, and logged by the CA.
    let reply = rotate(&ca, healthy, &healthy.identity);
    assert_eq!(reply.status, 200, "answer: {reply:?}");
    let new_der = ztmesh_pki::cert_pem_to_der(reply.body["certificate"].as_str().unwrap()).unwrap();
    let trust = MeshTrust::new(ca.ca_der(), trust_domain());
    let new = trust
        .verify_peer(&new_der, now())
        .expect("a valid certificate");
    assert_eq!(new.node_id, healthy.cert().node_id);
    let store = CaStore::open(&ca.dir.join("state.db")).unwrap();
    assert_eq!(
        store.certificate(&new.serial).unwrap().unwrap().kind,
        IssueKind::Rotate
    );
    assert!(log_of(&ca.dir.join("serve.log"))
        .contains("certificate re-established after expiry by identity proof"));

    // Past the grace: a CA with a 1 s grace refuses the late node; with 0, never after expiry.
    wait_until(
        "the late certificate to be 2 s past expiry",
        TIMEOUT,
        || late.cert().not_after.saturating_add(Duration::from_secs(2)) < now(),
    );
    ca.restart(&["--cert-lifetime", "60s", "--rotation-grace", "1s"]);
    rotate(&ca, late, &late.identity).assert_error(403, "rotation_grace_passed");
    ca.restart(&["--cert-lifetime", "60s", "--rotation-grace", "0"]);
    rotate(&ca, late, &late.identity).assert_error(403, "rotation_grace_passed");
    assert!(
        log_of(&ca.dir.join("serve.log")).contains("expired longer ago than the rotation grace")
    );
}
