//! Nodes as monitors of the CA's membership log, with real processes: a node accepts only
//! checkpoints its pinned policy accepts, passes them on by gossip, and raises the split-view
//! alarm when two valid checkpoints of the same size disagree, whichever way they reach it.
//!
//! The forged-checkpoint tests play the log themselves (their own log key and witnesses, listed
//! in a `log-policy.txt` they write) and post checkpoints as gossip signed by a member, over
//! mutual TLS with that member's certificate. The other tests run the whole chain instead: a
//! CA serving its log with a policy, a real witness process cosigning it, nodes pinning that
//! policy at enrollment and following the log. They catch a fork signed with the CA's own log
//! key; a CA whose database was rolled back (to a genuinely cosigned older checkpoint) while a
//! node was down; and a certificate and a CRL signed with the CA's key but never logged.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ztmesh_gossip::kinds::CheckpointNote;
use ztmesh_gossip::{MessageKind, UnsignedMessage};
use ztmesh_node::node_dir::NodeDir;
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::IdentityKey;
use ztmesh_runtime::tls::{CurrentCertificate, MeshTrust};
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

/// Leaves every played log starts with. Nodes fetch the CA's entries to check each checkpoint
/// they accept against them: the CA's own log (a handful of entries here) must stay shorter
/// than the played ones, so that it can prove nothing either way about them, where a CA
/// holding as many entries would rightly be caught contradicting the played checkpoints.
const PLAYED_PREFIX: u64 = 1 << 16;

/// A played log: [`PLAYED_PREFIX`] shared leaves, then `size` leaves named `<branch>-<i>`.
fn played_tree(branch: &str, size: u64) -> MerkleTree {
    let mut tree = MerkleTree::new();
    for i in 0..PLAYED_PREFIX {
        tree.append(format!("shared-{i}").as_bytes());
    }
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
    let now = ztmesh_runtime::timefmt::now().as_unix_secs();
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
    /// (`tree` is a [`played_tree`]; `size` counts its leaves after the shared prefix.)
    fn note(&self, tree: &MerkleTree, size: u64, by: &[usize]) -> String {
        let witnesses: Vec<&CosignatureSigner> =
            by.iter().map(|i| &self.witnesses[i - 1]).collect();
        checkpoint_note(&self.log, tree, PLAYED_PREFIX + size, &witnesses)
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
        let config = ztmesh_runtime::tls::node_api_client_config(trust, Some(current)).unwrap();
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

    /// Posts a CRL (DER) to `to`'s `POST /v1/crl`; returns the HTTP status.
    fn post_crl(&self, to: &TestNode, der: Vec<u8>) -> u16 {
        let url = format!("https://{}/v1/crl", to.api_addr());
        self.rt.block_on(async {
            self.client
                .post(&url)
                .header("content-type", "application/pkix-crl")
                .body(der)
                .send()
                .await
                .expect("an answer")
                .status()
                .as_u16()
        })
    }

    /// Signs `note` as a checkpoint message of this member and posts it to `to`'s
    /// `POST /v1/mesh/gossip`; returns the HTTP status and JSON body.
    fn post_checkpoint(&self, to: &TestNode, note: &str) -> (u16, serde_json::Value) {
        let now = ztmesh_runtime::timefmt::now();
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

/// The finding of `kind` among the latest ones of a `status.log`.
fn finding<'a>(status: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    status["unlogged"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} finding in {status}"))
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
    let honest = played.note(&played_tree("honest", 5), 5, &[1, 2]);
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
    let forged = played.note(&played_tree("forged", 5), 5, &[2, 3]);
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
    assert_posted(member.post_checkpoint(&nodes[1], &played.note(&played_tree("x", 5), 5, &[1])));
    wait_until("node2 to look at both notes", WAIT, || {
        log_status(&nodes[1])["quorum_not_met"] == 1
    });
    let status = log_status(&nodes[1]);
    assert_eq!(status["split_view_alarms"], 1, "{status}");
    assert_eq!(status["split_view"], true, "{status}");

    // The operator acknowledges node2's alarm: only the one they saw (a count that is not
    // the raised alarm's changes nothing), then it is cleared with the count kept and its
    // evidence in state.db; the forgery seen again raises the next alarm.
    let refused = nodes[1].cli(&["log", "ack", "--alarms", "2"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("alarm_changed"), "{stderr}");
    assert_eq!(log_status(&nodes[1])["split_view"], true);
    let text = nodes[1].cli_ok(&["log", "ack", "--alarms", "1"]);
    assert!(text.contains("alarm 1 acknowledged"), "{text}");
    let status = log_status(&nodes[1]);
    assert_eq!(status["split_view"], false, "{status}");
    assert_eq!(status["split_view_alarms"], 1, "{status}");
    assert_eq!(
        status["root"],
        root_hash.as_str(),
        "the accepted head stays"
    );
    let again = nodes[1].cli(&["log", "ack", "--alarms", "1"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("no_alarm"));
    let kept = ztmesh_node::store::NodeStore::open(&nodes[1].dir.join("state.db"))
        .unwrap()
        .acknowledged_log_alarms()
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].0, 1);
    assert_eq!(kept[0].1.evidence, (honest.clone(), forged.clone()));
    assert_posted(member.post_checkpoint(&nodes[1], &forged));
    wait_until("node2 to raise the next alarm", WAIT, || {
        log_status(&nodes[1])["split_view"] == true
    });
    assert_eq!(log_status(&nodes[1])["split_view_alarms"], 2);
    // node1 was not acknowledged and still holds its alarm.
    assert_eq!(log_status(&nodes[0])["split_view"], true);
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
    let log = played_tree("honest", 8);

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
        log_status(node)["size"] == PLAYED_PREFIX + 6
    });
    assert_eq!(
        log_status(node)["witnesses_met"],
        serde_json::json!(["w1", "w3"])
    );
    // ... a fork without quorum still changes nothing ...
    assert_posted(member.post_checkpoint(node, &played.note(&played_tree("forged", 6), 6, &[2])));
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
    assert_eq!(status["size"], PLAYED_PREFIX + 6, "{status}");
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
    assert_posted(member.post_checkpoint(&node, &played.note(&played_tree("a", 2), 2, &[1, 2])));
    assert!(log_status(&node)["size"].is_null());
}

