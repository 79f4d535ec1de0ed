//! Data directories are 0700 and databases (with their WAL/SHM files), keys and tokens 0600,
//! whatever the umask of whoever runs `ztmesh` (issue 12, "file modes").
#![cfg(unix)]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// `ztmesh` started through `sh` with the common default umask 022.
fn under_umask_022() -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", "umask 022 && exec \"$0\" \"$@\"", bin()]);
    command
}

fn ztmesh_umask_022(args: &[&str]) -> String {
    let out = under_umask_022()
        .args(args)
        .env("ZTMESH_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .output()
        .expect("run ztmesh");
    assert!(
        out.status.success(),
        "ztmesh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file in `dir` holding state or secrets is 0600, and `dir` itself 0700.
fn assert_private(dir: &Path, files: &[&str]) {
    assert_eq!(mode(dir), 0o700, "{} is {:o}", dir.display(), mode(dir));
    for name in files {
        let path = dir.join(name);
        assert_eq!(
            mode(&path),
            0o600,
            "{} is {:o}",
            path.display(),
            mode(&path)
        );
    }
    // Whatever SQLite left beside the databases follows them.
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".db") || name.ends_with("-wal") || name.ends_with("-shm") {
            assert_eq!(
                mode(&path),
                0o600,
                "{} is {:o}",
                path.display(),
                mode(&path)
            );
        }
    }
}

#[test]
fn data_directories_and_databases_are_private_whatever_the_umask() {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
    let init = ztmesh_umask_022(&[
        "ca",
        "init",
        "--trust-domain",
        "test.ztmesh",
        "--data-dir",
        path_str(&ca_dir),
    ]);
    let fingerprint = init
        .lines()
        .find_map(|l| l.trim().strip_prefix("fingerprint:"))
        .unwrap()
        .trim()
        .to_owned();
    assert_private(&ca_dir, &["state.db", "admin.token", "ca.key"]);

    // The CA serving: its database in WAL mode with -wal and -shm beside it.
    let addr_file = ca_dir.join("ca.addr");
    let mut ca = Proc::spawn_command(
        under_umask_022(),
        "ca",
        &[
            "ca",
            "serve",
            "--data-dir",
            path_str(&ca_dir),
            "--listen",
            "127.0.0.1:0",
        ],
        root.path().join("ca-serve.log"),
    );
    wait_until("the CA to listen", Duration::from_secs(60), || {
        ca.assert_running();
        addr_file.exists()
    });
    let url = format!(
        "https://{}",
        std::fs::read_to_string(&addr_file).unwrap().trim()
    );
    let token = ztmesh_umask_022(&["token", "create", "--ca-dir", path_str(&ca_dir)]);
    wait_until("the CA's WAL file", Duration::from_secs(60), || {
        ca_dir.join("state.db-wal").exists()
    });
    assert_private(&ca_dir, &["state.db", "state.db-wal", "state.db-shm"]);

    let node_dir = root.path().join("node");
    ztmesh_umask_022(&[
        "enroll",
        "--ca-url",
        &url,
        "--ca-fingerprint",
        &fingerprint,
        "--token",
        token.trim(),
        "--data-dir",
        path_str(&node_dir),
    ]);
    assert_private(&node_dir, &["identity.key", "node.key", "node.toml"]);

    let node_addr = node_dir.join("node.addr.json");
    let mut node = Proc::spawn_command(
        under_umask_022(),
        "node",
        &["run", "--data-dir", path_str(&node_dir)],
        root.path().join("node-run.log"),
    );
    wait_until("the node to listen", Duration::from_secs(60), || {
        node.assert_running();
        node_addr.exists()
    });
    wait_until("the node's WAL file", Duration::from_secs(60), || {
        node_dir.join("state.db-wal").exists()
    });
    assert_private(
        &node_dir,
        &["state.db", "state.db-wal", "state.db-shm", "api.token"],
    );

    let witness_dir = root.path().join("witness");
    ztmesh_umask_022(&[
        "witness",
        "init",
        "--data-dir",
        path_str(&witness_dir),
        "--name",
        "witness.example/w1",
    ]);
    assert_private(&witness_dir, &["witness.db"]);
}
