//! The node's TPM 2.0, driven through tpm2-tools: the endorsement key (EK) a CA allow-lists,
//! an attestation key (AK) under it, credential activation at enrollment and PCR quotes.
//!
//! Every tool runs as a child process with `TPM2TOOLS_TCTI` set to the configured TCTI, inside
//! a private work directory made for the one operation and removed after it, with a timeout
//! (the child is killed when it passes) and bounded output. A failing tool becomes a typed
//! [`TpmError`] carrying its stderr, trimmed and bounded. This module must never leave
//! transient objects loaded: without a resource manager (`swtpm:` or `device:/dev/tpm0`) the
//! TPM keeps every object a tool loaded and soon runs out of slots, so each step is followed by
//! `tpm2_flushcontext -t`, and a policy session is flushed whether activation worked or not.
//!
//! # Keys and handles
//!
//! - The EK is the RSA 2048 EK of the default TCG template, persisted at
//!   [`ENDORSEMENT_KEY_HANDLE`]. It is derived from the TPM's endorsement seed, so creating it
//!   again gives the same key: [`TpmDevice::endorsement_key`] reuses what is persisted when it
//!   is that key, and replaces anything else found at the handle (the TCG EK profile reserves
//!   it for this EK, and a credential the CA makes for the real EK would not activate with
//!   another key).
//! - The AK is an ECC P-256 restricted signing key (ECDSA, SHA-256) created under the EK and
//!   persisted at [`ATTESTATION_KEY_HANDLE`]. [`TpmDevice::create_attestation_key`] always
//!   makes a fresh one and replaces the one persisted: the CA registers the AK of the latest
//!   enrollment, so one TPM serves one node.
//!
//! Operations on one [`TpmDevice`] (and its clones) run one at a time, since two tool sequences
//! interleaved on one TPM would flush each other's objects; at most
//! [`MAX_PENDING_OPERATIONS`] wait, further ones are refused as [`TpmError::Busy`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;
use ztmesh_attest::tpm2::{AttestationKey, Tpm2Evidence};
use ztmesh_attest::tpm2_credential::{
    AttestationKeyPublic, Credential, EndorsementKey, MAX_CREDENTIAL_FILE_LEN, MAX_PUBLIC_AREA_LEN,
};

use ztmesh_attest::policy::AttestationPayload;

/// The environment variable through which tpm2-tools find the TPM.
pub const TCTI_ENV: &str = "TPM2TOOLS_TCTI";

/// Where the EK is persisted (the TCG EK profile's handle for the RSA 2048 EK).
pub const ENDORSEMENT_KEY_HANDLE: &str = "0x81010001";

/// Where the AK is persisted.
pub const ATTESTATION_KEY_HANDLE: &str = "0x81010002";

/// The PCRs every quote covers: firmware (0), firmware configuration (1), option ROMs (2) and
/// Secure Boot policy (7), from the sha256 bank.
pub const QUOTE_PCRS: &str = "sha256:0,1,2,7";

/// The indices of [`QUOTE_PCRS`], in selection order.
pub const QUOTE_PCR_INDICES: [u8; 4] = [0, 1, 2, 7];

/// How long one tool may run before it is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Most operations admitted at once on one device (the running one included).
pub const MAX_PENDING_OPERATIONS: usize = 8;

/// Largest TCTI accepted (a TCTI is a short configuration string).
pub const MAX_TCTI_LEN: usize = 512;

/// Most stdout bytes kept from one tool; the rest is read and dropped.
const MAX_STDOUT: usize = 64 * 1024;

/// Most stderr bytes read from one tool.
const MAX_STDERR: usize = 16 * 1024;

/// Most characters of stderr an error carries (its end, where tpm2-tools say what failed).
const MAX_STDERR_IN_ERROR: usize = 1024;

/// Largest file read back from a tool (public areas, quotes, PEM keys are far below).
const MAX_TOOL_FILE: u64 = 64 * 1024;