/// The CA's current checkpoint size (`GET /v1/log/checkpoint`), if it has one.
fn ca_checkpoint_size(ca: &TestCa) -> Option<u64> {
    Some(head_of(&ca_get_text(ca, "/v1/log/checkpoint")?).0)
}

/// The body of a successful `GET path` on the CA, or `None`.
fn ca_get_text(ca: &TestCa, path: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), None).unwrap();
    let client = {
        let _guard = rt.enter();
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .build()
            .unwrap()
    };
    rt.block_on(async {
        let response = client.get(format!("{}{path}", ca.url)).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    })
}

/// The size of the CA's checkpoint once it covers every entry of the log and carries the
/// witness's cosignature; `None` while entries are still waiting for a checkpoint.
fn ca_settled_log_size(ca: &TestCa) -> Option<u64> {
    let note = ca_get_text(ca, "/v1/log/checkpoint")?;
    if !note.contains("\u{2014} witness.test/w1 ") {
        return None;
    }
    let size = head_of(&note).0;
    let past_the_end = ca_get_text(ca, &format!("/v1/log/entries?start={size}&count=1"))?;
    let past_the_end: serde_json::Value = serde_json::from_str(&past_the_end).ok()?;
    past_the_end["entries"]
        .as_array()
        .is_some_and(Vec::is_empty)
        .then_some(size)
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
    // Members report events to the log (tier changes), so it may move on between reading a
    // node's head and the node looking at the forgery, which is then only a late relay to it.
    // The test waits on the alarm itself: a forgery is signed for each size a node not yet
    // alarmed holds, every one shown to node1 only, until every node has caught one.
    let member = Member::new(&ca, &nodes[0]);
    let mut forged: std::collections::BTreeMap<u64, String> = Default::default();
    for node in &nodes {
        wait_until(&format!("{} to raise the alarm", node.name), WAIT, || {
            let status = log_status(node);
            if status["split_view"] == true {
                return true;
            }
            if let Some(size) = status["size"].as_u64() {
                forged.entry(size).or_insert_with(|| {
                    let note =
                        checkpoint_note(&log_key, &tree("forged", size), size, &[&colluding]);
                    assert_posted(member.post_checkpoint(&nodes[0], &note));
                    note
                });
            }
            false
        });
    }
    let evidence = log_status(&nodes[0])["split_view_evidence"].clone();
    assert!(
        forged.values().any(|note| evidence[1] == note.as_str()),
        "{evidence}"
    );
    witness.assert_running();
    cut_off.proc.as_mut().unwrap().assert_running();
}

