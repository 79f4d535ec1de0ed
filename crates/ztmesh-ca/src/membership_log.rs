//! The CA's membership log: every membership event the CA commits (enrollment, rotation,
//! revocation) as a leaf of an RFC 6962 Merkle log, whose checkpoints the CA signs with its log
//! key and sends to the witnesses of its tlog-policy for cosigning (C2SP tlog-checkpoint,
//! tlog-witness, tlog-cosignature).
//!
//! The log exists so that the CA cannot show different members different histories: a node
//! accepts a checkpoint only with the cosignatures its pinned policy demands, and a witness
//! cosigns only checkpoints consistent with the last one it cosigned. This module must therefore
//! never sign two different checkpoints of the same size, never serve a proof for leaves it has
//! not committed, and never keep a cosignature it has not verified with the witness's key.
//!
//! Where things live:
//! * entries are rows of the CA database, appended by [`CaStore`] in the very transaction of
//!   the change they record ([`LogEntry`] is the leaf format);
//! * [`MembershipLog`] keeps the Merkle tree of those rows in memory (rebuilt at start, about
//!   64 bytes per leaf) and the newest checkpoint note with its cosignatures;
//! * [`LogPublisher`] signs a checkpoint when the log grew and runs one task per witness that
//!   submits it ([`submit_checkpoint`]), so a slow or dead witness never holds up the others.
//!   The decisions about a witness's answer are the pure [`judge_witness_answer`]; the bytes
//!   move through a [`WitnessTransport`], which tests replace with in-process witnesses.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use ztmesh_tlog::policy::PolicyParseError;
use ztmesh_tlog::witness::{parse_conflict_body, parse_cosignature_response};
use ztmesh_tlog::{
    AddCheckpointRequest, Checkpoint, CosignatureVerifier, Hash, MerkleTree, Note, NoteSignature,
    Policy, PolicyError, SignError, Signer, Verifier,
};

use crate::api_error::ApiError;
use crate::store::{CaStore, StoreError};
pub use ztmesh_membership::{
    decode_leaf, log_origin, EntryError, EntryKind, EventEntry, LogEntriesResponse, LogEntry,
    LogEntryItem, ProofResponse, DEFAULT_ENTRIES_PER_REQUEST, MAX_ENTRIES_PER_REQUEST,
    MAX_EVENT_REASON_LEN, MAX_LEAF_LEN, ORIGIN_SUFFIX,
};

/// How often the publisher looks for new entries to sign a checkpoint over.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// Longest one `add-checkpoint` exchange with a witness may take, answer included.
pub const WITNESS_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the TCP (and TLS) connection to a witness may take to open.
pub const WITNESS_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest witness answer read; a cosignature line is about 150 bytes.
pub const MAX_WITNESS_ANSWER_LEN: usize = 64 * 1024;

/// First delay before submitting again to a witness that failed; doubled after every further
/// failure up to [`RETRY_MAX`], reset by a success.
pub const RETRY_MIN: Duration = Duration::from_secs(1);

/// Longest delay between two submissions to a failing witness.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Leaves read from the database per query while rebuilding the tree.
const SYNC_BATCH: usize = 5000;

/// Why a log operation failed: the first four are the requester's fault (400), the rest local.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A leaf index at or beyond the tree size it is asked about.
    #[error("index {index} is not below size {size}")]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Requested size.
        size: u64,
    },
    /// A tree size beyond the log, or 0 where a leaf is needed.
    #[error("size {size} is not a size of this log (it has {log_size} entries)")]
    SizeOutOfRange {
        /// Requested size.
        size: u64,
        /// Current log size.
        log_size: u64,
    },
    /// A consistency proof from a larger to a smaller tree.
    #[error("old size {old} is above new size {new}")]
    SizesOutOfOrder {
        /// Requested old size.
        old: u64,
        /// Requested new size.
        new: u64,
    },
    /// More entries than one request may ask for.
    #[error("count {0} is above {MAX_ENTRIES_PER_REQUEST}")]
    TooManyEntries(u64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored log contradicts itself (its entries do not make its saved checkpoint).
    #[error("membership log state is inconsistent: {0}")]
    Inconsistent(String),
    /// Signing a checkpoint or adding a cosignature failed.
    #[error("signing: {0}")]
    Sign(#[from] SignError),
    /// A blocking task running a log operation failed.
    #[error("log task failed: {0}")]
    Task(String),
}

impl LogError {
    /// The one place log errors become HTTP answers.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            LogError::IndexOutOfRange { .. } | LogError::SizeOutOfRange { .. } => {
                ApiError::bad_request("out_of_range", self.to_string())
            }
            LogError::SizesOutOfOrder { .. } => {
                ApiError::bad_request("sizes_out_of_order", self.to_string())
            }
            LogError::TooManyEntries(_) => {
                ApiError::bad_request("count_too_large", self.to_string())
            }
            LogError::Store(_)
            | LogError::Inconsistent(_)
            | LogError::Sign(_)
            | LogError::Task(_) => ApiError::internal(self),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> ApiError {
        error.to_api_error()
    }
}

/// A checkpoint as sent to witnesses: the body and the note carrying only the log signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCheckpoint {
    /// Origin, size and root.
    pub checkpoint: Checkpoint,
    /// The checkpoint text signed by the log key.
    pub note: Note,
}

/// The newest checkpoint: as published, and with the cosignatures gathered so far.
#[derive(Debug, Clone)]
struct CheckpointState {
    published: PublishedCheckpoint,
    cosigned: Note,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves its data consistent before anything can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The membership log of one CA: its entries' Merkle tree and its newest checkpoint.
/// `Send + Sync`; methods that touch the database block (call them from blocking threads).
pub struct MembershipLog {
    origin: String,
    store: Arc<CaStore>,
    /// Leaves `0..size` of the `log_entries` table; [`MembershipLog::sync`] appends the rest.
    tree: Mutex<MerkleTree>,
    /// Held by whoever changes the checkpoint, across its database write, so that changes
    /// are saved in the order they are made and a newer checkpoint is never overwritten.
    checkpoint_writer: Mutex<()>,
    /// The newest checkpoint, as saved. Readers (the routes) take only this lock, which is
    /// never held across IO, so a slow disk write never stalls an answer.
    checkpoint: RwLock<Option<CheckpointState>>,
}

impl std::fmt::Debug for MembershipLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipLog")
            .field("origin", &self.origin)
            .field("size", &lock(&self.tree).size())
            .finish_non_exhaustive()
    }
}

impl MembershipLog {
    /// Loads the log of `store`: rebuilds the tree from every stored leaf and checks the saved
    /// checkpoint against it, so a database whose entries do not make its own checkpoint is
    /// refused rather than extended into a fork. `signer` is the log key.
    pub fn open(store: Arc<CaStore>, signer: &Signer) -> Result<Self, LogError> {
        let log = MembershipLog {
            origin: signer.name().to_owned(),
            store,
            tree: Mutex::new(MerkleTree::new()),
            checkpoint_writer: Mutex::new(()),
            checkpoint: RwLock::new(None),
        };
        log.sync()?;
        if let Some((size, text)) = log.store.log_checkpoint()? {
            let state = log.saved_state(size, &text, signer)?;
            log.set_current(state);
        }
        Ok(log)
    }

