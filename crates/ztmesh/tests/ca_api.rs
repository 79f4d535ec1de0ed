//! The CA's HTTPS API and the node's CRL push route, driven over real TLS against real
//! `ztmesh ca serve` / `ztmesh run` processes: every status and JSON error code a client can
//! provoke, token one-time use under a race, rotation authentication, the CRL endpoint, admin
//! authentication, durability across `kill -9`, wrong secrets at start-up, and garbage.
//!
//! Requests are built by hand (JSON values, raw bytes) rather than through the product's own
//! client, so the tests pin the wire contract and can send what no well-behaved client would.
mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use ztmesh_ca::ca_service::{self, CaDir, MAX_BODY_BYTES};
use ztmesh_core::{NodeId, TrustDomain};
use ztmesh_node::node_dir::NodeDir;
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::{
    Crl, EnrollmentToken, IdentityKey, IdentityProofDomain, NodeCertificateRequest, RevocationSet,
    Serial, TlsKeyPair,
};
use ztmesh_runtime::api_types::{
    AnnounceRequest, EnrollRequest, RevokeRequest, RotateRequest, TokenRequest,
};
use ztmesh_runtime::timefmt::{now, parse_rfc3339};
use ztmesh_runtime::tls::{CurrentCertificate, MeshTrust};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Trust domain the harness gives every test CA.
const TRUST_DOMAIN: &str = "test.ztmesh";

/// `ca serve` arguments that keep the enrollment rate limit out of the way of tests that are
/// about something else.
const NO_RATE_LIMIT: &[&str] = &[
    "--rate-limit-rpm",
    "1000000",
    "--rate-limit-burst",
    "1000000",
];

/// Body limit of the node's `POST /v1/crl` (`ztmesh_node::node_api::MAX_CRL_BYTES`, private).
const NODE_MAX_CRL_BYTES: usize = 1024 * 1024;

/// Generous deadline for anything on a shared 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(30);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn trust_domain() -> TrustDomain {
    TRUST_DOMAIN.parse().unwrap()
}

fn protection() -> Protection<'static> {
    Protection::Passphrase(PASSPHRASE.as_bytes())
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A CA with the rate limit out of the way, in `root/ca`.
fn start_ca(root: &Path) -> TestCa {
    TestCa::start(root, NO_RATE_LIMIT)
}

/// One HTTP answer, fully read.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of the {} answer is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The `error` code of a JSON error body, if the body is one.
    fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()?
            .get("error")?
            .as_str()
            .map(str::to_owned)
    }

    #[track_caller]
    fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }

    /// Asserts an error answer: this status, a JSON content type and `{"error": code, ...}`.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.error_code().as_deref()),
            (status, Some(code)),
            "unexpected answer; body: {}",
            self.text()
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error answer with content type {content_type:?}"
        );
        assert!(
            self.json()["message"].is_string(),
            "error body without a message: {}",
            self.text()
        );
    }
}

/// A blocking HTTPS client for one server: its own tokio runtime and a reqwest client with the
/// given rustls configuration.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    /// A client that opens a fresh connection for every request, so an answer can never be
    /// lost to a pooled connection the server had just closed (it closes after refusing a
    /// body it did not read): any missing answer is then the server's fault.
    fn new(base: &str, config: rustls::ClientConfig, timeout: Duration) -> Http {
        Http::with_builder(base, config, timeout, |b| b.pool_max_idle_per_host(0))
    }

    /// A client that keeps connections open for reuse.
    fn pooled(base: &str, config: rustls::ClientConfig, timeout: Duration) -> Http {
        Http::with_builder(base, config, timeout, |b| b)
    }

    fn with_builder(
        base: &str,
        config: rustls::ClientConfig,
        timeout: Duration,
        customize: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Http {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = {
            let _guard = rt.enter();
            customize(
                reqwest::Client::builder()
                    .use_preconfigured_tls(config)
                    .timeout(timeout),
            )
            .build()
            .unwrap()
        };
        Http {
            rt,
            client,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// Client of a CA's API trusting only its ca.pem, presenting no certificate.
    fn ca(ca: &TestCa) -> Http {
        let config = ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), None).unwrap();
        Http::new(&ca.url, config, TIMEOUT)
    }

    /// Client of a CA's API presenting `cert` (mutual TLS).
    fn ca_with_cert(ca: &TestCa, cert_der: &[u8], key: &TlsKeyPair) -> Http {
        let config =
            ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), Some(current_cert(cert_der, key)))
                .unwrap();
        Http::new(&ca.url, config, TIMEOUT)
    }

    /// Client of a running node's API (whose server certificate is a mesh certificate).
    fn node(ca: &TestCa, node: &TestNode, cert: Option<&NodeCreds>) -> Http {
        let trust = Arc::new(MeshTrust::new(ca.ca_der(), trust_domain()));
        let config = ztmesh_runtime::tls::node_api_client_config(
            trust,
            cert.map(|c| current_cert(&c.cert_der, &c.tls_key)),
        )
        .unwrap();
        Http::new(&format!("https://{}", node.api_addr()), config, TIMEOUT)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn try_send(&self, request: reqwest::RequestBuilder) -> Result<Reply, NoAnswer> {
        self.rt.block_on(async {
            let response = request.send().await.map_err(NoAnswer::from)?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(NoAnswer::from)?;
            Ok(Reply {
                status,
                headers,
                body: body.to_vec(),
            })
        })
    }

    #[track_caller]
    fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        self.try_send(request)
            .unwrap_or_else(|e| panic!("request failed: {}", e.message))
    }

    /// Sends a body over the server's limit. The server answers 413 from the Content-Length
    /// without reading the body and closes the connection, so a client still writing the body
    /// can see the connection reset instead of the answer (HTTP/1.1 without lingering close):
    /// retried a few times until the answer is read.
    #[track_caller]
    fn send_oversized(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Reply {
        let mut resets = Vec::new();
        while resets.len() < 10 {
            match self.try_send(request()) {
                Ok(reply) => return reply,
                Err(e) if e.reset_while_sending => resets.push(e.message),
                Err(e) => panic!("request failed: {}", e.message),
            }
        }
        panic!("no answer to an oversized body in 10 attempts: {resets:#?}")
    }

    #[track_caller]
    fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)))
    }

    #[track_caller]
    fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.client.post(self.url(path)).json(body))
    }

    #[track_caller]
    fn post_admin(&self, path: &str, admin: &str, body: &Value) -> Reply {
        self.send(
            self.client
                .post(self.url(path))
                .bearer_auth(admin)
                .json(body),
        )
    }

    /// POST with exactly these bytes and this content type (none if `None`).
    #[track_caller]
    fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let mut request = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request)
    }
}

/// A request that got no HTTP answer.
#[derive(Debug)]
struct NoAnswer {
    message: String,
    /// The connection was reset (or the pipe broken) while the request was being written:
    /// what a client sees when the server refuses a body before reading it and closes.
    reset_while_sending: bool,
}

impl From<reqwest::Error> for NoAnswer {
    fn from(error: reqwest::Error) -> NoAnswer {
        let mut reset = false;
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                reset |= matches!(
                    io.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                );
            }
            source = e.source();
        }
        NoAnswer {
            message: format!("{error:?}"),
            reset_while_sending: reset && !error.is_timeout(),
        }
    }
}

fn current_cert(cert_der: &[u8], key: &TlsKeyPair) -> Arc<CurrentCertificate> {
    Arc::new(CurrentCertificate::new(vec![cert_der.to_vec()], &key.to_pkcs8_der()).unwrap())
}

/// A would-be node: fresh identity key, fresh TLS key, and a CSR for it.
struct Enrollee {
    identity: IdentityKey,
    tls_key: TlsKeyPair,
    csr: Vec<u8>,
}

impl Enrollee {
    fn new() -> Enrollee {
        let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
        let tls_key = TlsKeyPair::generate().unwrap();
        let csr = tls_key
            .csr_der(&identity.public().node_id(), &trust_domain())
            .unwrap();
        Enrollee {
            identity,
            tls_key,
            csr,
        }
    }

    fn node_id(&self) -> NodeId {
        self.identity.public().node_id()
    }

    /// A well-formed `POST /v1/enroll` body for `token`.
    fn request(&self, token: &str) -> Value {
        json!({
            "token": token,
            "csr": b64(&self.csr),
            "identity_key": b64(&self.identity.public().to_spki_der()),
            "identity_proof": b64(&self.identity.sign_proof(IdentityProofDomain::EnrollCsr, &self.csr)),
            "node_id": self.node_id().to_string(),
        })
    }
}

/// What an enrolled node holds: identity key, current TLS key and certificate.
struct NodeCreds {
    identity: IdentityKey,
    tls_key: TlsKeyPair,
    cert_der: Vec<u8>,
    node_id: NodeId,
}

impl NodeCreds {
    /// Reads a node directory written by `ztmesh enroll`.
    fn read(node: &TestNode) -> NodeCreds {
        let dir = NodeDir(node.dir.clone());
        let identity = dir.read_identity(&protection(), false).unwrap();
        let (tls_key, cert_der) = dir.read_tls(&protection(), false).unwrap();
        let node_id = identity.public().node_id();
        assert_eq!(node_id.to_string(), node.node_id);
        NodeCreds {
            identity,
            tls_key,
            cert_der,
            node_id,
        }
    }

    /// From an enrollment answer to `enrollee`.
    fn from_enrollment(enrollee: Enrollee, answer: &Value) -> NodeCreds {
        let cert_der =
            ztmesh_pki::cert_pem_to_der(answer["certificate"].as_str().unwrap()).unwrap();
        NodeCreds {
            node_id: enrollee.node_id(),
            identity: enrollee.identity,
            tls_key: enrollee.tls_key,
            cert_der,
        }
    }

    fn serial(&self) -> Serial {
        ztmesh_pki::NodeCertificate::parse(&self.cert_der)
            .unwrap()
            .serial
    }
}

/// A `POST /v1/rotate` body for a fresh TLS key, proven by `identity`; also returns the key.
fn rotate_request(identity: &IdentityKey) -> (Value, TlsKeyPair) {
    let key = TlsKeyPair::generate().unwrap();
    let csr = key
        .csr_der(&identity.public().node_id(), &trust_domain())
        .unwrap();
    let body = json!({
        "csr": b64(&csr),
        "identity_proof": b64(&identity.sign_proof(IdentityProofDomain::RotateCsr, &csr)),
    });
    (body, key)
}

/// Mints a token through the admin API; `request` is a `POST /v1/tokens` body.
#[track_caller]
fn mint(http: &Http, ca: &TestCa, request: Value) -> String {
    let reply = http.post_admin("/v1/tokens", &ca.admin_token(), &request);
    reply.assert_status(201);
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ztm1_"), "token {token:?}");
    token
}

/// Enrolls `enrollee` over the raw API (must succeed); returns the answer.
#[track_caller]
fn enroll_raw(http: &Http, ca: &TestCa, enrollee: &Enrollee) -> Value {
    let token = mint(http, ca, json!({}));
    let reply = http.post_json("/v1/enroll", &enrollee.request(&token));
    reply.assert_status(201);
    reply.json()
}

/// Revokes through the admin API (must answer 204).
#[track_caller]
fn revoke_raw(http: &Http, ca: &TestCa, request: Value) {
    http.post_admin("/v1/revoke", &ca.admin_token(), &request)
        .assert_status(204);
}

