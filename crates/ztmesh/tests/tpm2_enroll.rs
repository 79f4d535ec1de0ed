//! TPM 2.0 credential activation at enrollment, end to end: a real `ztmesh ca serve` and real
//! software TPMs (swtpm) driven with tpm2-tools, the way a node with a TPM enrolls.
//!
//! The node sends its EK and AK public areas to `POST /v1/enroll/tpm2/credential`, its TPM
//! recovers the secret with TPM2_ActivateCredential, and it enrolls with a quote by the AK over
//! `enrollment_report_data(token, CSR TLS key)` plus that secret. The CA then registers the AK
//! for the node, and `POST /v1/attest` trusts that node's quotes signed with it.
//!
//! Skipped with a printed reason when swtpm or tpm2-tools are missing, except under `CI`,
//! where a missing tool fails the test.

mod common;
#[path = "../../ztmesh-attest/tests/swtpm/mod.rs"]
mod swtpm;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};
use sha2::Digest;
use swtpm::{tools_present, SoftwareTpm};
use ztmesh_attest::policy::{enrollment_report_data, AttestationPayload};
use ztmesh_attest::tpm2::{AttestationKey, Tpm2Evidence};
use ztmesh_attest::tpm2_credential::EndorsementKey;
use ztmesh_pki::{EnrollmentToken, IdentityKey, IdentityProofDomain, TlsKeyPair};
use ztmesh_runtime::api_types::{
    AttestChallengeResponse, AttestRequest, Attestation, EnrollRequest, Tpm2CredentialRequest,
    Tpm2CredentialResponse,
};
use ztmesh_runtime::tls::CurrentCertificate;

const TOOLS: &[&str] = &[
    "swtpm",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_readpublic",
    "tpm2_activatecredential",
    "tpm2_startauthsession",
    "tpm2_policysecret",
    "tpm2_quote",
    "tpm2_flushcontext",
];

const CREDENTIAL_ROUTE: &str = "/v1/enroll/tpm2/credential";

/// `ca serve` arguments that keep the rate limit out of the way.
const NO_RATE_LIMIT: &[&str] = &[
    "--rate-limit-rpm",
    "1000000",
    "--rate-limit-burst",
    "1000000",
];

/// Generous deadline for anything on a shared 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The PCRs every quote covers; a fresh swtpm has all of them zero, which is what the release
/// manifest of these tests lists for `tpm2`.
const QUOTED_PCRS: &str = "sha256:0,7";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The node's TPM, through tpm2-tools
// ---------------------------------------------------------------------------------------------

/// One swtpm with an ECC EK (`ek.ctx`) and an ECDSA P-256 AK (`ak.ctx`) under it.
struct NodeTpm {
    tpm: SoftwareTpm,
    /// The EK's TPM2B_PUBLIC (`tpm2_createek -u`).
    ek_public: Vec<u8>,
    /// The AK's TPM2B_PUBLIC (`tpm2_createak -u`).
    ak_public: Vec<u8>,
    /// The AK as PEM (`tpm2_readpublic -f pem`): the collateral of tpm2 evidence.
    ak_pem: Vec<u8>,
}

impl NodeTpm {
    fn start() -> NodeTpm {
        let tpm = SoftwareTpm::start();
        tpm.run(
            "tpm2_createek",
            &["-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"],
        );
        tpm.run(
            "tpm2_createak",
            &[
                "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
                "ak.pub", "-n", "ak.name",
            ],
        );
        tpm.run(
            "tpm2_readpublic",
            &["-c", "ak.ctx", "-f", "pem", "-o", "ak.pem"],
        );
        NodeTpm {
            ek_public: tpm.read("ek.pub"),
            ak_public: tpm.read("ak.pub"),
            ak_pem: tpm.read("ak.pem"),
            tpm,
        }
    }

    fn attestation_key(&self) -> AttestationKey {
        AttestationKey::from_pem(std::str::from_utf8(&self.ak_pem).unwrap()).unwrap()
    }

    /// The EK name, hex, as the CA computes it.
    fn ek_name_hex(&self) -> String {
        EndorsementKey::from_tpm2b_public(&self.ek_public)
            .unwrap()
            .public_area()
            .name()
            .to_hex()
    }

