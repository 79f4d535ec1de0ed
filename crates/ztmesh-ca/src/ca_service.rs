//! The CA's HTTPS API (`ztmesh ca serve`) and its data directory (`ztmesh ca init`).
//!
//! Routes: `GET /v1/ca`, `POST /v1/enroll`, `POST /v1/enroll/tpm2/credential`,
//! `POST /v1/rotate` (mTLS; an expired certificate within `--rotation-grace`, see
//! [`rotation_client`]), `GET /v1/crl`,
//! `POST /v1/revoke` (admin), `POST /v1/tokens` (admin), `POST /v1/announce` (mTLS), and the
//! public membership log: `GET /v1/log/key`, `/v1/log/checkpoint`, `/v1/log/entries`,
//! `/v1/log/proof/inclusion`, `/v1/log/proof/consistency`, `/v1/log/policy`.
//! Every state change that matters for security (token use, rotation, revocation) is one
//! compare-and-swap transaction in the [`CaStore`], which appends the membership-log entry in
//! the same transaction; a certificate is signed before the CAS and dropped unseen if the CAS
//! fails, so a token can never yield two certificates.
//!
//! Enrollment may carry attestation evidence (`tpm2`, `tdx`, `sgx`, `sev-snp`, `dev`). There is
//! no live challenge at enrollment, so the evidence's report data must be
//! [`enrollment_report_data`]: `report_data_binding(SHA-256(token), CSR's TLS
//! SubjectPublicKeyInfo DER)`, which ties it to this one-time token and this TLS key. The
//! [`EnrollAttestationPolicy`] decides whether evidence is required and which kinds can be
//! verified; evidence is checked before the token is spent, so a refusal never burns a token,
//! and evidence that does not verify is always refused, never ignored.
//!
//! A `tpm2` quote is trusted when its attestation key is configured (`--tpm2-attestation-key`)
//! or was activated for this very token against an allowed endorsement key: the node asks
//! `POST /v1/enroll/tpm2/credential` first and enrolls with the secret its TPM recovered (see
//! [`crate::ca_tpm2`]). An activated key is registered for the node in the same transaction
//! as its certificate, and `POST /v1/attest` trusts that node's quotes signed with it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;
use ztmesh_core::link::PeerAdvert;
use ztmesh_core::{NodeId, Timestamp, TrustDomain};
use ztmesh_pki::keyfile::{self, KdfParams, Protection};
use ztmesh_pki::{
    CertificateAuthority, EnrollmentToken, IdentityProofDomain, IdentityPublicKey,
    NodeCertificateRequest, RevocationReason, Serial, TlsKeyPair,
};
use ztmesh_tlog::Signer;

use crate::api_error::{method_not_allowed, not_found, ApiError, ApiJson};
use crate::api_types::*;
use crate::https::ClientAddr;
use crate::membership_log::{
    self, HttpWitnessTransport, LogEntriesResponse, LogEntryItem, LogPolicy, LogPublisher,
    MembershipLog, ProofResponse, DEFAULT_ENTRIES_PER_REQUEST,
};
use crate::private_files::{create_private_dir, write_private_file};
use crate::rate_limit::{FailedCredentials, RateLimiter};
use crate::store::{
    CaStore, IssueKind, IssuedRecord, RedeemError, RevokeError, RevokeTarget, RotateError,
};
use crate::timefmt::{now, rfc3339};
use crate::tls::{CurrentCertificate, MeshTrust, PresentedCertificate};
use ztmesh_attest::policy::{
    enrollment_report_data, verify_enrollment_evidence, AttestationPayload, EnrollAttestationPolicy,
};

/// Largest request body any CA route accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest enrollment-token lifetime an operator may ask for.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// How long a signed CRL is valid (nextUpdate - thisUpdate). The CA re-signs at half of it.
pub const CRL_VALIDITY: Duration = Duration::from_secs(3600);

/// Back-dating of notBefore, so peers with a slightly slow clock accept a new certificate.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

/// Default of `ca serve --rotation-grace`: how long after its certificate expired a node may
/// still rotate by proving its identity key. A week outlasts a CA outage over a long weekend;
/// a node that should not come back after that long is revoked, not left to expire.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(7 * 86_400);

/// Rotations with an expired certificate one node may attempt: a burst of this many, then
/// [`EXPIRED_ROTATIONS_PER_MINUTE`]. A healthy node needs one; its retries back off to 32 s.
pub const EXPIRED_ROTATIONS_BURST: u32 = 3;

/// Refill of the per-node budget of expired-certificate rotations, per minute.
pub const EXPIRED_ROTATIONS_PER_MINUTE: u32 = 2;

/// Files of a CA data directory.
#[derive(Debug, Clone)]
pub struct CaDir(pub PathBuf);

impl CaDir {
    /// The CA certificate, PEM (`ca.pem`), for nodes and for `openssl verify -CAfile`.
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    /// The CA key, encrypted (`ca.key`).
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }
    /// The admin credential (`admin.token`, mode 0600).
    pub fn admin_token(&self) -> PathBuf {
        self.0.join("admin.token")
    }
    /// The latest CRL, PEM (`crl.pem`), rewritten on every revocation.
    pub fn crl(&self) -> PathBuf {
        self.0.join("crl.pem")
    }
    /// SQLite state (`state.db`).
    pub fn state_db(&self) -> PathBuf {
        self.0.join("state.db")
    }
    /// Written by `ca serve` once listening: the bound address (`ca.addr`).
    pub fn addr_file(&self) -> PathBuf {
        self.0.join("ca.addr")
    }
    /// The membership log key (`log.key`): its signed-note private key text, sealed like
    /// `ca.key`.
    pub fn log_key(&self) -> PathBuf {
        self.0.join("log.key")
    }
    /// The membership log's public key as a vkey (`log.vkey`), readable without the
    /// passphrase, for witnesses and policies to trust.
    pub fn log_vkey(&self) -> PathBuf {
        self.0.join("log.vkey")
    }
}

/// Errors of CA set-up and start-up (not of requests).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A CA already exists in the directory.
    #[error("a CA already exists in {0} (refusing to overwrite it)")]
    AlreadyInitialized(PathBuf),
    /// No CA in the directory.
    #[error("no CA in {0}: run `ztmesh ca init` first")]
    NotInitialized(PathBuf),
    /// Key or certificate problem (wrong passphrase included).
    #[error(transparent)]
    Pki(#[from] ztmesh_pki::PkiError),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// File problem.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// TLS set-up problem.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Invalid option.
    #[error("{0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `ca init` produced.
#[derive(Debug, Clone)]
pub struct CaInitReport {
    /// SHA-256 fingerprint of the CA certificate (pin it in `ztmesh enroll --ca-fingerprint`).
    pub fingerprint: String,
    /// Path of the CA certificate.
    pub ca_cert_path: PathBuf,
    /// Path of the admin credential.
    pub admin_token_path: PathBuf,
}

fn admin_hash(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.trim().as_bytes()))
}

/// Creates a CA in `dir`: Ed25519 root key (sealed with `protection`), self-signed certificate,
/// membership log key (sealed the same way), admin credential, state database and an initial
/// empty CRL.
pub fn init_ca(
    dir: &CaDir,
    trust_domain: TrustDomain,
    protection: &Protection<'_>,
    validity: Duration,
) -> Result<CaInitReport, CaError> {
    create_private_dir(&dir.0).map_err(io_err(&dir.0))?;
    if dir.ca_key().exists() || dir.ca_cert().exists() || dir.log_key().exists() {
        return Err(CaError::AlreadyInitialized(dir.0.clone()));
    }
    let now = now();
    let ca = CertificateAuthority::generate(trust_domain, now, validity)?;
    let sealed = keyfile::seal(
        &ca.key_pkcs8_der(),
        protection,
        KdfParams::DEFAULT,
        &mut rand::rngs::OsRng,
    )?;
    write_private_file(&dir.ca_key(), sealed.as_bytes()).map_err(io_err(&dir.ca_key()))?;
    std::fs::write(dir.ca_cert(), ztmesh_pki::cert_der_to_pem(ca.cert_der()))
        .map_err(io_err(&dir.ca_cert()))?;
    create_log_key(dir, ca.trust_domain(), protection)?;

    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let credential = format!("ztadm_{}", hex::encode(secret));
    write_private_file(&dir.admin_token(), format!("{credential}\n").as_bytes())
        .map_err(io_err(&dir.admin_token()))?;

    let store = CaStore::open(&dir.state_db())?;
    store.set_meta("admin_credential_sha256", &admin_hash(&credential))?;
    store.set_meta("trust_domain", ca.trust_domain().as_str())?;
    let number = store.next_crl_number()?;
    sign_and_save_crl(&ca, &store, dir, number, now)?;
    Ok(CaInitReport {
        fingerprint: ztmesh_pki::fingerprint_sha256(ca.cert_der()),
        ca_cert_path: dir.ca_cert(),
        admin_token_path: dir.admin_token(),
    })
}

/// Loads the CA key and certificate from `dir` (the passphrase is checked here).
pub fn load_ca(
    dir: &CaDir,
    protection: &Protection<'_>,
    allow_plaintext: bool,
) -> Result<CertificateAuthority, CaError> {
    if !dir.ca_key().exists() {
        return Err(CaError::NotInitialized(dir.0.clone()));
    }
    let key_text = std::fs::read_to_string(dir.ca_key()).map_err(io_err(&dir.ca_key()))?;
    let key = keyfile::open(&key_text, protection, allow_plaintext)?;
    let cert_text = std::fs::read_to_string(dir.ca_cert()).map_err(io_err(&dir.ca_cert()))?;
    let cert = ztmesh_pki::cert_pem_to_der(&cert_text)?;
    Ok(CertificateAuthority::from_parts(&cert, &key)?)
}