/// How often a running tool is polled for its exit.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Prefix of the per-operation work directories.
const WORK_DIR_PREFIX: &str = ".tpm-work-";

/// Why a TPM operation failed. All of these are local faults (this node's TPM, tools or
/// files), except [`TpmError::InvalidInput`], which names bytes that came from elsewhere.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI is empty, too long or holds control characters.
    #[error("invalid TCTI: {0}")]
    InvalidTcti(String),
    /// The tool could not be started (not installed, not executable).
    #[error("cannot run {tool} (is tpm2-tools installed?): {cause}")]
    ToolNotRunnable {
        /// Which tool.
        tool: &'static str,
        /// Why it could not be started (in the message, not a `source`, so that a printed
        /// error chain says it once).
        cause: std::io::Error,
    },
    /// The tool ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        /// Which tool.
        tool: &'static str,
        /// Its exit status.
        status: String,
        /// Its stderr, trimmed, at most the last 1024 characters.
        stderr: String,
    },
    /// The tool did not finish in time and was killed.
    #[error("{tool} did not finish within {}s and was stopped", .after.as_secs())]
    Timeout {
        /// Which tool.
        tool: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// What the tools produced cannot be used (a key of another kind, a quote that does not
    /// parse).
    #[error("unexpected TPM output: {0}")]
    Unexpected(String),
    /// Input from elsewhere (the CA's credential) was refused before reaching the TPM.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A work file or directory.
    #[error("{}: {cause}", .path.display())]
    Io {
        /// Which file.
        path: PathBuf,
        /// What failed.
        cause: std::io::Error,
    },
    /// [`MAX_PENDING_OPERATIONS`] operations already wait for this TPM.
    #[error("the TPM is busy: {MAX_PENDING_OPERATIONS} operations already wait for it")]
    Busy,
    /// The thread running the operation ended without an answer.
    #[error("the TPM operation was interrupted: {0}")]
    Interrupted(String),
}

impl TpmError {
    /// A stable snake_case reason for logs and status pages.
    pub fn reason(&self) -> &'static str {
        match self {
            TpmError::InvalidTcti(_) => "invalid_tcti",
            TpmError::ToolNotRunnable { .. } => "tool_not_runnable",
            TpmError::ToolFailed { .. } => "tool_failed",
            TpmError::Timeout { .. } => "timeout",
            TpmError::Unexpected(_) => "unexpected_output",
            TpmError::InvalidInput(_) => "invalid_input",
            TpmError::Io { .. } => "io",
            TpmError::Busy => "busy",
            TpmError::Interrupted(_) => "interrupted",
        }
    }
}

/// Admission and mutual exclusion of the operations on one TPM, shared by clones.
#[derive(Debug, Default)]
struct Gate {
    /// Operations admitted and not finished (running or waiting for `lock`).
    admitted: AtomicUsize,
    /// Held for the whole of one operation.
    lock: Mutex<()>,
}

/// One admitted operation; leaving makes room for another.
struct Admission<'a>(&'a Gate);

impl Gate {
    fn admit(&self) -> Result<Admission<'_>, TpmError> {
        let admitted = self.admitted.fetch_add(1, Ordering::SeqCst);
        if admitted >= MAX_PENDING_OPERATIONS {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            return Err(TpmError::Busy);
        }
        Ok(Admission(self))
    }
}