/// The CA's current CRL (DER), verified against its certificate.
#[track_caller]
fn fetch_crl(http: &Http, ca: &TestCa) -> (Crl, Vec<u8>) {
    let reply = http.get("/v1/crl");
    reply.assert_status(200);
    let crl = Crl::parse_and_verify(&reply.body, &ca.ca_der()).expect("the CA's CRL verifies");
    (crl, reply.body)
}

fn crl_lists(crl: &Crl, serial: &Serial) -> bool {
    crl.entries.iter().any(|e| &e.serial == serial)
}

/// Runs the binary with the test passphrase overridden by `env`; kills it and fails if it has
/// not exited within [`TIMEOUT`] (so a command that should refuse to start cannot hang a test).
fn ztmesh_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("ZTMESH_PASSPHRASE", PASSPHRASE)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ztmesh");
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ztmesh {args:?} still running after {TIMEOUT:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Asserts that a CLI run failed and that its stderr mentions every one of `needles`
/// (case-insensitively); returns stderr.
#[track_caller]
fn assert_cli_fails(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success; stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    for needle in needles {
        assert!(
            stderr.to_lowercase().contains(&needle.to_lowercase()),
            "stderr does not mention {needle:?}: {stderr}"
        );
    }
    stderr
}

/// Like `wait_until`, but a timeout shows the node's and the CA's logs.
#[track_caller]
fn wait_for_node(node: &TestNode, ca: &TestCa, what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !probe() {
        if Instant::now() > deadline {
            panic!(
                "timed out after {TIMEOUT:?} waiting for {what}\n--- node log ---\n{}\n--- CA log ---\n{}",
                node.proc.as_ref().map(Proc::log_text).unwrap_or_default(),
                ca.proc.as_ref().map(Proc::log_text).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's own view (`GET /v1/status` with its certificate).
fn node_status(http: &Http) -> Value {
    let reply = http.get("/v1/status");
    reply.assert_status(200);
    reply.json()
}

// ---------------------------------------------------------------------------------------------
// 1. Enrollment success and the node_id binding
// ---------------------------------------------------------------------------------------------

#[test]
fn enroll_over_raw_api_issues_a_certificate_that_chains_to_the_ca() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);
    let node = Enrollee::new();
    let token = mint(&http, &ca, json!({}));

    let reply = http.post_json("/v1/enroll", &node.request(&token));
    reply.assert_status(201);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let body = reply.json();

    assert_eq!(body["node_id"], node.node_id().to_string());
    let cert_der = ztmesh_pki::cert_pem_to_der(body["certificate"].as_str().unwrap()).unwrap();
    let cert = ztmesh_pki::verify_node_certificate(
        &cert_der,
        &ca.ca_der(),
        &trust_domain(),
        &RevocationSet::new(),
        now(),
    )
    .expect("the issued certificate chains to the CA and follows the node profile");
    assert_eq!(cert.node_id, node.node_id());
    assert_eq!(
        cert.identity_key.to_spki_der(),
        node.identity.public().to_spki_der(),
        "the certificate binds the enrolling identity key"
    );
    assert_eq!(
        cert.tls_public_key_spki_der,
        node.tls_key.public_key_spki_der(),
        "the certificate certifies the CSR's key"
    );
    assert_eq!(body["serial"], cert.serial.to_hex());
    assert_eq!(
        parse_rfc3339(body["valid_not_after"].as_str().unwrap())
            .unwrap()
            .as_unix_secs(),
        cert.not_after.as_unix_secs()
    );
    assert_eq!(
        parse_rfc3339(body["valid_not_before"].as_str().unwrap())
            .unwrap()
            .as_unix_secs(),
        cert.not_before.as_unix_secs()
    );

    let ca_pem = std::fs::read_to_string(ca.dir.join("ca.pem")).unwrap();
    assert_eq!(
        ztmesh_pki::cert_pem_to_der(body["ca_cert"].as_str().unwrap()).unwrap(),
        ca.ca_der()
    );
    assert_eq!(body["ca_cert"].as_str().unwrap().trim(), ca_pem.trim());

    let config = &body["config"];
    assert_eq!(config["trust_domain"], TRUST_DOMAIN);
    assert_eq!(config["crl_url"], format!("{}/v1/crl", ca.url));
    assert_eq!(config["gossip_fanout"], 3);
    assert!(config["bootstrap_peers"].is_array(), "config: {config}");

    // The advertised CRL URL serves this CA's CRL.
    let crl = http.send(http.client.get(config["crl_url"].as_str().unwrap()));
    crl.assert_status(200);
    Crl::parse_and_verify(&crl.body, &ca.ca_der()).unwrap();

    // External oracle: openssl accepts the chain.
    let cert_path = root.path().join("node.pem");
    std::fs::write(&cert_path, body["certificate"].as_str().unwrap()).unwrap();
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca.dir.join("ca.pem"))
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // A CSR given as PEM, and a request without the optional node_id, work too.
    let other = Enrollee::new();
    let token = mint(&http, &ca, json!({}));
    let mut request = other.request(&token);
    request["csr"] = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", other.csr.clone())).into();
    request.as_object_mut().unwrap().remove("node_id");
    let reply = http.post_json("/v1/enroll", &request);
    reply.assert_status(201);
    assert_eq!(reply.json()["node_id"], other.node_id().to_string());
}

#[test]
fn enroll_refuses_a_node_id_that_does_not_match_the_identity_key() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);
    let node = Enrollee::new();
    let token = mint(&http, &ca, json!({}));

    let mut request = node.request(&token);
    request["node_id"] = Enrollee::new().node_id().to_string().into();
    http.post_json("/v1/enroll", &request)
        .assert_error(400, "node_id_mismatch");
    request["node_id"] = "not-a-node-id".into();
    http.post_json("/v1/enroll", &request)
        .assert_error(400, "malformed_node_id");

    // Refusals happen before the token is redeemed: it still enrolls the right node.
    let reply = http.post_json("/v1/enroll", &node.request(&token));
    reply.assert_status(201);
    assert_eq!(reply.json()["node_id"], node.node_id().to_string());
}

// ---------------------------------------------------------------------------------------------
// 2. Every enrollment error
// ---------------------------------------------------------------------------------------------

#[test]
fn enroll_answers_400_with_a_code_for_each_malformed_field() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);
    let ca_pem = std::fs::read_to_string(ca.dir.join("ca.pem")).unwrap();
    // A real, unused token: every refusal below is about the field named, not the token.
    let token = mint(&http, &ca, json!({}));
    let node = Enrollee::new();
    let other = Enrollee::new();
    let good = node.request(&token);
    let with = |field: &str, value: Value| {
        let mut request = good.clone();
        request[field] = value;
        request
    };
    let proof = |key: &IdentityKey, domain, message: &[u8]| -> Value {
        b64(&key.sign_proof(domain, message)).into()
    };
    use IdentityProofDomain::{EnrollCsr, RotateCsr};

    let cases: Vec<(&str, Value, &str)> =
        vec![
        ("garbage token", with("token", "garbage".into()), "malformed_token"),
        ("empty token", with("token", "".into()), "malformed_token"),
        (
            "token with a bad alphabet",
            with("token", token.to_uppercase().into()),
            "malformed_token",
        ),
        ("CSR neither PEM nor base64", with("csr", "not a csr!".into()), "malformed_csr"),
        (
            "CSR: valid base64 of garbage",
            with("csr", b64(b"definitely not a DER CSR").into()),
            "malformed_csr",
        ),
        ("CSR empty", with("csr", "".into()), "malformed_csr"),
        (
            "CSR truncated",
            with("csr", b64(&node.csr[..node.csr.len() / 2]).into()),
            "malformed_csr",
        ),
        (
            "CSR: PEM of the wrong type (a certificate)",
            with("csr", ca_pem.clone().into()),
            "malformed_csr",
        ),
        (
            "CSR: broken PEM",
            with(
                "csr",
                "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
            ),
            "malformed_csr",
        ),
        (
            "identity key not base64",
            with("identity_key", "%%%".into()),
            "malformed_identity_key",
        ),
        (
            "identity key: base64 of garbage",
            with("identity_key", b64(b"garbage").into()),
            "malformed_identity_key",
        ),
        (
            "identity key: a certificate instead of an SPKI",
            with("identity_key", b64(&ca.ca_der()).into()),
            "malformed_identity_key",
        ),
        (
            "proof not base64",
            with("identity_proof", "%%%".into()),
            "bad_identity_proof",
        ),
        (
            "proof over other bytes",
            with("identity_proof", proof(&node.identity, EnrollCsr, b"other bytes")),
            "bad_identity_proof",
        ),
        (
            "proof over another CSR",
            with("identity_proof", proof(&node.identity, EnrollCsr, &other.csr)),
            "bad_identity_proof",
        ),
        (
            "proof by another key",
            with("identity_proof", proof(&other.identity, EnrollCsr, &node.csr)),
            "bad_identity_proof",
        ),
        (
            "proof in the rotation domain",
            with("identity_proof", proof(&node.identity, RotateCsr, &node.csr)),
            "bad_identity_proof",
        ),
        (
            "proof truncated",
            with(
                "identity_proof",
                b64(&node.identity.sign_proof(EnrollCsr, &node.csr)[..63]).into(),
            ),
            "bad_identity_proof",
        ),
    ];
    for (what, request, code) in &cases {
        let reply = http.post_json("/v1/enroll", request);
        assert_eq!(
            (reply.status, reply.error_code().as_deref()),
            (400, Some(*code)),
            "{what}: {}",
            reply.text()
        );
        reply.assert_error(400, code);
    }

    // Bodies that are not an EnrollRequest at all.
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("csr");
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("invalid JSON", br#"{"token": "#.to_vec()),
        ("empty body", Vec::new()),
        ("missing field", missing.to_string().into_bytes()),
        (
            "unknown field",
            with("extra", json!(1)).to_string().into_bytes(),
        ),
        (
            "wrong type",
            with("token", json!(5)).to_string().into_bytes(),
        ),
        ("a JSON array", b"[]".to_vec()),
        (
            "unknown field inside attestation",
            with(
                "attestation",
                json!({"type": "dev", "payload": "", "extra": true}),
            )
            .to_string()
            .into_bytes(),
        ),
    ];
    for (what, body) in bodies {
        let reply = http.post_raw("/v1/enroll", Some("application/json"), body);
        assert_eq!(
            (reply.status, reply.error_code().as_deref()),
            (400, Some("malformed_body")),
            "{what}: {}",
            reply.text()
        );
        reply.assert_error(400, "malformed_body");
    }

    // None of the refusals consumed the token.
    http.post_json("/v1/enroll", &good).assert_status(201);
}