/// How long the cross-check tests wait for rotations and the log to move past them.
const SLOW_WAIT: Duration = Duration::from_secs(300);

/// A CA serving its membership log with a policy of one real witness (`w1`, the quorum).
struct WitnessedCa {
    ca: TestCa,
    witness: Proc,
    serve_args: Vec<String>,
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
        let mut serve_args = vec![
            "--log-policy".to_owned(),
            policy_file.to_str().unwrap().to_owned(),
        ];
        serve_args.extend(extra_serve_args.iter().map(|a| (*a).to_owned()));
        let mut ca = TestCa {
            dir: ca_dir,
            addr: String::new(),
            url: String::new(),
            fingerprint,
            proc: None,
        };
        let args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
        ca.serve("127.0.0.1:0", &args);
        WitnessedCa {
            ca,
            witness,
            serve_args,
        }
    }

    /// Stops the CA (SIGKILL), runs `while_down` on its data directory, serves it again on
    /// the same address.
    fn stop_then(&mut self, while_down: impl FnOnce(&Path)) {
        if let Some(mut proc) = self.ca.proc.take() {
            proc.kill9();
        }
        while_down(&self.ca.dir);
        let addr = self.ca.addr.clone();
        let args: Vec<&str> = self.serve_args.iter().map(String::as_str).collect();
        self.ca.serve(&addr, &args);
    }
}

const CA_DATABASE_FILES: [&str; 3] = ["state.db", "state.db-wal", "state.db-shm"];

/// Copies the (stopped) CA's database, WAL included, into `to`.
fn copy_ca_database(ca_dir: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in CA_DATABASE_FILES {
        let from = ca_dir.join(name);
        if from.exists() {
            std::fs::copy(&from, to.join(name)).unwrap();
        }
    }
}

/// Puts the copy back in place of the (stopped) CA's database.
fn restore_ca_database(from: &Path, ca_dir: &Path) {
    for name in CA_DATABASE_FILES {
        let _ = std::fs::remove_file(ca_dir.join(name));
        if from.join(name).exists() {
            std::fs::copy(from.join(name), ca_dir.join(name)).unwrap();
        }
    }
}