/// Generates the membership log key (named after the log origin) and writes `log.key`
/// (sealed with `protection`) and `log.vkey`.
fn create_log_key(
    dir: &CaDir,
    trust_domain: &TrustDomain,
    protection: &Protection<'_>,
) -> Result<Signer, CaError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let signer = Signer::new(
        &membership_log::log_origin(trust_domain),
        ed25519_dalek::SigningKey::from_bytes(&seed),
    )
    .map_err(|e| CaError::Config(format!("membership log key name: {e}")))?;
    let private = Zeroizing::new(signer.private_key());
    let sealed = keyfile::seal(
        private.as_bytes(),
        protection,
        KdfParams::DEFAULT,
        &mut rand::rngs::OsRng,
    )?;
    write_private_file(&dir.log_key(), sealed.as_bytes()).map_err(io_err(&dir.log_key()))?;
    write_private_file(&dir.log_vkey(), format!("{}\n", signer.vkey()).as_bytes())
        .map_err(io_err(&dir.log_vkey()))?;
    Ok(signer)
}

/// Opens the membership log key of `dir`, creating it when missing (a CA initialized before
/// the log existed). Checks that it is named after the log origin of `trust_domain` and that
/// `log.vkey` (rewritten when missing) is its public key.
pub fn load_log_key(
    dir: &CaDir,
    trust_domain: &TrustDomain,
    protection: &Protection<'_>,
    allow_plaintext: bool,
) -> Result<Signer, CaError> {
    if !dir.log_key().exists() {
        let signer = create_log_key(dir, trust_domain, protection)?;
        tracing::info!(vkey = %signer.vkey(), "created the membership log key");
        return Ok(signer);
    }
    let sealed = std::fs::read_to_string(dir.log_key()).map_err(io_err(&dir.log_key()))?;
    let text = keyfile::open(&sealed, protection, allow_plaintext)?;
    let bad_key = |why: String| CaError::Config(format!("{}: {why}", dir.log_key().display()));
    let text = std::str::from_utf8(&text).map_err(|_| bad_key("not a signed-note key".into()))?;
    let signer = Signer::from_private_key(text.trim()).map_err(|e| bad_key(e.to_string()))?;
    let origin = membership_log::log_origin(trust_domain);
    if signer.name() != origin {
        return Err(bad_key(format!(
            "the key is named {:?}, but this CA's log origin is {origin:?}",
            signer.name()
        )));
    }
    match std::fs::read_to_string(dir.log_vkey()) {
        Ok(recorded) if recorded.trim() == signer.vkey() => {}
        Ok(recorded) => {
            return Err(CaError::Config(format!(
                "{} records {:?}, but log.key gives {}",
                dir.log_vkey().display(),
                recorded.trim(),
                signer.vkey()
            )))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            write_private_file(&dir.log_vkey(), format!("{}\n", signer.vkey()).as_bytes())
                .map_err(io_err(&dir.log_vkey()))?;
        }
        Err(error) => return Err(io_err(&dir.log_vkey())(error)),
    }
    Ok(signer)
}

/// The public membership log key recorded in `dir` (no passphrase needed).
pub fn log_vkey(dir: &CaDir) -> Result<ztmesh_tlog::Verifier, CaError> {
    let text = std::fs::read_to_string(dir.log_vkey()).map_err(io_err(&dir.log_vkey()))?;
    ztmesh_tlog::Verifier::parse(text.trim())
        .map_err(|e| CaError::Config(format!("{}: {e}", dir.log_vkey().display())))
}

/// The keys `ca serve` needs: the CA itself and the membership log key.
pub struct CaKeys {
    /// The certificate authority.
    pub ca: CertificateAuthority,
    /// The membership log key.
    pub log: Signer,
}

/// Loads the CA key and certificate and the membership log key (created when missing).
pub fn load_ca_keys(
    dir: &CaDir,
    protection: &Protection<'_>,
    allow_plaintext: bool,
) -> Result<CaKeys, CaError> {
    let ca = load_ca(dir, protection, allow_plaintext)?;
    let log = load_log_key(dir, ca.trust_domain(), protection, allow_plaintext)?;
    Ok(CaKeys { ca, log })
}

fn sign_and_save_crl(
    ca: &CertificateAuthority,
    store: &CaStore,
    dir: &CaDir,
    number: u64,
    now: Timestamp,
) -> Result<Vec<u8>, CaError> {
    let entries = store.revoked_entries()?;
    let next_update = now.saturating_add(CRL_VALIDITY);
    let der = ca.sign_crl(&entries, number, now, next_update)?;
    store.save_crl(number, &der, now, next_update)?;
    let pem_text = pem::encode(&pem::Pem::new("X509 CRL", der.clone()));
    write_private_file(&dir.crl(), pem_text.as_bytes()).map_err(io_err(&dir.crl()))?;
    Ok(der)
}

/// Options of `ca serve`.
#[derive(Debug, Clone)]
pub struct CaServeOptions {
    /// Lifetime of issued node certificates.
    pub cert_lifetime: Duration,
    /// Enrollment requests a minute per client address.
    pub rate_limit_rpm: u32,
    /// Burst allowance of the rate limit.
    pub rate_limit_burst: u32,
    /// Gossip fan-out handed to nodes.
    pub gossip_fanout: u32,
    /// Extra DNS names / IPs for the CA's TLS certificate (localhost and loopback are always in).
    pub server_names: Vec<String>,
    /// Base URL nodes use to reach this CA (for `crl_url`); default `https://<listen addr>`.
    pub public_url: Option<String>,
    /// How many nodes receive a revocation directly; 0 = every known node. The signed record
    /// reaches the rest by gossip, and every node's periodic CRL fetch is the last resort.
    pub revocation_push: usize,
    /// The tlog-policy file for the membership log: served to nodes (who pin it at
    /// enrollment), and its witnesses with a URL are sent every checkpoint. Without one,
    /// checkpoints are signed but nobody cosigns them.
    pub log_policy: Option<PathBuf>,
    /// What enrollment demands of attestation evidence (and what `POST /v1/attest` accepts).
    pub attestation: EnrollAttestationPolicy,
    /// The signed release manifest (already verified under the pinned release key) that
    /// attestation tokens vouch against; without one the CA issues no tokens.
    pub manifest: Option<crate::ca_attest::ReleaseManifest>,
    /// TPM endorsement keys (`--tpm2-endorsement-key`) whose TPMs may have an attestation key
    /// vouched for by credential activation (`POST /v1/enroll/tpm2/credential`); compared by
    /// EK name. Empty: every credential request is refused.
    pub tpm2_endorsement_keys: Vec<ztmesh_attest::tpm2_credential::EndorsementKey>,
    /// How long after its certificate expired a node may still rotate (`POST /v1/rotate`) by
    /// proving its identity key, when that certificate is in the CA's records (and so in the
    /// membership log) and neither it nor the node is revoked. Zero: never after expiry.
    pub rotation_grace: Duration,
}

impl Default for CaServeOptions {
    fn default() -> Self {
        CaServeOptions {
            cert_lifetime: ztmesh_pki::DEFAULT_CERT_LIFETIME,
            rate_limit_rpm: 120,
            rate_limit_burst: 60,
            gossip_fanout: 3,
            server_names: Vec::new(),
            public_url: None,
            revocation_push: 0,
            log_policy: None,
            attestation: EnrollAttestationPolicy::default(),
            manifest: None,
            tpm2_endorsement_keys: Vec::new(),
            rotation_grace: DEFAULT_ROTATION_GRACE,
        }
    }
}

/// Judges the `attestation` of an enrollment request: `Ok(None)` when there is none and the
/// policy allows that, the verdict when it verifies, otherwise the API error (400 for an
/// undecodable payload, 403 for a missing or refused evidence).
fn check_enrollment_attestation(
    policy: &EnrollAttestationPolicy,
    attestation: Option<&Attestation>,
    report_data: &[u8; 64],
    now_unix_secs: u64,
) -> Result<Option<ztmesh_attest::Verdict>, ApiError> {
    let Some(attestation) = attestation else {
        if policy.required {
            return Err(ApiError::forbidden(
                "attestation_required",
                "this CA requires attestation evidence at enrollment",
            ));
        }
        return Ok(None);
    };
    let (evidence_type, payload) = decode_attestation(attestation)?;
    verify_enrollment_evidence(policy, evidence_type, &payload, report_data, now_unix_secs)
        .map(Some)
        .map_err(|error| crate::ca_attest::attestation_refused(evidence_type, &error))
}

/// Decodes an `attestation {type, payload}` (400 `malformed_attestation` for a type this
/// build does not know or a payload that is not base64 of the CBOR `{evidence, collateral?}`).
fn decode_attestation(
    attestation: &Attestation,
) -> Result<(ztmesh_attest::EvidenceType, AttestationPayload), ApiError> {
    let evidence_type: ztmesh_attest::EvidenceType =
        attestation
            .kind
            .parse()
            .map_err(|e: ztmesh_attest::AttestError| {
                ApiError::bad_request("malformed_attestation", format!("attestation.type: {e}"))
            })?;
    let cbor = decode_b64(
        &attestation.payload,
        "malformed_attestation",
        "attestation.payload",
    )?;
    let payload = AttestationPayload::from_cbor(&cbor).map_err(|e| {
        ApiError::bad_request(
            "malformed_attestation",
            format!("attestation.payload is not a CBOR {{evidence, collateral?}} map: {e}"),
        )
    })?;
    Ok((evidence_type, payload))
}