#[test]
fn enroll_answers_403_with_a_code_for_each_token_problem() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);

    // Expiry needs wall-clock time to pass: mint first, check last.
    let short_lived = ca.token(&["--ttl", "1s"]);
    let minted = Instant::now();

    // Well-formed but never minted.
    let unknown = EnrollmentToken::generate(&mut rand::rngs::OsRng);
    http.post_json("/v1/enroll", &Enrollee::new().request(unknown.as_str()))
        .assert_error(403, "unknown_token");

    // Used once, refused after, whoever presents it.
    let token = mint(&http, &ca, json!({}));
    let first = Enrollee::new();
    http.post_json("/v1/enroll", &first.request(&token))
        .assert_status(201);
    http.post_json("/v1/enroll", &Enrollee::new().request(&token))
        .assert_error(403, "token_used");
    http.post_json("/v1/enroll", &first.request(&token))
        .assert_error(403, "token_used");

    // Reserved for another node (`token create --node-id`): refused without being used up.
    let intended = Enrollee::new();
    let reserved = ca.token(&["--node-id", &intended.node_id().to_string()]);
    http.post_json("/v1/enroll", &Enrollee::new().request(&reserved))
        .assert_error(403, "token_wrong_node");
    http.post_json("/v1/enroll", &intended.request(&reserved))
        .assert_status(201);

    // Attestation evidence this CA cannot verify (a TPM quote by an attestation key it was
    // not given) is refused, not ignored; the token survives.
    let token = mint(&http, &ca, json!({}));
    let attested = Enrollee::new();
    let mut request = attested.request(&token);
    let payload = attestation_payload(b"a quote", Some(b"-----BEGIN PUBLIC KEY-----"));
    request["attestation"] = json!({"type": "tpm2", "payload": b64(&payload)});
    http.post_json("/v1/enroll", &request)
        .assert_error(403, "attestation_refused");
    http.post_json("/v1/enroll", &attested.request(&token))
        .assert_status(201);

    // A revoked node cannot come back with a fresh token.
    revoke_raw(&http, &ca, json!({"node_id": first.node_id().to_string()}));
    let token = mint(&http, &ca, json!({}));
    http.post_json("/v1/enroll", &first.request(&token))
        .assert_error(403, "node_revoked");

    // Expired (`token create --ttl 1s`, used after 2 s).
    let elapsed = minted.elapsed();
    if elapsed < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_secs(2) - elapsed);
    }
    http.post_json("/v1/enroll", &Enrollee::new().request(&short_lived))
        .assert_error(403, "token_expired");
}

#[test]
fn oversized_and_non_json_bodies_and_unknown_routes_get_json_errors() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);
    let token = mint(&http, &ca, json!({}));
    let node = Enrollee::new();

    // 413 over 64 KiB, on the public route and on an admin route.
    let mut big = node.request(&token);
    big["token"] = "x".repeat(MAX_BODY_BYTES + 1).into();
    http.send_oversized(|| http.client.post(http.url("/v1/enroll")).json(&big))
        .assert_error(413, "body_too_large");
    let padding = json!({"ttl_sec": 60, "node_id": "n".repeat(MAX_BODY_BYTES + 1)});
    let admin = ca.admin_token();
    http.send_oversized(|| {
        http.client
            .post(http.url("/v1/tokens"))
            .bearer_auth(&admin)
            .json(&padding)
    })
    .assert_error(413, "body_too_large");

    // 415 without a JSON content type, even for a valid JSON body.
    let body = node.request(&token).to_string().into_bytes();
    http.post_raw("/v1/enroll", Some("text/plain"), body.clone())
        .assert_error(415, "unsupported_media_type");
    http.post_raw("/v1/enroll", None, body.clone())
        .assert_error(415, "unsupported_media_type");

    // 404 with JSON for unknown routes.
    http.get("/v1/nope").assert_error(404, "not_found");
    http.get("/").assert_error(404, "not_found");
    http.post_raw("/v2/enroll", Some("application/json"), body.clone())
        .assert_error(404, "not_found");

    // 405 with JSON (and the Allow header) for a known route with the wrong method.
    let wrong_method = http.get("/v1/enroll");
    wrong_method.assert_error(405, "method_not_allowed");
    assert_eq!(wrong_method.header("allow").as_deref(), Some("POST"));
    http.send(http.client.delete(http.url("/v1/crl")))
        .assert_error(405, "method_not_allowed");

    // The token survived all of it.
    http.post_raw("/v1/enroll", Some("application/json"), body)
        .assert_status(201);
}

#[test]
fn enroll_rate_limit_answers_429_with_a_json_body() {
    let root = tempdir();
    let ca = TestCa::start(
        root.path(),
        &["--rate-limit-rpm", "1", "--rate-limit-burst", "2"],
    );
    let http = Http::ca(&ca);
    let unknown = EnrollmentToken::generate(&mut rand::rngs::OsRng);
    let request = Enrollee::new().request(unknown.as_str());
    http.post_json("/v1/enroll", &request)
        .assert_error(403, "unknown_token");
    http.post_json("/v1/enroll", &request)
        .assert_error(403, "unknown_token");
    http.post_json("/v1/enroll", &request)
        .assert_error(429, "rate_limited");
    // The limit is on enrollment only.
    http.get("/v1/ca").assert_status(200);
}

// ---------------------------------------------------------------------------------------------
// 3. One token, many concurrent redeemers
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_enrollments_with_one_token_issue_exactly_one_certificate() {
    const RACERS: usize = 32;
    let root = tempdir();
    let ca = start_ca(root.path());
    // Pooled, so the connections opened below are reused by the racing requests.
    let http = Http::pooled(
        &ca.url,
        ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), None).unwrap(),
        TIMEOUT,
    );
    let token = mint(&http, &ca, json!({}));
    let racers: Vec<Enrollee> = (0..RACERS).map(|_| Enrollee::new()).collect();

    let replies: Vec<Reply> = http.rt.block_on(async {
        // Open the connections first, so the enrollments arrive together rather than
        // staggered by TLS handshakes.
        let warm = (0..RACERS).map(|_| http.client.get(http.url("/v1/ca")).send());
        for response in futures::future::join_all(warm).await {
            assert_eq!(response.unwrap().status(), 200);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let sends = racers.iter().map(|racer| {
            let request = http
                .client
                .post(http.url("/v1/enroll"))
                .json(&racer.request(&token));
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let body = response.bytes().await.unwrap().to_vec();
                Reply {
                    status,
                    headers,
                    body,
                }
            }
        });
        futures::future::join_all(sends).await
    });

    let winners: Vec<usize> = (0..RACERS).filter(|i| replies[*i].status == 201).collect();
    assert_eq!(winners.len(), 1, "exactly one enrollment must succeed");
    let winner = &racers[winners[0]];
    assert_eq!(
        replies[winners[0]].json()["node_id"],
        winner.node_id().to_string()
    );
    for (i, reply) in replies.iter().enumerate() {
        if i != winners[0] {
            reply.assert_error(403, "token_used");
        }
    }

    // The CA's own records agree: one enrollment certificate among the racers, for the winner,
    // and the token used by the winner.
    let db = rusqlite::Connection::open_with_flags(
        ca.dir.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let racer_ids: Vec<String> = racers.iter().map(|r| r.node_id().to_string()).collect();
    let mut statement = db
        .prepare("SELECT node_id, kind FROM certificates")
        .unwrap();
    let issued: Vec<(String, String)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let to_racers: Vec<&(String, String)> = issued
        .iter()
        .filter(|(node, _)| racer_ids.contains(node))
        .collect();
    assert_eq!(
        to_racers,
        vec![&(winner.node_id().to_string(), "enroll".to_owned())],
        "certificates table: {issued:?}"
    );
    let used: Vec<Option<String>> = db
        .prepare("SELECT used_by FROM tokens")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(used, vec![Some(winner.node_id().to_string())]);
}

// ---------------------------------------------------------------------------------------------
// 4. Rotation
// ---------------------------------------------------------------------------------------------

