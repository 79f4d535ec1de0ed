//! Client side of the CA API: enrollment (CA pinned by fingerprint, and the membership-log
//! policy with it), rotation, announcements, CRL fetches, membership-log checkpoints and
//! consistency proofs, and the admin calls behind `ztmesh token create` and `ztmesh revoke`.
//!
//! Enrollment can attach attestation evidence ([`EnrollAttestation`]); its report data must be
//! [`enrollment_report_data`] over the token and the fresh TLS key of the CSR. With a TPM
//! ([`EnrollAttestation::Tpm2`]) enrollment first proves the attestation key lives in the TPM:
//! the node sends its EK and AK public areas to `POST /v1/enroll/tpm2/credential`, activates
//! the credential the CA answers (only a TPM holding both keys can), and enrolls with the
//! recovered secret next to a quote carrying the enrollment binding.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::{IdentityKey, IdentityProofDomain, TlsKeyPair};

use crate::api_types::*;
use crate::node_dir::{NodeConfig, NodeDir, NodeDirError};
use crate::tls::CurrentCertificate;
use crate::tpm_device::{run_blocking, TpmDevice, TpmError};
use ztmesh_attest::policy::{enrollment_report_data, AttestationPayload};

/// Timeout of one CA request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest consistency-proof answer read (a proof has at most 64 hashes of 44 characters).
const MAX_PROOF_ANSWER: usize = 16 * 1024;

pub use crate::log_audit::MAX_ENTRIES_PER_FETCH;

/// Largest log-entries answer read: [`MAX_ENTRIES_PER_FETCH`] leaves of the largest size the
/// log accepts, in base64 with their JSON framing.
const MAX_ENTRIES_ANSWER: usize = 2 * 1024 * 1024;

/// Why a call to the CA failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The CA answered with an error status.
    #[error("the server refused ({status}): {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The error code of the JSON body.
        code: String,
        /// Its message.
        message: String,
    },
    /// The connection or TLS handshake failed (a pin mismatch shows up here).
    #[error("cannot reach {url}: {message}")]
    Transport {
        /// Which URL.
        url: String,
        /// What failed (the whole error chain).
        message: String,
    },
    /// The answer did not make sense (bad certificate, wrong CA, unparsable body).
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Local files.
    #[error(transparent)]
    Dir(#[from] NodeDirError),
    /// Local TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The node's state database.
    #[error("state database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The node's TPM.
    #[error("TPM: {0}")]
    Tpm(TpmError),
}

// Not `#[from]`: that would make the TPM error the source as well, and a printed chain would
// say it twice.
impl From<TpmError> for ClientError {
    fn from(error: TpmError) -> Self {
        ClientError::Tpm(error)
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// An HTTPS client with the given rustls config.
pub fn http_client(config: rustls::ClientConfig) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| ClientError::Protocol(chain(&e)))
}

/// Sends a request and decodes a JSON answer, turning error statuses into [`ClientError::Refused`].
pub async fn send_json<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<T, ClientError> {
    let response = send(request, url).await?;
    response
        .json::<T>()
        .await
        .map_err(|e| ClientError::Protocol(chain(&e)))
}

/// Sends a request, turning error statuses into [`ClientError::Refused`].
pub async fn send(
    request: reqwest::RequestBuilder,
    url: &str,
) -> Result<reqwest::Response, ClientError> {
    let response = request.send().await.map_err(|e| ClientError::Transport {
        url: url.to_owned(),
        message: chain(&e),
    })?;
    let status = response.status();
    if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(response);
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    Err(ClientError::Refused {
        status: status.as_u16(),
        code: body["error"].as_str().unwrap_or("unknown").to_owned(),
        message: body["message"].as_str().unwrap_or("").to_owned(),
    })
}

/// Reads an answer body of at most `max` bytes; a longer one is refused before it is all read.
async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
    url: &str,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::Protocol(format!("{url}: answer larger than {max} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ClientError::Transport {
        url: url.to_owned(),
        message: chain(&e),
    })? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `GET` a text answer of at most `max` bytes; `None` on 404.