struct CaState {
    ca: CertificateAuthority,
    dir: CaDir,
    store: Arc<CaStore>,
    trust: Arc<MeshTrust>,
    limiter: Mutex<RateLimiter>,
    /// Rotations presenting an expired certificate, per node (see [`rotation_client`]).
    expired_rotations: Mutex<RateLimiter<NodeId>>,
    /// The same for attempts whose identity proof failed (see [`expired_rotation_budget`]).
    expired_rotation_failures: Mutex<RateLimiter<NodeId>>,
    /// Wrong admin credentials: counted, and limited per address (guessing is refused).
    failed_admin: Mutex<FailedCredentials>,
    options: CaServeOptions,
    public_url: String,
    admin_hash: String,
    /// Serializes CRL signing so numbers and files advance together.
    crl_lock: tokio::sync::Mutex<()>,
    /// The membership log: tree, newest checkpoint.
    log: Arc<MembershipLog>,
    /// The log key; only the publisher signs with it.
    log_signer: Signer,
    /// The tlog-policy given with `--log-policy`, if any.
    log_policy: Option<Arc<LogPolicy>>,
    /// Attestation challenges and tokens.
    tokens: crate::ca_attest::TokenDesk,
    /// Mesh-event reports per node in the current minute.
    event_reports: Mutex<std::collections::HashMap<NodeId, (u64, u32)>>,
    /// TPM credentials waiting to be activated, by token (memory only: a restart forgets them
    /// and nodes ask again).
    tpm2: Mutex<crate::ca_tpm2::Tpm2Activations>,
    /// Tallies of reported governance decisions the CA follows.
    governance: Mutex<ztmesh_trust::ca_governance::CaGovernance>,
    /// Lifetime of issued certificates in force, seconds (the flag or a governed value), and
    /// the proposal that set it.
    cert_lifetime: Mutex<(Duration, Option<String>)>,
}

/// A running CA service: bind with [`CaService::bind`], then [`CaService::run`].
pub struct CaService {
    state: Arc<CaState>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

impl CaService {
    /// Loads state from `dir`, binds `listen` and prepares TLS (a fresh endpoint certificate is
    /// issued by the CA at every start).
    pub async fn bind(
        dir: CaDir,
        keys: CaKeys,
        listen: SocketAddr,
        options: CaServeOptions,
    ) -> Result<Self, CaError> {
        let CaKeys {
            ca,
            log: log_signer,
        } = keys;
        if options.cert_lifetime < ztmesh_pki::MIN_CERT_LIFETIME {
            return Err(CaError::Config(format!(
                "certificate lifetime must be at least {}s",
                ztmesh_pki::MIN_CERT_LIFETIME.as_secs()
            )));
        }
        let store = Arc::new(CaStore::open(&dir.state_db())?);
        let admin_hash = store.meta("admin_credential_sha256")?.ok_or_else(|| {
            CaError::Config("state.db has no admin credential; re-run `ztmesh ca init`".into())
        })?;
        if log_signer.name() != membership_log::log_origin(ca.trust_domain()) {
            return Err(CaError::Config(format!(
                "the membership log key is named {:?}, not after this CA's trust domain",
                log_signer.name()
            )));
        }
        let log_policy = match &options.log_policy {
            Some(path) => Some(Arc::new(read_log_policy(path, &log_signer)?)),
            None => None,
        };
        let log = Arc::new(
            MembershipLog::open(store.clone(), &log_signer)
                .map_err(|e| CaError::Config(format!("membership log: {e}")))?,
        );
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(io_err(&dir.0))?;
        let bound = listener.local_addr().map_err(io_err(&dir.0))?;
        let now = now();
        let tls_key = TlsKeyPair::generate()?;
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !bound.ip().is_unspecified() {
            names.push(bound.ip().to_string());
        }
        names.extend(options.server_names.iter().cloned());
        names.sort();
        names.dedup();
        let server_cert = ca.issue_server_certificate(
            &tls_key,
            &names,
            Serial::random(&mut rand::rngs::OsRng),
            now.saturating_sub(CLOCK_SKEW_ALLOWANCE),
            now.saturating_add(Duration::from_secs(30 * 86_400)),
        )?;
        let current = Arc::new(CurrentCertificate::new(
            vec![server_cert, ca.cert_der().to_vec()],
            &tls_key.to_pkcs8_der(),
        )?);
        let trust = Arc::new(MeshTrust::new(
            ca.cert_der().to_vec(),
            ca.trust_domain().clone(),
        ));
        if let Some((_, der, _, _)) = store.latest_crl()? {
            trust.apply_crl(&der)?;
        }
        let tls = crate::tls::api_server_config(trust.clone(), current)?;
        let public_url = options
            .public_url
            .clone()
            .unwrap_or_else(|| format!("https://{bound}"));
        let limiter = Mutex::new(RateLimiter::new(
            options.rate_limit_rpm,
            options.rate_limit_burst,
        ));
        let tokens =
            crate::ca_attest::TokenDesk::new(options.manifest.as_ref().map(|m| m.manifest.clone()));
        if let Some(release) = &options.manifest {
            let entry = membership_log::EventEntry::Manifest {
                version: release.manifest.version().to_owned(),
                sha256: hex::encode(release.sha256),
                not_after: release.manifest.not_after(),
                at: now.as_unix_secs(),
            };
            if let Some(index) = store.append_event(&entry)? {
                tracing::info!(
                    version = release.manifest.version(),
                    index,
                    "release manifest change recorded in the membership log"
                );
            }
        }
        let (governance, cert_lifetime) = governed_at_start(&store, options.cert_lifetime)?;
        let tpm2 = Mutex::new(crate::ca_tpm2::Tpm2Activations::new(
            &options.tpm2_endorsement_keys,
        ));
        Ok(CaService {
            state: Arc::new(CaState {
                tpm2,
                tokens,
                event_reports: Mutex::new(std::collections::HashMap::new()),
                governance: Mutex::new(governance),
                cert_lifetime: Mutex::new(cert_lifetime),
                ca,
                dir,
                store,
                trust,
                limiter,
                expired_rotations: Mutex::new(RateLimiter::new(
                    EXPIRED_ROTATIONS_PER_MINUTE,
                    EXPIRED_ROTATIONS_BURST,
                )),
                expired_rotation_failures: Mutex::new(RateLimiter::new(
                    EXPIRED_ROTATIONS_PER_MINUTE,
                    EXPIRED_ROTATIONS_BURST,
                )),
                failed_admin: Mutex::default(),
                options,
                public_url,
                admin_hash,
                crl_lock: tokio::sync::Mutex::new(()),
                log,
                log_signer,
                log_policy,
            }),
            listener,
            tls,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; also keeps the CRL fresh and publishes membership
    /// checkpoints to the policy's witnesses.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let refresher = tokio::spawn(refresh_crl_forever(self.state.clone()));
        let publisher = match self.log_publisher() {
            Ok(publisher) => Some(tokio::spawn(publisher.run())),
            Err(error) => {
                tracing::error!(%error, "membership checkpoints will not be published");
                None
            }
        };
        let members = Arc::new(crate::https::MeshMembers::new(self.state.trust.clone()));
        crate::https::serve(
            self.listener,
            self.tls,
            members,
            router(self.state),
            shutdown,
        )
        .await;
        refresher.abort();
        if let Some(publisher) = publisher {
            publisher.abort();
        }
    }

    fn log_publisher(&self) -> Result<LogPublisher<HttpWitnessTransport>, String> {
        // An `https://` witness must present a certificate of this mesh (a witness running
        // on a member); plain `http://` needs none, the cosignature authenticates the answer.
        let tls = crate::tls::ca_client_config(self.state.ca.cert_der(), None)
            .map_err(|e| e.to_string())?;
        Ok(LogPublisher::new(
            self.state.log.clone(),
            self.state.log_signer.clone(),
            self.state.log_policy.clone(),
            Arc::new(HttpWitnessTransport::new(tls)?),
        ))
    }
}

/// Reads and checks the `--log-policy` file: a tlog-policy listing this CA's log key.
fn read_log_policy(path: &Path, log_signer: &Signer) -> Result<LogPolicy, CaError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut text = String::new();
    // One byte over the cap tells "too large" apart from "exactly at the cap".
    file.take(ztmesh_tlog::policy::MAX_POLICY_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    LogPolicy::parse(text, &log_signer.verifier())
        .map_err(|e| CaError::Config(format!("--log-policy {}: {e}", path.display())))
}

fn router(state: Arc<CaState>) -> Router {
    Router::new()
        .route("/v1/ca", get(get_ca))
        .route("/v1/enroll", post(enroll))
        .route("/v1/enroll/tpm2/credential", post(tpm2_credential))
        .route("/v1/rotate", post(rotate))
        .route("/v1/crl", get(get_crl))
        .route("/v1/revoke", post(revoke))
        .route("/v1/tokens", post(create_token))
        .route("/v1/announce", post(announce))
        .route("/v1/attest/challenge", post(attest_challenge))
        .route("/v1/attest", post(attest))
        .route("/v1/log/key", get(log_key))
        .route("/v1/log/checkpoint", get(log_checkpoint))
        .route("/v1/log/entries", get(log_entries))
        .route("/v1/log/proof/inclusion", get(log_inclusion_proof))
        .route("/v1/log/proof/consistency", get(log_consistency_proof))
        .route("/v1/log/policy", get(log_policy))
        .route("/v1/log/events", post(log_event))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

async fn get_ca(State(state): State<Arc<CaState>>) -> Json<CaInfo> {
    let (lifetime, proposal) = state
        .cert_lifetime
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(CaInfo {
        trust_domain: state.ca.trust_domain().to_string(),
        ca_cert: ztmesh_pki::cert_der_to_pem(state.ca.cert_der()),
        fingerprint_sha256: ztmesh_pki::fingerprint_sha256(state.ca.cert_der()),
        cert_lifetime_secs: lifetime.as_secs(),
        cert_lifetime_proposal: proposal,
    })
}

/// Most applied proposals remembered across restarts (so none applies twice).
const GOVERNED_APPLIED_KEPT: usize = 4096;

/// The report tallies and the certificate lifetime in force when the CA starts: a governed
/// `cert_lifetime_secs` persisted earlier wins over the `--cert-lifetime` flag.
fn governed_at_start(
    store: &CaStore,
    flag: Duration,
) -> Result<
    (
        ztmesh_trust::ca_governance::CaGovernance,
        (Duration, Option<String>),
    ),
    crate::store::StoreError,
> {
    let applied = store.governed_applied(GOVERNED_APPLIED_KEPT)?;
    let governance = ztmesh_trust::ca_governance::CaGovernance::new(applied);
    let lifetime = match store.governed(ztmesh_trust::Param::CertLifetimeSecs.as_str())? {
        Some(governed) => {
            tracing::info!(
                cert_lifetime_secs = governed.value,
                proposal = %governed.proposal,
                "certificate lifetime set by a governance decision (overrides --cert-lifetime)"
            );
            (Duration::from_secs(governed.value), Some(governed.proposal))
        }
        None => (flag, None),
    };
    Ok((governance, lifetime))
}

impl CaState {
    /// Lifetime of the certificates issued now.
    fn cert_lifetime(&self) -> Duration {
        self.cert_lifetime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
    }
}

/// Counts `reporter`'s report that `proposal` set `param` to `value` toward the CA following
/// it (see [`ztmesh_trust::ca_governance`]); applies and persists it when a majority of the attested
/// nodes reported it.
async fn follow_decision(
    state: &Arc<CaState>,
    reporter: NodeId,
    proposal: String,
    param: &str,
    value: u64,
) -> Result<(), ApiError> {
    let Some(param) = ztmesh_trust::Param::ALL
        .into_iter()
        .find(|p| p.as_str() == param)
    else {
        return Ok(());
    };
    if !ztmesh_trust::ca_governance::followed_by_ca(param) {
        return Ok(());
    }
    let at = now();
    let since = at.saturating_sub(ztmesh_trust::ca_governance::ATTESTED_WINDOW);
    let store = state.store.clone();
    let attested = blocking(move || store.attested_since(since))
        .await?
        .map_err(ApiError::internal)?;
    let outcome = state
        .governance
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .report(reporter, &proposal, param, value, &attested);
    match outcome {
        ztmesh_trust::ca_governance::Outcome::Counted {
            reporters,
            attested,
        } => {
            tracing::info!(%proposal, param = param.as_str(), value, reporters, attested, "governance decision report counted");
        }
        ztmesh_trust::ca_governance::Outcome::Apply {
            param,
            value,
            reporters,
            attested,
        } => {
            let store = state.store.clone();
            let id = proposal.clone();
            let fresh = blocking(move || store.apply_governed(param.as_str(), value, &id, at))
                .await?
                .map_err(ApiError::internal)?;
            if fresh && param == ztmesh_trust::Param::CertLifetimeSecs {
                *state
                    .cert_lifetime
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) =
                    (Duration::from_secs(value), Some(proposal.clone()));
                tracing::info!(%proposal, cert_lifetime_secs = value, reporters, attested, "governance decision followed: new certificates get this lifetime");
            }
        }
        ztmesh_trust::ca_governance::Outcome::NotFollowed
        | ztmesh_trust::ca_governance::Outcome::AlreadyApplied => {}
    }
    Ok(())
}

/// Decodes a CSR given as PEM or as base64 DER.
pub fn decode_csr(text: &str) -> Result<Vec<u8>, ApiError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        let block = pem::parse(text)
            .map_err(|e| ApiError::bad_request("malformed_csr", format!("CSR PEM: {e}")))?;
        if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
            return Err(ApiError::bad_request(
                "malformed_csr",
                "expected a CERTIFICATE REQUEST PEM block",
            ));
        }
        Ok(block.into_contents())
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| {
                ApiError::bad_request("malformed_csr", "csr is neither PEM nor base64 DER")
            })
    }
}

