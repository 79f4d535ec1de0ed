//! A node as a witness of its own mesh's membership log (`[witness]` of node.toml), with real
//! processes: a CA whose log policy names node1's witness as its only one (quorum 1), nodes that
//! earn Tier 1 with the dev TEE and a signed manifest, and node1's witness cosigning the CA's
//! checkpoints only once node1 itself is Tier 1.
//!
//! What must hold: below Tier 1 the witness answers 503 with the reason, counts the refusal and
//! stores nothing, and the CA's checkpoint carries no cosignature of it; at Tier 1 the CA's
//! checkpoint carries node1's cosignature and `ztmesh log verify --policy` accepts it; after a
//! SIGKILL and a restart the witness remembers what it cosigned and refuses a rolled-back
//! checkpoint with 409 and the size it knows.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use ztmesh_tlog::{AddCheckpointRequest, Checkpoint, CosignatureVerifier, Note};
use ztmesh_witness::store::WitnessStore;

const ORIGIN: &str = "test.ztmesh/membership";
const WAIT: Duration = Duration::from_secs(60);

/// A loopback address nothing listens on now, for a witness the policy must name before it
/// runs.
fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The CA's newest checkpoint as `ztmesh log checkpoint` prints it, if it has one.
fn ca_checkpoint(ca: &TestCa) -> Option<Note> {
    let out = ztmesh(&["log", "checkpoint", "--ca-dir", ca.dir.to_str().unwrap()]);
    if !out.status.success() {
        return None;
    }
    Some(Note::parse(std::str::from_utf8(&out.stdout).unwrap()).expect("a signed note"))
}

fn size_of(note: &Note) -> u64 {
    Checkpoint::parse(note.text()).unwrap().size()
}

/// Whether `note` carries a valid cosignature of `witness`.
fn cosigned_by(note: &Note, witness: &CosignatureVerifier) -> bool {
    witness.verify_note(note).ok().flatten().is_some()
}

/// `POST /add-checkpoint` to `addr` with `note` from old size `old` (no proof: only valid from
/// 0, which is all these tests send).
fn post_checkpoint(addr: &str, old: u64, note: &Note) -> PlainReply {
    let body = AddCheckpointRequest::new(old, Vec::new(), note.clone())
        .unwrap()
        .to_body();
    exchange(
        addr,
        &request_bytes("POST", "/add-checkpoint", body.as_bytes()),
    )
    .expect("an answer from the node's witness")
}

fn status(node: &TestNode) -> serde_json::Value {
    node.status()["status"].clone()
}

/// `[[logs]]` tables in a witness.toml (the commented example does not count).
fn logs_in(witness_toml: &str) -> usize {
    witness_toml
        .lines()
        .filter(|l| l.trim() == "[[logs]]")
        .count()
}

fn witness_db_head(witness_dir: &Path) -> Option<u64> {
    WitnessStore::open(&witness_dir.join("witness.db"))
        .unwrap()
        .head(ORIGIN)
        .unwrap()
        .map(|head| head.size)
}