/// The CA rolls its log back while a node is down: it serves an older checkpoint that the
/// witness really cosigned back then. The node, restarted, carries on from the head it saved,
/// raises the rollback alarm and does not take the older checkpoint; the alarm outlives the
/// next restart too.
#[test]
fn a_node_restarted_after_the_ca_rolled_its_log_back_raises_the_alarm_and_keeps_its_head() {
    let root = tempfile::tempdir().unwrap();
    let mut wca = WitnessedCa::start(root.path(), &[]);
    let mut node = wca.ca.enroll(root.path(), "node1");
    node.start();

    // The node follows the log to the CA's cosigned checkpoint.
    let follows = |node: &TestNode, ca: &TestCa| {
        let size = ca_checkpoint_size(ca);
        let status = log_status(node);
        size.is_some()
            && status["size"].as_u64() == size
            && status["witnesses_met"] == serde_json::json!(["w1"])
    };
    // (Its own enrollment is in the log: the empty log's checkpoint does not count.)
    wait_until("node1 to follow the cosigned log", WAIT, || {
        follows(&node, &wca.ca) && log_status(&node)["size"].as_u64() >= Some(1)
    });

    // The log moves with the node's own reports (tier changes), so the node is stopped and the
    // test waits until the CA's cosigned checkpoint covers every entry: nothing else writes to
    // the log, and the copy taken next holds exactly that checkpoint.
    node.kill9();
    let mut old_size = None;
    wait_until(
        "the CA's cosigned checkpoint to cover its whole log",
        WAIT,
        || {
            old_size = ca_settled_log_size(&wca.ca);
            old_size.is_some()
        },
    );
    let old_size = old_size.unwrap();

    // A copy of the CA's state at that size, genuinely cosigned by the witness.
    let backup = root.path().join("ca-backup");
    wca.stop_then(|ca_dir| copy_ca_database(ca_dir, &backup));
    assert_eq!(ca_checkpoint_size(&wca.ca), Some(old_size));
    node.start();

    // The log grows; the witness cosigns; the node moves on.
    for name in ["node2", "node3"] {
        wca.ca.enroll(root.path(), name);
    }
    wait_until("node1 to follow and verify the grown log", WAIT, || {
        let status = log_status(&node);
        follows(&node, &wca.ca)
            && status["size"].as_u64() > Some(old_size + 1)
            && status["entries_verified"] == status["size"]
    });
    // The node may still move on (its own reports grow the log) until it is stopped, so what it
    // holds after the restart is at least this head.
    let seen = log_status(&node);
    let seen_size = seen["size"].as_u64().unwrap();
    assert_eq!(seen["split_view"], false, "{seen}");

    // Down go the node and the CA; the CA comes back from the old copy.
    node.kill9();
    wca.stop_then(|ca_dir| restore_ca_database(&backup, ca_dir));
    wait_until(
        "the rolled-back CA to serve its old checkpoint",
        WAIT,
        || ca_checkpoint_size(&wca.ca) == Some(old_size),
    );

    node.start();
    wait_until(
        "the restarted node to raise the rollback alarm",
        WAIT,
        || log_status(&node)["split_view"] == true,
    );
    let status = log_status(&node);
    let held_size = status["size"].as_u64().unwrap();
    assert!(
        held_size >= seen_size && held_size > old_size,
        "the older checkpoint was taken: {status}"
    );
    if held_size == seen_size {
        assert_eq!(status["root"], seen["root"], "{status}");
    }
    assert_eq!(status["split_view_alarms"], 1, "{status}");
    assert!(status["stale"].as_u64() >= Some(1), "{status}");
    let reason = status["split_view_reason"].as_str().unwrap();
    assert!(reason.contains("rolled back"), "{reason}");
    let evidence = status["split_view_evidence"].as_array().unwrap();
    let held_note = head_of(evidence[0].as_str().unwrap());
    assert_eq!(held_note.0, held_size);
    assert_eq!(serde_json::json!(held_note.1), status["root"], "{status}");
    let served = evidence[1].as_str().unwrap();
    assert_eq!(head_of(served).0, old_size);
    assert!(
        served.contains("\u{2014} witness.test/w1 "),
        "really cosigned: {served}"
    );
    let text = node.cli_ok(&["status"]);
    assert!(
        text.contains("SPLIT VIEW") && text.contains("rolled back"),
        "{text}"
    );
    let log = node.proc.as_ref().unwrap().log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("SPLIT VIEW") && l.contains("rolled back")),
        "{log}"
    );

    // Sticky across another restart, counted once.
    node.kill9();
    node.start();
    let status = log_status(&node);
    assert_eq!(status["split_view"], true, "{status}");
    assert_eq!(status["split_view_alarms"], 1, "{status}");
    assert_eq!(status["size"], held_size, "{status}");
    wca.witness.assert_running();
    node.proc.as_mut().unwrap().assert_running();
}