    fn saved_state(
        &self,
        size: u64,
        text: &str,
        signer: &Signer,
    ) -> Result<CheckpointState, LogError> {
        let inconsistent = |why: String| LogError::Inconsistent(why);
        let cosigned =
            Note::parse(text).map_err(|e| inconsistent(format!("saved checkpoint note: {e}")))?;
        cosigned.verify(&[signer.verifier()]).map_err(|e| {
            inconsistent(format!(
                "saved checkpoint is not signed by the log key: {e}"
            ))
        })?;
        let checkpoint = Checkpoint::parse(cosigned.text())
            .map_err(|e| inconsistent(format!("saved checkpoint: {e}")))?;
        let root = lock(&self.tree).root_at(size).map_err(|_| {
            inconsistent(format!(
                "a checkpoint of size {size} was signed but the log holds fewer entries"
            ))
        })?;
        if checkpoint.origin() != self.origin
            || checkpoint.size() != size
            || checkpoint.root() != root
        {
            return Err(inconsistent(format!(
                "the entries do not make the saved checkpoint of size {size}"
            )));
        }
        let published = PublishedCheckpoint {
            note: Note::sign(cosigned.text(), &[signer])?,
            checkpoint,
        };
        Ok(CheckpointState {
            published,
            cosigned,
        })
    }

    /// The origin line (and log key name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Entries in the in-memory tree.
    pub fn size(&self) -> u64 {
        lock(&self.tree).size()
    }

    /// Appends the entries committed since the last call to the tree; returns the new size.
    pub fn sync(&self) -> Result<u64, LogError> {
        // Held across the reads, so two syncs never append the same leaf twice.
        let mut tree = lock(&self.tree);
        loop {
            let batch = self.store.log_entries(tree.size(), SYNC_BATCH)?;
            if batch.is_empty() {
                return Ok(tree.size());
            }
            for (index, leaf) in batch {
                if index != tree.size() {
                    return Err(LogError::Inconsistent(format!(
                        "entry {index} read where {} was expected",
                        tree.size()
                    )));
                }
                tree.append(&leaf);
            }
        }
    }

    /// Makes sure the tree covers `size` leaves, reading new entries if needed.
    fn ensure_size(&self, size: u64) -> Result<(), LogError> {
        let log_size = if size > self.size() {
            self.sync()?
        } else {
            return Ok(());
        };
        if size > log_size {
            return Err(LogError::SizeOutOfRange { size, log_size });
        }
        Ok(())
    }

    /// `count` entries from `start` as `(index, leaf)`; fewer at the end of the log, none
    /// from beyond it.
    pub fn entries(&self, start: u64, count: u64) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        if count > MAX_ENTRIES_PER_REQUEST {
            return Err(LogError::TooManyEntries(count));
        }
        // Bounded by the check above, so the cast is exact.
        Ok(self.store.log_entries(start, count as usize)?)
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        self.ensure_size(size)?;
        if index >= size {
            return Err(LogError::IndexOutOfRange { index, size });
        }
        lock(&self.tree)
            .inclusion_proof(index, size)
            .map_err(|e| LogError::Inconsistent(e.to_string()))
    }

    /// The consistency proof from the tree of `old` leaves to the tree of `new` leaves (empty
    /// for `old` 0 or equal to `new`).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        if old > new {
            return Err(LogError::SizesOutOfOrder { old, new });
        }
        self.ensure_size(new)?;
        lock(&self.tree)
            .consistency_proof(old, new)
            .map_err(|e| LogError::Inconsistent(e.to_string()))
    }

    fn current(&self) -> Option<CheckpointState> {
        self.checkpoint
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_current(&self, state: CheckpointState) {
        *self
            .checkpoint
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(state);
    }

    /// The newest checkpoint note with the cosignatures gathered so far, as served.
    pub fn latest_note(&self) -> Option<Note> {
        self.current().map(|state| state.cosigned)
    }

    /// The newest checkpoint as published to witnesses.
    pub fn published(&self) -> Option<PublishedCheckpoint> {
        self.current().map(|state| state.published)
    }

    /// Signs a checkpoint of the whole log if it grew past the newest checkpoint, or if there
    /// is none yet (then even of the empty log); saves it and returns it. Blocks.
    ///
    /// Checkpoints only ever grow, and a size is signed at most once per database: a
    /// checkpoint of the current size is kept, cosignatures and all.
    pub fn checkpoint_if_grown(
        &self,
        signer: &Signer,
    ) -> Result<Option<PublishedCheckpoint>, LogError> {
        self.sync()?;
        let _writer = lock(&self.checkpoint_writer);
        let (size, root) = {
            let tree = lock(&self.tree);
            (tree.size(), tree.root())
        };
        if self
            .current()
            .is_some_and(|state| state.published.checkpoint.size() >= size)
        {
            return Ok(None);
        }
        let checkpoint = Checkpoint::new(&self.origin, size, root)
            .map_err(|e| LogError::Inconsistent(format!("checkpoint: {e}")))?;
        let note = Note::sign(&checkpoint.to_string(), &[signer])?;
        if !self.store.save_log_checkpoint(size, &note.to_string())? {
            return Err(LogError::Inconsistent(format!(
                "a checkpoint larger than {size} is saved already"
            )));
        }
        let published = PublishedCheckpoint { checkpoint, note };
        self.set_current(CheckpointState {
            published: published.clone(),
            cosigned: published.note.clone(),
        });
        Ok(Some(published))
    }

    /// Whether the newest note is `text` and holds a cosignature line from `witness`.
    pub fn has_cosignature(&self, text: &str, witness: &CosignatureVerifier) -> bool {
        let current = self
            .checkpoint
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        current.as_ref().is_some_and(|state| {
            state.cosigned.text() == text
                && state
                    .cosigned
                    .signatures()
                    .iter()
                    .any(|line| witness.matches(line))
        })
    }

    /// Adds verified cosignature lines over checkpoint `text` to the newest note and saves it.
    /// Returns the updated note, or `None` if a newer checkpoint replaced `text` meanwhile (the
    /// lines then cosign a checkpoint nobody is served any more). Blocks.
    pub fn add_cosignatures(
        &self,
        text: &str,
        lines: &[NoteSignature],
    ) -> Result<Option<Note>, LogError> {
        let _writer = lock(&self.checkpoint_writer);
        let Some(mut state) = self.current().filter(|state| state.cosigned.text() == text) else {
            return Ok(None);
        };
        for line in lines {
            state.cosigned.add_signature(line.clone())?;
        }
        self.store.save_log_checkpoint(
            state.published.checkpoint.size(),
            &state.cosigned.to_string(),
        )?;
        let note = state.cosigned.clone();
        self.set_current(state);
        Ok(Some(note))
    }
}

/// The tlog-policy `ca serve` was started with: its text as served to nodes, and parsed.
#[derive(Debug, Clone)]
pub struct LogPolicy {
    text: String,
    policy: Policy,
    witnesses: Vec<WitnessTarget>,
}