#[test]
fn rotate_requires_a_valid_unrevoked_client_certificate_and_an_identity_proof() {
    let root = tempdir();
    let ca_root = root.path().join("a");
    let foreign_root = root.path().join("b");
    let ca = start_ca(&ca_root);
    let foreign_ca = start_ca(&foreign_root);
    let node = ca.enroll(&ca_root, "n1");
    let creds = NodeCreds::read(&node);
    let (request, new_key) = rotate_request(&creds.identity);

    // No client certificate.
    Http::ca(&ca)
        .post_json("/v1/rotate", &request)
        .assert_error(401, "client_certificate_required");

    // A mesh certificate of another CA (same trust domain): the handshake completes, since
    // client certificates are judged per route, and the route refuses it.
    let foreign = NodeCreds::read(&foreign_ca.enroll(&foreign_root, "foreign"));
    Http::ca_with_cert(&ca, &foreign.cert_der, &foreign.tls_key)
        .post_json("/v1/rotate", &rotate_request(&foreign.identity).0)
        .assert_error(401, "invalid_client_certificate");

    // Certificates signed with this CA's key but expired, or never recorded by it.
    let ca_key = ca_service::load_ca(&CaDir(ca.dir.clone()), &protection(), false).unwrap();
    let issue = |enrollee: &Enrollee, not_before, not_after| {
        ca_key
            .issue_node_certificate(&NodeCertificateRequest {
                csr_der: &enrollee.csr,
                identity_key: &enrollee.identity.public(),
                serial: Serial::random(&mut rand::rngs::OsRng),
                not_before,
                not_after,
            })
            .unwrap()
            .der
    };
    let t = now();
    let stale = Enrollee::new();
    let expired = issue(
        &stale,
        t.saturating_sub(Duration::from_secs(7200)),
        t.saturating_sub(Duration::from_secs(3600)),
    );
    // Expired within the CA's rotation grace, so judged on the records: never issued by them.
    Http::ca_with_cert(&ca, &expired, &stale.tls_key)
        .post_json("/v1/rotate", &rotate_request(&stale.identity).0)
        .assert_error(403, "unknown_certificate");
    let unrecorded = Enrollee::new();
    let off_book = issue(
        &unrecorded,
        t.saturating_sub(Duration::from_secs(60)),
        t.saturating_add(Duration::from_secs(3600)),
    );
    Http::ca_with_cert(&ca, &off_book, &unrecorded.tls_key)
        .post_json("/v1/rotate", &rotate_request(&unrecorded.identity).0)
        .assert_error(403, "unknown_certificate");

    // The node's own certificate, but a bad CSR or a proof that is not its identity key's.
    let http = Http::ca_with_cert(&ca, &creds.cert_der, &creds.tls_key);
    let mut bad = request.clone();
    bad["csr"] = b64(b"not a CSR").into();
    http.post_json("/v1/rotate", &bad)
        .assert_error(400, "malformed_csr");
    let csr_der = base64::engine::general_purpose::STANDARD
        .decode(request["csr"].as_str().unwrap())
        .unwrap();
    let stranger = IdentityKey::generate(&mut rand::rngs::OsRng);
    let mut bad = request.clone();
    bad["identity_proof"] =
        b64(&stranger.sign_proof(IdentityProofDomain::RotateCsr, &csr_der)).into();
    http.post_json("/v1/rotate", &bad)
        .assert_error(400, "bad_identity_proof");
    let mut bad = request.clone();
    bad["identity_proof"] = b64(&creds
        .identity
        .sign_proof(IdentityProofDomain::EnrollCsr, &csr_der))
    .into();
    http.post_json("/v1/rotate", &bad)
        .assert_error(400, "bad_identity_proof");
    http.post_raw("/v1/rotate", Some("application/json"), b"{".to_vec())
        .assert_error(400, "malformed_body");

    // Success: a new serial for the new key, same node, chains to the CA.
    let reply = http.post_json("/v1/rotate", &request);
    reply.assert_status(200);
    let body = reply.json();
    let new_der = ztmesh_pki::cert_pem_to_der(body["certificate"].as_str().unwrap()).unwrap();
    let rotated = ztmesh_pki::verify_node_certificate(
        &new_der,
        &ca.ca_der(),
        &trust_domain(),
        &RevocationSet::new(),
        now(),
    )
    .expect("the rotated certificate chains to the CA");
    assert_eq!(rotated.node_id, creds.node_id);
    assert_eq!(
        rotated.identity_key.to_spki_der(),
        creds.identity.public().to_spki_der()
    );
    assert_eq!(
        rotated.tls_public_key_spki_der,
        new_key.public_key_spki_der()
    );
    assert_ne!(rotated.serial, creds.serial());
    assert_eq!(body["serial"], rotated.serial.to_hex());
    assert!(parse_rfc3339(body["valid_not_after"].as_str().unwrap()).is_some());

    // The new certificate can rotate in turn.
    let after = Http::ca_with_cert(&ca, &new_der, &new_key);
    after
        .post_json("/v1/rotate", &rotate_request(&creds.identity).0)
        .assert_status(200);

    // Revoked (`ztmesh revoke --node-id`): every certificate of the node is refused with 403.
    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--node-id",
        &node.node_id,
    ]);
    for client in [&http, &after] {
        client
            .post_json("/v1/rotate", &rotate_request(&creds.identity).0)
            .assert_error(403, "revoked");
        client
            .post_json("/v1/announce", &json!({}))
            .assert_error(403, "revoked");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. The CRL endpoint
// ---------------------------------------------------------------------------------------------

#[test]
fn crl_is_served_as_der_or_pem_with_etag_and_lists_revocations() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);

    // DER by default, accepted by openssl and verified against the CA.
    let der = http.get("/v1/crl");
    der.assert_status(200);
    assert_eq!(
        der.header("content-type").as_deref(),
        Some("application/pkix-crl")
    );
    let etag = der.header("etag").expect("ETag");
    assert!(
        der.header("cache-control")
            .expect("Cache-Control")
            .contains("max-age="),
        "{:?}",
        der.header("cache-control")
    );
    let crl = Crl::parse_and_verify(&der.body, &ca.ca_der()).unwrap();
    assert!(crl.entries.is_empty());
    let crl_path = root.path().join("crl.der");
    std::fs::write(&crl_path, &der.body).unwrap();
    let openssl = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-in"])
        .arg(&crl_path)
        .arg("-CAfile")
        .arg(ca.dir.join("ca.pem"))
        .output()
        .unwrap();
    assert!(
        openssl.status.success() && String::from_utf8_lossy(&openssl.stderr).contains("verify OK"),
        "openssl crl: {}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    http.send(http.client.get(http.url("/v1/crl?format=der")))
        .assert_status(200);

    // PEM on request, by query or by Accept, with its own ETag.
    let pem_by_query = http.get("/v1/crl?format=pem");
    let pem_by_accept = http.send(
        http.client
            .get(http.url("/v1/crl"))
            .header("accept", "application/x-pem-file"),
    );
    for reply in [&pem_by_query, &pem_by_accept] {
        reply.assert_status(200);
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("application/x-pem-file")
        );
        let block = pem::parse(&reply.body).unwrap();
        assert_eq!(block.tag(), "X509 CRL");
        assert_eq!(block.contents(), &der.body[..]);
        assert_ne!(reply.header("etag"), Some(etag.clone()));
    }

    // Conditional GET.
    let cached = http.send(
        http.client
            .get(http.url("/v1/crl"))
            .header("if-none-match", &etag),
    );
    cached.assert_status(304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), Some(etag.clone()));
    http.send(
        http.client
            .get(http.url("/v1/crl?format=pem"))
            .header("if-none-match", &etag),
    )
    .assert_status(200);
    http.send(
        http.client
            .get(http.url("/v1/crl"))
            .header("if-none-match", "\"something-else\""),
    )
    .assert_status(200);

    http.get("/v1/crl?format=xml")
        .assert_error(400, "malformed_query");

    // A revocation makes a new CRL: new ETag, higher number, the serial listed.
    let enrollee = Enrollee::new();
    let answer = enroll_raw(&http, &ca, &enrollee);
    let victim = NodeCreds::from_enrollment(enrollee, &answer);
    revoke_raw(&http, &ca, json!({"serial": victim.serial().to_hex()}));
    let after = http.send(
        http.client
            .get(http.url("/v1/crl"))
            .header("if-none-match", &etag),
    );
    after.assert_status(200);
    let new_etag = after.header("etag").unwrap();
    assert_ne!(new_etag, etag);
    let new_crl = Crl::parse_and_verify(&after.body, &ca.ca_der()).unwrap();
    assert!(new_crl.number > crl.number);
    assert!(crl_lists(&new_crl, &victim.serial()));
    // The CRL file on disk was rewritten too.
    let on_disk = pem::parse(std::fs::read(ca.dir.join("crl.pem")).unwrap()).unwrap();
    assert_eq!(on_disk.contents(), &after.body[..]);
}

// ---------------------------------------------------------------------------------------------
// 6. Admin authentication and request rules of /v1/revoke and /v1/tokens
// ---------------------------------------------------------------------------------------------

/// Issue 12, item 4: a certificate signed with the CA's key outside its database (as a node's
/// `unlogged_certificate` finding shows it) and a node the database never knew used to be
/// answered `404 not_found`. Now both are revoked: the serial is in the CRL (openssl reads
/// it), the log has a `revoke_certificate` and a `revoke_node` entry, and the banned node
/// cannot enroll.
#[test]
fn a_rogue_certificate_unknown_to_the_ca_database_is_revoked_by_serial_and_by_node_id() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);
    let admin = ca.admin_token();
    let revoke = |body: Value| http.post_admin("/v1/revoke", &admin, &body);
    let rogue = Enrollee::new().node_id();
    let rogue_serial = Serial::random(&mut rand::rngs::OsRng);
    let (before, _) = fetch_crl(&http, &ca);

    revoke(json!({"serial": rogue_serial.to_hex(), "node_id": rogue.to_string()}))
        .assert_status(204);
    let (crl, der) = fetch_crl(&http, &ca);
    assert!(crl_lists(&crl, &rogue_serial));
    assert!(crl.number > before.number);
    // Again: nothing changes, the CRL stays.
    revoke(json!({"serial": rogue_serial.to_hex(), "node_id": rogue.to_string()}))
        .assert_status(204);
    assert_eq!(fetch_crl(&http, &ca).0.number, crl.number);
    // External oracle: openssl reads the serial in the CA-signed CRL.
    let crl_path = root.path().join("crl.der");
    std::fs::write(&crl_path, &der).unwrap();
    let openssl = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&crl_path)
        .arg("-CAfile")
        .arg(ca.dir.join("ca.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&openssl.stdout).to_uppercase();
    assert!(
        openssl.status.success() && String::from_utf8_lossy(&openssl.stderr).contains("verify OK"),
        "openssl crl: {}",
        String::from_utf8_lossy(&openssl.stderr)
    );
    assert!(
        text.contains(&rogue_serial.to_hex().to_uppercase()),
        "serial {} not in:\n{text}",
        rogue_serial.to_hex()
    );

    // A node id the database never saw: banned, logged, and it cannot enroll.
    let stranger = Enrollee::new();
    revoke(json!({"node_id": stranger.node_id().to_string()})).assert_status(204);
    assert!(fetch_crl(&http, &ca).0.number > crl.number);
    let entries = http.get("/v1/log/entries?start=0&count=1000");
    entries.assert_status(200);
    let logged: Vec<ztmesh_ca::membership_log::LogEntry> = entries.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| {
            let leaf = base64::engine::general_purpose::STANDARD
                .decode(item["leaf"].as_str().unwrap())
                .unwrap();
            ztmesh_ca::membership_log::LogEntry::from_leaf(&leaf).ok()
        })
        .collect();
    assert!(
        logged
            .iter()
            .any(|e| e.kind.as_str() == "revoke_certificate"
                && e.node_id == rogue
                && e.serial == rogue_serial.to_hex()),
        "{logged:?}"
    );
    assert!(
        logged
            .iter()
            .any(|e| e.kind.as_str() == "revoke_node" && e.node_id == stranger.node_id()),
        "{logged:?}"
    );
    let token = mint(&http, &ca, json!({}));
    http.post_json("/v1/enroll", &stranger.request(&token))
        .assert_error(403, "node_revoked");
}

#[test]
fn admin_routes_require_the_admin_credential_and_a_well_formed_request() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);
    let admin = ca.admin_token();
    let enrollee = Enrollee::new();
    let answer = enroll_raw(&http, &ca, &enrollee);
    let node = NodeCreds::from_enrollment(enrollee, &answer);
    let serial = node.serial().to_hex();

    for (path, body) in [
        ("/v1/revoke", json!({"serial": serial})),
        ("/v1/tokens", json!({})),
    ] {
        let post = || http.client.post(http.url(path)).json(&body);
        http.send(post())
            .assert_error(401, "admin_credential_required");
        http.send(post().header("authorization", format!("Basic {}", b64(admin.as_bytes()))))
            .assert_error(401, "admin_credential_required");
        http.send(post().bearer_auth("ztadm_not_the_credential"))
            .assert_error(403, "bad_admin_credential");
        http.send(post().header("authorization", "Bearer"))
            .assert_error(401, "admin_credential_required");
        http.send(post().bearer_auth(format!("{admin}x")))
            .assert_error(403, "bad_admin_credential");
    }
    // The refused calls changed nothing.
    assert!(!crl_lists(&fetch_crl(&http, &ca).0, &node.serial()));

    let revoke = |body: Value| http.post_admin("/v1/revoke", &admin, &body);
    // Both: that node's certificate, refused when this CA issued it to another node.
    revoke(json!({"serial": serial, "node_id": Enrollee::new().node_id().to_string()}))
        .assert_error(400, "serial_owner_mismatch");
    revoke(json!({})).assert_error(400, "malformed_body");
    revoke(json!({"serial": serial, "reason": "because"})).assert_error(400, "malformed_body");
    revoke(json!({"serial": "not hex"})).assert_error(400, "malformed_serial");
    revoke(json!({"node_id": "not-a-node"})).assert_error(400, "malformed_node_id");
    // An unknown serial alone names no node to log it under.
    revoke(json!({"serial": Serial::random(&mut rand::rngs::OsRng).to_hex()}))
        .assert_error(404, "not_found");
    assert!(!crl_lists(&fetch_crl(&http, &ca).0, &node.serial()));

    revoke(json!({"serial": serial, "reason": "key_compromise"})).assert_status(204);
    assert!(revoke(json!({"serial": serial}))
        .assert_status(204)
        .body
        .is_empty());
    assert!(crl_lists(&fetch_crl(&http, &ca).0, &node.serial()));

    let tokens = |body: Value| http.post_admin("/v1/tokens", &admin, &body);
    tokens(json!({"ttl_sec": 0})).assert_error(400, "invalid_ttl");
    tokens(json!({"ttl_sec": 30 * 86_400 + 1})).assert_error(400, "invalid_ttl");
    tokens(json!({"node_id": "not-a-node"})).assert_error(400, "malformed_node_id");
    tokens(json!({"ttl": 60})).assert_error(400, "malformed_body");
    let minted = tokens(json!({"ttl_sec": 600}));
    minted.assert_status(201);
    let expires = parse_rfc3339(minted.json()["expires_at"].as_str().unwrap()).unwrap();
    let expected = now().saturating_add(Duration::from_secs(600));
    assert!(
        expires.as_unix_secs().abs_diff(expected.as_unix_secs()) < 120,
        "expires_at {} for a 600 s token",
        minted.json()["expires_at"]
    );
}

