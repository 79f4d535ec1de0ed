//! `ztmesh witness`: a real witness process on loopback, driven over raw HTTP/1.1 by a test
//! that plays the log with the tlog crate (signing key, Merkle tree, checkpoints).
//!
//! What must hold: consistent checkpoints are cosigned with the key `witness key` prints; stale,
//! forked, unknown, forged and malformed submissions are refused with the C2SP tlog-witness
//! statuses and change nothing; the witness never cosigns a rollback, not after a SIGKILL and
//! restart and not when conflicting checkpoints race.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    exchange, parse_reply, request_bytes, wait_until, ztmesh, ztmesh_ok, PlainReply as Reply, Proc,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rand::SeedableRng;
use ztmesh_tlog::witness::{parse_cosignature_response, MAX_REQUEST_LEN};
use ztmesh_tlog::{
    AddCheckpointRequest, Checkpoint, CosignatureVerifier, MerkleTree, Note, Signer,
};

const ORIGIN: &str = "ztmesh.test/membership";
const WITNESS_NAME: &str = "witness.test/w1";

/// A log as the test plays it: a signing key and a tree that can be cloned to fork it.
struct TestLog {
    signer: Signer,
    tree: MerkleTree,
}

impl TestLog {
    fn new(origin: &str, seed: u64) -> TestLog {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        TestLog {
            signer: Signer::generate(origin, &mut rng).unwrap(),
            tree: MerkleTree::new(),
        }
    }

    fn grow(&mut self, n: u64, tag: &str) {
        for _ in 0..n {
            let i = self.tree.size();
            self.tree.append(format!("{tag} {i}").as_bytes());
        }
    }

    fn note_at(&self, size: u64) -> Note {
        let root = self.tree.root_at(size).unwrap();
        let checkpoint = Checkpoint::new(self.signer.name(), size, root).unwrap();
        Note::sign(&checkpoint.to_string(), &[&self.signer]).unwrap()
    }

    /// An `add-checkpoint` body from `old` to `new` with an honest proof in this tree.
    fn body(&self, old: u64, new: u64) -> Vec<u8> {
        let proof = self.tree.consistency_proof(old, new).unwrap();
        AddCheckpointRequest::new(old, proof, self.note_at(new))
            .unwrap()
            .to_body()
            .into_bytes()
    }

    /// A fork: the same key over a tree that shares the first `shared` leaves.
    fn fork(&self, shared: u64, tag: &str, extra: u64) -> TestLog {
        let mut tree = MerkleTree::new();
        for i in 0..shared {
            tree.append_leaf_hash(self.tree.leaf_hash(i).unwrap());
        }
        let mut fork = TestLog {
            signer: self.signer.clone(),
            tree,
        };
        fork.grow(extra, tag);
        fork
    }
}

/// A witness process: `witness init`, `add-log` for each log, `serve`.
struct TestWitness {
    dir: PathBuf,
    addr: String,
    vkey: CosignatureVerifier,
    proc: Option<Proc>,
}

impl TestWitness {
    fn start(root: &Path, logs: &[&TestLog]) -> TestWitness {
        let dir = root.join("witness");
        let data_dir = dir.to_str().unwrap();
        ztmesh_ok(&[
            "witness",
            "init",
            "--data-dir",
            data_dir,
            "--name",
            WITNESS_NAME,
        ]);
        for log in logs {
            ztmesh_ok(&[
                "witness",
                "add-log",
                "--data-dir",
                data_dir,
                "--vkey",
                &log.signer.vkey(),
            ]);
        }
        let printed = ztmesh_ok(&["witness", "key", "--data-dir", data_dir]);
        let vkey = CosignatureVerifier::parse(printed.trim())
            .expect("`witness key` prints a cosignature vkey");
        assert_eq!(vkey.name(), WITNESS_NAME);
        let mut witness = TestWitness {
            dir,
            addr: String::new(),
            vkey,
            proc: None,
        };
        witness.serve();
        witness
    }

    fn serve(&mut self) {
        let addr_file = self.dir.join("witness.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut proc = Proc::spawn(
            "witness",
            &["witness", "serve", "--data-dir", self.dir.to_str().unwrap()],
            self.dir.join("serve.log"),
        );
        wait_until("the witness to listen", Duration::from_secs(30), || {
            proc.assert_running();
            addr_file.exists()
        });
        self.addr = std::fs::read_to_string(&addr_file)
            .unwrap()
            .trim()
            .to_owned();
        self.proc = Some(proc);
    }