/// Why a policy cannot be this CA's log policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogPolicyError {
    /// Not a tlog-policy.
    #[error(transparent)]
    Parse(#[from] PolicyParseError),
    /// No `log` line carries this CA's log key: every checkpoint would fail the policy.
    #[error("the policy has no `log {0}` line for this CA's log key")]
    LogNotListed(String),
    /// A witness URL that is not `http://` or `https://`.
    #[error("witness {name}: URL {url:?} is neither http:// nor https://")]
    BadWitnessUrl {
        /// Policy name of the witness.
        name: String,
        /// The URL.
        url: String,
    },
}

impl LogPolicy {
    /// Parses `text`, which must list `log_key` among its logs.
    pub fn parse(text: String, log_key: &Verifier) -> Result<Self, LogPolicyError> {
        let policy = Policy::parse(&text)?;
        if !policy.logs().iter().any(|log| &log.verifier == log_key) {
            return Err(LogPolicyError::LogNotListed(log_key.to_string()));
        }
        let mut witnesses = Vec::new();
        for witness in policy.witnesses() {
            let Some(url) = &witness.url else { continue };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(LogPolicyError::BadWitnessUrl {
                    name: witness.name.clone(),
                    url: url.clone(),
                });
            }
            witnesses.push(WitnessTarget {
                name: witness.name.clone(),
                verifier: witness.verifier.clone(),
                url: format!("{}/add-checkpoint", url.trim_end_matches('/')),
            });
        }
        Ok(LogPolicy {
            text,
            policy,
            witnesses,
        })
    }

    /// The policy text, exactly as read.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The witnesses with a URL: those the CA submits checkpoints to.
    pub fn witnesses(&self) -> &[WitnessTarget] {
        &self.witnesses
    }
}

/// A witness the CA submits checkpoints to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessTarget {
    /// Its name in the policy.
    pub name: String,
    /// Its cosigning key.
    pub verifier: CosignatureVerifier,
    /// The full `add-checkpoint` URL (the policy URL is the submission prefix).
    pub url: String,
}

/// What a witness's answer to `add-checkpoint` means for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WitnessAnswer {
    /// 200 with at least one cosignature line that verifies with the witness's key over the
    /// checkpoint; only those lines are kept.
    Cosigned(Vec<NoteSignature>),
    /// 409: the witness last cosigned `known_size`, not the old size sent.
    Conflict {
        /// The size the witness knows.
        known_size: u64,
    },
    /// Anything else: a refusal, or an answer that is not what the protocol promises.
    Refused {
        /// HTTP status.
        status: u16,
        /// Why, for the log.
        reason: String,
    },
}

/// Judges a witness's answer to an `add-checkpoint` of `checkpoint_text`.
pub fn judge_witness_answer(
    witness: &CosignatureVerifier,
    checkpoint_text: &str,
    status: u16,
    body: &str,
) -> WitnessAnswer {
    let refused = |reason: String| WitnessAnswer::Refused { status, reason };
    match status {
        200 => {
            let lines = match parse_cosignature_response(body) {
                Ok(lines) => lines,
                Err(error) => return refused(format!("unreadable cosignature answer: {error}")),
            };
            let mut verified = Vec::new();
            for line in lines.into_iter().filter(|line| witness.matches(line)) {
                if let Err(error) = witness.verify(checkpoint_text, &line) {
                    return refused(format!("a cosignature from the witness key fails: {error}"));
                }
                verified.push(line);
            }
            if verified.is_empty() {
                return refused("no cosignature from the witness key in the answer".into());
            }
            WitnessAnswer::Cosigned(verified)
        }
        409 => match parse_conflict_body(body) {
            Some(known_size) => WitnessAnswer::Conflict { known_size },
            None => refused(format!("409 without a tree size: {}", excerpt(body))),
        },
        _ => refused(excerpt(body)),
    }
}

/// The first line of a text, cut to 200 characters, for log lines.
fn excerpt(body: &str) -> String {
    let line = body.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

/// Moves `add-checkpoint` requests to witnesses and their answers back.
pub trait WitnessTransport: Send + Sync + 'static {
    /// POSTs `body` to `url` and returns the status and the answer text, or why there was no
    /// answer. Implementations bound the time taken and the size of the answer.
    fn add_checkpoint(
        &self,
        url: &str,
        body: String,
    ) -> impl Future<Output = Result<(u16, String), String>> + Send;
}

/// [`WitnessTransport`] over HTTP(S) with [`WITNESS_TIMEOUT`] and [`MAX_WITNESS_ANSWER_LEN`].
#[derive(Debug, Clone)]
pub struct HttpWitnessTransport {
    client: reqwest::Client,
}

impl HttpWitnessTransport {
    /// A transport whose `https://` connections use `tls` (plain `http://` ignores it).
    pub fn new(tls: rustls::ClientConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(WITNESS_TIMEOUT)
            .connect_timeout(WITNESS_CONNECT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpWitnessTransport { client })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl WitnessTransport for HttpWitnessTransport {
    async fn add_checkpoint(&self, url: &str, body: String) -> Result<(u16, String), String> {
        let mut response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(body)
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status().as_u16();
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
            if answer.len() + chunk.len() > MAX_WITNESS_ANSWER_LEN {
                return Err(format!("answer larger than {MAX_WITNESS_ANSWER_LEN} bytes"));
            }
            answer.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&answer).into_owned()))
    }
}

/// Why a submission to a witness produced no cosignature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// No answer (connection refused, timeout, answer too large).
    #[error("no answer: {0}")]
    Unreachable(String),
    /// The witness refused, or answered something unusable.
    #[error("refused ({status}): {reason}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Why.
        reason: String,
    },
    /// The witness says it cosigned a larger tree of this log than the log has: the log's
    /// state was rolled back, or someone else holds the log key.
    #[error("the witness has cosigned size {known_size} but the log has only {size} entries: the log was rolled back or its key is used elsewhere")]
    WitnessAhead {
        /// What the witness knows.
        known_size: u64,
        /// The checkpoint size submitted.
        size: u64,
    },
    /// 409 twice in a row: the witness's state moved between the two requests.
    #[error("the witness answered 409 again (known size {known_size})")]
    ConflictAgain {
        /// The size of the second 409.
        known_size: u64,
    },
    /// A local fault.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The request could not be built.
    #[error("building the request: {0}")]
    Request(String),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::Task(e.to_string()))?
}