async fn get_text_or_none(
    client: &reqwest::Client,
    url: &str,
    max: usize,
) -> Result<Option<String>, ClientError> {
    let response = match send(client.get(url), url).await {
        Ok(response) => response,
        Err(ClientError::Refused { status: 404, .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let bytes = read_limited(response, max, url).await?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ClientError::Protocol(format!("{url}: answer is not UTF-8")))
}

/// What `ztmesh enroll` did.
#[derive(Debug, Clone)]
pub struct EnrollOutcome {
    /// The config written to `node.toml`.
    pub config: NodeConfig,
    /// Serial of the first certificate.
    pub serial: String,
    /// Its expiry (RFC 3339).
    pub valid_not_after: String,
}

/// Options of `ztmesh enroll`.
pub struct EnrollOptions<'a> {
    /// CA base URL (`https://host:port`).
    pub ca_url: &'a str,
    /// Pinned SHA-256 fingerprint of the CA certificate (any accepted notation).
    pub ca_fingerprint: &'a str,
    /// The one-time token.
    pub token: &'a str,
    /// How keys are sealed.
    pub protection: Protection<'a>,
    /// Mesh listener for `node.toml`.
    pub listen: std::net::SocketAddr,
    /// API listener for `node.toml`.
    pub api_listen: std::net::SocketAddr,
}

/// Attestation evidence to attach to an enrollment.
pub enum EnrollAttestation {
    /// The simulated TEE, for demos: `dev` evidence signed with this dev TEE key over the
    /// enrollment binding at the moment of the request. The CA accepts it only when its policy
    /// trusts the matching public key.
    Dev {
        /// The dev TEE signing key.
        tee_key: Box<ed25519_dalek::SigningKey>,
        /// The measurement the simulated TEE reports (e.g. SHA-256 of the binary).
        measurement: [u8; 32],
    },
    /// Evidence a real TEE produced through its driver. Its report data must already be
    /// [`enrollment_report_data`] for the token and the CSR's TLS key, or the CA refuses it
    /// (`wrong_nonce`).
    Prepared {
        /// What kind of evidence it is.
        evidence_type: ztmesh_attest::EvidenceType,
        /// The evidence and its collateral.
        payload: AttestationPayload,
    },
    /// This TPM: an EK (reused or persisted) and a fresh AK, the AK proven by credential
    /// activation, a quote with the enrollment binding. `node.toml` then names the TPM as the
    /// node's `tpm2` attester.
    Tpm2 {
        /// The TPM; its work directories go inside the node directory.
        device: TpmDevice,
    },
}

impl std::fmt::Debug for EnrollAttestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the dev TEE key.
        match self {
            EnrollAttestation::Dev { .. } => f.write_str("EnrollAttestation::Dev"),
            EnrollAttestation::Prepared { evidence_type, .. } => {
                write!(f, "EnrollAttestation::Prepared({})", evidence_type.as_str())
            }
            EnrollAttestation::Tpm2 { device } => {
                write!(f, "EnrollAttestation::Tpm2({})", device.tcti())
            }
        }
    }
}

/// Largest credential answer accepted: base64 of the largest credential file.
const MAX_CREDENTIAL_BASE64: usize =
    ztmesh_attest::tpm2_credential::MAX_CREDENTIAL_FILE_LEN * 4 / 3 + 4;

impl EnrollAttestation {
    /// The `attestation` field of the request for `report_data`, and for a TPM the activated
    /// credential secret (hex). `client` reaches the CA at `base`; `token` is the enrollment
    /// token, checked by the credential route but not spent.
    async fn to_request(
        &self,
        client: &reqwest::Client,
        base: &str,
        token: &str,
        report_data: &[u8; 64],
    ) -> Result<(Attestation, Option<String>), ClientError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let (evidence_type, payload, secret) = match self {
            EnrollAttestation::Dev {
                tee_key,
                measurement,
            } => (
                ztmesh_attest::EvidenceType::Dev,
                AttestationPayload {
                    evidence: ztmesh_attest::dev::generate(
                        tee_key,
                        measurement,
                        report_data,
                        crate::timefmt::now().as_unix_secs(),
                    ),
                    collateral: None,
                },
                None,
            ),
            EnrollAttestation::Prepared {
                evidence_type,
                payload,
            } => (*evidence_type, payload.clone(), None),
            EnrollAttestation::Tpm2 { device } => {
                let (payload, secret) =
                    tpm2_credential_exchange(client, base, token, device, *report_data).await?;
                (ztmesh_attest::EvidenceType::Tpm2, payload, Some(secret))
            }
        };
        Ok((
            Attestation {
                kind: evidence_type.as_str().to_owned(),
                payload: b64.encode(payload.to_cbor()),
            },
            secret,
        ))
    }
}

