//! Nodes as monitors of the CA's membership log, with real processes: a node accepts only
//! checkpoints its pinned policy accepts, passes them on by gossip, and raises the split-view
//! alarm when two valid checkpoints of the same size disagree, whichever way they reach it.
//!
//! The forged-checkpoint tests play the log themselves (their own log key and witnesses, listed
//! in a `log-policy.txt` they write) and post checkpoints as gossip signed by a member, over
//! mutual TLS with that member's certificate. The last test runs the whole chain instead: a CA
//! serving its log with a policy, a real witness process cosigning it, nodes pinning that policy
//! at enrollment, following the log, and catching a fork signed with the CA's own log key.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ztmesh_gossip::kinds::CheckpointNote;
use ztmesh_gossip::{MessageKind, UnsignedMessage};
use ztmesh_node::node_dir::NodeDir;
use ztmesh_node::tls::{CurrentCertificate, MeshTrust};
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::IdentityKey;
use ztmesh_tlog::{Checkpoint, CosignatureSigner, MerkleTree, Note, Signer};

const ORIGIN: &str = "test.ztmesh/membership";
const WAIT: Duration = Duration::from_secs(60);

fn protection() -> Protection<'static> {
    Protection::Passphrase(PASSPHRASE.as_bytes())
}

/// A log of `size` leaves named `<branch>-<i>`.
fn tree(branch: &str, size: u64) -> MerkleTree {
    let mut tree = MerkleTree::new();
    for i in 0..size {
        tree.append(format!("{branch}-{i}").as_bytes());
    }
    tree
}

/// The checkpoint of `tree` at `size`, signed by `log` and cosigned by `witnesses` now.
fn checkpoint_note(
    log: &Signer,
    tree: &MerkleTree,
    size: u64,
    witnesses: &[&CosignatureSigner],
) -> String {
    let checkpoint = Checkpoint::new(log.name(), size, tree.root_at(size).unwrap()).unwrap();
    let mut note = Note::sign(&checkpoint.to_string(), &[log]).unwrap();
    let now = ztmesh_node::timefmt::now().as_unix_secs();
    for witness in witnesses {
        note.add_signature(witness.cosign(note.text(), now).unwrap())
            .unwrap();
    }
    note.to_string()
}

/// The log and the three witnesses the forged-checkpoint tests play, and a policy asking for
/// two of the three.
struct PlayedLog {
    log: Signer,
    witnesses: Vec<CosignatureSigner>,
}

impl PlayedLog {
    fn new() -> PlayedLog {
        let mut rng = rand::rngs::OsRng;
        PlayedLog {
            log: Signer::generate(ORIGIN, &mut rng).unwrap(),
            witnesses: (1..=3)
                .map(|i| CosignatureSigner::generate(&format!("w{i}.test"), &mut rng).unwrap())
                .collect(),
        }
    }

    fn policy(&self) -> String {
        format!(
            "log {}\nwitness w1 {}\nwitness w2 {}\nwitness w3 {}\ngroup two-of-three 2 w1 w2 w3\nquorum two-of-three\n",
            self.log.vkey(),
            self.witnesses[0].vkey(),
            self.witnesses[1].vkey(),
            self.witnesses[2].vkey(),
        )
    }

    /// The checkpoint of `tree` at `size` cosigned by the witnesses numbered in `by` (1-based).
    fn note(&self, tree: &MerkleTree, size: u64, by: &[usize]) -> String {
        let witnesses: Vec<&CosignatureSigner> =
            by.iter().map(|i| &self.witnesses[i - 1]).collect();
        checkpoint_note(&self.log, tree, size, &witnesses)
    }
}

/// A member's credentials, to sign gossip as that member and present its certificate.
struct Member {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    identity: IdentityKey,
    certificate: Vec<u8>,
}

impl Member {
    fn new(ca: &TestCa, node: &TestNode) -> Member {
        let dir = NodeDir(node.dir.clone());
        let identity = dir.read_identity(&protection(), false).unwrap();
        let (tls_key, certificate) = dir.read_tls(&protection(), false).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let trust = Arc::new(MeshTrust::new(ca.ca_der(), "test.ztmesh".parse().unwrap()));
        let current = Arc::new(
            CurrentCertificate::new(vec![certificate.clone()], &tls_key.to_pkcs8_der()).unwrap(),
        );
        let config = ztmesh_node::tls::node_api_client_config(trust, Some(current)).unwrap();
        let client = {
            let _guard = rt.enter();
            reqwest::Client::builder()
                .use_preconfigured_tls(config)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap()
        };
        Member {
            rt,
            client,
            identity,
            certificate,
        }
    }