/// Submits `published` to one witness and keeps its verified cosignatures. The old size sent
/// is the one the witness last cosigned as recorded in the database; on a 409 the submission
/// is repeated once from the size the witness reports.
pub async fn submit_checkpoint<T: WitnessTransport>(
    log: &Arc<MembershipLog>,
    witness: &WitnessTarget,
    transport: &T,
    published: &PublishedCheckpoint,
) -> Result<Note, SubmitError> {
    let size = published.checkpoint.size();
    let vkey = witness.verifier.to_string();
    let recorded = {
        let (store, vkey) = (log.store.clone(), vkey.clone());
        blocking(move || Ok(store.witness_cosigned_size(&vkey)?)).await?
    };
    // A recorded size above this checkpoint cannot come from this database; starting from 0
    // makes the witness say what it really knows.
    let mut old_size = if recorded > size { 0 } else { recorded };
    let mut conflicted = false;
    loop {
        let proof = {
            let log = log.clone();
            blocking(move || log.consistency_proof(old_size, size)).await?
        };
        let body = AddCheckpointRequest::new(old_size, proof, published.note.clone())
            .map_err(|e| SubmitError::Request(e.to_string()))?
            .to_body();
        let (status, answer) = transport
            .add_checkpoint(&witness.url, body)
            .await
            .map_err(SubmitError::Unreachable)?;
        match judge_witness_answer(&witness.verifier, published.note.text(), status, &answer) {
            WitnessAnswer::Cosigned(lines) => {
                let log = log.clone();
                let text = published.note.text().to_owned();
                let note = blocking(move || {
                    log.store.set_witness_cosigned_size(&vkey, size)?;
                    log.add_cosignatures(&text, &lines)
                })
                .await?;
                // A newer checkpoint replaced this one meanwhile: the witness's task submits
                // that one next, and the note served is the newer one.
                return Ok(note.unwrap_or_else(|| published.note.clone()));
            }
            WitnessAnswer::Conflict { known_size } if known_size > size => {
                return Err(SubmitError::WitnessAhead { known_size, size });
            }
            WitnessAnswer::Conflict { known_size } if conflicted => {
                return Err(SubmitError::ConflictAgain { known_size });
            }
            WitnessAnswer::Conflict { known_size } => {
                tracing::debug!(witness = %witness.name, recorded = old_size, known_size, "witness knows another size; submitting again from it");
                old_size = known_size;
                conflicted = true;
            }
            WitnessAnswer::Refused { status, reason } => {
                return Err(SubmitError::Refused { status, reason });
            }
        }
    }
}

/// Logs whether `note` meets the policy's quorum.
fn report_quorum(policy: &Policy, note: &Note) {
    match policy.verify_checkpoint(note) {
        Ok(verified) => tracing::info!(
            size = verified.checkpoint.size(),
            cosigners = ?verified.cosigners.keys().collect::<Vec<_>>(),
            "membership checkpoint meets the policy quorum"
        ),
        Err(PolicyError::QuorumNotMet { cosigners }) => tracing::info!(
            ?cosigners,
            "membership checkpoint does not meet the policy quorum yet"
        ),
        Err(error) => tracing::warn!(%error, "membership checkpoint fails the policy"),
    }
}

/// Signs checkpoints as the log grows and gathers witness cosignatures for them.
pub struct LogPublisher<T> {
    log: Arc<MembershipLog>,
    signer: Signer,
    policy: Option<Arc<LogPolicy>>,
    transport: Arc<T>,
}

impl<T: WitnessTransport> LogPublisher<T> {
    /// A publisher for `log`, signing with `signer` (the log key) and submitting to the
    /// witnesses of `policy` that have a URL.
    pub fn new(
        log: Arc<MembershipLog>,
        signer: Signer,
        policy: Option<Arc<LogPolicy>>,
        transport: Arc<T>,
    ) -> Self {
        LogPublisher {
            log,
            signer,
            policy,
            transport,
        }
    }

    /// Runs until dropped (abort the task running it): every [`PUBLISH_INTERVAL`] signs a
    /// checkpoint if the log grew, and keeps one task per witness submitting the newest one.
    pub async fn run(self) {
        let (sender, receiver) = watch::channel(self.log.published().map(Arc::new));
        // One task per policy witness (at most 256, the policy limit); dropped with this
        // future, which aborts them.
        let mut witnesses = tokio::task::JoinSet::new();
        if let Some(policy) = &self.policy {
            for witness in policy.witnesses() {
                witnesses.spawn(witness_loop(
                    self.log.clone(),
                    witness.clone(),
                    self.transport.clone(),
                    receiver.clone(),
                    policy.clone(),
                ));
            }
        }
        let mut interval = tokio::time::interval(PUBLISH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let (log, signer) = (self.log.clone(), self.signer.clone());
            match blocking(move || log.checkpoint_if_grown(&signer)).await {
                Ok(Some(published)) => {
                    tracing::info!(
                        size = published.checkpoint.size(),
                        root = %published.checkpoint.root(),
                        "signed a membership checkpoint"
                    );
                    sender.send_replace(Some(Arc::new(published)));
                }
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "could not sign a membership checkpoint"),
            }
        }
    }
}