impl Admission<'_> {
    fn lock(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data, only the TPM: a panic while holding it leaves nothing
        // inconsistent here.
        self.0.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TPM reached through tpm2-tools (see the module documentation).
#[derive(Debug, Clone)]
pub struct TpmDevice {
    /// The TCTI the tools are given, e.g. `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321`.
    tcti: String,
    /// Where the per-operation work directories are made (created if missing).
    dir: PathBuf,
    /// Where the tools are, instead of `PATH`.
    tools_dir: Option<PathBuf>,
    /// How long one tool may run.
    timeout: Duration,
    gate: Arc<Gate>,
}

/// Checks a TCTI string before it goes into a child's environment.
pub fn validate_tcti(tcti: &str) -> Result<(), TpmError> {
    if tcti.trim().is_empty() {
        return Err(TpmError::InvalidTcti("empty".into()));
    }
    if tcti.len() > MAX_TCTI_LEN {
        return Err(TpmError::InvalidTcti(format!(
            "{} bytes, at most {MAX_TCTI_LEN}",
            tcti.len()
        )));
    }
    if tcti.chars().any(char::is_control) {
        return Err(TpmError::InvalidTcti("holds control characters".into()));
    }
    Ok(())
}

/// Runs `operation` on the blocking thread pool: tools take from milliseconds to seconds, which
/// an async task must not spend on its executor thread.
pub async fn run_blocking<T, F>(operation: F) -> Result<T, TpmError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, TpmError> + Send + 'static,
{
    tokio::task::spawn_blocking(operation)
        .await
        .map_err(|error| TpmError::Interrupted(error.to_string()))?
}

impl TpmDevice {
    /// The TPM at `tcti`, with its work directories inside `dir`.
    pub fn new(tcti: &str, dir: impl Into<PathBuf>) -> Result<Self, TpmError> {
        validate_tcti(tcti)?;
        Ok(TpmDevice {
            tcti: tcti.to_owned(),
            dir: dir.into(),
            tools_dir: None,
            timeout: DEFAULT_COMMAND_TIMEOUT,
            gate: Arc::default(),
        })
    }

    /// Runs the tools from `dir` instead of looking them up in `PATH`.
    pub fn with_tools_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tools_dir = Some(dir.into());
        self
    }

    /// Kills a tool that runs longer than `timeout` (default [`DEFAULT_COMMAND_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The TCTI.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// Removes the work directories a killed process left behind in this device's directory.
    /// Call it only where no other process uses the same directory.
    pub fn remove_stale_work_dirs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let stale = entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(WORK_DIR_PREFIX));
            if stale && entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Starts one operation: admitted, exclusive, in a fresh work directory.
    fn operation<T>(
        &self,
        body: impl FnOnce(&Operation<'_>) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let admission = self.gate.admit()?;
        let _exclusive = admission.lock();
        let work = WorkDir::create(&self.dir)?;
        body(&Operation { device: self, work })
    }

    /// The EK's TPM2B_PUBLIC, the EK persisted at [`ENDORSEMENT_KEY_HANDLE`] (reused when it
    /// is there already, replacing anything else at that handle).
    pub fn endorsement_key(&self) -> Result<Vec<u8>, TpmError> {
        self.operation(|op| {
            op.run(
                "tpm2_createek",
                &["-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"],
            )?;
            let public = op.read("ek.pub")?;
            EndorsementKey::from_tpm2b_public(&public)
                .map_err(|e| TpmError::Unexpected(format!("the EK public area: {e}")))?;
            if op.persisted(ENDORSEMENT_KEY_HANDLE)? {
                op.run(
                    "tpm2_readpublic",
                    &["-c", ENDORSEMENT_KEY_HANDLE, "-o", "persisted.pub"],
                )?;
                if op.read("persisted.pub")? == public {
                    return Ok(public);
                }
            }
            op.persist("ek.ctx", ENDORSEMENT_KEY_HANDLE)?;
            Ok(public)
        })
    }

    /// Creates a fresh AK under the persisted EK (see [`Self::endorsement_key`]), persists it
    /// at [`ATTESTATION_KEY_HANDLE`] in place of any earlier one, and answers its TPM2B_PUBLIC.
    pub fn create_attestation_key(&self) -> Result<Vec<u8>, TpmError> {
        self.operation(|op| {
            op.run(
                "tpm2_createak",
                &[
                    "-C",
                    ENDORSEMENT_KEY_HANDLE,
                    "-c",
                    "ak.ctx",
                    "-G",
                    "ecc",
                    "-g",
                    "sha256",
                    "-s",
                    "ecdsa",
                    "-u",
                    "ak.pub",
                ],
            )?;
            let public = op.read("ak.pub")?;
            let ak = AttestationKeyPublic::from_tpm2b_public(&public)
                .map_err(|e| TpmError::Unexpected(format!("the AK public area: {e}")))?;
            if !matches!(ak.attestation_key(), AttestationKey::EcdsaP256(_)) {
                return Err(TpmError::Unexpected(
                    "the AK is not an ECC P-256 key".into(),
                ));
            }
            op.persist("ak.ctx", ATTESTATION_KEY_HANDLE)?;
            Ok(public)
        })
    }

    /// The TPM2B_PUBLIC of the key persisted at `handle` ([`ENDORSEMENT_KEY_HANDLE`] or
    /// [`ATTESTATION_KEY_HANDLE`]).
    pub fn read_public(&self, handle: &'static str) -> Result<Vec<u8>, TpmError> {
        self.operation(|op| {
            op.run("tpm2_readpublic", &["-c", handle, "-o", "key.pub"])?;
            op.read("key.pub")
        })
    }

    /// The persisted AK as a PEM `PUBLIC KEY`, checked to be one [`ztmesh_attest::tpm2`]
    /// verifies quotes with.
    pub fn attestation_key_pem(&self) -> Result<String, TpmError> {
        self.operation(|op| op.attestation_key_pem().map(|(pem, _)| pem))
    }

    /// TPM2_ActivateCredential of `credential` (the tpm2-tools credential file a CA made for
    /// the persisted EK and AK), authorised by the endorsement hierarchy through a
    /// PolicySecret session as the EK's policy requires: the secret inside.
    pub fn activate_credential(&self, credential: &[u8]) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        if credential.len() > MAX_CREDENTIAL_FILE_LEN {
            return Err(TpmError::InvalidInput(format!(
                "a credential file of {} bytes, at most {MAX_CREDENTIAL_FILE_LEN}",
                credential.len()
            )));
        }
        Credential::from_tpm2_tools_file(credential)
            .map_err(|e| TpmError::InvalidInput(format!("the credential file: {e}")))?;
        self.operation(|op| {
            op.write("credential.out", credential)?;
            op.run(
                "tpm2_startauthsession",
                &["--policy-session", "-S", "session.ctx"],
            )?;
            let activated = op
                .run("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"])
                .and_then(|_| {
                    op.run(
                        "tpm2_activatecredential",
                        &[
                            "-c",
                            ATTESTATION_KEY_HANDLE,
                            "-C",
                            ENDORSEMENT_KEY_HANDLE,
                            "-i",
                            "credential.out",
                            "-o",
                            "secret.bin",
                            "-P",
                            "session:session.ctx",
                        ],
                    )
                });
            // Whether or not it worked, the session must go: a TPM has few session slots. A
            // session the activation consumed is gone already, so this may fail.
            let _ = op.tool("tpm2_flushcontext", &["session.ctx"]);
            activated?;
            op.read("secret.bin").map(Zeroizing::new)
        })
    }

    /// TPM2_Quote of [`QUOTE_PCRS`] by the persisted AK with `qualifying_data` as extraData:
    /// the `tpm2` evidence, and the AK PEM as its collateral.
    pub fn quote(&self, qualifying_data: &[u8; 64]) -> Result<AttestationPayload, TpmError> {
        self.operation(|op| {
            let (pem, ak) = op.attestation_key_pem()?;
            let qualifying = hex::encode(qualifying_data);
            op.run(
                "tpm2_quote",
                &[
                    "-c",
                    ATTESTATION_KEY_HANDLE,
                    "-l",
                    QUOTE_PCRS,
                    "-q",
                    &qualifying,
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
            )?;
            let evidence = Tpm2Evidence::from_quote_outputs(
                &op.read("quote.msg")?,
                &op.read("quote.sig")?,
                &ak.to_spki_der(),
                &op.read("pcrs.out")?,
            )
            .map_err(|e| TpmError::Unexpected(format!("the quote: {e}")))?;
            Ok(AttestationPayload {
                evidence: evidence.encode(),
                collateral: Some(pem.into_bytes()),
            })
        })
    }

    /// The current values of [`QUOTE_PCRS`] (what a release manifest lists as `tpm2`
    /// measurements `pcr0`, `pcr1`, `pcr2`, `pcr7`).
    pub fn read_pcrs(&self) -> Result<BTreeMap<u8, [u8; 32]>, TpmError> {
        self.operation(|op| {
            op.run("tpm2_pcrread", &[QUOTE_PCRS, "-o", "pcrs.bin"])?;
            let values = op.read("pcrs.bin")?;
            if values.len() != QUOTE_PCR_INDICES.len() * 32 {
                return Err(TpmError::Unexpected(format!(
                    "{} bytes of PCR values for {} PCRs",
                    values.len(),
                    QUOTE_PCR_INDICES.len()
                )));
            }
            let mut pcrs = BTreeMap::new();
            for (index, value) in QUOTE_PCR_INDICES.iter().zip(values.chunks_exact(32)) {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(value);
                pcrs.insert(*index, digest);
            }
            Ok(pcrs)
        })
    }
}