fn decode_b64(text: &str, code: &'static str, what: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| ApiError::bad_request(code, format!("{what} is not valid base64")))
}

fn rate_limited(state: &CaState, client: Option<Extension<ClientAddr>>) -> Result<(), ApiError> {
    let Some(Extension(ClientAddr(addr))) = client else {
        return Ok(());
    };
    let mut limiter = state.limiter.lock().unwrap_or_else(|p| p.into_inner());
    limiter.check(addr.ip(), now()).map_err(|wait| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many requests from {}; retry in {}s",
                addr.ip(),
                wait.as_secs().max(1)
            ),
        )
    })
}

async fn enroll(
    State(state): State<Arc<CaState>>,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<EnrollRequest>, ApiError>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    rate_limited(&state, client)?;
    let ApiJson(request) = body?;
    let token = EnrollmentToken::parse(&request.token).map_err(|_| {
        ApiError::bad_request(
            "malformed_token",
            "the token is not a ztmesh enrollment token (ztm1_...)",
        )
    })?;
    let csr_der = decode_csr(&request.csr)?;
    let csr_spki = ztmesh_pki::csr_public_key(&csr_der)
        .map_err(|e| ApiError::bad_request("malformed_csr", e.to_string()))?;
    let identity_der = decode_b64(
        &request.identity_key,
        "malformed_identity_key",
        "identity_key",
    )?;
    let identity = IdentityPublicKey::from_spki_der(&identity_der)
        .map_err(|e| ApiError::bad_request("malformed_identity_key", e.to_string()))?;
    let proof = decode_b64(
        &request.identity_proof,
        "bad_identity_proof",
        "identity_proof",
    )?;
    identity
        .verify_proof(IdentityProofDomain::EnrollCsr, &csr_der, &proof)
        .map_err(|_| {
            ApiError::bad_request(
                "bad_identity_proof",
                "identity_proof does not verify with identity_key over the CSR",
            )
        })?;
    let node_id = identity.node_id();
    if let Some(claimed) = &request.node_id {
        let claimed: NodeId = claimed
            .parse()
            .map_err(|e| ApiError::bad_request("malformed_node_id", format!("node_id: {e}")))?;
        if claimed != node_id {
            return Err(ApiError::bad_request(
                "node_id_mismatch",
                format!("node_id {claimed} does not match the identity key ({node_id})"),
            ));
        }
    }
    let report_data = enrollment_report_data(&token.hash().0, &csr_spki);
    let credential_secret = request
        .tpm2_credential_secret
        .as_deref()
        .map(crate::ca_tpm2::parse_credential_secret)
        .transpose()?;
    let mut policy = state.options.attestation.clone();
    let activated = tpm2_activation(
        &state,
        &policy,
        &token.hash(),
        request.attestation.as_ref(),
        credential_secret.as_deref(),
        now().as_unix_secs(),
    )?;
    if let Some(activated) = &activated {
        policy
            .tpm2_attestation_keys
            .push(activated.attestation_key.clone());
    }
    let attestation = request.attestation.clone();
    // Verifying DCAP and SEV chains is CPU work: off the async workers.
    let verdict = blocking(move || {
        check_enrollment_attestation(
            &policy,
            attestation.as_ref(),
            &report_data,
            now().as_unix_secs(),
        )
    })
    .await??;

    let now = now();
    let serial = Serial::random(&mut rand::rngs::OsRng);
    let not_before = now.saturating_sub(CLOCK_SKEW_ALLOWANCE);
    let not_after = now.saturating_add(state.cert_lifetime());
    let issued = state
        .ca
        .issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr_der,
            identity_key: &identity,
            serial,
            not_before,
            not_after,
        })
        .map_err(|e| ApiError::bad_request("malformed_csr", e.to_string()))?;
    let record = IssuedRecord {
        serial: issued.serial.clone(),
        node_id,
        not_before: issued.not_before,
        not_after: issued.not_after,
        cert_der: issued.der.clone(),
        issued_at: now,
        kind: IssueKind::Enroll,
    };
    let store = state.store.clone();
    let hash = token.hash();
    let registration = activated
        .as_ref()
        .map(|activated| crate::store::Tpm2KeyRegistration {
            ak_pem: pem::encode(&pem::Pem::new(
                "PUBLIC KEY",
                activated.attestation_key.to_spki_der(),
            )),
            ek_name_hex: activated.endorsement_key_name.to_hex(),
        });
    let redeemed = blocking(move || {
        store.redeem_token_registering(&hash, now, &record, registration.as_ref())
    })
    .await?;
    redeemed.map_err(|e| match e {
        RedeemError::Store(e) => ApiError::internal(e),
        RedeemError::Unknown => ApiError::forbidden("unknown_token", "no such enrollment token"),
        RedeemError::AlreadyUsed => {
            ApiError::forbidden("token_used", "this enrollment token was already used")
        }
        RedeemError::Expired => {
            ApiError::forbidden("token_expired", "this enrollment token has expired")
        }
        RedeemError::WrongNode => ApiError::forbidden(
            "token_wrong_node",
            "this enrollment token is reserved for another node",
        ),
        RedeemError::NodeRevoked => ApiError::forbidden(
            "node_revoked",
            "this node has been revoked and cannot enroll again",
        ),
        #[allow(unreachable_patterns)]
        other => ApiError::forbidden("policy_refused", other.to_string()),
    })?;
    tracing::info!(node = %node_id, serial = %issued.serial, "enrolled node");
    if let Some(activated) = &activated {
        lock_tpm2(&state).complete(&token.hash(), activated);
        tracing::info!(
            node = %node_id,
            endorsement_key = %activated.endorsement_key_name.to_hex(),
            "TPM attestation key activated and registered"
        );
    }
    if let Some(verdict) = &verdict {
        log_attestation_verdict(&node_id, verdict);
    }
    let store = state.store.clone();
    let known = blocking(move || store.known_nodes(8))
        .await?
        .map_err(ApiError::internal)?;
    let config = MeshConfig {
        trust_domain: state.ca.trust_domain().to_string(),
        bootstrap_peers: known
            .into_iter()
            .filter(|n| n.node_id != node_id)
            .filter_map(|n| n.mesh_addr)
            .collect(),
        gossip_fanout: state.options.gossip_fanout,
        crl_url: format!("{}/v1/crl", state.public_url),
    };
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            node_id: node_id.to_string(),
            serial: issued.serial.to_hex(),
            certificate: ztmesh_pki::cert_der_to_pem(&issued.der),
            ca_cert: ztmesh_pki::cert_der_to_pem(state.ca.cert_der()),
            valid_not_before: rfc3339(issued.not_before),
            valid_not_after: rfc3339(issued.not_after),
            config,
        }),
    ))
}