/// Gives `node` a second certificate signed with the CA's key (as whoever holds it could)
/// that the CA never recorded nor logged: valid since 5 minutes, for an hour. Returns its
/// serial.
fn issue_outside_the_log(ca: &TestCa, node: &TestNode) -> ztmesh_pki::Serial {
    let authority = ztmesh_ca::ca_service::load_ca(
        &ztmesh_ca::ca_service::CaDir(ca.dir.clone()),
        &protection(),
        false,
    )
    .unwrap();
    let dir = NodeDir(node.dir.clone());
    let identity = dir.read_identity(&protection(), false).unwrap();
    let (tls_key, _) = dir.read_tls(&protection(), false).unwrap();
    let node_id = identity.public().node_id();
    let csr = tls_key
        .csr_der(&node_id, &"test.ztmesh".parse().unwrap())
        .unwrap();
    let now = ztmesh_runtime::timefmt::now();
    let issued = authority
        .issue_node_certificate(&ztmesh_pki::NodeCertificateRequest {
            csr_der: &csr,
            identity_key: &identity.public(),
            serial: ztmesh_pki::Serial::random(&mut rand::rngs::OsRng),
            not_before: now.saturating_sub(Duration::from_secs(300)),
            not_after: now.saturating_add(Duration::from_secs(3600)),
        })
        .unwrap();
    dir.install_certificate(&issued.der, &tls_key, &protection())
        .unwrap();
    issued.serial
}

/// Asks the CA for a certificate in `node`'s name with its keys (as whoever stole them, or the
/// CA itself, could), which the CA logs but `node` never installs. Returns its serial.
fn rotate_behind_its_back(ca: &TestCa, node: &TestNode) -> ztmesh_pki::Serial {
    let dir = NodeDir(node.dir.clone());
    let identity = dir.read_identity(&protection(), false).unwrap();
    let (tls_key, certificate) = dir.read_tls(&protection(), false).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let current =
        Arc::new(CurrentCertificate::new(vec![certificate], &tls_key.to_pkcs8_der()).unwrap());
    let answer = rt.block_on(async {
        let client =
            ztmesh_node::ca_client::CaClient::new(&ca.url, &ca.ca_der(), Some(current)).unwrap();
        client
            .rotate(
                &identity,
                &ztmesh_pki::TlsKeyPair::generate().unwrap(),
                &identity.public().node_id(),
                &"test.ztmesh".parse().unwrap(),
            )
            .await
            .unwrap()
    });
    ztmesh_pki::Serial::from_hex(&answer.serial).unwrap()
}

