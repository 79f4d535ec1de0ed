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

/// The ratios (last word of each line containing `label`) that `out` prints, each finite and
/// positive.
fn ratios(out: &str, label: &str) -> Vec<f64> {
    let ratios: Vec<f64> = out
        .lines()
        .filter(|l| l.contains(label))
        .map(|l| l.split_whitespace().last().unwrap().parse().unwrap())
        .collect();
    assert!(!ratios.is_empty(), "no {label:?} line in:\n{out}");
    for ratio in &ratios {
        assert!(ratio.is_finite() && *ratio > 0.0, "{ratio} in:\n{out}");
    }
    ratios
}

#[test]
fn bench_gossip_prints_a_ratio_against_raw_verification() {
    let out = ztmesh_ok(&["bench", "gossip", "--messages", "50", "--rounds", "1"]);
    ratios(&out, "ratio validated / raw");
    assert!(out.contains("messages/s") && out.contains("verifications/s"));
    assert!(out.contains("overhead 1 - ratio"), "{out}");
}

#[test]
fn bench_dtn_prints_a_ratio_per_payload_size() {
    let out = ztmesh_ok(&["bench", "dtn", "--bundles", "10"]);
    assert_eq!(ratios(&out, "ratio router / baseline").len(), 2, "{out}");
    assert!(out.contains("1 KiB") && out.contains("64 KiB"), "{out}");
    assert!(out.contains("accepts/s") && out.contains("inserts/s"));
}

#[test]
fn bench_tlog_prints_append_and_cosignature_ratios_and_a_met_quorum() {
    let out = ztmesh_ok(&[
        "bench",
        "tlog",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--checkpoints",
        "10",
        "--entries-per-checkpoint",
        "3",
    ]);
    ratios(&out, "ratio checkpointed / baseline");
    ratios(&out, "ratio cosign path / floor");
    ratios(&out, "ratio cosign path / baseline");
    assert!(
        out.contains("appends/s") && out.contains("cosignatures/s"),
        "{out}"
    );
    // One second of appends signs one checkpoint, and three witnesses on loopback cosign it.
    let quorum = out
        .lines()
        .find(|l| l.contains("met the 2-of-3 quorum:"))
        .unwrap_or_else(|| panic!("no quorum line in:\n{out}"));
    let counts: Vec<u64> = quorum
        .rsplit(':')
        .next()
        .unwrap()
        .split(" of ")
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert_eq!(counts, [1, 1], "{quorum}");
}

#[test]
fn bench_mesh_reports_latencies_of_gossip_revocation_and_relayed_bundles() {
    let out = ztmesh_ok(&[
        "bench",
        "mesh",
        "--nodes",
        "4",
        "--messages",
        "3",
        "--revocations",
        "1",
        "--bundles",
        "2",
    ]);
    for line in [
        "baseline: publish → event on its own node (3)",
        "publish → event on each other node (9)",
        "revoke call → revocation event on each node (3)",
        "revoke call → peer list shows the link closed (3)",
        "baseline: direct send → destination's event (2)",
        "destination restarted → event, via the relay (2)",
    ] {
        let found = out
            .lines()
            .find(|l| l.contains(line))
            .unwrap_or_else(|| panic!("no {line:?} line in:\n{out}"));
        assert!(found.contains(" ms   p99 "), "{found}");
    }
    for ratio in [
        "ratio each-node p50 / baseline p50",
        "ratio relayed p50 / direct p50",
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(ratio))
            .unwrap_or_else(|| panic!("no {ratio:?} line in:\n{out}"));
        let value: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
        assert!(value.is_finite() && value > 0.0, "{line}");
    }
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

