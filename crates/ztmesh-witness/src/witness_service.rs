//! The C2SP tlog-witness server (`ztmesh witness serve`) and its data directory
//! (`ztmesh witness init`, `key`, `add-log`).
//!
//! A witness cosigns a log's checkpoint only when it is consistent with the last checkpoint it
//! cosigned for that log. It must never cosign a rollback or a fork: not when two requests
//! race, and not after a crash or a restart. One route does the work, `POST /add-checkpoint`,
//! and every request goes through the same steps (the decisions are the sans-IO
//! [`ztmesh_tlog::witness`] module's; this module owns the state, the clock and the sockets):
//!
//! 1. the body is read under a size cap and a time limit, then parsed
//!    ([`AddCheckpointRequest::parse`]);
//! 2. the head last cosigned for the origin is read from `witness.db`;
//! 3. [`AddCheckpointRequest::check`] verifies the log signature and the consistency proof
//!    against that head;
//! 4. [`WitnessStore::compare_and_swap`] stores the new head only if the stored one is still
//!    the head read in step 2, and the outcome goes to [`AcceptedCheckpoint::after_swap`];
//! 5. only a stored head is cosigned, with the current time ([`StoredCheckpoint::cosign`]).
//!
//! Checking and storing are thus one atomic step as seen from the database: a request that was
//! checked against a head someone else has moved since is answered 409 with the new size and
//! is never cosigned. A test hook between steps 3 and 4 lets tests force that race.
//!
//! Before step 2 the router asks its [`CosignGate`] whether this witness may cosign at all. The
//! standalone `ztmesh witness serve` always may ([`always_open`]); a node witnessing its own
//! mesh's log may only while it is Tier 1 (`node_witness`), and a closed gate is a 503 that
//! reads and changes nothing.
//!
//! The protocol is plain text, not the JSON of the `/v1` APIs: 200 answers are cosignature
//! lines (`text/plain`), a 409 carries the known tree size (`text/x.tlog.size`), and every other
//! refusal is one short line of explanation. [`AddCheckpointError::http_status`] is the one
//! place where outcomes become statuses.
//!
//! The server speaks plain HTTP over TCP. That is deliberate: the request is authenticated by
//! the log's signature on the checkpoint and the answer by the witness's own cosignature, so
//! TLS would add no protection the protocol relies on (the spec authenticates no client
//! either). It binds to loopback unless the operator chooses another address. Decisions made at once
//! and body sizes are bounded here; connections, handshake, header, body and idle
//! times by the shared accept loop ([`crate::https::serve_plain`]). With no TLS there is no
//! client certificate, so the loop's authenticated reserve goes to [`LogSubmitters`]: the
//! addresses that recently brought a checkpoint moving a followed log's head forward.

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use ztmesh_pki::keyfile::{self, KdfParams, Protection};
use ztmesh_tlog::witness::{MAX_REQUEST_LEN, TLOG_SIZE_CONTENT_TYPE};
use ztmesh_tlog::{
    AcceptedCheckpoint, AddCheckpointRequest, Checkpoint, CheckpointError, CosignatureSigner,
    CosignatureVerifier, KeyError, SignError, StoredCheckpoint, Verifier, WitnessError,
};

use crate::https::{ClientAddr, ClientClass, ClientClassifier};
use crate::private_files::{create_private_dir, write_private_file};
use crate::store::{StoreError, WitnessStore};
use crate::timefmt::now;

/// Requests decided at the same time. Each decision holds a blocking thread, so this bounds
/// the witness's thread use; further requests wait for a slot. A request takes its slot only
/// once its body is in: bodies being read are bounded by the accept loop instead (connections
/// per pool, [`MAX_REQUEST_LEN`] bytes each, [`crate::https::BODY_READ_DEADLINE`]), so slow
/// clients cannot hold the slots the log's own checkpoints need.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;

/// How long an address that brought this witness a new head of a followed log keeps its
/// place in the reserve ([`LogSubmitters`]). Logs publish only when they grow, so this is long.
pub const LOG_SUBMITTER_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// Addresses remembered as log submitters at once; the oldest is forgotten first.
pub const MAX_LOG_SUBMITTERS: usize = 64;

/// Longest a client may take to send a request body once its headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest `witness.toml` read (a config with thousands of logs stays far below it).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Content type of every text answer except the 409.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Files of a witness data directory.
#[derive(Debug, Clone)]
pub struct WitnessDir(pub PathBuf);

impl WitnessDir {
    /// The configuration (`witness.toml`): name, listen address, trusted logs.
    pub fn config(&self) -> PathBuf {
        self.0.join("witness.toml")
    }
    /// The cosigning key, PKCS#8 sealed with the passphrase (`witness.key`, mode 0600).
    pub fn key(&self) -> PathBuf {
        self.0.join("witness.key")
    }
    /// The public cosigning key as a vkey (`witness.vkey`), readable without the passphrase.
    pub fn vkey(&self) -> PathBuf {
        self.0.join("witness.vkey")
    }
    /// The latest cosigned head of every log (`witness.db`).
    pub fn state_db(&self) -> PathBuf {
        self.0.join("witness.db")
    }
    /// Written by `witness serve` once listening: the bound address (`witness.addr`).
    pub fn addr_file(&self) -> PathBuf {
        self.0.join("witness.addr")
    }
}

/// `witness.toml`. Unknown keys are refused, so a typo cannot silently drop a setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness name: the key name of its cosignatures, part of its key ID, fixed at init.
    pub name: String,
    /// Where `witness serve` listens unless `--listen` says otherwise.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The logs this witness cosigns for.
    #[serde(default)]
    pub logs: Vec<LogConfig>,
}

/// One trusted log key. Several entries may share an origin (a log rotating its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The checkpoint origin line of the log.
    pub origin: String,
    /// The log's Ed25519 note verifier key, `name+hex key ID+base64`.
    pub vkey: String,
}

/// Loopback and an ephemeral port: nothing is exposed unless the operator asks.
fn default_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// What is wrong with `witness.toml`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Not TOML, a missing or unknown key, or a value of the wrong type.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// The witness name cannot be a key name.
    #[error("name {name:?}")]
    BadName {
        /// The configured name.
        name: String,
        /// Why it was refused.
        source: KeyError,
    },
    /// A log vkey does not parse (or is not an Ed25519 note key).
    #[error("logs[{index}].vkey {vkey:?}")]
    BadVkey {
        /// 0-based position in `logs`.
        index: usize,
        /// The configured vkey.
        vkey: String,
        /// Why it was refused.
        source: KeyError,
    },
    /// A log origin could not be a checkpoint's first line.
    #[error("logs[{index}].origin {origin:?}")]
    BadOrigin {
        /// 0-based position in `logs`.
        index: usize,
        /// The configured origin.
        origin: String,
        /// Why it was refused.
        source: CheckpointError,
    },
    /// The same key is listed twice for one origin.
    #[error("logs[{index}] repeats the key {vkey:?} for origin {origin:?}")]
    DuplicateLog {
        /// 0-based position of the repetition in `logs`.
        index: usize,
        /// The origin.
        origin: String,
        /// The repeated vkey.
        vkey: String,
    },
}

