//! Revocations with real processes: no revocation bypasses the membership log.
//!
//! - A record signed with the CA's key that names a node, with the CRL in force unchanged,
//!   excludes no one: every node holds it, and once the witnessed log has moved past it
//!   without a `revoke_node` entry, raises `unlogged_revocation` naming that node. The same
//!   holds for a persisted revocation the log does not justify (here one of a
//!   `revoked-nodes.json` written as earlier versions did, imported at start).
//! - A real `ztmesh revoke` still drops the node everywhere within seconds, and its
//!   revocation passes the log check (at run time and at start).
//! - `POST /v1/revocations` (no client certificate) refuses every other kind before storing
//!   or forwarding it.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sha2::Digest;
use ztmesh_ca::ca_service::CaDir;
use ztmesh_gossip::kinds::AnomalySignature;
use ztmesh_gossip::{MessageKind, UnsignedMessage};
use ztmesh_node::node_dir::NodeDir;
use ztmesh_pki::keyfile::Protection;
use ztmesh_runtime::tls::MeshTrust;

const WAIT: Duration = Duration::from_secs(60);

/// How long the cross-checks wait for rotations and the log to move past the grace (90 s).
const SLOW_WAIT: Duration = Duration::from_secs(300);

fn protection() -> Protection<'static> {
    Protection::Passphrase(PASSPHRASE.as_bytes())
}

/// A CA serving its membership log with a policy of one real witness, which nodes pin at
/// enrollment. The witness process lives as long as this value.
struct WitnessedCa {
    ca: TestCa,
    _witness: Proc,
}

impl WitnessedCa {
    fn start(root: &Path, extra_serve_args: &[&str]) -> WitnessedCa {
        let ca_dir = root.join("ca");
        let init = ztmesh_ok(&[
            "ca",
            "init",
            "--trust-domain",
            "test.ztmesh",
            "--data-dir",
            ca_dir.to_str().unwrap(),
        ]);
        let fingerprint = init
            .lines()
            .find_map(|l| l.trim().strip_prefix("fingerprint:"))
            .unwrap()
            .trim()
            .to_owned();
        let log_vkey = std::fs::read_to_string(ca_dir.join("log.vkey"))
            .unwrap()
            .trim()
            .to_owned();
        let (witness, witness_vkey, witness_addr) = start_witness(root, &log_vkey);
        let policy =
            format!("log {log_vkey}\nwitness w1 {witness_vkey} http://{witness_addr}\nquorum w1\n");
        let policy_file = root.join("log-policy.txt");
        std::fs::write(&policy_file, &policy).unwrap();
        let mut serve_args = vec!["--log-policy", policy_file.to_str().unwrap()];
        serve_args.extend_from_slice(extra_serve_args);
        let mut ca = TestCa {
            dir: ca_dir,
            addr: String::new(),
            url: String::new(),
            fingerprint,
            proc: None,
        };
        ca.serve("127.0.0.1:0", &serve_args);
        WitnessedCa {
            ca,
            _witness: witness,
        }
    }
}

/// `status.log` of `ztmesh status --json`.
fn log_status(node: &TestNode) -> serde_json::Value {
    node.status()["status"]["log"].clone()
}

/// The findings of `kind` among the latest ones of a `status.log`.
fn findings(status: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    status["unlogged"]
        .as_array()
        .map(|all| all.iter().filter(|f| f["kind"] == kind).cloned().collect())
        .unwrap_or_default()
}

/// Whether `node`'s `state.db` records `victim` revoked.
fn persisted_revoked(node: &TestNode, victim: &str) -> bool {
    revoked_in_state_db(&node.dir).iter().any(|id| id == victim)
}

/// Posts `cose` to `to`'s `POST /v1/revocations` with no client certificate, as anyone can;
/// returns the HTTP status and JSON body.
fn post_revocation(ca: &TestCa, to: &TestNode, cose: Vec<u8>) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let trust = Arc::new(MeshTrust::new(ca.ca_der(), "test.ztmesh".parse().unwrap()));
    let config = ztmesh_runtime::tls::node_api_client_config(trust, None).unwrap();
    let client = {
        let _guard = rt.enter();
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    rt.block_on(async {
        let response = client
            .post(format!("https://{}/v1/revocations", to.api_addr()))
            .header("content-type", "application/cose")
            .body(cose)
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    })
}

/// The CA's signing key, loaded from its data directory as whoever holds it could.
fn ca_authority(ca: &TestCa) -> ztmesh_pki::CertificateAuthority {
    ztmesh_ca::ca_service::load_ca(&CaDir(ca.dir.clone()), &protection(), false).unwrap()
}

