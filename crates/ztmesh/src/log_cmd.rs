//! `ztmesh log`: the CA's membership log for operators and auditors (`key`, `checkpoint`,
//! `show`, `verify`), and a node operator's acknowledgement of a split-view alarm (`ack`). Every check is the tlog crate's and every format `ztmesh_node`'s
//! `membership_log`; this module fetches, prints, and exits non-zero when a check fails.
//! `ack --alarm log-stalled` acknowledges the `log_stalled` alarm instead.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use ztmesh_ca::ca_service::{self, CaDir};
use ztmesh_ca::membership_log::{
    decode_leaf, EventEntry, LogEntriesResponse, LogEntry, MAX_ENTRIES_PER_REQUEST,
};
use ztmesh_core::Timestamp;
use ztmesh_node::ca_client;
use ztmesh_node::node_dir::NodeDir;
use ztmesh_runtime::timefmt::rfc3339;
use ztmesh_tlog::note::MAX_NOTE_LEN;
use ztmesh_tlog::policy::MAX_POLICY_LEN;
use ztmesh_tlog::{Checkpoint, MerkleTree, Note, Policy, PolicyError, Verifier};

/// Largest `--entries` file read: about a million entries of `log show --json`.
const MAX_ENTRIES_FILE_LEN: u64 = 512 * 1024 * 1024;

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Print the log's public key (a signed-note vkey) for witnesses and policies to trust.
    /// With --ca-dir it is read from log.vkey, so it works before `ca serve` runs.
    Key(LogSourceArgs),
    /// Print the newest checkpoint note with the witness cosignatures gathered so far.
    Checkpoint(LogSourceArgs),
    /// List log entries: a table, or JSON with each leaf (input of `log verify --entries`).
    Show(LogShowArgs),
    /// Check a checkpoint against a tlog-policy: the log signature, every cosignature and the
    /// quorum; with --entries also the Merkle root. Exits 0 only when everything holds.
    Verify(LogVerifyArgs),
    /// Acknowledge the split-view alarm a running node raised, once investigated: its evidence
    /// is kept in the node's state.db and the node carries on from its accepted checkpoint (a
    /// log still showing two histories raises the next alarm). --alarms is the alarm count
    /// `ztmesh status` shows, so a newer alarm is never cleared unseen. With
    /// `--alarm log-stalled`, the log_stalled alarm: kept in state.db's history, and a log
    /// still stalled raises the next one log_stall_secs later.
    Ack(LogAckArgs),
}

#[derive(Args, Debug)]
pub struct LogAckArgs {
    #[command(flatten)]
    node: crate::app::NodeArgs,
    /// Which alarm.
    #[arg(long, value_enum, default_value = "split-view")]
    alarm: AlarmArg,
    /// The alarm count being acknowledged (`split_view_alarms`, or `log_stalled_alarms`, of
    /// `ztmesh status --json`).
    #[arg(long)]
    alarms: u64,
}

/// The alarms `ztmesh log ack` clears.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum AlarmArg {
    /// Two histories of the membership log.
    SplitView,
    /// No witnessed checkpoint (or no coverage of a certificate) in log_stall_secs.
    LogStalled,
}

/// Where the log is read from.
#[derive(Args, Debug, Default)]
pub struct LogSourceArgs {
    /// A CA data directory on this machine: its ca.addr, ca.pem and log.vkey are used.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// CA URL, e.g. https://ca.example.org:8443 (default: the address in <ca-dir>/ca.addr).
    #[arg(long)]
    ca_url: Option<String>,
    /// CA certificate (PEM) the server must chain to (default <ca-dir>/ca.pem).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LogShowArgs {
    #[command(flatten)]
    source: LogSourceArgs,
    /// Print JSON (`{"entries": [{"index", "leaf" (base64), "entry"}]}`) instead of a table.
    #[arg(long)]
    json: bool,
    /// First entry to show.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// How many entries to show (default: all from --start).
    #[arg(long)]
    count: Option<u64>,
}

#[derive(Args, Debug)]
pub struct LogVerifyArgs {
    /// The tlog-policy to verify against (logs, witnesses, quorum).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The checkpoint note (as `ztmesh log checkpoint` prints it). Without it the checkpoint
    /// is fetched from the CA given by --ca-dir or --ca-url.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Entries as `ztmesh log show --json` prints them, from index 0 to at least the
    /// checkpoint size: their Merkle root must be the checkpoint's.
    #[arg(long, value_name = "FILE")]
    entries: Option<PathBuf>,
    #[command(flatten)]
    source: LogSourceArgs,
}

