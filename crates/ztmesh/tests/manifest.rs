//! `ztmesh manifest` through the real command line: keygen, sign, verify, self-hash.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use sha2::{Digest, Sha256};

struct Release {
    dir: tempfile::TempDir,
    public_key: String,
    manifest: PathBuf,
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The running test executable: a file whose hash the manifest allows.
fn this_test_binary() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// Creates a release key (plaintext, a throwaway) and signs a manifest allowing this test
/// binary and one TDX measurement, valid for `not_after`.
fn release(not_after: &str) -> Release {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let public_key = ztmesh_ok(&[
        "manifest",
        "keygen",
        "--out",
        path_str(&key),
        "--insecure-plaintext-key",
    ])
    .trim()
    .to_owned();
    assert_eq!(public_key.len(), 64, "{public_key}");
    let manifest = dir.path().join("manifest.cose");
    let binary = this_test_binary();
    ztmesh_ok(&[
        "manifest",
        "sign",
        "--key",
        path_str(&key),
        "--insecure-plaintext-key",
        "--version",
        "1.2.3",
        "--binary",
        path_str(&binary),
        "--binary-sha256",
        &"ab".repeat(32),
        "--measurement",
        "tdx:mrtd=00FF",
        "--not-after",
        not_after,
        "-o",
        path_str(&manifest),
    ]);
    Release {
        dir,
        public_key,
        manifest,
    }
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn verify_accepts_the_signed_binary() {
    let release = release("1d");
    let binary = this_test_binary();
    let out = ztmesh_ok(&[
        "manifest",
        "verify",
        "--release-key",
        &release.public_key,
        "--manifest",
        path_str(&release.manifest),
        "--binary",
        path_str(&binary),
    ]);
    assert!(out.contains("valid release manifest 1.2.3"), "{out}");
    assert!(out.contains("tdx:mrtd  00ff"), "{out}");
    assert!(out.contains(": allowed"), "{out}");

    let json: serde_json::Value = serde_json::from_str(&ztmesh_ok(&[
        "manifest",
        "verify",
        "--release-key",
        &release.public_key,
        "--manifest",
        path_str(&release.manifest),
        "--binary",
        path_str(&binary),
        "--json",
    ]))
    .unwrap();
    let hash = hex::encode(Sha256::digest(std::fs::read(&binary).unwrap()));
    assert_eq!(json["valid"], true);
    assert_eq!(json["binary"]["allowed"], true);
    assert_eq!(json["binary"]["sha256"], hash.as_str());
    assert_eq!(json["manifest"]["version"], "1.2.3");
    let binaries = json["manifest"]["binaries"].as_array().unwrap();
    assert!(binaries.iter().any(|b| b == hash.as_str()));
    assert!(binaries.iter().any(|b| *b == "ab".repeat(32)));
    assert_eq!(json["manifest"]["measurements"]["tdx"]["mrtd"][0], "00ff");
}

#[test]
fn the_release_key_can_be_read_from_a_file() {
    let release = release("1h");
    let key_file = release.dir.path().join("release.pub");
    std::fs::write(&key_file, format!("{}\n", release.public_key)).unwrap();
    ztmesh_ok(&[
        "manifest",
        "verify",
        "--release-key",
        path_str(&key_file),
        "--manifest",
        path_str(&release.manifest),
    ]);
}

#[test]
fn verify_refuses_another_binary() {
    let release = release("1d");
    let output = ztmesh(&[
        "manifest",
        "verify",
        "--release-key",
        &release.public_key,
        "--manifest",
        path_str(&release.manifest),
        "--binary",
        bin(),
    ]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("NOT allowed"), "{stdout}");
    assert!(
        stderr(&output).contains("is not allowed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn verify_refuses_another_release_key() {
    let release = release("1d");
    let other = release.dir.path().join("other.key");
    let other_public = ztmesh_ok(&[
        "manifest",
        "keygen",
        "--out",
        path_str(&other),
        "--insecure-plaintext-key",
    ]);
    let output = ztmesh(&[
        "manifest",
        "verify",
        "--release-key",
        other_public.trim(),
        "--manifest",
        path_str(&release.manifest),
        "--json",
    ]);
    assert!(!output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["reason"], "wrong_key");
    assert!(stderr(&output).contains("refused (wrong_key)"));
}

#[test]
fn verify_refuses_an_expired_manifest() {
    let release = release("1h");
    let output = ztmesh(&[
        "manifest",
        "verify",
        "--release-key",
        &release.public_key,
        "--manifest",
        path_str(&release.manifest),
        "--at",
        "2100-01-01T00:00:00Z",
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("refused (expired)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn verify_refuses_a_tampered_manifest() {
    let release = release("1d");
    let mut bytes = std::fs::read(&release.manifest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&release.manifest, bytes).unwrap();
    let output = ztmesh(&[
        "manifest",
        "verify",
        "--release-key",
        &release.public_key,
        "--manifest",
        path_str(&release.manifest),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("refused (bad_signature)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn verify_refuses_a_garbage_file_with_a_message() {
    let release = release("1d");
    let garbage = release.dir.path().join("garbage.cose");
    std::fs::write(&garbage, b"this is not a manifest\n").unwrap();
    let output = ztmesh(&[
        "manifest",
        "verify",
        "--release-key",
        &release.public_key,
        "--manifest",
        path_str(&garbage),
    ]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("refused (malformed)"),
        "{}",
        stderr(&output)
    );
    assert!(!stderr(&output).contains("panicked"));
}

#[test]
fn sign_refuses_an_expiry_in_the_past_and_bad_measurements() {
    let release = release("1d");
    let key = release.dir.path().join("release.key");
    let out = release.dir.path().join("bad.cose");
    let sign = |extra: &[&str]| {
        let mut args = vec![
            "manifest",
            "sign",
            "--key",
            path_str(&key),
            "--insecure-plaintext-key",
            "--version",
            "1",
            "-o",
            path_str(&out),
        ];
        args.extend_from_slice(extra);
        ztmesh(&args)
    };
    let short_hash = sign(&["--binary-sha256", "00", "--not-after", "1d"]);
    assert!(!short_hash.status.success());
    assert!(stderr(&short_hash).contains("32 bytes"));
    let past = sign(&[
        "--binary-sha256",
        &"ab".repeat(32),
        "--not-after",
        "2000-01-01T00:00:00Z",
    ]);
    assert!(!past.status.success());
    assert!(
        stderr(&past).contains("not in the future"),
        "{}",
        stderr(&past)
    );
    let measurement = sign(&[
        "--binary-sha256",
        &"ab".repeat(32),
        "--not-after",
        "1d",
        "--measurement",
        "tdx:mrtd=xyz",
    ]);
    assert!(!measurement.status.success());
    assert!(
        stderr(&measurement).contains("mrtd"),
        "{}",
        stderr(&measurement)
    );
    assert!(!out.exists());
}

#[test]
fn keygen_never_overwrites_a_key() {
    let release = release("1d");
    let key = release.dir.path().join("release.key");
    let before = std::fs::read(&key).unwrap();
    let output = ztmesh(&[
        "manifest",
        "keygen",
        "--out",
        path_str(&key),
        "--insecure-plaintext-key",
    ]);
    assert!(!output.status.success());
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn an_encrypted_release_key_needs_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("release.key");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse\n").unwrap();
    ztmesh_ok(&[
        "manifest",
        "keygen",
        "--out",
        path_str(&key),
        "--passphrase-file",
        path_str(&pass),
    ]);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.contains("ZTMESH ENCRYPTED PRIVATE KEY"), "{text}");
    let out = dir.path().join("m.cose");
    let allowed_hash = "cd".repeat(32);
    let sign = |extra: &[&str]| {
        let mut args = vec![
            "manifest",
            "sign",
            "--key",
            path_str(&key),
            "--version",
            "2",
            "--binary-sha256",
            &allowed_hash,
            "--not-after",
            "1h",
            "-o",
            path_str(&out),
        ];
        args.extend_from_slice(extra);
        ztmesh(&args)
    };
    assert!(!sign(&["--insecure-plaintext-key"]).status.success());
    assert!(sign(&["--passphrase-file", path_str(&pass)])
        .status
        .success());
    assert!(out.exists());
}

#[test]
fn self_hash_is_the_sha256_of_the_executable() {
    let printed = ztmesh_ok(&["manifest", "self-hash"]);
    let expected = hex::encode(Sha256::digest(std::fs::read(bin()).unwrap()));
    assert_eq!(printed.trim(), expected);
}
