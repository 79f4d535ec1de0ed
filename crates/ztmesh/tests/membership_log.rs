//! The CA's membership log end to end: a real `ztmesh ca serve` with a 2-of-3 tlog-policy over
//! three real `ztmesh witness serve` processes, nodes enrolled, rotated and revoked through the
//! real API, and `ztmesh log …` as an operator and an offline auditor use it.
//!
//! What must hold: every committed membership change is an entry, in order; the CA publishes
//! checkpoints that its witnesses cosign and that `log verify` accepts with the policy; a
//! checkpoint without quorum is still served but `log verify` refuses it; the witnesses refuse
//! a rolled-back or forked checkpoint even when it carries a valid log signature; garbage gets
//! JSON 4xx answers from the routes and a clear failure from the CLI.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use ztmesh_ca::membership_log::LogEntry;
use ztmesh_node::node_dir::NodeDir;
use ztmesh_pki::keyfile::{self, Protection};
use ztmesh_pki::{IdentityProofDomain, TlsKeyPair};
use ztmesh_runtime::tls::CurrentCertificate;
use ztmesh_tlog::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use ztmesh_tlog::witness::parse_cosignature_response;
use ztmesh_tlog::{
    AddCheckpointRequest, Checkpoint, CosignatureSigner, Hash, MerkleTree, Note, Policy, Signer,
};

const TRUST_DOMAIN: &str = "test.ztmesh";
const ORIGIN: &str = "test.ztmesh/membership";

/// Generous deadline for anything on a shared 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `ca serve` arguments that keep the enrollment rate limit out of the way.
const NO_RATE_LIMIT: [&str; 4] = [
    "--rate-limit-rpm",
    "1000000",
    "--rate-limit-burst",
    "1000000",
];

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A 4xx with the JSON error body every route promises.
    #[track_caller]
    fn assert_json_client_error(&self, what: &str) {
        assert!(
            (400..500).contains(&self.status),
            "{what}: expected 4xx, got {} {}",
            self.status,
            self.text()
        );
        assert!(
            self.content_type.starts_with("application/json"),
            "{what}: content type {:?}",
            self.content_type
        );
        let body = self.json();
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{what}: {body}"
        );
    }
}

/// A blocking client for one server (its own runtime): the CA over TLS trusting its ca.pem,
/// or a witness over plain HTTP.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: &str, ca_der: &[u8], cert: Option<Arc<CurrentCertificate>>) -> Http {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = ztmesh_runtime::tls::ca_client_config(ca_der, cert).unwrap();
        let client = {
            let _guard = rt.enter();
            reqwest::Client::builder()
                .use_preconfigured_tls(config)
                .timeout(TIMEOUT)
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
        };
        Http {
            rt,
            client,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        self.rt.block_on(async {
            let response = request.send().await.expect("an HTTP answer");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let body = response.bytes().await.expect("an HTTP body").to_vec();
            Reply {
                status,
                content_type,
                body,
            }
        })
    }

    fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(format!("{}{path}", self.base)))
    }

    fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        self.send(
            self.client
                .post(format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body),
        )
    }
}

/// A witness process: `witness init`, `add-log` of the CA's log key, `serve`.
struct TestWitness {
    name: String,
    dir: PathBuf,
    addr: String,
    vkey: String,
    proc: Option<Proc>,
}

impl TestWitness {
    fn start(root: &Path, index: usize, log_vkey: &str) -> TestWitness {
        let dir = root.join(format!("witness{index}"));
        let data_dir = dir.to_str().unwrap();
        let name = format!("witness.test/w{index}");
        ztmesh_ok(&["witness", "init", "--data-dir", data_dir, "--name", &name]);
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
        let mut witness = TestWitness {
            name,
            dir,
            addr: String::new(),
            vkey,
            proc: None,
        };
        witness.serve("127.0.0.1:0");
        witness
    }

    fn serve(&mut self, listen: &str) {
        let addr_file = self.dir.join("witness.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut proc = Proc::spawn(
            &self.name,
            &[
                "witness",
                "serve",
                "--data-dir",
                self.dir.to_str().unwrap(),
                "--listen",
                listen,
            ],
            self.dir.join("serve.log"),
        );
        wait_until("the witness to listen", TIMEOUT, || {
            proc.assert_running();
            addr_file.exists()
        });
        self.addr = std::fs::read_to_string(&addr_file)
            .unwrap()
            .trim()
            .to_owned();
        self.proc = Some(proc);
    }

    fn kill9(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }
}

/// A CA serving a 2-of-3 policy over three witnesses.
struct LogMesh {
    _temp: tempfile::TempDir,
    root: PathBuf,
    ca: TestCa,
    witnesses: Vec<TestWitness>,
    policy_path: PathBuf,
    policy_text: String,
    log_vkey: String,
    http: Http,
}

