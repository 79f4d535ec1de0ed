//! The CA's HTTPS API (`ztmesh ca serve`): [`CaService`] binds, loads the state and serves the
//! router below through the runtime's accept loop; the routes live in `routes/` by concern,
//! `ca init` and the CA's files in [`crate::ca_dir`].
//!
//! Routes: `GET /v1/ca`, `POST /v1/enroll`, `POST /v1/enroll/tpm2/credential`,
//! `POST /v1/rotate` (mTLS; an expired certificate within `--rotation-grace`, see
//! `routes/rotate.rs`), `GET /v1/crl`,
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
//! [`enrollment_report_data`](ztmesh_attest::policy::enrollment_report_data): `report_data_binding(SHA-256(token), CSR's TLS
//! SubjectPublicKeyInfo DER)`, which ties it to this one-time token and this TLS key. The
//! [`EnrollAttestationPolicy`](ztmesh_attest::policy::EnrollAttestationPolicy) decides whether evidence is required and which kinds can be
//! verified; evidence is checked before the token is spent, so a refusal never burns a token,
//! and evidence that does not verify is always refused, never ignored.
//!
//! A `tpm2` quote is trusted when its attestation key is configured (`--tpm2-attestation-key`)
//! or was activated for this very token against an allowed endorsement key: the node asks
//! `POST /v1/enroll/tpm2/credential` first and enrolls with the secret its TPM recovered (see
//! [`crate::ca_tpm2`]). An activated key is registered for the node in the same transaction
//! as its certificate, and `POST /v1/attest` trusts that node's quotes signed with it.

use crate::api_error::{method_not_allowed, not_found};
use crate::api_types::*;
use crate::ca_dir::io_err;
pub use crate::ca_dir::{
    init_ca, load_ca, load_ca_keys, load_log_key, log_vkey, CaDir, CaError, CaInitReport, CaKeys,
    CLOCK_SKEW_ALLOWANCE, CRL_VALIDITY,
};
use crate::ca_state::CaState;
pub use crate::ca_state::{decode_csr, CaServeOptions, DEFAULT_ROTATION_GRACE, MAX_BODY_BYTES};
use crate::membership_log::{self, HttpWitnessTransport, LogPolicy, LogPublisher, MembershipLog};
use crate::rate_limit::RateLimiter;
use crate::routes::attest::{attest, attest_challenge};
use crate::routes::enroll::{create_token, enroll, tpm2_credential};
pub use crate::routes::enroll::{parse_attestation, MAX_TOKEN_TTL};
pub use crate::routes::log::EVENT_REPORTS_PER_MINUTE;
use crate::routes::log::{
    log_checkpoint, log_consistency_proof, log_entries, log_event, log_inclusion_proof, log_key,
    log_policy,
};
pub use crate::routes::revoke::revocation_record;
use crate::routes::revoke::{announce, get_crl, refresh_crl_forever, revoke};
use crate::routes::rotate::rotate;
pub use crate::routes::rotate::{EXPIRED_ROTATIONS_BURST, EXPIRED_ROTATIONS_PER_MINUTE};
use crate::store::CaStore;
use crate::timefmt::now;
use crate::tls::{CurrentCertificate, MeshTrust};
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ztmesh_pki::{Serial, TlsKeyPair};
use ztmesh_tlog::Signer;

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