    /// TPM2_ActivateCredential of `credential` (a tpm2-tools credential file) with `ak.ctx` and
    /// `ek.ctx`, authorised by the endorsement hierarchy as the EK policy requires: the
    /// recovered secret, or tpm2-tools' complaint.
    fn activate(&self, credential: &[u8]) -> Result<Vec<u8>, String> {
        self.tpm.write("credential.out", credential);
        self.tpm.run(
            "tpm2_startauthsession",
            &["--policy-session", "-S", "session.ctx"],
        );
        self.tpm
            .run("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"]);
        let _ = std::fs::remove_file(self.tpm.path("secret.bin"));
        let activated = self.tpm.try_run(
            "tpm2_activatecredential",
            &[
                "-c",
                "ak.ctx",
                "-C",
                "ek.ctx",
                "-i",
                "credential.out",
                "-o",
                "secret.bin",
                "-P",
                "session:session.ctx",
            ],
        );
        // Whether or not it worked, the session must go: a TPM has few session slots.
        let _ = self.tpm.command("tpm2_flushcontext", &["session.ctx"]);
        activated.map(|_| self.tpm.read("secret.bin"))
    }

    /// A quote by the AK over [`QUOTED_PCRS`] with `qualifying_data`, as the CBOR `tpm2`
    /// evidence, wrapped with the AK PEM as collateral in an `attestation` object.
    fn quote(&self, qualifying_data: &[u8; 64]) -> Attestation {
        self.tpm.run(
            "tpm2_quote",
            &[
                "-c",
                "ak.ctx",
                "-l",
                QUOTED_PCRS,
                "-q",
                &hex::encode(qualifying_data),
                "-g",
                "sha256",
                "--scheme",
                "ecdsa",
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-o",
                "pcrs.out",
                "-F",
                "values",
            ],
        );
        let evidence = Tpm2Evidence::from_quote_outputs(
            &self.tpm.read("quote.msg"),
            &self.tpm.read("quote.sig"),
            &self.attestation_key().to_spki_der(),
            &self.tpm.read("pcrs.out"),
        )
        .unwrap();
        let payload = AttestationPayload {
            evidence: evidence.encode(),
            collateral: Some(self.ak_pem.clone()),
        };
        Attestation {
            kind: "tpm2".into(),
            payload: b64(&payload.to_cbor()),
        }
    }

    /// The credential request for `token` with this TPM's EK and AK.
    fn credential_request(&self, token: &str) -> Value {
        serde_json::to_value(Tpm2CredentialRequest {
            token: token.into(),
            ek_public: b64(&self.ek_public),
            ak_public: b64(&self.ak_public),
        })
        .unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// One HTTP answer, fully read.
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} answer is not JSON ({e}): {}", self.status, self.text()))
    }

    #[track_caller]
    fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text());
        self
    }

    /// Asserts a JSON error answer with this status and code; returns its message.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) -> String {
        assert!(
            self.content_type.starts_with("application/json"),
            "error answer with content type {:?}: {}",
            self.content_type,
            self.text()
        );
        let body = self.json();
        assert_eq!(
            (self.status, body["error"].as_str()),
            (status, Some(code)),
            "unexpected answer: {}",
            self.text()
        );
        body["message"].as_str().unwrap().to_owned()
    }
}