impl LogMesh {
    fn start() -> LogMesh {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().to_owned();
        let ca_dir = root.join("ca");
        let init = ztmesh_ok(&[
            "ca",
            "init",
            "--trust-domain",
            TRUST_DOMAIN,
            "--data-dir",
            ca_dir.to_str().unwrap(),
        ]);
        let fingerprint = init
            .lines()
            .find_map(|l| l.trim().strip_prefix("fingerprint:"))
            .expect("fingerprint line")
            .trim()
            .to_owned();
        // Offline: the operator writes the policy before the CA ever serves.
        let log_vkey = ztmesh_ok(&["log", "key", "--ca-dir", ca_dir.to_str().unwrap()])
            .trim()
            .to_owned();
        assert!(log_vkey.starts_with(&format!("{ORIGIN}+")), "{log_vkey}");
        let witnesses: Vec<TestWitness> = (1..=3)
            .map(|i| TestWitness::start(&root, i, &log_vkey))
            .collect();
        let mut policy_text = format!("# membership log of {TRUST_DOMAIN}\nlog {log_vkey}\n");
        for (i, witness) in witnesses.iter().enumerate() {
            policy_text.push_str(&format!(
                "witness w{} {} http://{}\n",
                i + 1,
                witness.vkey,
                witness.addr
            ));
        }
        policy_text.push_str("group witnesses 2 w1 w2 w3\nquorum witnesses\n");
        let policy_path = root.join("policy.txt");
        std::fs::write(&policy_path, &policy_text).unwrap();
        let mut ca = TestCa {
            dir: ca_dir,
            addr: String::new(),
            url: String::new(),
            fingerprint,
            proc: None,
        };
        ca.serve("127.0.0.1:0", &Self::serve_args(&policy_path));
        let http = Http::new(&ca.url, &ca.ca_der(), None);
        LogMesh {
            _temp: temp,
            root,
            ca,
            witnesses,
            policy_path,
            policy_text,
            log_vkey,
            http,
        }
    }

    fn serve_args(policy: &Path) -> Vec<&str> {
        let mut args = NO_RATE_LIMIT.to_vec();
        args.extend(["--log-policy", policy.to_str().unwrap()]);
        args
    }

    fn ca_dir(&self) -> &str {
        self.ca.dir.to_str().unwrap()
    }

    fn policy(&self) -> &str {
        self.policy_path.to_str().unwrap()
    }

    /// The served checkpoint note, if any.
    fn checkpoint(&self) -> Option<Note> {
        let reply = self.http.get("/v1/log/checkpoint");
        match reply.status {
            200 => {
                assert!(reply.content_type.starts_with("text/plain"));
                Some(Note::parse(&reply.text()).expect("a signed note"))
            }
            404 => {
                assert_eq!(reply.json()["error"], "no_checkpoint");
                None
            }
            other => panic!("GET /v1/log/checkpoint: {other} {}", reply.text()),
        }
    }

