//! Upgrade of a node directory written by the previous version, with real processes: its
//! `revoked-nodes.json` and `governance.json` move into `state.db` at the first `ztmesh run`,
//! every value kept, the files kept as `*.json.imported`; the revoked node stays refused and
//! the governance decisions stay in force, also after a second restart.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);

fn publish(node: &TestNode, indicator: &str) -> String {
    node.cli_ok(&[
        "publish",
        "anomaly",
        "--hash",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "--type",
        indicator,
        "--score",
        "70",
    ])
    .trim()
    .to_owned()
}

fn holds(node: &TestNode, id: &str) -> bool {
    let list: serde_json::Value =
        serde_json::from_str(&node.cli_ok(&["anomalies", "--json"])).unwrap();
    list["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == id)
}

fn refused(node: &TestNode) -> u64 {
    node.status()["status"]["gossip"]["refused"]
        .as_u64()
        .unwrap()
}

fn parameters(node: &TestNode) -> serde_json::Value {
    let held: serde_json::Value =
        serde_json::from_str(&node.cli_ok(&["proposals", "--json"])).unwrap();
    held["parameters"].clone()
}

/// Takes a node's `state.db` back to the schema of the previous version (migration 6 undone),
/// as that version's `ztmesh enroll` left it.
fn as_previous_version(node: &TestNode) {
    let conn = rusqlite::Connection::open(node.dir.join("state.db")).unwrap();
    conn.execute_batch(
        "BEGIN;
         DROP TABLE revoked_nodes;
         DROP TABLE governance_decisions;
         DROP TABLE legacy_imports;
         PRAGMA user_version = 5;
         COMMIT;",
    )
    .unwrap();
}

#[test]
fn a_node_directory_of_the_previous_version_keeps_its_revocations_and_decisions() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut upgraded = ca.enroll(root.path(), "upgraded");
    let mut witness = ca.enroll(root.path(), "witness");
    let mut victim = ca.enroll(root.path(), "victim");
    as_previous_version(&upgraded);

    // The two files exactly as the previous version wrote them: the revoked set compact
    // (`serde_json::to_vec`), the decisions pretty-printed (`serde_json::to_vec_pretty`),
    // both in key order. Learnt times a little in the past, one of them the victim's.
    let now = ztmesh_runtime::timefmt::now().as_unix_millis();
    let mut revoked: BTreeMap<ztmesh_core::NodeId, u64> = BTreeMap::new();
    revoked.insert(victim.node_id.parse().unwrap(), now - 60_000);
    revoked.insert(ztmesh_core::NodeId::from_bytes([7; 20]), now - 3_600_000);
    revoked.insert(ztmesh_core::NodeId::from_bytes([9; 20]), now - 7_200_000);
    let revoked_json = serde_json::to_vec(&revoked).unwrap();
    let governance_json = b"{\n  \"gossip_fanout\": 2,\n  \"rate_limit_rpm\": 6000,\n  \"health_check_interval_secs\": 30\n}".to_vec();
    std::fs::write(upgraded.dir.join("revoked-nodes.json"), &revoked_json).unwrap();
    std::fs::write(upgraded.dir.join("governance.json"), &governance_json).unwrap();

    witness.start();
    victim.start();
    upgraded.start();
    wait_full_mesh(&[&upgraded, &witness, &victim], WAIT);

    // Imported: every value in state.db, the files kept under their new names, byte for byte.
    let conn = state_db(&upgraded.dir);
    let mut statement = conn
        .prepare("SELECT node_id, learnt_at FROM revoked_nodes")
        .unwrap();
    let saved: BTreeMap<ztmesh_core::NodeId, u64> = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?.parse().unwrap(), row.get(1)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(saved, revoked);
    assert_eq!(
        governance_in_state_db(&upgraded.dir),
        BTreeMap::from([
            ("gossip_fanout".to_owned(), 2),
            ("health_check_interval_secs".to_owned(), 30),
            ("rate_limit_rpm".to_owned(), 6000),
        ])
    );
    for (file, bytes) in [
        ("revoked-nodes.json", &revoked_json),
        ("governance.json", &governance_json),
    ] {
        assert!(!upgraded.dir.join(file).exists(), "{file} left in place");
        assert_eq!(
            &std::fs::read(upgraded.dir.join(format!("{file}.imported"))).unwrap(),
            bytes
        );
    }

    for restart in [false, true] {
        if restart {
            // The second start imports nothing and reads the same from state.db.
            upgraded.kill9();
            upgraded.start();
            wait_full_mesh(&[&upgraded, &witness, &victim], WAIT);
            assert_eq!(revoked_in_state_db(&upgraded.dir).len(), 3);
            // One line per file, both from the first start (the log is appended to).
            let log = upgraded.proc.as_ref().unwrap().log_text();
            assert_eq!(log.matches("imported into state.db").count(), 2, "{log}");
        }
        // The decisions are in force.
        let params = parameters(&upgraded);
        assert_eq!(params["gossip_fanout"], 2, "{params}");
        assert_eq!(params["rate_limit_rpm"], 6000, "{params}");
        assert_eq!(params["health_check_interval_secs"], 30, "{params}");
        assert_eq!(
            upgraded.status()["status"]["gossip"]["peer_frames_per_sec"],
            100
        );
        // The victim is still revoked: untrusted for the revocation learnt before the
        // upgrade, and what it says is refused, while the other node takes it.
        let view = peer_view(&upgraded, &victim).unwrap();
        assert_eq!(view["tier"], "untrusted", "{view}");
        let learnt = ztmesh_core::Timestamp::from_unix_millis(now - 60_000);
        assert_eq!(
            view["tier_reason"],
            format!("revoked (learnt at {learnt})"),
            "{view}"
        );
        let refused_before = refused(&upgraded);
        let said = publish(
            &victim,
            if restart {
                "after_restart"
            } else {
                "after_upgrade"
            },
        );
        wait_until(
            "the other node to take the victim's anomaly and the upgraded one to refuse it",
            WAIT,
            || holds(&witness, &said) && refused(&upgraded) > refused_before,
        );
        assert!(
            !holds(&upgraded, &said),
            "the upgraded node took a revoked node's message"
        );
    }
    upgraded.proc.as_mut().unwrap().assert_running();
}