/// The CRL the CA signed last (DER), as every node holds it.
fn ca_current_crl(ca: &TestCa) -> Vec<u8> {
    let text = std::fs::read(CaDir(ca.dir.clone()).crl()).unwrap();
    pem::parse(text).unwrap().contents().to_vec()
}

/// Enrolls `n` nodes (they pin the CA's log policy), starts them, waits for the full mesh.
fn start_nodes(root: &Path, ca: &TestCa, n: usize) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = (1..=n)
        .map(|i| ca.enroll(root, &format!("node{i}")))
        .collect();
    for node in &mut nodes {
        assert!(node.dir.join("log-policy.txt").exists());
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, WAIT);
    nodes
}

/// Issue 12, item 2: a record signed with the CA's key, naming a node, with the CRL in force
/// unchanged, used to drop that node from every node's mesh within seconds, with no trace.
/// Now: held (not applied) everywhere, then `unlogged_revocation` once the log moved past it;
/// the node stays linked and is never recorded revoked in `state.db`. A forged entry of
/// `revoked-nodes.json` (imported at start) is lifted at start and reported the same way.
#[test]
fn a_ca_signed_record_with_an_unchanged_crl_excludes_no_one_and_raises_unlogged_revocation() {
    let root = tempfile::tempdir().unwrap();
    // Certificates of 60 s: rotations keep the log moving past the 90 s grace.
    let wca = WitnessedCa::start(root.path(), &["--cert-lifetime", "60s"]);
    let ca = &wca.ca;
    let mut nodes = start_nodes(root.path(), ca, 3);
    let victim = nodes[2].node_id.clone();

    let record = ztmesh_ca::ca_service::revocation_record(
        &ca_authority(ca),
        &ca_current_crl(ca),
        Some(victim.parse().unwrap()),
    )
    .unwrap();
    let (status, body) = post_revocation(ca, &nodes[0], record);
    assert_eq!(status, 202, "{body}");

    // It spreads (it is a valid CA-signed message), and every other node holds it unapplied.
    for node in &nodes[..2] {
        wait_until(
            &format!("{} to hold the record's revocation", node.name),
            WAIT,
            || log_status(node)["node_revocations_held"] == 1,
        );
    }
    for node in &nodes[..2] {
        wait_until(
            &format!("{} to report the revocation outside the log", node.name),
            SLOW_WAIT,
            || log_status(node)["unlogged_revocations"] == 1,
        );
        let status = log_status(node);
        let found = findings(&status, "unlogged_revocation");
        assert_eq!(found.len(), 1, "{status}");
        assert_eq!(found[0]["node_id"], victim.as_str(), "{status}");
        assert_eq!(found[0]["serial"], "", "{status}");
        assert_eq!(status["node_revocations_pending"], 0, "{status}");
        assert_eq!(status["split_view"], false, "{status}");
        // Excluded no one: still linked, never persisted as revoked.
        assert!(
            node.connected_to(&victim),
            "{} dropped the victim",
            node.name
        );
        assert!(!persisted_revoked(node, &victim));
        let text = node.cli_ok(&["status"]);
        assert!(
            text.contains(&format!("unlogged_revocation of node {victim}")),
            "{text}"
        );
        let log = node.proc.as_ref().unwrap().log_text();
        assert!(
            log.lines().any(|l| l.contains("WARN")
                && l.contains("UNLOGGED REVOCATION")
                && l.contains(&victim)),
            "{log}"
        );
    }

    // A revoked-nodes.json naming the victim (as the unfixed node wrote it), learnt 200 s
    // ago: at start it is lifted, the node links to the victim again, and the log check
    // reports it.
    nodes[1].kill9();
    let learnt = ztmesh_runtime::timefmt::now().saturating_sub(Duration::from_secs(200));
    let forged = serde_json::json!({ victim.clone(): learnt });
    std::fs::write(
        nodes[1].dir.join("revoked-nodes.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    nodes[1].start();
    wait_until("node2 to link with the victim again", WAIT, || {
        nodes[1].connected_to(&victim)
    });
    assert!(!persisted_revoked(&nodes[1], &victim));
    wait_until(
        "node2 to report the persisted revocation outside the log",
        SLOW_WAIT,
        || log_status(&nodes[1])["unlogged_revocations"] == 1,
    );
    let status = log_status(&nodes[1]);
    assert_eq!(
        findings(&status, "unlogged_revocation")[0]["node_id"],
        victim.as_str()
    );
    assert!(nodes[1].connected_to(&victim));
    for node in &mut nodes {
        node.proc.as_mut().unwrap().assert_running();
    }
}

/// The honest path under the same rules: `ztmesh revoke --node-id` makes a newer CRL listing
/// the node's certificate and logs `revoke_node`, so every node drops it within seconds,
/// persists it, finds it in the log, and keeps it across a restart.
#[test]
fn a_logged_revocation_still_drops_the_node_everywhere_fast_and_passes_the_log_check() {
    let root = tempfile::tempdir().unwrap();
    let wca = WitnessedCa::start(root.path(), &[]);
    let ca = &wca.ca;
    let mut nodes = start_nodes(root.path(), ca, 4);
    let victim = nodes[3].node_id.clone();
    let started = Instant::now();
    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--node-id",
        &victim,
    ]);
    for node in &nodes[..3] {
        wait_until(
            &format!("{} to drop and persist the revoked node", node.name),
            Duration::from_secs(30),
            || !node.connected_to(&victim) && persisted_revoked(node, &victim),
        );
    }
    eprintln!(
        "revocation applied on 3 nodes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for node in &nodes[..3] {
        wait_until(
            &format!("{} to find the revocation in the log", node.name),
            SLOW_WAIT,
            || {
                let status = log_status(node);
                status["node_revocations_pending"] == 0
                    && status["revocations_checked"].as_u64() >= Some(1)
            },
        );
        let status = log_status(node);
        assert_eq!(status["unlogged_revocations"], 0, "{status}");
        assert_eq!(status["node_revocations_held"], 0, "{status}");
    }
    // A node id the CA never issued to (named by a rogue certificate): no CRL can list it, so
    // nodes hold the record's revocation until the log shows its revoke_node entry, then apply.
    let stranger = ztmesh_core::NodeId::from_bytes(rand::random()).to_string();
    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--node-id",
        &stranger,
    ]);
    for node in &nodes[..3] {
        wait_until(
            &format!(
                "{} to apply the logged revocation of an unknown node",
                node.name
            ),
            SLOW_WAIT,
            || persisted_revoked(node, &stranger),
        );
        let status = log_status(node);
        assert_eq!(status["unlogged_revocations"], 0, "{status}");
    }

    // At start the persisted revocations are justified by the log this node followed: kept.
    nodes[0].kill9();
    nodes[0].start();
    wait_until("node1 to link with node2 again", WAIT, || {
        nodes[0].connected_to(&nodes[1].node_id)
    });
    assert!(persisted_revoked(&nodes[0], &victim));
    assert!(persisted_revoked(&nodes[0], &stranger));
    assert_eq!(log_status(&nodes[0])["node_revocations_held"], 0);
    let log = nodes[0].proc.as_ref().unwrap().log_text();
    assert!(
        !log.contains("held, not applied"),
        "a logged revocation was held at start: {log}"
    );
    assert!(!nodes[0].connected_to(&victim));
}