    /// Waits until the served checkpoint has `size` and cosignatures from at least `witnesses`
    /// witnesses; returns it.
    fn wait_checkpoint(&self, size: u64, witnesses: usize) -> Note {
        let mut last = None;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(note) = self.checkpoint() {
                let checkpoint = Checkpoint::parse(note.text()).unwrap();
                let cosigners = cosigner_count(&note);
                if checkpoint.size() == size && cosigners >= witnesses {
                    return note;
                }
                last = Some((checkpoint.size(), cosigners));
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for a checkpoint of size {size} with {witnesses} cosignatures (last: {last:?})\n{}",
                self.ca.proc.as_ref().map(|p| p.log_text()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The entries as `GET /v1/log/entries` answers them, decoded.
    fn entries(&self) -> Vec<(Vec<u8>, LogEntry)> {
        let reply = self.http.get("/v1/log/entries?start=0&count=1000");
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, item)| {
                assert_eq!(item["index"], i as u64);
                let leaf = unb64(item["leaf"].as_str().unwrap());
                let entry = LogEntry::from_leaf(&leaf).unwrap();
                (leaf, entry)
            })
            .collect()
    }

    /// The log key, opened from the CA directory with the harness passphrase.
    fn log_signer(&self) -> Signer {
        let sealed = std::fs::read_to_string(self.ca.dir.join("log.key")).unwrap();
        let text = keyfile::open(
            &sealed,
            &Protection::Passphrase(PASSPHRASE.as_bytes()),
            false,
        )
        .unwrap();
        Signer::from_private_key(std::str::from_utf8(&text).unwrap().trim()).unwrap()
    }
}

/// Signature lines of a note other than the log's own.
fn cosigner_count(note: &Note) -> usize {
    note.signatures()
        .iter()
        .filter(|s| s.name() != ORIGIN)
        .count()
}

/// Rotates an enrolled node's certificate through `POST /v1/rotate` with its current
/// certificate; returns the new serial.
fn rotate(ca: &TestCa, node: &TestNode) -> String {
    let protection = Protection::Passphrase(PASSPHRASE.as_bytes());
    let dir = NodeDir(node.dir.clone());
    let identity = dir.read_identity(&protection, false).unwrap();
    let (tls_key, cert_der) = dir.read_tls(&protection, false).unwrap();
    let current =
        Arc::new(CurrentCertificate::new(vec![cert_der], &tls_key.to_pkcs8_der()).unwrap());
    let http = Http::new(&ca.url, &ca.ca_der(), Some(current));
    let key = TlsKeyPair::generate().unwrap();
    let csr = key
        .csr_der(&identity.public().node_id(), &TRUST_DOMAIN.parse().unwrap())
        .unwrap();
    let body = json!({
        "csr": b64(&csr),
        "identity_proof": b64(&identity.sign_proof(IdentityProofDomain::RotateCsr, &csr)),
    });
    let reply = http.post(
        "/v1/rotate",
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["serial"].as_str().unwrap().to_owned()
}

/// The serial of a node's current certificate.
fn serial_of(node: &TestNode) -> String {
    let protection = Protection::Passphrase(PASSPHRASE.as_bytes());
    let (_, cert_der) = NodeDir(node.dir.clone())
        .read_tls(&protection, false)
        .unwrap();
    ztmesh_pki::NodeCertificate::parse(&cert_der)
        .unwrap()
        .serial
        .to_hex()
}

/// A CLI run that must fail; returns stdout and stderr together.
#[track_caller]
fn ztmesh_fails(args: &[&str]) -> String {
    let out = ztmesh(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "ztmesh {args:?} succeeded:\n{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error:"),
        "ztmesh {args:?}: no error message:\n{text}"
    );
    text
}

fn write(root: &Path, name: &str, contents: impl AsRef<[u8]>) -> String {
    let path = root.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn membership_events_are_logged_in_order_and_cosigned_checkpoints_verify_offline() {
    let mesh = LogMesh::start();
    // The first checkpoint is of the empty log, cosigned by all three witnesses.
    mesh.wait_checkpoint(0, 3);

    let n1 = mesh.ca.enroll(&mesh.root, "n1");
    let n2 = mesh.ca.enroll(&mesh.root, "n2");
    let n1_first = serial_of(&n1);
    let n2_serial = serial_of(&n2);
    let n1_second = rotate(&mesh.ca, &n1);
    ztmesh_ok(&["revoke", "--ca-dir", mesh.ca_dir(), "--serial", &n1_first]);
    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        mesh.ca_dir(),
        "--node-id",
        &n2.node_id,
    ]);

