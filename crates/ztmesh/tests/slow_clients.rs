//! Slow clients against every HTTP server of ztmesh, with real processes on loopback (issue 12,
//! finding 1: 256 connections each announcing a 60,000-byte body and sending one byte every 5 s
//! held every connection slot of the CA, and rotations and `GET /v1/ca` timed out).
//!
//! Each test points an attacker at one server (the CA, a node's API, a witness): connections
//! from 127.0.0.2, 127.0.0.3, … (Linux routes all of 127/8 to `lo`), so the per-address cap does
//! not hide the pool limit, eight per address, more in all than any pool of the server holds,
//! each announcing a large body and sending one byte of it every 5 s, and reconnecting when the
//! server closes it, until the test ends. While every unauthenticated slot is held, the clients
//! the server recognises must still be served, and the held connections must be closed by the
//! body deadline.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use ztmesh_node::node_dir::NodeDir;
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::{IdentityProofDomain, TlsKeyPair};
use ztmesh_runtime::https::{BODY_READ_DEADLINE, LIMITS};
use ztmesh_runtime::tls::{CurrentCertificate, MeshTrust};

const TRUST_DOMAIN: &str = "test.ztmesh";
const TIMEOUT: Duration = Duration::from_secs(120);
const NO_RATE_LIMIT: [&str; 4] = [
    "--rate-limit-rpm",
    "1000000",
    "--rate-limit-burst",
    "1000000",
];

/// Source addresses of the attack: 34 × 8 = 272 connections, more than the 256 connections the
/// servers held in all before the fix, and more than twice the unauthenticated pool now.
const ATTACK_ADDRESSES: u8 = 34;
const PER_ADDRESS: usize = 8;
/// Unauthenticated slots the server's own clients may hold while the attack runs.
const OTHER_CLIENTS: usize = 2;
/// How often the attacker sends one more byte of each body.
const TRICKLE: Duration = Duration::from_secs(5);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How the attacker reaches the server.
#[derive(Clone)]
enum Target {
    Tls {
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    },
    Plain {
        addr: SocketAddr,
    },
}