fn random_suffix() -> [u8; 8] {
    let mut suffix = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut suffix);
    suffix
}

/// One operation's work directory: private, removed with everything in it when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(parent: &Path) -> Result<Self, TpmError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |cause| TpmError::Io { path, cause }
        };
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let path = parent.join(format!("{WORK_DIR_PREFIX}{}", hex::encode(random_suffix())));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            // Credentials and activated secrets pass through here.
            builder.mode(0o700);
        }
        builder.create(&path).map_err(io(&path))?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One operation in progress.
struct Operation<'a> {
    device: &'a TpmDevice,
    work: WorkDir,
}

impl Operation<'_> {
    /// Runs a tool, then flushes the transient objects it may have left loaded.
    fn run(&self, tool: &'static str, args: &[&str]) -> Result<Vec<u8>, TpmError> {
        let result = self.tool(tool, args);
        // A failed flush leaves nothing this step needs; the next tool reports a broken TPM.
        let _ = self.tool("tpm2_flushcontext", &["-t"]);
        result
    }

    /// Runs a tool in the work directory: its stdout (at most 64 KiB), or why it failed.
    fn tool(&self, tool: &'static str, args: &[&str]) -> Result<Vec<u8>, TpmError> {
        let program = match &self.device.tools_dir {
            Some(dir) => dir.join(tool),
            None => PathBuf::from(tool),
        };
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&self.work.0)
            .env(TCTI_ENV, &self.device.tcti)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|cause| TpmError::ToolNotRunnable { tool, cause })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let deadline = Instant::now() + self.device.timeout;
        // Both pipes are drained while the child runs, so a chatty tool never blocks on a full
        // pipe; the readers end when the child exits or is killed.
        std::thread::scope(|scope| {
            let out = scope.spawn(move || read_bounded(stdout, MAX_STDOUT));
            let err = scope.spawn(move || read_tail(stderr, MAX_STDERR));
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(TpmError::Timeout {
                            tool,
                            after: self.device.timeout,
                        });
                    }
                    Err(cause) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(TpmError::Io {
                            path: PathBuf::from(tool),
                            cause,
                        });
                    }
                }
            };
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            let status = status?;
            if status.success() {
                Ok(stdout)
            } else {
                Err(TpmError::ToolFailed {
                    tool,
                    status: status.to_string(),
                    stderr: tidy_stderr(&stderr),
                })
            }
        })
    }

    /// Whether a persistent object is at `handle`.
    fn persisted(&self, handle: &str) -> Result<bool, TpmError> {
        let listing = self.tool("tpm2_getcap", &["handles-persistent"])?;
        let listing = String::from_utf8_lossy(&listing);
        Ok(listing
            .lines()
            .filter_map(|line| line.trim().strip_prefix("- "))
            .any(|listed| listed.trim().eq_ignore_ascii_case(handle)))
    }

    /// Persists the loaded object saved as `context` at `handle`, evicting whatever was there.
    fn persist(&self, context: &str, handle: &str) -> Result<(), TpmError> {
        if self.persisted(handle)? {
            self.run("tpm2_evictcontrol", &["-C", "o", "-c", handle])?;
        }
        self.run("tpm2_evictcontrol", &["-C", "o", "-c", context, handle])?;
        Ok(())
    }

    /// The persisted AK as PEM and as a key.
    fn attestation_key_pem(&self) -> Result<(String, AttestationKey), TpmError> {
        self.run(
            "tpm2_readpublic",
            &["-c", ATTESTATION_KEY_HANDLE, "-f", "pem", "-o", "ak.pem"],
        )?;
        let pem = String::from_utf8(self.read("ak.pem")?)
            .map_err(|_| TpmError::Unexpected("the AK PEM is not UTF-8".into()))?;
        let key = AttestationKey::from_pem(&pem)
            .map_err(|e| TpmError::Unexpected(format!("the AK: {e}")))?;
        Ok((pem, key))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.0.join(name)
    }

    /// A file a tool wrote, at most 64 KiB.
    fn read(&self, name: &str) -> Result<Vec<u8>, TpmError> {
        let path = self.path(name);
        let io = |cause| TpmError::Io {
            path: path.clone(),
            cause,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .map_err(io)?
            .take(MAX_TOOL_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_TOOL_FILE {
            return Err(TpmError::Unexpected(format!(
                "{name} is larger than {MAX_TOOL_FILE} bytes"
            )));
        }
        Ok(bytes)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TpmError> {
        let path = self.path(name);
        std::fs::write(&path, bytes).map_err(|cause| TpmError::Io { path, cause })
    }
}

/// Reads a pipe to its end, keeping at most `max` bytes.
fn read_bounded(pipe: Option<impl Read>, max: usize) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
}

/// Reads a pipe to its end, keeping at most its last `max` bytes (tpm2-tools print the cause
/// of a failure last, after the warnings of the layers below).
fn read_tail(pipe: Option<impl Read>, max: usize) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buffer[..n]);
                // Drop the front only once it is well over, so each byte moves a few times.
                if kept.len() > 2 * max {
                    kept.drain(..kept.len() - max);
                }
            }
        }
    }
    if kept.len() > max {
        kept.drain(..kept.len() - max);
    }
    kept
}