/// Records the verdict of an enrollment's evidence in the CA log: its kind, TCB status and
/// measurements, so an operator can tell later what each node proved.
fn log_attestation_verdict(node_id: &NodeId, verdict: &ztmesh_attest::Verdict) {
    let measurements = verdict
        .measurements
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    let tcb_status = verdict.tcb_status.as_deref().unwrap_or("-");
    if verdict.evidence_type.is_hardware() {
        tracing::info!(
            node = %node_id,
            evidence = verdict.evidence_type.as_str(),
            tcb_status,
            advisories = %verdict.advisories.join(","),
            %measurements,
            "enrollment attestation verified"
        );
    } else {
        tracing::warn!(
            node = %node_id,
            evidence = verdict.evidence_type.as_str(),
            %measurements,
            "enrolled with dev (simulated) attestation: it proves nothing about hardware"
        );
    }
}

fn lock_tpm2(state: &CaState) -> std::sync::MutexGuard<'_, crate::ca_tpm2::Tpm2Activations> {
    // The desk holds plain data and every critical section leaves it consistent.
    state.tpm2.lock().unwrap_or_else(|p| p.into_inner())
}

/// The attestation key an enrollment's `tpm2` evidence may be trusted with beyond `policy`'s:
/// `None` when there is no tpm2 evidence, its collateral is no key (the verifier then refuses
/// it with its own reason) or the key is configured; the activated key when `secret` answers
/// this token's pending credential for it; otherwise 403 `attestation_refused`.
fn tpm2_activation(
    state: &CaState,
    policy: &EnrollAttestationPolicy,
    token: &ztmesh_pki::TokenHash,
    attestation: Option<&Attestation>,
    secret: Option<&[u8; crate::ca_tpm2::CREDENTIAL_SECRET_LEN]>,
    now_unix_secs: u64,
) -> Result<Option<crate::ca_tpm2::ActivatedKey>, ApiError> {
    let Some(attestation) = attestation else {
        return Ok(None);
    };
    let (evidence_type, payload) = decode_attestation(attestation)?;
    if evidence_type != ztmesh_attest::EvidenceType::Tpm2 {
        return Ok(None);
    }
    let Some(key) = payload
        .collateral
        .as_deref()
        .and_then(|pem| std::str::from_utf8(pem).ok())
        .and_then(|pem| ztmesh_attest::tpm2::AttestationKey::from_pem(pem).ok())
    else {
        return Ok(None);
    };
    if policy.tpm2_attestation_keys.contains(&key) {
        return Ok(None);
    }
    let Some(secret) = secret else {
        return Err(crate::ca_tpm2::not_activated(
            "no tpm2_credential_secret was sent (POST /v1/enroll/tpm2/credential, then \
             TPM2_ActivateCredential)",
        ));
    };
    lock_tpm2(state)
        .verify(token, &key, secret, now_unix_secs)
        .map(Some)
        .map_err(|error| error.to_api_error())
}

/// `POST /v1/enroll/tpm2/credential`: for a valid, unspent token (checked, not spent), an
/// allowed endorsement key and an attestation key, a credential only that TPM can activate
/// (see [`crate::ca_tpm2`]).
async fn tpm2_credential(
    State(state): State<Arc<CaState>>,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<Tpm2CredentialRequest>, ApiError>,
) -> Result<Json<Tpm2CredentialResponse>, ApiError> {
    use ztmesh_attest::tpm2_credential::{AttestationKeyPublic, EndorsementKey};
    rate_limited(&state, client)?;
    let ApiJson(request) = body?;
    let token = EnrollmentToken::parse(&request.token).map_err(|_| {
        ApiError::bad_request(
            "malformed_token",
            "the token is not a ztmesh enrollment token (ztm1_...)",
        )
    })?;
    let ek = decode_b64(&request.ek_public, "malformed_ek_public", "ek_public")?;
    let ek = EndorsementKey::from_tpm2b_public(&ek).map_err(|e| {
        ApiError::bad_request(
            "malformed_ek_public",
            format!("ek_public is not an endorsement key's TPM2B_PUBLIC: {e}"),
        )
    })?;
    let ak = decode_b64(&request.ak_public, "malformed_ak_public", "ak_public")?;
    let ak = AttestationKeyPublic::from_tpm2b_public(&ak).map_err(|e| {
        ApiError::bad_request(
            "malformed_ak_public",
            format!("ak_public is not an attestation key's TPM2B_PUBLIC: {e}"),
        )
    })?;
    let hash = token.hash();
    let store = state.store.clone();
    let info = blocking(move || store.token_info(&hash))
        .await?
        .map_err(ApiError::internal)?;
    let now = now();
    match info {
        None => {
            return Err(ApiError::forbidden(
                "unknown_token",
                "no such enrollment token",
            ))
        }
        Some(info) if info.used_at.is_some() => {
            return Err(ApiError::forbidden(
                "token_used",
                "this enrollment token was already used",
            ))
        }
        Some(info) if now >= info.expires_at => {
            return Err(ApiError::forbidden(
                "token_expired",
                "this enrollment token has expired",
            ))
        }
        Some(_) => {}
    }
    let issued = lock_tpm2(&state)
        .issue_credential(hash, &ek, &ak, now.as_unix_secs(), &mut rand::rngs::OsRng)
        .map_err(|error| error.to_api_error())?;
    tracing::info!(
        endorsement_key = %ek.public_area().name().to_hex(),
        attestation_key = %ak.name().to_hex(),
        "TPM credential issued"
    );
    Ok(Json(Tpm2CredentialResponse {
        credential: base64::engine::general_purpose::STANDARD
            .encode(issued.credential.to_tpm2_tools_file()),
        expires_in_secs: issued.expires_at.saturating_sub(now.as_unix_secs()),
    }))
}

/// Judges the client certificate of a request to an mTLS route: 401 when missing or invalid,
/// 403 when revoked (checked against the store, not just the CRL).
async fn authenticated_node(
    state: &CaState,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<ztmesh_pki::NodeCertificate, ApiError> {
    let cert = crate::api_error::verified_client(&state.trust, presented)?;
    refuse_revoked(state, &cert).await?;
    Ok(cert)
}

/// 403 `revoked` when the node or this certificate is revoked in the store.
async fn refuse_revoked(
    state: &CaState,
    cert: &ztmesh_pki::NodeCertificate,
) -> Result<(), ApiError> {
    let store = state.store.clone();
    let (node_id, serial) = (cert.node_id, cert.serial.clone());
    let revoked = blocking(move || -> Result<bool, crate::store::StoreError> {
        Ok(store.is_node_revoked(&node_id)? || state_serial_revoked(&store, &serial)?)
    })
    .await?
    .map_err(ApiError::internal)?;
    if revoked {
        return Err(ApiError::forbidden(
            "revoked",
            format!("node {node_id} (certificate {}) is revoked", cert.serial),
        ));
    }
    Ok(())
}

/// The client of `POST /v1/rotate`: like [`authenticated_node`], except that a certificate
/// past its expiry is let through for up to `--rotation-grace`, so a mesh outlives a CA
/// outage longer than a certificate lifetime. Returns the certificate, its DER and how long
/// ago it expired (`None`: still valid).
///
/// An expired certificate is only an authentication hint: the handler still demands the
/// identity proof over the CSR, and that the presented bytes are a certificate the CA's
/// records hold (every record is in the membership log), so a certificate signed with the
/// CA key but never logged, or a stolen certificate and TLS key without the identity key,
/// gets nothing. Expired attempts are rate-limited per node by [`expired_rotation_budget`].
async fn rotation_client(
    state: &CaState,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<(ztmesh_pki::NodeCertificate, Arc<Vec<u8>>, Option<Duration>), ApiError> {
    let Some(Extension(PresentedCertificate(Some(der)))) = presented else {
        return Err(ApiError::unauthorized(
            "client_certificate_required",
            "this route requires a mesh certificate (mutual TLS)",
        ));
    };
    let at = now();
    let cert = state
        .trust
        .verify_ignoring_expiry(&der, at)
        .map_err(|e| ApiError::unauthorized("invalid_client_certificate", e.to_string()))?;
    // Revocation first: for a revoked node it is the reason that matters, grace or not.
    refuse_revoked(state, &cert).await?;
    if at <= cert.not_after {
        return Ok((cert, der, None));
    }
    let grace = state.options.rotation_grace;
    let Some(expired_for) = within_rotation_grace(at, cert.not_after, grace) else {
        let expired_for = at.duration_since(cert.not_after);
        tracing::warn!(node = %cert.node_id, serial = %cert.serial, expired_secs = expired_for.as_secs(), grace_secs = grace.as_secs(), "rotation refused: the certificate expired longer ago than the rotation grace");
        return Err(ApiError::forbidden(
            "rotation_grace_passed",
            format!(
                "certificate {} expired {}s ago; this CA lets a node rotate at most {}s after expiry (--rotation-grace); the node must enroll again",
                cert.serial,
                expired_for.as_secs(),
                grace.as_secs()
            ),
        ));
    };
    Ok((cert, der, Some(expired_for)))
}

/// Takes one of `node`'s expired-certificate rotations (429 `rate_limited` when none is
/// left). Attempts whose identity proof failed draw on their own budget, so whoever holds a
/// node's certificate and TLS key but not its identity key can hammer the route without
/// locking the node itself out; attempts with a good proof are bounded too, so even the
/// identity key cannot mint certificates in a loop from an expired one.
fn expired_rotation_budget(state: &CaState, node: NodeId, proven: bool) -> Result<(), ApiError> {
    let limiter = if proven {
        &state.expired_rotations
    } else {
        &state.expired_rotation_failures
    };
    let checked = limiter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .check(node, now());
    checked.map_err(|wait| {
        tracing::warn!(%node, proven, "rotation with an expired certificate rate-limited");
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many rotations with an expired certificate for this node; retry in {}s",
                wait.as_secs().max(1)
            ),
        )
    })
}