/// Rotating certificates every ~20 s and a logged revocation raise nothing; a certificate
/// and a CRL signed with the CA's key outside the log raise `unlogged_certificate` and
/// `unlogged_revocation`; a CRL leaving out a logged revocation raises `withheld_revocation`;
/// a logged certificate in a node's name that it never installed raises
/// `foreign_certificate` on that node; and the links stay up.
#[test]
fn certificates_and_revocations_are_cross_checked_against_the_verified_log() {
    let root = tempfile::tempdir().unwrap();
    let wca = WitnessedCa::start(root.path(), &["--cert-lifetime", "60s"]);
    let ca = &wca.ca;
    let mut nodes: Vec<TestNode> = (1..=2)
        .map(|i| ca.enroll(root.path(), &format!("node{i}")))
        .collect();
    let spare = ca.enroll(root.path(), "spare");
    let mut rogue = ca.enroll(root.path(), "rogue");

    // A revocation done by the book (logged) first, so that the log is far enough past it
    // for a CRL to owe it by the end of the test.
    let spare_serial = {
        let der = NodeDir::read_cert(&spare.dir.join("node.pem")).unwrap();
        ztmesh_pki::NodeCertificate::parse(&der).unwrap().serial
    };
    let revoked_by = ztmesh_runtime::timefmt::now();
    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--node-id",
        &spare.node_id,
    ]);
    // A certificate in node2's name, logged, that node2 never gets.
    let foreign_serial = rotate_behind_its_back(ca, &nodes[1]);
    for node in &mut nodes {
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, WAIT);

    // A certificate issued outside the log.
    let rogue_serial = issue_outside_the_log(ca, &rogue);
    let rogue_dir = NodeDir(rogue.dir.clone());
    let mut config = rogue_dir.read_config().unwrap();
    config.bootstrap_peers = vec![nodes[0].mesh_addr()];
    rogue_dir.write_config(&config).unwrap();
    rogue.start();
    wait_until("node1 to link with the rogue node", WAIT, || {
        nodes[0].connected_to(&rogue.node_id)
    });

    for node in &nodes {
        wait_until(
            &format!(
                "{} to flag the certificate issued outside the log",
                node.name
            ),
            SLOW_WAIT,
            || log_status(node)["unlogged_certificates"] == 1,
        );
        wait_until(
            &format!(
                "{} to check rotated certificates and the revocation",
                node.name
            ),
            SLOW_WAIT,
            || {
                let status = log_status(node);
                status["certificates_checked"].as_u64() >= Some(3)
                    && status["revocations_checked"].as_u64() >= Some(1)
            },
        );
        let status = log_status(node);
        let unlogged = finding(&status, "unlogged_certificate");
        assert_eq!(
            unlogged["serial"],
            rogue_serial.to_hex().as_str(),
            "{status}"
        );
        assert_eq!(unlogged["node_id"], rogue.node_id.as_str(), "{status}");
        // Everything else checked was logged: the enrollments, every rotation, the revocation.
        assert_eq!(status["unlogged_certificates"], 1, "{status}");
        assert_eq!(status["unlogged_revocations"], 0, "{status}");
        assert_eq!(status["split_view"], false, "{status}");
        assert!(node.status()["status"]["rotations"].as_u64() >= Some(1));
        let text = node.cli_ok(&["status"]);
        assert!(
            text.contains("UNLOGGED") && text.contains(&rogue_serial.to_hex()),
            "{text}"
        );
        let log = node.proc.as_ref().unwrap().log_text();
        assert!(
            log.lines().any(|l| l.contains("WARN")
                && l.contains("UNLOGGED CERTIFICATE")
                && l.contains(&rogue.node_id)
                && l.contains(&rogue_serial.to_hex())),
            "{log}"
        );
    }
    // An alarm, not a refusal: the link is still up.
    assert!(nodes[0].connected_to(&rogue.node_id));

    // A CRL signed with the CA's key revoking a serial the log never saw revoked (with the
    // logged revocation beside it), pushed to node1.
    let authority = ztmesh_ca::ca_service::load_ca(
        &ztmesh_ca::ca_service::CaDir(ca.dir.clone()),
        &protection(),
        false,
    )
    .unwrap();
    let now = ztmesh_runtime::timefmt::now();
    let silent = ztmesh_pki::Serial::random(&mut rand::rngs::OsRng);
    let entry = |serial: &ztmesh_pki::Serial| ztmesh_pki::RevokedEntry {
        serial: serial.clone(),
        revoked_at: now.saturating_sub(Duration::from_secs(400)),
        reason: ztmesh_pki::RevocationReason::Unspecified,
    };
    let crl = authority
        .sign_crl(
            &[entry(&spare_serial), entry(&silent)],
            1_000_000,
            now.saturating_sub(Duration::from_secs(300)),
            now.saturating_add(Duration::from_secs(86_400)),
        )
        .unwrap();
    let member = Member::new(ca, &nodes[1]);
    assert_eq!(member.post_crl(&nodes[0], crl), 204);
    wait_until(
        "node1 to flag the revocation outside the log",
        SLOW_WAIT,
        || log_status(&nodes[0])["unlogged_revocations"] == 1,
    );
    let status = log_status(&nodes[0]);
    let revocation = finding(&status, "unlogged_revocation");
    assert_eq!(revocation["serial"], silent.to_hex().as_str(), "{status}");
    assert!(revocation["node_id"].is_null());
    assert_eq!(status["unlogged_certificates"], 1, "{status}");

    // node2 never held the certificate logged in its name; node1 was not named by it.
    wait_until(
        "node2 to flag the certificate logged in its name",
        SLOW_WAIT,
        || log_status(&nodes[1])["foreign_certificates"] == 1,
    );
    let status = log_status(&nodes[1]);
    let foreign = finding(&status, "foreign_certificate");
    assert_eq!(
        foreign["serial"],
        foreign_serial.to_hex().as_str(),
        "{status}"
    );
    assert_eq!(foreign["node_id"], nodes[1].node_id.as_str(), "{status}");
    assert_eq!(log_status(&nodes[0])["foreign_certificates"], 0);
    let text = nodes[1].cli_ok(&["status"]);
    assert!(
        text.contains("FOREIGN CERT") && text.contains(&foreign_serial.to_hex()),
        "{text}"
    );

    // A newer CRL signed with the CA's key that leaves out the logged revocation, with a
    // thisUpdate 120 s after it: the log owes it to every CRL since.
    let crl = authority
        .sign_crl(
            &[entry(&silent)],
            1_000_001,
            revoked_by.saturating_add(Duration::from_secs(120)),
            now.saturating_add(Duration::from_secs(86_400)),
        )
        .unwrap();
    assert_eq!(member.post_crl(&nodes[0], crl), 204);
    wait_until(
        "node1 to flag the revocation left out of the CRL",
        SLOW_WAIT,
        || log_status(&nodes[0])["withheld_revocations"] == 1,
    );
    let status = log_status(&nodes[0]);
    let withheld = finding(&status, "withheld_revocation");
    assert_eq!(
        withheld["serial"],
        spare_serial.to_hex().as_str(),
        "{status}"
    );
    assert_eq!(withheld["node_id"], spare.node_id.as_str(), "{status}");
    // The serial it lists was checked before and is not counted again as unlogged.
    assert_eq!(status["unlogged_revocations"], 1, "{status}");
    let log = nodes[0].proc.as_ref().unwrap().log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("WITHHELD REVOCATION")
            && l.contains(&spare_serial.to_hex())),
        "{log}"
    );
    for node in &mut nodes {
        node.proc.as_mut().unwrap().assert_running();
    }
}