/// Runs one `ztmesh log` subcommand.
pub async fn run(command: LogCommand) -> Result<()> {
    match command {
        LogCommand::Key(args) => key(args).await,
        LogCommand::Checkpoint(args) => checkpoint(args).await,
        LogCommand::Show(args) => show(args).await,
        LogCommand::Verify(args) => verify(args).await,
        LogCommand::Ack(args) => ack(args).await,
    }
}

/// `ztmesh log ack`: clears the split-view (or log_stalled) alarm number `--alarms` on a
/// running node.
async fn ack(args: LogAckArgs) -> Result<()> {
    use ztmesh_runtime::api_types::LogAlarmKind;
    let kind = match args.alarm {
        AlarmArg::SplitView => LogAlarmKind::SplitView,
        AlarmArg::LogStalled => LogAlarmKind::LogStalled,
    };
    let answer = crate::app::client(&args.node)?
        .acknowledge_log_alarm(kind, args.alarms)
        .await?;
    match kind {
        LogAlarmKind::SplitView => out!(
            "split-view alarm {} acknowledged; its evidence stays in the node's state.db",
            answer.alarms
        ),
        LogAlarmKind::LogStalled => out!(
            "log_stalled alarm {} acknowledged; it stays in the node's state.db (log_stall_history), and a log still stalled raises the next one after log_stall_secs",
            answer.alarms
        ),
    }
    Ok(())
}

/// An HTTPS client of the CA's public log routes.
struct LogClient {
    base: String,
    client: reqwest::Client,
}

impl LogClient {
    fn new(source: &LogSourceArgs) -> Result<LogClient> {
        let dir = source.ca_dir.as_ref().map(|d| CaDir(d.clone()));
        let base = match (&source.ca_url, &dir) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(dir)) => {
                let addr = std::fs::read_to_string(dir.addr_file()).with_context(|| {
                    format!(
                        "{} (is `ztmesh ca serve` running? or pass --ca-url)",
                        dir.addr_file().display()
                    )
                })?;
                format!("https://{}", addr.trim())
            }
            (None, None) => bail!("give --ca-dir, or --ca-url with --ca-cert"),
        };
        let cert_path = match (&source.ca_cert, &dir) {
            (Some(path), _) => path.clone(),
            (None, Some(dir)) => dir.ca_cert(),
            (None, None) => bail!("give --ca-cert (the CA certificate) with --ca-url"),
        };
        let cert = NodeDir::read_cert(&cert_path)?;
        let client = ca_client::http_client(ztmesh_runtime::tls::ca_client_config(&cert, None)?)?;
        Ok(LogClient { base, client })
    }

    /// GETs `path` and returns the body, refusing answers over `limit` bytes.
    async fn get(&self, path: &str, limit: usize) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut response = ca_client::send(self.client.get(&url), &url).await?;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("reading {url}"))?
        {
            if body.len() + chunk.len() > limit {
                bail!("the answer of {url} is larger than {limit} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn get_text(&self, path: &str, limit: usize) -> Result<String> {
        String::from_utf8(self.get(path, limit).await?)
            .map_err(|_| anyhow!("the answer of {path} is not UTF-8"))
    }

    async fn checkpoint(&self) -> Result<String> {
        self.get_text("/v1/log/checkpoint", MAX_NOTE_LEN).await
    }

    async fn entries(&self, start: u64, count: u64) -> Result<LogEntriesResponse> {
        let body = self
            .get(
                &format!("/v1/log/entries?start={start}&count={count}"),
                // A leaf is a few hundred bytes of base64; this leaves room to spare.
                16 * 1024 * 1024,
            )
            .await?;
        serde_json::from_slice(&body).context("the entries answer is not the documented JSON")
    }
}

async fn key(args: LogSourceArgs) -> Result<()> {
    if args.ca_url.is_none() {
        if let Some(dir) = &args.ca_dir {
            out!("{}", ca_service::log_vkey(&CaDir(dir.clone()))?);
            return Ok(());
        }
    }
    let text = LogClient::new(&args)?.get_text("/v1/log/key", 4096).await?;
    let vkey = Verifier::parse(text.trim()).map_err(|e| anyhow!("the CA's log key: {e}"))?;
    out!("{vkey}");
    Ok(())
}

async fn checkpoint(args: LogSourceArgs) -> Result<()> {
    let text = LogClient::new(&args)?.checkpoint().await?;
    Note::parse(&text).map_err(|e| anyhow!("the CA's checkpoint is not a signed note: {e}"))?;
    out!("{}", text.trim_end_matches('\n'));
    Ok(())
}

/// One entry as `log show --json` prints it and `log verify --entries` reads it.
#[derive(Debug, Serialize, Deserialize)]
struct ShownEntry {
    index: u64,
    /// The leaf bytes, base64.
    leaf: String,
    /// The leaf decoded; `null` when this version cannot decode it (a newer kind).
    #[serde(default, skip_deserializing)]
    entry: Option<LogEntry>,
    /// The leaf decoded as a mesh event (manifest change, governance decision, tier change).
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    event: Option<EventEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ShownEntries {
    entries: Vec<ShownEntry>,
}

async fn show(args: LogShowArgs) -> Result<()> {
    let client = LogClient::new(&args.source)?;
    let mut shown = Vec::new();
    let mut next = args.start;
    let mut remaining = args.count;
    loop {
        let page = remaining.map_or(MAX_ENTRIES_PER_REQUEST, |r| r.min(MAX_ENTRIES_PER_REQUEST));
        if page == 0 {
            break;
        }
        let answer = client.entries(next, page).await?;
        let got = answer.entries.len() as u64;
        for item in answer.entries {
            if item.index != next {
                bail!(
                    "the CA answered entry {} where {next} was expected",
                    item.index
                );
            }
            let leaf = decode_leaf(&item.leaf);
            let entry = leaf
                .as_deref()
                .and_then(|leaf| LogEntry::from_leaf(leaf).ok());
            let event = leaf
                .as_deref()
                .and_then(|leaf| EventEntry::from_leaf(leaf).ok());
            shown.push(ShownEntry {
                index: item.index,
                leaf: item.leaf,
                entry,
                event,
            });
            next += 1;
        }
        remaining = remaining.map(|r| r - got.min(r));
        if got < page {
            break;
        }
    }
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&ShownEntries { entries: shown })?
        );
        return Ok(());
    }
    out!(
        "{:<6} {:<19} {:<34} {:<34} {:<21} {}",
        "INDEX",
        "KIND",
        "NODE",
        "SERIAL",
        "NOT AFTER",
        "AT"
    );
    for item in shown {
        if let Some(event) = &item.event {
            out!(
                "{:<6} {:<19} {}",
                item.index,
                event.kind(),
                describe_event(event)
            );
            continue;
        }
        match item.entry {
            Some(entry) => out!(
                "{:<6} {:<19} {:<34} {:<34} {:<21} {}",
                item.index,
                entry.kind.as_str(),
                entry.node_id.to_string(),
                entry.serial,
                entry
                    .not_after
                    .map(|t| rfc3339(Timestamp::from_unix_secs(t)))
                    .unwrap_or_else(|| "-".into()),
                rfc3339(Timestamp::from_unix_secs(entry.at)),
            ),
            None => out!(
                "{:<6} (an entry this version cannot decode; see --json)",
                item.index
            ),
        }
    }
    Ok(())
}