/// Keeps one witness up to date: submits every new checkpoint, and retries a failed one with
/// a growing delay until it is cosigned or replaced by a newer one.
async fn witness_loop<T: WitnessTransport>(
    log: Arc<MembershipLog>,
    witness: WitnessTarget,
    transport: Arc<T>,
    mut newest: watch::Receiver<Option<Arc<PublishedCheckpoint>>>,
    policy: Arc<LogPolicy>,
) {
    let mut delay = RETRY_MIN;
    loop {
        let current = newest.borrow_and_update().clone();
        let mut retry = false;
        if let Some(published) = current {
            if !log.has_cosignature(published.note.text(), &witness.verifier) {
                match submit_checkpoint(&log, &witness, transport.as_ref(), &published).await {
                    Ok(note) => {
                        tracing::info!(
                            witness = %witness.name,
                            size = published.checkpoint.size(),
                            "witness cosigned the membership checkpoint"
                        );
                        report_quorum(policy.policy(), &note);
                        delay = RETRY_MIN;
                    }
                    Err(error @ SubmitError::WitnessAhead { .. }) => {
                        // Not a witness outage: evidence about this log itself.
                        tracing::error!(
                            witness = %witness.name,
                            %error,
                            "a witness knows a larger membership log than this CA"
                        );
                        retry = true;
                    }
                    Err(error) => {
                        tracing::warn!(
                            witness = %witness.name,
                            url = %witness.url,
                            size = published.checkpoint.size(),
                            retry_in_secs = delay.as_secs(),
                            %error,
                            "witness did not cosign the membership checkpoint"
                        );
                        if let Some(note) = log.latest_note() {
                            report_quorum(policy.policy(), &note);
                        }
                        retry = true;
                    }
                }
            }
        }
        if retry {
            tokio::select! {
                changed = newest.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        } else if newest.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ed25519_dalek::SigningKey;
    use ztmesh_pki::{RevocationReason, TokenHash};
    use ztmesh_tlog::merkle::{leaf_hash, verify_consistency, verify_inclusion};
    use ztmesh_tlog::CosignatureSigner;

    use axum::http::StatusCode;

    use super::*;
    use crate::store::{IssueKind, IssuedRecord, RevokeError, RevokeTarget};
    use ztmesh_core::{NodeId, Timestamp};
    use ztmesh_pki::Serial;
    use ztmesh_witness::store::WitnessStore;
    use ztmesh_witness::witness_service::{AddCheckpointError, TrustedLogs, Witness};

    const ORIGIN: &str = "test.ztmesh/membership";
    const NOW_SECS: u64 = 1_700_000_000;

    fn signer() -> Signer {
        Signer::new(ORIGIN, SigningKey::from_bytes(&[7; 32])).unwrap()
    }

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    fn serial(n: u16) -> Serial {
        let mut bytes = [0x40u8; 16];
        bytes[14..].copy_from_slice(&n.to_be_bytes());
        Serial::from_bytes(&bytes)
    }

    fn record(node_id: NodeId, serial_number: u16, kind: IssueKind) -> IssuedRecord {
        IssuedRecord {
            serial: serial(serial_number),
            node_id,
            not_before: Timestamp::from_unix_secs(NOW_SECS),
            not_after: Timestamp::from_unix_secs(NOW_SECS + 86_400),
            cert_der: vec![0x30, 0x03, serial_number as u8],
            issued_at: Timestamp::from_unix_secs(NOW_SECS + u64::from(serial_number)),
            kind,
        }
    }

    fn store(dir: &tempfile::TempDir) -> Arc<CaStore> {
        Arc::new(CaStore::open(&dir.path().join("ca.db")).unwrap())
    }

    fn events() -> Vec<EventEntry> {
        vec![
            EventEntry::Manifest {
                version: "1.2.3".into(),
                sha256: "ab".repeat(32),
                not_after: NOW_SECS + 86_400,
                at: NOW_SECS,
            },
            EventEntry::GovernanceDecision {
                proposal: "cd".repeat(32),
                param: "gossip_fanout".into(),
                value: 2,
                reporter: node(1),
                at: NOW_SECS,
            },
            EventEntry::TierChange {
                node_id: node(2),
                tier: "tier 1".into(),
                reason: "attested (dev), binary in manifest, 100% over ≥ 100 checks".into(),
                reporter: node(1),
                at: NOW_SECS,
            },
        ]
    }

    #[test]
    fn an_event_is_appended_once_per_change_and_grows_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let log = MembershipLog::open(store.clone(), &signer()).unwrap();
        for event in events() {
            assert!(store.append_event(&event).unwrap().is_some());
            // The same report again changes nothing.
            assert_eq!(store.append_event(&event).unwrap(), None);
        }
        assert_eq!(log.sync().unwrap(), 3);
        // Another tier for the same reporter and node is a change; another reporter too.
        let demoted = EventEntry::TierChange {
            node_id: node(2),
            tier: "tier 2".into(),
            reason: "3 consecutive failed attestation verifications".into(),
            reporter: node(1),
            at: NOW_SECS + 5,
        };
        assert_eq!(store.append_event(&demoted).unwrap(), Some(3));
        let other_reporter = EventEntry::TierChange {
            node_id: node(2),
            tier: "tier 2".into(),
            reason: "same view".into(),
            reporter: node(3),
            at: NOW_SECS + 6,
        };
        assert_eq!(store.append_event(&other_reporter).unwrap(), Some(4));
        assert_eq!(log.sync().unwrap(), 5);
        let leaves = log.entries(0, 10).unwrap();
        assert_eq!(EventEntry::from_leaf(&leaves[3].1).unwrap(), demoted);
        // The state survives reopening the database.
        drop(log);
        let reopened = Arc::new(CaStore::open(&dir.path().join("ca.db")).unwrap());
        assert_eq!(reopened.append_event(&demoted).unwrap(), None);
    }

    fn enroll(store: &CaStore, node_id: NodeId, serial_number: u16) {
        let token = TokenHash([serial_number as u8; 32]);
        let now = Timestamp::from_unix_secs(NOW_SECS);
        store
            .insert_token(
                &token,
                now,
                now.saturating_add(Duration::from_secs(60)),
                None,
            )
            .unwrap();
        store
            .redeem_token(
                &token,
                now,
                &record(node_id, serial_number, IssueKind::Enroll),
            )
            .unwrap();
    }

    fn entries(store: &CaStore) -> Vec<LogEntry> {
        store
            .log_entries(0, 1000)
            .unwrap()
            .into_iter()
            .map(|(_, leaf)| LogEntry::from_leaf(&leaf).unwrap())
            .collect()
    }

    #[test]
    fn leaves_are_fixed_json_and_parse_back_only_in_that_form() {
        let entry =
            crate::store::issued_entry(EntryKind::Enroll, &record(node(1), 1, IssueKind::Enroll));
        let leaf = entry.to_leaf();
        let text = String::from_utf8(leaf.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"kind\":\"enroll\",\"node_id\":\"{}\",\"serial\":\"{}\",\"not_after\":{},\"at\":{}}}",
                node(1),
                serial(1).to_hex(),
                NOW_SECS + 86_400,
                NOW_SECS + 1
            )
        );
        assert_eq!(LogEntry::from_leaf(&leaf).unwrap(), entry);
        let revoked = LogEntry::revoked(
            EntryKind::RevokeCertificate,
            node(2),
            &serial(2),
            Timestamp::from_unix_secs(5),
        );
        assert!(String::from_utf8(revoked.to_leaf())
            .unwrap()
            .contains("\"kind\":\"revoke_certificate\""));
        assert!(String::from_utf8(revoked.to_leaf())
            .unwrap()
            .contains("\"not_after\":null"));

        let spaced = text.replace(",", ", ");
        assert_eq!(
            LogEntry::from_leaf(spaced.as_bytes()),
            Err(EntryError::NotCanonical)
        );
        let upper = text.replace(&serial(1).to_hex(), "ABCDEF");
        assert!(matches!(
            LogEntry::from_leaf(upper.as_bytes()),
            Err(EntryError::BadSerial(_))
        ));
        for bad in [
            &b""[..],
            b"{}",
            b"null",
            b"\xff\xfe",
            br#"{"kind":"tier_change","node_id":"x","serial":"","not_after":null,"at":1}"#,
        ] {
            assert!(
                matches!(LogEntry::from_leaf(bad), Err(EntryError::Malformed(_))),
                "{bad:?}"
            );
        }
        let extra = text.replace("}", ",\"extra\":1}");
        assert!(matches!(
            LogEntry::from_leaf(extra.as_bytes()),
            Err(EntryError::Malformed(_))
        ));
        assert_eq!(
            LogEntry::from_leaf(&vec![b' '; MAX_LEAF_LEN + 1]),
            Err(EntryError::TooLarge(MAX_LEAF_LEN + 1))
        );
    }

    #[test]
    fn every_committed_change_appends_its_entry_in_order() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = store(&dir);
        enroll(&store, node(1), 1);
        enroll(&store, node(2), 2);
        store
            .record_rotation(&serial(1), &record(node(1), 3, IssueKind::Rotate))
            .unwrap();
        let at = Timestamp::from_unix_secs(NOW_SECS + 100);
        store
            .revoke(
                &RevokeTarget::Serial(serial(2)),
                RevocationReason::Unspecified,
                at,
            )
            .unwrap();
        store
            .revoke(
                &RevokeTarget::Node(node(1)),
                RevocationReason::KeyCompromise,
                at,
            )
            .unwrap();
        // Already revoked: no change, no entry.
        store
            .revoke(
                &RevokeTarget::Node(node(1)),
                RevocationReason::KeyCompromise,
                at,
            )
            .unwrap();
        let got: Vec<(EntryKind, NodeId, String)> = entries(&store)
            .into_iter()
            .map(|e| (e.kind, e.node_id, e.serial))
            .collect();
        assert_eq!(
            got,
            vec![
                (EntryKind::Enroll, node(1), serial(1).to_hex()),
                (EntryKind::Enroll, node(2), serial(2).to_hex()),
                (EntryKind::Rotate, node(1), serial(3).to_hex()),
                (EntryKind::RevokeCertificate, node(2), serial(2).to_hex()),
                (EntryKind::RevokeNode, node(1), serial(1).to_hex()),
                (EntryKind::RevokeNode, node(1), serial(3).to_hex()),
            ]
        );
        assert_eq!(store.log_size().unwrap(), 6);

        // A node banned after its only certificate was revoked on its own still gets an entry.
        store
            .revoke(
                &RevokeTarget::Node(node(2)),
                RevocationReason::Unspecified,
                at,
            )
            .unwrap();
        let last = entries(&store).pop().unwrap();
        assert_eq!(
            (last.kind, last.node_id, last.serial, last.not_after),
            (EntryKind::RevokeNode, node(2), serial(2).to_hex(), None)
        );
    }

    #[test]
    fn failed_changes_append_nothing() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = store(&dir);
        enroll(&store, node(1), 1);
        let size = store.log_size().unwrap();
        let at = Timestamp::from_unix_secs(NOW_SECS);
        assert!(matches!(
            store.revoke(
                &RevokeTarget::Serial(serial(99)),
                RevocationReason::Unspecified,
                at
            ),
            Err(RevokeError::NotFound)
        ));
        assert!(matches!(
            store.revoke(
                &RevokeTarget::SerialOf {
                    serial: serial(1),
                    node_id: node(99)
                },
                RevocationReason::Unspecified,
                at
            ),
            Err(RevokeError::OwnerMismatch { .. })
        ));
        // A used token, a rotation from a foreign certificate, a duplicate serial.
        assert!(store
            .redeem_token(
                &TokenHash([1; 32]),
                at,
                &record(node(5), 5, IssueKind::Enroll)
            )
            .is_err());
        assert!(store
            .record_rotation(&serial(77), &record(node(1), 6, IssueKind::Rotate))
            .is_err());
        store
            .insert_token(
                &TokenHash([9; 32]),
                at,
                at.saturating_add(Duration::from_secs(9)),
                None,
            )
            .unwrap();
        assert!(store
            .redeem_token(
                &TokenHash([9; 32]),
                at,
                &record(node(9), 1, IssueKind::Enroll)
            )
            .is_err());
        assert_eq!(store.log_size().unwrap(), size);
    }

    #[test]
    fn a_failed_append_rolls_the_change_back() {
        // The other direction of "one transaction": when the entry cannot be written, the
        // certificate, the token use and the revocation are not committed either.
        let dir = tempfile::TempDir::new().unwrap();
        let store = store(&dir);
        enroll(&store, node(1), 1);
        let raw = rusqlite::Connection::open(dir.path().join("ca.db")).unwrap();
        raw.execute_batch(
            "CREATE TRIGGER refuse_log BEFORE INSERT ON log_entries
             BEGIN SELECT RAISE(ABORT, 'log refused'); END;",
        )
        .unwrap();
        let at = Timestamp::from_unix_secs(NOW_SECS);
        let token = TokenHash([2; 32]);
        store
            .insert_token(&token, at, at.saturating_add(Duration::from_secs(60)), None)
            .unwrap();
        assert!(store
            .redeem_token(&token, at, &record(node(2), 2, IssueKind::Enroll))
            .is_err());
        assert_eq!(store.token_info(&token).unwrap().unwrap().used_at, None);
        assert!(store
            .record_rotation(&serial(1), &record(node(1), 3, IssueKind::Rotate))
            .is_err());
        assert!(store
            .revoke(
                &RevokeTarget::Node(node(1)),
                RevocationReason::Unspecified,
                at
            )
            .is_err());
        assert!(!store.is_node_revoked(&node(1)).unwrap());
        assert!(store.revoked_entries().unwrap().is_empty());
        assert_eq!(store.certificates().unwrap().len(), 1);
        assert_eq!(store.crl_number().unwrap(), 0);
        assert_eq!(store.log_size().unwrap(), 1);
    }

    /// A log over `n` enrollments.
    fn log_with(dir: &tempfile::TempDir, n: u16) -> (Arc<CaStore>, Arc<MembershipLog>) {
        let store = store(dir);
        for i in 1..=n {
            enroll(&store, node((i % 250) as u8 + 1), i);
        }
        let log = Arc::new(MembershipLog::open(store.clone(), &signer()).unwrap());
        (store, log)
    }

    #[test]
    fn proofs_answered_for_every_index_and_size_verify() {
        let dir = tempfile::TempDir::new().unwrap();
        let (store, log) = log_with(&dir, 13);
        let leaves: Vec<Vec<u8>> = store
            .log_entries(0, 100)
            .unwrap()
            .into_iter()
            .map(|(_, leaf)| leaf)
            .collect();
        let mut roots = vec![MerkleTree::new().root()];
        let mut tree = MerkleTree::new();
        for leaf in &leaves {
            tree.append(leaf);
            roots.push(tree.root());
        }
        for size in 1..=13u64 {
            for index in 0..size {
                let proof = log.inclusion_proof(index, size).unwrap();
                verify_inclusion(
                    &leaf_hash(&leaves[index as usize]),
                    index,
                    size,
                    &proof,
                    &roots[size as usize],
                )
                .unwrap();
            }
            for old in 1..=size {
                let proof = log.consistency_proof(old, size).unwrap();
                verify_consistency(
                    old,
                    size,
                    &proof,
                    &roots[old as usize],
                    &roots[size as usize],
                )
                .unwrap();
            }
            assert!(log.consistency_proof(0, size).unwrap().is_empty());
        }
    }

    #[test]
    fn proof_requests_out_of_range_are_client_errors() {
        let dir = tempfile::TempDir::new().unwrap();
        let (_store, log) = log_with(&dir, 4);
        let cases: Vec<(Result<Vec<Hash>, LogError>, &str)> = vec![
            (log.inclusion_proof(0, 0), "out_of_range"),
            (log.inclusion_proof(4, 4), "out_of_range"),
            (log.inclusion_proof(0, 5), "out_of_range"),
            (log.inclusion_proof(u64::MAX, u64::MAX), "out_of_range"),
            (log.consistency_proof(3, 2), "sizes_out_of_order"),
            (log.consistency_proof(1, 5), "out_of_range"),
            (log.consistency_proof(u64::MAX, u64::MAX), "out_of_range"),
        ];
        for (result, code) in cases {
            let error = result.unwrap_err();
            let api = error.to_api_error();
            assert_eq!(
                (api.status, api.code),
                (StatusCode::BAD_REQUEST, code),
                "{error}"
            );
        }
        assert!(matches!(
            log.entries(0, MAX_ENTRIES_PER_REQUEST + 1),
            Err(LogError::TooManyEntries(_))
        ));
        assert_eq!(log.entries(0, MAX_ENTRIES_PER_REQUEST).unwrap().len(), 4);
        assert_eq!(log.entries(2, 1).unwrap(), log.entries(2, 1).unwrap());
        assert_eq!(log.entries(2, 1).unwrap()[0].0, 2);
        assert!(log.entries(4, 10).unwrap().is_empty());
        assert!(log.entries(u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn proofs_cover_entries_committed_after_start() {
        let dir = tempfile::TempDir::new().unwrap();
        let (store, log) = log_with(&dir, 2);
        enroll(&store, node(3), 3);
        assert_eq!(log.size(), 2);
        assert_eq!(log.inclusion_proof(2, 3).unwrap().len(), 1);
        assert_eq!(log.size(), 3);
    }

    #[test]
    fn checkpoints_grow_only_and_survive_reopening() {
        let dir = tempfile::TempDir::new().unwrap();
        let (store, log) = log_with(&dir, 0);
        let empty = log.checkpoint_if_grown(&signer()).unwrap().unwrap();
        assert_eq!(empty.checkpoint.size(), 0);
        assert!(log.checkpoint_if_grown(&signer()).unwrap().is_none());
        enroll(&store, node(1), 1);
        let first = log.checkpoint_if_grown(&signer()).unwrap().unwrap();
        assert_eq!(first.checkpoint.size(), 1);
        assert_eq!(first.checkpoint.origin(), ORIGIN);
        first.note.verify(&[signer().verifier()]).unwrap();
        assert_eq!(log.latest_note().unwrap(), first.note);

        // Reopened: the saved checkpoint is kept (no second signature over size 1).
        drop(log);
        let reopened = MembershipLog::open(store.clone(), &signer()).unwrap();
        assert_eq!(reopened.published().unwrap(), first);
        assert!(reopened.checkpoint_if_grown(&signer()).unwrap().is_none());
    }

    #[test]
    fn a_saved_checkpoint_is_never_replaced_by_a_smaller_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = store(&dir);
        assert!(store.save_log_checkpoint(5, "five").unwrap());
        assert!(!store.save_log_checkpoint(3, "three").unwrap());
        assert!(store.save_log_checkpoint(5, "five, cosigned").unwrap());
        assert_eq!(
            store.log_checkpoint().unwrap(),
            Some((5, "five, cosigned".to_owned()))
        );
    }

    #[test]
    fn a_database_whose_entries_do_not_make_its_checkpoint_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let (store, log) = log_with(&dir, 2);
        log.checkpoint_if_grown(&signer()).unwrap().unwrap();
        drop(log);
        let raw = rusqlite::Connection::open(dir.path().join("ca.db")).unwrap();
        raw.execute("UPDATE log_entries SET leaf = x'00' WHERE idx = 1", [])
            .unwrap();
        assert!(matches!(
            MembershipLog::open(store.clone(), &signer()),
            Err(LogError::Inconsistent(_))
        ));
        raw.execute("DELETE FROM log_entries WHERE idx = 1", [])
            .unwrap();
        assert!(matches!(
            MembershipLog::open(store.clone(), &signer()),
            Err(LogError::Inconsistent(_))
        ));
        let other = Signer::new(ORIGIN, SigningKey::from_bytes(&[8; 32])).unwrap();
        assert!(matches!(
            MembershipLog::open(store, &other),
            Err(LogError::Inconsistent(_))
        ));
    }

    /// In-process witnesses behind a [`WitnessTransport`]: URL → witness, or unreachable.
    #[derive(Default)]
    struct InProcess {
        witnesses: HashMap<String, Witness>,
        requests: AtomicUsize,
    }

    impl WitnessTransport for InProcess {
        async fn add_checkpoint(&self, url: &str, body: String) -> Result<(u16, String), String> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let witness = self
                .witnesses
                .get(url)
                .ok_or_else(|| "connection refused".to_owned())?;
            match witness.add_checkpoint(body.as_bytes(), NOW_SECS) {
                Ok(lines) => Ok((200, lines)),
                Err(error) => {
                    let status = error.http_status().as_u16();
                    let body = match &error {
                        AddCheckpointError::Refused(refusal) => {
                            refusal.conflict_body().unwrap_or_else(|| error.to_string())
                        }
                        _ => error.to_string(),
                    };
                    Ok((status, body))
                }
            }
        }
    }

    struct Setup {
        _dirs: Vec<tempfile::TempDir>,
        store: Arc<CaStore>,
        log: Arc<MembershipLog>,
        policy: LogPolicy,
        transport: InProcess,
    }

    /// A log and `n` witnesses trusting it, a policy of `threshold` of them, reachable ones
    /// registered in the transport.
    fn setup(n: u8, threshold: u8, reachable: &[u8]) -> Setup {
        let dir = tempfile::TempDir::new().unwrap();
        let (store, log) = log_with(&dir, 3);
        let mut dirs = vec![dir];
        let mut logs = TrustedLogs::default();
        logs.insert(ORIGIN, signer().verifier());
        let mut policy = format!("log {}\n", signer().vkey());
        let mut transport = InProcess::default();
        for i in 1..=n {
            let key = CosignatureSigner::new(
                &format!("w{i}.test"),
                SigningKey::from_bytes(&[100 + i; 32]),
            )
            .unwrap();
            policy.push_str(&format!("witness w{i} {} http://w{i}.test/\n", key.vkey()));
            if reachable.contains(&i) {
                let wdir = tempfile::TempDir::new().unwrap();
                let witness = Witness::new(
                    WitnessStore::open(&wdir.path().join("w.db")).unwrap(),
                    logs.clone(),
                    key,
                );
                transport
                    .witnesses
                    .insert(format!("http://w{i}.test/add-checkpoint"), witness);
                dirs.push(wdir);
            }
        }
        let members: Vec<String> = (1..=n).map(|i| format!("w{i}")).collect();
        policy.push_str(&format!(
            "group all {threshold} {}\nquorum all\n",
            members.join(" ")
        ));
        let policy = LogPolicy::parse(policy, &signer().verifier()).unwrap();
        Setup {
            _dirs: dirs,
            store,
            log,
            policy,
            transport,
        }
    }

    async fn submit_all(setup: &Setup, published: &PublishedCheckpoint) -> Vec<bool> {
        let mut results = Vec::new();
        for witness in setup.policy.witnesses() {
            results.push(
                submit_checkpoint(&setup.log, witness, &setup.transport, published)
                    .await
                    .is_ok(),
            );
        }
        results
    }

    #[tokio::test]
    async fn cosignatures_are_gathered_verified_and_meet_the_quorum() {
        let setup = setup(3, 2, &[1, 2, 3]);
        let first = setup.log.checkpoint_if_grown(&signer()).unwrap().unwrap();
        assert_eq!(submit_all(&setup, &first).await, vec![true, true, true]);
        let note = setup.log.latest_note().unwrap();
        let verified = setup.policy.policy().verify_checkpoint(&note).unwrap();
        assert_eq!(verified.cosigners.len(), 3);
        // Saved: a reopened log serves the cosigned note.
        let reopened = MembershipLog::open(setup.store.clone(), &signer()).unwrap();
        assert_eq!(reopened.latest_note().unwrap(), note);

        // Growth: submitted from the recorded size with a consistency proof.
        enroll(&setup.store, node(40), 40);
        let second = setup.log.checkpoint_if_grown(&signer()).unwrap().unwrap();
        assert_eq!(second.checkpoint.size(), 4);
        let before = setup.transport.requests.load(Ordering::SeqCst);
        assert_eq!(submit_all(&setup, &second).await, vec![true, true, true]);
        assert_eq!(setup.transport.requests.load(Ordering::SeqCst) - before, 3);
        assert_eq!(
            setup
                .store
                .witness_cosigned_size(&setup.policy.witnesses()[0].verifier.to_string())
                .unwrap(),
            4
        );
        setup
            .policy
            .policy()
            .verify_checkpoint(&setup.log.latest_note().unwrap())
            .unwrap();
    }

    #[tokio::test]
    async fn a_stale_recorded_size_is_corrected_by_one_retry_after_409() {
        let setup = setup(1, 1, &[1]);
        let first = setup.log.checkpoint_if_grown(&signer()).unwrap().unwrap();
        assert_eq!(submit_all(&setup, &first).await, vec![true]);
        enroll(&setup.store, node(40), 40);
        let second = setup.log.checkpoint_if_grown(&signer()).unwrap().unwrap();
        // The database forgot what the witness cosigned (a restore from an older backup).
        let vkey = setup.policy.witnesses()[0].verifier.to_string();
        setup.store.set_witness_cosigned_size(&vkey, 0).unwrap();
        let before = setup.transport.requests.load(Ordering::SeqCst);
        assert_eq!(submit_all(&setup, &second).await, vec![true]);
        assert_eq!(setup.transport.requests.load(Ordering::SeqCst) - before, 2);
        assert_eq!(setup.store.witness_cosigned_size(&vkey).unwrap(), 4);
    }

    #[tokio::test]
    async fn unreachable_witnesses_leave_the_quorum_unmet_without_blocking_the_others() {
        let setup = setup(3, 2, &[1]);
        let first = setup.log.checkpoint_if_grown(&signer()).unwrap().unwrap();
        assert_eq!(submit_all(&setup, &first).await, vec![true, false, false]);
        let note = setup.log.latest_note().unwrap();
        match setup.policy.policy().verify_checkpoint(&note) {
            Err(PolicyError::QuorumNotMet { cosigners }) => {
                assert_eq!(cosigners.into_iter().collect::<Vec<_>>(), vec!["w1"])
            }
            other => panic!("expected QuorumNotMet, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_log_behind_its_witness_is_reported_not_forked() {
        let setup = setup(1, 1, &[1]);
        enroll(&setup.store, node(40), 40);
        let published = setup.log.checkpoint_if_grown(&signer()).unwrap().unwrap();
        assert_eq!(submit_all(&setup, &published).await, vec![true]);
        // A second database of the same log key with fewer entries: the witness knows more.
        let dir = tempfile::TempDir::new().unwrap();
        let (_, behind) = log_with(&dir, 3);
        let stale = behind.checkpoint_if_grown(&signer()).unwrap().unwrap();
        let error = submit_checkpoint(
            &behind,
            &setup.policy.witnesses()[0],
            &setup.transport,
            &stale,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                error,
                SubmitError::WitnessAhead {
                    known_size: 4,
                    size: 3
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn witness_answers_are_judged_strictly() {
        let key = CosignatureSigner::new("w.test", SigningKey::from_bytes(&[3; 32])).unwrap();
        let other = CosignatureSigner::new("x.test", SigningKey::from_bytes(&[4; 32])).unwrap();
        let text = Checkpoint::new(ORIGIN, 1, MerkleTree::new().root())
            .unwrap()
            .to_string();
        let good = format!("{}\n", key.cosign(&text, NOW_SECS).unwrap());
        let foreign = format!("{}\n", other.cosign(&text, NOW_SECS).unwrap());
        let verifier = key.verifier();
        assert!(matches!(
            judge_witness_answer(&verifier, &text, 200, &format!("{foreign}{good}")),
            WitnessAnswer::Cosigned(lines) if lines.len() == 1
        ));
        let other_text = text.replace("\n1\n", "\n2\n");
        let wrong_text = format!("{}\n", key.cosign(&other_text, NOW_SECS).unwrap());
        for (status, body) in [
            (200, foreign.as_str()),
            (200, wrong_text.as_str()),
            (200, ""),
            (200, "garbage\n"),
            (409, "x\n"),
            (409, ""),
            (422, "fork\n"),
            (500, "internal error\n"),
        ] {
            assert!(
                matches!(
                    judge_witness_answer(&verifier, &text, status, body),
                    WitnessAnswer::Refused { .. }
                ),
                "{status} {body:?}"
            );
        }
        assert_eq!(
            judge_witness_answer(&verifier, &text, 409, "7\n"),
            WitnessAnswer::Conflict { known_size: 7 }
        );
    }

    #[test]
    fn policies_must_list_the_log_and_use_http_urls() {
        let witness = CosignatureSigner::new("w.test", SigningKey::from_bytes(&[3; 32])).unwrap();
        let ok = format!(
            "log {}\nwitness w {} http://127.0.0.1:9/\nwitness v {}\nquorum w\n",
            signer().vkey(),
            witness.vkey(),
            CosignatureSigner::new("v.test", SigningKey::from_bytes(&[5; 32]))
                .unwrap()
                .vkey()
        );
        let policy = LogPolicy::parse(ok.clone(), &signer().verifier()).unwrap();
        assert_eq!(policy.text(), ok);
        assert_eq!(policy.witnesses().len(), 1);
        assert_eq!(
            policy.witnesses()[0].url,
            "http://127.0.0.1:9/add-checkpoint"
        );

        let other = Signer::new(ORIGIN, SigningKey::from_bytes(&[9; 32])).unwrap();
        assert!(matches!(
            LogPolicy::parse(ok.clone(), &other.verifier()),
            Err(LogPolicyError::LogNotListed(_))
        ));
        assert!(matches!(
            LogPolicy::parse(ok.replace("http://", "ftp://"), &signer().verifier()),
            Err(LogPolicyError::BadWitnessUrl { .. })
        ));
        assert!(matches!(
            LogPolicy::parse("quorum\n".into(), &signer().verifier()),
            Err(LogPolicyError::Parse(_))
        ));
    }

    #[tokio::test]
    async fn oversized_witness_answers_are_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let _ = socket.read(&mut request).await;
            let body = vec![b'a'; MAX_WITNESS_ANSWER_LEN + 1];
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body).await;
        });
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let transport = HttpWitnessTransport::new(tls).unwrap();
        let error = transport
            .add_checkpoint(&format!("http://{addr}/add-checkpoint"), "old 0\n\n".into())
            .await
            .unwrap_err();
        assert!(error.contains("larger than"), "{error}");
        server.await.unwrap();
        // Nobody listening: an error, not a hang.
        let error = transport
            .add_checkpoint(&format!("http://{addr}/add-checkpoint"), String::new())
            .await
            .unwrap_err();
        assert!(!error.is_empty());
    }
}