#[test]
fn admin_cli_fails_clearly_on_a_bad_credential_or_ttl() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);
    let enrollee = Enrollee::new();
    let answer = enroll_raw(&http, &ca, &enrollee);
    let serial = answer["serial"].as_str().unwrap().to_owned();
    let ca_dir = ca.dir.to_str().unwrap();

    let bad = root.path().join("bad.token");
    std::fs::write(&bad, "ztadm_not_the_credential\n").unwrap();
    let bad = bad.to_str().unwrap();
    let out = ztmesh(&[
        "revoke",
        "--ca-dir",
        ca_dir,
        "--admin-token-file",
        bad,
        "--serial",
        &serial,
    ]);
    assert_cli_fails(&out, &["403", "bad_admin_credential"]);
    let out = ztmesh(&[
        "token",
        "create",
        "--ca-dir",
        ca_dir,
        "--admin-token-file",
        bad,
    ]);
    assert_cli_fails(&out, &["403", "bad_admin_credential"]);
    assert!(out.stdout.is_empty(), "no token may be printed");

    let missing = root.path().join("missing.token");
    let out = ztmesh(&[
        "revoke",
        "--ca-dir",
        ca_dir,
        "--admin-token-file",
        missing.to_str().unwrap(),
        "--serial",
        &serial,
    ]);
    assert_cli_fails(&out, &["admin credential", "missing.token"]);

    // None of that revoked anything.
    let serial_value = Serial::from_hex(&serial).unwrap();
    assert!(!crl_lists(&fetch_crl(&http, &ca).0, &serial_value));

    for ttl in ["0s", "31d"] {
        let out = ztmesh(&["token", "create", "--ca-dir", ca_dir, "--ttl", ttl]);
        assert_cli_fails(&out, &["invalid_ttl"]);
    }
    let out = ztmesh(&["token", "create", "--ca-dir", ca_dir, "--ttl", "soon"]);
    assert_cli_fails(&out, &["duration"]);

    // With the right credential the same command works.
    let out = ztmesh_ok(&["revoke", "--ca-dir", ca_dir, "--serial", &serial]);
    assert!(out.contains(&serial), "{out}");
    assert!(crl_lists(&fetch_crl(&http, &ca).0, &serial_value));
}

// ---------------------------------------------------------------------------------------------
// 7. Durability across kill -9
// ---------------------------------------------------------------------------------------------

#[test]
fn ca_restart_after_sigkill_keeps_tokens_revocations_and_its_certificate() {
    let root = tempdir();
    let mut ca = start_ca(root.path());
    let ca_pem = std::fs::read_to_string(ca.dir.join("ca.pem")).unwrap();
    let http = Http::ca(&ca);

    let used_token = mint(&http, &ca, json!({}));
    let kept = Enrollee::new();
    let reply = http.post_json("/v1/enroll", &kept.request(&used_token));
    reply.assert_status(201);
    let kept = NodeCreds::from_enrollment(kept, &reply.json());
    let victim_node = ca.enroll(root.path(), "victim");
    let victim = NodeCreds::read(&victim_node);
    ztmesh_ok(&[
        "revoke",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--node-id",
        &victim_node.node_id,
    ]);
    let unused_token = mint(&http, &ca, json!({}));
    let (crl_before, _) = fetch_crl(&http, &ca);
    assert!(crl_lists(&crl_before, &victim.serial()));
    drop(http);

    ca.restart(NO_RATE_LIMIT);
    let http = Http::ca(&ca);

    // Same CA certificate, on disk and on the wire.
    assert_eq!(
        std::fs::read_to_string(ca.dir.join("ca.pem")).unwrap(),
        ca_pem
    );
    let info = http.get("/v1/ca");
    info.assert_status(200);
    assert_eq!(info.json()["fingerprint_sha256"], ca.fingerprint.as_str());
    assert_eq!(
        info.json()["ca_cert"].as_str().unwrap().trim(),
        ca_pem.trim()
    );

    // The used token stays used; the unused one works exactly once.
    http.post_json("/v1/enroll", &Enrollee::new().request(&used_token))
        .assert_error(403, "token_used");
    http.post_json("/v1/enroll", &Enrollee::new().request(&unused_token))
        .assert_status(201);
    http.post_json("/v1/enroll", &Enrollee::new().request(&unused_token))
        .assert_error(403, "token_used");

    // The revoked node stays revoked; the kept one's certificate record survived.
    Http::ca_with_cert(&ca, &victim.cert_der, &victim.tls_key)
        .post_json("/v1/rotate", &rotate_request(&victim.identity).0)
        .assert_error(403, "revoked");
    Http::ca_with_cert(&ca, &kept.cert_der, &kept.tls_key)
        .post_json("/v1/rotate", &rotate_request(&kept.identity).0)
        .assert_status(200);

    // The CRL never goes backwards and still lists the victim.
    let (crl_after, _) = fetch_crl(&http, &ca);
    assert!(
        crl_after.number >= crl_before.number,
        "CRL number went from {} to {}",
        crl_before.number,
        crl_after.number
    );
    assert!(crl_lists(&crl_after, &victim.serial()));
}

// ---------------------------------------------------------------------------------------------
// 8. Wrong secrets
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_passphrase_existing_ca_and_wrong_pin_are_refused() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let ca_dir = ca.dir.to_str().unwrap();
    let addr_file = std::fs::read_to_string(ca.dir.join("ca.addr")).unwrap();

    // `ca serve` with the wrong passphrase exits with a clear message, without serving.
    let out = ztmesh_with_env(
        &[
            "ca",
            "serve",
            "--data-dir",
            ca_dir,
            "--listen",
            "127.0.0.1:0",
        ],
        &[("ZTMESH_PASSPHRASE", "wrong")],
    );
    assert_cli_fails(&out, &["wrong passphrase"]);
    assert_eq!(
        std::fs::read_to_string(ca.dir.join("ca.addr")).unwrap(),
        addr_file
    );

    // `ca init` never overwrites a CA.
    let files = ["ca.key", "ca.pem", "admin.token"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(ca.dir.join(f)).unwrap())
        .collect();
    let out = ztmesh(&[
        "ca",
        "init",
        "--trust-domain",
        TRUST_DOMAIN,
        "--data-dir",
        ca_dir,
    ]);
    assert_cli_fails(&out, &["already exists"]);
    for (file, content) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(ca.dir.join(file)).unwrap(),
            content,
            "{file} changed"
        );
    }
    Http::ca(&ca).get("/v1/ca").assert_status(200);

    // `enroll` with a wrong (or malformed) pin fails before sending the token, writing nothing.
    let token = ca.token(&[]);
    let node_dir = root.path().join("pinned");
    let wrong_pin = ztmesh_pki::fingerprint_sha256(b"some other certificate");
    for (pin, needle) in [
        (wrong_pin.as_str(), "pinned fingerprint"),
        ("xyz", "fingerprint"),
    ] {
        let out = ztmesh(&[
            "enroll",
            "--ca-url",
            &ca.url,
            "--ca-fingerprint",
            pin,
            "--token",
            &token,
            "--data-dir",
            node_dir.to_str().unwrap(),
        ]);
        assert_cli_fails(&out, &[needle]);
        assert!(
            !node_dir.exists() || std::fs::read_dir(&node_dir).unwrap().next().is_none(),
            "enroll with a bad pin wrote files: {:?}",
            std::fs::read_dir(&node_dir).unwrap().collect::<Vec<_>>()
        );
    }
    // The token never reached the CA: with the right pin it enrolls.
    ztmesh_ok(&[
        "enroll",
        "--ca-url",
        &ca.url,
        "--ca-fingerprint",
        &ca.fingerprint,
        "--token",
        &token,
        "--data-dir",
        node_dir.to_str().unwrap(),
    ]);
    assert!(node_dir.join("node.toml").exists());
}

// ---------------------------------------------------------------------------------------------
// Attestation at enrollment
// ---------------------------------------------------------------------------------------------

/// The dev TEE key the attestation tests' simulated TEE signs with.
fn dev_tee_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32])
}

/// A CBOR byte-string header for `len` bytes (major type 2), written by hand so the tests pin
/// the wire format rather than reuse the product's encoder.
fn cbor_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    match bytes.len() {
        len @ 0..=23 => out.push(0x40 | len as u8),
        len @ 24..=255 => out.extend([0x58, len as u8]),
        len => {
            let len = u16::try_from(len).unwrap();
            out.push(0x59);
            out.extend(len.to_be_bytes());
        }
    }
    out.extend_from_slice(bytes);
}

/// The decoded `attestation.payload`: the CBOR map `{"evidence": bstr, "collateral"?: bstr}`.
fn attestation_payload(evidence: &[u8], collateral: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![if collateral.is_some() { 0xa2 } else { 0xa1 }];
    out.push(0x68);
    out.extend_from_slice(b"evidence");
    cbor_bytes(&mut out, evidence);
    if let Some(collateral) = collateral {
        out.push(0x6a);
        out.extend_from_slice(b"collateral");
        cbor_bytes(&mut out, collateral);
    }
    out
}

/// The documented enrollment binding, computed from its definition:
/// report_data_binding(SHA-256(token text), the CSR's TLS SubjectPublicKeyInfo DER).
fn enrollment_binding(token: &str, csr_der: &[u8]) -> [u8; 64] {
    use sha2::Digest;
    let spki = ztmesh_pki::csr_public_key(csr_der).unwrap();
    ztmesh_attest::report_data_binding(&sha2::Sha256::digest(token.as_bytes()), &spki)
}

/// Dev evidence signed by `key` over `report_data`, timestamped now.
fn dev_evidence(key: &ed25519_dalek::SigningKey, report_data: &[u8; 64]) -> Vec<u8> {
    ztmesh_attest::dev::generate(key, &[0x11; 32], report_data, now().as_unix_secs())
}

impl Enrollee {
    /// A `POST /v1/enroll` body for `token` carrying `evidence` of `kind`.
    fn attested_request(&self, token: &str, kind: &str, evidence: &[u8]) -> Value {
        let mut request = self.request(token);
        request["attestation"] =
            json!({"type": kind, "payload": b64(&attestation_payload(evidence, None))});
        request
    }

    /// Dev evidence bound to `token` and this enrollee's CSR key.
    fn dev_evidence_for(&self, token: &str) -> Vec<u8> {
        dev_evidence(&dev_tee_key(), &enrollment_binding(token, &self.csr))
    }
}

/// Asserts a 403 `attestation_refused` whose message names `reason`.
#[track_caller]
fn assert_attestation_refused(reply: &Reply, reason: &str) {
    reply.assert_error(403, "attestation_refused");
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("({reason})")),
        "expected reason {reason} in {message:?}"
    );
}