/// The TPM side of enrollment: EK and a fresh AK, the CA's credential for them activated, and a
/// quote over `report_data`. Answers the quote and the secret (hex).
async fn tpm2_credential_exchange(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    device: &TpmDevice,
    report_data: [u8; 64],
) -> Result<(AttestationPayload, String), ClientError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let keys = device.clone();
    let (ek_public, ak_public) = run_blocking(move || {
        let ek_public = keys.endorsement_key()?;
        let ak_public = keys.create_attestation_key()?;
        Ok((ek_public, ak_public))
    })
    .await?;
    let request = Tpm2CredentialRequest {
        token: token.trim().to_owned(),
        ek_public: b64.encode(&ek_public),
        ak_public: b64.encode(&ak_public),
    };
    let url = format!("{base}/v1/enroll/tpm2/credential");
    let answer: Tpm2CredentialResponse = send_json(client.post(&url).json(&request), &url).await?;
    if answer.credential.len() > MAX_CREDENTIAL_BASE64 {
        return Err(ClientError::Protocol(format!(
            "{url}: a credential of {} characters",
            answer.credential.len()
        )));
    }
    let credential = b64
        .decode(answer.credential.trim())
        .map_err(|_| ClientError::Protocol(format!("{url}: the credential is not base64")))?;
    let tpm = device.clone();
    let (secret, payload) = run_blocking(move || {
        let secret = tpm.activate_credential(&credential)?;
        let payload = tpm.quote(&report_data)?;
        Ok((secret, payload))
    })
    .await?;
    Ok((payload, hex::encode(secret.as_slice())))
}

/// Enrolls a new node into `dir`: fresh identity and TLS keys, a CSR proven with the identity
/// key, the CA pinned by fingerprint on first contact; writes the documented files.
pub async fn enroll(
    dir: &NodeDir,
    options: EnrollOptions<'_>,
) -> Result<EnrollOutcome, ClientError> {
    enroll_attested(dir, options, None).await
}

/// [`enroll`], attaching `attestation` evidence bound to the token and the fresh TLS key.
/// With a TPM, `node.toml` names it as the node's attester.
pub async fn enroll_attested(
    dir: &NodeDir,
    options: EnrollOptions<'_>,
    attestation: Option<&EnrollAttestation>,
) -> Result<EnrollOutcome, ClientError> {
    if dir.config().exists() || dir.identity_key().exists() {
        return Err(NodeDirError::AlreadyEnrolled(dir.0.clone()).into());
    }
    // The TPM's work directories go inside the node directory, which may not exist yet: a
    // failed enrollment must not leave behind the (empty) directory it made.
    let existed = dir.0.exists();
    let result = enroll_into(dir, options, attestation).await;
    if result.is_err() && !existed {
        // Only an empty directory is removed; one holding files is left to inspect.
        let _ = std::fs::remove_dir(&dir.0);
    }
    result
}

