//! Test harness: real `ztmesh` processes on loopback, each in its own temporary directory.
//! Waits are event-driven (poll a condition with a generous deadline), never fixed sleeps.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

/// Passphrase of every key file in tests.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ztmesh")
}

/// `ztmesh`, or `ip netns exec NS ztmesh` for a node living in a network namespace.
pub fn command_in(netns: Option<&str>) -> Command {
    match netns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, bin()]);
            command
        }
        None => Command::new(bin()),
    }
}

/// Runs a CLI command to completion.
pub fn ztmesh(args: &[&str]) -> Output {
    ztmesh_in(None, args)
}

/// Runs a CLI command to completion, inside `netns` when given.
pub fn ztmesh_in(netns: Option<&str>, args: &[&str]) -> Output {
    command_in(netns)
        .args(args)
        .env("ZTMESH_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .output()
        .expect("run ztmesh")
}

/// Runs a CLI command that must succeed; returns stdout.
pub fn ztmesh_ok(args: &[&str]) -> String {
    ztmesh_ok_in(None, args)
}

/// Runs a CLI command that must succeed, inside `netns` when given; returns stdout.
pub fn ztmesh_ok_in(netns: Option<&str>, args: &[&str]) -> String {
    let out = ztmesh_in(netns, args);
    assert!(
        out.status.success(),
        "ztmesh {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 stdout")
}

/// Polls `probe` every 100 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A long-running child process, killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `ztmesh args…` with logs to `log`.
    pub fn spawn(name: &str, args: &[&str], log: PathBuf) -> Proc {
        Proc::spawn_in(None, name, args, log)
    }

    /// Starts `ztmesh args…` inside `netns` (when given) with logs to `log`.
    pub fn spawn_in(netns: Option<&str>, name: &str, args: &[&str], log: PathBuf) -> Proc {
        Proc::spawn_command(command_in(netns), name, args, log)
    }

    /// Starts `command args…` with logs to `log`.
    pub fn spawn_command(mut command: Command, name: &str, args: &[&str], log: PathBuf) -> Proc {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&log).expect("log file");
        let child = command
            .args(args)
            .env("ZTMESH_PASSPHRASE", PASSPHRASE)
            .env(
                "ZTMESH_LOG",
                "info,ztmesh_node=debug,ztmesh_runtime=debug,ztmesh_ca=debug,ztmesh_witness=debug",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn ztmesh");
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A CA: `ca init` + `ca serve` on a loopback port.
pub struct TestCa {
    pub dir: PathBuf,
    pub addr: String,
    pub url: String,
    pub fingerprint: String,
    pub proc: Option<Proc>,
}

impl TestCa {
    /// Initializes a CA in `root/ca` and serves it with extra `serve_args`.
    pub fn start(root: &Path, serve_args: &[&str]) -> TestCa {
        TestCa::start_at(root, "127.0.0.1:0", serve_args)
    }

    /// Initializes a CA in `root/ca` and serves it on `listen` with extra `serve_args`.
    pub fn start_at(root: &Path, listen: &str, serve_args: &[&str]) -> TestCa {
        let mut ca = TestCa::init(root);
        ca.serve(listen, serve_args);
        ca
    }

    /// Initializes a CA in `root/ca` without serving it, e.g. to write a log policy naming its
    /// log key first; [`TestCa::serve`] starts it.
    pub fn init(root: &Path) -> TestCa {
        let dir = root.join("ca");
        let init = ztmesh_ok(&[
            "ca",
            "init",
            "--trust-domain",
            "test.ztmesh",
            "--data-dir",
            dir.to_str().unwrap(),
        ]);
        let fingerprint = init
            .lines()
            .find_map(|l| l.trim().strip_prefix("fingerprint:"))
            .expect("fingerprint line")
            .trim()
            .to_owned();
        TestCa {
            dir,
            addr: String::new(),
            url: String::new(),
            fingerprint,
            proc: None,
        }
    }

    /// The membership log's key (`log.vkey`, written by `ca init`).
    pub fn log_vkey(&self) -> String {
        std::fs::read_to_string(self.dir.join("log.vkey"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Starts `ca serve` on `listen` and waits for it to bind.
    pub fn serve(&mut self, listen: &str, serve_args: &[&str]) {
        let addr_file = self.dir.join("ca.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut args = vec![
            "ca",
            "serve",
            "--data-dir",
            self.dir.to_str().unwrap(),
            "--listen",
            listen,
        ];
        args.extend_from_slice(serve_args);
        let mut proc = Proc::spawn("ca", &args, self.dir.join("serve.log"));
        wait_until("the CA to listen", Duration::from_secs(30), || {
            proc.assert_running();
            addr_file.exists()
        });
        self.addr = std::fs::read_to_string(&addr_file)
            .unwrap()
            .trim()
            .to_owned();
        self.url = format!("https://{}", self.addr);
        self.proc = Some(proc);
    }

    /// Kills the CA (SIGKILL) and serves it again on the same address.
    pub fn restart(&mut self, serve_args: &[&str]) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
        let addr = self.addr.clone();
        self.serve(&addr, serve_args);
    }

    /// Mints a token through the CLI.
    pub fn token(&self, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--ca-dir", self.dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        ztmesh_ok(&args).trim().to_owned()
    }

    /// The admin credential.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// DER of the CA certificate.
    pub fn ca_der(&self) -> Vec<u8> {
        ztmesh_pki::cert_pem_to_der(&std::fs::read_to_string(self.dir.join("ca.pem")).unwrap())
            .unwrap()
    }

    /// Enrolls a node into `root/name` (not started).
    pub fn enroll(&self, root: &Path, name: &str) -> TestNode {
        self.enroll_with(root, name, &[])
    }

    /// Enrolls a node into `root/name` with extra `enroll` arguments (not started).
    pub fn enroll_with(&self, root: &Path, name: &str, extra: &[&str]) -> TestNode {
        let dir = root.join(name);
        let token = self.token(&[]);
        let mut args = vec![
            "enroll",
            "--ca-url",
            &self.url,
            "--ca-fingerprint",
            &self.fingerprint,
            "--token",
            &token,
            "--data-dir",
            dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ztmesh_ok(&args);
        let config = std::fs::read_to_string(dir.join("node.toml")).unwrap();
        let node_id = config
            .lines()
            .find_map(|l| l.strip_prefix("node_id = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        // Fast heartbeats so tests notice things quickly.
        set_config(&dir, "heartbeat_interval_ms", "200");
        TestNode {
            name: name.to_owned(),
            dir,
            node_id,
            proc: None,
            netns: None,
            binary: None,
        }
    }
}

/// Replaces `key = …` in a node's node.toml.
pub fn set_config(dir: &Path, key: &str, value: &str) {
    let path = dir.join("node.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key} =")) {
                found = true;
                format!("{key} = {value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(found, "no key {key} in node.toml");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// An enrolled node, optionally running.
pub struct TestNode {
    pub name: String,
    pub dir: PathBuf,
    pub node_id: String,
    pub proc: Option<Proc>,
    /// The network namespace the node runs in (multi-host tests); `None` = this host.
    pub netns: Option<String>,
    /// Run this executable instead of the binary under test (a copy with another hash).
    pub binary: Option<PathBuf>,
}

impl TestNode {
    /// Starts `ztmesh run` and waits until it listens.
    pub fn start(&mut self) {
        let addr_file = self.dir.join("node.addr.json");
        let _ = std::fs::remove_file(&addr_file);
        let command = match &self.binary {
            Some(binary) => Command::new(binary),
            None => command_in(self.netns.as_deref()),
        };
        let mut proc = Proc::spawn_command(
            command,
            &self.name,
            &["run", "--data-dir", self.dir.to_str().unwrap()],
            self.dir.join("run.log"),
        );
        wait_until(
            &format!("{} to listen", self.name),
            Duration::from_secs(30),
            || {
                proc.assert_running();
                addr_file.exists()
            },
        );
        self.proc = Some(proc);
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }

    /// The bound addresses (`node.addr.json`).
    pub fn addrs(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("node.addr.json")).unwrap())
            .unwrap()
    }

    /// Mesh listener address.
    pub fn mesh_addr(&self) -> String {
        self.addrs()["mesh"].as_str().unwrap().to_owned()
    }

    /// API listener address.
    pub fn api_addr(&self) -> String {
        self.addrs()["api"].as_str().unwrap().to_owned()
    }

    /// Runs `ztmesh <args> --data-dir <dir>` beside the node (in its namespace); must succeed.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", self.dir.to_str().unwrap()]);
        ztmesh_ok_in(self.netns.as_deref(), &all)
    }

    /// Runs `ztmesh <args> --data-dir <dir>` beside the node; returns the raw output.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", self.dir.to_str().unwrap()]);
        ztmesh_in(self.netns.as_deref(), &all)
    }

    /// `ztmesh peers --json`.
    pub fn peers(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["peers", "--json"])).unwrap()
    }

    /// `ztmesh status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["status", "--json"])).unwrap()
    }

    /// Whether a link to `peer` is up now.
    pub fn connected_to(&self, peer: &str) -> bool {
        self.peers()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["node_id"] == peer && p["connected"] == true)
    }

    /// Number of links up.
    pub fn connected_count(&self) -> usize {
        self.peers()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["connected"] == true)
            .count()
    }
}