/// One line for a mesh event.
fn describe_event(event: &EventEntry) -> String {
    let at = |t: u64| rfc3339(Timestamp::from_unix_secs(t));
    match event {
        EventEntry::Manifest {
            version,
            sha256,
            not_after,
            at: when,
        } => format!(
            "release manifest {version} (sha256 {sha256}, not after {}) at {}",
            at(*not_after),
            at(*when)
        ),
        EventEntry::GovernanceDecision {
            proposal,
            param,
            value,
            reporter,
            at: when,
        } => format!(
            "{param} = {value} (proposal {}…) reported by {reporter} at {}",
            &proposal[..16],
            at(*when)
        ),
        EventEntry::TierChange {
            node_id,
            tier,
            reason,
            reporter,
            at: when,
        } => format!(
            "{node_id} → {tier} ({reason}) reported by {reporter} at {}",
            at(*when)
        ),
        #[allow(unreachable_patterns)]
        _ => "a mesh event this version cannot describe".into(),
    }
}

/// Reads a whole file of at most `limit` bytes as UTF-8.
fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    let mut bytes = Vec::new();
    // One byte over the limit tells "too large" apart from "exactly at the limit".
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{what} {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!("{what} {} is larger than {limit} bytes", path.display());
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("{what} {} is not UTF-8", path.display()))
}

