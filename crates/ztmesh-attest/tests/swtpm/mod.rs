//! A real software TPM (swtpm) for the tests, driven through tpm2-tools: start one on two free
//! loopback ports, run tools against it, read and write files in its working directory.
//! Tests skip with a printed reason when a tool is missing, except under `CI`.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What a node's TPM device (`ztmesh_node::tpm_device`) runs, plus swtpm itself.
pub const NODE_TOOLS: &[&str] = &[
    "swtpm",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_evictcontrol",
    "tpm2_getcap",
    "tpm2_readpublic",
    "tpm2_startauthsession",
    "tpm2_policysecret",
    "tpm2_activatecredential",
    "tpm2_quote",
    "tpm2_pcrread",
    "tpm2_flushcontext",
];

/// Whether the tools are present; without them, skip (or fail under CI).
pub fn tools_present(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map(|status| !status.success())
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "{test}: missing {} (Debian packages: swtpm tpm2-tools libtss2-tcti-swtpm0)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{reason}; CI must install them");
    }
    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED {reason}");
    false
}

/// A running swtpm, killed when dropped.
pub struct SoftwareTpm {
    child: Child,
    server_port: u16,
    /// The working directory of every tool run.
    pub dir: tempfile::TempDir,
}

impl SoftwareTpm {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let (server_port, ctrl_port) = free_port_pair();
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--tpm2")
            .args(["--ctrl", &format!("type=tcp,port={ctrl_port}")])
            .args(["--server", &format!("type=tcp,port={server_port}")])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let tpm = SoftwareTpm {
            child,
            server_port,
            dir,
        };
        // Up to 10 s for swtpm to listen (200 tries, 50 ms apart).
        let mut tries = 0;
        while TcpStream::connect(("127.0.0.1", server_port)).is_err() {
            tries += 1;
            assert!(tries < 200, "swtpm did not listen on {server_port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        tpm
    }

    /// The TCTI tpm2-tools reach this TPM with.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.server_port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs one tpm2-tools command that must succeed, then flushes transient objects: with
    /// no resource manager the TPM keeps every loaded object and runs out of slots.
    pub fn run(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        let output = self.try_run(tool, args);
        output.unwrap_or_else(|stderr| panic!("{tool} {args:?} failed: {stderr}"))
    }

    /// Like [`Self::run`], but a failing command answers its stderr.
    pub fn try_run(&self, tool: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        let output = self.command(tool, args);
        let _ = self.command("tpm2_flushcontext", &["-t"]);
        output
    }

    pub fn command(&self, tool: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        let output = Command::new(tool)
            .args(args)
            .current_dir(self.dir.path())
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap();
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    pub fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap()
    }
}

impl Drop for SoftwareTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two adjacent free ports: the TCTI reaches the control channel at the server port + 1.
fn free_port_pair() -> (u16, u16) {
    for _ in 0..100 {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let Some(ctrl_port) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", ctrl_port)).is_ok() {
            return (port, ctrl_port);
        }
    }
    panic!("no two adjacent free ports on 127.0.0.1");
}