/// Waits until every node has a link to every other.
pub fn wait_full_mesh(nodes: &[&TestNode], timeout: Duration) {
    wait_until("a full mesh", timeout, || {
        nodes.iter().all(|n| n.connected_count() == nodes.len() - 1)
    });
}

/// An HTTP answer read off a plain TCP connection (the witness protocol is plain HTTP).
#[derive(Debug)]
pub struct PlainReply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Sends raw request bytes on a fresh connection and reads the answer until the server closes.
pub fn exchange(addr: &str, request: &[u8]) -> std::io::Result<PlainReply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

/// Parses a raw HTTP/1.1 answer (chunked bodies decoded).
pub fn parse_reply(raw: &[u8]) -> Option<PlainReply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut content_type = String::new();
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_owned(),
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?, 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = decoded;
    }
    Some(PlainReply {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A raw HTTP/1.1 request with `Connection: close`.
pub fn request_bytes(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: witness\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A node's `state.db`, opened read-only beside the running node (the WAL lets it read what
/// the node committed without taking any lock the node waits for).
pub fn state_db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        dir.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap()
}

/// The node ids a node's `state.db` records revoked.
pub fn revoked_in_state_db(dir: &Path) -> Vec<String> {
    let conn = state_db(dir);
    let mut statement = conn
        .prepare("SELECT node_id FROM revoked_nodes ORDER BY node_id")
        .unwrap();
    let ids = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap();
    ids
}

/// The governance decisions a node's `state.db` records, by parameter name.
pub fn governance_in_state_db(dir: &Path) -> std::collections::BTreeMap<String, u64> {
    let conn = state_db(dir);
    let mut statement = conn
        .prepare("SELECT param, value FROM governance_decisions")
        .unwrap();
    let decided = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<std::collections::BTreeMap<String, u64>, _>>()
        .unwrap();
    decided
}

// ----- Trust tiers: what a node needs to earn Tier 1 (dev TEE, signed manifest, fast health) -----

/// Generous: Tier 1 needs 100 health checks (10 s at 100 ms) on a busy 2-core machine.
pub const TIER_TIMEOUT: Duration = Duration::from_secs(180);

/// A path as a command-line argument.
pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A release key, a manifest allowing the binary under test (its hash, and its hash as the dev
/// TEE measurement), and a dev TEE key.
pub struct Release {
    pub public_key: String,
    pub manifest: PathBuf,
    pub tee_seed_hex: String,
    pub tee_public_hex: String,
}

/// A release key (`root/release.key`) and a manifest (`root/manifest.cose`, version
/// `version`, valid a day) listing the binary under test and `measurements` (lines
/// `platform:name=HEX`); answers the release public key and the manifest path.
pub fn sign_release(root: &Path, version: &str, measurements: &[&str]) -> (String, PathBuf) {
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
    let manifest = root.join("manifest.cose");
    let mut args = vec![
        "manifest",
        "sign",
        "--key",
        path_str(&key),
        "--insecure-plaintext-key",
        "--version",
        version,
        "--binary",
        bin(),
        "--not-after",
        "1d",
        "-o",
        path_str(&manifest),
    ];
    for measurement in measurements {
        args.extend(["--measurement", measurement]);
    }
    ztmesh_ok(&args);
    (public_key, manifest)
}

/// Makes a [`Release`] in `root`: `release.key`, `manifest.cose`.
pub fn release(root: &Path) -> Release {
    let binary_hash = hex::encode(sha2::Sha256::digest(std::fs::read(bin()).unwrap()));
    let (public_key, manifest) =
        sign_release(root, "9.9.9", &[&format!("dev:measurement={binary_hash}")]);
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
pub fn configure_tier1(node: &TestNode, release: &Release) {
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
pub fn peer_view(observer: &TestNode, peer: &TestNode) -> Option<serde_json::Value> {
    observer.peers()["peers"]
        .as_array()?
        .iter()
        .find(|p| p["node_id"] == peer.node_id.as_str())
        .cloned()
}

/// The tier `observer` gives `peer` (empty when it does not list it).
pub fn tier_of(observer: &TestNode, peer: &TestNode) -> String {
    peer_view(observer, peer)
        .and_then(|p| p["tier"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A process log without the ANSI colour sequences tracing may write.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte (0x40..=0x7e)
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `ztmesh witness` on loopback, trusting `log_vkey`; returns (process, vkey, address).
pub fn start_witness(root: &Path, log_vkey: &str) -> (Proc, String, String) {
    let dir = root.join("witness");
    let data_dir = dir.to_str().unwrap();
    ztmesh_ok(&[
        "witness",
        "init",
        "--data-dir",
        data_dir,
        "--name",
        "witness.test/w1",
    ]);
    ztmesh_ok(&[
        "witness",
        "add-log",
        "--data-dir",
        data_dir,
        "--vkey",
        log_vkey,
    ]);
    let vkey = ztmesh_ok(&["witness", "key", "--data-dir", data_dir])
        .trim()
        .to_owned();
    let addr_file = dir.join("witness.addr");
    let mut proc = Proc::spawn(
        "witness",
        &["witness", "serve", "--data-dir", data_dir],
        dir.join("serve.log"),
    );
    wait_until("the witness to listen", Duration::from_secs(60), || {
        proc.assert_running();
        addr_file.exists()
    });
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .trim()
        .to_owned();
    (proc, vkey, addr)
}