/// `log_stall_secs` of the stall test: long enough for a few fetches of the CA's checkpoint
/// (every 10 s) on a loaded machine, short enough to keep the test quick.
const STALL_SECS: &str = "30";

/// The finding of issue 12 item 3: the CA restarted without its log policy, a new node
/// enrolled and linked to every peer, and no node raised anything while the log stayed
/// unwitnessed (only `quorum_not_met` counted). Now every node watching the log raises
/// `log_stalled`: the two that followed the witnessed log because no checkpoint meeting the
/// quorum arrives any more, and the new one (given the pinned policy by its operator) for the
/// same reason and because its own enrollment is never covered. One acknowledges it; another
/// sees it clear by itself once the CA is back with its policy and the witness cosigns again.
#[test]
fn a_ca_restarted_without_its_log_policy_raises_log_stalled_on_every_node() {
    let root = tempfile::tempdir().unwrap();
    let mut wca = WitnessedCa::start(root.path(), &[]);
    let mut nodes: Vec<TestNode> = (1..=2)
        .map(|i| wca.ca.enroll(root.path(), &format!("node{i}")))
        .collect();
    for node in &mut nodes {
        set_config(&node.dir, "log_stall_secs", STALL_SECS);
        node.start();
    }
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, WAIT);
    for node in &nodes {
        wait_until(
            &format!("{} to follow the cosigned log", node.name),
            WAIT,
            || {
                let status = log_status(node);
                status["size"].as_u64() >= Some(2)
                    && status["witnesses_met"] == serde_json::json!(["w1"])
            },
        );
        let status = log_status(node);
        assert_eq!(status["log_stalled"], false, "{status}");
        assert_eq!(status["log_stall_secs"], 30, "{status}");
    }
    let policy = std::fs::read_to_string(nodes[0].dir.join("log-policy.txt")).unwrap();

    // The CA comes back without its policy: nothing it signs from now on is witnessed.
    wca.ca.restart(&[]);
    let mut newcomer = wca.ca.enroll(root.path(), "node3");
    assert!(
        !newcomer.dir.join("log-policy.txt").exists(),
        "a CA without a policy pins none"
    );
    std::fs::write(newcomer.dir.join("log-policy.txt"), &policy).unwrap();
    set_config(&newcomer.dir, "log_stall_secs", STALL_SECS);
    newcomer.start();
    nodes.push(newcomer);
    let refs: Vec<&TestNode> = nodes.iter().collect();
    wait_full_mesh(&refs, WAIT);

    for node in &nodes {
        wait_until(
            &format!("{} to raise log_stalled", node.name),
            SLOW_WAIT,
            // (With the unwitnessed checkpoints it refused, seen before or after the alarm.)
            || {
                let status = log_status(node);
                status["log_stalled"] == true && status["quorum_not_met"].as_u64() >= Some(1)
            },
        );
        let status = log_status(node);
        assert_eq!(status["log_stalled_alarms"], 1, "{status}");
        assert!(status["log_stalled_since"].is_string(), "{status}");
        assert_eq!(
            status["split_view"], false,
            "a liveness alarm, not a fork: {status}"
        );
        let log = node.proc.as_ref().unwrap().log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains("LOG STALLED")),
            "{log}"
        );
        let text = node.cli_ok(&["status"]);
        assert!(text.contains("LOG STALLED"), "{text}");
    }

    // node1's operator acknowledges the alarm they saw (another count changes nothing).
    let refused = nodes[0].cli(&["log", "ack", "--alarm", "log-stalled", "--alarms", "2"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("alarm_changed"));
    let text = nodes[0].cli_ok(&["log", "ack", "--alarm", "log-stalled", "--alarms", "1"]);
    assert!(text.contains("log_stalled alarm 1 acknowledged"), "{text}");
    let status = log_status(&nodes[0]);
    assert_eq!(status["log_stalled"], false, "{status}");
    assert_eq!(status["log_stalled_alarms"], 1, "{status}");
    let history = ztmesh_node::store::NodeStore::open(&nodes[0].dir.join("state.db"))
        .unwrap()
        .log_stall_history()
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        history[0].ended_by,
        ztmesh_node::store::StallEnd::Acknowledged
    );
    // The split-view acknowledgement is a separate one: there is no split view to clear.
    let refused = nodes[0].cli(&["log", "ack", "--alarms", "1"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no_alarm"));

    // The CA is back with its policy: the witness cosigns the grown log and node2's alarm
    // clears by itself, counted and kept in the history.
    let args: Vec<&str> = wca.serve_args.iter().map(String::as_str).collect();
    wca.ca.restart(&args);
    wait_until("node2 to see the log live again", SLOW_WAIT, || {
        let status = log_status(&nodes[1]);
        status["log_stalled"] == false && status["witnesses_met"] == serde_json::json!(["w1"])
    });
    let status = log_status(&nodes[1]);
    assert_eq!(status["log_stalled_alarms"], 1, "{status}");
    let history = ztmesh_node::store::NodeStore::open(&nodes[1].dir.join("state.db"))
        .unwrap()
        .log_stall_history()
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].ended_by, ztmesh_node::store::StallEnd::Recovered);
    wca.witness.assert_running();
    for node in &mut nodes {
        node.proc.as_mut().unwrap().assert_running();
    }
}
