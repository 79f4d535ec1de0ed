//! Trust tiers on a real mesh: nodes challenge each other over their live TLS links, verify
//! the (dev, simulated) evidence bound to each link's TLS key, check the reported binary
//! against a signed release manifest, count health checks, and show the tier each earns.
//!
//! The dev TEE stands in for hardware here, and the nodes are configured to count it toward
//! Tier 1; the link protocol, the bindings, the manifest and the trust rules are the real ones.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use sha2::Digest;

/// Generous: Tier 1 needs 100 health checks (10 s at 100 ms) on a busy 2-core machine.
const TIER_TIMEOUT: Duration = Duration::from_secs(180);

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A release key, a manifest allowing the binary under test (its hash, and its hash as the dev
/// TEE measurement), and a dev TEE key.
struct Release {
    public_key: String,
    manifest: PathBuf,
    tee_seed_hex: String,
    tee_public_hex: String,
}

fn release(root: &Path) -> Release {
    let key = root.join("release.key");
    let public_key = ztmesh_ok(&[
        "manifest",
        "keygen",
        "--out",
        path_str(&key),
        "--insecure-plaintext-key",
    ])
    .trim()
    .to_owned();
    let binary_hash = hex::encode(sha2::Sha256::digest(std::fs::read(bin()).unwrap()));
    let manifest = root.join("manifest.cose");
    ztmesh_ok(&[
        "manifest",
        "sign",
        "--key",
        path_str(&key),
        "--insecure-plaintext-key",
        "--version",
        "9.9.9",
        "--binary",
        bin(),
        "--measurement",
        &format!("dev:measurement={binary_hash}"),
        "--not-after",
        "1d",
        "-o",
        path_str(&manifest),
    ]);
    let seed = [0x5e; 32];
    let tee = ed25519_dalek::SigningKey::from_bytes(&seed);
    Release {
        public_key,
        manifest,
        tee_seed_hex: hex::encode(seed),
        tee_public_hex: hex::encode(tee.verifying_key().as_bytes()),
    }
}

/// Configures `node` to attest with the dev TEE, accept dev evidence, pin the release key and
/// check peers against the manifest; health every 100 ms; re-attest every second.
fn configure(node: &TestNode, release: &Release) {
    std::fs::write(node.dir.join("dev-tee.key"), &release.tee_seed_hex).unwrap();
    std::fs::copy(&release.manifest, node.dir.join("manifest.cose")).unwrap();
    set_config(&node.dir, "health_interval_ms", "100");
    let text = std::fs::read_to_string(node.dir.join("node.toml")).unwrap();
    // `enroll` writes the default [attestation] table last; replace it.
    let mut text = text[..text.find("[attestation]").unwrap()].to_owned();
    text.push_str(&format!(
        "\n[attestation]\nattester = \"dev\"\ndev_tee_key_file = \"dev-tee.key\"\n\
         dev_tee_public_key = \"{}\"\nrelease_key = \"{}\"\nmanifest = \"manifest.cose\"\n\
         reattest_secs = 1\n",
        release.tee_public_hex, release.public_key
    ));
    std::fs::write(node.dir.join("node.toml"), text).unwrap();
}

/// `peer` as `observer` lists it.
fn peer_view(observer: &TestNode, peer: &TestNode) -> Option<serde_json::Value> {
    observer.peers()["peers"]
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == peer.node_id.as_str())
        .cloned()
}

fn tier_of(observer: &TestNode, peer: &TestNode) -> String {
    peer_view(observer, peer)
        .and_then(|p| p["tier"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn dev_attested_nodes_earn_tier1_a_foreign_binary_stays_tier2_and_a_failing_tee_is_demoted() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::start(root.path(), &[]);
    let release = release(root.path());
    let mut a = ca.enroll(root.path(), "a");
    let mut b = ca.enroll(root.path(), "b");
    let mut c = ca.enroll(root.path(), "c");
    for node in [&a, &b, &c] {
        configure(node, &release);
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
    let id = a
        .cli_ok(&["propose", "gossip_fanout", "2", "--ttl", "5m"])
        .trim()
        .to_owned();
    assert_eq!(id.len(), 64, "{id}");
    let held = |node: &TestNode| -> serde_json::Value {
        serde_json::from_str(&node.cli_ok(&["proposals", "--json"])).unwrap()
    };
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
    // Applied changes persist across a restart.
    assert!(a.dir.join("governance.json").exists());
    a.kill9();
    a.start();
    assert_eq!(held(&a)["parameters"]["gossip_fanout"], 2);
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