/// Errors of witness set-up and start-up (not of requests). Each message names what was
/// refused and leaves the reason to [`std::error::Error::source`], so a printed chain
/// (`{:#}` in the CLI) says each thing once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessSetupError {
    /// A witness already exists in the directory.
    #[error("a witness already exists in {0} (refusing to overwrite it)")]
    AlreadyInitialized(PathBuf),
    /// No witness in the directory.
    #[error("no witness in {0}: run `ztmesh witness init` first")]
    NotInitialized(PathBuf),
    /// The configuration exists but the state database does not.
    #[error("{0} is missing: a witness that lost its state could cosign a rollback or a fork; restore it from a backup, or retire this witness and its key")]
    StateMissing(PathBuf),
    /// `witness.toml` is invalid.
    #[error("{path}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        source: ConfigError,
    },
    /// A vkey given to `add-log` does not parse (or is not an Ed25519 note key).
    #[error("invalid log vkey {vkey:?}")]
    BadLogKey {
        /// The vkey as given.
        vkey: String,
        /// Why it was refused.
        source: KeyError,
    },
    /// An origin given to `add-log` could not be a checkpoint's first line.
    #[error("invalid log origin {origin:?}")]
    BadOrigin {
        /// The origin as given.
        origin: String,
        /// Why it was refused.
        source: CheckpointError,
    },
    /// `add-log` of a key the witness already trusts for that origin.
    #[error("log {origin:?} with key {vkey} is already configured")]
    DuplicateLog {
        /// The origin.
        origin: String,
        /// The vkey.
        vkey: String,
    },
    /// The witness name is not a valid key name.
    #[error("witness name {name:?}")]
    BadName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        source: KeyError,
    },
    /// The key and name in the directory do not make the vkey recorded at init.
    #[error("witness.toml name {name:?} with witness.key gives {derived}, but witness.vkey records {recorded}; the name is part of the key ID and cannot change after init")]
    KeyMismatch {
        /// The configured name.
        name: String,
        /// The vkey the configured name and key make.
        derived: String,
        /// The vkey written at init.
        recorded: String,
    },
    /// The key file cannot be opened (wrong passphrase included) or holds no Ed25519 key.
    #[error(transparent)]
    Pki(#[from] ztmesh_pki::PkiError),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// File or socket problem.
    #[error("{path}")]
    Io {
        /// Which file (or the data directory, for sockets).
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WitnessSetupError + '_ {
    move |source| WitnessSetupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The key-name rule belongs to the tlog crate; a throwaway public key lets us ask it about a
/// name before any real key exists.
fn check_witness_name(name: &str) -> Result<(), KeyError> {
    CosignatureVerifier::new(name, SigningKey::from_bytes(&[0; 32]).verifying_key()).map(drop)
}

/// The origin rule belongs to the checkpoint format: an origin is valid if a checkpoint can
/// carry it.
fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    Checkpoint::new(origin, 0, ztmesh_tlog::merkle::empty_root()).map(drop)
}

impl WitnessConfig {
    /// Parses and validates `witness.toml` text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: WitnessConfig = toml::from_str(text)?;
        config.trusted_logs()?;
        Ok(config)
    }

    /// The configured logs as verifiers per origin; refuses invalid names, origins and keys and
    /// a key listed twice for one origin.
    pub fn trusted_logs(&self) -> Result<TrustedLogs, ConfigError> {
        check_witness_name(&self.name).map_err(|source| ConfigError::BadName {
            name: self.name.clone(),
            source,
        })?;
        let mut logs = TrustedLogs::default();
        for (index, log) in self.logs.iter().enumerate() {
            check_origin(&log.origin).map_err(|source| ConfigError::BadOrigin {
                index,
                origin: log.origin.clone(),
                source,
            })?;
            let verifier = Verifier::parse(&log.vkey).map_err(|source| ConfigError::BadVkey {
                index,
                vkey: log.vkey.clone(),
                source,
            })?;
            if logs.verifiers(&log.origin).contains(&verifier) {
                return Err(ConfigError::DuplicateLog {
                    index,
                    origin: log.origin.clone(),
                    vkey: log.vkey.clone(),
                });
            }
            logs.insert(&log.origin, verifier);
        }
        Ok(logs)
    }
}

/// The log keys a witness trusts, by checkpoint origin.
#[derive(Debug, Clone, Default)]
pub struct TrustedLogs {
    by_origin: HashMap<String, Vec<Verifier>>,
}

impl TrustedLogs {
    /// Trusts `verifier` for checkpoints of `origin`.
    pub fn insert(&mut self, origin: &str, verifier: Verifier) {
        self.by_origin
            .entry(origin.to_owned())
            .or_default()
            .push(verifier);
    }

    /// The keys trusted for `origin`; empty for an unknown log.
    pub fn verifiers(&self, origin: &str) -> &[Verifier] {
        self.by_origin.get(origin).map_or(&[], Vec::as_slice)
    }

    /// Number of distinct origins.
    pub fn len(&self) -> usize {
        self.by_origin.len()
    }

    /// Whether no log is trusted (every request is then a 404).
    pub fn is_empty(&self) -> bool {
        self.by_origin.is_empty()
    }
}

/// What `witness init` produced.
#[derive(Debug, Clone)]
pub struct WitnessInitReport {
    /// The witness's public key (cosignature/v1 vkey) for logs and policies to trust.
    pub vkey: String,
    /// Path of `witness.toml`.
    pub config_path: PathBuf,
}

/// Creates a witness in `dir`: cosigning key (sealed with `protection`), `witness.vkey`, an
/// empty `witness.db` and `witness.toml` (written last, so its presence means a complete init).
pub fn init_witness(
    dir: &WitnessDir,
    name: &str,
    protection: &Protection<'_>,
) -> Result<WitnessInitReport, WitnessSetupError> {
    check_witness_name(name).map_err(|source| WitnessSetupError::BadName {
        name: name.to_owned(),
        source,
    })?;
    create_private_dir(&dir.0).map_err(io_err(&dir.0))?;
    if [dir.config(), dir.key(), dir.vkey(), dir.state_db()]
        .iter()
        .any(|path| path.exists())
    {
        return Err(WitnessSetupError::AlreadyInitialized(dir.0.clone()));
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let signer =
        CosignatureSigner::new(name, key.clone()).map_err(|source| WitnessSetupError::BadName {
            name: name.to_owned(),
            source,
        })?;
    let der = key.to_pkcs8_der().map_err(|e| {
        ztmesh_pki::PkiError::MalformedKey(format!("witness key PKCS#8 encoding: {e}"))
    })?;
    let sealed = keyfile::seal(
        der.as_bytes(),
        protection,
        KdfParams::DEFAULT,
        &mut rand::rngs::OsRng,
    )?;
    write_private_file(&dir.key(), sealed.as_bytes()).map_err(io_err(&dir.key()))?;
    let vkey = signer.vkey();
    write_private_file(&dir.vkey(), format!("{vkey}\n").as_bytes()).map_err(io_err(&dir.vkey()))?;
    drop(WitnessStore::open(&dir.state_db())?);
    write_private_file(&dir.config(), initial_config_text(name).as_bytes())
        .map_err(io_err(&dir.config()))?;
    Ok(WitnessInitReport {
        vkey,
        config_path: dir.config(),
    })
}

/// A TOML basic string (quoted and escaped).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn initial_config_text(name: &str) -> String {
    format!(
        "# ztmesh witness (C2SP tlog-witness). Changes take effect at the next `ztmesh witness serve`.\n\
         \n\
         # The cosignature key name; it is part of the key ID, so it cannot change after init.\n\
         name = {name}\n\
         # Plain HTTP: requests are signed by the log and answers by the witness.\n\
         listen = {listen}\n\
         \n\
         # Trusted logs, one [[logs]] table per key (`ztmesh witness add-log` appends them):\n\
         # [[logs]]\n\
         # origin = \"example.com/log\"\n\
         # vkey = \"example.com/log+<key ID>+<base64 key>\"\n",
        name = toml_string(name),
        listen = toml_string(&default_listen().to_string()),
    )
}