/// Issue 12, item 5: an anomaly signed by a member, posted to `POST /v1/revocations` with no
/// client certificate, used to be refused with 403 after the node had stored and forwarded
/// it. Now it is refused before, and no node holds it.
#[test]
fn a_member_signed_anomaly_posted_to_revocations_is_refused_and_stored_nowhere() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut nodes: Vec<TestNode> = (1..=2)
        .map(|i| ca.enroll(root.path(), &format!("node{i}")))
        .collect();
    for node in &mut nodes {
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, WAIT);

    let dir = NodeDir(nodes[1].dir.clone());
    let identity = dir.read_identity(&protection(), false).unwrap();
    let (_, certificate) = dir.read_tls(&protection(), false).unwrap();
    let now = ztmesh_runtime::timefmt::now();
    let cose = UnsignedMessage {
        origin: identity.public().node_id(),
        kind: MessageKind::Anomaly,
        body: AnomalySignature {
            event_sha256: [7; 32],
            indicator: "relayed.without.tls".into(),
            risk_score: 99,
            rule_id: None,
            metadata: Default::default(),
        }
        .encode()
        .unwrap(),
        created_at: now,
        expires_at: now.saturating_add(Duration::from_secs(600)),
        hop_limit: 8,
    }
    .sign(Some(certificate), |tbs| identity.sign_envelope(tbs))
    .unwrap();
    let forged_id = hex::encode(sha2::Sha256::digest(&cose));
    let (status, body) = post_revocation(&ca, &nodes[0], cose);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "not_a_revocation", "{body}");

    // A marker published after it reaches node2: anything node1 had taken would have too.
    let marker = nodes[0]
        .cli_ok(&[
            "publish",
            "anomaly",
            "--hash",
            &"ab".repeat(32),
            "--type",
            "marker",
            "--score",
            "1",
        ])
        .trim()
        .to_owned();
    let holds = |node: &TestNode, id: &str| {
        let list: serde_json::Value =
            serde_json::from_str(&node.cli_ok(&["anomalies", "--json"])).unwrap();
        list["anomalies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id)
    };
    wait_until("node2 to hold the marker", WAIT, || {
        holds(&nodes[1], &marker)
    });
    for node in &nodes {
        assert!(
            !holds(node, &forged_id),
            "{} holds the refused anomaly",
            node.name
        );
    }
}