impl Target {
    /// A connection from `source` (TLS handshake included), or `None` if it was not completed
    /// within 5 s.
    async fn connect(&self, source: Ipv4Addr) -> Option<Box<dyn Stream>> {
        let addr = match self {
            Target::Tls { addr, .. } | Target::Plain { addr } => *addr,
        };
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).ok()?;
        let connect = async {
            let tcp = socket.connect(addr).await.ok()?;
            match self {
                Target::Plain { .. } => Some(Box::new(tcp) as Box<dyn Stream>),
                Target::Tls { config, .. } => {
                    let connector = tokio_rustls::TlsConnector::from(config.clone());
                    let name = ServerName::IpAddress(addr.ip().into());
                    let tls = connector.connect(name, tcp).await.ok()?;
                    Some(Box::new(tls) as Box<dyn Stream>)
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .ok()
            .flatten()
    }
}

/// Whether the server closed (or answered) `stream` within `wait`: a refused connection is
/// closed at once, a held one stays silent while it waits for the rest of the body.
async fn closed_within(stream: &mut Box<dyn Stream>, wait: Duration) -> bool {
    let mut buffer = [0u8; 256];
    tokio::time::timeout(wait, stream.read(&mut buffer))
        .await
        .is_ok()
}

/// The attacker: one task per connection, each holding a slot for as long as the server lets
/// it and taking it again when closed, until dropped.
struct SlowBodies {
    runtime: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    /// How long each connection of the first wave was held, from its headers to the server
    /// closing it.
    first_wave: Arc<Mutex<Vec<Duration>>>,
}

impl SlowBodies {
    /// Starts `ATTACK_ADDRESSES × PER_ADDRESS` connections to `target`, each sending `head`
    /// (request line and headers announcing a body) and then the body one byte per
    /// [`TRICKLE`].
    fn start(target: Target, head: String) -> SlowBodies {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let first_wave = Arc::new(Mutex::new(Vec::new()));
        for address in 0..ATTACK_ADDRESSES {
            let source = Ipv4Addr::new(127, 0, 0, 2 + address);
            for _ in 0..PER_ADDRESS {
                let (target, head) = (target.clone(), head.clone());
                let (stop, held, first_wave) = (stop.clone(), held.clone(), first_wave.clone());
                runtime.spawn(async move {
                    let mut first = true;
                    // Bounded: the test stops it long before, this only caps a runaway.
                    for _ in 0..1000 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Some(mut stream) = target.connect(source).await else {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            continue;
                        };
                        let sent = Instant::now();
                        if stream.write_all(head.as_bytes()).await.is_err()
                            || stream.write_all(b"{").await.is_err()
                            || stream.flush().await.is_err()
                            || closed_within(&mut stream, Duration::from_secs(2)).await
                        {
                            // Refused: no slot for us. Try again later, as an attacker would.
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            continue;
                        }
                        held.fetch_add(1, Ordering::SeqCst);
                        loop {
                            if stop.load(Ordering::SeqCst) {
                                held.fetch_sub(1, Ordering::SeqCst);
                                return;
                            }
                            if closed_within(&mut stream, TRICKLE).await {
                                break;
                            }
                            if stream.write_all(b" ").await.is_err()
                                || stream.flush().await.is_err()
                            {
                                break;
                            }
                        }
                        held.fetch_sub(1, Ordering::SeqCst);
                        if first {
                            first = false;
                            first_wave.lock().unwrap().push(sent.elapsed());
                        }
                    }
                });
            }
        }
        SlowBodies {
            runtime,
            stop,
            held,
            first_wave,
        }
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Checks that the server has not yet let go of any held connection: what happened so far
    /// happened while the attacker held every slot it had taken.
    fn assert_none_released(&self, what: &str) {
        assert_eq!(
            self.first_wave.lock().unwrap().len(),
            0,
            "{what} only after the server had closed slow bodies"
        );
    }

    /// Whether a client from an address the attack does not use finds no room: it is closed
    /// without an answer (or never gets through at all).
    fn probe_refused(&self, target: &Target) -> bool {
        self.runtime.block_on(async {
            let Some(mut stream) = target.connect(Ipv4Addr::new(127, 0, 0, 250)).await else {
                return true;
            };
            let _ = stream
                .write_all(b"GET /v1/ca HTTP/1.1\r\nhost: x\r\n\r\n")
                .await;
            let mut answer = [0u8; 64];
            // A served request is answered within milliseconds (200, or 404 at the witness).
            let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer)).await;
            !matches!(read, Ok(Ok(n)) if n > 0)
        })
    }

    /// Waits until the attacker holds every unauthenticated slot it can get: the pool is full
    /// (a client from another address is refused) and the attacker has all of it but the slot
    /// or two the server's own unauthenticated clients may hold (the log's first connection to
    /// a witness, made before the witness knew it, stays open).
    fn wait_holding_every_unauthenticated_slot(&self, target: &Target) {
        wait_until(
            "the attack to hold every unauthenticated slot",
            TIMEOUT,
            || self.held() + OTHER_CLIENTS >= LIMITS.unauthenticated && self.probe_refused(target),
        );
        assert!(
            self.held() <= LIMITS.unauthenticated,
            "the attack holds {} connections, more than the pool",
            self.held()
        );
    }

    /// Waits until every connection of the first wave was closed by the server, and checks
    /// that each was closed by the body deadline: not before it, not long after.
    fn wait_first_wave_closed_by_the_body_deadline(&self) {
        wait_until(
            "the body deadline to close the first wave of slow bodies",
            BODY_READ_DEADLINE + TIMEOUT,
            || self.first_wave.lock().unwrap().len() + OTHER_CLIENTS >= LIMITS.unauthenticated,
        );
        let held = self.first_wave.lock().unwrap().clone();
        for lasted in &held {
            assert!(
                *lasted >= BODY_READ_DEADLINE - Duration::from_secs(2)
                    && *lasted <= BODY_READ_DEADLINE + Duration::from_secs(15),
                "a slow body was held for {lasted:?}; the deadline is {BODY_READ_DEADLINE:?}"
            );
        }
    }
}