fn read_config_text(dir: &WitnessDir) -> Result<String, WitnessSetupError> {
    let path = dir.config();
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(WitnessSetupError::NotInitialized(dir.0.clone()));
        }
        Err(error) => return Err(io_err(&path)(error)),
    };
    let mut text = String::new();
    // One byte over the cap tells "too large" apart from "exactly at the cap".
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1),
        &mut text,
    )
    .map_err(io_err(&path))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(io_err(&path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        )));
    }
    Ok(text)
}

/// Reads and validates `witness.toml`.
pub fn read_config(dir: &WitnessDir) -> Result<WitnessConfig, WitnessSetupError> {
    let text = read_config_text(dir)?;
    WitnessConfig::parse(&text).map_err(|source| WitnessSetupError::Config {
        path: dir.config(),
        source,
    })
}

/// The witness's public key, as recorded at init (no passphrase needed).
pub fn witness_vkey(dir: &WitnessDir) -> Result<CosignatureVerifier, WitnessSetupError> {
    // The config marks a complete init; without it, say so rather than "no such file".
    read_config_text(dir)?;
    let path = dir.vkey();
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    CosignatureVerifier::parse(text.trim()).map_err(|e| {
        io_err(&path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a cosignature vkey: {e}"),
        ))
    })
}

/// Trusts a log: appends `[[logs]]` with `origin` (default: the vkey's key name, which the
/// checkpoint spec recommends logs use as their origin) and `vkey` to `witness.toml`, keeping
/// the rest of the file (comments included) as it is. A running witness picks it up at its
/// next start.
pub fn add_log(
    dir: &WitnessDir,
    vkey: &str,
    origin: Option<&str>,
) -> Result<LogConfig, WitnessSetupError> {
    let text = read_config_text(dir)?;
    let config_error = |source| WitnessSetupError::Config {
        path: dir.config(),
        source,
    };
    let mut config = WitnessConfig::parse(&text).map_err(config_error)?;
    let vkey = vkey.trim();
    let verifier = Verifier::parse(vkey).map_err(|source| WitnessSetupError::BadLogKey {
        vkey: vkey.to_owned(),
        source,
    })?;
    let origin = origin.unwrap_or(verifier.name()).to_owned();
    check_origin(&origin).map_err(|source| WitnessSetupError::BadOrigin {
        origin: origin.clone(),
        source,
    })?;
    let entry = LogConfig {
        origin,
        vkey: verifier.to_string(),
    };
    if config
        .trusted_logs()
        .map_err(config_error)?
        .verifiers(&entry.origin)
        .contains(&verifier)
    {
        return Err(WitnessSetupError::DuplicateLog {
            origin: entry.origin,
            vkey: entry.vkey,
        });
    }
    let mut appended = text;
    if !appended.is_empty() && !appended.ends_with('\n') {
        appended.push('\n');
    }
    appended.push_str(&format!(
        "\n[[logs]]\norigin = {}\nvkey = {}\n",
        toml_string(&entry.origin),
        toml_string(&entry.vkey)
    ));
    config.logs.push(entry.clone());
    // Appending a table keeps the operator's comments; a file that lists its logs inline
    // (`logs = [...]`) cannot take one more table, and is rewritten whole instead.
    let new_text = match WitnessConfig::parse(&appended) {
        Ok(parsed) if parsed == config => appended,
        _ => toml::to_string(&config).map_err(|e| {
            io_err(&dir.config())(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?,
    };
    WitnessConfig::parse(&new_text).map_err(config_error)?;
    write_private_file(&dir.config(), new_text.as_bytes()).map_err(io_err(&dir.config()))?;
    Ok(entry)
}

/// Why an `add-checkpoint` request got no cosignature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddCheckpointError {
    /// The witness refuses the checkpoint (the requester's fault; status per the spec).
    #[error(transparent)]
    Refused(#[from] WitnessError),
    /// The body is over [`MAX_REQUEST_LEN`] bytes (413).
    #[error("request body exceeds {MAX_REQUEST_LEN} bytes")]
    BodyTooLarge,
    /// The body did not arrive within [`BODY_READ_TIMEOUT`] (408).
    #[error("request body not received within {}s", BODY_READ_TIMEOUT.as_secs())]
    BodyTimeout,
    /// The body could not be read: the connection broke or its framing is invalid (400).
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    /// A checkpoint size beyond what the state database can record, 2^63-1 (422).
    #[error("tree size {0} is larger than this witness can record")]
    SizeOutOfRange(u64),
    /// The state database failed (500, a local fault).
    #[error("witness state: {0}")]
    Store(#[from] StoreError),
    /// Cosigning failed, for example a clock before 1970 (500, a local fault).
    #[error("cosigning: {0}")]
    Sign(#[from] SignError),
    /// The decision task failed (500, a local fault).
    #[error("internal error: {0}")]
    Internal(String),
    /// The [`CosignGate`] is closed: this witness does not cosign now, for the reason given
    /// (503; nothing was read or stored).
    #[error("{0}")]
    Unavailable(String),
}

impl AddCheckpointError {
    /// The HTTP status of this outcome: the spec's statuses for refusals, 4xx for bodies the
    /// witness will not read, 500 only for the witness's own faults.
    pub fn http_status(&self) -> StatusCode {
        match self {
            AddCheckpointError::Refused(error) => {
                StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            AddCheckpointError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AddCheckpointError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            AddCheckpointError::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            AddCheckpointError::SizeOutOfRange(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AddCheckpointError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AddCheckpointError::Store(_)
            | AddCheckpointError::Sign(_)
            | AddCheckpointError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AddCheckpointError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        if let AddCheckpointError::Refused(error) = &self {
            if let Some(body) = error.conflict_body() {
                return text_response(status, TLOG_SIZE_CONTENT_TYPE, body);
            }
        }
        let body =
            if status.is_server_error() && !matches!(self, AddCheckpointError::Unavailable(_)) {
                // Details of local faults go to the log, not to whoever sent the request; why the
                // gate is closed is no secret and tells the log operator when to come back.
                "internal error\n".to_owned()
            } else {
                format!("{self}\n")
            };
        text_response(status, TEXT_PLAIN, body)
    }
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// Runs between a request's checks and its compare-and-swap (tests only).
type BeforeSwapHook = Arc<dyn Fn(&AcceptedCheckpoint) + Send + Sync>;

/// Asked before every `add-checkpoint` decision: `Ok` lets the witness decide, `Err(reason)`
/// answers 503 with the reason and leaves the state alone. It must be quick and must not
/// block: it runs on the async executor.
pub type CosignGate = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The gate of a standalone witness: always open.
pub fn always_open() -> CosignGate {
    Arc::new(|| Ok(()))
}

/// The witness proper: trusted logs, cosigning key and state, without any HTTP.
pub struct Witness {
    store: WitnessStore,
    logs: TrustedLogs,
    signer: CosignatureSigner,
    /// Lets a test stop a request after its checks and before its compare-and-swap, so another
    /// request can move the head in between: the race the swap exists for.
    before_swap: Option<BeforeSwapHook>,
    /// Cosignatures given since this value was made (for status pages).
    cosigned: AtomicU64,
    /// Who gets the server's authenticated reserve (see [`LogSubmitters`]).
    submitters: Arc<LogSubmitters>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("signer", &self.signer)
            .field("logs", &self.logs.len())
            .finish_non_exhaustive()
    }
}

impl Witness {
    /// A witness over `store`, cosigning for `logs` with `signer`.
    pub fn new(store: WitnessStore, logs: TrustedLogs, signer: CosignatureSigner) -> Self {
        Witness {
            store,
            logs,
            signer,
            before_swap: None,
            cosigned: AtomicU64::new(0),
            submitters: Arc::new(LogSubmitters::default()),
        }
    }

    /// The addresses that recently moved a followed log's head here: the clients this
    /// witness's server recognises.
    pub fn submitters(&self) -> &Arc<LogSubmitters> {
        &self.submitters
    }

    /// The same witness cosigning only for `logs`, whatever else its configuration trusts: a
    /// node witnessing its own mesh keeps to that mesh's log.
    pub fn with_logs(self, logs: TrustedLogs) -> Witness {
        Witness { logs, ..self }
    }

    /// Loads the witness in `dir`: configuration, key (the passphrase is checked here) and
    /// state. Refuses to start without the `witness.db` that init created, since an empty
    /// state would accept a rollback of every log.
    pub fn open(
        dir: &WitnessDir,
        protection: &Protection<'_>,
        allow_plaintext: bool,
    ) -> Result<(Witness, WitnessConfig), WitnessSetupError> {
        let config = read_config(dir)?;
        let logs = config
            .trusted_logs()
            .map_err(|source| WitnessSetupError::Config {
                path: dir.config(),
                source,
            })?;
        if !dir.state_db().exists() {
            return Err(WitnessSetupError::StateMissing(dir.state_db()));
        }
        let recorded = witness_vkey(dir)?;
        let key_text = std::fs::read_to_string(dir.key()).map_err(io_err(&dir.key()))?;
        let der = keyfile::open(&key_text, protection, allow_plaintext)?;
        let key = SigningKey::from_pkcs8_der(&der)
            .map_err(|e| ztmesh_pki::PkiError::MalformedKey(format!("witness key PKCS#8: {e}")))?;
        let signer = CosignatureSigner::new(&config.name, key).map_err(|source| {
            WitnessSetupError::BadName {
                name: config.name.clone(),
                source,
            }
        })?;
        if signer.verifier() != recorded {
            return Err(WitnessSetupError::KeyMismatch {
                name: config.name.clone(),
                derived: signer.vkey(),
                recorded: recorded.to_string(),
            });
        }
        let store = WitnessStore::open(&dir.state_db())?;
        Ok((Witness::new(store, logs, signer), config))
    }

    /// The public cosigning key.
    pub fn verifier(&self) -> CosignatureVerifier {
        self.signer.verifier()
    }

    /// The trusted logs.
    pub fn logs(&self) -> &TrustedLogs {
        &self.logs
    }

    /// Cosignatures given since start.
    pub fn cosigned(&self) -> u64 {
        self.cosigned.load(Ordering::Relaxed)
    }

    /// Decides on one `add-checkpoint` body at `now_secs` (POSIX seconds, the cosignature
    /// timestamp) and returns the 200 body: the cosignature line. Blocks on the database.
    pub fn add_checkpoint(&self, body: &[u8], now_secs: u64) -> Result<String, AddCheckpointError> {
        self.add_checkpoint_and_grow(body, now_secs)
            .map(|(cosignature, _)| cosignature)
    }

    /// [`Self::add_checkpoint`], also saying whether this request moved the witnessed head of
    /// its log forward: only the log's key can make that happen, since an old checkpoint
    /// replayed by anyone leaves the head where it is.
    pub fn add_checkpoint_and_grow(
        &self,
        body: &[u8],
        now_secs: u64,
    ) -> Result<(String, bool), AddCheckpointError> {
        let request = match AddCheckpointRequest::parse(body) {
            Ok(request) => request,
            Err(error) => {
                // Garbage is common and says nothing about any log: keep it out of the
                // default log level.
                tracing::debug!(%error, "add-checkpoint refused: malformed body");
                return Err(error.into());
            }
        };
        let result = self.decide(&request, now_secs);
        log_decision(&request, &result);
        if result.is_ok() {
            self.cosigned.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn decide(
        &self,
        request: &AddCheckpointRequest,
        now_secs: u64,
    ) -> Result<(String, bool), AddCheckpointError> {
        let verifiers = self.logs.verifiers(request.origin());
        // An unknown log has no state worth a database read; the decision answers 404.
        let known = if verifiers.is_empty() {
            None
        } else {
            self.store.head(request.origin())?
        };
        let accepted = request.check(known, verifiers)?;
        if let Some(hook) = &self.before_swap {
            hook(&accepted);
        }
        let new = accepted.new_head();
        if i64::try_from(new.size).is_err() {
            return Err(AddCheckpointError::SizeOutOfRange(new.size));
        }
        // The swap is against the whole head read above, not only its size: if anything
        // moved it since, this request was checked against stale state and must lose.
        let outcome = self.store.compare_and_swap(accepted.origin(), known, new)?;
        let stored: StoredCheckpoint = accepted.after_swap(outcome)?;
        let grew = new.size > known.map_or(0, |head| head.size);
        Ok((stored.cosign(&[&self.signer], now_secs)?, grew))
    }

    /// Installs the hook run between a request's checks and its compare-and-swap.
    #[cfg(test)]
    pub(crate) fn set_before_swap(&mut self, hook: BeforeSwapHook) {
        self.before_swap = Some(hook);
    }
}

/// One log line per decision: cosignatures and ordinary refusals at info, possible log
/// misbehaviour at warn (with the signed note, which is evidence), local faults at error.
fn log_decision(
    request: &AddCheckpointRequest,
    result: &Result<(String, bool), AddCheckpointError>,
) {
    let origin = request.origin();
    let old_size = request.old_size();
    let size = Checkpoint::parse(request.note().text())
        .map(|checkpoint| checkpoint.size())
        .ok();
    match result {
        Ok(_) => tracing::info!(origin, old_size, size, "cosigned checkpoint"),
        Err(AddCheckpointError::Refused(error)) => match error {
            WitnessError::ConflictKnownSize(known_size) => tracing::info!(
                origin,
                old_size,
                size,
                known_size,
                "add-checkpoint refused: old size is not the size last cosigned"
            ),
            WitnessError::UnknownLog { .. } => {
                tracing::info!(origin, size, "add-checkpoint refused: unknown log")
            }
            WitnessError::BadSignature(reason) => tracing::warn!(
                origin,
                size,
                %reason,
                "add-checkpoint refused: no valid signature from a trusted key of this log"
            ),
            WitnessError::Fork { .. }
            | WitnessError::BadProof(_)
            | WitnessError::NonEmptyRootForEmptyTree
            | WitnessError::ProofFromEmptyTree => tracing::warn!(
                origin,
                old_size,
                size,
                %error,
                // Debug-quoted so the multi-line note stays on one log line.
                evidence = ?request.note().to_string(),
                "add-checkpoint refused: the log signed a checkpoint inconsistent with the one cosigned before"
            ),
            _ => tracing::info!(origin, old_size, size, %error, "add-checkpoint refused"),
        },
        Err(error @ AddCheckpointError::SizeOutOfRange(_)) => {
            tracing::warn!(origin, old_size, size, %error, "add-checkpoint refused")
        }
        Err(error) => tracing::error!(origin, old_size, size, %error, "add-checkpoint failed"),
    }
}

/// Reads a body under [`MAX_REQUEST_LEN`] and [`BODY_READ_TIMEOUT`].
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, AddCheckpointError> {
    // A declared oversize body is refused before a byte of it is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_REQUEST_LEN as u64) {
        return Err(AddCheckpointError::BodyTooLarge);
    }
    let mut buffer = Vec::new();
    let mut chunks = body.into_data_stream();
    let read = async {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| AddCheckpointError::BodyUnreadable(e.to_string()))?;
            if buffer.len() + chunk.len() > MAX_REQUEST_LEN {
                return Err(AddCheckpointError::BodyTooLarge);
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| AddCheckpointError::BodyTimeout)??;
    Ok(buffer)
}

/// What every request of the router shares.
#[derive(Clone)]
struct RouterState {
    witness: Arc<Witness>,
    gate: CosignGate,
    /// [`MAX_CONCURRENT_REQUESTS`] permits, taken once a body is in: a slow client reading
    /// out its body holds none, so it cannot keep the log's own requests waiting.
    deciding: Arc<tokio::sync::Semaphore>,
}

async fn add_checkpoint(
    State(RouterState {
        witness,
        gate,
        deciding,
    }): State<RouterState>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let client = client.map(|Extension(ClientAddr(addr))| addr);
    // The body is read (bounded) even when the gate is closed, so the connection stays usable.
    let body = match read_body(&headers, body).await {
        Ok(body) => body,
        Err(error) => {
            tracing::debug!(?client, %error, "add-checkpoint refused before parsing");
            return error.into_response();
        }
    };
    if let Err(reason) = gate() {
        tracing::info!(?client, %reason, "add-checkpoint refused: not cosigning now");
        return AddCheckpointError::Unavailable(reason).into_response();
    }
    let submitters = witness.submitters().clone();
    // Never closed, so acquiring only waits.
    let Ok(_permit) = deciding.acquire_owned().await else {
        return AddCheckpointError::Internal("decision slots closed".into()).into_response();
    };
    let decided = tokio::task::spawn_blocking(move || {
        witness.add_checkpoint_and_grow(&body, now().as_unix_secs())
    })
    .await
    .unwrap_or_else(|e| Err(AddCheckpointError::Internal(e.to_string())));
    match decided {
        Ok((cosignature, grew)) => {
            if let (true, Some(client)) = (grew, client) {
                submitters.record(client.ip(), std::time::Instant::now());
            }
            text_response(StatusCode::OK, TEXT_PLAIN, cosignature)
        }
        Err(error) => error.into_response(),
    }
}

async fn not_found() -> Response {
    text_response(
        StatusCode::NOT_FOUND,
        TEXT_PLAIN,
        "not found: this witness serves POST /add-checkpoint\n".to_owned(),
    )
}

async fn method_not_allowed() -> Response {
    let mut response = text_response(
        StatusCode::METHOD_NOT_ALLOWED,
        TEXT_PLAIN,
        "method not allowed: use POST\n".to_owned(),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// The witness's HTTP routes; `gate` is asked before every decision.
pub fn router(witness: Arc<Witness>, gate: CosignGate) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(RouterState {
            witness,
            gate,
            deciding: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REQUESTS)),
        })
}

/// A running witness: bind with [`WitnessService::bind`], then [`WitnessService::run`].
pub struct WitnessService {
    witness: Arc<Witness>,
    listener: TcpListener,
}

impl WitnessService {
    /// Binds `listen` (plain TCP; see the module documentation for why).
    pub async fn bind(witness: Witness, listen: SocketAddr) -> Result<Self, WitnessSetupError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(io_err(Path::new(&listen.to_string())))?;
        if witness.logs().is_empty() {
            tracing::warn!("no logs configured: every checkpoint will be refused as unknown (add one with `ztmesh witness add-log`)");
        }
        Ok(WitnessService {
            witness: Arc::new(witness),
            listener,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The witness served.
    pub fn witness(&self) -> &Arc<Witness> {
        &self.witness
    }

    /// Serves until `shutdown` completes, always cosigning (the standalone witness).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.run_gated(always_open(), shutdown).await;
    }

    /// Serves until `shutdown` completes, asking `gate` before every decision.
    pub async fn run_gated(self, gate: CosignGate, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            vkey = %self.witness.verifier(),
            logs = self.witness.logs().len(),
            "witness serving"
        );
        let submitters = self.witness.submitters().clone();
        crate::https::serve_plain(
            self.listener,
            submitters,
            router(self.witness, gate),
            shutdown,
        )
        .await;
    }
}

/// The plain-HTTP witness's answer to "who is authenticated": an address that recently brought
/// this witness a checkpoint that moved a followed log's head forward. Only the holder of the
/// log's key can sign such a checkpoint (a replayed old one moves nothing), so in practice these
/// are the addresses of the logs this witness serves, and their connections get the reserve that
/// anonymous clients cannot take.
///
/// Limits, said plainly: the recognition is by IP address, so a client sharing a log's address
/// (behind the same NAT) shares its reserve, within the per-client cap; and a log that has never
/// submitted here, or not for [`LOG_SUBMITTER_MEMORY`], starts in the unauthenticated pool.
/// At most [`MAX_LOG_SUBMITTERS`] addresses are remembered.
#[derive(Debug, Default)]
pub struct LogSubmitters {
    seen: std::sync::Mutex<HashMap<std::net::IpAddr, std::time::Instant>>,
}

impl LogSubmitters {
    /// `address` moved a log's head forward at `now`.
    pub fn record(&self, address: std::net::IpAddr, now: std::time::Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(address.to_canonical(), now);
        seen.retain(|_, at| now.saturating_duration_since(*at) < LOG_SUBMITTER_MEMORY);
        while seen.len() > MAX_LOG_SUBMITTERS {
            let Some(oldest) = seen.iter().min_by_key(|(_, at)| **at).map(|(a, _)| *a) else {
                break;
            };
            seen.remove(&oldest);
        }
    }

    /// Whether `address` moved a log's head forward within [`LOG_SUBMITTER_MEMORY`] of `now`.
    pub fn recognises(&self, address: std::net::IpAddr, now: std::time::Instant) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&address.to_canonical())
            .is_some_and(|at| now.saturating_duration_since(*at) < LOG_SUBMITTER_MEMORY)
    }
}

impl ClientClassifier for LogSubmitters {
    fn classify(&self, address: SocketAddr, _certificate: Option<&[u8]>) -> ClientClass {
        let ip = address.ip().to_canonical();
        if self.recognises(ip, std::time::Instant::now()) {
            ClientClass::Authenticated(format!("log submitter at {ip}"))
        } else {
            ClientClass::Unauthenticated
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use tower::ServiceExt;
    use ztmesh_tlog::witness::parse_cosignature_response;
    use ztmesh_tlog::{MerkleTree, Note, Signer, TreeHead};

    const ORIGIN: &str = "log.example/membership";
    const NAME: &str = "witness.example/w1";
    const NOW: u64 = 1_700_000_000;

    /// A log as a test drives it: a signing key and a tree that can fork.
    struct Log {
        signer: Signer,
        tree: MerkleTree,
    }

    impl Log {
        fn new(origin: &str, seed: u8) -> Self {
            Log {
                signer: Signer::new(origin, SigningKey::from_bytes(&[seed; 32])).unwrap(),
                tree: MerkleTree::new(),
            }
        }

        fn grow(&mut self, n: u64, tag: &str) -> &mut Self {
            for _ in 0..n {
                let i = self.tree.size();
                self.tree.append(format!("{tag} {i}").as_bytes());
            }
            self
        }

        fn note_at(&self, size: u64) -> Note {
            let checkpoint =
                Checkpoint::new(self.signer.name(), size, self.tree.root_at(size).unwrap())
                    .unwrap();
            Note::sign(&checkpoint.to_string(), &[&self.signer]).unwrap()
        }

        fn body(&self, old: u64, new: u64) -> Vec<u8> {
            let proof = self.tree.consistency_proof(old, new).unwrap();
            AddCheckpointRequest::new(old, proof, self.note_at(new))
                .unwrap()
                .to_body()
                .into_bytes()
        }

        fn head(&self, size: u64) -> TreeHead {
            TreeHead {
                size,
                root: self.tree.root_at(size).unwrap(),
            }
        }
    }

    fn witness(dir: &tempfile::TempDir, log: &Log) -> Witness {
        let mut logs = TrustedLogs::default();
        logs.insert(ORIGIN, log.signer.verifier());
        Witness::new(
            WitnessStore::open(&dir.path().join("witness.db")).unwrap(),
            logs,
            CosignatureSigner::new(NAME, SigningKey::from_bytes(&[7; 32])).unwrap(),
        )
    }

    fn refused(result: Result<String, AddCheckpointError>) -> WitnessError {
        match result {
            Err(AddCheckpointError::Refused(error)) => error,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn cosigns_consistent_checkpoints_and_stores_them() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = Log::new(ORIGIN, 1);
        log.grow(12, "e");
        let witness = witness(&dir, &log);
        let body = witness.add_checkpoint(&log.body(0, 5), NOW).unwrap();
        let lines = parse_cosignature_response(&body).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            witness.verifier().verify(log.note_at(5).text(), &lines[0]),
            Ok(NOW)
        );
        assert_eq!(witness.store.head(ORIGIN).unwrap(), Some(log.head(5)));
        witness.add_checkpoint(&log.body(5, 12), NOW).unwrap();
        assert_eq!(witness.store.head(ORIGIN).unwrap(), Some(log.head(12)));
        assert_eq!(
            refused(witness.add_checkpoint(&log.body(5, 12), NOW)),
            WitnessError::ConflictKnownSize(12)
        );
    }

    #[test]
    fn only_a_checkpoint_that_moves_the_head_names_its_sender_a_log_submitter() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = Log::new(ORIGIN, 1);
        log.grow(12, "e");
        let witness = witness(&dir, &log);
        assert!(
            witness
                .add_checkpoint_and_grow(&log.body(0, 5), NOW)
                .unwrap()
                .1
        );
        // The same checkpoint again, as anyone who read it could replay it: cosigned (the
        // spec's idempotent answer) but it moves nothing, so it earns nothing.
        assert!(
            !witness
                .add_checkpoint_and_grow(&log.body(5, 5), NOW)
                .unwrap()
                .1
        );
        assert!(
            witness
                .add_checkpoint_and_grow(&log.body(5, 12), NOW)
                .unwrap()
                .1
        );
    }

    #[test]
    fn log_submitters_are_remembered_for_a_while_and_bounded() {
        let submitters = LogSubmitters::default();
        let start = std::time::Instant::now();
        let log_address = std::net::IpAddr::from([127, 0, 0, 1]);
        let stranger = std::net::SocketAddr::from(([127, 0, 0, 9], 4000));
        submitters.record(log_address, start);
        assert!(submitters.recognises(log_address, start));
        assert_eq!(
            submitters.classify(stranger, None),
            ClientClass::Unauthenticated
        );
        assert!(!submitters.recognises(log_address, start + LOG_SUBMITTER_MEMORY));
        // An IPv4 log reached over an IPv6 socket is the same address.
        let mapped = "::ffff:127.0.0.1".parse::<std::net::IpAddr>().unwrap();
        assert!(submitters.recognises(mapped, start));
        // The oldest addresses make room for new ones; the map never grows past its cap.
        for n in 0..(MAX_LOG_SUBMITTERS as u32 + 10) {
            let address = std::net::IpAddr::from((0x0a00_0000u32 + n).to_be_bytes());
            submitters.record(address, start + Duration::from_secs(u64::from(n) + 1));
        }
        assert_eq!(submitters.seen.lock().unwrap().len(), MAX_LOG_SUBMITTERS);
        assert!(!submitters.recognises(log_address, start + Duration::from_secs(100)));
    }

    /// The spec's race: A (5 → 10) and B (5 → 20) are both checked against size 5; B commits
    /// first. Without the compare-and-swap A would then roll the head back to 10 and get a
    /// cosignature; with it A is a 409 with 20, and the head stays at 20.
    #[test]
    fn request_overtaken_between_check_and_swap_is_a_conflict_not_a_rollback() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = Log::new(ORIGIN, 1);
        log.grow(20, "e");
        let mut witness = witness(&dir, &log);
        witness.add_checkpoint(&log.body(0, 5), NOW).unwrap();

        let checked = Arc::new(Barrier::new(2));
        let resume = Arc::new(Barrier::new(2));
        let (hook_checked, hook_resume) = (checked.clone(), resume.clone());
        witness.set_before_swap(Arc::new(move |accepted: &AcceptedCheckpoint| {
            if accepted.new_head().size == 10 {
                hook_checked.wait();
                hook_resume.wait();
            }
        }));
        let witness = Arc::new(witness);
        let stalled = {
            let witness = witness.clone();
            let body = log.body(5, 10);
            std::thread::spawn(move || witness.add_checkpoint(&body, NOW))
        };
        // A has passed its checks against size 5 and waits before its swap.
        checked.wait();
        witness.add_checkpoint(&log.body(5, 20), NOW).unwrap();
        resume.wait();
        assert_eq!(
            refused(stalled.join().unwrap()),
            WitnessError::ConflictKnownSize(20)
        );
        assert_eq!(witness.store.head(ORIGIN).unwrap(), Some(log.head(20)));
    }

    /// Two forks of the same head, both valid against it: whichever commits first wins and the
    /// other is never cosigned, so the witness never signs both sides of a split view.
    #[test]
    fn racing_forks_of_one_head_get_one_cosignature() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut honest = Log::new(ORIGIN, 1);
        honest.grow(4, "e");
        let mut fork = Log::new(ORIGIN, 1);
        fork.grow(4, "e");
        honest.grow(3, "honest");
        fork.grow(3, "fork");
        let mut witness = witness(&dir, &honest);
        witness.add_checkpoint(&honest.body(0, 4), NOW).unwrap();

        let checked = Arc::new(Barrier::new(2));
        let resume = Arc::new(Barrier::new(2));
        let fork_root = fork.head(7).root;
        let (hook_checked, hook_resume) = (checked.clone(), resume.clone());
        witness.set_before_swap(Arc::new(move |accepted: &AcceptedCheckpoint| {
            if accepted.new_head().root == fork_root {
                hook_checked.wait();
                hook_resume.wait();
            }
        }));
        let witness = Arc::new(witness);
        let stalled = {
            let witness = witness.clone();
            let body = fork.body(4, 7);
            std::thread::spawn(move || witness.add_checkpoint(&body, NOW))
        };
        checked.wait();
        witness.add_checkpoint(&honest.body(4, 7), NOW).unwrap();
        resume.wait();
        assert_eq!(
            refused(stalled.join().unwrap()),
            WitnessError::ConflictKnownSize(7)
        );
        assert_eq!(witness.store.head(ORIGIN).unwrap(), Some(honest.head(7)));
        // And sent again, the fork is caught by the checks themselves.
        assert_eq!(
            refused(witness.add_checkpoint(&fork.body(7, 7), NOW)),
            WitnessError::Fork { size: 7 }
        );
    }

    #[test]
    fn refusals_change_nothing() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = Log::new(ORIGIN, 1);
        log.grow(8, "e");
        let witness = witness(&dir, &log);
        witness.add_checkpoint(&log.body(0, 8), NOW).unwrap();
        let stranger = Log::new("other.example/log", 2);
        assert!(matches!(
            refused(witness.add_checkpoint(&stranger.body(0, 0), NOW)),
            WitnessError::UnknownLog { .. }
        ));
        let impostor = {
            let mut impostor = Log::new(ORIGIN, 3);
            impostor.grow(9, "e");
            impostor
        };
        assert!(matches!(
            refused(witness.add_checkpoint(&impostor.body(8, 9), NOW)),
            WitnessError::BadSignature(_)
        ));
        assert!(matches!(
            refused(witness.add_checkpoint(b"old 0\n", NOW)),
            WitnessError::Malformed(_)
        ));
        // A clock at the epoch cannot cosign: a local fault, after the head was stored.
        log.grow(1, "e");
        assert!(matches!(
            witness.add_checkpoint(&log.body(8, 9), 0),
            Err(AddCheckpointError::Sign(SignError::TimestampOutOfRange(0)))
        ));
        assert_eq!(witness.store.heads().unwrap().len(), 1);
    }

    #[test]
    fn statuses_follow_the_spec() {
        let status = |e: AddCheckpointError| e.http_status().as_u16();
        assert_eq!(status(WitnessError::ConflictKnownSize(3).into()), 409);
        assert_eq!(status(WitnessError::Fork { size: 3 }.into()), 422);
        assert_eq!(
            status(WitnessError::UnknownLog { origin: "x".into() }.into()),
            404
        );
        assert_eq!(status(AddCheckpointError::BodyTooLarge), 413);
        assert_eq!(status(AddCheckpointError::BodyTimeout), 408);
        assert_eq!(status(AddCheckpointError::SizeOutOfRange(u64::MAX)), 422);
        assert_eq!(status(AddCheckpointError::Internal("x".into())), 500);
        assert_eq!(status(AddCheckpointError::Unavailable("x".into())), 503);
    }

    async fn call(router: Router, request: http::Request<Body>) -> (StatusCode, String, String) {
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    fn post(path: &str, body: Vec<u8>) -> http::Request<Body> {
        http::Request::post(path).body(Body::from(body)).unwrap()
    }

    #[tokio::test]
    async fn http_answers_are_text_with_the_spec_content_types() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = Log::new(ORIGIN, 1);
        log.grow(6, "e");
        let router = router(Arc::new(witness(&dir, &log)), always_open());

        let (status, content_type, body) =
            call(router.clone(), post("/add-checkpoint", log.body(0, 6))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, TEXT_PLAIN);
        assert!(body.starts_with("\u{2014} witness.example/w1 "), "{body}");

        let (status, content_type, body) =
            call(router.clone(), post("/add-checkpoint", log.body(0, 6))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(content_type, TLOG_SIZE_CONTENT_TYPE);
        assert_eq!(body, "6\n");

        let (status, content_type, _) = call(
            router.clone(),
            post("/add-checkpoint", b"nonsense".to_vec()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(content_type, TEXT_PLAIN);

        let (status, _, _) = call(
            router.clone(),
            post("/add-checkpoint", vec![b'a'; MAX_REQUEST_LEN + 1]),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let declared = http::Request::post("/add-checkpoint")
            .header(header::CONTENT_LENGTH, "999999999999")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            call(router.clone(), declared).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );

        let (status, _, _) = call(
            router.clone(),
            http::Request::get("/add-checkpoint")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, content_type, _) = call(router, post("/v1/anything", vec![])).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(content_type, TEXT_PLAIN);
    }

    /// Requests beyond [`MAX_CONCURRENT_REQUESTS`] wait for a slot instead of each taking a
    /// thread and a body buffer; all are answered once the slots free up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_flight_requests_are_bounded() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Condvar, Mutex};

        let dir = tempfile::TempDir::new().unwrap();
        let mut log = Log::new(ORIGIN, 1);
        log.grow(5, "e");
        let mut witness = witness(&dir, &log);
        let inside = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        /// Opens the gate when dropped, also when an assertion fails: the runtime waits for
        /// its blocking threads at shutdown, so a shut gate would hang the test.
        struct OpenOnDrop(Arc<(Mutex<bool>, Condvar)>);
        impl Drop for OpenOnDrop {
            fn drop(&mut self) {
                let (open, opened) = &*self.0;
                *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
                opened.notify_all();
            }
        }
        let opener = OpenOnDrop(gate.clone());
        let (hook_inside, hook_gate) = (inside.clone(), gate.clone());
        witness.set_before_swap(Arc::new(move |_: &AcceptedCheckpoint| {
            hook_inside.fetch_add(1, Ordering::SeqCst);
            let (open, opened) = &*hook_gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
        }));
        let router = router(Arc::new(witness), always_open());
        let requests: Vec<_> = (0..MAX_CONCURRENT_REQUESTS + 1)
            .map(|_| {
                let request = post("/add-checkpoint", log.body(0, 5));
                tokio::spawn(call(router.clone(), request))
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while inside.load(Ordering::SeqCst) < MAX_CONCURRENT_REQUESTS {
            assert!(
                std::time::Instant::now() < deadline,
                "requests did not arrive"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The one over the bound waits outside; give it time to (wrongly) get in.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(inside.load(Ordering::SeqCst), MAX_CONCURRENT_REQUESTS);
        drop(opener);
        let mut statuses = Vec::new();
        for request in requests {
            statuses.push(request.await.unwrap().0);
        }
        assert_eq!(statuses.len(), MAX_CONCURRENT_REQUESTS + 1);
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1);
        assert!(statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT));
    }

    fn plaintext_dir() -> (tempfile::TempDir, WitnessDir) {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = WitnessDir(tmp.path().join("w"));
        init_witness(&dir, NAME, &Protection::InsecurePlaintext).unwrap();
        (tmp, dir)
    }

    #[test]
    fn init_then_open_round_trips_and_refuses_reinit() {
        let (_tmp, dir) = plaintext_dir();
        let (witness, config) = Witness::open(&dir, &Protection::InsecurePlaintext, true).unwrap();
        assert_eq!(config.name, NAME);
        assert_eq!(config.listen, default_listen());
        assert!(config.logs.is_empty());
        assert_eq!(witness.verifier(), witness_vkey(&dir).unwrap());
        assert!(matches!(
            init_witness(&dir, NAME, &Protection::InsecurePlaintext),
            Err(WitnessSetupError::AlreadyInitialized(_))
        ));
    }

    #[test]
    fn init_refuses_bad_names_before_writing_anything() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = WitnessDir(tmp.path().join("w"));
        for name in ["", "has space", "has+plus"] {
            assert!(matches!(
                init_witness(&dir, name, &Protection::InsecurePlaintext),
                Err(WitnessSetupError::BadName { .. })
            ));
        }
        assert!(!dir.0.exists());
    }

    #[test]
    fn open_refuses_missing_state_and_renamed_witness() {
        let (_tmp, dir) = plaintext_dir();
        let text = std::fs::read_to_string(dir.config()).unwrap();
        std::fs::write(dir.config(), text.replace(NAME, "witness.example/renamed")).unwrap();
        assert!(matches!(
            Witness::open(&dir, &Protection::InsecurePlaintext, true),
            Err(WitnessSetupError::KeyMismatch { .. })
        ));
        std::fs::write(dir.config(), text).unwrap();
        std::fs::remove_file(dir.state_db()).unwrap();
        assert!(matches!(
            Witness::open(&dir, &Protection::InsecurePlaintext, true),
            Err(WitnessSetupError::StateMissing(_))
        ));
        // Not created by the failed start either.
        assert!(!dir.state_db().exists());
        let empty = WitnessDir(dir.0.join("nothing"));
        assert!(matches!(
            Witness::open(&empty, &Protection::InsecurePlaintext, true),
            Err(WitnessSetupError::NotInitialized(_))
        ));
    }

    #[test]
    fn encrypted_key_needs_its_passphrase() {
        let tmp = tempfile::TempDir::new().unwrap();
        let dir = WitnessDir(tmp.path().join("w"));
        init_witness(&dir, NAME, &Protection::Passphrase(b"right")).unwrap();
        assert!(Witness::open(&dir, &Protection::Passphrase(b"right"), false).is_ok());
        assert!(matches!(
            Witness::open(&dir, &Protection::Passphrase(b"wrong"), false),
            Err(WitnessSetupError::Pki(_))
        ));
        assert!(matches!(
            Witness::open(&dir, &Protection::InsecurePlaintext, false),
            Err(WitnessSetupError::Pki(_))
        ));
    }

    #[test]
    fn add_log_appends_and_keeps_comments() {
        let (_tmp, dir) = plaintext_dir();
        let log = Log::new(ORIGIN, 1);
        let entry = add_log(&dir, &format!(" {}\n", log.signer.vkey()), None).unwrap();
        assert_eq!(entry.origin, ORIGIN);
        let rotated = Log::new(ORIGIN, 2);
        add_log(&dir, &rotated.signer.vkey(), Some(ORIGIN)).unwrap();
        // The spec only recommends origin == key name; an explicit other origin is allowed.
        let other = Log::new("key-name", 3);
        add_log(&dir, &other.signer.vkey(), Some("other.example/log")).unwrap();
        assert!(matches!(
            add_log(&dir, &log.signer.vkey(), None),
            Err(WitnessSetupError::DuplicateLog { .. })
        ));
        assert!(matches!(
            add_log(&dir, "not a vkey", None),
            Err(WitnessSetupError::BadLogKey { .. })
        ));
        // A witness key is not a log key.
        assert!(matches!(
            add_log(&dir, &witness_vkey(&dir).unwrap().to_string(), None),
            Err(WitnessSetupError::BadLogKey {
                source: KeyError::WrongType { .. },
                ..
            })
        ));
        assert!(matches!(
            add_log(&dir, &log.signer.vkey(), Some("two\nlines")),
            Err(WitnessSetupError::BadOrigin { .. })
        ));
        let text = std::fs::read_to_string(dir.config()).unwrap();
        assert!(text.contains("# The cosignature key name"), "{text}");
        let config = read_config(&dir).unwrap();
        let logs = config.trusted_logs().unwrap();
        assert_eq!(logs.verifiers(ORIGIN).len(), 2);
        assert_eq!(logs.verifiers("other.example/log").len(), 1);
        assert!(logs.verifiers("key-name").is_empty());
    }

    #[test]
    fn add_log_rewrites_a_config_with_inline_logs() {
        let (_tmp, dir) = plaintext_dir();
        std::fs::write(
            dir.config(),
            format!("name = {}\nlogs = []\n", toml_string(NAME)),
        )
        .unwrap();
        let log = Log::new(ORIGIN, 1);
        add_log(&dir, &log.signer.vkey(), None).unwrap();
        assert_eq!(read_config(&dir).unwrap().logs.len(), 1);
    }

    #[test]
    fn config_refuses_unknown_keys_and_bad_logs() {
        let log = Log::new(ORIGIN, 1);
        let good = format!(
            "name = {}\n[[logs]]\norigin = {}\nvkey = {}\n",
            toml_string(NAME),
            toml_string(ORIGIN),
            toml_string(&log.signer.vkey())
        );
        let config = WitnessConfig::parse(&good).unwrap();
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.trusted_logs().unwrap().len(), 1);

        let cases = [
            format!("colour = \"blue\"\n{good}"),
            good.replace("origin =", "orign ="),
            good.replace("vkey = \"", "vkey = \"x"),
            good.replace(
                &format!("origin = {}", toml_string(ORIGIN)),
                "origin = \"\"",
            ),
            format!(
                "{good}[[logs]]\norigin = {}\nvkey = {}\n",
                toml_string(ORIGIN),
                toml_string(&log.signer.vkey())
            ),
            good.replace(NAME, "bad name"),
            "logs = []\n".to_owned(),
            "name = 5\n".to_owned(),
            format!("listen = \"nowhere\"\n{good}"),
        ];
        for text in cases {
            assert!(WitnessConfig::parse(&text).is_err(), "accepted:\n{text}");
        }
    }
}
