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

#[test]
fn bench_handshake_prints_a_ratio_against_the_baseline() {
    let out = ztmesh_ok(&[
        "bench",
        "handshake",
        "--iterations",
        "20",
        "--revoked",
        "50",
    ]);
    let ratio_line = out
        .lines()
        .find(|l| l.contains("ratio ztmesh / baseline"))
        .unwrap_or_else(|| panic!("no ratio line in:\n{out}"));
    let ratio: f64 = ratio_line
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ratio.is_finite() && ratio > 0.0, "{ratio_line}");
    assert!(out.contains("handshakes/s"));
}

#[test]
fn cli_answers_bad_input_with_a_message_and_non_zero_exit() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("x");
    let d = dir.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "ca",
                "init",
                "--trust-domain",
                "Bad Domain",
                "--data-dir",
                d,
            ],
            "trust-domain",
        ),
        (vec!["run", "--data-dir", d], "enroll"),
        (vec!["status", "--data-dir", d], "enroll"),
        (vec!["ca", "serve", "--data-dir", d], "ca init"),
        (vec!["token", "create"], "--ca-url or --ca-dir"),
        (
            vec![
                "ca",
                "init",
                "--trust-domain",
                "ok.test",
                "--data-dir",
                d,
                "--validity",
                "ten years",
            ],
            "duration",
        ),
        (
            vec!["bench", "handshake", "--iterations", "0"],
            "iterations",
        ),
    ];
    for (args, needle) in cases {
        let out = ztmesh(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr lacks {needle:?}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    }
    // No passphrase anywhere: a clear refusal, nothing created.
    let out = std::process::Command::new(bin())
        .args(["ca", "init", "--trust-domain", "ok.test", "--data-dir", d])
        .env_remove("ZTMESH_PASSPHRASE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase is required"));
    assert!(!dir.join("ca.key").exists());
}
