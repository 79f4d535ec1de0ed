//! `ca init` and the CA's directory: the CA key and certificate, the membership-log key, the
//! admin credential's hash, the first CRL. Keys are written encrypted (or refused in plaintext)
//! and private; loading checks that the files belong together. It serves no route.

use crate::membership_log::{self};
use crate::private_files::{create_private_dir, write_private_file};
use crate::store::CaStore;
use crate::timefmt::now;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;
use ztmesh_core::{Timestamp, TrustDomain};
use ztmesh_pki::keyfile::{self, KdfParams, Protection};
use ztmesh_pki::CertificateAuthority;
use ztmesh_tlog::Signer;

/// How long a signed CRL is valid (nextUpdate - thisUpdate). The CA re-signs at half of it.
pub const CRL_VALIDITY: Duration = Duration::from_secs(3600);

/// Back-dating of notBefore, so peers with a slightly slow clock accept a new certificate.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
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

pub(crate) fn admin_hash(credential: &str) -> String {
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
pub(crate) fn create_log_key(
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

pub(crate) fn sign_and_save_crl(
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