async fn verify(args: LogVerifyArgs) -> Result<()> {
    let policy_text = read_bounded(&args.policy, MAX_POLICY_LEN as u64, "policy")?;
    let policy = Policy::parse(&policy_text)
        .map_err(|e| anyhow!("policy {}: {e}", args.policy.display()))?;
    let note_text = match &args.checkpoint {
        Some(path) => read_bounded(path, MAX_NOTE_LEN as u64, "checkpoint")?,
        None if args.source.ca_dir.is_some() || args.source.ca_url.is_some() => {
            LogClient::new(&args.source)?.checkpoint().await?
        }
        None => bail!("give --checkpoint FILE, or --ca-dir / --ca-url to fetch it"),
    };
    let note =
        Note::parse(&note_text).map_err(|e| anyhow!("the checkpoint is not a signed note: {e}"))?;
    let checkpoint = Checkpoint::parse(note.text())
        .map_err(|e| anyhow!("the signed note is not a checkpoint: {e}"))?;
    out!("checkpoint      {}", checkpoint.origin());
    out!("  size          {}", checkpoint.size());
    out!("  root          {}", checkpoint.root());

    let (cosigners, quorum_met) = match policy.verify_checkpoint(&note) {
        Ok(verified) => (verified.cosigners, true),
        Err(PolicyError::QuorumNotMet { cosigners }) => {
            // The log signature and every cosignature line were checked before the quorum;
            // only the timestamps are not returned here.
            let timestamps = policy
                .witnesses()
                .iter()
                .filter(|w| cosigners.contains(&w.name))
                .filter_map(|w| {
                    w.verifier
                        .verify_note(&note)
                        .ok()
                        .flatten()
                        .map(|t| (w.name.clone(), t))
                })
                .collect();
            (timestamps, false)
        }
        Err(error) => bail!("the checkpoint fails the policy: {error}"),
    };
    out!("log signature   valid");
    for witness in policy.witnesses() {
        match cosigners.get(&witness.name) {
            Some(&at) => out!(
                "witness {:<24} cosigned at {}",
                witness.name,
                rfc3339(Timestamp::from_unix_secs(at))
            ),
            None => out!("witness {:<24} no cosignature", witness.name),
        }
    }
    if quorum_met {
        out!("quorum          met");
    } else {
        out!("quorum          not met");
    }

    let mut entries_ok = true;
    if let Some(path) = &args.entries {
        match check_entries(path, &checkpoint) {
            Ok(message) => out!("entries         {message}"),
            Err(error) => {
                out!("entries         {error:#}");
                entries_ok = false;
            }
        }
    }
    match (quorum_met, entries_ok) {
        (true, true) => Ok(()),
        (false, _) => {
            bail!("quorum not met: the checkpoint lacks the cosignatures the policy requires")
        }
        (true, false) => bail!("the entries do not match the checkpoint"),
    }
}

/// Recomputes the Merkle root of the first `size` entries of a `log show --json` file.
fn check_entries(path: &Path, checkpoint: &Checkpoint) -> Result<String> {
    let text = read_bounded(path, MAX_ENTRIES_FILE_LEN, "entries file")?;
    let file: ShownEntries = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{} is not the JSON of `ztmesh log show --json`: {e}",
            path.display()
        )
    })?;
    let size = checkpoint.size();
    let mut tree = MerkleTree::new();
    let mut unknown = 0usize;
    for (expected, item) in (0u64..).zip(file.entries.iter()) {
        if expected == size {
            break;
        }
        if item.index != expected {
            bail!(
                "entry {} where {expected} was expected: the file must hold entries 0.. in order",
                item.index
            );
        }
        let leaf = decode_leaf(&item.leaf)
            .ok_or_else(|| anyhow!("entry {expected}: the leaf is not base64 of a leaf"))?;
        if LogEntry::from_leaf(&leaf).is_err() {
            unknown += 1;
        }
        tree.append(&leaf);
    }
    if tree.size() < size {
        bail!(
            "the file holds {} entries from 0, the checkpoint covers {size}",
            tree.size()
        );
    }
    if tree.root() != checkpoint.root() {
        bail!(
            "the root of the first {size} entries is {}, the checkpoint's is {}",
            tree.root(),
            checkpoint.root()
        );
    }
    let mut message = format!("the root of entries 0..{size} matches the checkpoint");
    if unknown > 0 {
        message.push_str(&format!(
            " ({unknown} of them are of kinds this version cannot decode)"
        ));
    }
    let beyond = file.entries.len() as u64 - size.min(file.entries.len() as u64);
    if beyond > 0 {
        message.push_str(&format!(
            "; {beyond} later entries are not covered by this checkpoint"
        ));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_entries_round_trip_without_the_decoded_field() {
        let json = r#"{"entries":[{"index":0,"leaf":"AA==","entry":{"kind":"x"}}]}"#;
        let parsed: ShownEntries = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.entries[0].index, 0);
        assert!(parsed.entries[0].entry.is_none());
    }
}