fn state_serial_revoked(
    store: &CaStore,
    serial: &Serial,
) -> Result<bool, crate::store::StoreError> {
    Ok(store.revoked_entries()?.iter().any(|e| &e.serial == serial))
}

/// Most mesh-event reports one node may make per minute (`POST /v1/log/events`).
pub const EVENT_REPORTS_PER_MINUTE: u32 = 120;

/// `POST /v1/log/events`: a member reports a governance decision it applied or a tier change
/// its trust book made; the CA appends it to the membership log, naming the reporter, unless
/// the log already says the same (then `index` is null).
async fn log_event(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
    body: Result<ApiJson<LogEventReport>, ApiError>,
) -> Result<Json<LogEventAnswer>, ApiError> {
    let node = authenticated_node(&state, presented).await?;
    let ApiJson(report) = body?;
    let at = now();
    {
        let minute = at.as_unix_secs() / 60;
        let mut counts = state
            .event_reports
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if counts.len() > 10_000 {
            counts.retain(|_, (m, _)| *m == minute);
        }
        let slot = counts.entry(node.node_id).or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        if slot.1 >= EVENT_REPORTS_PER_MINUTE {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("at most {EVENT_REPORTS_PER_MINUTE} event reports a minute per node"),
            ));
        }
        slot.1 += 1;
    }
    let followed = match &report {
        LogEventReport::GovernanceDecision {
            proposal,
            param,
            value,
        } => Some((proposal.clone(), param.clone(), *value)),
        LogEventReport::TierChange { .. } => None,
    };
    let entry = match report {
        LogEventReport::GovernanceDecision {
            proposal,
            param,
            value,
        } => membership_log::EventEntry::GovernanceDecision {
            proposal,
            param,
            value,
            reporter: node.node_id,
            at: at.as_unix_secs(),
        },
        LogEventReport::TierChange {
            node_id,
            tier,
            reason,
        } => membership_log::EventEntry::TierChange {
            node_id: node_id
                .parse()
                .map_err(|_| ApiError::bad_request("malformed_event", "node_id: not a NodeId"))?,
            tier,
            reason,
            reporter: node.node_id,
            at: at.as_unix_secs(),
        },
    };
    entry
        .check()
        .map_err(|e| ApiError::bad_request("malformed_event", e))?;
    let store = state.store.clone();
    let index = blocking(move || store.append_event(&entry))
        .await?
        .map_err(ApiError::internal)?;
    // Only a well-formed report (checked above) counts toward the CA following it.
    if let Some((proposal, param, value)) = followed {
        follow_decision(&state, node.node_id, proposal, &param, value).await?;
    }
    Ok(Json(LogEventAnswer { index }))
}

/// `POST /v1/attest/challenge`: a fresh nonce for the calling node (see [`crate::ca_attest`]).
async fn attest_challenge(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<Json<AttestChallengeResponse>, ApiError> {
    let node = authenticated_node(&state, presented).await?;
    let mut nonce = [0u8; crate::ca_attest::NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let expires_at = state
        .tokens
        .challenge(node.node_id, nonce, now().as_unix_secs())?;
    Ok(Json(AttestChallengeResponse {
        nonce: hex::encode(nonce),
        expires_at: crate::timefmt::rfc3339(Timestamp::from_unix_secs(expires_at)),
    }))
}

/// `POST /v1/attest`: evidence answering the node's challenge; an attestation token when it
/// verifies against the policy and the release manifest.
async fn attest(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
    body: Result<ApiJson<AttestRequest>, ApiError>,
) -> Result<Json<AttestResponse>, ApiError> {
    let node = authenticated_node(&state, presented).await?;
    let ApiJson(request) = body?;
    let nonce = hex::decode(&request.nonce)
        .map_err(|_| ApiError::bad_request("malformed_nonce", "nonce: expected hex"))?;
    let binary: [u8; 32] = hex::decode(&request.binary_sha256)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "malformed_binary_hash",
                "binary_sha256: expected 64 hex digits",
            )
        })?;
    let (evidence_type, payload) = decode_attestation(&request.attestation)?;
    let policy = attest_policy(&state, node.node_id, evidence_type).await?;
    let now = now();
    let result = state.tokens.attest(
        &state.ca,
        &policy,
        &node,
        &nonce,
        evidence_type,
        &payload,
        binary,
        now.as_unix_secs(),
    );
    let issued = match result {
        Ok(issued) => issued,
        Err(error) => {
            tracing::warn!(node = %node.node_id, code = error.code(), "attestation token refused");
            return Err(error);
        }
    };
    if evidence_type == ztmesh_attest::EvidenceType::Dev {
        tracing::warn!(node = %node.node_id, "attestation token for dev (simulated) evidence: it proves nothing about hardware");
    } else {
        tracing::info!(node = %node.node_id, platform = evidence_type.as_str(), "attestation token issued");
    }
    let store = state.store.clone();
    let attested = node.node_id;
    blocking(move || store.record_attested(&attested, now))
        .await?
        .map_err(ApiError::internal)?;
    let manifest_version = state
        .tokens
        .manifest()
        .map(|m| m.version().to_owned())
        .unwrap_or_default();
    Ok(Json(AttestResponse {
        token: base64::engine::general_purpose::STANDARD.encode(&issued.bytes),
        platform: evidence_type.as_str().to_owned(),
        issued_at: crate::timefmt::rfc3339(now),
        manifest_version,
    }))
}

/// The policy `POST /v1/attest` judges `node_id`'s evidence with: the configured one, and for
/// `tpm2` evidence also the attestation key the node activated at enrollment, if any.
async fn attest_policy(
    state: &CaState,
    node_id: NodeId,
    evidence_type: ztmesh_attest::EvidenceType,
) -> Result<std::borrow::Cow<'_, EnrollAttestationPolicy>, ApiError> {
    use std::borrow::Cow;
    if evidence_type != ztmesh_attest::EvidenceType::Tpm2 {
        return Ok(Cow::Borrowed(&state.options.attestation));
    }
    let store = state.store.clone();
    let registered = blocking(move || store.tpm2_attestation_key(&node_id))
        .await?
        .map_err(ApiError::internal)?;
    let Some(registered) = registered else {
        return Ok(Cow::Borrowed(&state.options.attestation));
    };
    let key = ztmesh_attest::tpm2::AttestationKey::from_pem(&registered.key.ak_pem)
        .map_err(|e| ApiError::internal(format!("registered TPM key of {node_id}: {e}")))?;
    let mut policy = state.options.attestation.clone();
    policy.tpm2_attestation_keys.push(key);
    Ok(Cow::Owned(policy))
}

async fn rotate(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
    body: Result<ApiJson<RotateRequest>, ApiError>,
) -> Result<Json<RotateResponse>, ApiError> {
    let (current, presented_der, expired_for) = rotation_client(&state, presented).await?;
    let ApiJson(request) = body?;
    let csr_der = decode_csr(&request.csr)?;
    ztmesh_pki::csr_public_key(&csr_der)
        .map_err(|e| ApiError::bad_request("malformed_csr", e.to_string()))?;
    let proof = decode_b64(
        &request.identity_proof,
        "bad_identity_proof",
        "identity_proof",
    )?;
    let proven = current
        .identity_key
        .verify_proof(IdentityProofDomain::RotateCsr, &csr_der, &proof)
        .is_ok();
    if expired_for.is_some() {
        expired_rotation_budget(&state, current.node_id, proven)?;
    }
    if !proven {
        return Err(ApiError::bad_request(
            "bad_identity_proof",
            "identity_proof does not verify with the certificate's identity key",
        ));
    }
    // The presented certificate must be, byte for byte, one the CA recorded (and logged) for
    // this node: a serial alone could be copied into a certificate signed outside the log.
    let store = state.store.clone();
    let serial = current.serial.clone();
    let recorded = blocking(move || store.certificate(&serial))
        .await?
        .map_err(ApiError::internal)?;
    if !recorded.is_some_and(|r| r.node_id == current.node_id && r.cert_der == *presented_der) {
        tracing::warn!(node = %current.node_id, serial = %current.serial, expired = expired_for.is_some(), "rotation refused: the presented certificate is not in this CA's records");
        return Err(unknown_certificate());
    }
    let now = now();
    let issued = state
        .ca
        .issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr_der,
            identity_key: &current.identity_key,
            serial: Serial::random(&mut rand::rngs::OsRng),
            not_before: now.saturating_sub(CLOCK_SKEW_ALLOWANCE),
            not_after: now.saturating_add(state.cert_lifetime()),
        })
        .map_err(|e| ApiError::bad_request("malformed_csr", e.to_string()))?;
    let record = IssuedRecord {
        serial: issued.serial.clone(),
        node_id: current.node_id,
        not_before: issued.not_before,
        not_after: issued.not_after,
        cert_der: issued.der.clone(),
        issued_at: now,
        kind: IssueKind::Rotate,
    };
    let store = state.store.clone();
    let presented_serial = current.serial.clone();
    blocking(move || store.record_rotation(&presented_serial, &record))
        .await?
        .map_err(|e| match e {
            RotateError::Store(e) => ApiError::internal(e),
            RotateError::UnknownCertificate => unknown_certificate(),
            RotateError::CertificateRevoked | RotateError::NodeRevoked => {
                ApiError::forbidden("revoked", "this node is revoked")
            }
            #[allow(unreachable_patterns)]
            other => ApiError::forbidden("policy_refused", other.to_string()),
        })?;
    match expired_for {
        Some(expired_for) => {
            tracing::warn!(node = %current.node_id, old = %current.serial, new = %issued.serial, expired_secs = expired_for.as_secs(), "certificate re-established after expiry by identity proof (rotation grace)");
        }
        None => {
            tracing::info!(node = %current.node_id, old = %current.serial, new = %issued.serial, "rotated certificate");
        }
    }
    Ok(Json(RotateResponse {
        serial: issued.serial.to_hex(),
        certificate: ztmesh_pki::cert_der_to_pem(&issued.der),
        valid_not_before: rfc3339(issued.not_before),
        valid_not_after: rfc3339(issued.not_after),
    }))
}