    /// SIGKILL, then serve again from the same directory.
    fn kill9_and_restart(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
        self.serve();
    }

    fn assert_running(&mut self) {
        self.proc.as_mut().expect("serving").assert_running();
    }

    fn post(&self, body: &[u8]) -> Reply {
        exchange(&self.addr, &request_bytes("POST", "/add-checkpoint", body))
            .expect("an answer from the witness")
    }

    /// Posts `body`, which must be cosigned: checks the cosignature over `note` and its time.
    #[track_caller]
    fn cosign(&self, body: &[u8], note: &Note) {
        let reply = self.post(body);
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(reply.content_type.starts_with("text/plain"), "{reply:?}");
        self.check_cosignature(&reply.body, note);
    }

    #[track_caller]
    fn check_cosignature(&self, body: &str, note: &Note) {
        let lines = parse_cosignature_response(body).expect("cosignature lines");
        assert_eq!(lines.len(), 1, "{body:?}");
        let timestamp = self
            .vkey
            .verify(note.text(), &lines[0])
            .expect("the cosignature verifies with the printed vkey");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            timestamp.abs_diff(now) < 300,
            "timestamp {timestamp}, now {now}"
        );
    }

    /// Posts `body`, which must be a 409 naming `known` as the size last cosigned.
    #[track_caller]
    fn conflict(&self, body: &[u8], known: u64) {
        let reply = self.post(body);
        assert_eq!(reply.status, 409, "{reply:?}");
        assert_eq!(reply.content_type, "text/x.tlog.size");
        assert_eq!(reply.body, format!("{known}\n"));
    }

    /// The size the witness last cosigned for `log`, asked the way a stateless log does.
    fn known_size(&self, log: &TestLog) -> u64 {
        // Old size 0 with a checkpoint of at least 1 is a 409 unless nothing was cosigned.
        let reply = self.post(&log.body(0, log.tree.size()));
        assert_eq!(reply.status, 409, "probe was cosigned: {reply:?}");
        reply.body.trim_end().parse().unwrap()
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::TempDir::new().unwrap()
}