/// Lines of `node`'s log saying a mesh handshake was refused for a revoked or denied
/// certificate (no CRL revokes anything in the test that counts them).
fn refused_handshakes(node: &TestNode) -> usize {
    node.proc
        .as_ref()
        .unwrap()
        .log_text()
        .lines()
        .filter(|l| l.contains("Revoked"))
        .count()
}

/// Issue 12, item 4: an operator can cut a peer off on one node without the CA (down here):
/// `ztmesh deny add` closes the link at once, the denial is refused at every handshake and
/// survives a restart of the denying node, `deny remove` lets the peer back; a serial works
/// the same way; garbage is refused with a non-zero exit and nothing written.
#[test]
fn a_denied_peer_is_cut_off_without_the_ca_stays_refused_across_a_restart_and_comes_back() {
    let root = tempfile::tempdir().unwrap();
    let mut ca = TestCa::start(root.path(), &[]);
    let mut nodes: Vec<TestNode> = (1..=3)
        .map(|i| ca.enroll(root.path(), &format!("node{i}")))
        .collect();
    for node in &mut nodes {
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, WAIT);
    let deny_file = nodes[0].dir.join("deny-list.json");

    // Garbage: a typed message, a non-zero exit, nothing written.
    for garbage in ["not-a-node", "node:abc", "serial:xyz", "zz"] {
        let out = nodes[0].cli(&["deny", "add", garbage]);
        assert!(!out.status.success(), "{garbage:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("neither a NodeId"), "{stderr}");
    }
    let out = nodes[0].cli(&["deny", "remove", &nodes[1].node_id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_denied"));
    assert!(!deny_file.exists());

    // Without the CA.
    ca.proc.take().unwrap().kill9();
    let victim = nodes[2].node_id.clone();
    nodes[0].cli_ok(&["deny", "add", &victim]);
    for (a, b) in [(&nodes[0], &victim), (&nodes[2], &nodes[0].node_id)] {
        wait_until("the link to the denied peer to close", WAIT, || {
            !a.connected_to(b)
        });
    }
    // Local to node1: node2 keeps its link to the victim.
    assert!(nodes[1].connected_to(&victim));
    let status = nodes[0].status();
    assert_eq!(
        status["status"]["denied"]["nodes"],
        serde_json::json!([victim.clone()])
    );
    assert!(nodes[0]
        .cli_ok(&["status"])
        .contains(&format!("DENIED        node {victim}")));
    assert!(nodes[0].cli_ok(&["deny", "list"]).contains(&victim));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&deny_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Across a restart of the denying node: refused at the handshake, both ways.
    nodes[0].kill9();
    nodes[0].start();
    wait_until("node1 to link with node2 again", WAIT, || {
        nodes[0].connected_to(&nodes[1].node_id)
    });
    wait_until(
        "a handshake with the denied peer to be refused",
        WAIT,
        || refused_handshakes(&nodes[0]) >= 1,
    );
    assert!(!nodes[0].connected_to(&victim));
    assert!(!nodes[2].connected_to(&nodes[0].node_id));

    // Removed: the peers link again (dial backoff is at most 30 s).
    nodes[0].cli_ok(&["deny", "remove", &victim]);
    wait_until(
        "node1 and the formerly denied peer to link again",
        Duration::from_secs(120),
        || nodes[0].connected_to(&victim),
    );

    // One certificate, by serial.
    let serial = nodes[1].status()["status"]["certificate_serial"]
        .as_str()
        .unwrap()
        .to_owned();
    nodes[0].cli_ok(&["deny", "add", &format!("serial:{serial}")]);
    wait_until("the link to the denied certificate to close", WAIT, || {
        !nodes[0].connected_to(&nodes[1].node_id)
    });
    assert_eq!(
        nodes[0].status()["status"]["denied"]["serials"],
        serde_json::json!([serial.clone()])
    );
    nodes[0].cli_ok(&["deny", "remove", &serial]);
    wait_until(
        "node1 and node2 to link again",
        Duration::from_secs(120),
        || nodes[0].connected_to(&nodes[1].node_id),
    );
    assert_eq!(
        std::fs::read_to_string(&deny_file).unwrap().trim(),
        "{\n  \"nodes\": [],\n  \"serials\": []\n}"
    );
}