/// `ztmesh attest verify` on the published samples: exit 0 only when the evidence verifies,
/// the refusal reason printed otherwise.
#[test]
fn attest_verify_reports_verdicts_and_refusals_on_published_samples() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ztmesh-attest/tests/fixtures"
    );
    let quote = format!("{fixtures}/dcap/tdx_quote");
    let collateral = format!("{fixtures}/dcap/tdx_quote_collateral.json");
    let base = [
        "attest",
        "verify",
        "--type",
        "tdx",
        "--evidence",
        quote.as_str(),
        "--collateral",
        collateral.as_str(),
    ];
    let mut ok_args = base.to_vec();
    ok_args.extend(["--at", "2025-07-01T00:00:00Z", "--json"]);
    let verdict: serde_json::Value = serde_json::from_str(&ztmesh_ok(&ok_args)).unwrap();
    assert_eq!(verdict["verified"], true);
    assert_eq!(verdict["verdict"]["tcb_status"], "UpToDate");
    assert_eq!(
        verdict["verdict"]["measurements"]["mrtd"]
            .as_str()
            .unwrap()
            .len(),
        96
    );

    let mut wrong_nonce = base.to_vec();
    wrong_nonce.extend(["--at", "2025-07-01T00:00:00Z", "--nonce", "00"]);
    let out = ztmesh(&wrong_nonce);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong_nonce"));

    // Today the sample's collateral has expired: refused, not trusted.
    let out = ztmesh(&base);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_chain"));

    let report = format!("{fixtures}/sev/report_milan.hex");
    let vcek = format!("{fixtures}/sev/vcek_milan.der");
    ztmesh_ok(&[
        "attest",
        "verify",
        "--type",
        "sev-snp",
        "--evidence",
        &report,
        "--collateral",
        &vcek,
        "--at",
        "2025-07-01T00:00:00Z",
    ]);
    let out = ztmesh(&[
        "attest",
        "verify",
        "--type",
        "sev-snp",
        "--evidence",
        &report,
    ]);
    assert!(!out.status.success(), "sev-snp needs the VCEK");
    let out = ztmesh(&[
        "attest",
        "verify",
        "--type",
        "quantum",
        "--evidence",
        &report,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown evidence type"));
}

/// Issue 12, "passphrases": a new key is never sealed under fewer than 12 characters unless
/// the operator says `--insecure-short-passphrase`, and the CA root key is never written in
/// plaintext. Each refusal says why and writes nothing.
#[test]
fn short_passphrases_and_a_plaintext_ca_root_key_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let with_passphrase = |pass: &str, args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .env("ZTMESH_PASSPHRASE", pass)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let ca = root.path().join("ca");
    let ca_init = ["ca", "init", "--trust-domain", "ok.test", "--data-dir"];
    let witness = root.path().join("witness");
    let witness_init = ["witness", "init", "--name", "w.example/1", "--data-dir"];
    let key = root.path().join("release.key");
    let keygen = ["manifest", "keygen", "--out"];
    for (command, target) in [
        (&ca_init[..], &ca),
        (&witness_init, &witness),
        (&keygen, &key),
    ] {
        let mut args = command.to_vec();
        args.push(path_str(target));
        let out = with_passphrase("hunter2hunt", &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted 11 characters");
        assert!(
            stderr.contains("11 characters; at least 12"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        let written = if target.is_dir() {
            std::fs::read_dir(target).unwrap().count()
        } else {
            usize::from(target.exists())
        };
        assert_eq!(written, 0, "{args:?} wrote something");
    }
    // The danger flag allows it, for throwaway setups.
    let mut args = witness_init.to_vec();
    args.extend([path_str(&witness), "--insecure-short-passphrase"]);
    assert!(with_passphrase("short", &args).status.success());

    // The CA root key in plaintext: refused with or without a passphrase at hand.
    let mut args = ca_init.to_vec();
    args.extend([path_str(&ca), "--insecure-plaintext-key"]);
    let out = with_passphrase(PASSPHRASE, &args);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused for the CA root key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ca.join("ca.key").exists());
    // Twelve characters are enough.
    let mut args = ca_init.to_vec();
    args.push(path_str(&ca));
    assert!(with_passphrase("hunter2hunte", &args).status.success());
}

/// Issue 12, "OpenSSL 3.0 keys": `ztmesh key export` turns a node's encrypted TLS key into a
/// PEM that `openssl s_client` uses to call the node's mTLS-only `GET /v1/status`.
#[test]
fn openssl_s_client_calls_a_node_with_its_key_from_key_export() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("SKIPPED: needs the `openssl` binary on PATH");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let mut node = ca.enroll(root.path(), "node");
    node.start();
    let exported = root.path().join("node-key.pem");
    ztmesh_ok(&[
        "key",
        "export",
        "--in",
        path_str(&node.dir.join("node.key")),
        "--out",
        path_str(&exported),
    ]);
    // Never over an existing file.
    let again = ztmesh(&[
        "key",
        "export",
        "--in",
        path_str(&node.dir.join("node.key")),
        "--out",
        path_str(&exported),
    ]);
    assert!(!again.status.success());
    use std::io::Write;
    let mut s_client = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &node.api_addr(),
            "-cert",
            path_str(&node.dir.join("node.pem")),
            "-key",
            path_str(&exported),
            "-CAfile",
            path_str(&node.dir.join("ca.pem")),
            "-verify_return_error",
            "-quiet",
            "-ign_eof",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    s_client
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = s_client.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("HTTP/1.1 200") && stdout.contains(&node.node_id),
        "s_client: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