/// A file the previous version would not have loaded stops the start, naming it, and nothing
/// of it is imported; so does another file under a name already imported.
#[test]
fn garbage_or_a_second_different_file_stops_the_start_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut node = ca.enroll(root.path(), "node");
    let run = |node: &TestNode| ztmesh(&["run", "--data-dir", node.dir.to_str().unwrap()]);

    std::fs::write(node.dir.join("governance.json"), b"{\"gossip_fanout\": 99}").unwrap();
    let out = run(&node);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("governance.json"), "{stderr}");
    assert!(node.dir.join("governance.json").exists());
    assert!(!node.dir.join("governance.json.imported").exists());
    assert!(governance_in_state_db(&node.dir).is_empty());

    std::fs::write(node.dir.join("governance.json"), b"{\"gossip_fanout\": 3}").unwrap();
    node.start();
    assert_eq!(parameters(&node)["gossip_fanout"], 3);
    node.kill9();
    std::fs::write(node.dir.join("governance.json"), b"{\"gossip_fanout\": 4}").unwrap();
    let out = run(&node);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("governance.json") && stderr.contains("already imported"),
        "{stderr}"
    );
    assert_eq!(
        governance_in_state_db(&node.dir),
        BTreeMap::from([("gossip_fanout".to_owned(), 3)])
    );
    assert_eq!(
        std::fs::read(node.dir.join("governance.json.imported")).unwrap(),
        b"{\"gossip_fanout\": 3}"
    );
}