/// How long ago a certificate expiring at `not_after` expired, if at `now` that is within
/// `grace` (`Some(0)` at the very second of expiry, when it is still valid). `None`: expired
/// longer ago than the grace (always, past expiry, with a grace of 0).
fn within_rotation_grace(
    now: Timestamp,
    not_after: Timestamp,
    grace: Duration,
) -> Option<Duration> {
    let expired_for = now.duration_since(not_after);
    (expired_for <= grace).then_some(expired_for)
}

fn unknown_certificate() -> ApiError {
    ApiError::forbidden(
        "unknown_certificate",
        "the presented certificate was not issued by this CA's records",
    )
}

#[derive(Debug, Deserialize)]
struct CrlQuery {
    format: Option<String>,
}

async fn get_crl(
    State(state): State<Arc<CaState>>,
    query: Result<Query<CrlQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::bad_request("malformed_query", e.body_text()))?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let pem_wanted = match query.format.as_deref() {
        Some("pem") => true,
        Some("der") => false,
        Some(other) => {
            return Err(ApiError::bad_request(
                "malformed_query",
                format!("format must be der or pem, not {other:?}"),
            ))
        }
        None => accept.contains("application/x-pem-file") || accept.contains("text/plain"),
    };
    let store = state.store.clone();
    let latest = blocking(move || store.latest_crl())
        .await?
        .map_err(ApiError::internal)?;
    let Some((number, der, _this_update, next_update)) = latest else {
        return Err(ApiError::internal("no CRL has been signed"));
    };
    let etag = format!(
        "\"crl-{number}-{}\"",
        if pem_wanted { "pem" } else { "der" }
    );
    let max_age = next_update.duration_since(now()).as_secs().min(60);
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if pem_wanted {
        let text = pem::encode(&pem::Pem::new("X509 CRL", der));
        ([(header::CONTENT_TYPE, "application/x-pem-file")], text).into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    Ok(response)
}

/// Checks the admin credential. An address that presented too many wrong ones is refused
/// (429) before its credential is even compared; each wrong one is counted and logged.
fn require_admin(
    state: &CaState,
    headers: &HeaderMap,
    client: Option<Extension<ClientAddr>>,
) -> Result<(), ApiError> {
    let client = client.map(|Extension(ClientAddr(addr))| addr.ip());
    let mut failed = state.failed_admin.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ip) = client {
        failed.admit(ip, now()).map_err(|wait| {
            tracing::warn!(client = %ip, "admin request refused: too many wrong admin credentials from this address");
            ApiError::too_many_failed_credentials(ip, wait)
        })?;
    }
    let verdict = check_admin_credential(state, headers);
    // A missing credential guesses nothing; only wrong ones are counted against the address.
    if let (Err(error), Some(ip)) = (&verdict, client) {
        if error.code() == "bad_admin_credential" {
            let total = failed.record_failure(ip, now());
            tracing::warn!(client = %ip, failed_admin_credentials = total, "wrong admin credential refused");
        }
    }
    verdict
}

fn check_admin_credential(state: &CaState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "admin_credential_required",
            "this route requires `Authorization: Bearer <admin credential>`",
        ));
    };
    let credential = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "admin_credential_required",
                "expected `Authorization: Bearer <admin credential>`",
            )
        })?;
    if admin_hash(credential) != state.admin_hash {
        return Err(ApiError::forbidden(
            "bad_admin_credential",
            "the admin credential is not valid",
        ));
    }
    Ok(())
}

async fn create_token(
    State(state): State<Arc<CaState>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<TokenRequest>, ApiError>,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    require_admin(&state, &headers, client)?;
    let ApiJson(request) = body?;
    let ttl = Duration::from_secs(request.ttl_sec.unwrap_or(3600));
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!("ttl_sec must be 1..={}", MAX_TOKEN_TTL.as_secs()),
        ));
    }
    let node_id = request
        .node_id
        .map(|n| n.parse::<NodeId>())
        .transpose()
        .map_err(|e| ApiError::bad_request("malformed_node_id", format!("node_id: {e}")))?;
    let token = EnrollmentToken::generate(&mut rand::rngs::OsRng);
    let now = now();
    let expires_at = now.saturating_add(ttl);
    let store = state.store.clone();
    let hash = token.hash();
    blocking(move || store.insert_token(&hash, now, expires_at, node_id))
        .await?
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(TokenResponse {
            token: token.as_str().to_owned(),
            expires_at: rfc3339(expires_at),
        }),
    ))
}

async fn revoke(
    State(state): State<Arc<CaState>>,
    headers: HeaderMap,
    client: Option<Extension<ClientAddr>>,
    body: Result<ApiJson<RevokeRequest>, ApiError>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers, client)?;
    let ApiJson(request) = body?;
    let serial = request
        .serial
        .map(|serial| {
            Serial::from_hex(&serial)
                .map_err(|e| ApiError::bad_request("malformed_serial", e.to_string()))
        })
        .transpose()?;
    let node_id = request
        .node_id
        .map(|node| {
            node.parse::<NodeId>()
                .map_err(|e| ApiError::bad_request("malformed_node_id", format!("node_id: {e}")))
        })
        .transpose()?;
    // Both: one certificate of that node, which this CA's database need not know (a rogue
    // certificate signed with its key, as a node's `unlogged_certificate` finding shows it).
    let target = match (serial, node_id) {
        (Some(serial), None) => RevokeTarget::Serial(serial),
        (None, Some(node)) => RevokeTarget::Node(node),
        (Some(serial), Some(node_id)) => RevokeTarget::SerialOf { serial, node_id },
        (None, None) => {
            return Err(ApiError::bad_request(
                "malformed_body",
                "give serial, node_id, or both (a certificate of that node)",
            ))
        }
    };
    let reason = request.reason.unwrap_or(RevocationReason::Unspecified);
    let guard = state.crl_lock.lock().await;
    let store = state.store.clone();
    let outcome = blocking(move || store.revoke(&target, reason, now()))
        .await?
        .map_err(|e| match e {
            RevokeError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "this CA issued no certificate with that serial; to revoke one signed with its key outside its database, give node_id too (the node the certificate names)",
            ),
            RevokeError::OwnerMismatch { .. } => {
                ApiError::bad_request("serial_owner_mismatch", e.to_string())
            }
            RevokeError::Store(e) => ApiError::internal(e),
            #[allow(unreachable_patterns)]
            other => ApiError::internal(other),
        })?;
    if outcome.newly_revoked.is_empty() && outcome.revoked_node.is_none() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let der = {
        let state = state.clone();
        blocking(move || {
            sign_and_save_crl(
                &state.ca,
                &state.store,
                &state.dir,
                outcome.crl_number,
                now(),
            )
        })
        .await?
        .map_err(ApiError::internal)?
    };
    drop(guard);
    if let Err(error) = state.trust.apply_crl(&der) {
        tracing::warn!(%error, "could not apply own CRL");
    }
    let record = match revocation_record(&state.ca, &der, outcome.revoked_node) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::warn!(%error, "could not sign the revocation record; pushing the CRL only");
            None
        }
    };
    tracing::info!(revoked = ?outcome.newly_revoked, crl_number = outcome.crl_number, "revoked; pushing the revocation to nodes");
    tokio::spawn(push_crl(state.clone(), der, record));
    Ok(StatusCode::NO_CONTENT)
}

/// How long a revocation record travels in gossip (nodes also fetch the CRL periodically).
const REVOCATION_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// The CA-signed gossip message that carries a new CRL (and the node it bans, if any) through
/// the mesh. Its origin is the CA's own NodeId; nodes accept the revocation kind from no one else.
pub fn revocation_record(
    ca: &CertificateAuthority,
    crl_der: &[u8],
    revoked_node: Option<NodeId>,
) -> Result<Vec<u8>, String> {
    let origin = ca.envelope_key().map_err(|e| e.to_string())?.node_id();
    let body = ztmesh_gossip::kinds::RevocationRecord {
        crl: crl_der.to_vec(),
        revoked_nodes: revoked_node.into_iter().collect(),
    }
    .encode()
    .map_err(|e| e.to_string())?;
    let created_at = now();
    let mut failure = None;
    let signed = ztmesh_gossip::UnsignedMessage {
        origin,
        kind: ztmesh_gossip::MessageKind::Revocation,
        body,
        created_at,
        expires_at: created_at.saturating_add(REVOCATION_RECORD_TTL),
        hop_limit: 16,
    }
    .sign(None, |tbs| match ca.sign_envelope(tbs) {
        Ok(signature) => signature,
        Err(error) => {
            failure = Some(error.to_string());
            [0; 64]
        }
    })
    .map_err(|e| e.to_string())?;
    match failure {
        Some(error) => Err(error),
        None => Ok(signed),
    }
}