/// A blocking HTTPS client of the CA: its own tokio runtime and a reqwest client trusting
/// only the CA certificate, presenting a node certificate or none.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(ca: &TestCa, client_certificate: Option<(&[u8], &TlsKeyPair)>) -> Http {
        let current = client_certificate.map(|(cert_der, key)| {
            Arc::new(CurrentCertificate::new(vec![cert_der.to_vec()], &key.to_pkcs8_der()).unwrap())
        });
        let config = ztmesh_runtime::tls::ca_client_config(&ca.ca_der(), current).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
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
            base: ca.url.clone(),
        }
    }

    #[track_caller]
    fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        self.rt
            .block_on(async {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = response.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>(Reply {
                    status,
                    content_type,
                    body,
                })
            })
            .unwrap_or_else(|e| panic!("request failed: {e:?}"))
    }

    #[track_caller]
    fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.client.post(format!("{}{path}", self.base)).json(body))
    }

    #[track_caller]
    fn post_raw(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_vec());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        self.send(request)
    }

    #[track_caller]
    fn mint_token(&self, ca: &TestCa) -> String {
        let reply = self.send(
            self.client
                .post(format!("{}/v1/tokens", self.base))
                .bearer_auth(ca.admin_token())
                .json(&json!({})),
        );
        reply.assert_status(201);
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    /// Asks for a credential; must succeed.
    #[track_caller]
    fn credential(&self, request: &Value) -> Tpm2CredentialResponse {
        let reply = self.post_json(CREDENTIAL_ROUTE, request);
        reply.assert_status(200);
        serde_json::from_slice(&reply.body).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// The enrolling node
// ---------------------------------------------------------------------------------------------

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
            .csr_der(
                &identity.public().node_id(),
                &"test.ztmesh".parse().unwrap(),
            )
            .unwrap();
        Enrollee {
            identity,
            tls_key,
            csr,
        }
    }

    fn node_id(&self) -> String {
        self.identity.public().node_id().to_string()
    }

    /// What the evidence must carry: `enrollment_report_data(token, CSR TLS key)`.
    fn report_data(&self, token: &str) -> [u8; 64] {
        enrollment_report_data(
            &EnrollmentToken::parse(token).unwrap().hash().0,
            &self.tls_key.public_key_spki_der(),
        )
    }

    /// A `POST /v1/enroll` body.
    fn request(
        &self,
        token: &str,
        attestation: Option<Attestation>,
        credential_secret: Option<String>,
    ) -> Value {
        serde_json::to_value(EnrollRequest {
            token: token.into(),
            csr: b64(&self.csr),
            identity_key: b64(&self.identity.public().to_spki_der()),
            identity_proof: b64(&self
                .identity
                .sign_proof(IdentityProofDomain::EnrollCsr, &self.csr)),
            node_id: Some(self.node_id()),
            attestation,
            tpm2_credential_secret: credential_secret,
        })
        .unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------------

/// A release key and a manifest allowing the binary under test with all-zero PCRs 0 and 7
/// (a fresh swtpm) for `tpm2`: what `POST /v1/attest` judges against.
fn tpm2_release(root: &Path) -> (String, std::path::PathBuf) {
    let zero = hex::encode([0u8; 32]);
    sign_release(
        root,
        "1.0.0",
        &[&format!("tpm2:pcr0={zero}"), &format!("tpm2:pcr7={zero}")],
    )
}

/// A CA allowing `allowed`'s EK (`--tpm2-endorsement-key`), with a release manifest for the
/// token desk.
fn start_ca(root: &Path, allowed: &NodeTpm) -> TestCa {
    let ek_file = root.join("allowed-ek.pub");
    std::fs::write(&ek_file, &allowed.ek_public).unwrap();
    let (release_key, manifest) = tpm2_release(root);
    let mut args = NO_RATE_LIMIT.to_vec();
    args.extend([
        "--tpm2-endorsement-key",
        path_str(&ek_file),
        "--release-key",
        &release_key,
        "--manifest",
        path_str(&manifest),
    ]);
    TestCa::start(root, &args)
}

/// The rows of the CA's `tpm2_attestation_keys` table: (node_id, ak_pem, ek_name).
fn registered_keys(ca: &TestCa) -> Vec<(String, String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        ca.dir.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement = db
        .prepare("SELECT node_id, ak_pem, ek_name FROM tpm2_attestation_keys ORDER BY node_id")
        .unwrap();
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

/// The `(not_activated)` refusal of tpm2 evidence whose AK the CA neither was given nor saw
/// activated; returns its message.
#[track_caller]
fn assert_not_activated(reply: &Reply) -> String {
    let message = reply.assert_error(403, "attestation_refused");
    assert!(
        message.contains("(not_activated)")
            && message.contains("not activated against an allowed endorsement key"),
        "{message}"
    );
    message
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn an_activated_tpm_key_enrolls_is_registered_and_attests() {
    if !tools_present(
        "an_activated_tpm_key_enrolls_is_registered_and_attests",
        TOOLS,
    ) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let node_tpm = NodeTpm::start();
    let ca = start_ca(root.path(), &node_tpm);
    let http = Http::new(&ca, None);
    let token = http.mint_token(&ca);
    let node = Enrollee::new();
    let evidence = node_tpm.quote(&node.report_data(&token));

    // Without a credential, the AK is trusted by nothing: tpm2 evidence and no secret.
    let message = assert_not_activated(&http.post_json(
        "/v1/enroll",
        &node.request(&token, Some(evidence.clone()), None),
    ));
    assert!(message.contains("tpm2_credential_secret"), "{message}");

    // The credential: only this TPM, with this AK loaded, recovers its secret.
    let answer = http.credential(&node_tpm.credential_request(&token));
    assert_eq!(answer.expires_in_secs, 300);
    let secret = node_tpm.activate(&unb64(&answer.credential)).unwrap();
    assert_eq!(secret.len(), 32);

    // A wrong secret is refused, and so is a secret that is not 64 hex digits.
    let mut wrong = secret.clone();
    wrong[0] ^= 1;
    let message = assert_not_activated(&http.post_json(
        "/v1/enroll",
        &node.request(&token, Some(evidence.clone()), Some(hex::encode(&wrong))),
    ));
    assert!(message.contains("secret"), "{message}");
    for malformed in [
        "",
        "00",
        "not hex at all",
        &format!("{}00", hex::encode(&secret)),
    ] {
        http.post_json(
            "/v1/enroll",
            &node.request(&token, Some(evidence.clone()), Some(malformed.to_owned())),
        )
        .assert_error(400, "malformed_credential_secret");
    }
    // The right secret with evidence bound to another TLS key is still refused by the quote
    // check: activation vouches for the key, not for the evidence.
    let other = Enrollee::new();
    let reply = http.post_json(
        "/v1/enroll",
        &node.request(
            &token,
            Some(node_tpm.quote(&other.report_data(&token))),
            Some(hex::encode(&secret)),
        ),
    );
    let message = reply.assert_error(403, "attestation_refused");
    assert!(message.contains("(wrong_nonce)"), "{message}");

    // None of the refusals spent the token or the credential: the right secret enrolls.
    let reply = http.post_json(
        "/v1/enroll",
        &node.request(&token, Some(evidence.clone()), Some(hex::encode(&secret))),
    );
    reply.assert_status(201);
    let enrolled = reply.json();
    assert_eq!(enrolled["node_id"], node.node_id());
    let cert_der = ztmesh_pki::cert_pem_to_der(enrolled["certificate"].as_str().unwrap()).unwrap();

    // The AK is registered for the node, under the EK it was activated against.
    let registered = registered_keys(&ca);
    assert_eq!(registered.len(), 1, "{registered:?}");
    let (node_id, ak_pem, ek_name) = &registered[0];
    assert_eq!(node_id, &node.node_id());
    assert_eq!(
        AttestationKey::from_pem(ak_pem).unwrap(),
        node_tpm.attestation_key()
    );
    assert_eq!(ek_name, &node_tpm.ek_name_hex());

    // The token is spent: no credential for it any more, no second enrollment.
    http.post_json(CREDENTIAL_ROUTE, &node_tpm.credential_request(&token))
        .assert_error(403, "token_used");
    http.post_json(
        "/v1/enroll",
        &Enrollee::new().request(&token, None, Some(hex::encode(&secret))),
    )
    .assert_error(403, "token_used");

    // The token desk trusts the registered AK for this node: a quote over its challenge
    // earns an attestation token.
    let binary_sha256 = hex::encode(sha2::Sha256::digest(std::fs::read(bin()).unwrap()));
    let attest = |client: &Http, tls_key: &TlsKeyPair| -> Reply {
        let reply = client.post_json("/v1/attest/challenge", &json!({}));
        reply.assert_status(200);
        let challenge: AttestChallengeResponse = serde_json::from_slice(&reply.body).unwrap();
        let nonce = hex::decode(&challenge.nonce).unwrap();
        let binding = ztmesh_attest::report_data_binding(&nonce, &tls_key.public_key_spki_der());
        let request = AttestRequest {
            nonce: challenge.nonce,
            attestation: node_tpm.quote(&binding),
            binary_sha256: binary_sha256.clone(),
        };
        client.post_json("/v1/attest", &serde_json::to_value(request).unwrap())
    };
    let as_node = Http::new(&ca, Some((&cert_der, &node.tls_key)));
    let reply = attest(&as_node, &node.tls_key);
    reply.assert_status(200);
    assert_eq!(reply.json()["platform"], "tpm2");

    // Another node, enrolled without a TPM, cannot attest with that AK: it is registered for
    // the first node only.
    let plain = Enrollee::new();
    let plain_token = http.mint_token(&ca);
    let reply = http.post_json("/v1/enroll", &plain.request(&plain_token, None, None));
    reply.assert_status(201);
    let plain_cert =
        ztmesh_pki::cert_pem_to_der(reply.json()["certificate"].as_str().unwrap()).unwrap();
    let as_plain = Http::new(&ca, Some((&plain_cert, &plain.tls_key)));
    let message = attest(&as_plain, &plain.tls_key).assert_error(403, "attestation_refused");
    assert!(message.contains("(bad_chain)"), "{message}");
    assert_eq!(registered_keys(&ca).len(), 1);
}

#[test]
fn only_the_tpm_holding_an_allowed_ek_and_the_named_ak_can_activate() {
    if !tools_present(
        "only_the_tpm_holding_an_allowed_ek_and_the_named_ak_can_activate",
        TOOLS,
    ) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let allowed = NodeTpm::start();
    let other = NodeTpm::start();
    let ca = start_ca(root.path(), &allowed);
    let http = Http::new(&ca, None);
    let token = http.mint_token(&ca);

    // Another TPM's EK is not allowed.
    let message = http
        .post_json(CREDENTIAL_ROUTE, &other.credential_request(&token))
        .assert_error(403, "endorsement_key_not_allowed");
    assert!(message.contains(&other.ek_name_hex()), "{message}");

    // The other TPM's AK presented with the allowed TPM's EK: the credential is sealed to the
    // allowed EK, so the TPM holding the AK cannot open it, and the allowed TPM has no object
    // of that name.
    let borrowed_ek = serde_json::to_value(Tpm2CredentialRequest {
        token: token.clone(),
        ek_public: b64(&allowed.ek_public),
        ak_public: b64(&other.ak_public),
    })
    .unwrap();
    let answer = http.credential(&borrowed_ek);
    let credential = unb64(&answer.credential);
    let complaint = other.activate(&credential).unwrap_err();
    assert!(!complaint.is_empty());
    let complaint = allowed.activate(&credential).unwrap_err();
    assert!(complaint.contains("integrity check failed"), "{complaint}");

    // Nor can the other TPM's quote enroll with a guessed secret.
    let node = Enrollee::new();
    let evidence = other.quote(&node.report_data(&token));
    assert_not_activated(&http.post_json(
        "/v1/enroll",
        &node.request(&token, Some(evidence.clone()), Some(hex::encode([7u8; 32]))),
    ));

    // A new request for the token replaces the pending credential: the allowed TPM's own AK
    // activates, but its secret does not vouch for the other TPM's AK.
    let answer = http.credential(&allowed.credential_request(&token));
    let secret = allowed.activate(&unb64(&answer.credential)).unwrap();
    let message = assert_not_activated(&http.post_json(
        "/v1/enroll",
        &node.request(&token, Some(evidence), Some(hex::encode(&secret))),
    ));
    assert!(message.contains("another attestation key"), "{message}");

    // The secret belongs to this token: another token's enrollment cannot use it.
    let second_token = http.mint_token(&ca);
    let second = Enrollee::new();
    assert_not_activated(&http.post_json(
        "/v1/enroll",
        &second.request(
            &second_token,
            Some(allowed.quote(&second.report_data(&second_token))),
            Some(hex::encode(&secret)),
        ),
    ));

    // The allowed TPM, with its own AK and the secret for this token, enrolls.
    http.post_json(
        "/v1/enroll",
        &node.request(
            &token,
            Some(allowed.quote(&node.report_data(&token))),
            Some(hex::encode(&secret)),
        ),
    )
    .assert_status(201);
    let registered = registered_keys(&ca);
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert_eq!(registered[0].0, node.node_id());
    assert_eq!(
        AttestationKey::from_pem(&registered[0].1).unwrap(),
        allowed.attestation_key()
    );
}

#[test]
fn the_credential_route_answers_typed_errors_to_garbage_and_bad_tokens() {
    if !tools_present(
        "the_credential_route_answers_typed_errors_to_garbage_and_bad_tokens",
        TOOLS,
    ) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let node_tpm = NodeTpm::start();
    let ca = start_ca(root.path(), &node_tpm);
    let http = Http::new(&ca, None);
    // Expiry needs wall-clock time to pass: mint first, check last.
    let short_lived = ca.token(&["--ttl", "1s"]);
    let minted = Instant::now();
    let token = http.mint_token(&ca);
    let valid = node_tpm.credential_request(&token);
    let with = |field: &str, value: Value| -> Value {
        let mut request = valid.clone();
        request[field] = value;
        request
    };

    // Bodies that are not a credential request.
    for body in [
        &b""[..],
        b"{",
        b"[]",
        b"null",
        b"\"token\"",
        b"{\"token\": 1}",
    ] {
        http.post_raw(CREDENTIAL_ROUTE, Some("application/json"), body)
            .assert_error(400, "malformed_body");
    }
    let mut missing = valid.clone();
    missing.as_object_mut().unwrap().remove("ak_public");
    let mut unknown = valid.clone();
    unknown["ek_certificate"] = json!("");
    for body in [missing, unknown, with("ek_public", json!(42))] {
        http.post_json(CREDENTIAL_ROUTE, &body)
            .assert_error(400, "malformed_body");
    }
    http.post_raw(CREDENTIAL_ROUTE, None, &serde_json::to_vec(&valid).unwrap())
        .assert_error(415, "unsupported_media_type");

    // Fields that do not parse.
    http.post_json(CREDENTIAL_ROUTE, &with("token", json!("ztm1_nope")))
        .assert_error(400, "malformed_token");
    let truncated = &node_tpm.ak_public[..node_tpm.ak_public.len() - 1];
    for (field, value, code) in [
        ("ek_public", "not base64!", "malformed_ek_public"),
        ("ek_public", "", "malformed_ek_public"),
        // An AK where the EK belongs: not a restricted decryption key.
        (
            "ek_public",
            &b64(&node_tpm.ak_public),
            "malformed_ek_public",
        ),
        ("ak_public", "not base64!", "malformed_ak_public"),
        ("ak_public", &b64(truncated), "malformed_ak_public"),
        // An EK where the AK belongs: not a restricted signing key.
        (
            "ak_public",
            &b64(&node_tpm.ek_public),
            "malformed_ak_public",
        ),
        ("ak_public", &b64(&[0xff; 2000]), "malformed_ak_public"),
    ] {
        let message = http
            .post_json(CREDENTIAL_ROUTE, &with(field, json!(value)))
            .assert_error(400, code);
        assert!(message.contains(field), "{field}: {message}");
    }

    // Tokens the CA does not know, or no longer accepts, get enrollment's codes.
    let unknown = EnrollmentToken::generate(&mut rand::rngs::OsRng);
    http.post_json(CREDENTIAL_ROUTE, &with("token", json!(unknown.as_str())))
        .assert_error(403, "unknown_token");

    // Asking (again and again) does not spend the token: each answer is a fresh credential
    // and the newest one activates.
    let first = http.credential(&valid);
    let second = http.credential(&valid);
    assert_ne!(first.credential, second.credential);
    node_tpm.activate(&unb64(&second.credential)).unwrap();

    let elapsed = minted.elapsed();
    if elapsed < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_secs(2) - elapsed);
    }
    http.post_json(CREDENTIAL_ROUTE, &with("token", json!(short_lived)))
        .assert_error(403, "token_expired");
}

/// Runs `ztmesh args` to completion (killed and failed after [`TIMEOUT`]).
fn ztmesh_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(bin())
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

#[test]
fn ca_serve_refuses_an_endorsement_key_file_that_is_not_one() {
    // No TPM needed: the files are written here.
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::init(root.path());
    let garbage = root.path().join("garbage.pub");
    std::fs::write(&garbage, b"not a TPM2B_PUBLIC").unwrap();
    // A real AK public area (swtpm fixture): well-formed, but not an endorsement key.
    let ak = root.path().join("ak.pub");
    std::fs::write(
        &ak,
        include_bytes!("../../ztmesh-attest/tests/fixtures/tpm2_credential/ak_ecc.pub"),
    )
    .unwrap();
    let missing = root.path().join("missing.pub");
    for (file, needle) in [
        (&garbage, "TPM2B_PUBLIC"),
        (
            &ak,
            "not a fixedTPM, fixedParent, restricted decryption key",
        ),
        (&missing, "missing.pub"),
    ] {
        let out = ztmesh_bounded(&[
            "ca",
            "serve",
            "--data-dir",
            path_str(&ca.dir),
            "--listen",
            "127.0.0.1:0",
            "--tpm2-endorsement-key",
            path_str(file),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file:?} accepted: {stderr}");
        assert!(
            stderr.contains("--tpm2-endorsement-key") && stderr.contains(needle),
            "{file:?}: {stderr}"
        );
    }
}