#[test]
fn consistent_checkpoints_are_cosigned_and_stale_ones_get_the_known_size() {
    let root = tempdir();
    let mut log = TestLog::new(ORIGIN, 1);
    log.grow(12, "event");
    let witness = TestWitness::start(root.path(), &[&log]);

    witness.cosign(&log.body(0, 5), &log.note_at(5));
    witness.cosign(&log.body(5, 12), &log.note_at(12));
    // Re-submitting the head already cosigned is cosigned again; nothing moves.
    witness.cosign(&log.body(12, 12), &log.note_at(12));

    // Stale old sizes, including a stateless client's old 0.
    witness.conflict(&log.body(5, 12), 12);
    witness.conflict(&log.body(0, 12), 12);
    log.grow(8, "event");
    witness.conflict(&log.body(5, 20), 12);
    // An old size above the checkpoint asks for a rollback: 400.
    let reply = witness.post(
        &AddCheckpointRequest::new(12, vec![], log.note_at(5))
            .unwrap()
            .to_body()
            .into_bytes(),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    witness.cosign(&log.body(12, 20), &log.note_at(20));
}

#[test]
fn forks_unknown_logs_and_bad_signatures_are_refused() {
    let root = tempdir();
    let mut log = TestLog::new(ORIGIN, 1);
    log.grow(8, "event");
    let witness = TestWitness::start(root.path(), &[&log]);
    witness.cosign(&log.body(0, 8), &log.note_at(8));

    // Same size, another root. (C2SP tlog-witness names 409 here; the ztmesh-tlog decision
    // answers 422 like any other inconsistency.)
    let fork = log.fork(7, "fork", 1);
    assert_eq!(fork.tree.size(), 8);
    let reply = witness.post(&fork.body(8, 8));
    assert_eq!(reply.status, 422, "{reply:?}");
    // A forked successor: its proof from the cosigned head cannot verify.
    let fork = log.fork(6, "fork", 9);
    let proof = fork.tree.consistency_proof(8, 15).unwrap();
    let body = AddCheckpointRequest::new(8, proof, fork.note_at(15))
        .unwrap()
        .to_body();
    let reply = witness.post(body.as_bytes());
    assert_eq!(reply.status, 422, "{reply:?}");
    assert!(reply.content_type.starts_with("text/plain"), "{reply:?}");

    // A log the witness does not know.
    let mut stranger = TestLog::new("stranger.test/log", 2);
    stranger.grow(3, "x");
    let reply = witness.post(&stranger.body(0, 3));
    assert_eq!(reply.status, 404, "{reply:?}");

    // The right origin signed by another key.
    let mut impostor = TestLog::new(ORIGIN, 3);
    impostor.tree = log.tree.clone();
    impostor.grow(2, "event");
    let reply = witness.post(&impostor.body(8, 10));
    assert_eq!(reply.status, 403, "{reply:?}");
    // The trusted key's line, with the signature bytes of another checkpoint.
    let genuine = log.note_at(8).to_string();
    let other_signature = log.note_at(7).to_string();
    let sig = |note: &str| note.lines().last().unwrap().to_owned();
    let forged = genuine.replace(&sig(&genuine), &sig(&other_signature));
    let reply = witness.post(format!("old 8\n\n{forged}").as_bytes());
    assert_eq!(reply.status, 403, "{reply:?}");

    // None of that moved the head.
    log.grow(2, "event");
    witness.cosign(&log.body(8, 10), &log.note_at(10));
}

/// Random bytes, mutated and truncated requests and oversized bodies: every answer is a 4xx,
/// and afterwards the witness still runs and still cosigns from where it was.
#[test]
fn garbage_gets_4xx_never_5xx_and_the_witness_survives() {
    let root = tempdir();
    let mut log = TestLog::new(ORIGIN, 1);
    log.grow(6, "event");
    let mut witness = TestWitness::start(root.path(), &[&log]);
    witness.cosign(&log.body(0, 3), &log.note_at(3));
    let valid = log.body(3, 6);

    let mut runner = TestRunner::new(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = prop_oneof![
        // Arbitrary bytes.
        proptest::collection::vec(any::<u8>(), 0..2048),
        // The valid body with a few bytes changed: parses far, then fails a check.
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4).prop_map({
            let valid = valid.clone();
            move |edits| {
                let mut body = valid.clone();
                for (index, byte) in edits {
                    let i = index.index(body.len());
                    // Keep the edit a change, so the body is never the valid one.
                    body[i] = if body[i] == byte { byte ^ 0x20 } else { byte };
                }
                body
            }
        }),
        // A prefix of the valid body.
        (0..valid.len()).prop_map({
            let valid = valid.clone();
            move |len| valid[..len].to_vec()
        }),
    ];
    runner
        .run(&strategy, |body| {
            let reply = witness.post(&body);
            if !(400..500).contains(&reply.status) {
                return Err(TestCaseError::fail(format!(
                    "{} for {:?}: {reply:?}",
                    reply.status,
                    String::from_utf8_lossy(&body[..body.len().min(120)])
                )));
            }
            Ok(())
        })
        .unwrap();

    // Declared too large: refused from the header, before any body is sent.
    let head = format!(
        "POST /add-checkpoint HTTP/1.1\r\nHost: witness\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        MAX_REQUEST_LEN + 1
    );
    let reply = exchange(&witness.addr, head.as_bytes()).unwrap();
    assert_eq!(reply.status, 413, "{reply:?}");
    // Actually too large, chunked: the witness stops reading at the cap. It may close the
    // connection before the whole body is written, which the client sees as a reset.
    let oversized = vec![b'a'; MAX_REQUEST_LEN + 1];
    let mut chunked = b"POST /add-checkpoint HTTP/1.1\r\nHost: witness\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", oversized.len()).as_bytes());
    chunked.extend_from_slice(&oversized);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    match exchange(&witness.addr, &chunked) {
        Ok(reply) => assert_eq!(reply.status, 413, "{reply:?}"),
        Err(error) => assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{error}"
        ),
    }
    // A body cut short by the client: no answer or a 4xx, never a 5xx.
    let mut stream = TcpStream::connect(&witness.addr).unwrap();
    stream
        .write_all(
            b"POST /add-checkpoint HTTP/1.1\r\nHost: witness\r\nContent-Length: 500\r\n\r\nold 3\n",
        )
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    if let Some(reply) = parse_reply(&raw) {
        assert!((400..500).contains(&reply.status), "{reply:?}");
    }
    // Not HTTP at all.
    let _ = exchange(&witness.addr, b"\x16\x03\x01\x02\x00 hello?\r\n\r\n");
    // Other methods and paths.
    let reply = exchange(&witness.addr, &request_bytes("GET", "/add-checkpoint", b"")).unwrap();
    assert_eq!(reply.status, 405, "{reply:?}");
    let reply = exchange(&witness.addr, &request_bytes("POST", "/v1/enroll", b"{}")).unwrap();
    assert_eq!(reply.status, 404, "{reply:?}");

    witness.assert_running();
    witness.cosign(&valid, &log.note_at(6));
    let log_text = std::fs::read_to_string(witness.dir.join("serve.log")).unwrap();
    assert!(!log_text.contains("panicked"), "{log_text}");
}

