//! What every CA route shares: the options of `ca serve`, the state behind the routes, and the
//! guards a request passes first (rate limit, authenticated node, not revoked, admin credential),
//! plus small answer helpers. It must never decide a route's outcome itself.

use crate::api_error::ApiError;
use crate::ca_dir::{admin_hash, CaDir};
use crate::https::ClientAddr;
use crate::membership_log::{LogPolicy, MembershipLog};
use crate::rate_limit::{FailedCredentials, RateLimiter};
use crate::store::CaStore;
use crate::timefmt::now;
use crate::tls::{MeshTrust, PresentedCertificate};
use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ztmesh_attest::policy::EnrollAttestationPolicy;
use ztmesh_core::NodeId;
use ztmesh_pki::{CertificateAuthority, Serial};
use ztmesh_tlog::Signer;

/// Largest request body any CA route accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Default of `ca serve --rotation-grace`: how long after its certificate expired a node may
/// still rotate by proving its identity key. A week outlasts a CA outage over a long weekend;
/// a node that should not come back after that long is revoked, not left to expire.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(7 * 86_400);

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

pub(crate) struct CaState {
    pub(crate) ca: CertificateAuthority,
    pub(crate) dir: CaDir,
    pub(crate) store: Arc<CaStore>,
    pub(crate) trust: Arc<MeshTrust>,
    pub(crate) limiter: Mutex<RateLimiter>,
    /// Rotations presenting an expired certificate, per node (see [`rotation_client`]).
    pub(crate) expired_rotations: Mutex<RateLimiter<NodeId>>,
    /// The same for attempts whose identity proof failed (see [`expired_rotation_budget`]).
    pub(crate) expired_rotation_failures: Mutex<RateLimiter<NodeId>>,
    /// Wrong admin credentials: counted, and limited per address (guessing is refused).
    pub(crate) failed_admin: Mutex<FailedCredentials>,
    pub(crate) options: CaServeOptions,
    pub(crate) public_url: String,
    pub(crate) admin_hash: String,
    /// Serializes CRL signing so numbers and files advance together.
    pub(crate) crl_lock: tokio::sync::Mutex<()>,
    /// The membership log: tree, newest checkpoint.
    pub(crate) log: Arc<MembershipLog>,
    /// The log key; only the publisher signs with it.
    pub(crate) log_signer: Signer,
    /// The tlog-policy given with `--log-policy`, if any.
    pub(crate) log_policy: Option<Arc<LogPolicy>>,
    /// Attestation challenges and tokens.
    pub(crate) tokens: crate::ca_attest::TokenDesk,
    /// Mesh-event reports per node in the current minute.
    pub(crate) event_reports: Mutex<std::collections::HashMap<NodeId, (u64, u32)>>,
    /// TPM credentials waiting to be activated, by token (memory only: a restart forgets them
    /// and nodes ask again).
    pub(crate) tpm2: Mutex<crate::ca_tpm2::Tpm2Activations>,
    /// Tallies of reported governance decisions the CA follows.
    pub(crate) governance: Mutex<ztmesh_trust::ca_governance::CaGovernance>,
    /// Lifetime of issued certificates in force, seconds (the flag or a governed value), and
    /// the proposal that set it.
    pub(crate) cert_lifetime: Mutex<(Duration, Option<String>)>,
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

impl CaState {
    /// Lifetime of the certificates issued now.
    pub(crate) fn cert_lifetime(&self) -> Duration {
        self.cert_lifetime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
    }
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

pub(crate) fn decode_b64(text: &str, code: &'static str, what: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| ApiError::bad_request(code, format!("{what} is not valid base64")))
}

pub(crate) fn rate_limited(
    state: &CaState,
    client: Option<Extension<ClientAddr>>,
) -> Result<(), ApiError> {
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

pub(crate) fn lock_tpm2(
    state: &CaState,
) -> std::sync::MutexGuard<'_, crate::ca_tpm2::Tpm2Activations> {
    // The desk holds plain data and every critical section leaves it consistent.
    state.tpm2.lock().unwrap_or_else(|p| p.into_inner())
}

/// Judges the client certificate of a request to an mTLS route: 401 when missing or invalid,
/// 403 when revoked (checked against the store, not just the CRL).
pub(crate) async fn authenticated_node(
    state: &CaState,
    presented: Option<Extension<PresentedCertificate>>,
) -> Result<ztmesh_pki::NodeCertificate, ApiError> {
    let cert = crate::api_error::verified_client(&state.trust, presented)?;
    refuse_revoked(state, &cert).await?;
    Ok(cert)
}

/// 403 `revoked` when the node or this certificate is revoked in the store.
pub(crate) async fn refuse_revoked(
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

pub(crate) fn state_serial_revoked(
    store: &CaStore,
    serial: &Serial,
) -> Result<bool, crate::store::StoreError> {
    Ok(store.revoked_entries()?.iter().any(|e| &e.serial == serial))
}

/// Checks the admin credential. An address that presented too many wrong ones is refused
/// (429) before its credential is even compared; each wrong one is counted and logged.
pub(crate) fn require_admin(
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

pub(crate) fn check_admin_credential(state: &CaState, headers: &HeaderMap) -> Result<(), ApiError> {
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

/// Content type of the log's text answers (key, checkpoint note, policy).
pub(crate) const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

pub(crate) fn text_answer(text: String) -> Response {
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

pub(crate) fn query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|e| ApiError::bad_request("malformed_query", e.body_text()))
}