/// A tool's stderr for an error message: lossy UTF-8, trimmed, its last
/// [`MAX_STDERR_IN_ERROR`] characters (where tpm2-tools say what failed).
fn tidy_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let text = lines.join("\n");
    let text = text.as_str();
    let count = text.chars().count();
    if count <= MAX_STDERR_IN_ERROR {
        return text.to_owned();
    }
    let tail: String = text.chars().skip(count - MAX_STDERR_IN_ERROR).collect();
    format!("…{}", tail.trim_start())
}

/// Reads an EK public area file (`ztmesh tpm ek --out`, `tpm2_createek -u`), bounded.
pub fn parse_endorsement_key(bytes: &[u8]) -> Result<EndorsementKey, TpmError> {
    if bytes.len() > MAX_PUBLIC_AREA_LEN + 2 {
        return Err(TpmError::InvalidInput(format!(
            "an EK public area of {} bytes",
            bytes.len()
        )));
    }
    EndorsementKey::from_tpm2b_public(bytes)
        .map_err(|e| TpmError::InvalidInput(format!("the EK public area: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of fake tools: shell scripts named like tpm2-tools.
    struct FakeTools(tempfile::TempDir);

    impl FakeTools {
        fn new() -> Self {
            FakeTools(tempfile::tempdir().unwrap())
        }

        fn add(&self, tool: &str, script: &str) {
            let path = self.0.path().join(tool);
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }

        fn device(&self, work: &Path) -> TpmDevice {
            TpmDevice::new("swtpm:host=127.0.0.1,port=1", work)
                .unwrap()
                .with_tools_dir(self.0.path())
        }
    }

    fn no_work_dirs_left(dir: &Path) {
        let left: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn a_missing_tool_is_a_typed_error() {
        let tools = FakeTools::new();
        let work = tempfile::tempdir().unwrap();
        let device = tools.device(work.path());
        let error = device.endorsement_key().unwrap_err();
        assert!(
            matches!(
                error,
                TpmError::ToolNotRunnable {
                    tool: "tpm2_createek",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(error.reason(), "tool_not_runnable");
        assert!(error.to_string().contains("tpm2-tools"), "{error}");
        no_work_dirs_left(work.path());
    }

    #[test]
    fn a_failing_tool_carries_its_trimmed_bounded_stderr_and_the_flush_still_runs() {
        let tools = FakeTools::new();
        let work = tempfile::tempdir().unwrap();
        let flushed = work.path().join("flushed");
        tools.add(
            "tpm2_readpublic",
            "echo noise on stdout; echo '  ERROR: the handle is not correct for the use  ' >&2; exit 3",
        );
        tools.add(
            "tpm2_flushcontext",
            &format!("echo \"$@\" >> '{}'", flushed.display()),
        );
        let device = tools.device(work.path());
        let error = device.read_public(ATTESTATION_KEY_HANDLE).unwrap_err();
        let TpmError::ToolFailed {
            tool,
            status,
            stderr,
        } = &error
        else {
            panic!("{error:?}")
        };
        assert_eq!(*tool, "tpm2_readpublic");
        assert!(status.contains('3'), "{status}");
        assert_eq!(stderr, "ERROR: the handle is not correct for the use");
        assert_eq!(std::fs::read_to_string(&flushed).unwrap().trim(), "-t");

        // Megabytes of complaints: the error keeps the end, bounded.
        tools.add(
            "tpm2_readpublic",
            "i=0; while [ $i -lt 20000 ]; do echo 'WARNING: filler line of some length' >&2; i=$((i+1)); done; echo 'ERROR: the real cause' >&2; exit 1",
        );
        let error = device.read_public(ATTESTATION_KEY_HANDLE).unwrap_err();
        let TpmError::ToolFailed { stderr, .. } = &error else {
            panic!("{error:?}")
        };
        assert!(stderr.chars().count() <= MAX_STDERR_IN_ERROR + 1);
        assert!(stderr.starts_with('…'), "{stderr}");
        assert!(stderr.ends_with("ERROR: the real cause"), "{stderr}");
        // A chatty stdout neither blocks the tool nor grows without bound.
        tools.add(
            "tpm2_readpublic",
            "i=0; while [ $i -lt 20000 ]; do echo 'yaml: filler of the public area listing'; i=$((i+1)); done; echo x > key.pub",
        );
        assert_eq!(device.read_public(ATTESTATION_KEY_HANDLE).unwrap(), b"x\n");
        no_work_dirs_left_but(work.path(), "flushed");
    }

    fn no_work_dirs_left_but(dir: &Path, keep: &str) {
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|name| name != keep)
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn a_hanging_tool_is_killed_at_the_timeout() {
        let tools = FakeTools::new();
        let work = tempfile::tempdir().unwrap();
        tools.add("tpm2_flushcontext", "exit 0");
        tools.add("tpm2_pcrread", "exec sleep 600");
        let device = tools
            .device(work.path())
            .with_timeout(Duration::from_millis(200));
        let error = device.read_pcrs().unwrap_err();
        assert!(
            matches!(
                error,
                TpmError::Timeout {
                    tool: "tpm2_pcrread",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.reason(), "timeout");
        no_work_dirs_left(work.path());
    }

    #[test]
    fn garbage_from_the_tools_or_the_ca_is_a_typed_error() {
        let tools = FakeTools::new();
        let work = tempfile::tempdir().unwrap();
        tools.add("tpm2_flushcontext", "exit 0");
        tools.add("tpm2_createek", "echo garbage > ek.pub");
        tools.add("tpm2_pcrread", "printf 'short' > pcrs.bin");
        let device = tools.device(work.path());
        assert_eq!(
            device.endorsement_key().unwrap_err().reason(),
            "unexpected_output"
        );
        assert_eq!(
            device.read_pcrs().unwrap_err().reason(),
            "unexpected_output"
        );
        // The CA's credential is parsed before any tool sees it.
        for credential in [&b""[..], b"\xba\xdc\xc0\xde garbage", &[0u8; 5000]] {
            let error = device.activate_credential(credential).unwrap_err();
            assert_eq!(error.reason(), "invalid_input", "{error}");
        }
        assert_eq!(
            parse_endorsement_key(b"not an EK").unwrap_err().reason(),
            "invalid_input"
        );
        no_work_dirs_left(work.path());
    }

    #[test]
    fn bad_tctis_are_refused_before_any_tool_runs() {
        for tcti in ["", "   ", "swtpm:\nport=1", &"x".repeat(MAX_TCTI_LEN + 1)] {
            let error = TpmDevice::new(tcti, "/nonexistent").unwrap_err();
            assert_eq!(error.reason(), "invalid_tcti", "{tcti:?}");
        }
        assert!(TpmDevice::new("device:/dev/tpmrm0", "/nonexistent").is_ok());
    }

    #[test]
    fn an_unreachable_tpm_is_a_typed_error_from_the_real_tools() {
        // Without tpm2-tools this is the missing-tool error instead; both are typed.
        let work = tempfile::tempdir().unwrap();
        // Port 1 on loopback: nothing listens there.
        let device = TpmDevice::new("swtpm:host=127.0.0.1,port=1", work.path()).unwrap();
        let error = device.read_public(ENDORSEMENT_KEY_HANDLE).unwrap_err();
        match &error {
            TpmError::ToolFailed { stderr, .. } => {
                assert!(stderr.contains("tcti"), "{stderr}");
            }
            TpmError::ToolNotRunnable { .. } => {}
            other => panic!("{other:?}"),
        }
        let device = TpmDevice::new("no-such-tcti-library", work.path()).unwrap();
        let error = device.read_pcrs().unwrap_err();
        assert!(
            matches!(
                error,
                TpmError::ToolFailed { .. } | TpmError::ToolNotRunnable { .. }
            ),
            "{error:?}"
        );
        no_work_dirs_left(work.path());
    }

    #[test]
    fn operations_beyond_the_bound_are_refused_as_busy() {
        let gate = Gate::default();
        let admitted: Vec<_> = (0..MAX_PENDING_OPERATIONS)
            .map(|_| gate.admit().unwrap())
            .collect();
        assert!(matches!(gate.admit(), Err(TpmError::Busy)));
        drop(admitted);
        assert_eq!(gate.admitted.load(Ordering::SeqCst), 0);
        let _again = gate.admit().unwrap();

        // Through the device: a full gate refuses before any tool or directory is touched.
        let work = tempfile::tempdir().unwrap();
        let device = TpmDevice::new("swtpm:host=127.0.0.1,port=1", work.path().join("node"))
            .unwrap()
            .with_tools_dir(work.path().join("no-tools"));
        let held: Vec<_> = (0..MAX_PENDING_OPERATIONS)
            .map(|_| device.gate.admit().unwrap())
            .collect();
        assert!(matches!(device.read_pcrs(), Err(TpmError::Busy)));
        drop(held);
        assert!(matches!(
            device.read_pcrs(),
            Err(TpmError::ToolNotRunnable { .. })
        ));
    }

    #[test]
    fn stale_work_dirs_are_removed_and_nothing_else() {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir(work.path().join(".tpm-work-0011223344556677")).unwrap();
        std::fs::write(
            work.path()
                .join(".tpm-work-0011223344556677")
                .join("secret.bin"),
            b"s",
        )
        .unwrap();
        std::fs::write(work.path().join("node.toml"), b"x").unwrap();
        let device = TpmDevice::new("device:/dev/tpmrm0", work.path()).unwrap();
        device.remove_stale_work_dirs();
        no_work_dirs_left_but(work.path(), "node.toml");
    }
}
