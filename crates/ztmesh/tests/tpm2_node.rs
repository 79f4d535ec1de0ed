//! A node with a TPM, through the CLI: `ztmesh tpm ek` and `ztmesh tpm pcrs` give the operator
//! the EK to allow and the PCR values to list, `ztmesh enroll --attestation-type tpm2 --tpm`
//! enrolls by credential activation against a real `ca serve` and a real software TPM (swtpm),
//! and `ztmesh run` then gets attestation tokens for platform `tpm2` from the CA. A TPM whose
//! EK the CA does not allow, or one that cannot be reached, fails enrollment with the reason,
//! a non-zero exit and no data directory.
//!
//! Skipped with a printed reason when swtpm or tpm2-tools are missing, except under `CI`,
//! where a missing tool fails the test.

mod common;
#[path = "../../ztmesh-attest/tests/swtpm/mod.rs"]
mod swtpm;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;
use swtpm::{tools_present, SoftwareTpm, NODE_TOOLS};

/// Generous deadline for a node to get its first token on a shared 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(120);

/// `ztmesh enroll` of `dir` with a fresh token and `extra` arguments.
fn enroll(ca: &TestCa, dir: &Path, extra: &[&str]) -> Output {
    let token = ca.token(&[]);
    let mut args = vec![
        "enroll",
        "--ca-url",
        &ca.url,
        "--ca-fingerprint",
        &ca.fingerprint,
        "--token",
        &token,
        "--data-dir",
        path_str(dir),
    ];
    args.extend_from_slice(extra);
    ztmesh(&args)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_node_with_a_tpm_enrolls_by_credential_activation_and_gets_tpm2_tokens() {
    if !tools_present(
        "a_node_with_a_tpm_enrolls_by_credential_activation_and_gets_tpm2_tokens",
        NODE_TOOLS,
    ) {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path();
    let tpm = SoftwareTpm::start();
    let tcti = tpm.tcti();

    // What the operator reads from the node's TPM: the EK to allow, the PCRs to list.
    let ek_file = root.join("ek.pub");
    let shown = ztmesh_ok(&["tpm", "ek", "--tpm", &tcti, "--out", path_str(&ek_file)]);
    assert!(shown.contains("0x81010001"), "{shown}");
    // Asking again reuses the persisted EK.
    let first_ek = std::fs::read(&ek_file).unwrap();
    ztmesh_ok(&["tpm", "ek", "--tpm", &tcti, "--out", path_str(&ek_file)]);
    assert_eq!(std::fs::read(&ek_file).unwrap(), first_ek);
    let pcrs = ztmesh_ok(&["tpm", "pcrs", "--tpm", &tcti]);
    let measurements: Vec<&str> = pcrs.lines().collect();
    assert_eq!(measurements.len(), 4, "{pcrs}");
    for (line, index) in measurements.iter().zip([0, 1, 2, 7]) {
        assert!(line.starts_with(&format!("tpm2:pcr{index}=")), "{pcrs}");
    }

    let (release_key, manifest) = sign_release(root, "tpm-1", &measurements);
    let ca = TestCa::start(
        root,
        &[
            "--tpm2-endorsement-key",
            path_str(&ek_file),
            "--release-key",
            &release_key,
            "--manifest",
            path_str(&manifest),
        ],
    );

    // A TPM the CA does not allow: its refusal, a non-zero exit, no data directory.
    let stranger = SoftwareTpm::start();
    let refused_dir = root.join("stranger");
    let refused = enroll(
        &ca,
        &refused_dir,
        &["--attestation-type", "tpm2", "--tpm", &stranger.tcti()],
    );
    assert!(!refused.status.success(), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("endorsement_key_not_allowed"),
        "{}",
        stderr(&refused)
    );
    assert!(
        !refused_dir.exists(),
        "a refused enrollment left its directory"
    );

    // A TPM that cannot be reached: the tools' complaint, nothing written.
    let unreachable = enroll(
        &ca,
        &refused_dir,
        &[
            "--attestation-type",
            "tpm2",
            "--tpm",
            "swtpm:host=127.0.0.1,port=1",
        ],
    );
    assert!(!unreachable.status.success());
    assert!(
        stderr(&unreachable).contains("TPM: tpm2_createek failed"),
        "{}",
        stderr(&unreachable)
    );
    assert!(
        !refused_dir.exists(),
        "a failed enrollment left its directory"
    );

    // --tpm goes with tpm2 only, and not with prepared evidence.
    let mismatched = enroll(
        &ca,
        &refused_dir,
        &["--attestation-type", "dev", "--tpm", &tcti],
    );
    assert!(!mismatched.status.success());
    assert!(
        stderr(&mismatched).contains("--tpm"),
        "{}",
        stderr(&mismatched)
    );

    // The allowed TPM enrolls, and node.toml names it as the attester.
    let mut node = ca.enroll_with(
        root,
        "node",
        &["--attestation-type", "tpm2", "--tpm", &tcti],
    );
    let config = std::fs::read_to_string(node.dir.join("node.toml")).unwrap();
    assert!(config.contains("attester = \"tpm2\""), "{config}");
    assert!(
        config.contains(&format!("tpm_tcti = \"{tcti}\"")),
        "{config}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&node.dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".tpm"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // `ztmesh run` with the release key and manifest: the CA verifies its quotes with the AK
    // registered at enrollment and the manifest's PCR values, and issues tpm2 tokens.
    std::fs::copy(&manifest, node.dir.join("manifest.cose")).unwrap();
    set_config(&node.dir, "reattest_secs", "2");
    let text = std::fs::read_to_string(node.dir.join("node.toml")).unwrap();
    let text = text.replacen(
        "[attestation]\n",
        &format!("[attestation]\nrelease_key = \"{release_key}\"\nmanifest = \"manifest.cose\"\n"),
        1,
    );
    std::fs::write(node.dir.join("node.toml"), text).unwrap();
    node.start();
    wait_until("the node to hold an attestation token", TIMEOUT, || {
        node.proc.as_mut().unwrap().assert_running();
        node.status()["status"]["trust"]["token"]["held"] == true
    });
    let status = node.status();
    let trust = &status["status"]["trust"];
    assert_eq!(trust["token"]["platform"], "tpm2", "{status}");
    assert_eq!(trust["attester"], "tpm2", "{status}");
    // Its own quotes verify at home too (self-attestation with its own AK).
    wait_until("the node's self-attestation", TIMEOUT, || {
        node.status()["status"]["trust"]["attestations_ok"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    });
    assert_eq!(
        node.status()["status"]["trust"]["attestations_failed"],
        0,
        "{}",
        node.proc.as_ref().unwrap().log_text()
    );
}