    let expected = [
        ("enroll", &n1.node_id, &n1_first),
        ("enroll", &n2.node_id, &n2_serial),
        ("rotate", &n1.node_id, &n1_second),
        ("revoke_certificate", &n1.node_id, &n1_first),
        ("revoke_node", &n2.node_id, &n2_serial),
    ];
    let entries = mesh.entries();
    let got: Vec<(String, String, String)> = entries
        .iter()
        .map(|(_, e)| {
            (
                e.kind.as_str().to_owned(),
                e.node_id.to_string(),
                e.serial.clone(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(k, n, s)| (k.to_string(), n.to_string(), s.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(entries[0].1.not_after.is_some() && entries[2].1.not_after.is_some());
    assert!(entries[3].1.not_after.is_none() && entries[4].1.not_after.is_none());

    // `log show` lists them in order, as a table and as JSON.
    let table = ztmesh_ok(&["log", "show", "--ca-dir", mesh.ca_dir()]);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{table}");
    for (row, (kind, node, serial)) in rows.iter().zip(&expected) {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &fields[1..4],
            &[*kind, node.as_str(), serial.as_str()],
            "{row}"
        );
    }
    let page = ztmesh_ok(&[
        "log",
        "show",
        "--ca-dir",
        mesh.ca_dir(),
        "--start",
        "3",
        "--count",
        "1",
    ]);
    assert_eq!(page.lines().count(), 2, "{page}");
    assert!(page.contains("revoke_certificate"), "{page}");
    let shown_json = ztmesh_ok(&["log", "show", "--ca-dir", mesh.ca_dir(), "--json"]);
    let shown: Value = serde_json::from_str(&shown_json).unwrap();
    assert_eq!(shown["entries"].as_array().unwrap().len(), 5);
    assert_eq!(shown["entries"][4]["entry"]["kind"], "revoke_node");
    assert_eq!(
        unb64(shown["entries"][1]["leaf"].as_str().unwrap()),
        entries[1].0
    );

    // The checkpoint over all five, cosigned by every witness (two are the quorum).
    let note = mesh.wait_checkpoint(5, 3);
    let printed = ztmesh_ok(&["log", "checkpoint", "--ca-dir", mesh.ca_dir()]);
    assert_eq!(printed, note.to_string());
    assert!(
        printed.contains(&format!("\u{2014} {ORIGIN} ")),
        "{printed}"
    );
    assert!(
        cosigner_count(&Note::parse(&printed).unwrap()) >= 2,
        "{printed}"
    );
    let policy = Policy::parse(&mesh.policy_text).unwrap();
    let verified = policy.verify_checkpoint(&note).unwrap();
    assert_eq!(verified.cosigners.len(), 3);

    // Proofs from the routes verify against the checkpoint root.
    let root = verified.checkpoint.root();
    for (index, (leaf, _)) in entries.iter().enumerate() {
        let reply = mesh
            .http
            .get(&format!("/v1/log/proof/inclusion?index={index}&size=5"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        let proof: Vec<Hash> = reply.json()["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| Hash::from_base64(h.as_str().unwrap()).unwrap())
            .collect();
        verify_inclusion(&leaf_hash(leaf), index as u64, 5, &proof, &root).unwrap();
    }
    let mut tree = MerkleTree::new();
    for (leaf, _) in &entries[..3] {
        tree.append(leaf);
    }
    let reply = mesh.http.get("/v1/log/proof/consistency?old=3&new=5");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let proof: Vec<Hash> = reply.json()["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash::from_base64(h.as_str().unwrap()).unwrap())
        .collect();
    verify_consistency(3, 5, &proof, &tree.root(), &root).unwrap();

    // The key and the policy, as served.
    let key = mesh.http.get("/v1/log/key");
    assert_eq!((key.status, key.text()), (200, mesh.log_vkey.clone()));
    let pem = mesh.ca.dir.join("ca.pem");
    let fetched = ztmesh_ok(&[
        "log",
        "key",
        "--ca-url",
        &mesh.ca.url,
        "--ca-cert",
        pem.to_str().unwrap(),
    ]);
    assert_eq!(fetched.trim(), mesh.log_vkey);
    let served_policy = mesh.http.get("/v1/log/policy");
    assert_eq!(
        (served_policy.status, served_policy.text()),
        (200, mesh.policy_text.clone())
    );

    // The auditor, offline: signature, cosignatures, quorum, then the root of the entries.
    let checkpoint_file = write(&mesh.root, "checkpoint.txt", &printed);
    let entries_file = write(&mesh.root, "entries.json", &shown_json);
    let report = ztmesh_ok(&[
        "log",
        "verify",
        "--policy",
        mesh.policy(),
        "--checkpoint",
        &checkpoint_file,
        "--entries",
        &entries_file,
    ]);
    for needle in [
        "log signature   valid",
        "witness w1",
        "witness w2",
        "witness w3",
        "cosigned at",
        "quorum          met",
        "the root of entries 0..5 matches the checkpoint",
    ] {
        assert!(report.contains(needle), "{needle:?} missing:\n{report}");
    }
    // Fetching the checkpoint instead of reading it works too.
    ztmesh_ok(&[
        "log",
        "verify",
        "--policy",
        mesh.policy(),
        "--ca-dir",
        mesh.ca_dir(),
    ]);

    // Entries that do not make the root: one leaf changed, one missing, one out of order.
    let mut tampered: Value = shown.clone();
    let mut leaf = unb64(tampered["entries"][2]["leaf"].as_str().unwrap());
    leaf[10] ^= 1;
    tampered["entries"][2]["leaf"] = json!(b64(&leaf));
    let mut short = shown.clone();
    short["entries"].as_array_mut().unwrap().pop();
    let mut swapped = shown.clone();
    swapped["entries"].as_array_mut().unwrap().swap(0, 1);
    for (name, bad) in [
        ("tampered", tampered),
        ("short", short),
        ("swapped", swapped),
    ] {
        let file = write(&mesh.root, &format!("{name}.json"), bad.to_string());
        let out = ztmesh_fails(&[
            "log",
            "verify",
            "--policy",
            mesh.policy(),
            "--checkpoint",
            &checkpoint_file,
            "--entries",
            &file,
        ]);
        assert!(out.contains("entries"), "{name}: {out}");
    }

    // A SIGKILL and restart keeps the entries and serves the same cosigned checkpoint; the
    // log keeps growing from there.
    let mut ca = mesh.ca;
    ca.restart(&LogMesh::serve_args(&mesh.policy_path));
    let mesh = LogMesh { ca, ..mesh };
    assert_eq!(mesh.checkpoint().unwrap(), note);
    assert_eq!(mesh.entries().len(), 5);
    mesh.ca.enroll(&mesh.root, "n3");
    let grown = mesh.wait_checkpoint(6, 3);
    policy.verify_checkpoint(&grown).unwrap();
}

#[test]
fn a_checkpoint_without_quorum_is_served_but_fails_verification() {
    let mut mesh = LogMesh::start();
    mesh.wait_checkpoint(0, 3);
    mesh.witnesses[1].kill9();
    mesh.witnesses[2].kill9();
    mesh.ca.enroll(&mesh.root, "n1");
    let note = mesh.wait_checkpoint(1, 1);
    assert_eq!(cosigner_count(&note), 1, "{note}");

    // Served all the same: whether to accept it is the reader's decision.
    let policy = Policy::parse(&mesh.policy_text).unwrap();
    assert!(policy.verify_checkpoint(&note).is_err());
    let out = ztmesh_fails(&[
        "log",
        "verify",
        "--policy",
        mesh.policy(),
        "--ca-dir",
        mesh.ca_dir(),
    ]);
    assert!(out.contains("quorum not met"), "{out}");
    assert!(out.contains("no cosignature"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("witness w1"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("cosigned at"), "{out}");

    // A witness back on its address gets the next checkpoint, and the quorum is met again.
    let addr = mesh.witnesses[1].addr.clone();
    mesh.witnesses[1].serve(&addr);
    mesh.ca.enroll(&mesh.root, "n2");
    let note = mesh.wait_checkpoint(2, 2);
    policy.verify_checkpoint(&note).unwrap();
    ztmesh_ok(&[
        "log",
        "verify",
        "--policy",
        mesh.policy(),
        "--ca-dir",
        mesh.ca_dir(),
    ]);
}

#[test]
fn witnesses_refuse_rolled_back_and_forked_checkpoints_signed_by_the_log_key() {
    let mesh = LogMesh::start();
    mesh.ca.enroll(&mesh.root, "n1");
    mesh.ca.enroll(&mesh.root, "n2");
    let cosigned = mesh.wait_checkpoint(2, 3);
    let signer = mesh.log_signer();
    assert_eq!(signer.vkey(), mesh.log_vkey);

    let mut tree = MerkleTree::new();
    for (leaf, _) in mesh.entries() {
        tree.append(&leaf);
    }
    assert_eq!(
        tree.root(),
        Checkpoint::parse(cosigned.text()).unwrap().root()
    );
    let sign = |size: u64, root: Hash| {
        let checkpoint = Checkpoint::new(ORIGIN, size, root).unwrap();
        Note::sign(&checkpoint.to_string(), &[&signer]).unwrap()
    };
    let submit = |witness: &TestWitness, old: u64, proof: Vec<Hash>, note: Note| {
        let body = AddCheckpointRequest::new(old, proof, note)
            .unwrap()
            .to_body();
        Http::new(&format!("http://{}", witness.addr), &mesh.ca.ca_der(), None).post(
            "/add-checkpoint",
            "text/plain",
            body.into_bytes(),
        )
    };

    for witness in &mesh.witnesses {
        // Rollback: a smaller checkpoint, validly signed, from the size the witness knows...
        let reply = submit(witness, 2, Vec::new(), sign(1, tree.root_at(1).unwrap()));
        assert_eq!(reply.status, 400, "{}: {}", witness.name, reply.text());
        // ...or pretending the witness knows the smaller size: 409 with the size it knows.
        let reply = submit(witness, 1, Vec::new(), sign(1, tree.root_at(1).unwrap()));
        assert_eq!(
            (reply.status, reply.text()),
            (409, "2\n".to_owned()),
            "{}",
            witness.name
        );

        // Fork: another tree of the same size, validly signed.
        let mut fork = MerkleTree::new();
        fork.append(b"forged 0");
        fork.append(b"forged 1");
        let reply = submit(witness, 2, Vec::new(), sign(2, fork.root()));
        assert_eq!(reply.status, 422, "{}: {}", witness.name, reply.text());
        // And the fork grown one more leaf, "proven" from the forked tree.
        fork.append(b"forged 2");
        let proof = fork.consistency_proof(2, 3).unwrap();
        let reply = submit(witness, 2, proof, sign(3, fork.root()));
        assert_eq!(reply.status, 422, "{}: {}", witness.name, reply.text());
        assert!(
            parse_cosignature_response(&reply.text()).is_err(),
            "{}: refused, not cosigned",
            witness.name
        );
    }

    // The honest log is unaffected: the witnesses still cosign its next checkpoint.
    mesh.ca.enroll(&mesh.root, "n3");
    let next = mesh.wait_checkpoint(3, 3);
    Policy::parse(&mesh.policy_text)
        .unwrap()
        .verify_checkpoint(&next)
        .unwrap();
}

/// Paths and queries no well-behaved client sends.
const GARBAGE_REQUESTS: &[&str] = &[
    "/v1/log/entries?start=-1",
    "/v1/log/entries?count=1001",
    "/v1/log/entries?count=18446744073709551616",
    "/v1/log/entries?count=abc",
    "/v1/log/entries?start=1&start=2",
    "/v1/log/entries?foo=1",
    "/v1/log/entries?start=%00",
    "/v1/log/proof/inclusion",
    "/v1/log/proof/inclusion?index=0",
    "/v1/log/proof/inclusion?index=0&size=0",
    "/v1/log/proof/inclusion?index=5&size=2",
    "/v1/log/proof/inclusion?index=0&size=18446744073709551615",
    "/v1/log/proof/inclusion?index=18446744073709551615&size=18446744073709551615",
    "/v1/log/proof/inclusion?index=x&size=1",
    "/v1/log/proof/inclusion?index=0&size=1&extra=1",
    "/v1/log/proof/consistency?old=2&new=1",
    "/v1/log/proof/consistency?old=0&new=99",
    "/v1/log/proof/consistency?old=18446744073709551615&new=18446744073709551615",
    "/v1/log/proof/consistency?old=a&new=b",
    "/v1/log/proof/consistency?old=&new=",
    "/v1/log/proof/consistency?new=1",
    "/v1/log/key/extra",
    "/v1/log/entries/0",
    "/v1/log",
];

#[test]
fn log_routes_answer_garbage_with_json_client_errors() {
    let temp = tempfile::tempdir().unwrap();
    let ca = TestCa::start(temp.path(), &NO_RATE_LIMIT);
    let http = Http::new(&ca.url, &ca.ca_der(), None);
    ca.enroll(temp.path(), "n1");

    // Without --log-policy: no policy, but a log, a key and checkpoints all the same.
    http.get("/v1/log/policy")
        .assert_json_client_error("policy without --log-policy");
    assert_eq!(http.get("/v1/log/policy").json()["error"], "no_policy");
    wait_until("the first checkpoint", TIMEOUT, || {
        http.get("/v1/log/checkpoint").status == 200
    });
    let vkey = std::fs::read_to_string(ca.dir.join("log.vkey")).unwrap();
    assert_eq!(http.get("/v1/log/key").text(), vkey.trim());

    for path in GARBAGE_REQUESTS {
        http.get(path).assert_json_client_error(path);
    }
    for path in [
        "/v1/log/key",
        "/v1/log/checkpoint",
        "/v1/log/entries",
        "/v1/log/policy",
    ] {
        let reply = http.post(path, "application/json", b"{}".to_vec());
        assert_eq!(reply.status, 405, "POST {path}");
        reply.assert_json_client_error(path);
    }
    assert_eq!(
        http.get("/v1/log/entries?count=1001").json()["error"],
        "count_too_large"
    );
    assert_eq!(
        http.get("/v1/log/proof/consistency?old=2&new=1").json()["error"],
        "sizes_out_of_order"
    );
    assert_eq!(
        http.get("/v1/log/proof/inclusion?index=5&size=2").json()["error"],
        "out_of_range"
    );
    // In range: answers, not errors.
    assert_eq!(
        http.get("/v1/log/entries?start=5").json(),
        json!({"entries": []})
    );
    assert_eq!(
        http.get("/v1/log/proof/consistency?old=0&new=1").json(),
        json!({"proof": []})
    );

    // Random query strings on every route: never a 5xx, every 4xx in JSON.
    let routes = [
        "/v1/log/entries",
        "/v1/log/proof/inclusion",
        "/v1/log/proof/consistency",
        "/v1/log/checkpoint",
        "/v1/log/key",
    ];
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        proptest::sample::select(routes.to_vec()),
        proptest::collection::vec(
            (
                prop_oneof![
                    Just("start".to_owned()),
                    Just("count".to_owned()),
                    Just("index".to_owned()),
                    Just("size".to_owned()),
                    Just("old".to_owned()),
                    Just("new".to_owned()),
                    "[a-z%0-9]{0,6}",
                ],
                prop_oneof![
                    (0u64..4).prop_map(|n| n.to_string()),
                    any::<u64>().prop_map(|n| n.to_string()),
                    "-?[0-9]{1,25}",
                    "[ -~]{0,12}",
                ],
            ),
            0..4,
        ),
    );
    runner
        .run(&strategy, |(route, params)| {
            let query: Vec<String> = params
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
                    )
                })
                .collect();
            let path = format!("{route}?{}", query.join("&"));
            let reply = http.get(&path);
            prop_assert!(
                reply.status < 500,
                "{path}: {} {}",
                reply.status,
                reply.text()
            );
            if reply.status >= 400 {
                prop_assert!(
                    reply.content_type.starts_with("application/json"),
                    "{path}: {}",
                    reply.content_type
                );
                let body = reply.json();
                prop_assert!(body["error"].is_string(), "{path}: {body}");
            }
            Ok::<(), TestCaseError>(())
        })
        .unwrap();
}

/// Runs `ztmesh args`, killing it if it has not exited within [`TIMEOUT`].
fn ztmesh_bounded(args: &[&str]) -> Output {
    let mut child = std::process::Command::new(bin())
        .args(args)
        .env("ZTMESH_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ztmesh {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn ca_serve_creates_a_missing_log_key_and_refuses_a_bad_policy() {
    let temp = tempfile::tempdir().unwrap();
    let ca_dir = temp.path().join("ca");
    let dir = ca_dir.to_str().unwrap();
    ztmesh_ok(&[
        "ca",
        "init",
        "--trust-domain",
        TRUST_DOMAIN,
        "--data-dir",
        dir,
    ]);
    let first = std::fs::read_to_string(ca_dir.join("log.vkey")).unwrap();
    // A CA directory from before the log: no log key files.
    std::fs::remove_file(ca_dir.join("log.key")).unwrap();
    std::fs::remove_file(ca_dir.join("log.vkey")).unwrap();

    for (name, policy) in [
        ("garbage", "\u{0}\u{1}not a policy".to_owned()),
        ("no-quorum", format!("log {}\n", first.trim())),
        ("other-log", format!("log {}\nquorum none\n", first.trim())),
    ] {
        let path = write(temp.path(), name, policy);
        let out = ztmesh_bounded(&[
            "ca",
            "serve",
            "--data-dir",
            dir,
            "--listen",
            "127.0.0.1:0",
            "--log-policy",
            &path,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {stderr}");
        assert!(stderr.contains("--log-policy"), "{name}: {stderr}");
    }
    let missing = ztmesh_bounded(&[
        "ca",
        "serve",
        "--data-dir",
        dir,
        "--listen",
        "127.0.0.1:0",
        "--log-policy",
        "/nonexistent",
    ]);
    assert!(!missing.status.success());

    // Created again at serve (the failed starts above already did), with a new key.
    let second = std::fs::read_to_string(ca_dir.join("log.vkey")).unwrap();
    assert_ne!(first, second);
    let mut ca = TestCa {
        dir: ca_dir.clone(),
        addr: String::new(),
        url: String::new(),
        fingerprint: String::new(),
        proc: None,
    };
    ca.serve("127.0.0.1:0", &[]);
    let http = Http::new(&ca.url, &ca.ca_der(), None);
    assert_eq!(http.get("/v1/log/key").text(), second.trim());
    assert_eq!(
        ztmesh_ok(&["log", "key", "--ca-dir", dir]).trim(),
        second.trim()
    );
    // A log.vkey that does not match log.key stops the CA.
    let mut ca_proc = ca.proc.take().unwrap();
    ca_proc.kill9();
    std::fs::write(ca_dir.join("log.vkey"), format!("{}\n", first.trim())).unwrap();
    let out = ztmesh_bounded(&["ca", "serve", "--data-dir", dir, "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("log.vkey"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A policy, a cosigned checkpoint and its entries made with the tlog crate: what an auditor
/// receives, without any process.
struct AuditorFiles {
    policy: String,
    checkpoint: String,
    entries: String,
}

fn auditor_files(root: &Path, cosigners: usize) -> AuditorFiles {
    let signer = Signer::new(ORIGIN, ed25519_dalek::SigningKey::from_bytes(&[1; 32])).unwrap();
    let witnesses: Vec<CosignatureSigner> = (0..3u8)
        .map(|i| {
            CosignatureSigner::new(
                &format!("witness.test/w{i}"),
                ed25519_dalek::SigningKey::from_bytes(&[10 + i; 32]),
            )
            .unwrap()
        })
        .collect();
    let mut policy = format!("log {}\n", signer.vkey());
    for (i, w) in witnesses.iter().enumerate() {
        policy.push_str(&format!("witness w{i} {}\n", w.vkey()));
    }
    policy.push_str("group g 2 w0 w1 w2\nquorum g\n");
    let mut tree = MerkleTree::new();
    let mut shown = Vec::new();
    for i in 0..3u64 {
        let entry = LogEntry {
            kind: ztmesh_ca::membership_log::EntryKind::Enroll,
            node_id: ztmesh_core::NodeId::from_bytes([i as u8; 20]),
            serial: format!("{:02x}", i + 1),
            not_after: Some(2_000_000_000),
            at: 1_700_000_000 + i,
        };
        let leaf = entry.to_leaf();
        tree.append(&leaf);
        shown.push(json!({"index": i, "leaf": b64(&leaf)}));
    }
    let checkpoint = Checkpoint::new(ORIGIN, 3, tree.root()).unwrap();
    let mut note = Note::sign(&checkpoint.to_string(), &[&signer]).unwrap();
    for w in witnesses.iter().take(cosigners) {
        note.add_signature(w.cosign(note.text(), 1_700_000_100).unwrap())
            .unwrap();
    }
    AuditorFiles {
        policy: write(root, &format!("policy{cosigners}"), policy),
        checkpoint: write(root, &format!("checkpoint{cosigners}"), note.to_string()),
        entries: write(
            root,
            &format!("entries{cosigners}"),
            json!({ "entries": shown }).to_string(),
        ),
    }
}

#[test]
fn log_verify_refuses_garbage_with_a_message_and_a_failure_status() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path();
    let good = auditor_files(root, 2);
    let verify = |policy: &str, checkpoint: &str, entries: &str| -> Vec<String> {
        vec![
            "log".into(),
            "verify".into(),
            "--policy".into(),
            policy.into(),
            "--checkpoint".into(),
            checkpoint.into(),
            "--entries".into(),
            entries.into(),
        ]
    };
    let run_ok =
        |args: Vec<String>| ztmesh_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let run_fails =
        |args: Vec<String>| ztmesh_fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let report = run_ok(verify(&good.policy, &good.checkpoint, &good.entries));
    assert!(report.contains("quorum          met"), "{report}");

    let one = auditor_files(root, 1);
    let out = run_fails(verify(&one.policy, &one.checkpoint, &one.entries));
    assert!(out.contains("quorum not met"), "{out}");

    let checkpoint_text = std::fs::read_to_string(&good.checkpoint).unwrap();
    let garbage_policies = [
        "",
        "\u{0}\u{1}\u{2}",
        "quorum\n",
        "log not-a-key\nquorum none\n",
        "witness w0 nokey\nquorum w0\n",
    ];
    for policy in garbage_policies {
        let path = write(root, "bad-policy", policy);
        let out = run_fails(verify(&path, &good.checkpoint, &good.entries));
        assert!(out.contains("policy"), "{policy:?}: {out}");
    }
    // The policy of another log: the checkpoint's origin is unknown to it.
    let other = write(
        root,
        "other-policy",
        format!(
            "log {}\nquorum none\n",
            Signer::new("other/log", ed25519_dalek::SigningKey::from_bytes(&[2; 32]))
                .unwrap()
                .vkey()
        ),
    );
    run_fails(verify(&other, &good.checkpoint, &good.entries));

    let forged_signature = {
        let mut lines: Vec<String> = checkpoint_text.lines().map(str::to_owned).collect();
        // Flip one character of the log signature line's base64.
        let line = lines
            .iter_mut()
            .find(|l| l.contains(ORIGIN) && l.starts_with('\u{2014}'))
            .unwrap();
        let last = line.pop().unwrap();
        line.push(if last == 'A' { 'B' } else { 'A' });
        lines.join("\n") + "\n"
    };
    let garbage_checkpoints = [
        String::new(),
        "not a note\n".to_owned(),
        "\u{0}".repeat(10),
        checkpoint_text.replace("\n3\n", "\n4\n"),
        forged_signature,
        checkpoint_text
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n"),
        "x".repeat(2 * 1024 * 1024),
    ];
    for checkpoint in &garbage_checkpoints {
        let path = write(root, "bad-checkpoint", checkpoint);
        run_fails(verify(&good.policy, &path, &good.entries));
    }

    let entries_text = std::fs::read_to_string(&good.entries).unwrap();
    let garbage_entries = [
        String::new(),
        "[]".to_owned(),
        "{\"entries\": 5}".to_owned(),
        "{\"entries\": [{\"index\": 0, \"leaf\": \"!!!\"}]}".to_owned(),
        "{\"entries\": [{\"index\": -1, \"leaf\": \"AA==\"}]}".to_owned(),
        entries_text.replace("\"index\":1", "\"index\":7"),
        "{\"entries\": []}".to_owned(),
    ];
    for entries in &garbage_entries {
        let path = write(root, "bad-entries", entries);
        let out = run_fails(verify(&good.policy, &good.checkpoint, &path));
        assert!(out.contains("entries"), "{entries:?}: {out}");
    }

    // Missing files and missing sources.
    run_fails(verify("/nonexistent", &good.checkpoint, &good.entries));
    run_fails(verify(&good.policy, "/nonexistent", &good.entries));
    run_fails(verify(&good.policy, &good.checkpoint, "/nonexistent"));
    run_fails(vec![
        "log".into(),
        "verify".into(),
        "--policy".into(),
        good.policy.clone(),
    ]);
    let out = ztmesh_fails(&["log", "show", "--ca-dir", "/nonexistent"]);
    assert!(out.contains("ca.addr"), "{out}");
    ztmesh_fails(&["log", "key", "--ca-dir", "/nonexistent"]);
    ztmesh_fails(&["log", "checkpoint"]);
}
