//! End-to-end smoke test of the harness and the main path: CA, two nodes, a link.
mod common;

use std::time::Duration;

use common::*;

#[test]
fn two_nodes_enroll_and_link() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    a.start();
    b.start();
    wait_full_mesh(&[&a, &b], Duration::from_secs(30));
    let status = a.status();
    assert_eq!(status["status"]["node_id"], a.node_id.as_str());
    assert_eq!(status["status"]["peers_connected"], 1);
}