async fn enroll_into(
    dir: &NodeDir,
    options: EnrollOptions<'_>,
    attestation: Option<&EnrollAttestation>,
) -> Result<EnrollOutcome, ClientError> {
    let pin = ztmesh_pki::parse_fingerprint(options.ca_fingerprint)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let base = options.ca_url.trim_end_matches('/');
    let client = http_client(crate::tls::pinned_ca_client_config(pin.clone())?)?;

    // The trust domain comes from the pinned CA, so the CSR can carry the right SPIFFE ID.
    let url = format!("{base}/v1/ca");
    let info: CaInfo = send_json(client.get(&url), &url).await?;
    let ca_der = ztmesh_pki::cert_pem_to_der(&info.ca_cert)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    if ztmesh_pki::fingerprint_sha256(&ca_der) != pin {
        return Err(ClientError::Protocol(
            "the CA certificate does not match the pinned fingerprint".into(),
        ));
    }
    let trust_domain = info
        .trust_domain
        .parse()
        .map_err(|e| ClientError::Protocol(format!("trust domain: {e}")))?;
    // The membership-log policy is pinned with the CA: read over the same pinned connection,
    // before the token is spent, and refused whole unless it is a policy for this mesh's log.
    // A CA without one (404) leaves the node without log watching.
    let url = format!("{base}/v1/log/policy");
    let log_policy = get_text_or_none(&client, &url, ztmesh_tlog::policy::MAX_POLICY_LEN).await?;
    if let Some(text) = &log_policy {
        ztmesh_membership::parse_log_policy(text, &trust_domain)
            .map_err(|e| ClientError::Protocol(format!("membership-log policy: {e}")))?;
    }

    let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
    let node_id = identity.public().node_id();
    let tls_key = TlsKeyPair::generate().map_err(NodeDirError::from)?;
    let csr = tls_key
        .csr_der(&node_id, &trust_domain)
        .map_err(NodeDirError::from)?;
    let (attestation_request, tpm2_credential_secret) = match attestation {
        Some(attestation) => {
            let token = ztmesh_pki::EnrollmentToken::parse(options.token)
                .map_err(|e| ClientError::Protocol(format!("token: {e}")))?;
            let report_data =
                enrollment_report_data(&token.hash().0, &tls_key.public_key_spki_der());
            let (request, secret) = attestation
                .to_request(&client, base, options.token, &report_data)
                .await?;
            (Some(request), secret)
        }
        None => (None, None),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let request = EnrollRequest {
        token: options.token.trim().to_owned(),
        csr: b64.encode(&csr),
        identity_key: b64.encode(identity.public().to_spki_der()),
        identity_proof: b64.encode(identity.sign_proof(IdentityProofDomain::EnrollCsr, &csr)),
        node_id: Some(node_id.to_string()),
        attestation: attestation_request,
        tpm2_credential_secret,
    };
    let url = format!("{base}/v1/enroll");
    let answer: EnrollResponse = send_json(client.post(&url).json(&request), &url).await?;

    // Check what we were given before writing anything.
    let answer_ca = ztmesh_pki::cert_pem_to_der(&answer.ca_cert)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    if answer_ca != ca_der {
        return Err(ClientError::Protocol(
            "the enrollment answer names a different CA".into(),
        ));
    }
    let cert_der = ztmesh_pki::cert_pem_to_der(&answer.certificate)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let cert = ztmesh_pki::verify_node_certificate(
        &cert_der,
        &ca_der,
        &trust_domain,
        &Default::default(),
        crate::timefmt::now(),
    )
    .map_err(|e| ClientError::Protocol(format!("issued certificate: {e}")))?;
    if cert.node_id != node_id || cert.tls_public_key_spki_der != tls_key.public_key_spki_der() {
        return Err(ClientError::Protocol(
            "issued certificate is not for our keys".into(),
        ));
    }

    crate::private_files::create_private_dir(&dir.0).map_err(|source| NodeDirError::Io {
        path: dir.0.clone(),
        source,
    })?;
    dir.write_key(
        &dir.identity_key(),
        &identity.to_pkcs8_der(),
        &options.protection,
    )?;
    std::fs::write(dir.ca_cert(), &answer.ca_cert).map_err(|source| NodeDirError::Io {
        path: dir.ca_cert(),
        source,
    })?;
    if let Some(text) = &log_policy {
        dir.write_log_policy(text)?;
    }
    dir.install_certificate(&cert_der, &tls_key, &options.protection)?;
    // The first certificate of this node's history, which the membership-log audit judges
    // every certificate logged in its name against.
    crate::store::NodeStore::open(&dir.state_db())?.record_issuance(
        &cert.serial,
        cert.not_before,
        cert.not_after,
        "enroll",
        crate::timefmt::now(),
    )?;
    let config = NodeConfig {
        node_id,
        trust_domain,
        ca_url: base.to_owned(),
        listen: options.listen,
        api_listen: options.api_listen,
        bootstrap_peers: answer.config.bootstrap_peers,
        gossip_fanout: answer.config.gossip_fanout,
        crl_url: answer.config.crl_url,
        heartbeat_interval_ms: 1000,
        crl_refresh_secs: 60,
        max_peers: 64,
        insecure_plaintext_key: matches!(options.protection, Protection::InsecurePlaintext),
        health_interval_ms: 15_000,
        log_stall_secs: crate::log_stall::DEFAULT_STALL_SECS,
        attestation: match attestation {
            Some(EnrollAttestation::Tpm2 { device }) => crate::attestation::AttestationConfig {
                attester: crate::attestation::Attester::Tpm2,
                tpm_tcti: Some(device.tcti().to_owned()),
                ..Default::default()
            },
            _ => Default::default(),
        },
        witness: Default::default(),
    };
    dir.write_config(&config)?;
    Ok(EnrollOutcome {
        config,
        serial: answer.serial,
        valid_not_after: answer.valid_not_after,
    })
}

/// A client for the CA API once enrolled: trusts only the mesh CA and presents the node's
/// current certificate (which rotation swaps in place).
#[derive(Clone)]
pub struct CaClient {
    base: String,
    client: reqwest::Client,
}

impl CaClient {
    /// For `base` (`https://host:port`), trusting `ca_cert_der`, presenting `cert` if given.
    pub fn new(
        base: &str,
        ca_cert_der: &[u8],
        cert: Option<Arc<CurrentCertificate>>,
    ) -> Result<Self, ClientError> {
        // No pooled connections: a kept-alive connection goes on presenting the certificate of
        // its handshake, and the log watch's polling keeps one alive for ever, so after a
        // rotation the CA would see the old certificate until it expires (and then refuse
        // every call, the next rotation included). A few handshakes a minute are cheap.
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::ca_client_config(ca_cert_der, cert)?)
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ClientError::Protocol(chain(&e)))?;
        Ok(CaClient {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// `POST /v1/rotate` with a CSR for `key`, proven with the identity key.
    pub async fn rotate(
        &self,
        identity: &IdentityKey,
        key: &TlsKeyPair,
        node_id: &ztmesh_core::NodeId,
        trust_domain: &ztmesh_core::TrustDomain,
    ) -> Result<RotateResponse, ClientError> {
        let csr = key
            .csr_der(node_id, trust_domain)
            .map_err(NodeDirError::from)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let request = RotateRequest {
            csr: b64.encode(&csr),
            identity_proof: b64.encode(identity.sign_proof(IdentityProofDomain::RotateCsr, &csr)),
        };
        let url = format!("{}/v1/rotate", self.base);
        send_json(self.client.post(&url).json(&request), &url).await
    }

    /// `POST /v1/log/events`: a mesh event for the membership log.
    pub async fn log_event(&self, report: &LogEventReport) -> Result<LogEventAnswer, ClientError> {
        let url = format!("{}/v1/log/events", self.base);
        send_json(self.client.post(&url).json(report), &url).await
    }

    /// `POST /v1/attest/challenge`: a nonce for [`CaClient::attest`].
    pub async fn attest_challenge(&self) -> Result<AttestChallengeResponse, ClientError> {
        let url = format!("{}/v1/attest/challenge", self.base);
        send_json(self.client.post(&url), &url).await
    }

    /// `POST /v1/attest`: evidence answering the challenge, for an attestation token.
    pub async fn attest(&self, request: &AttestRequest) -> Result<AttestResponse, ClientError> {
        let url = format!("{}/v1/attest", self.base);
        send_json(self.client.post(&url).json(request), &url).await
    }

    /// `POST /v1/announce`.
    pub async fn announce(
        &self,
        request: &AnnounceRequest,
    ) -> Result<AnnounceResponse, ClientError> {
        let url = format!("{}/v1/announce", self.base);
        send_json(self.client.post(&url).json(request), &url).await
    }

    /// `GET` a CRL (DER) from `url`.
    pub async fn fetch_crl(&self, url: &str) -> Result<Vec<u8>, ClientError> {
        let response = send(self.client.get(url).query(&[("format", "der")]), url).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Protocol(chain(&e)))?;
        Ok(bytes.to_vec())
    }

    /// `GET /v1/log/checkpoint`: the membership log's latest checkpoint note with its
    /// cosignatures; `None` before the log has one.
    pub async fn log_checkpoint(&self) -> Result<Option<String>, ClientError> {
        let url = format!("{}/v1/log/checkpoint", self.base);
        get_text_or_none(
            &self.client,
            &url,
            ztmesh_tlog::monitor::MAX_CHECKPOINT_NOTE_LEN,
        )
        .await
    }

    /// `GET /v1/log/proof/consistency?old=..&new=..`: the proof that the membership log of
    /// `new` entries extends the one of `old`.
    pub async fn log_consistency_proof(
        &self,
        old: u64,
        new: u64,
    ) -> Result<Vec<ztmesh_tlog::Hash>, ClientError> {
        #[derive(serde::Deserialize)]
        struct ProofAnswer {
            proof: Vec<String>,
        }
        let url = format!("{}/v1/log/proof/consistency", self.base);
        let response = send(
            self.client.get(&url).query(&[("old", old), ("new", new)]),
            &url,
        )
        .await?;
        let bytes = read_limited(response, MAX_PROOF_ANSWER, &url).await?;
        let answer: ProofAnswer = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("{url}: {e}")))?;
        // Hashes that do not even decode are a broken answer to retry, not a proof to judge.
        answer
            .proof
            .iter()
            .map(|hash| {
                ztmesh_tlog::Hash::from_base64(hash)
                    .map_err(|e| ClientError::Protocol(format!("{url}: {e}")))
            })
            .collect()
    }

    /// `GET /v1/log/entries?start=..&count=..`: up to `count` (at most
    /// [`MAX_ENTRIES_PER_FETCH`]) membership-log entries from index `start`, as
    /// `(index, leaf bytes)`; what they mean is for the caller to verify.
    pub async fn log_entries(
        &self,
        start: u64,
        count: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
        let count = count.min(MAX_ENTRIES_PER_FETCH);
        let url = format!("{}/v1/log/entries", self.base);
        let response = send(
            self.client
                .get(&url)
                .query(&[("start", start), ("count", count)]),
            &url,
        )
        .await?;
        let bytes = read_limited(response, MAX_ENTRIES_ANSWER, &url).await?;
        let answer: crate::membership_log::LogEntriesResponse = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("{url}: {e}")))?;
        if answer.entries.len() as u64 > count {
            return Err(ClientError::Protocol(format!(
                "{url}: {} entries where at most {count} were asked for",
                answer.entries.len()
            )));
        }
        answer
            .entries
            .into_iter()
            .map(|item| {
                crate::membership_log::decode_leaf(&item.leaf)
                    .map(|leaf| (item.index, leaf))
                    .ok_or_else(|| {
                        ClientError::Protocol(format!("{url}: entry {} is not a leaf", item.index))
                    })
            })
            .collect()
    }

    /// `POST /v1/tokens` with the admin credential.
    pub async fn create_token(
        &self,
        admin: &str,
        request: &TokenRequest,
    ) -> Result<TokenResponse, ClientError> {
        let url = format!("{}/v1/tokens", self.base);
        send_json(
            self.client
                .post(&url)
                .bearer_auth(admin.trim())
                .json(request),
            &url,
        )
        .await
    }

    /// `POST /v1/revoke` with the admin credential.
    pub async fn revoke(&self, admin: &str, request: &RevokeRequest) -> Result<(), ClientError> {
        let url = format!("{}/v1/revoke", self.base);
        send(
            self.client
                .post(&url)
                .bearer_auth(admin.trim())
                .json(request),
            &url,
        )
        .await?;
        Ok(())
    }
}