    /// Signs `note` as a checkpoint message of this member and posts it to `to`'s
    /// `POST /v1/mesh/gossip`; returns the HTTP status and JSON body.
    fn post_checkpoint(&self, to: &TestNode, note: &str) -> (u16, serde_json::Value) {
        let now = ztmesh_node::timefmt::now();
        let cose = UnsignedMessage {
            origin: self.identity.public().node_id(),
            kind: MessageKind::Checkpoint,
            body: CheckpointNote::new(note.to_owned())
                .unwrap()
                .encode()
                .unwrap(),
            created_at: now,
            expires_at: now.saturating_add(Duration::from_secs(600)),
            hop_limit: 8,
        }
        .sign(Some(self.certificate.clone()), |tbs| {
            self.identity.sign_envelope(tbs)
        })
        .unwrap();
        let url = format!("https://{}/v1/mesh/gossip", to.api_addr());
        self.rt.block_on(async {
            let response = self
                .client
                .post(&url)
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
}

/// `status.log` of `ztmesh status --json`.
fn log_status(node: &TestNode) -> serde_json::Value {
    node.status()["status"]["log"].clone()
}

/// Size and root of a checkpoint note.
fn head_of(note: &str) -> (u64, String) {
    let checkpoint = Checkpoint::parse(Note::parse(note).unwrap().text()).unwrap();
    (checkpoint.size(), checkpoint.root().to_base64())
}

#[track_caller]
fn assert_posted(reply: (u16, serde_json::Value)) {
    assert_eq!(reply.0, 202, "gossip refused: {}", reply.1);
}

/// Enrolls and starts `n` nodes with `policy` as their pinned log policy; waits for the mesh.
fn nodes_with_policy(root: &Path, ca: &TestCa, n: usize, policy: &str) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = (1..=n)
        .map(|i| ca.enroll(root, &format!("node{i}")))
        .collect();
    for node in &mut nodes {
        std::fs::write(node.dir.join("log-policy.txt"), policy).unwrap();
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, WAIT);
    nodes
}

#[test]
fn a_forged_checkpoint_of_the_same_size_gossiped_to_a_node_raises_the_split_view_alarm() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let played = PlayedLog::new();
    let mut nodes = nodes_with_policy(root.path(), &ca, 2, &played.policy());
    let status = log_status(&nodes[0]);
    assert_eq!(status["policy"], true, "{status}");
    assert!(status["size"].is_null(), "{status}");
    let member = Member::new(&ca, &nodes[0]);

    // The checkpoint everybody should see: posted to node1, relayed to node2 by gossip.
    let honest = played.note(&tree("honest", 5), 5, &[1, 2]);
    let (size, root_hash) = head_of(&honest);
    assert_posted(member.post_checkpoint(&nodes[0], &honest));
    for node in &nodes {
        wait_until(
            &format!("{} to accept the checkpoint", node.name),
            WAIT,
            || log_status(node)["size"] == size,
        );
        let status = log_status(node);
        assert_eq!(status["root"], root_hash.as_str());
        assert_eq!(status["witnesses_met"], serde_json::json!(["w1", "w2"]));
        assert_eq!(status["split_view"], false);
    }

    // A second history of the same size, validly signed by the log and two witnesses.
    let forged = played.note(&tree("forged", 5), 5, &[2, 3]);
    assert_ne!(head_of(&forged).1, root_hash);
    assert_posted(member.post_checkpoint(&nodes[0], &forged));
    for node in &nodes {
        wait_until(&format!("{} to raise the alarm", node.name), WAIT, || {
            log_status(node)["split_view"] == true
        });
        let status = log_status(node);
        assert_eq!(status["split_view_alarms"], 1, "{status}");
        assert_eq!(
            status["split_view_evidence"],
            serde_json::json!([honest, forged]),
            "both notes are kept as evidence"
        );
        // The accepted head is still the first one.
        assert_eq!(status["root"], root_hash.as_str());
        let text = node.cli_ok(&["status"]);
        assert!(text.contains("SPLIT VIEW"), "{text}");
    }
    // The error line carries both checkpoints.
    let log = nodes[0].proc.as_ref().unwrap().log_text();
    let line = log
        .lines()
        .find(|l| l.contains("SPLIT VIEW"))
        .unwrap_or_else(|| panic!("no SPLIT VIEW line in the node log:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&root_hash), "{line}");
    assert!(line.contains(&head_of(&forged).1), "{line}");

    // Sticky: more of the forgery does not count again (a note without quorum posted after it
    // marks when node2 has looked at it), and the nodes keep running.
    assert_posted(member.post_checkpoint(&nodes[1], &forged));
    assert_posted(member.post_checkpoint(&nodes[1], &played.note(&tree("x", 5), 5, &[1])));
    wait_until("node2 to look at both notes", WAIT, || {
        log_status(&nodes[1])["quorum_not_met"] == 1
    });
    let status = log_status(&nodes[1]);
    assert_eq!(status["split_view_alarms"], 1, "{status}");
    assert_eq!(status["split_view"], true, "{status}");
    for node in &mut nodes {
        node.proc.as_mut().unwrap().assert_running();
    }
}

#[test]
fn a_checkpoint_without_a_witness_quorum_is_not_accepted() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let played = PlayedLog::new();
    let mut nodes = nodes_with_policy(root.path(), &ca, 1, &played.policy());
    let node = &nodes[0];
    let member = Member::new(&ca, node);
    let log = tree("honest", 8);

    // Validly signed by the log, cosigned by one witness of the two required.
    assert_posted(member.post_checkpoint(node, &played.note(&log, 6, &[3])));
    wait_until("the refusal to be counted", WAIT, || {
        log_status(node)["quorum_not_met"] == 1
    });
    let status = log_status(node);
    assert!(
        status["size"].is_null(),
        "accepted without quorum: {status}"
    );
    assert_eq!(status["split_view"], false);
    let text = node.cli_ok(&["status"]);
    assert!(text.contains("no checkpoint accepted yet"), "{text}");
    assert!(text.contains("1 without quorum"), "{text}");

    // The same checkpoint with the quorum is accepted ...
    assert_posted(member.post_checkpoint(node, &played.note(&log, 6, &[1, 3])));
    wait_until("the checkpoint with quorum to be accepted", WAIT, || {
        log_status(node)["size"] == 6
    });
    assert_eq!(
        log_status(node)["witnesses_met"],
        serde_json::json!(["w1", "w3"])
    );
    // ... a fork without quorum still changes nothing ...
    assert_posted(member.post_checkpoint(node, &played.note(&tree("forged", 6), 6, &[2])));
    wait_until("the second refusal", WAIT, || {
        log_status(node)["quorum_not_met"] == 2
    });
    // ... and neither does an older checkpoint, valid as it is (relayed late, so not counted
    // as a rollback attempt: that counter is for the CA's own answers).
    assert_posted(member.post_checkpoint(node, &played.note(&log, 4, &[1, 2])));
    assert_posted(member.post_checkpoint(node, &played.note(&log, 6, &[2])));
    wait_until("the notes to be looked at", WAIT, || {
        log_status(node)["quorum_not_met"] == 3
    });
    let status = log_status(node);
    assert_eq!(status["size"], 6, "{status}");
    assert_eq!(status["stale"], 0, "{status}");
    assert_eq!(status["split_view"], false, "{status}");
    nodes[0].proc.as_mut().unwrap().assert_running();
}

#[test]
fn without_a_log_policy_the_node_does_not_watch_the_log() {
    let root = tempfile::tempdir().unwrap();
    // A CA started without --log-policy answers 404 no_policy: nothing is pinned.
    let ca = TestCa::start(root.path(), &[]);
    let mut node = ca.enroll(root.path(), "node1");
    assert!(!node.dir.join("log-policy.txt").exists());
    node.start();
    let status = log_status(&node);
    assert_eq!(status["policy"], false, "{status}");
    assert!(status["size"].is_null());
    let text = node.cli_ok(&["status"]);
    assert!(text.contains("not watched"), "{text}");
    // A checkpoint message is still valid gossip; it is just not looked at.
    let played = PlayedLog::new();
    let member = Member::new(&ca, &node);
    assert_posted(member.post_checkpoint(&node, &played.note(&tree("a", 2), 2, &[1, 2])));
    assert!(log_status(&node)["size"].is_null());
}

/// `ztmesh witness` on loopback, trusting `log_vkey`; returns (process, vkey, address).
fn start_witness(root: &Path, log_vkey: &str) -> (Proc, String, String) {
    let dir = root.join("witness");
    let data_dir = dir.to_str().unwrap();
    ztmesh_ok(&[
        "witness",
        "init",
        "--data-dir",
        data_dir,
        "--name",
        "witness.test/w1",
    ]);
    ztmesh_ok(&[
        "witness",
        "add-log",
        "--data-dir",
        data_dir,
        "--vkey",
        log_vkey,
    ]);
    let vkey = ztmesh_ok(&["witness", "key", "--data-dir", data_dir])
        .trim()
        .to_owned();
    let addr_file = dir.join("witness.addr");
    let mut proc = Proc::spawn(
        "witness",
        &["witness", "serve", "--data-dir", data_dir],
        dir.join("serve.log"),
    );
    wait_until("the witness to listen", WAIT, || {
        proc.assert_running();
        addr_file.exists()
    });
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .trim()
        .to_owned();
    (proc, vkey, addr)
}

/// The CA's current checkpoint size (`GET /v1/log/checkpoint`), if it has one.
fn ca_checkpoint_size(ca: &TestCa) -> Option<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ztmesh_node::tls::ca_client_config(&ca.ca_der(), None).unwrap();
    let client = {
        let _guard = rt.enter();
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .build()
            .unwrap()
    };
    rt.block_on(async {
        let response = client
            .get(format!("{}/v1/log/checkpoint", ca.url))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        Some(head_of(&response.text().await.ok()?).0)
    })
}

#[test]
fn nodes_pin_the_cas_policy_follow_the_witnessed_log_and_catch_a_fork_signed_with_its_key() {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
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
        .expect("ca init writes log.vkey")
        .trim()
        .to_owned();
    let (mut witness, witness_vkey, witness_addr) = start_witness(root.path(), &log_vkey);
    // A second witness the CA never asks (no URL): the test holds its key, playing a witness
    // that colludes with whoever holds the log key.
    let colluding = CosignatureSigner::generate("colluding.test", &mut rand::rngs::OsRng).unwrap();
    let policy = format!(
        "log {log_vkey}\nwitness w1 {witness_vkey} http://{witness_addr}\nwitness colluding {}\ngroup any-witness any w1 colluding\nquorum any-witness\n",
        colluding.vkey()
    );
    let policy_file = root.path().join("log-policy.txt");
    std::fs::write(&policy_file, &policy).unwrap();
    let mut ca = TestCa {
        dir: ca_dir.clone(),
        addr: String::new(),
        url: String::new(),
        fingerprint,
        proc: None,
    };
    ca.serve(
        "127.0.0.1:0",
        &["--log-policy", policy_file.to_str().unwrap()],
    );

    // Enrollment pins the policy next to the CA certificate.
    let mut nodes: Vec<TestNode> = (1..=2)
        .map(|i| ca.enroll(root.path(), &format!("node{i}")))
        .collect();
    for node in &nodes {
        assert_eq!(
            std::fs::read_to_string(node.dir.join("log-policy.txt")).unwrap(),
            policy
        );
    }
    for node in &mut nodes {
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, WAIT);

    // Both follow the CA's log, cosigned by the real witness.
    wait_until("the CA to publish a cosigned checkpoint", WAIT, || {
        ca_checkpoint_size(&ca).is_some_and(|size| size >= 2)
    });
    for node in &nodes {
        wait_until(&format!("{} to follow the log", node.name), WAIT, || {
            let status = log_status(node);
            status["size"].as_u64() >= Some(2)
                && status["witnesses_met"] == serde_json::json!(["w1"])
        });
    }
    // The log grows: a consistency proof moves them on.
    let before = log_status(&nodes[0])["size"].as_u64().unwrap();
    let mut cut_off = ca.enroll(root.path(), "node3");
    wait_until("node1 to accept the grown log", WAIT, || {
        log_status(&nodes[0])["size"].as_u64() > Some(before)
    });

    // A node that cannot reach the CA still learns the log by gossip.
    let cut_off_dir = NodeDir(cut_off.dir.clone());
    let mut config = cut_off_dir.read_config().unwrap();
    config.ca_url = "https://127.0.0.1:9".into();
    config.bootstrap_peers = vec![nodes[0].mesh_addr()];
    cut_off_dir.write_config(&config).unwrap();
    cut_off.start();
    wait_until(
        "the cut-off node to learn a checkpoint by gossip",
        WAIT,
        || log_status(&cut_off)["size"].as_u64().is_some(),
    );

    // Whoever holds the log key (here: read from the CA directory) and a colluding witness
    // sign another history of the size node1 holds; shown to node1, every node catches it.
    let sealed = std::fs::read_to_string(ca_dir.join("log.key")).unwrap();
    let private = ztmesh_pki::keyfile::open(&sealed, &protection(), false).unwrap();
    let log_key = Signer::from_private_key(std::str::from_utf8(&private).unwrap().trim()).unwrap();
    assert_eq!(log_key.vkey(), log_vkey);
    let held = log_status(&nodes[0]);
    let size = held["size"].as_u64().unwrap();
    let forged = checkpoint_note(&log_key, &tree("forged", size), size, &[&colluding]);
    assert_posted(Member::new(&ca, &nodes[0]).post_checkpoint(&nodes[0], &forged));
    for node in &nodes {
        wait_until(&format!("{} to raise the alarm", node.name), WAIT, || {
            log_status(node)["split_view"] == true
        });
    }
    let evidence = log_status(&nodes[0])["split_view_evidence"].clone();
    assert_eq!(evidence[1], forged.as_str(), "{evidence}");
    witness.assert_running();
    cut_off.proc.as_mut().unwrap().assert_running();
}
