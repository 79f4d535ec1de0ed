//! Trust tiers on a real mesh: nodes challenge each other over their live TLS links, verify
//! the (dev, simulated) evidence bound to each link's TLS key, check the reported binary
//! against a signed release manifest, count health checks, and show the tier each earns.
//!
//! The dev TEE stands in for hardware here, and the nodes are configured to count it toward
//! Tier 1; the link protocol, the bindings, the manifest and the trust rules are the real ones.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn dev_attested_nodes_earn_tier1_a_foreign_binary_stays_tier2_and_a_failing_tee_is_demoted() {
    let root = tempfile::tempdir().unwrap();
    let release = release(root.path());
    // The CA verifies dev evidence too (with the same TEE key) but, started without a
    // manifest, issues no attestation tokens yet.
    let mut ca = TestCa::start(
        root.path(),
        &[
            "--allow-dev-attestation",
            "--dev-tee-key",
            &release.tee_public_hex,
        ],
    );
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    let mut c = ca.enroll(root.path(), "c");
    for node in [&a, &b, &c] {
        configure_tier1(node, &release);
    }
    // c runs a copy of the binary with one extra byte: it runs the same, but its hash is not
    // in the manifest, and neither is the measurement its dev TEE reports.
    let foreign = root.path().join("ztmesh-foreign");
    let mut bytes = std::fs::read(bin()).unwrap();
    bytes.push(0);
    std::fs::write(&foreign, bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    c.binary = Some(foreign);
    for node in [&mut a, &mut b, &mut c] {
        node.start();
    }
    wait_full_mesh(&[&a, &b, &c], Duration::from_secs(60));

    wait_until("a and b to see each other at tier 1", TIER_TIMEOUT, || {
        tier_of(&a, &b) == "tier 1" && tier_of(&b, &a) == "tier 1"
    });
    let status = a.status()["status"].clone();
    assert_eq!(status["trust"]["tier"], "tier 1", "{status}");
    assert_eq!(status["trust"]["binary_in_manifest"], true, "{status}");
    assert_eq!(status["trust"]["manifest_version"], "9.9.9", "{status}");
    assert_eq!(status["trust"]["dev_attestation_accepted"], true);
    let view = peer_view(&a, &b).unwrap();
    assert!(
        view["last_attestation"]
            .as_str()
            .is_some_and(|s| s.starts_with("dev at ")),
        "{view}"
    );
    assert!(
        view["tier_reason"]
            .as_str()
            .unwrap()
            .contains("dev attestation"),
        "{view}"
    );

    // c: valid certificate, so Tier 2, never Tier 1.
    let c_view = peer_view(&a, &c).unwrap();
    assert_eq!(c_view["tier"], "tier 2", "{c_view}");
    assert!(
        c_view["binary"]
            .as_str()
            .is_some_and(|s| s.ends_with("(NOT in manifest)")),
        "{c_view}"
    );
    let c_status = c.status()["status"].clone();
    assert_eq!(c_status["trust"]["binary_in_manifest"], false, "{c_status}");
    assert_ne!(c_status["trust"]["tier"], "tier 1", "{c_status}");
    assert!(
        a.proc
            .as_ref()
            .unwrap()
            .log_text()
            .contains("wrong_measurement"),
        "a should log why c's evidence was refused"
    );

    // Governance: a and b are the Tier 1 electorate (c is Tier 2). c's vote is refused by the
    // tier gate; a's approval alone is 1 of 2, not a majority; b's makes it 2 of 2.
    wait_until("c to see a and b at tier 1", TIER_TIMEOUT, || {
        tier_of(&c, &a) == "tier 1" && tier_of(&c, &b) == "tier 1"
    });
    // Without a token from the CA, a Tier 1 node's proposal counts nowhere, not even at home.
    let status = a.status()["status"].clone();
    assert_eq!(status["trust"]["token"]["held"], false, "{status}");
    assert!(
        status["trust"]["token"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no_manifest")),
        "{status}"
    );
    a.cli_ok(&["propose", "gossip_fanout", "2", "--ttl", "5m"]);
    wait_until("the tokenless proposal to be refused", TIER_TIMEOUT, || {
        [&a, &b].iter().all(|n| {
            n.status()["status"]["trust"]["token"]["refused_received"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        })
    });
    let held = |node: &TestNode| -> serde_json::Value {
        serde_json::from_str(&node.cli_ok(&["proposals", "--json"])).unwrap()
    };
    for node in [&a, &b, &c] {
        let view = held(node);
        assert_eq!(
            view["proposals"].as_array().map(Vec::len),
            Some(0),
            "{view}"
        );
    }

    // With the manifest the CA vouches for a and b; c's binary is not in it, so c gets none.
    let manifest_path = path_str(&release.manifest).to_owned();
    ca.restart(&[
        "--allow-dev-attestation",
        "--dev-tee-key",
        &release.tee_public_hex,
        "--release-key",
        &release.public_key,
        "--manifest",
        &manifest_path,
    ]);
    wait_until("a and b to hold attestation tokens", TIER_TIMEOUT, || {
        [&a, &b]
            .iter()
            .all(|n| n.status()["status"]["trust"]["token"]["held"] == true)
    });
    assert_eq!(a.status()["status"]["trust"]["token"]["platform"], "dev");
    wait_until(
        "c's token to be refused for its binary",
        TIER_TIMEOUT,
        || {
            c.status()["status"]["trust"]["token"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("binary_not_approved"))
        },
    );
    assert_eq!(c.status()["status"]["trust"]["token"]["held"], false);

    let id = a
        .cli_ok(&["propose", "gossip_fanout", "2", "--ttl", "5m"])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "{id}");
    wait_until("every node to hold the proposal", TIER_TIMEOUT, || {
        [&a, &b, &c].iter().all(|n| {
            held(n)["proposals"]
                .as_array()
                .is_some_and(|p| p.len() == 1)
        })
    });
    c.cli_ok(&["vote", &id, "approve"]);
    a.cli_ok(&["vote", &id, "approve"]);
    wait_until("a's vote to be counted everywhere", TIER_TIMEOUT, || {
        [&a, &b, &c]
            .iter()
            .all(|n| held(n)["proposals"][0]["approvals"] == 1)
    });
    wait_until(
        "c's Tier 2 vote to be refused by the gate",
        TIER_TIMEOUT,
        || {
            a.status()["status"]["trust"]["gate_refusals"]["governance"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        },
    );
    for node in [&a, &b, &c] {
        let view = held(node);
        assert_eq!(view["proposals"][0]["applied"], false, "{view}");
        assert_eq!(view["parameters"]["gossip_fanout"], 3, "{view}");
    }
    b.cli_ok(&["vote", &id, "approve"]);
    wait_until("gossip_fanout = 2 on every node", TIER_TIMEOUT, || {
        [&a, &b, &c]
            .iter()
            .all(|n| held(n)["parameters"]["gossip_fanout"] == 2)
    });
    // The membership log records the manifest the CA vouches against, the decision (reported
    // by every node that applied it, recorded once) and the tier changes members reported.
    let ca_dir = ca.dir.to_str().unwrap().to_owned();
    let log_events = |kind: &str| -> Vec<serde_json::Value> {
        let shown: serde_json::Value =
            serde_json::from_str(&ztmesh_ok(&["log", "show", "--ca-dir", &ca_dir, "--json"]))
                .unwrap();
        shown["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.get("event").cloned())
            .filter(|e| e["kind"] == kind)
            .collect()
    };
    wait_until("the decision in the membership log", TIER_TIMEOUT, || {
        log_events("governance_decision").iter().any(|e| {
            e["param"] == "gossip_fanout" && e["value"] == 2 && e["proposal"] == id.as_str()
        })
    });
    wait_until("all three reports of the decision", TIER_TIMEOUT, || {
        [&a, &b, &c].iter().all(|n| {
            n.status()["status"]["trust"]["log_reports_sent"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        })
    });
    assert_eq!(log_events("governance_decision").len(), 1);
    let manifests = log_events("manifest");
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    assert_eq!(manifests[0]["version"], "9.9.9");
    let tier_changes = log_events("tier_change");
    assert!(
        tier_changes
            .iter()
            .any(|e| e["node_id"] == b.node_id.as_str()
                && e["reporter"] == a.node_id.as_str()
                && e["tier"] == "tier 1"),
        "{tier_changes:?}"
    );
    let table = ztmesh_ok(&["log", "show", "--ca-dir", &ca_dir]);
    assert!(table.contains("gossip_fanout = 2"), "{table}");
    assert!(table.contains("release manifest 9.9.9"), "{table}");

    // Two more decisions: each peer's gossip rate (applied by every node, live) and the
    // certificate lifetime (applied by the CA once most nodes it attested report it).
    let rate = a
        .cli_ok(&["propose", "rate_limit_rpm", "6000", "--ttl", "5m"])
        .trim()
        .to_owned();
    let lifetime = a
        .cli_ok(&["propose", "cert_lifetime_secs", "7200", "--ttl", "5m"])
        .trim()
        .to_owned();
    wait_until("every node to hold the new proposals", TIER_TIMEOUT, || {
        [&a, &b, &c].iter().all(|n| {
            held(n)["proposals"]
                .as_array()
                .is_some_and(|p| p.len() == 3)
        })
    });
    assert_eq!(a.status()["status"]["gossip"]["peer_frames_per_sec"], 200);
    let ca_lifetime = || {
        let mut out = ztmesh_ca::store::CaStore::open(&ca.dir.join("state.db"))
            .unwrap()
            .governed("cert_lifetime_secs")
            .unwrap();
        out.take().map(|g| (g.value, g.proposal))
    };
    assert_eq!(ca_lifetime(), None);
    for id in [&rate, &lifetime] {
        a.cli_ok(&["vote", id, "approve"]);
        b.cli_ok(&["vote", id, "approve"]);
    }
    wait_until(
        "rate_limit_rpm = 6000 in force on every node",
        TIER_TIMEOUT,
        || {
            [&a, &b, &c].iter().all(|n| {
                let status = n.status()["status"].clone();
                held(n)["parameters"]["rate_limit_rpm"] == 6000
                    && status["gossip"]["peer_frames_per_sec"] == 100
            })
        },
    );
    // a and b hold tokens (c was refused one): both must report before the CA follows.
    wait_until(
        "the CA to follow cert_lifetime_secs = 7200",
        TIER_TIMEOUT,
        || ca_lifetime().is_some(),
    );
    assert_eq!(ca_lifetime(), Some((7200, lifetime.clone())));
    let ca_log = ca.proc.as_ref().unwrap().log_text();
    assert!(ca_log.contains("governance decision followed"), "{ca_log}");
    // A node enrolled now gets a 2-hour certificate (openssl: expires within 7300 s, not within
    // 7000 s), where the CA's own default is 24 hours.
    let d = ca.enroll(root.path(), "d");
    let checkend = |secs: &str| {
        std::process::Command::new("openssl")
            .args(["x509", "-noout", "-checkend", secs, "-in"])
            .arg(d.dir.join("node.pem"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(checkend("7000"), "expires within 7000 s");
    assert!(!checkend("7300"), "lives past 7300 s");

    // Applied changes persist across a restart.
    let saved = governance_in_state_db(&a.dir);
    assert_eq!(saved.get("gossip_fanout"), Some(&2), "{saved:?}");
    assert_eq!(saved.get("rate_limit_rpm"), Some(&6000), "{saved:?}");
    a.kill9();
    a.start();
    assert_eq!(held(&a)["parameters"]["gossip_fanout"], 2);
    assert_eq!(held(&a)["parameters"]["rate_limit_rpm"], 6000);
    assert_eq!(a.status()["status"]["gossip"]["peer_frames_per_sec"], 100);
    wait_full_mesh(&[&a, &b, &c], Duration::from_secs(60));

    // b's TEE key is swapped: its evidence no longer verifies. One failure is a warning;
    // three in a row demote it to Tier 2.
    std::fs::write(b.dir.join("dev-tee.key"), hex::encode([0x11u8; 32])).unwrap();
    wait_until(
        "a to demote b after 3 failed verifications",
        TIER_TIMEOUT,
        || {
            peer_view(&a, &b).is_some_and(|v| {
                v["tier"] == "tier 2" && v["attestation_failures"].as_u64().unwrap_or(0) >= 3
            })
        },
    );
    let view = peer_view(&a, &b).unwrap();
    assert!(
        view["tier_reason"]
            .as_str()
            .unwrap()
            .contains("consecutive failed attestation verifications"),
        "{view}"
    );
    let log = a.proc.as_ref().unwrap().log_text();
    assert!(
        log.contains("attestation failed (warning)"),
        "no warning logged"
    );
    assert!(log.contains("demoted below tier 1"), "no demotion logged");
    // The key comes back: the next success lifts it again.
    std::fs::write(b.dir.join("dev-tee.key"), &release.tee_seed_hex).unwrap();
    wait_until("b back at tier 1", TIER_TIMEOUT, || {
        tier_of(&a, &b) == "tier 1"
    });
}