#[test]
fn enroll_with_required_dev_attestation_accepts_only_bound_well_signed_evidence() {
    let root = tempdir();
    let dev_public = hex::encode(dev_tee_key().verifying_key().to_bytes());
    let mut args = NO_RATE_LIMIT.to_vec();
    args.extend([
        "--require-attestation",
        "--allow-dev-attestation",
        "--dev-tee-key",
        &dev_public,
    ]);
    let ca = TestCa::start(root.path(), &args);
    let http = Http::ca(&ca);
    let token = mint(&http, &ca, json!({}));
    let node = Enrollee::new();

    // Required and missing.
    http.post_json("/v1/enroll", &node.request(&token))
        .assert_error(403, "attestation_required");

    // Bound to another token (same key): the report data is not this enrollment's.
    let other_token = EnrollmentToken::generate(&mut rand::rngs::OsRng);
    let wrong_binding = dev_evidence(
        &dev_tee_key(),
        &enrollment_binding(other_token.as_str(), &node.csr),
    );
    assert_attestation_refused(
        &http.post_json(
            "/v1/enroll",
            &node.attested_request(&token, "dev", &wrong_binding),
        ),
        "wrong_nonce",
    );
    // Bound to this token but another TLS key.
    let other_key = Enrollee::new();
    assert_attestation_refused(
        &http.post_json(
            "/v1/enroll",
            &node.attested_request(&token, "dev", &other_key.dev_evidence_for(&token)),
        ),
        "wrong_nonce",
    );

    // A flipped signature bit, and a signature by another dev TEE key.
    let mut flipped = node.dev_evidence_for(&token);
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    assert_attestation_refused(
        &http.post_json(
            "/v1/enroll",
            &node.attested_request(&token, "dev", &flipped),
        ),
        "bad_signature",
    );
    let impostor = dev_evidence(
        &ed25519_dalek::SigningKey::from_bytes(&[0x66; 32]),
        &enrollment_binding(&token, &node.csr),
    );
    assert_attestation_refused(
        &http.post_json(
            "/v1/enroll",
            &node.attested_request(&token, "dev", &impostor),
        ),
        "bad_signature",
    );

    // Payloads that do not decode: 400, whatever the evidence.
    let evidence = node.dev_evidence_for(&token);
    let good_payload = attestation_payload(&evidence, None);
    let mut trailing = good_payload.clone();
    trailing.push(0);
    let garbage: Vec<(&str, Value)> = vec![
        ("not base64", json!({"type": "dev", "payload": "%%%"})),
        (
            "not CBOR",
            json!({"type": "dev", "payload": b64(b"\xff\xff garbage")}),
        ),
        (
            "a CBOR array",
            json!({"type": "dev", "payload": b64(&[0x80])}),
        ),
        (
            "trailing bytes",
            json!({"type": "dev", "payload": b64(&trailing)}),
        ),
        ("empty", json!({"type": "dev", "payload": ""})),
        (
            "unknown field",
            json!({"type": "dev", "payload": b64(&[0xa1, 0x63, b'x', b'y', b'z', 0x40])}),
        ),
        (
            "unknown type",
            json!({"type": "sev", "payload": b64(&good_payload)}),
        ),
    ];
    for (what, attestation) in garbage {
        let mut request = node.request(&token);
        request["attestation"] = attestation;
        let reply = http.post_json("/v1/enroll", &request);
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        reply.assert_error(400, "malformed_attestation");
    }

    // None of the refusals spent the token: the right evidence enrolls.
    http.post_json(
        "/v1/enroll",
        &node.attested_request(&token, "dev", &evidence),
    )
    .assert_status(201);

    // The CLI's simulated TEE produces the same binding, and the CA warns about dev evidence.
    let key_file = root.path().join("dev-tee.key");
    std::fs::write(&key_file, hex::encode(dev_tee_key().to_bytes())).unwrap();
    let key_file = key_file.to_str().unwrap();
    ca.enroll_with(
        root.path(),
        "dev-attested",
        &["--attestation-type", "dev", "--dev-tee-key-file", key_file],
    );
    let log = ca.proc.as_ref().unwrap().log_text();
    assert!(
        log.contains("dev (simulated) attestation"),
        "no warning about dev enrollment in the CA log:\n{log}"
    );
}

#[test]
fn enroll_refuses_dev_attestation_unless_the_ca_allows_it() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let http = Http::ca(&ca);
    let token = mint(&http, &ca, json!({}));
    let node = Enrollee::new();
    let evidence = node.dev_evidence_for(&token);
    assert_attestation_refused(
        &http.post_json(
            "/v1/enroll",
            &node.attested_request(&token, "dev", &evidence),
        ),
        "dev_not_allowed",
    );
    // Attestation is optional on this CA, and the refusal did not spend the token.
    http.post_json("/v1/enroll", &node.request(&token))
        .assert_status(201);
}

// ---------------------------------------------------------------------------------------------
// 9. Garbage to every CA route
// ---------------------------------------------------------------------------------------------

/// Cases per route.
const GARBAGE_CASES: u32 = 48;

/// Field names of the API's requests, so random objects often get past the outer layer.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "token",
            "csr",
            "identity_key",
            "identity_proof",
            "node_id",
            "attestation",
            "type",
            "payload",
            "serial",
            "reason",
            "ttl_sec",
            "mesh_addr",
            "api_addr",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_]{0,12}",
    ]
}

/// Arbitrary JSON, biased towards objects with the API's field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        "[A-Za-z0-9+/=]{0,96}".prop_map(Value::from),
        Just(Value::from("ztm1_")),
        Just(Value::from(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"
        )),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A string close to `original`: cut short, extended, or with one character replaced.
fn near_string(original: String) -> impl Strategy<Value = String> {
    let len = original.chars().count();
    (0..=len, "\\PC{0,3}", any::<bool>()).prop_map(move |(at, extra, replace)| {
        let mut chars: Vec<char> = original.chars().collect();
        if replace && at < chars.len() {
            chars[at] = extra.chars().next().unwrap_or('!');
        } else {
            chars.truncate(at);
            chars.extend(extra.chars());
        }
        chars.into_iter().collect()
    })
}

/// A valid request with one of its own fields replaced, removed or slightly damaged, so that
/// most cases get past JSON parsing and exercise the route's own checks.
fn mutated_request(valid: Value) -> impl Strategy<Value = Value> {
    let fields: Vec<String> = valid.as_object().unwrap().keys().cloned().collect();
    prop::sample::select(fields).prop_flat_map(move |field| {
        let original = valid[field.as_str()]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let replacement = prop_oneof![
            3 => near_string(original).prop_map(Value::from),
            2 => "\\PC{0,60}".prop_map(Value::from),
            1 => json_value(),
            1 => Just(Value::Null),
        ];
        let valid = valid.clone();
        (replacement, any::<bool>()).prop_map(move |(value, remove)| {
            let mut request = valid.clone();
            if remove {
                request.as_object_mut().unwrap().remove(&field);
            } else {
                request[field.as_str()] = value;
            }
            request
        })
    })
}

/// Request bodies: random bytes, random text, random JSON, a valid request with one field
/// damaged, a valid request cut short, or a body over the limit.
fn garbage_body(valid: Value) -> impl Strategy<Value = Vec<u8>> {
    let valid_bytes = valid.to_string().into_bytes();
    let len = valid_bytes.len();
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..2048),
        1 => "\\PC{0,200}".prop_map(String::into_bytes),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        5 => mutated_request(valid).prop_map(|v| v.to_string().into_bytes()),
        2 => (0..=len).prop_map(move |n| valid_bytes[..n].to_vec()),
        1 => (1..4096usize, any::<u8>()).prop_map(|(extra, byte)| vec![byte; MAX_BODY_BYTES + extra]),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        6 => Just(Some("application/json")),
        1 => Just(Some("application/json; charset=utf-8")),
        1 => Just(None),
        1 => Just(Some("text/plain")),
        1 => Just(Some("application/x-www-form-urlencoded")),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Enroll,
    Rotate,
    Announce,
    Tokens,
    Revoke,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Enroll => "/v1/enroll",
            Route::Rotate => "/v1/rotate",
            Route::Announce => "/v1/announce",
            Route::Tokens => "/v1/tokens",
            Route::Revoke => "/v1/revoke",
        }
    }

    /// Whether `body` is a request this route may legitimately accept.
    fn parses(self, body: &[u8]) -> bool {
        match self {
            Route::Enroll => serde_json::from_slice::<EnrollRequest>(body).is_ok(),
            Route::Rotate => serde_json::from_slice::<RotateRequest>(body).is_ok(),
            Route::Announce => serde_json::from_slice::<AnnounceRequest>(body).is_ok(),
            Route::Tokens => serde_json::from_slice::<TokenRequest>(body).is_ok(),
            Route::Revoke => serde_json::from_slice::<RevokeRequest>(body).is_ok(),
        }
    }
}

fn proptest_runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: GARBAGE_CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