/// The head survives a SIGKILL: after the restart, checkpoints behind it are refused and
/// nothing is cosigned until a checkpoint consistent with it arrives.
#[test]
fn no_rollback_after_sigkill_and_restart() {
    let root = tempdir();
    let mut log = TestLog::new(ORIGIN, 1);
    log.grow(12, "event");
    let mut witness = TestWitness::start(root.path(), &[&log]);
    witness.cosign(&log.body(0, 10), &log.note_at(10));

    witness.kill9_and_restart();

    // Size 5 with old size 5, or from a stateless 0: 409 naming 10.
    witness.conflict(&log.body(5, 5), 10);
    witness.conflict(&log.body(0, 5), 10);
    // A consistent successor, but from the wrong old size.
    witness.conflict(&log.body(5, 12), 10);
    // Old size 10 with a smaller checkpoint: a rollback request, 400.
    let reply = witness.post(
        &AddCheckpointRequest::new(10, vec![], log.note_at(5))
            .unwrap()
            .to_body()
            .into_bytes(),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    // A fork of the first 10 leaves at size 10 after the restart.
    let fork = log.fork(9, "fork", 1);
    let reply = witness.post(&fork.body(10, 10));
    assert_eq!(reply.status, 422, "{reply:?}");
    assert_eq!(witness.known_size(&log), 10);

    witness.cosign(&log.body(10, 12), &log.note_at(12));
}

/// Conflicting checkpoints for the same old head, sent at the same moment, round after round:
/// forks of one head, and honest checkpoints of different sizes (where committing a smaller
/// one after a larger one would roll the head back). Each round at most one is cosigned, every
/// other request learns the winner's size, and the head never goes back.
#[test]
fn racing_conflicting_checkpoints_get_at_most_one_cosignature() {
    const ROUNDS: u64 = 60;
    const RACERS: u64 = 4;
    let root = tempdir();
    let mut log = TestLog::new(ORIGIN, 1);
    log.grow(1, "event");
    let witness = TestWitness::start(root.path(), &[&log]);
    witness.cosign(&log.body(0, 1), &log.note_at(1));

    let mut head = log;
    for round in 0..ROUNDS {
        let size = head.tree.size();
        let candidates: Vec<TestLog> = (0..RACERS)
            .map(|i| {
                if round % 2 == 0 {
                    head.fork(size, &format!("fork {round}.{i}"), 1)
                } else {
                    head.fork(size, "next", i + 1)
                }
            })
            .collect();
        let barrier = Barrier::new(candidates.len());
        let replies: Vec<Reply> = std::thread::scope(|scope| {
            let handles: Vec<_> = candidates
                .iter()
                .map(|candidate| {
                    let (barrier, witness) = (&barrier, &witness);
                    let request = request_bytes(
                        "POST",
                        "/add-checkpoint",
                        &candidate.body(size, candidate.tree.size()),
                    );
                    scope.spawn(move || {
                        let mut stream = TcpStream::connect(&witness.addr).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(60)))
                            .unwrap();
                        barrier.wait();
                        stream.write_all(&request).unwrap();
                        let mut raw = Vec::new();
                        stream.read_to_end(&mut raw).unwrap();
                        parse_reply(&raw).expect("an HTTP answer")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..replies.len())
            .filter(|&i| replies[i].status == 200)
            .collect();
        assert!(
            winners.len() <= 1,
            "round {round}: {} cosigned: {replies:?}",
            winners.len()
        );
        // All were valid against the same head, so one of them must win.
        assert_eq!(winners.len(), 1, "round {round}: {replies:?}");
        let winner = &candidates[winners[0]];
        let winner_size = winner.tree.size();
        witness.check_cosignature(&replies[winners[0]].body, &winner.note_at(winner_size));
        for (i, reply) in replies.iter().enumerate() {
            if i != winners[0] {
                assert_eq!(reply.status, 409, "round {round}: {replies:?}");
                assert_eq!(reply.body, format!("{winner_size}\n"), "round {round}");
            }
        }
        let known = witness.known_size(winner);
        assert_eq!(known, winner_size, "round {round}");
        assert!(
            known > size,
            "round {round}: the head went from {size} to {known}"
        );
        head = candidates.into_iter().nth(winners[0]).unwrap();
    }
}

#[test]
fn cli_refuses_bad_keys_missing_init_and_lost_state() {
    let root = tempdir();
    let dir = root.path().join("witness");
    let data_dir = dir.to_str().unwrap();

    // Nothing initialized yet.
    let out = ztmesh(&["witness", "serve", "--data-dir", data_dir]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ztmesh witness init"), "{stderr}");
    let out = ztmesh(&["witness", "key", "--data-dir", data_dir]);
    assert!(!out.status.success());

    ztmesh_ok(&[
        "witness",
        "init",
        "--data-dir",
        data_dir,
        "--name",
        WITNESS_NAME,
    ]);
    let out = ztmesh(&[
        "witness",
        "init",
        "--data-dir",
        data_dir,
        "--name",
        WITNESS_NAME,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    for bad in ["garbage", "ztmesh.test/log+00000000+AAAA"] {
        let out = ztmesh(&["witness", "add-log", "--data-dir", data_dir, "--vkey", bad]);
        assert!(!out.status.success(), "accepted {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid log vkey"), "{stderr}");
    }
    // The witness's own key is a cosignature key, not a log key.
    let own = ztmesh_ok(&["witness", "key", "--data-dir", data_dir]);
    let out = ztmesh(&[
        "witness",
        "add-log",
        "--data-dir",
        data_dir,
        "--vkey",
        own.trim(),
    ]);
    assert!(!out.status.success());
    let log = TestLog::new(ORIGIN, 1);
    ztmesh_ok(&[
        "witness",
        "add-log",
        "--data-dir",
        data_dir,
        "--vkey",
        &log.signer.vkey(),
    ]);
    let out = ztmesh(&[
        "witness",
        "add-log",
        "--data-dir",
        data_dir,
        "--vkey",
        &log.signer.vkey(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already configured"));

    // A typo in witness.toml stops the start with the key named.
    let config = dir.join("witness.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("lisen = \"127.0.0.1:0\"\n{text}")).unwrap();
    let out = ztmesh(&["witness", "serve", "--data-dir", data_dir]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lisen"), "{stderr}");
    std::fs::write(&config, &text).unwrap();

    // A witness whose state is gone must not start afresh: it would accept any rollback.
    std::fs::remove_file(dir.join("witness.db")).unwrap();
    let out = ztmesh(&["witness", "serve", "--data-dir", data_dir]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("witness.db is missing"), "{stderr}");
}

#[test]
fn plaintext_key_only_with_the_flag() {
    let root = tempdir();
    let dir = root.path().join("witness");
    let data_dir = dir.to_str().unwrap();
    ztmesh_ok(&[
        "witness",
        "init",
        "--data-dir",
        data_dir,
        "--name",
        WITNESS_NAME,
        "--insecure-plaintext-key",
    ]);
    let key = std::fs::read_to_string(dir.join("witness.key")).unwrap();
    assert!(key.contains("BEGIN PRIVATE KEY"), "{key}");
    // Serving with a passphrase (the harness sets ZTMESH_PASSPHRASE) refuses the plaintext key.
    let out = ztmesh(&[
        "witness",
        "serve",
        "--data-dir",
        data_dir,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not encrypted"));
    // With the flag it serves.
    let mut proc = Proc::spawn(
        "witness",
        &[
            "witness",
            "serve",
            "--data-dir",
            data_dir,
            "--insecure-plaintext-key",
        ],
        dir.join("serve.log"),
    );
    wait_until("the witness to listen", Duration::from_secs(30), || {
        proc.assert_running();
        dir.join("witness.addr").exists()
    });
}