#[test]
fn only_a_tier1_node_cosigns_its_meshs_log_and_its_witness_state_survives_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let mut ca = TestCa::init(root.path());

    // node1's witness exists before node1 is enrolled: the CA's policy must name it.
    let witness_dir = root.path().join("node1").join("witness");
    ztmesh_ok(&[
        "witness",
        "init",
        "--data-dir",
        path_str(&witness_dir),
        "--name",
        "node1.test/witness",
    ]);
    let witness_vkey = ztmesh_ok(&["witness", "key", "--data-dir", path_str(&witness_dir)])
        .trim()
        .to_owned();
    let witness = CosignatureVerifier::parse(&witness_vkey).unwrap();
    let witness_addr = free_loopback_addr();
    let policy = format!(
        "log {}\nwitness node1 {witness_vkey} http://{witness_addr}\nquorum node1\n",
        ca.log_vkey()
    );
    let policy_path = root.path().join("policy.txt");
    std::fs::write(&policy_path, &policy).unwrap();
    ca.serve("127.0.0.1:0", &["--log-policy", path_str(&policy_path)]);

    let release = release(root.path());
    let mut node1 = ca.enroll(root.path(), "node1");
    let mut node2 = ca.enroll(root.path(), "node2");
    for node in [&node1, &node2] {
        configure_tier1(node, &release);
    }
    let config = node1.dir.join("node.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[witness]\nenabled = true\nlisten = \"{witness_addr}\"\n"
    ));
    std::fs::write(&config, text).unwrap();

    // The two enrollments are in the log; the CA signed a checkpoint nobody could cosign yet.
    let mut first = None;
    wait_until("the CA's first checkpoint", WAIT, || {
        first = ca_checkpoint(&ca).filter(|note| size_of(note) >= 2);
        first.is_some()
    });
    let first = first.unwrap();

    // Right after start node1 is Tier 2 (Tier 1 takes 100 health checks, 10 s at the least):
    // its witness refuses, says why, and stores nothing.
    node1.start();
    let reply = post_checkpoint(&witness_addr, 0, &first);
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(
        reply.body.starts_with("this node is tier 2 (")
            && reply.body.ends_with("; only Tier 1 nodes witness\n"),
        "{reply:?}"
    );
    let before = status(&node1);
    assert_ne!(before["trust"]["tier"], "tier 1", "{before}");
    assert_eq!(before["witness"]["listen"], witness_addr.as_str());
    assert_eq!(before["witness"]["vkey"], witness_vkey.as_str());
    assert_eq!(before["witness"]["cosigned"], 0, "{before}");
    let refused = before["witness"]["refused_not_tier1"].as_u64().unwrap();
    assert!(refused >= 1, "{before}");
    // The tier gates count it too (read a moment earlier, so perhaps one fewer).
    let counted = before["trust"]["gate_refusals"]["witness"]
        .as_u64()
        .unwrap();
    assert!((1..=refused).contains(&counted), "{before}");
    assert_eq!(witness_db_head(&witness_dir), None);
    assert!(!ca_checkpoint(&ca).is_some_and(|note| cosigned_by(&note, &witness)));
    // The node added the pinned log to its witness directory, as `witness add-log` would.
    let witness_toml = std::fs::read_to_string(witness_dir.join("witness.toml")).unwrap();
    assert_eq!(logs_in(&witness_toml), 1, "{witness_toml}");
    assert!(witness_toml.contains(&ca.log_vkey()), "{witness_toml}");

    node2.start();
    assert!(status(&node2)["witness"].is_null());

    // Tier 1: a new log entry makes the CA sign a checkpoint and submit it at once; node1
    // cosigns it, and the policy (node1's cosignature is its quorum) accepts it.
    wait_until("node1 to be Tier 1", TIER_TIMEOUT, || {
        status(&node1)["trust"]["tier"] == "tier 1"
    });
    let _node3 = ca.enroll(root.path(), "node3");
    let mut cosigned = None;
    wait_until(
        "the CA's checkpoint to carry node1's cosignature",
        WAIT * 2,
        || {
            cosigned = ca_checkpoint(&ca).filter(|note| cosigned_by(note, &witness));
            cosigned.is_some()
        },
    );
    let cosigned = cosigned.unwrap();
    let size = size_of(&cosigned);
    assert!(size > size_of(&first));
    let verified = ztmesh_ok(&[
        "log",
        "verify",
        "--policy",
        path_str(&policy_path),
        "--ca-dir",
        path_str(&ca.dir),
    ]);
    assert!(verified.contains("log signature   valid"), "{verified}");
    let after = status(&node1);
    assert!(
        after["witness"]["cosigned"].as_u64().unwrap() >= 1,
        "{after}"
    );
    // Members report tier changes to the log, so it may already have grown past `size`.
    assert!(witness_db_head(&witness_dir).is_some_and(|held| held >= size));
    let human = node1.cli_ok(&["status"]);
    assert!(
        human.contains(&format!(
            "witness       http://{witness_addr}/add-checkpoint, "
        )),
        "{human}"
    );

    // SIGKILL and restart: the cosigned head is still there, the log is not added twice.
    node1.kill9();
    node1.start();
    let held = witness_db_head(&witness_dir).unwrap();
    assert!(held >= size, "{held} < {size}");
    let witness_toml = std::fs::read_to_string(witness_dir.join("witness.toml")).unwrap();
    assert_eq!(logs_in(&witness_toml), 1, "{witness_toml}");
    // Trust is earned again after a restart; once it is, the first (smaller) checkpoint sent
    // as if nothing had been cosigned is a rollback: 409 with the size the witness holds.
    wait_until("node1 to be Tier 1 again", TIER_TIMEOUT, || {
        status(&node1)["trust"]["tier"] == "tier 1"
    });
    let reply = post_checkpoint(&witness_addr, 0, &first);
    assert_eq!(reply.status, 409, "{reply:?}");
    assert_eq!(reply.content_type, "text/x.tlog.size");
    // The size in the answer is the head the witness held then: no smaller than before the
    // restart, no larger than what it holds now (the log keeps growing with tier reports).
    let answered: u64 = reply.body.trim_end().parse().unwrap();
    assert!(reply.body.ends_with('\n'), "{reply:?}");
    let now = witness_db_head(&witness_dir).unwrap();
    assert!(
        (held..=now).contains(&answered),
        "{held} <= {answered} <= {now}"
    );
    node1.proc.as_mut().unwrap().assert_running();
    node2.proc.as_mut().unwrap().assert_running();
}