impl Drop for SlowBodies {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn protection() -> Protection<'static> {
    Protection::Passphrase(PASSPHRASE.as_bytes())
}

/// A node's current certificate and TLS key, as the node presents them.
fn current_certificate(node: &TestNode) -> Arc<CurrentCertificate> {
    let (tls_key, cert_der) = NodeDir(node.dir.clone())
        .read_tls(&protection(), false)
        .unwrap();
    Arc::new(CurrentCertificate::new(vec![cert_der], &tls_key.to_pkcs8_der()).unwrap())
}

/// Runs `future` to completion on a runtime of its own (each test thread has its own).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A reqwest client of the CA presenting `cert` when given (call inside a runtime).
fn ca_http(ca: &TestCa, cert: Option<Arc<CurrentCertificate>>) -> reqwest::Client {
    let config = ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), cert).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `POST /v1/rotate` as the node's rotation does it: a fresh TLS key, a CSR and an identity
/// proof, over mutual TLS with the current certificate. Returns the new serial.
fn rotate(ca: &TestCa, node: &TestNode) -> Result<String, String> {
    let dir = NodeDir(node.dir.clone());
    let identity = dir.read_identity(&protection(), false).unwrap();
    let key = TlsKeyPair::generate().unwrap();
    let csr = key
        .csr_der(&identity.public().node_id(), &TRUST_DOMAIN.parse().unwrap())
        .unwrap();
    let b64 = |bytes: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let body = serde_json::json!({
        "csr": b64(&csr),
        "identity_proof": b64(&identity.sign_proof(IdentityProofDomain::RotateCsr, &csr)),
    });
    let (status, text) = block_on(async {
        let reply = ca_http(ca, Some(current_certificate(node)))
            .post(format!("{}/v1/rotate", ca.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = reply.status();
        Ok::<_, String>((status, reply.text().await.map_err(|e| e.to_string())?))
    })?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    let answer: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(answer["serial"].as_str().unwrap_or_default().to_owned())
}

fn socket_addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn slow_body_head(path: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: attacker\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

#[test]
fn slow_bodies_holding_every_unauthenticated_slot_do_not_stop_rotations() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path();
    let ca = TestCa::start(root, &NO_RATE_LIMIT);
    let nodes: Vec<TestNode> = (0..10)
        .map(|i| ca.enroll(root, &format!("node{i}")))
        .collect();

    let target = Target::Tls {
        addr: socket_addr(&ca.addr),
        config: Arc::new(ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), None).unwrap()),
    };
    let attack = SlowBodies::start(target.clone(), slow_body_head("/v1/enroll", 60_000));
    attack.wait_holding_every_unauthenticated_slot(&target);

    // All ten nodes rotate at once while every unauthenticated slot is held.
    let held = attack.held();
    let started = Instant::now();
    let rotations: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| scope.spawn(|| rotate(&ca, node)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = started.elapsed();
    attack.assert_none_released("the rotations ended");
    for (node, rotation) in nodes.iter().zip(&rotations) {
        assert!(
            rotation.is_ok(),
            "{} could not rotate while the attack held the CA: {rotation:?}",
            node.name
        );
    }

    // A member's `GET /v1/ca` is served as well.
    let status = block_on(async {
        ca_http(&ca, Some(current_certificate(&nodes[0])))
            .get(format!("{}/v1/ca", ca.url))
            .send()
            .await
            .map(|reply| reply.status())
    })
    .expect("an authenticated GET /v1/ca while the attack holds the CA");
    assert_eq!(status, 200);
    attack.assert_none_released("GET /v1/ca was answered");

    attack.wait_first_wave_closed_by_the_body_deadline();
    eprintln!("10 rotations took {took:?} while {held} slow bodies held the CA");
}

/// `ztmesh status` with a deadline, so a hung CLI fails the test instead of hanging it.
fn status_within(node: &TestNode, limit: Duration) -> Result<serde_json::Value, String> {
    let mut child = std::process::Command::new(bin())
        .args(["status", "--json", "--data-dir", node.dir.to_str().unwrap()])
        .env("ZTMESH_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            if !status.success() {
                return Err(String::from_utf8_lossy(&output.stderr).into_owned());
            }
            return serde_json::from_slice(&output.stdout).map_err(|e| e.to_string());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("ztmesh status did not answer within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn slow_bodies_holding_every_unauthenticated_node_api_slot_do_not_stop_status() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path();
    let ca = TestCa::start(root, &NO_RATE_LIMIT);
    let mut node = ca.enroll(root, "node");
    node.start();

    let trust = Arc::new(MeshTrust::new(ca.ca_der(), TRUST_DOMAIN.parse().unwrap()));
    let target = Target::Tls {
        addr: socket_addr(&node.api_addr()),
        config: Arc::new(ztmesh_runtime::tls::node_api_client_config(trust, None).unwrap()),
    };
    let attack = SlowBodies::start(target.clone(), slow_body_head("/v1/revocations", 60_000));
    attack.wait_holding_every_unauthenticated_slot(&target);

    let status = status_within(&node, Duration::from_secs(60))
        .expect("ztmesh status while the attack holds the node API");
    assert_eq!(status["status"]["node_id"], node.node_id);
    attack.assert_none_released("ztmesh status answered");
    attack.wait_first_wave_closed_by_the_body_deadline();
    // And again once the attacker is back in every slot it can get.
    attack.wait_holding_every_unauthenticated_slot(&target);
    status_within(&node, Duration::from_secs(60)).expect("ztmesh status after the first wave");
}

/// Signature lines of a checkpoint note other than the log's own.
fn cosignatures(note: &str) -> usize {
    note.lines()
        .filter(|line| line.starts_with("— ") && !line.starts_with("— test.ztmesh/membership "))
        .count()
}

/// The CA's served checkpoint: (size, cosignatures), if any.
fn checkpoint(ca: &TestCa) -> Option<(u64, usize)> {
    let text = block_on(async {
        let reply = ca_http(ca, None)
            .get(format!("{}/v1/log/checkpoint", ca.url))
            .send()
            .await
            .ok()?;
        if reply.status() != 200 {
            return None;
        }
        reply.text().await.ok()
    })?;
    let size = text.lines().nth(1)?.parse().ok()?;
    Some((size, cosignatures(&text)))
}

#[test]
fn slow_bodies_holding_every_unauthenticated_witness_slot_do_not_stop_cosigning() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path();
    let mut ca = TestCa::init(root);
    let log_vkey = ca.log_vkey();
    let (_witness, witness_vkey, witness_addr) = start_witness(root, &log_vkey);
    let policy = root.join("policy.txt");
    std::fs::write(
        &policy,
        format!("log {log_vkey}\nwitness w1 {witness_vkey} http://{witness_addr}\nquorum w1\n"),
    )
    .unwrap();
    let mut serve_args = NO_RATE_LIMIT.to_vec();
    serve_args.extend(["--log-policy", policy.to_str().unwrap()]);
    ca.serve("127.0.0.1:0", &serve_args);

    // The log brings the witness a first checkpoint before the attack starts.
    ca.enroll(root, "first");
    wait_until("a first cosigned checkpoint", TIMEOUT, || {
        checkpoint(&ca).is_some_and(|(size, cosigned)| size >= 1 && cosigned == 1)
    });
    let (size_before, _) = checkpoint(&ca).unwrap();

    let target = Target::Plain {
        addr: socket_addr(&witness_addr),
    };
    // A body under the witness's size cap, so it is read (slowly) rather than refused.
    let attack = SlowBodies::start(target.clone(), slow_body_head("/add-checkpoint", 4_000));
    attack.wait_holding_every_unauthenticated_slot(&target);

    // The log grows; its next checkpoint is still cosigned while the attack holds the witness.
    let started = Instant::now();
    ca.enroll(root, "second");
    wait_until(
        "the grown checkpoint cosigned while the attack holds the witness",
        TIMEOUT,
        || checkpoint(&ca).is_some_and(|(size, cosigned)| size > size_before && cosigned == 1),
    );
    let took = started.elapsed();
    attack.assert_none_released("the checkpoint was cosigned");
    attack.wait_first_wave_closed_by_the_body_deadline();
    eprintln!("enrolment to cosigned checkpoint took {took:?} while slow bodies held the witness");
}