/// Pushes a revocation to known nodes' APIs so links to revoked nodes close at once: the signed
/// record (which nodes then gossip) to `revocation_push` random nodes or all, the bare CRL where
/// a node refuses the record. Nodes that miss both pick the CRL up at their next refresh.
async fn push_crl(state: Arc<CaState>, der: Vec<u8>, record: Option<Vec<u8>>) {
    let store = state.store.clone();
    let mut nodes = match tokio::task::spawn_blocking(move || store.known_nodes(1024)).await {
        Ok(Ok(nodes)) => nodes,
        _ => return,
    };
    nodes.retain(|n| n.api_addr.is_some());
    if state.options.revocation_push > 0 && record.is_some() {
        use rand::seq::SliceRandom;
        nodes.shuffle(&mut rand::thread_rng());
        nodes.truncate(state.options.revocation_push);
    }
    let config = match crate::tls::node_api_client_config(state.trust.clone(), None) {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(%error, "CRL push: TLS config");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(%error, "CRL push: client");
            return;
        }
    };
    // Bounded concurrency: at most 16 pushes in flight.
    use futures::StreamExt;
    futures::stream::iter(
        nodes
            .into_iter()
            .filter_map(|n| n.api_addr.map(|a| (n.node_id, a))),
    )
    .for_each_concurrent(16, |(node, addr)| {
        let client = client.clone();
        let der = der.clone();
        let record = record.clone();
        async move {
            if let Some(record) = record {
                let result = client
                    .post(format!("https://{addr}/v1/revocations"))
                    .header(header::CONTENT_TYPE, "application/cose")
                    .body(record)
                    .send()
                    .await;
                match result {
                    Ok(r) if r.status().is_success() => {
                        tracing::debug!(%node, "revocation record pushed");
                        return;
                    }
                    Ok(r) => {
                        tracing::debug!(%node, status = %r.status(), "revocation record refused")
                    }
                    Err(error) => tracing::debug!(%node, %error, "revocation record push failed"),
                }
            }
            let result = client
                .post(format!("https://{addr}/v1/crl"))
                .header(header::CONTENT_TYPE, "application/pkix-crl")
                .body(der)
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => tracing::debug!(%node, "CRL pushed"),
                Ok(r) => tracing::debug!(%node, status = %r.status(), "CRL push refused"),
                Err(error) => tracing::debug!(%node, %error, "CRL push failed"),
            }
        }
    })
    .await;
}

async fn refresh_crl_forever(state: Arc<CaState>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let store = state.store.clone();
        let Ok(Ok(Some((_, _, this_update, _)))) =
            tokio::task::spawn_blocking(move || store.latest_crl()).await
        else {
            continue;
        };
        if now().duration_since(this_update) < CRL_VALIDITY / 2 {
            continue;
        }
        let _guard = state.crl_lock.lock().await;
        let s = state.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, CaError> {
            let number = s.store.next_crl_number()?;
            sign_and_save_crl(&s.ca, &s.store, &s.dir, number, now())
        })
        .await;
        match result {
            Ok(Ok(der)) => {
                let _ = state.trust.apply_crl(&der);
            }
            Ok(Err(error)) => tracing::warn!(%error, "CRL refresh failed"),
            Err(error) => tracing::warn!(%error, "CRL refresh task failed"),
        }
    }
}

async fn announce(
    State(state): State<Arc<CaState>>,
    presented: Option<Extension<PresentedCertificate>>,
    body: Result<ApiJson<AnnounceRequest>, ApiError>,
) -> Result<Json<AnnounceResponse>, ApiError> {
    let cert = authenticated_node(&state, presented).await?;
    let ApiJson(request) = body?;
    for addr in [&request.mesh_addr, &request.api_addr]
        .into_iter()
        .flatten()
    {
        addr.parse::<SocketAddr>().map_err(|_| {
            ApiError::bad_request(
                "malformed_addr",
                format!("{addr:?} is not an ip:port address"),
            )
        })?;
    }
    let store = state.store.clone();
    let node_id = cert.node_id;
    let peers = blocking(
        move || -> Result<Vec<PeerAdvert>, crate::store::StoreError> {
            store.announce(
                &node_id,
                request.mesh_addr.as_deref(),
                request.api_addr.as_deref(),
                now(),
            )?;
            Ok(store
                .known_nodes(64)?
                .into_iter()
                .filter(|n| n.node_id != node_id)
                .filter_map(|n| {
                    n.mesh_addr.map(|addr| PeerAdvert {
                        node_id: n.node_id,
                        addr,
                    })
                })
                .collect())
        },
    )
    .await?
    .map_err(ApiError::internal)?;
    Ok(Json(AnnounceResponse { peers }))
}

/// Content type of the log's text answers (key, checkpoint note, policy).
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

fn text_answer(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, TEXT_PLAIN),
            // The newest checkpoint changes with every event: caches must ask again.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        text,
    )
        .into_response()
}

fn query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|e| ApiError::bad_request("malformed_query", e.body_text()))
}

async fn log_key(State(state): State<Arc<CaState>>) -> Response {
    text_answer(state.log_signer.vkey())
}

async fn log_checkpoint(State(state): State<Arc<CaState>>) -> Result<Response, ApiError> {
    let note = state.log.latest_note().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_checkpoint",
            "no membership checkpoint has been signed yet",
        )
    })?;
    Ok(text_answer(note.to_string()))
}

async fn log_policy(State(state): State<Arc<CaState>>) -> Result<Response, ApiError> {
    let policy = state.log_policy.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_policy",
            "this CA was started without a membership log policy (--log-policy)",
        )
    })?;
    Ok(text_answer(policy.text().to_owned()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntriesQuery {
    #[serde(default)]
    start: u64,
    #[serde(default = "default_entries_count")]
    count: u64,
}

fn default_entries_count() -> u64 {
    DEFAULT_ENTRIES_PER_REQUEST
}

async fn log_entries(
    State(state): State<Arc<CaState>>,
    request: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogEntriesResponse>, ApiError> {
    let EntriesQuery { start, count } = query(request)?;
    let log = state.log.clone();
    let entries = blocking(move || log.entries(start, count)).await??;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Json(LogEntriesResponse {
        entries: entries
            .into_iter()
            .map(|(index, leaf)| LogEntryItem {
                index,
                leaf: b64.encode(leaf),
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    index: u64,
    size: u64,
}

async fn log_inclusion_proof(
    State(state): State<Arc<CaState>>,
    request: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProofResponse>, ApiError> {
    let InclusionQuery { index, size } = query(request)?;
    let log = state.log.clone();
    let proof = blocking(move || log.inclusion_proof(index, size)).await??;
    Ok(Json(ProofResponse::new(&proof)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    old: u64,
    new: u64,
}

async fn log_consistency_proof(
    State(state): State<Arc<CaState>>,
    request: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ProofResponse>, ApiError> {
    let ConsistencyQuery { old, new } = query(request)?;
    let log = state.log.clone();
    let proof = blocking(move || log.consistency_proof(old, new)).await??;
    Ok(Json(ProofResponse::new(&proof)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztmesh_attest::policy::ENROLL_EVIDENCE_MAX_AGE;
    use ztmesh_attest::{AttestError, EvidenceType};

    const NOW: u64 = 1_750_000_000;

    fn binding() -> [u8; 64] {
        ztmesh_attest::report_data_binding(b"token hash", b"tls spki")
    }

    #[test]
    fn rotation_grace_counts_from_expiry_and_zero_turns_it_off() {
        let expiry = Timestamp::from_unix_secs(NOW);
        let grace = Duration::from_secs(3600);
        let after = |secs| expiry.saturating_add(Duration::from_secs(secs));
        assert_eq!(
            within_rotation_grace(after(0), expiry, grace),
            Some(Duration::ZERO)
        );
        assert_eq!(
            within_rotation_grace(after(3600), expiry, grace),
            Some(grace)
        );
        assert_eq!(within_rotation_grace(after(3601), expiry, grace), None);
        assert_eq!(
            within_rotation_grace(after(1), expiry, Duration::ZERO),
            None
        );
        assert_eq!(
            within_rotation_grace(after(1), expiry, DEFAULT_ROTATION_GRACE),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn dev_evidence_needs_the_dev_key_in_the_policy() {
        let tee = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let payload = AttestationPayload {
            evidence: ztmesh_attest::dev::generate(&tee, &[0; 32], &binding(), NOW),
            collateral: None,
        };
        let refused = EnrollAttestationPolicy::default();
        assert_eq!(
            verify_enrollment_evidence(&refused, EvidenceType::Dev, &payload, &binding(), NOW),
            Err(AttestError::DevNotAllowed)
        );
        let allowed = EnrollAttestationPolicy {
            dev_tee_keys: vec![tee.verifying_key()],
            ..EnrollAttestationPolicy::default()
        };
        assert!(
            verify_enrollment_evidence(&allowed, EvidenceType::Dev, &payload, &binding(), NOW)
                .is_ok()
        );
        let stale = NOW + ENROLL_EVIDENCE_MAX_AGE.as_secs() + 1;
        assert_eq!(
            verify_enrollment_evidence(&allowed, EvidenceType::Dev, &payload, &binding(), stale)
                .unwrap_err()
                .reason(),
            "stale"
        );
    }

    #[test]
    fn hardware_evidence_without_its_collateral_or_trusted_key_is_refused() {
        let policy = EnrollAttestationPolicy::default();
        let bare = AttestationPayload {
            evidence: vec![0; 16],
            collateral: None,
        };
        for kind in [EvidenceType::SevSnp, EvidenceType::Tpm2] {
            assert_eq!(
                verify_enrollment_evidence(&policy, kind, &bare, &binding(), NOW),
                Err(AttestError::MissingCollateral),
                "{kind:?}"
            );
        }
        // A well-formed key the CA was never given.
        let untrusted = p256_pem();
        let with_key = AttestationPayload {
            evidence: vec![0; 16],
            collateral: Some(untrusted.into_bytes()),
        };
        assert_eq!(
            verify_enrollment_evidence(&policy, EvidenceType::Tpm2, &with_key, &binding(), NOW)
                .unwrap_err()
                .reason(),
            "bad_chain"
        );
    }

    /// A P-256 public key PEM (the generator point as the key: valid, owned by nobody here).
    fn p256_pem() -> String {
        let spki = hex::decode(concat!(
            "3059301306072a8648ce3d020106082a8648ce3d030107034200",
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        ))
        .unwrap();
        pem::encode(&pem::Pem::new("PUBLIC KEY", spki))
    }
}