#[test]
fn garbage_to_every_ca_route_gets_a_json_4xx_and_the_ca_survives() {
    let root = tempdir();
    let mut ca = start_ca(root.path());
    let anonymous = Http::new(
        &ca.url,
        ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), None).unwrap(),
        Duration::from_secs(10),
    );
    // The mTLS routes are fuzzed with a real node certificate, so bodies get parsed.
    let member = ca.enroll(root.path(), "member");
    let creds = NodeCreds::read(&member);
    let authenticated = Http::new(
        &ca.url,
        ztmesh_runtime::tls::ca_client_config(
            &ca.ca_der(),
            Some(current_cert(&creds.cert_der, &creds.tls_key)),
        )
        .unwrap(),
        Duration::from_secs(10),
    );
    let admin = ca.admin_token();
    // A certificate to name in revoke templates (not the member's, which must stay usable).
    let bystander = enroll_raw(&anonymous, &ca, &Enrollee::new());

    let templates = [
        (
            Route::Enroll,
            Enrollee::new().request(&mint(&anonymous, &ca, json!({}))),
        ),
        (Route::Rotate, rotate_request(&creds.identity).0),
        (
            Route::Announce,
            json!({"mesh_addr": "127.0.0.1:9", "api_addr": "127.0.0.1:9"}),
        ),
        (Route::Tokens, json!({"ttl_sec": 60})),
        (Route::Revoke, json!({"serial": bystander["serial"]})),
    ];
    for (route, valid) in templates {
        let strategy = (
            garbage_body(valid),
            content_type(),
            prop::bool::weighted(0.8),
        );
        let result = proptest_runner().run(&strategy, |(body, content_type, with_auth)| {
            let mtls = matches!(route, Route::Rotate | Route::Announce);
            let client = if mtls && with_auth {
                &authenticated
            } else {
                &anonymous
            };
            let mut request = client
                .client
                .post(client.url(route.path()))
                .body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            if matches!(route, Route::Tokens | Route::Revoke) && with_auth {
                request = request.bearer_auth(&admin);
            }
            let reply = match client.try_send(request) {
                Ok(reply) => reply,
                // See `Http::send_oversized`: a refused oversized body may cost the answer.
                Err(e) if e.reset_while_sending && body.len() > MAX_BODY_BYTES => return Ok(()),
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "no answer to a {}-byte body: {}",
                        body.len(),
                        e.message
                    )))
                }
            };
            prop_assert!(
                reply.status < 500,
                "server error {}: {}",
                reply.status,
                reply.text()
            );
            if (200..300).contains(&reply.status) {
                prop_assert!(
                    content_type.is_some_and(|c| c.starts_with("application/json"))
                        && route.parses(&body),
                    "{} accepted a body that is not a request: {}",
                    reply.status,
                    String::from_utf8_lossy(&body)
                );
            } else {
                prop_assert!(
                    (400..500).contains(&reply.status),
                    "status {}",
                    reply.status
                );
                prop_assert!(
                    reply.error_code().is_some(),
                    "{} without a JSON error body: {:?}",
                    reply.status,
                    reply.text()
                );
            }
            Ok(())
        });
        if let Err(error) = result {
            panic!("{route:?}: {error}");
        }
    }

    // GET /v1/crl with random query strings and cache headers.
    let query = prop_oneof![
        "[ -~]{0,60}",
        "format=[a-z]{0,6}",
        "((format|x)=(der|pem|)&){0,3}",
        "\\PC{0,30}",
    ];
    let accept = prop::option::of(prop::sample::select(vec![
        "application/x-pem-file",
        "text/plain",
        "application/pkix-crl",
        "*/*",
    ]));
    let if_none_match = prop::option::of("[!-~]{0,30}");
    let result = proptest_runner().run(
        &(query, accept, if_none_match),
        |(query, accept, if_none_match)| {
            let Ok(url) = reqwest::Url::parse(&anonymous.url(&format!("/v1/crl?{query}"))) else {
                return Ok(());
            };
            let mut request = anonymous.client.get(url);
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            if let Some(tag) = if_none_match {
                request = request.header("if-none-match", tag);
            }
            let reply = anonymous
                .try_send(request)
                .map_err(|e| TestCaseError::fail(format!("no answer: {}", e.message)))?;
            match reply.status {
                200 => prop_assert!(matches!(
                    reply.header("content-type").as_deref(),
                    Some("application/pkix-crl" | "application/x-pem-file")
                )),
                304 => {}
                400 => {
                    let code = reply.error_code();
                    prop_assert_eq!(code.as_deref(), Some("malformed_query"));
                }
                other => prop_assert!(false, "status {} for ?{}", other, query),
            }
            Ok(())
        },
    );
    if let Err(error) = result {
        panic!("GET /v1/crl: {error}");
    }

    // Still alive and still serving.
    ca.proc.as_mut().unwrap().assert_running();
    anonymous.get("/v1/ca").assert_status(200);
    fetch_crl(&anonymous, &ca);
    let log = ca.proc.as_ref().unwrap().log_text();
    assert!(!log.contains("panicked"), "the CA panicked:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// 10. The node's CRL push route
// ---------------------------------------------------------------------------------------------

#[test]
fn node_crl_push_refuses_garbage_foreign_and_stale_crls() {
    let root = tempdir();
    let ca_root = root.path().join("a");
    let ca = start_ca(&ca_root);
    let http = Http::ca(&ca);
    let mut node = ca.enroll(&ca_root, "n1");
    // Refresh the CRL often, so the node follows revocations even without the push.
    set_config(&node.dir, "crl_refresh_secs", "2");
    node.start();
    let creds = NodeCreds::read(&node);
    let own = Http::node(&ca, &node, Some(&creds));
    let pusher = Http::node(&ca, &node, None);

    let (crl, old_der) = fetch_crl(&http, &ca);
    wait_for_node(&node, &ca, "the node to load the CA's CRL", || {
        node_status(&own)["crl_number"] == crl.number
    });

    // Malformed.
    let push =
        |content_type: &str, body: Vec<u8>| pusher.post_raw("/v1/crl", Some(content_type), body);
    push("application/pkix-crl", b"not a CRL".to_vec()).assert_error(400, "malformed_crl");
    push("application/pkix-crl", Vec::new()).assert_error(400, "malformed_crl");
    push(
        "application/pkix-crl",
        old_der[..old_der.len() - 1].to_vec(),
    )
    .assert_error(400, "malformed_crl");
    let wrong_tag = pem::encode(&pem::Pem::new("CERTIFICATE", old_der.clone()));
    push("application/x-pem-file", wrong_tag.into_bytes()).assert_error(400, "malformed_crl");
    push(
        "application/x-pem-file",
        b"-----BEGIN X509 CRL-----\n!!!\n-----END X509 CRL-----\n".to_vec(),
    )
    .assert_error(400, "malformed_crl");

    // Signed by another CA with the same name and trust domain, even with a far higher number.
    let foreign_dir = root.path().join("foreign-ca");
    ztmesh_ok(&[
        "ca",
        "init",
        "--trust-domain",
        TRUST_DOMAIN,
        "--data-dir",
        foreign_dir.to_str().unwrap(),
    ]);
    let foreign_pem = std::fs::read(foreign_dir.join("crl.pem")).unwrap();
    push("application/x-pem-file", foreign_pem).assert_error(403, "untrusted_crl");
    let foreign = ca_service::load_ca(&CaDir(foreign_dir), &protection(), false).unwrap();
    let t = now();
    let foreign_der = foreign
        .sign_crl(
            &[],
            1_000_000,
            t,
            t.saturating_add(Duration::from_secs(3600)),
        )
        .unwrap();
    push("application/pkix-crl", foreign_der).assert_error(403, "untrusted_crl");

    // Not newer than the CRL in force: the same one, then an older one after a revocation.
    push("application/pkix-crl", old_der.clone()).assert_error(409, "stale_crl");
    let victim = Enrollee::new();
    enroll_raw(&http, &ca, &victim);
    revoke_raw(&http, &ca, json!({"node_id": victim.node_id().to_string()}));
    let (newer, newer_der) = fetch_crl(&http, &ca);
    assert!(newer.number > crl.number);
    wait_for_node(&node, &ca, "the node to load the newer CRL", || {
        node_status(&own)["crl_number"] == newer.number
    });
    push("application/pkix-crl", old_der).assert_error(409, "stale_crl");
    let newer_pem = pem::encode(&pem::Pem::new("X509 CRL", newer_der));
    push("application/x-pem-file", newer_pem.into_bytes()).assert_error(409, "stale_crl");
    let status = node_status(&own);
    assert_eq!(
        status["crl_number"], newer.number,
        "a stale CRL rolled back the node"
    );
    assert_eq!(status["revoked_serials"], 1);

    // Positive control: a newer CRL signed by the mesh CA is applied (204).
    let mesh_ca = ca_service::load_ca(&CaDir(ca.dir.clone()), &protection(), false).unwrap();
    let t = now();
    let newest = newer.number + 100;
    let newest_der = mesh_ca
        .sign_crl(
            &newer.entries,
            newest,
            t,
            t.saturating_add(Duration::from_secs(3600)),
        )
        .unwrap();
    assert!(push("application/pkix-crl", newest_der)
        .assert_status(204)
        .body
        .is_empty());
    assert_eq!(node_status(&own)["crl_number"], newest);

    // Over the push route's 1 MiB limit; the wrong method.
    pusher
        .send_oversized(|| {
            pusher
                .client
                .post(pusher.url("/v1/crl"))
                .header("content-type", "application/pkix-crl")
                .body(vec![0x30; NODE_MAX_CRL_BYTES + 1])
        })
        .assert_error(413, "body_too_large");
    pusher
        .get("/v1/crl")
        .assert_error(405, "method_not_allowed");

    // The node's other routes still answer with JSON errors, and it is alive.
    pusher
        .get("/v1/status")
        .assert_error(401, "client_certificate_required");
    pusher.get("/v1/nope").assert_error(404, "not_found");
    node.proc.as_mut().unwrap().assert_running();
    assert_eq!(node_status(&own)["node_id"], node.node_id.as_str());
}

#[test]
fn attest_issues_a_token_only_for_bound_fresh_evidence_and_answers_garbage_with_json_errors() {
    use ztmesh_attest::token::{AttestationToken, TokenPolicy};
    let root = tempdir();
    // A release key and a manifest listing one binary hash and one dev measurement.
    let key_path = root.path().join("release.key");
    let release_key = ztmesh_ok(&[
        "manifest",
        "keygen",
        "--out",
        key_path.to_str().unwrap(),
        "--insecure-plaintext-key",
    ])
    .trim()
    .to_owned();
    let binary = root.path().join("some-binary");
    std::fs::write(&binary, b"a release build").unwrap();
    let binary_hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(b"a release build").into();
    let measurement = [0x4d; 32];
    let manifest = root.path().join("manifest.cose");
    ztmesh_ok(&[
        "manifest",
        "sign",
        "--key",
        key_path.to_str().unwrap(),
        "--insecure-plaintext-key",
        "--version",
        "7.0.0",
        "--binary",
        binary.to_str().unwrap(),
        "--measurement",
        &format!("dev:measurement={}", hex::encode(measurement)),
        "--not-after",
        "1d",
        "-o",
        manifest.to_str().unwrap(),
    ]);
    let tee = ed25519_dalek::SigningKey::from_bytes(&[0x7e; 32]);
    let tee_public = hex::encode(tee.verifying_key().as_bytes());
    let mut args = NO_RATE_LIMIT.to_vec();
    args.extend_from_slice(&[
        "--allow-dev-attestation",
        "--dev-tee-key",
        &tee_public,
        "--release-key",
        &release_key,
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    let ca = TestCa::start(root.path(), &args);
    let node = ca.enroll(root.path(), "n1");
    let creds = NodeCreds::read(&node);
    let tls_spki = ztmesh_pki::NodeCertificate::parse(&creds.cert_der)
        .unwrap()
        .tls_public_key_spki_der;
    let http = Http::ca_with_cert(&ca, &creds.cert_der, &creds.tls_key);
    let evidence = |nonce: &[u8], spki: &[u8], measured: [u8; 32]| -> String {
        let report_data = ztmesh_attest::report_data_binding(nonce, spki);
        let evidence =
            ztmesh_attest::dev::generate(&tee, &measured, &report_data, now().as_unix_secs());
        b64(&ztmesh_attest::policy::AttestationPayload {
            evidence,
            collateral: None,
        }
        .to_cbor())
    };
    let request = |nonce: &str, payload: &str, binary: [u8; 32]| {
        json!({
            "nonce": nonce,
            "attestation": {"type": "dev", "payload": payload},
            "binary_sha256": hex::encode(binary),
        })
    };

    // Without a client certificate: 401 on both routes.
    Http::ca(&ca)
        .post_json("/v1/attest/challenge", &json!({}))
        .assert_error(401, "client_certificate_required");
    Http::ca(&ca)
        .post_json("/v1/attest", &request("00", "", binary_hash))
        .assert_error(401, "client_certificate_required");
    // No challenge yet.
    http.post_json(
        "/v1/attest",
        &request(
            &hex::encode([1; 32]),
            &evidence(&[1; 32], &tls_spki, measurement),
            binary_hash,
        ),
    )
    .assert_error(403, "unknown_nonce");

    let challenge = || -> Vec<u8> {
        let reply = http.post_raw("/v1/attest/challenge", None, Vec::new());
        reply.assert_status(200);
        hex::decode(reply.json()["nonce"].as_str().unwrap()).unwrap()
    };
    let nonce = challenge();
    assert_eq!(nonce.len(), 32);
    let nonce_hex = hex::encode(&nonce);
    let good = evidence(&nonce, &tls_spki, measurement);
    // Garbage is a 400 with a code, and leaves the challenge standing.
    http.post_json("/v1/attest", &request("zz", &good, binary_hash))
        .assert_error(400, "malformed_nonce");
    let mut bad = request(&nonce_hex, &good, binary_hash);
    bad["binary_sha256"] = json!("abc");
    http.post_json("/v1/attest", &bad)
        .assert_error(400, "malformed_binary_hash");
    let mut bad = request(&nonce_hex, &good, binary_hash);
    bad["attestation"]["type"] = json!("quantum");
    http.post_json("/v1/attest", &bad)
        .assert_error(400, "malformed_attestation");
    http.post_json("/v1/attest", &request(&nonce_hex, "%%%", binary_hash))
        .assert_error(400, "malformed_attestation");
    http.post_json(
        "/v1/attest",
        &request(&nonce_hex, &b64(b"not cbor"), binary_hash),
    )
    .assert_error(400, "malformed_attestation");
    let mut bad = request(&nonce_hex, &good, binary_hash);
    bad["extra"] = json!(1);
    assert_eq!(http.post_json("/v1/attest", &bad).status, 400);
    http.post_raw("/v1/attest", Some("application/json"), b"{".to_vec())
        .assert_status(400);

    // The bound evidence earns a token naming the node's identity key.
    let reply = http.post_json("/v1/attest", &request(&nonce_hex, &good, binary_hash));
    reply.assert_status(200);
    let answer = reply.json();
    assert_eq!(answer["platform"], "dev");
    assert_eq!(answer["manifest_version"], "7.0.0");
    let token = base64::engine::general_purpose::STANDARD
        .decode(answer["token"].as_str().unwrap())
        .unwrap();
    let issuer = ztmesh_pki::ca_envelope_key(&ca.ca_der()).unwrap();
    let listed = ztmesh_attest::manifest::SignedManifest::open(
        &std::fs::read(&manifest).unwrap(),
        &ztmesh_attest::manifest::parse_release_key(&release_key).unwrap(),
        now().as_unix_secs(),
    )
    .unwrap();
    let platforms = [ztmesh_attest::EvidenceType::Dev].into_iter().collect();
    let opened = AttestationToken::verify(
        &token,
        &issuer.verifying_key(),
        &TokenPolicy {
            manifest: Some(&listed),
            max_age: Duration::from_secs(3600),
            platforms: &platforms,
            subject: Some(&creds.identity.public().to_spki_der()),
        },
        now().as_unix_secs(),
    )
    .unwrap();
    assert_eq!(opened.binary_hash, binary_hash);
    // The nonce is spent.
    http.post_json("/v1/attest", &request(&nonce_hex, &good, binary_hash))
        .assert_error(403, "unknown_nonce");

    // Each way evidence can fail is a 403 with its code.
    let nonce = challenge();
    http.post_json(
        "/v1/attest",
        &request(
            &hex::encode(&nonce),
            &evidence(&nonce, b"another TLS key", measurement),
            binary_hash,
        ),
    )
    .assert_error(403, "attestation_refused");
    let nonce = challenge();
    http.post_json(
        "/v1/attest",
        &request(
            &hex::encode(&nonce),
            &evidence(&nonce, &tls_spki, [0; 32]),
            binary_hash,
        ),
    )
    .assert_error(403, "attestation_refused");
    let nonce = challenge();
    http.post_json(
        "/v1/attest",
        &request(
            &hex::encode(&nonce),
            &evidence(&nonce, &tls_spki, measurement),
            [0xee; 32],
        ),
    )
    .assert_error(403, "binary_not_approved");

    // A CA without a manifest issues no tokens.
    let plain_root = root.path().join("plain");
    let plain = start_ca(&plain_root);
    let plain_node = NodeCreds::read(&plain.enroll(&plain_root, "n2"));
    Http::ca_with_cert(&plain, &plain_node.cert_der, &plain_node.tls_key)
        .post_raw("/v1/attest/challenge", None, Vec::new())
        .assert_error(503, "no_manifest");
}

#[test]
fn log_events_record_reports_once_and_answer_garbage_with_json_errors() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let node = ca.enroll(root.path(), "n1");
    let creds = NodeCreds::read(&node);
    let http = Http::ca_with_cert(&ca, &creds.cert_der, &creds.tls_key);
    let decision = json!({
        "kind": "governance_decision",
        "proposal": "ab".repeat(32),
        "param": "gossip_fanout",
        "value": 2,
    });
    Http::ca(&ca)
        .post_json("/v1/log/events", &decision)
        .assert_error(401, "client_certificate_required");

    // Recorded once: the same report again appends nothing.
    let first = http.post_json("/v1/log/events", &decision);
    first.assert_status(200);
    assert!(first.json()["index"].as_u64().is_some(), "{}", first.text());
    let again = http.post_json("/v1/log/events", &decision);
    again.assert_status(200);
    assert!(again.json()["index"].is_null(), "{}", again.text());
    let tier = json!({
        "kind": "tier_change",
        "node_id": creds.node_id.to_string(),
        "tier": "tier 2",
        "reason": "valid certificate; no hardware attestation",
    });
    assert!(http.post_json("/v1/log/events", &tier).json()["index"]
        .as_u64()
        .is_some());

    // Garbage: each a 400 with a JSON code, nothing appended.
    let mut bad = Vec::new();
    bad.push(json!({"kind": "coup", "param": "gossip_fanout"}));
    let mut v = decision.clone();
    v["value"] = json!(999);
    bad.push(v);
    let mut v = decision.clone();
    v["param"] = json!("warp_speed");
    bad.push(v);
    let mut v = decision.clone();
    v["proposal"] = json!("xyz");
    bad.push(v);
    let mut v = decision.clone();
    v["extra"] = json!(true);
    bad.push(v);
    let mut v = tier.clone();
    v["node_id"] = json!("not-a-node");
    bad.push(v);
    let mut v = tier.clone();
    v["tier"] = json!("tier 0");
    bad.push(v);
    let mut v = tier.clone();
    v["reason"] = json!("line\nbreak");
    bad.push(v);
    let mut v = tier.clone();
    v["reason"] = json!("r".repeat(201));
    bad.push(v);
    for body in &bad {
        let reply = http.post_json("/v1/log/events", body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert!(reply.error_code().is_some(), "{body}: {}", reply.text());
    }
    http.post_raw("/v1/log/events", Some("application/json"), b"{".to_vec())
        .assert_status(400);
    let shown: Value = serde_json::from_str(&ztmesh_ok(&[
        "log",
        "show",
        "--ca-dir",
        ca.dir.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let events: Vec<&Value> = shown["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.get("event"))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["reporter"], creds.node_id.to_string());

    // The CA's manifest flags refuse what they cannot use, before serving.
    let out = ztmesh_with_env(
        &[
            "ca",
            "serve",
            "--data-dir",
            ca.dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--release-key",
            "zz",
            "--manifest",
            "/nonexistent/manifest.cose",
        ],
        &[],
    );
    assert_cli_fails(&out, &["--release-key"]);
    let out = ztmesh_with_env(
        &[
            "ca",
            "serve",
            "--data-dir",
            ca.dir.to_str().unwrap(),
            "--manifest",
            "x",
        ],
        &[],
    );
    assert!(!out.status.success());
}

/// Issue 12, "route order": every authenticated route checks the credential before it parses
/// the body, so a caller without one gets 401 (and learns nothing of the schema), never 400.
#[test]
fn authenticated_routes_answer_401_before_parsing_a_garbage_body() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let mut node = ca.enroll(root.path(), "node");
    node.start();
    let ca_http = Http::ca(&ca);
    let node_http = Http::node(&ca, &node, None);
    let garbage: [(Option<&str>, &[u8]); 3] = [
        (Some("application/json"), b"{\"not json"),
        (Some("application/json"), b"{\"unknown_field\": 1}"),
        (Some("text/plain"), b"\x00\xff garbage"),
    ];
    let routes = [
        (&ca_http, "/v1/revoke", "admin_credential_required"),
        (&ca_http, "/v1/tokens", "admin_credential_required"),
        (&ca_http, "/v1/rotate", "client_certificate_required"),
        (&ca_http, "/v1/announce", "client_certificate_required"),
        (&ca_http, "/v1/attest", "client_certificate_required"),
        (&ca_http, "/v1/log/events", "client_certificate_required"),
        (&node_http, "/v1/anomalies", "api_token_required"),
        (&node_http, "/v1/governance/proposals", "api_token_required"),
        (&node_http, "/v1/governance/votes", "api_token_required"),
        (
            &node_http,
            "/v1/log/alarm/acknowledge",
            "api_token_required",
        ),
        (&node_http, "/v1/bundles", "api_token_required"),
        (&node_http, "/v1/deny", "api_token_required"),
        (&node_http, "/v1/mesh/gossip", "client_certificate_required"),
    ];
    for (http, path, code) in routes {
        for (content_type, body) in garbage {
            let reply = http.post_raw(path, content_type, body.to_vec());
            assert_eq!(
                reply.status,
                401,
                "{path} with {content_type:?} {:?}: {}",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&reply.body)
            );
            reply.assert_error(401, code);
        }
    }
    // A wrong token on a node route is still refused before the body is looked at.
    let reply = node_http.send(
        node_http
            .client
            .post(node_http.url("/v1/anomalies"))
            .bearer_auth("ztl1_wrong")
            .header("content-type", "application/json")
            .body("{\"not json"),
    );
    reply.assert_error(401, "invalid_api_token");
}

/// Issue 12, "failed credentials": wrong admin credentials and wrong `api.token`s are counted,
/// logged with the address, and an address that presented 10 is refused with 429 (a JSON
/// body), right credential or not, while an honest client on another address goes on.
#[test]
fn failed_credentials_are_counted_logged_and_limited_per_address() {
    let root = tempdir();
    let ca = start_ca(root.path());
    let mut node = ca.enroll(root.path(), "node");
    node.start();
    let admin = ca.admin_token();
    let from = |ip: [u8; 4], base: &str, config: rustls::ClientConfig| {
        let local = std::net::IpAddr::from(ip);
        Http::with_builder(base, config, TIMEOUT, move |b| {
            b.pool_max_idle_per_host(0).local_address(local)
        })
    };
    let ca_config = || ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), None).unwrap();
    let attacker = from([127, 0, 0, 1], &ca.url, ca_config());
    let honest = from([127, 0, 0, 2], &ca.url, ca_config());
    let mint = |http: &Http, credential: &str| {
        http.post_admin("/v1/tokens", credential, &json!({"ttl_sec": 60}))
    };
    for _ in 0..10 {
        mint(&attacker, "ztadm_guess").assert_error(403, "bad_admin_credential");
    }
    mint(&attacker, "ztadm_guess").assert_error(429, "too_many_failed_credentials");
    // Locked out: even the right credential is not compared from that address.
    mint(&attacker, &admin).assert_error(429, "too_many_failed_credentials");
    mint(&honest, &admin).assert_status(201);
    let ca_log = strip_ansi(&ca.proc.as_ref().unwrap().log_text());
    assert!(
        ca_log.contains("failed_admin_credentials=10") && ca_log.contains("127.0.0.1"),
        "{ca_log}"
    );

    let node_config = || {
        let trust = Arc::new(MeshTrust::new(ca.ca_der(), trust_domain()));
        ztmesh_runtime::tls::node_api_client_config(trust, None).unwrap()
    };
    let node_url = format!("https://{}", node.api_addr());
    let attacker = from([127, 0, 0, 1], &node_url, node_config());
    let honest = from([127, 0, 0, 2], &node_url, node_config());
    let token = std::fs::read_to_string(node.dir.join("api.token"))
        .unwrap()
        .trim()
        .to_owned();
    let list = |http: &Http, token: &str| {
        http.send(
            http.client
                .get(http.url("/v1/anomalies"))
                .bearer_auth(token),
        )
    };
    for _ in 0..10 {
        list(&attacker, "ztl1_guess").assert_error(401, "invalid_api_token");
    }
    list(&attacker, "ztl1_guess").assert_error(429, "too_many_failed_credentials");
    list(&attacker, &token).assert_error(429, "too_many_failed_credentials");
    list(&honest, &token).assert_status(200);
    // Missing tokens guess nothing and are not counted.
    list_without_token(&honest).assert_error(401, "api_token_required");
    assert_eq!(node.status()["status"]["failed_api_tokens"], 10);
    let node_log = strip_ansi(&node.proc.as_ref().unwrap().log_text());
    assert!(node_log.contains("failed_api_tokens=10"), "{node_log}");

    fn list_without_token(http: &Http) -> Reply {
        http.send(http.client.get(http.url("/v1/anomalies")))
    }
}
