//! The node as a monitor of the CA's membership log (DESIGN.md §3, "Transparency log and
//! witnesses"): it follows the log through cosigned checkpoints, passes them on by gossip,
//! raises the split-view alarm when it sees two histories that cannot both be true, and
//! cross-checks the certificates and revocations it is shown against the log's entries.
//!
//! The decisions are the sans-IO [`CheckpointMonitor`]'s and [`log_audit`](crate::log_audit)'s;
//! this module feeds them. The policy is `log-policy.txt`, pinned at enrollment with the CA
//! certificate; without it the log is not watched. Checkpoints come from two places, and both
//! go through the same monitor:
//!
//! - the CA itself (`GET /v1/log/checkpoint`), polled by the daemon's log-watch loop;
//! - other members, as [`MessageKind::Checkpoint`](ztmesh_gossip::MessageKind) gossip: that is
//!   how a node that cannot reach the CA still learns the log, and how a CA that shows
//!   different nodes different logs is caught by any node that sees both.
//!
//! A larger checkpoint is accepted only once the CA has proved it consistent with the accepted
//! one; while the CA cannot be reached the monitor keeps it pending and the loop retries. Every
//! checkpoint that moves the accepted head is published as gossip. The CA's own checkpoints
//! only ever grow, so one it serves that is older than the accepted head is its log rolled
//! back (restored from a backup, or hiding entries from this node): a split view too. Gossiped
//! older checkpoints are only late relays.
//!
//! The accepted head and the alarm (flag, count, reason, evidence) live in the node's
//! `state.db` ([`NodeStore::save_log_watch`], compare-and-swap: the head only moves forward),
//! saved after every change and resumed at start, so a CA rolled back while the node was down
//! is caught as soon as the node looks again, and an alarm outlives a restart.
//!
//! A log that shows nothing is watched too: [`log_stall`](crate::log_stall) raises
//! `log_stalled` when no checkpoint meeting the quorum arrives for `log_stall_secs`, or when a
//! certificate waits that long past its grace without the log covering it. Its state and the
//! history of its alarms live in `state.db` beside the split-view alarm's.
//!
//! The monitor lives in one task (the loop), so a proof always answers the request it was
//! fetched for; the API reads a [`LogStatus`] snapshot the loop refreshes after every wake-up.
//! What must never happen here: accepting a checkpoint the monitor did not, saving a head the
//! monitor did not accept, or blocking gossip delivery or a link on the CA (received notes and
//! peer certificates go through bounded queues).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use ztmesh_core::{NodeId, Timestamp, TrustDomain};
use ztmesh_pki::{Crl, Serial};
use ztmesh_tlog::{Checkpoint, CheckpointMonitor, Hash, Note, Observation, SavedMonitor, TreeHead};

use crate::api_types::{
    AcknowledgeAlarmRequest, AcknowledgeAlarmResponse, LogAlarmKind, LogStatus,
};
use crate::ca_client::ClientError;
use crate::log_audit::{
    is_due, issuance_is_logged, node_revocation_is_logged, own_entry_is_due, revocation_is_logged,
    revocations_due_by, withheld, CertificateQueue, EntryFollower, FindingKind, Findings,
    NodeRevocationQueue, NodeRevocationVerdict, PendingCertificate, BATCHES_PER_WAKE,
    MAX_FOLLOWED_ENTRIES, MAX_PENDING_CERTIFICATES, MAX_PENDING_NODE_REVOCATIONS,
    OWN_ENTRIES_PER_WAKE,
};
use crate::log_stall::{StallAckRefused, StallEvent, StallJudge, DEFAULT_STALL_SECS};
use crate::node_dir::{NodeDir, NodeDirError};
use crate::store::{
    AlarmAck, EndedStall, LogWatchSwap, NodeStore, SavedLogAlarm, SavedLogHead, SavedLogStall,
    SavedLogWatch, StallEnd, StoreError,
};

/// How often the CA's latest checkpoint is fetched.
pub(crate) const LOG_WATCH_INTERVAL: Duration = Duration::from_secs(10);

/// Least time between two fetches of the CA's checkpoint prompted by gossip, so a burst of
/// checkpoint messages (every member publishes each new head) costs the CA at most one request
/// a second from each node.
pub(crate) const MIN_GOSSIP_FETCH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a published checkpoint stays in the mesh.
pub(crate) const CHECKPOINT_TTL: Duration = Duration::from_secs(3600);

/// How often the accepted head is published again while the log does not grow, so that a node
/// joining (or cut off from the CA) during a quiet hour still finds a live checkpoint message.
pub(crate) const CHECKPOINT_REPUBLISH_INTERVAL: Duration = Duration::from_secs(1800);

/// Checkpoint notes received by gossip and not yet looked at; more are dropped (the next
/// one, or the CA, tells the same story).
pub(crate) const RECEIVED_QUEUE: usize = 16;

/// Ended `log_stalled` alarms kept in memory while `state.db` cannot be written; older ones
/// are dropped (and said so in the log).
const MAX_UNSAVED_STALL_ENDS: usize = 8;

/// Leaf hashes read per query when the verified entries are reloaded at start.
const RELOAD_BATCH: usize = 10_000;

pub use ztmesh_membership::{parse_log_policy, LogPolicyError};

/// Where the monitor gets what it cannot know by itself: the log's latest checkpoint,
/// consistency proofs and entries. The CA client in production, an in-memory log in tests.
pub(crate) trait LogSource {
    /// The latest cosigned checkpoint note; `None` while the log has none.
    async fn latest_checkpoint(&self) -> Result<Option<String>, ClientError>;
    /// The consistency proof from tree size `old` to `new`.
    async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ClientError>;
    /// Up to `count` entries from index `start`, as `(index, leaf)`.
    async fn entries(&self, start: u64, count: u64) -> Result<Vec<(u64, Vec<u8>)>, ClientError>;
}

impl LogSource for crate::ca_client::CaClient {
    async fn latest_checkpoint(&self) -> Result<Option<String>, ClientError> {
        self.log_checkpoint().await
    }

    async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ClientError> {
        self.log_consistency_proof(old, new).await
    }

    async fn entries(&self, start: u64, count: u64) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
        self.log_entries(start, count).await
    }
}

/// Where a note came from: it decides how loudly a refusal is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Fetched from the CA over the pinned connection.
    Ca,
    /// Gossiped by a member (who may lag behind or replay an old note).
    Gossip,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Ca => "ca",
            Source::Gossip => "gossip",
        }
    }
}

/// Size of a checkpoint note, if it is one.
fn note_size(text: &str) -> Option<u64> {
    let note = Note::parse(text).ok()?;
    Checkpoint::parse(note.text()).ok().map(|c| c.size())
}

/// The reason shown for a split view the monitor found itself, from its evidence.
fn describe_split_view(evidence: &(String, String)) -> String {
    match (note_size(&evidence.0), note_size(&evidence.1)) {
        (Some(held), Some(other)) if held == other => {
            format!("two valid checkpoints of size {held} with different roots")
        }
        (Some(held), Some(other)) if other > held => format!(
            "a valid checkpoint of size {other} that is not consistent with the accepted one of size {held} (its consistency proof failed)"
        ),
        _ => "two valid checkpoints that cannot both be true".to_owned(),
    }
}

/// Why log watching cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogWatchError {
    /// `log-policy.txt` or the CA certificate could not be read.
    #[error(transparent)]
    Dir(#[from] NodeDirError),
    /// `log-policy.txt` is not a policy for this mesh's membership log.
    #[error("{path}: {error}")]
    Policy {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        error: LogPolicyError,
    },
    /// `state.db` could not be read.
    #[error("state.db: {0}")]
    Store(#[from] StoreError),
    /// The head saved in `state.db` is not one the pinned policy accepts (the database is
    /// damaged, or `log-policy.txt` was changed): starting from nothing would forget what
    /// this node saw, so the node does not start.
    #[error("state.db: the saved membership-log head cannot be resumed: {0}")]
    Resume(String),
}

/// A fresh `monitor` carrying on from `saved`.
fn resume_from(
    fresh: &CheckpointMonitor,
    saved: &SavedLogWatch,
    now_secs: u64,
) -> Result<CheckpointMonitor, LogWatchError> {
    let state = SavedMonitor {
        head: saved.head.as_ref().map(|head| head.note.clone()),
        split_view: saved.alarm.as_ref().map(|alarm| alarm.evidence.clone()),
        split_view_alarms: saved.alarms,
    };
    let monitor = fresh
        .clone()
        .resume(state, now_secs)
        .map_err(|e| LogWatchError::Resume(e.to_string()))?;
    if let Some(head) = &saved.head {
        let expected = TreeHead {
            size: head.size,
            root: Hash::from_bytes(head.root),
        };
        if monitor.current() != Some(expected) {
            return Err(LogWatchError::Resume(format!(
                "the saved note is not the saved head of size {}",
                head.size
            )));
        }
    }
    Ok(monitor)
}

/// Rebuilds the entry follower from the verified entries in the store.
fn load_follower(store: &NodeStore) -> Result<EntryFollower, StoreError> {
    let mut follower = EntryFollower::resume([], store.followed_newest_at()?, MAX_FOLLOWED_ENTRIES);
    loop {
        let page = store.followed_leaf_hashes(follower.size(), RELOAD_BATCH)?;
        if page.is_empty() {
            return Ok(follower);
        }
        follower.extend_verified(page);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}

/// The monitor, the cross-checks, and what the node does with their answers. Owned by the
/// log-watch loop.
pub(crate) struct Watcher {
    monitor: CheckpointMonitor,
    /// The monitor as the policy makes it, with nothing accepted: what a reload resumes.
    fresh: CheckpointMonitor,
    /// Checkpoints the CA served that were older than the accepted one. Older checkpoints by
    /// gossip are not counted: members relay what they accepted, and a late relay or a
    /// message pulled by anti-entropy after a newer head is no rollback attempt. A CA that
    /// answers with an older head than it already showed this node is one.
    stale_from_ca: u64,
    store: Arc<NodeStore>,
    /// The monitor's state as last saved; saving happens when it differs.
    saved: SavedMonitor,
    /// Why the alarm was raised, while it is.
    alarm_reason: Option<String>,
    follower: EntryFollower,
    findings: Findings,
    /// The CA certificate, to read the CRL saved in `state.db`.
    ca_der: Vec<u8>,
    /// The CRL whose revocations were checked (its number), or one not yet due
    /// (`(number, thisUpdate)`), so it is not parsed again on every wake-up.
    crl_checked: Option<u64>,
    crl_waiting: Option<(u64, Timestamp)>,
    /// Whether the follower's capacity was reported (once).
    follower_full_reported: bool,
    /// This node, whose logged certificates it judges against its own history.
    own_id: NodeId,
    /// The next log index at which entries naming this node are judged.
    own_cursor: u64,
    /// The `log_stalled` judge ([`log_stall`](crate::log_stall)).
    stall: StallJudge,
    /// Its state as last saved.
    stall_saved: SavedLogStall,
    /// Ended stall alarms not yet in `state.db`'s history (a save failed).
    stall_ends: Vec<EndedStall>,
}

impl Watcher {
    /// A watcher carrying on from what `store` saved (a fresh one on a new node).
    pub(crate) fn open(
        monitor: CheckpointMonitor,
        store: Arc<NodeStore>,
        ca_der: Vec<u8>,
        own_id: NodeId,
        now_secs: u64,
    ) -> Result<Self, LogWatchError> {
        let saved = store.log_watch()?;
        let own_cursor = store.own_audit_start()?;
        let stall_saved = store.log_stall()?;
        let stall = StallJudge::resume(
            Duration::from_secs(DEFAULT_STALL_SECS),
            &stall_saved,
            now_secs,
        );
        if let Some(raised) = stall.raised() {
            tracing::error!(
                alarm = stall.alarms(),
                reason = %raised.reason,
                "LOG STALLED (log_stalled, raised before the restart): {}",
                raised.reason
            );
        }
        let resumed = resume_from(&monitor, &saved, now_secs)?;
        let follower = load_follower(&store)?;
        if let Some(head) = resumed.current() {
            tracing::info!(
                size = head.size,
                root = %head.root,
                entries_verified = follower.size(),
                "membership log: carrying on from the saved checkpoint"
            );
        }
        if let Some(alarm) = &saved.alarm {
            tracing::error!(
                reason = %alarm.reason,
                checkpoint_a = ?alarm.evidence.0,
                checkpoint_b = ?alarm.evidence.1,
                "SPLIT VIEW (saved before the restart): the membership log showed this node two histories"
            );
        }
        Ok(Watcher {
            saved: resumed.saved(),
            monitor: resumed,
            fresh: monitor,
            stale_from_ca: 0,
            store,
            alarm_reason: saved.alarm.map(|alarm| alarm.reason),
            follower,
            findings: Findings::default(),
            ca_der,
            crl_checked: None,
            crl_waiting: None,
            follower_full_reported: false,
            own_id,
            own_cursor,
            stall,
            stall_saved,
            stall_ends: Vec::new(),
        })
    }

    /// Sets `log_stall_secs` (node.toml); the saved clock and alarm carry on.
    pub(crate) fn with_stall_after(mut self, stall_after: Duration, now_secs: u64) -> Self {
        self.stall = StallJudge::resume(stall_after, &self.stall_saved, now_secs);
        self
    }

    /// The note of the accepted head.
    pub(crate) fn current_note(&self) -> Option<&str> {
        self.monitor.current_note()
    }

    /// Looks at one checkpoint note, fetching a consistency proof from `log` if the monitor
    /// asks for one, and saves what changed. Returns the note to publish when the accepted
    /// head moved.
    pub(crate) async fn feed(
        &mut self,
        note: &str,
        source: Source,
        log: &impl LogSource,
        now_secs: u64,
    ) -> Option<String> {
        let before = self.monitor.current();
        let alarms = self.monitor.stats().split_view_alarms;
        let observation = match self.monitor.observe(note, now_secs) {
            Ok(Observation::NeedsConsistency { from, to }) => self.prove(from, to, log).await,
            Ok(Observation::Stale { size }) if source == Source::Ca => {
                self.stale_from_ca += 1;
                let held = self.monitor.current_note().unwrap_or_default().to_owned();
                let accepted = before.map_or(0, |head| head.size);
                Some(self.raise(
                    held,
                    note.to_owned(),
                    format!(
                        "the CA served a valid checkpoint of size {size}, older than the accepted one of size {accepted}: its log was rolled back"
                    ),
                ))
            }
            Ok(observation) => Some(observation),
            Err(error) => {
                match source {
                    Source::Ca => tracing::warn!(%error, "checkpoint from the CA refused"),
                    Source::Gossip => tracing::debug!(%error, "gossiped checkpoint refused"),
                }
                None
            }
        };
        if let Some(observation) = observation {
            let moved = self.monitor.current() != before;
            // A gossiped copy of the head already held says nothing about the log now:
            // members relay it for an hour whatever the CA does (see `log_stall`).
            if matches!(observation, Observation::Accepted { .. })
                && (source == Source::Ca || moved)
            {
                self.stall.handle_quorum_checkpoint(now_secs);
            }
            self.report(&observation, source, alarms);
        }
        self.persist(now_secs).await;
        self.moved_since(before)
    }

    /// Fetches the CA's latest checkpoint and looks at it.
    pub(crate) async fn poll_log(&mut self, log: &impl LogSource, now_secs: u64) -> Option<String> {
        match log.latest_checkpoint().await {
            Ok(Some(note)) => self.feed(&note, Source::Ca, log, now_secs).await,
            Ok(None) => {
                tracing::debug!("the CA has no membership-log checkpoint yet");
                None
            }
            Err(error) => {
                tracing::debug!(%error, "could not fetch the CA's checkpoint");
                None
            }
        }
    }

    /// Asks again for the proof the monitor is waiting for (e.g. of a gossiped checkpoint
    /// that arrived while the CA was unreachable).
    pub(crate) async fn retry_pending(&mut self, log: &impl LogSource) -> Option<String> {
        let (from, to) = self.monitor.pending()?;
        let before = self.monitor.current();
        let alarms = self.monitor.stats().split_view_alarms;
        let now_secs = crate::timefmt::now().as_unix_secs();
        if let Some(observation) = self.prove(from, to, log).await {
            if matches!(observation, Observation::Accepted { .. }) {
                self.stall.handle_quorum_checkpoint(now_secs);
            }
            self.report(&observation, Source::Gossip, alarms);
        }
        self.persist(now_secs).await;
        self.moved_since(before)
    }

    async fn prove(
        &mut self,
        from: TreeHead,
        to: TreeHead,
        log: &impl LogSource,
    ) -> Option<Observation> {
        match log.consistency_proof(from.size, to.size).await {
            Ok(proof) => match self.monitor.handle_consistency(from, to, &proof) {
                Ok(observation) => Some(observation),
                Err(error) => {
                    tracing::debug!(%error, "consistency proof no longer needed");
                    None
                }
            },
            Err(error) => {
                tracing::debug!(%error, from = from.size, to = to.size, "waiting for a consistency proof");
                None
            }
        }
    }

    /// Raises the alarm for a conflict found outside the monitor, with its reason.
    fn raise(&mut self, held: String, conflicting: String, reason: String) -> Observation {
        if self.monitor.split_view().is_none() {
            self.alarm_reason = Some(reason);
        }
        self.monitor.raise_split_view(held, conflicting)
    }

    fn moved_since(&self, before: Option<TreeHead>) -> Option<String> {
        if self.monitor.current() == before {
            return None;
        }
        self.monitor.current_note().map(str::to_owned)
    }

    fn report(&mut self, observation: &Observation, source: Source, alarms_before: u64) {
        let from = source.as_str();
        match observation {
            Observation::Accepted { size, root } => {
                tracing::debug!(size, %root, from, "membership log checkpoint accepted");
            }
            Observation::NeedsConsistency { .. } => {}
            Observation::QuorumNotMet { cosigners } => {
                tracing::warn!(
                    ?cosigners,
                    from,
                    "membership log checkpoint without a witness quorum refused"
                );
            }
            Observation::Stale { size } => {
                let current = self.monitor.current().map(|head| head.size);
                tracing::debug!(size, ?current, "stale gossiped checkpoint");
            }
            Observation::SplitView { evidence } => {
                if self.monitor.stats().split_view_alarms > alarms_before {
                    let reason = self
                        .alarm_reason
                        .get_or_insert_with(|| describe_split_view(evidence))
                        .clone();
                    // Debug formatting keeps each note (several lines) on the one log line.
                    tracing::error!(
                        from,
                        %reason,
                        checkpoint_a = ?evidence.0,
                        checkpoint_b = ?evidence.1,
                        "SPLIT VIEW: the membership log showed this node two histories that cannot both be true; the log or its witnesses misbehave"
                    );
                }
            }
        }
    }

    /// Saves the monitor's head and alarm if they changed since the last save. The store
    /// compares and swaps: a saved state ahead of this monitor (another writer, or a saved
    /// head this monitor conflicts with) wins, and the monitor carries on from it.
    async fn persist(&mut self, now_secs: u64) {
        let state = self.monitor.saved();
        if state == self.saved {
            return;
        }
        let head = self
            .monitor
            .current()
            .zip(state.head.clone())
            .map(|(tree, note)| SavedLogHead {
                size: tree.size,
                root: *tree.root.as_bytes(),
                note,
            });
        let alarm = state.split_view.clone().map(|evidence| SavedLogAlarm {
            reason: self
                .alarm_reason
                .clone()
                .unwrap_or_else(|| describe_split_view(&evidence)),
            evidence,
        });
        let watch = SavedLogWatch {
            head,
            alarm,
            alarms: state.split_view_alarms,
        };
        let store = self.store.clone();
        match blocking(move || store.save_log_watch(&watch)).await {
            Ok(LogWatchSwap::Saved) => self.saved = state,
            Ok(outcome) => {
                tracing::error!(
                    ?outcome,
                    "the membership-log state saved in state.db is ahead of this node's monitor; carrying on from it"
                );
                self.reload(now_secs).await;
            }
            // Not marked saved: the next change (or wake-up) tries again.
            Err(error) => tracing::warn!(%error, "could not save the membership-log state"),
        }
    }

    /// The operator's acknowledgement of the split-view alarm they saw as alarm number
    /// `expected_alarms`: its evidence goes to `state.db`'s history and the monitor carries on
    /// from the accepted head, so a log still showing two histories raises the next alarm.
    pub(crate) async fn acknowledge(
        &mut self,
        kind: LogAlarmKind,
        expected_alarms: u64,
        now_secs: u64,
    ) -> Result<AlarmAck, String> {
        if kind == LogAlarmKind::LogStalled {
            return self.acknowledge_stall(expected_alarms, now_secs).await;
        }
        // Whatever the monitor holds unsaved goes first, so the count compared is current.
        self.persist(now_secs).await;
        let store = self.store.clone();
        let at = Timestamp::from_unix_secs(now_secs);
        let outcome = blocking(move || store.acknowledge_log_alarm(expected_alarms, at)).await?;
        if outcome == AlarmAck::Acknowledged {
            tracing::warn!(
                alarm = expected_alarms,
                "split-view alarm acknowledged by the operator; its evidence stays in state.db (log_alarm_history)"
            );
            self.reload(now_secs).await;
        }
        Ok(outcome)
    }

    /// The operator's acknowledgement of `log_stalled` alarm number `expected_alarms`: it goes
    /// to the history and the checkpoint clock starts again (see [`log_stall`](crate::log_stall)).
    async fn acknowledge_stall(
        &mut self,
        expected_alarms: u64,
        now_secs: u64,
    ) -> Result<AlarmAck, String> {
        let raised = match self.stall.acknowledge(expected_alarms, now_secs) {
            Ok(raised) => raised,
            Err(StallAckRefused::NoAlarm) => return Ok(AlarmAck::NoAlarm),
            Err(StallAckRefused::Changed { alarms }) => return Ok(AlarmAck::Changed { alarms }),
        };
        let ended = EndedStall {
            alarm: expected_alarms,
            raised,
            ended_at: now_secs,
            ended_by: StallEnd::Acknowledged,
        };
        if let Err(error) = self.persist_stall(Some(ended)).await {
            // Not acknowledged: the alarm stays raised, as saved.
            self.stall.restore(&self.stall_saved);
            return Err(error);
        }
        tracing::warn!(
            alarm = expected_alarms,
            "log_stalled alarm acknowledged by the operator; it stays in state.db (log_stall_history)"
        );
        Ok(AlarmAck::Acknowledged)
    }

    /// Saves the stall judge's state if it changed, with `ended` (and any ended alarm a
    /// failed save left) in the history, in one transaction.
    async fn persist_stall(&mut self, ended: Option<EndedStall>) -> Result<(), String> {
        let state = self.stall.saved();
        let acknowledged = ended.is_some();
        if let Some(ended) = ended {
            self.stall_ends.push(ended);
        }
        if state == self.stall_saved && self.stall_ends.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let (saved, ends) = (state.clone(), self.stall_ends.clone());
        let result = blocking(move || {
            // One ended alarm per transaction (a retry after a partial failure keeps the
            // row saved first: an alarm ends once).
            for end in &ends {
                store.save_log_stall(&saved, Some(end))?;
            }
            if ends.is_empty() {
                store.save_log_stall(&saved, None)?;
            }
            Ok(())
        })
        .await;
        match result {
            Ok(()) => {
                self.stall_saved = state;
                self.stall_ends.clear();
                Ok(())
            }
            Err(error) => {
                if acknowledged {
                    self.stall_ends.pop();
                }
                if self.stall_ends.len() > MAX_UNSAVED_STALL_ENDS {
                    let dropped = self.stall_ends.remove(0);
                    tracing::warn!(
                        alarm = dropped.alarm,
                        "log_stalled alarm ended, but state.db could not keep it in its history"
                    );
                }
                tracing::warn!(%error, "could not save the log_stalled state");
                Err(error)
            }
        }
    }

    /// The `log_stalled` checks, once per wake-up after the other cross-checks: certificates
    /// the log has not covered past their deadline, then the checkpoint clock.
    async fn check_stall(&mut self, watch: &LogWatch, now_secs: u64) {
        self.check_overdue_certificates(watch, now_secs).await;
        let event = self.stall.poll(now_secs, self.follower.newest_at());
        let ended = match event {
            Some(StallEvent::Raised { alarm, reason }) => {
                report_stall(alarm, &reason);
                None
            }
            Some(StallEvent::Recovered { alarm, raised }) => {
                tracing::warn!(
                    alarm,
                    raised_at = %crate::timefmt::rfc3339(Timestamp::from_unix_secs(raised.raised_at)),
                    reason = %raised.reason,
                    "log_stalled alarm cleared: checkpoints meeting the witness quorum arrive again and the log has moved past every certificate it was waiting for; kept in state.db (log_stall_history)"
                );
                Some(EndedStall {
                    alarm,
                    raised,
                    ended_at: now_secs,
                    ended_by: StallEnd::Recovered,
                })
            }
            None => None,
        };
        let _ = self.persist_stall(ended).await;
    }

    /// Certificates waiting past their `log_stalled` deadline: one the verified log shows is
    /// checked (and leaves the queue); one it does not raises the alarm and waits on for the
    /// log to move past it.
    async fn check_overdue_certificates(&mut self, watch: &LogWatch, now_secs: u64) {
        if self
            .monitor
            .current()
            .is_some_and(|head| self.follower.is_full(head.size))
        {
            // The follower stopped at its capacity: nothing newer can be shown covered.
            return;
        }
        let stall = &self.stall;
        let overdue = watch.take_overdue_certificates(now_secs, |not_before| {
            stall.certificate_deadline(not_before)
        });
        if overdue.is_empty() {
            return;
        }
        let store = self.store.clone();
        let looked_up = overdue.clone();
        let results = blocking(move || {
            looked_up
                .into_iter()
                .map(|pending| {
                    let kinds = store.logged_kinds(&pending.serial.to_hex())?;
                    Ok((pending, issuance_is_logged(&kinds)))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await;
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(%error, "could not check waiting certificates against the log");
                watch.unmark_overdue(&overdue);
                return;
            }
        };
        for (pending, logged) in results {
            if logged {
                // A quiet log shows the issuance and no later entry yet: checked and passed.
                watch.settle(&pending.serial);
                self.findings.record(
                    FindingKind::UnloggedCertificate,
                    &pending.serial,
                    Some(pending.node_id),
                    pending.not_before,
                    true,
                );
                continue;
            }
            let own = pending.node_id == self.own_id;
            if let Some(StallEvent::Raised { alarm, reason }) =
                self.stall.handle_uncovered_certificate(
                    pending.node_id,
                    &pending.serial,
                    pending.not_before,
                    own,
                    now_secs,
                )
            {
                report_stall(alarm, &reason);
            } else {
                tracing::warn!(
                    node = %pending.node_id,
                    serial = %pending.serial,
                    "log_stalled: another certificate the witnessed log has not covered in time"
                );
            }
        }
    }

    /// Carries on from what the store holds.
    async fn reload(&mut self, now_secs: u64) {
        let store = self.store.clone();
        let saved = match blocking(move || store.log_watch()).await {
            Ok(saved) => saved,
            Err(error) => {
                tracing::warn!(%error, "could not read the saved membership-log state");
                return;
            }
        };
        match resume_from(&self.fresh, &saved, now_secs) {
            Ok(monitor) => {
                self.saved = monitor.saved();
                self.monitor = monitor;
                self.alarm_reason = saved.alarm.map(|alarm| alarm.reason);
            }
            Err(error) => tracing::error!(%error, "keeping the monitor in memory"),
        }
        let store = self.store.clone();
        match blocking(move || load_follower(&store)).await {
            Ok(follower) => self.follower = follower,
            Err(error) => tracing::warn!(%error, "could not reload the verified log entries"),
        }
    }

    /// The cross-checks, once per wake-up of the loop: fetch and verify the entries up to the
    /// accepted checkpoint (a bounded number of batches), then check the peer certificates
    /// and the CRL the log has moved past.
    pub(crate) async fn cross_check(
        &mut self,
        log: &impl LogSource,
        watch: &LogWatch,
        now_secs: u64,
    ) {
        self.follow(log, now_secs).await;
        self.check_certificates(watch).await;
        self.check_crl().await;
        self.check_own_entries(now_secs).await;
        self.check_stall(watch, now_secs).await;
    }

    /// Judges the verified `enroll` and `rotate` entries naming this node, once
    /// [`LOG_GRACE`](crate::log_audit::LOG_GRACE) has passed since they were committed,
    /// against the certificates it holds or held.
    async fn check_own_entries(&mut self, now_secs: u64) {
        if self.own_cursor >= self.follower.size() {
            return;
        }
        let (store, own, cursor) = (self.store.clone(), self.own_id, self.own_cursor);
        let result = blocking(move || {
            let entries =
                store.issuances_logged_for(&own.to_string(), cursor, OWN_ENTRIES_PER_WAKE)?;
            let mut judged = Vec::with_capacity(entries.len());
            for (index, serial, at) in entries {
                if !own_entry_is_due(at, now_secs) {
                    return Ok((judged, Some(index)));
                }
                // The serial was checked as lowercase hex when the entry was followed.
                let serial = Serial::from_hex(&serial)
                    .map_err(|e| StoreError::Corrupt(format!("followed serial: {e}")))?;
                let held = store.holds_issuance(&serial)?;
                judged.push((index, serial, at, held));
            }
            Ok::<_, StoreError>((judged, None))
        })
        .await;
        let (judged, waiting_at) = match result {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!(%error, "could not check this node's logged certificates");
                return;
            }
        };
        let reached = judged.last().map(|(index, ..)| index + 1);
        for (_, serial, at, held) in judged {
            let committed = Timestamp::from_unix_secs(at);
            if self.findings.record(
                FindingKind::ForeignCertificate,
                &serial,
                Some(self.own_id),
                committed,
                held,
            ) {
                tracing::warn!(
                    node = %self.own_id,
                    %serial,
                    logged_at = %crate::timefmt::rfc3339(committed),
                    "FOREIGN CERTIFICATE (foreign_certificate): the membership log shows a certificate in this node's name that this node never held; the CA issued it to someone else (or a rotation answer never reached this node)"
                );
            }
        }
        self.own_cursor = match waiting_at {
            // The first entry not yet due is where the next wake-up starts.
            Some(index) => index,
            None => reached.unwrap_or(self.follower.size()).max(self.own_cursor),
        };
    }

    async fn follow(&mut self, log: &impl LogSource, now_secs: u64) {
        // Alarmed, the log's word is worth nothing more: the entries verified so far stay.
        if self.monitor.split_view().is_some() {
            return;
        }
        let Some(accepted) = self.monitor.current() else {
            return;
        };
        if self.follower.is_full(accepted.size) && !self.follower_full_reported {
            self.follower_full_reported = true;
            tracing::warn!(
                entries_verified = self.follower.size(),
                log_size = accepted.size,
                "the membership log is larger than this node follows; newer certificates are no longer cross-checked"
            );
        }
        for _ in 0..BATCHES_PER_WAKE {
            let Some(request) = self.follower.next_request(accepted.size) else {
                return;
            };
            let answer = match log.entries(request.0, request.1).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::debug!(%error, start = request.0, "could not fetch membership-log entries");
                    return;
                }
            };
            let batch = match self.follower.handle_entries(request, &answer) {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "the CA's membership-log entries answer is unusable");
                    return;
                }
            };
            let proof = if batch.needs_proof(accepted) {
                match log.consistency_proof(batch.end(), accepted.size).await {
                    Ok(proof) => proof,
                    Err(error) => {
                        tracing::debug!(%error, from = batch.end(), to = accepted.size, "waiting for a consistency proof of entries");
                        return;
                    }
                }
            } else {
                Vec::new()
            };
            if let Err(reason) = batch.verify(accepted, &proof) {
                let alarms = self.monitor.stats().split_view_alarms;
                let held = self.monitor.current_note().unwrap_or_default().to_owned();
                let conflicting = format!(
                    "membership-log entries {}..{} as served by the CA: {reason}",
                    batch.start(),
                    batch.end()
                );
                let observation = self.raise(held, conflicting, reason);
                self.report(&observation, Source::Ca, alarms);
                self.persist(now_secs).await;
                return;
            }
            let (store, start, entries) =
                (self.store.clone(), batch.start(), batch.entries().to_vec());
            match blocking(move || store.append_followed_entries(start, &entries)).await {
                Ok(true) => self.follower.commit(batch),
                Ok(false) => {
                    // The store holds other entries than this follower (another writer) or an
                    // older head (its save failed): carry on from the store.
                    tracing::warn!(
                        start,
                        "verified log entries not kept; reloading the saved state"
                    );
                    self.reload(now_secs).await;
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not keep verified log entries");
                    return;
                }
            }
        }
    }

    async fn check_certificates(&mut self, watch: &LogWatch) {
        let due = watch.take_due_certificates(self.follower.newest_at());
        if due.is_empty() {
            return;
        }
        let store = self.store.clone();
        let looked_up = due.clone();
        let results = blocking(move || {
            looked_up
                .into_iter()
                .map(|pending| {
                    let kinds = store.logged_kinds(&pending.serial.to_hex())?;
                    Ok((pending, issuance_is_logged(&kinds)))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await;
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(%error, "could not check peer certificates against the log");
                watch.requeue(due);
                return;
            }
        };
        for (pending, logged) in results {
            let new = self.findings.record(
                FindingKind::UnloggedCertificate,
                &pending.serial,
                Some(pending.node_id),
                pending.not_before,
                logged,
            );
            if new {
                let whose = if pending.node_id == self.own_id {
                    "this node holds"
                } else {
                    "a peer holds"
                };
                tracing::warn!(
                    node = %pending.node_id,
                    serial = %pending.serial,
                    not_before = %crate::timefmt::rfc3339(pending.not_before),
                    "UNLOGGED CERTIFICATE (unlogged_certificate): {whose} a certificate from the CA that the membership log does not show; the CA issued it without logging it"
                );
            }
        }
    }

    async fn check_crl(&mut self) {
        let Some(log_time) = self.follower.newest_at() else {
            return;
        };
        if self
            .crl_waiting
            .is_some_and(|(_, this_update)| !is_due(this_update, Some(log_time)))
        {
            // The CRL in force was read already and the log has not moved past it yet; a
            // newer CRL is looked at once the log does.
            return;
        }
        let (store, ca_der, checked) = (self.store.clone(), self.ca_der.clone(), self.crl_checked);
        type CrlCheck = (u64, Timestamp, Option<CrlResults>);
        let result = blocking(move || -> Result<Option<CrlCheck>, StoreError> {
            let Some((number, der)) = store.latest_crl()? else {
                return Ok(None);
            };
            if Some(number) == checked {
                return Ok(None);
            }
            let crl = Crl::parse_and_verify(&der, &ca_der)
                .map_err(|e| StoreError::Corrupt(format!("saved CRL: {e}")))?;
            if !is_due(crl.this_update, Some(log_time)) {
                return Ok(Some((number, crl.this_update, None)));
            }
            let mut results = CrlResults::default();
            let mut listed = HashSet::with_capacity(crl.entries.len());
            for entry in crl.entries {
                let hex = entry.serial.to_hex();
                let kinds = store.logged_kinds(&hex)?;
                results
                    .listed
                    .push((entry.serial, revocation_is_logged(&kinds)));
                listed.insert(hex);
            }
            let logged = store.revocations_logged_until(revocations_due_by(crl.this_update))?;
            results.logged = logged.len() as u64;
            for (serial, node_id) in withheld(&logged, &listed) {
                // Both were read from entries the log committed to (`LogEntry::from_leaf`
                // checked them); one that does not parse is not a revocation this node
                // could be shown.
                if let (Ok(serial), Ok(node_id)) = (Serial::from_hex(serial), node_id.parse()) {
                    results.withheld.push((serial, node_id));
                }
            }
            Ok(Some((number, crl.this_update, Some(results))))
        })
        .await;
        let (number, this_update, results) = match result {
            Ok(Some(check)) => check,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "could not check the CRL against the log");
                return;
            }
        };
        let Some(results) = results else {
            self.crl_waiting = Some((number, this_update));
            return;
        };
        self.crl_waiting = None;
        self.crl_checked = Some(number);
        // The logged revocations the CRL lists passed; the others are recorded one by one.
        self.findings.revocations_checked +=
            results.logged.saturating_sub(results.withheld.len() as u64);
        for (serial, node_id) in results.withheld {
            if self.findings.record(
                FindingKind::WithheldRevocation,
                &serial,
                Some(node_id),
                this_update,
                false,
            ) {
                tracing::warn!(
                    node = %node_id,
                    %serial,
                    crl_number = number,
                    this_update = %crate::timefmt::rfc3339(this_update),
                    "WITHHELD REVOCATION (withheld_revocation): the membership log shows this certificate revoked, but the CRL in force does not list it; this node still accepts it"
                );
            }
        }
        for (serial, logged) in results.listed {
            if self.findings.record(
                FindingKind::UnloggedRevocation,
                &serial,
                None,
                this_update,
                logged,
            ) {
                tracing::warn!(
                    %serial,
                    crl_number = number,
                    this_update = %crate::timefmt::rfc3339(this_update),
                    "UNLOGGED REVOCATION (unlogged_revocation): the CRL revokes a certificate the membership log shows no revocation of"
                );
            }
        }
    }

    /// Judges the revocations by node id waiting in `watch` against the verified log (see
    /// [`NodeRevocationQueue`]), records the unlogged ones, and returns the nodes whose held
    /// revocation the log now shows: the daemon applies them. A held revocation the log moved
    /// past without showing is dropped here, never applied.
    pub(crate) async fn judge_node_revocations(&mut self, watch: &LogWatch) -> Vec<NodeId> {
        let nodes = watch
            .node_revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nodes();
        if nodes.is_empty() {
            return Vec::new();
        }
        let store = self.store.clone();
        let logged = blocking(move || {
            let mut logged = HashSet::new();
            for node in nodes {
                if node_revocation_is_logged(&store.logged_kinds_for_node(&node.to_string())?) {
                    logged.insert(node);
                }
            }
            Ok(logged)
        })
        .await;
        let logged = match logged {
            Ok(logged) => logged,
            Err(error) => {
                tracing::warn!(%error, "could not check revocations by node id against the log");
                return Vec::new();
            }
        };
        let verdicts = watch
            .node_revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .judge(self.follower.newest_at(), &logged);
        let mut apply = Vec::new();
        for verdict in verdicts {
            match verdict {
                NodeRevocationVerdict::Logged(pending) => {
                    self.findings
                        .record_node_revocation(pending.node_id, pending.learnt, true);
                    if !pending.applied {
                        tracing::info!(node = %pending.node_id, "the membership log shows the revocation held for it; applying it");
                        apply.push(pending.node_id);
                    }
                }
                NodeRevocationVerdict::Unlogged(pending) => {
                    if self
                        .findings
                        .record_node_revocation(pending.node_id, pending.learnt, false)
                    {
                        let outcome = if pending.applied {
                            "it stays in force, as the newer CRL that came with it lists the node's certificate (that CRL is checked on its own)"
                        } else {
                            "it was never applied and is dropped"
                        };
                        tracing::warn!(
                            node = %pending.node_id,
                            learnt = %crate::timefmt::rfc3339(pending.learnt),
                            "UNLOGGED REVOCATION (unlogged_revocation): a CA-signed record revokes this node by id, but the membership log shows no revocation of it; {outcome}"
                        );
                    }
                }
            }
        }
        apply
    }

    /// What `GET /v1/status` shows (the pending certificates are filled in by
    /// [`LogWatch::set_status`]).
    pub(crate) fn status(&self) -> LogStatus {
        let stats = self.monitor.stats();
        let current = self.monitor.current();
        let evidence = self.monitor.split_view();
        LogStatus {
            policy: true,
            size: current.map(|head| head.size),
            root: current.map(|head| head.root.to_base64()),
            witnesses_met: self
                .monitor
                .current_cosigners()
                .map(|names| names.iter().cloned().collect())
                .unwrap_or_default(),
            split_view: evidence.is_some(),
            split_view_alarms: stats.split_view_alarms,
            split_view_reason: evidence.and(self.alarm_reason.clone()),
            quorum_not_met: stats.quorum_not_met,
            stale: self.stale_from_ca,
            split_view_evidence: evidence
                .map(|(a, b)| vec![a.clone(), b.clone()])
                .unwrap_or_default(),
            entries_verified: self.follower.size(),
            certificates_checked: self.findings.certificates_checked,
            certificates_pending: 0,
            certificates_dropped: 0,
            revocations_checked: self.findings.revocations_checked,
            unlogged_certificates: self.findings.unlogged_certificates,
            unlogged_revocations: self.findings.unlogged_revocations,
            node_revocations_pending: 0,
            node_revocations_held: 0,
            withheld_revocations: self.findings.withheld_revocations,
            foreign_certificates: self.findings.foreign_certificates,
            unlogged: self.findings.recent(),
            log_stalled: self.stall.raised().is_some(),
            log_stalled_alarms: self.stall.alarms(),
            log_stalled_reason: self.stall.raised().map(|raised| raised.reason.clone()),
            log_stalled_since: self
                .stall
                .raised()
                .map(|raised| crate::timefmt::rfc3339(Timestamp::from_unix_secs(raised.raised_at))),
            last_quorum_checkpoint: Some(crate::timefmt::rfc3339(Timestamp::from_unix_secs(
                self.stall.last_quorum_at(),
            ))),
            log_stall_secs: self.stall.stall_after_secs(),
            certificates_uncovered: self.stall.uncovered(),
        }
    }
}

/// The ERROR line of a raised `log_stalled` alarm.
fn report_stall(alarm: u64, reason: &str) {
    tracing::error!(
        alarm,
        %reason,
        "LOG STALLED (log_stalled): {reason}; the log may be hiding members the CA admits meanwhile"
    );
}

/// What one CRL's cross-check found.
#[derive(Debug, Default)]
struct CrlResults {
    /// Each serial the CRL lists, and whether the log shows its revocation.
    listed: Vec<(Serial, bool)>,
    /// Revocations the log committed early enough for the CRL to list them.
    logged: u64,
    /// Those it does not list, with the node each revoked certificate belonged to.
    withheld: Vec<(Serial, NodeId)>,
}

/// The node's side of the watch: the queues gossip delivery and links feed, and the status
/// the API reads.
pub(crate) struct LogWatch {
    /// `None` when the node has no log policy (nothing is watched, notes are ignored).
    received: Option<mpsc::Sender<String>>,
    /// Operator acknowledgements of the alarm, for the task (`None` without a policy).
    acks: Option<mpsc::Sender<AckRequest>>,
    status: Mutex<LogStatus>,
    /// Peer certificates accepted on links, waiting for the log (see
    /// [`log_audit`](crate::log_audit)).
    certificates: Mutex<CertificateQueue>,
    /// Revocations by node id waiting for the log (see [`NodeRevocationQueue`]).
    node_revocations: Mutex<NodeRevocationQueue>,
}

/// What the log-watch loop owns.
pub(crate) struct LogWatchTask {
    pub(crate) watcher: Watcher,
    pub(crate) received: mpsc::Receiver<String>,
    pub(crate) acks: mpsc::Receiver<AckRequest>,
}

/// An acknowledgement of alarm number `expected_alarms` of `kind`, and where its outcome goes.
pub(crate) struct AckRequest {
    pub(crate) kind: LogAlarmKind,
    pub(crate) expected_alarms: u64,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<AlarmAck, String>>,
}

/// Why an acknowledgement was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AckError {
    /// The node has no log policy.
    #[error("this node does not watch the membership log (no log policy was pinned)")]
    NotWatched,
    /// The log-watch task is gone (the node is stopping) or busy beyond its queue.
    #[error("the log watch is not answering: {0}")]
    Unavailable(String),
}

/// Reads the pinned policy: with one, the watch and the task that drives it, carrying on from
/// what `store` saved, raising `log_stalled` after `stall_after`; without, a watch that says so
/// in the status and ignores gossiped checkpoints and peer certificates.
pub(crate) fn prepare(
    dir: &NodeDir,
    trust_domain: &TrustDomain,
    store: Arc<NodeStore>,
    own_id: NodeId,
    stall_after: Duration,
    now_secs: u64,
) -> Result<(LogWatch, Option<LogWatchTask>), LogWatchError> {
    let Some(text) = dir.read_log_policy()? else {
        return Ok((LogWatch::off(), None));
    };
    let monitor = parse_log_policy(&text, trust_domain).map_err(|error| LogWatchError::Policy {
        path: dir.log_policy(),
        error,
    })?;
    let ca_der = NodeDir::read_cert(&dir.ca_cert())?;
    let watcher = Watcher::open(monitor, store, ca_der, own_id, now_secs)?
        .with_stall_after(stall_after, now_secs);
    let (sender, received) = mpsc::channel(RECEIVED_QUEUE);
    let (ack_sender, acks) = mpsc::channel(4);
    let watch = LogWatch {
        received: Some(sender),
        acks: Some(ack_sender),
        status: Mutex::new(watcher.status()),
        certificates: Mutex::new(CertificateQueue::new(MAX_PENDING_CERTIFICATES)),
        node_revocations: Mutex::new(NodeRevocationQueue::new(MAX_PENDING_NODE_REVOCATIONS)),
    };
    Ok((
        watch,
        Some(LogWatchTask {
            watcher,
            received,
            acks,
        }),
    ))
}

impl LogWatch {
    fn off() -> Self {
        LogWatch {
            received: None,
            acks: None,
            status: Mutex::new(LogStatus::default()),
            certificates: Mutex::new(CertificateQueue::new(0)),
            node_revocations: Mutex::new(NodeRevocationQueue::new(0)),
        }
    }

    /// Whether the node watches the membership log (it has a log policy).
    pub(crate) fn is_watched(&self) -> bool {
        self.received.is_some()
    }

    /// A revocation of `node_id` by node id, learnt at `learnt`, to be held to the log:
    /// `applied` when a newer CRL justified it and it is in force; otherwise it stays
    /// unapplied until [`Watcher::judge_node_revocations`] finds it logged. Returns false when
    /// it was not queued (no log policy, or the queue is full): an unapplied one then never
    /// applies.
    pub(crate) fn handle_node_revocation(
        &self,
        node_id: NodeId,
        learnt: Timestamp,
        applied: bool,
    ) -> bool {
        if !self.is_watched() {
            return false;
        }
        self.node_revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .handle_revocation(node_id, learnt, applied)
    }

    /// Hands the operator's acknowledgement of alarm number `expected_alarms` of `kind` to the
    /// task and waits for its outcome.
    pub(crate) async fn acknowledge(
        &self,
        kind: LogAlarmKind,
        expected_alarms: u64,
    ) -> Result<AlarmAck, AckError> {
        let Some(acks) = &self.acks else {
            return Err(AckError::NotWatched);
        };
        let (reply, outcome) = tokio::sync::oneshot::channel();
        acks.try_send(AckRequest {
            kind,
            expected_alarms,
            reply,
        })
        .map_err(|e| AckError::Unavailable(e.to_string()))?;
        outcome
            .await
            .map_err(|e| AckError::Unavailable(e.to_string()))?
            .map_err(AckError::Unavailable)
    }

    /// A checkpoint note delivered by gossip. Returns whether it was queued for the monitor.
    pub(crate) fn handle_gossip(&self, note: String) -> bool {
        let Some(sender) = &self.received else {
            return false;
        };
        match sender.try_send(note) {
            Ok(()) => true,
            Err(_) => {
                tracing::debug!("gossiped checkpoint dropped: the log watch is busy");
                false
            }
        }
    }

    /// A peer certificate accepted on a link (at link-up, or by a certificate update), or one
    /// of this node's own (at start and after each rotation): it is checked against the log
    /// once the log has moved past its issuance. Never blocks on
    /// anything but a short lock, never refuses anything.
    pub(crate) fn handle_certificate(
        &self,
        node_id: NodeId,
        serial: &Serial,
        not_before: Timestamp,
    ) {
        if self.received.is_none() {
            return;
        }
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .handle_certificate(node_id, serial, not_before);
    }

    fn take_due_certificates(&self, log_time: Option<u64>) -> Vec<PendingCertificate> {
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_due(log_time)
    }

    fn take_overdue_certificates(
        &self,
        now_secs: u64,
        deadline: impl Fn(Timestamp) -> u64,
    ) -> Vec<PendingCertificate> {
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_overdue(now_secs, deadline)
    }

    fn unmark_overdue(&self, certificates: &[PendingCertificate]) {
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unmark_overdue(certificates);
    }

    fn settle(&self, serial: &Serial) {
        self.certificates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .settle(serial);
    }

    fn requeue(&self, certificates: Vec<PendingCertificate>) {
        let mut queue = self.certificates.lock().unwrap_or_else(|p| p.into_inner());
        for pending in certificates {
            queue.handle_certificate(pending.node_id, &pending.serial, pending.not_before);
        }
    }

    pub(crate) fn status(&self) -> LogStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_status(&self, mut status: LogStatus) {
        {
            let queue = self.certificates.lock().unwrap_or_else(|p| p.into_inner());
            status.certificates_pending = queue.len() as u64;
            status.certificates_dropped = queue.dropped();
        }
        {
            let queue = self
                .node_revocations
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            status.node_revocations_pending = queue.len() as u64;
            status.node_revocations_held = queue.held() as u64;
        }
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }
}

/// `POST /v1/log/alarm/acknowledge` (local API token): clears the split-view alarm (or, with
/// `"alarm": "log_stalled"`, the `log_stalled` alarm) the operator saw. 409 `no_alarm` when
/// none is raised, 409 `alarm_changed` when another alarm was raised since (the body names the
/// count), 409 `log_not_watched` without a policy.
pub(crate) async fn post_acknowledge(
    axum::extract::State(node): axum::extract::State<Arc<crate::daemon::Node>>,
    headers: axum::http::HeaderMap,
    client: Option<axum::Extension<crate::https::ClientAddr>>,
    body: Result<crate::api_error::ApiJson<AcknowledgeAlarmRequest>, crate::api_error::ApiError>,
) -> Result<axum::Json<AcknowledgeAlarmResponse>, crate::api_error::ApiError> {
    use crate::api_error::ApiError;
    use axum::http::StatusCode;
    // The credential before the body (401 before 400).
    crate::local_api::local_app(&node, &headers, client)?;
    let crate::api_error::ApiJson(request) = body?;
    let kind = request.alarm;
    let name = match kind {
        LogAlarmKind::SplitView => "split-view",
        LogAlarmKind::LogStalled => "log_stalled",
    };
    match node.log_watch.acknowledge(kind, request.alarms).await {
        Ok(AlarmAck::Acknowledged) => Ok(axum::Json(AcknowledgeAlarmResponse {
            acknowledged: true,
            alarm: kind,
            alarms: request.alarms,
            split_view_alarms: (kind == LogAlarmKind::SplitView).then_some(request.alarms),
        })),
        Ok(AlarmAck::NoAlarm) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_alarm",
            format!("no {name} alarm is raised"),
        )),
        Ok(AlarmAck::Changed { alarms }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "alarm_changed",
            format!(
                "the raised alarm is number {alarms}, not {}: look at it (`ztmesh status`) before acknowledging it",
                request.alarms
            ),
        )),
        Err(error @ AckError::NotWatched) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "log_not_watched",
            error.to_string(),
        )),
        Err(error @ AckError::Unavailable(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "log_watch_unavailable",
            error.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use ztmesh_tlog::{CosignatureSigner, MerkleTree, Signer};

    use crate::membership_log::{EntryKind, LogEntry};

    const NOW: u64 = 1_800_000_000;
    const STALL: Duration = Duration::from_secs(crate::log_stall::DEFAULT_STALL_SECS);

    fn trust_domain() -> TrustDomain {
        "test.ztmesh".parse().unwrap()
    }

    fn log_key() -> Signer {
        Signer::new("test.ztmesh/membership", SigningKey::from_bytes(&[9; 32])).unwrap()
    }

    fn witness(i: u8) -> CosignatureSigner {
        CosignatureSigner::new(&format!("w{i}.test"), SigningKey::from_bytes(&[i; 32])).unwrap()
    }

    fn policy_text() -> String {
        format!(
            "log {}\nwitness A {}\nwitness B {}\ngroup G all A B\nquorum G\n",
            log_key().vkey(),
            witness(1).vkey(),
            witness(2).vkey()
        )
    }

    /// `size` leaves named `<branch>-<i>` (not membership entries: kind `unknown`).
    fn leaves(branch: &str, size: u64) -> Vec<Vec<u8>> {
        (0..size)
            .map(|i| format!("{branch}-{i}").into_bytes())
            .collect()
    }

    fn tree_of(leaves: &[Vec<u8>]) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for leaf in leaves {
            tree.append(leaf);
        }
        tree
    }

    fn tree(branch: &str, size: u64) -> MerkleTree {
        tree_of(&leaves(branch, size))
    }

    fn note(tree: &MerkleTree, size: u64, witnesses: &[u8]) -> String {
        let checkpoint =
            Checkpoint::new(log_key().name(), size, tree.root_at(size).unwrap()).unwrap();
        let mut note = Note::sign(&checkpoint.to_string(), &[&log_key()]).unwrap();
        for &i in witnesses {
            note.add_signature(witness(i).cosign(note.text(), NOW).unwrap())
                .unwrap();
        }
        note.to_string()
    }

    /// An in-memory CA log: serves the checkpoint of `served` leaves of its tree, proofs from
    /// that tree, and its leaves as entries (or other leaves, for a lying log), or nothing
    /// while unreachable.
    struct FakeLog {
        state: Mutex<FakeState>,
    }

    struct FakeState {
        tree: MerkleTree,
        /// What `entries` answers from.
        leaves: Vec<Vec<u8>>,
        served: Option<u64>,
        reachable: bool,
        proofs_served: usize,
        entries_served: usize,
    }

    impl FakeLog {
        fn new(tree: MerkleTree, served: Option<u64>) -> Self {
            FakeLog::of_leaves(Vec::new(), served, tree)
        }

        fn with_leaves(leaves: Vec<Vec<u8>>, served: Option<u64>) -> Self {
            let tree = tree_of(&leaves);
            FakeLog::of_leaves(leaves, served, tree)
        }

        fn of_leaves(leaves: Vec<Vec<u8>>, served: Option<u64>, tree: MerkleTree) -> Self {
            FakeLog {
                state: Mutex::new(FakeState {
                    tree,
                    leaves,
                    served,
                    reachable: true,
                    proofs_served: 0,
                    entries_served: 0,
                }),
            }
        }

        fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
            f(&mut self.state.lock().unwrap())
        }
    }

    fn unreachable() -> ClientError {
        ClientError::Transport {
            url: "https://ca.test".into(),
            message: "connection refused".into(),
        }
    }

    impl LogSource for FakeLog {
        async fn latest_checkpoint(&self) -> Result<Option<String>, ClientError> {
            self.with(|s| {
                if !s.reachable {
                    return Err(unreachable());
                }
                Ok(s.served.map(|size| note(&s.tree, size, &[1, 2])))
            })
        }

        async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ClientError> {
            self.with(|s| {
                if !s.reachable {
                    return Err(unreachable());
                }
                s.proofs_served += 1;
                s.tree
                    .consistency_proof(old, new)
                    .map_err(|e| ClientError::Protocol(e.to_string()))
            })
        }

        async fn entries(
            &self,
            start: u64,
            count: u64,
        ) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
            self.with(|s| {
                if !s.reachable {
                    return Err(unreachable());
                }
                s.entries_served += 1;
                Ok(s.leaves
                    .iter()
                    .enumerate()
                    .map(|(i, leaf)| (i as u64, leaf.clone()))
                    .skip(start as usize)
                    .take(count as usize)
                    .collect())
            })
        }
    }

    fn store_in(temp: &tempfile::TempDir) -> Arc<NodeStore> {
        Arc::new(NodeStore::open(&temp.path().join("state.db")).unwrap())
    }

    /// A watcher on the store in `temp`: a node starting (again) on that data directory.
    fn watcher_in(temp: &tempfile::TempDir) -> Watcher {
        let monitor = parse_log_policy(&policy_text(), &trust_domain()).unwrap();
        Watcher::open(monitor, store_in(temp), Vec::new(), OWN, NOW).unwrap()
    }

    fn head(tree: &MerkleTree, size: u64) -> TreeHead {
        TreeHead {
            size,
            root: tree.root_at(size).unwrap(),
        }
    }

    #[test]
    fn a_policy_must_be_for_this_meshs_membership_log() {
        assert!(parse_log_policy(&policy_text(), &trust_domain()).is_ok());
        assert_eq!(
            parse_log_policy(&policy_text(), &"other.mesh".parse().unwrap()).unwrap_err(),
            LogPolicyError::NoMembershipLog {
                found: vec!["test.ztmesh/membership".into()],
                expected: "other.mesh/membership".into()
            }
        );
        assert!(matches!(
            parse_log_policy("quorum none\n", &trust_domain()),
            Err(LogPolicyError::NoMembershipLog { .. })
        ));
        // The membership log need not be the first one listed.
        let other = Signer::new("elsewhere.test/log", SigningKey::from_bytes(&[8; 32])).unwrap();
        let monitor = parse_log_policy(
            &format!("log {}\n{}", other.vkey(), policy_text()),
            &trust_domain(),
        )
        .unwrap();
        assert_eq!(monitor.origin(), Some("test.ztmesh/membership"));
        assert!(matches!(
            parse_log_policy("log nonsense\nquorum none\n", &trust_domain()),
            Err(LogPolicyError::Parse(_))
        ));
    }

    #[tokio::test]
    async fn the_watcher_follows_the_cas_log_and_publishes_each_new_head_once() {
        let temp = tempfile::tempdir().unwrap();
        let ca = FakeLog::new(tree("a", 20), None);
        let mut watcher = watcher_in(&temp);
        assert_eq!(watcher.poll_log(&ca, NOW).await, None);
        ca.with(|s| s.served = Some(3));
        let first = watcher.poll_log(&ca, NOW).await;
        assert_eq!(first, Some(note(&tree("a", 20), 3, &[1, 2])));
        assert_eq!(watcher.poll_log(&ca, NOW).await, None, "nothing new");
        ca.with(|s| s.served = Some(20));
        assert!(watcher.poll_log(&ca, NOW).await.is_some());
        let status = watcher.status();
        assert_eq!(status.size, Some(20));
        assert_eq!(
            status.root,
            Some(tree("a", 20).root_at(20).unwrap().to_base64())
        );
        assert_eq!(status.witnesses_met, ["A", "B"]);
        assert!(status.policy && !status.split_view);
        assert_eq!(ca.with(|s| s.proofs_served), 1);
    }

    #[tokio::test]
    async fn a_gossiped_checkpoint_waits_for_its_proof_while_the_ca_is_unreachable() {
        let temp = tempfile::tempdir().unwrap();
        let log = tree("a", 12);
        let ca = FakeLog::new(log.clone(), Some(4));
        let mut watcher = watcher_in(&temp);
        watcher.poll_log(&ca, NOW).await.unwrap();
        ca.with(|s| s.reachable = false);
        let gossiped = note(&log, 12, &[1, 2]);
        assert_eq!(
            watcher.feed(&gossiped, Source::Gossip, &ca, NOW).await,
            None
        );
        assert_eq!(watcher.status().size, Some(4));
        assert_eq!(
            watcher.monitor.pending(),
            Some((head(&log, 4), head(&log, 12)))
        );
        // Still down: nothing moves, nothing is lost.
        assert_eq!(watcher.retry_pending(&ca).await, None);
        ca.with(|s| s.reachable = true);
        assert_eq!(watcher.retry_pending(&ca).await, Some(gossiped));
        assert_eq!(watcher.status().size, Some(12));
        assert_eq!(watcher.retry_pending(&ca).await, None);
    }

    #[tokio::test]
    async fn a_gossiped_fork_raises_one_sticky_alarm() {
        let temp = tempfile::tempdir().unwrap();
        let log = tree("a", 6);
        let ca = FakeLog::new(log.clone(), Some(6));
        let mut watcher = watcher_in(&temp);
        let held = watcher.poll_log(&ca, NOW).await.unwrap();
        let forged = note(&tree("b", 6), 6, &[1, 2]);
        assert_eq!(watcher.feed(&forged, Source::Gossip, &ca, NOW).await, None);
        let status = watcher.status();
        assert!(status.split_view);
        assert_eq!(status.split_view_alarms, 1);
        assert_eq!(status.split_view_evidence, [held.clone(), forged.clone()]);
        assert_eq!(
            status.split_view_reason.as_deref(),
            Some("two valid checkpoints of size 6 with different roots")
        );
        // The CA's own view and the forgery keep coming: the alarm stays, counted once.
        watcher.poll_log(&ca, NOW).await;
        watcher.feed(&forged, Source::Gossip, &ca, NOW).await;
        assert_eq!(watcher.status().split_view_alarms, 1);
        assert_eq!(watcher.status().size, Some(6));

        // Acknowledged as the alarm seen: cleared, counted still, the head kept; the forgery
        // seen again is the next alarm.
        assert_eq!(
            watcher.acknowledge(LogAlarmKind::SplitView, 2, NOW).await,
            Ok(AlarmAck::Changed { alarms: 1 })
        );
        assert!(watcher.status().split_view);
        assert_eq!(
            watcher.acknowledge(LogAlarmKind::SplitView, 1, NOW).await,
            Ok(AlarmAck::Acknowledged)
        );
        let status = watcher.status();
        assert!(!status.split_view);
        assert!(status.split_view_evidence.is_empty());
        assert_eq!((status.split_view_alarms, status.size), (1, Some(6)));
        watcher.feed(&forged, Source::Gossip, &ca, NOW).await;
        let status = watcher.status();
        assert!(status.split_view);
        assert_eq!(status.split_view_alarms, 2);
        assert_eq!(status.split_view_evidence, [held, forged]);
    }

    #[tokio::test]
    async fn a_ca_proof_that_does_not_hold_is_a_split_view() {
        let temp = tempfile::tempdir().unwrap();
        // The CA serves checkpoints of one history and proofs of another.
        let ca = FakeLog::new(tree("b", 9), None);
        let mut watcher = watcher_in(&temp);
        watcher
            .feed(&note(&tree("a", 9), 3, &[1, 2]), Source::Gossip, &ca, NOW)
            .await
            .unwrap();
        ca.with(|s| s.served = Some(9));
        assert_eq!(watcher.poll_log(&ca, NOW).await, None);
        let status = watcher.status();
        assert!(status.split_view);
        assert!(
            status
                .split_view_reason
                .as_deref()
                .is_some_and(|r| r.contains("not consistent")),
            "{status:?}"
        );
    }

    #[tokio::test]
    async fn refused_notes_are_counted_and_change_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let log = tree("a", 8);
        let ca = FakeLog::new(log.clone(), Some(8));
        let mut watcher = watcher_in(&temp);
        watcher.poll_log(&ca, NOW).await.unwrap();
        // One witness of the two required.
        watcher
            .feed(&note(&log, 8, &[1]), Source::Gossip, &ca, NOW)
            .await;
        // An older checkpoint relayed late: not taken, and no rollback.
        watcher
            .feed(&note(&log, 5, &[1, 2]), Source::Gossip, &ca, NOW)
            .await;
        // Garbage.
        watcher.feed("garbage", Source::Gossip, &ca, NOW).await;
        let status = watcher.status();
        assert_eq!(
            (status.size, status.quorum_not_met, status.stale),
            (Some(8), 1, 0)
        );
        assert!(!status.split_view);
    }

    #[tokio::test]
    async fn the_ca_going_back_in_time_is_a_rollback_alarm() {
        let temp = tempfile::tempdir().unwrap();
        let log = tree("a", 8);
        let ca = FakeLog::new(log.clone(), Some(8));
        let mut watcher = watcher_in(&temp);
        let held = watcher.poll_log(&ca, NOW).await.unwrap();
        ca.with(|s| s.served = Some(5));
        assert_eq!(watcher.poll_log(&ca, NOW).await, None);
        let status = watcher.status();
        assert_eq!((status.size, status.stale), (Some(8), 1));
        assert!(status.split_view);
        assert_eq!(status.split_view_evidence, [held, note(&log, 5, &[1, 2])]);
        assert!(
            status
                .split_view_reason
                .as_deref()
                .is_some_and(|r| r.contains("rolled back")),
            "{status:?}"
        );
    }

    /// The node follows the log to size 12, stops; the CA is rolled back while it is down.
    /// Whatever the CA shows it after the restart (an older checkpoint, another one of the
    /// same size, a larger one of another history), it raises the alarm and keeps its head.
    #[tokio::test]
    async fn after_a_restart_the_saved_head_catches_a_rolled_back_or_forked_log() {
        let honest = tree("a", 20);
        let forks: [(&str, FakeLog); 3] = [
            ("rolled back", FakeLog::new(honest.clone(), Some(7))),
            ("same size", FakeLog::new(tree("b", 20), Some(12))),
            ("not consistent", FakeLog::new(tree("b", 20), Some(20))),
        ];
        for (expected, forked) in forks {
            let temp = tempfile::tempdir().unwrap();
            {
                let ca = FakeLog::new(honest.clone(), Some(5));
                let mut watcher = watcher_in(&temp);
                watcher.poll_log(&ca, NOW).await.unwrap();
                ca.with(|s| s.served = Some(12));
                watcher.poll_log(&ca, NOW).await.unwrap();
                assert_eq!(watcher.status().size, Some(12));
            }
            let mut restarted = watcher_in(&temp);
            let status = restarted.status();
            assert_eq!(status.size, Some(12), "carried on from the saved head");
            assert!(!status.split_view);
            assert_eq!(restarted.poll_log(&forked, NOW).await, None);
            let status = restarted.status();
            assert!(status.split_view, "{expected}: {status:?}");
            assert_eq!(status.size, Some(12), "{expected}: the head is kept");
            assert_eq!(status.split_view_evidence[0], note(&honest, 12, &[1, 2]));
            let reason = status.split_view_reason.clone().unwrap();
            assert!(
                reason.contains(expected)
                    || (expected == "same size" && reason.contains("size 12")),
                "{expected}: {reason}"
            );
            // And the alarm outlives the next restart, counted once.
            drop(restarted);
            let again = watcher_in(&temp);
            let saved = again.status();
            assert!(saved.split_view);
            assert_eq!(saved.split_view_alarms, 1);
            assert_eq!(saved.split_view_evidence, status.split_view_evidence);
            assert_eq!(saved.split_view_reason, Some(reason));
        }
    }

    /// Another writer saved a larger head in the same state.db (a second process, or this
    /// monitor's own save of an earlier run that raced): the smaller head is not saved over
    /// it, and the monitor carries on from the saved one.
    #[tokio::test]
    async fn a_saved_head_ahead_of_the_monitor_wins_the_race() {
        let temp = tempfile::tempdir().unwrap();
        let log = tree("a", 30);
        let ca = FakeLog::new(log.clone(), Some(4));
        let mut behind = watcher_in(&temp);
        let mut ahead = watcher_in(&temp);
        ca.with(|s| s.served = Some(25));
        ahead.poll_log(&ca, NOW).await.unwrap();
        ca.with(|s| s.served = Some(9));
        // `behind` accepts 9 in memory; the store says 25.
        behind.poll_log(&ca, NOW).await;
        assert_eq!(behind.status().size, Some(25));
        assert_eq!(store_in(&temp).log_watch().unwrap().head.unwrap().size, 25);
        // A conflicting head of the saved size becomes the saved alarm.
        let fork = FakeLog::new(tree("b", 30), Some(25));
        let mut forked = Watcher::open(
            parse_log_policy(&policy_text(), &trust_domain()).unwrap(),
            store_in(&tempfile::tempdir().unwrap()),
            Vec::new(),
            OWN,
            NOW,
        )
        .unwrap();
        forked.store = store_in(&temp);
        forked.poll_log(&fork, NOW).await;
        let status = forked.status();
        assert!(status.split_view, "{status:?}");
        assert_eq!(status.size, Some(25));
        assert_eq!(status.root, Some(log.root_at(25).unwrap().to_base64()));
        assert!(store_in(&temp).log_watch().unwrap().alarm.is_some());
    }

    #[tokio::test]
    async fn a_saved_head_the_policy_no_longer_accepts_stops_the_start() {
        let temp = tempfile::tempdir().unwrap();
        let log = tree("a", 3);
        let ca = FakeLog::new(log.clone(), Some(3));
        watcher_in(&temp).poll_log(&ca, NOW).await.unwrap();
        // A policy asking for a witness that did not cosign.
        let stricter = format!(
            "log {}\nwitness A {}\nwitness B {}\nwitness C {}\ngroup G all A B C\nquorum G\n",
            log_key().vkey(),
            witness(1).vkey(),
            witness(2).vkey(),
            witness(3).vkey()
        );
        let monitor = parse_log_policy(&stricter, &trust_domain()).unwrap();
        assert!(matches!(
            Watcher::open(monitor, store_in(&temp), Vec::new(), OWN, NOW),
            Err(LogWatchError::Resume(_))
        ));
    }

    fn serial(n: u8) -> Serial {
        Serial::from_bytes(&[0x40, n, 7, 7])
    }

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    fn entry(kind: EntryKind, n: u8, at: u64) -> Vec<u8> {
        LogEntry {
            kind,
            node_id: node(n),
            serial: serial(n).to_hex(),
            not_after: matches!(kind, EntryKind::Enroll | EntryKind::Rotate).then_some(at + 3600),
            at,
        }
        .to_leaf()
    }

    /// The node whose watcher the tests run (named by no entry unless a test says so).
    const OWN: NodeId = NodeId::from_bytes([200; 20]);

    fn logged(kind: EntryKind, node_id: NodeId, serial: &Serial, at: u64) -> Vec<u8> {
        LogEntry {
            kind,
            node_id,
            serial: serial.to_hex(),
            not_after: matches!(kind, EntryKind::Enroll | EntryKind::Rotate).then_some(at + 3600),
            at,
        }
        .to_leaf()
    }

    /// A watch with a certificate queue, as `prepare` makes it.
    fn watch_with_queue() -> LogWatch {
        let (sender, _) = mpsc::channel(1);
        LogWatch {
            received: Some(sender),
            acks: None,
            status: Mutex::new(LogStatus::default()),
            certificates: Mutex::new(CertificateQueue::new(16)),
            node_revocations: Mutex::new(NodeRevocationQueue::new(16)),
        }
    }

    #[tokio::test]
    async fn logged_certificates_in_this_nodes_name_must_be_ones_it_held() {
        let temp = tempfile::tempdir().unwrap();
        let store = store_in(&temp);
        let (enrolled, rotated, foreign, recent) = (
            Serial::from_bytes(&[0x41, 1]),
            Serial::from_bytes(&[0x41, 2]),
            Serial::from_bytes(&[0x41, 3]),
            Serial::from_bytes(&[0x41, 4]),
        );
        let at = Timestamp::from_unix_secs;
        for (serial, kind) in [(&enrolled, "enroll"), (&rotated, "rotate")] {
            store
                .record_issuance(serial, at(NOW - 2000), at(NOW + 2000), kind, at(NOW - 2000))
                .unwrap();
        }
        let log = vec![
            logged(EntryKind::Enroll, OWN, &enrolled, NOW - 1000),
            entry(EntryKind::Enroll, 2, NOW - 990),
            logged(EntryKind::Rotate, OWN, &rotated, NOW - 800),
            // Given to someone else in this node's name, and logged.
            logged(EntryKind::Rotate, OWN, &foreign, NOW - 700),
            // Revocations name this node too; they are not certificates it should hold.
            logged(EntryKind::RevokeCertificate, OWN, &foreign, NOW - 600),
            // Logged just now: this node may still be installing it.
            logged(EntryKind::Rotate, OWN, &recent, NOW - 10),
        ];
        let ca = FakeLog::with_leaves(log.clone(), Some(log.len() as u64));
        let monitor = parse_log_policy(&policy_text(), &trust_domain()).unwrap();
        let mut watcher = Watcher::open(monitor, store.clone(), Vec::new(), OWN, NOW).unwrap();
        let watch = watch_with_queue();
        watcher.poll_log(&ca, NOW).await.unwrap();
        watcher.cross_check(&ca, &watch, NOW).await;
        let status = watcher.status();
        assert_eq!(status.entries_verified, 6);
        assert_eq!(status.certificates_checked, 3, "{status:?}");
        assert_eq!(status.foreign_certificates, 1, "{status:?}");
        assert_eq!(status.unlogged.len(), 1);
        assert_eq!(status.unlogged[0].kind, "foreign_certificate");
        assert_eq!(status.unlogged[0].serial, foreign.to_hex());
        assert_eq!(status.unlogged[0].node_id, Some(OWN.to_string()));
        assert_eq!(
            status.unlogged[0].issued,
            crate::timefmt::rfc3339(at(NOW - 700))
        );

        // The recent one is judged once the grace has passed; it was installed meanwhile.
        watcher.cross_check(&ca, &watch, NOW + 30).await;
        assert_eq!(watcher.status().certificates_checked, 3);
        store
            .record_issuance(&recent, at(NOW - 70), at(NOW + 3000), "rotate", at(NOW))
            .unwrap();
        watcher.cross_check(&ca, &watch, NOW + 200).await;
        let status = watcher.status();
        assert_eq!(status.certificates_checked, 4, "{status:?}");
        assert_eq!(status.foreign_certificates, 1, "judged once");

        // After a restart the entries are judged again from where the history began.
        let monitor = parse_log_policy(&policy_text(), &trust_domain()).unwrap();
        let mut restarted = Watcher::open(monitor, store, Vec::new(), OWN, NOW + 300).unwrap();
        restarted.cross_check(&ca, &watch, NOW + 300).await;
        let status = restarted.status();
        assert_eq!(status.certificates_checked, 4, "{status:?}");
        assert_eq!(status.foreign_certificates, 1);
    }

    #[tokio::test]
    async fn entries_followed_before_the_history_began_are_not_judged() {
        let temp = tempfile::tempdir().unwrap();
        let log = vec![
            logged(EntryKind::Enroll, OWN, &serial(1), NOW - 1000),
            entry(EntryKind::Enroll, 2, NOW - 990),
        ];
        let ca = FakeLog::with_leaves(log.clone(), Some(log.len() as u64));
        let store = store_in(&temp);
        // Entries followed (by an earlier version) before the audit of this node's own
        // entries began...
        store
            .save_log_watch(&SavedLogWatch {
                head: Some(SavedLogHead {
                    size: 2,
                    root: *tree_of(&log).root_at(2).unwrap().as_bytes(),
                    note: note(&tree_of(&log), 2, &[1, 2]),
                }),
                ..SavedLogWatch::default()
            })
            .unwrap();
        store
            .append_followed_entries(
                0,
                &log.iter()
                    .map(|leaf| crate::log_audit::followed_entry(leaf))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let monitor = parse_log_policy(&policy_text(), &trust_domain()).unwrap();
        let mut watcher = Watcher::open(monitor, store.clone(), Vec::new(), OWN, NOW).unwrap();
        watcher.cross_check(&ca, &watch_with_queue(), NOW).await;
        let status = watcher.status();
        assert_eq!(status.entries_verified, 2);
        assert_eq!(status.certificates_checked, 0, "{status:?}");
        assert_eq!(
            store.own_audit_start().unwrap(),
            2,
            "fixed at the first start"
        );
    }

    #[tokio::test]
    async fn a_crl_must_list_every_revocation_the_log_committed_before_it() {
        let temp = tempfile::tempdir().unwrap();
        let store = store_in(&temp);
        let authority = ztmesh_pki::CertificateAuthority::generate(
            trust_domain(),
            Timestamp::from_unix_secs(NOW - 86_400),
            Duration::from_secs(10 * 86_400),
        )
        .unwrap();
        let at = Timestamp::from_unix_secs;
        let (hidden, listed, late) = (serial(3), serial(4), serial(5));
        let log = vec![
            entry(EntryKind::Enroll, 3, NOW - 1000),
            entry(EntryKind::Enroll, 4, NOW - 990),
            entry(EntryKind::Enroll, 5, NOW - 980),
            entry(EntryKind::RevokeNode, 3, NOW - 900),
            entry(EntryKind::RevokeCertificate, 4, NOW - 890),
            // Revoked too close to the CRL's thisUpdate for it to be owed.
            entry(EntryKind::RevokeCertificate, 5, NOW - 450),
            // The log moves on past the CRL.
            entry(EntryKind::Enroll, 6, NOW),
        ];
        let crl_entry = |serial: &Serial| ztmesh_pki::RevokedEntry {
            serial: serial.clone(),
            revoked_at: at(NOW - 900),
            reason: ztmesh_pki::RevocationReason::Unspecified,
        };
        let crl = authority
            .sign_crl(&[crl_entry(&listed)], 7, at(NOW - 400), at(NOW + 86_400))
            .unwrap();
        assert!(store.save_crl(7, &crl).unwrap());
        let ca = FakeLog::with_leaves(log.clone(), Some(log.len() as u64));
        let monitor = parse_log_policy(&policy_text(), &trust_domain()).unwrap();
        let mut watcher = Watcher::open(
            monitor,
            store.clone(),
            authority.cert_der().to_vec(),
            OWN,
            NOW,
        )
        .unwrap();
        watcher.poll_log(&ca, NOW).await.unwrap();
        watcher.cross_check(&ca, &watch_with_queue(), NOW).await;
        let status = watcher.status();
        // The listed serial against the log, then the two owed revocations against the CRL.
        assert_eq!(status.revocations_checked, 3, "{status:?}");
        assert_eq!(status.unlogged_revocations, 0);
        assert_eq!(status.withheld_revocations, 1, "{status:?}");
        assert_eq!(status.unlogged.len(), 1);
        let finding = &status.unlogged[0];
        assert_eq!(finding.kind, "withheld_revocation");
        assert_eq!(finding.serial, hidden.to_hex());
        assert_eq!(finding.node_id, Some(node(3).to_string()));
        assert_eq!(finding.issued, crate::timefmt::rfc3339(at(NOW - 400)));

        // A newer CRL listing everything clears nothing (an alarm stays) and adds nothing.
        let all = authority
            .sign_crl(
                &[crl_entry(&hidden), crl_entry(&listed), crl_entry(&late)],
                8,
                at(NOW - 300),
                at(NOW + 86_400),
            )
            .unwrap();
        assert!(store.save_crl(8, &all).unwrap());
        watcher.cross_check(&ca, &watch_with_queue(), NOW).await;
        let status = watcher.status();
        assert_eq!(status.withheld_revocations, 1);
        assert_eq!(status.unlogged_revocations, 0);
        assert_eq!(status.revocations_checked, 3 + 3 + 3, "{status:?}");
    }

    /// A log of enrollments of nodes 1..=n at NOW - 1000 + 10 i, then node 1's rotation at NOW.
    fn membership(n: u8) -> Vec<Vec<u8>> {
        let mut log: Vec<Vec<u8>> = (1..=n)
            .map(|i| entry(EntryKind::Enroll, i, NOW - 1000 + 10 * u64::from(i)))
            .collect();
        log.push(entry(EntryKind::Rotate, 100, NOW));
        log
    }

    #[tokio::test]
    async fn entries_are_followed_up_to_the_accepted_head_and_kept_across_restarts() {
        let temp = tempfile::tempdir().unwrap();
        let log: Vec<Vec<u8>> = (0..600u32)
            .map(|i| entry(EntryKind::Enroll, (i % 250) as u8, NOW - 600 + u64::from(i)))
            .collect();
        let ca = FakeLog::with_leaves(log.clone(), Some(600));
        let watch = LogWatch::off();
        let mut watcher = watcher_in(&temp);
        watcher.poll_log(&ca, NOW).await.unwrap();
        watcher.cross_check(&ca, &watch, NOW).await;
        assert_eq!(watcher.status().entries_verified, 600);
        // In bounded batches, each below the head verified by a proof.
        let batches = 600u64.div_ceil(crate::log_audit::ENTRIES_PER_BATCH) as usize;
        assert_eq!(ca.with(|s| s.entries_served), batches);
        assert_eq!(ca.with(|s| s.proofs_served), batches - 1);
        // Nothing new: nothing fetched.
        watcher.cross_check(&ca, &watch, NOW).await;
        assert_eq!(ca.with(|s| s.entries_served), batches);
        drop(watcher);
        let restarted = watcher_in(&temp);
        assert_eq!(restarted.status().entries_verified, 600);
        assert_eq!(restarted.follower.newest_at(), Some(NOW - 1));
    }

    #[tokio::test]
    async fn a_log_whose_entries_do_not_make_its_checkpoint_is_a_split_view() {
        let temp = tempfile::tempdir().unwrap();
        let honest = membership(5);
        // Checkpoints and proofs of the honest log, but node 3's enrollment taken out of the
        // entries served (replaced by another).
        let mut served = honest.clone();
        served[2] = entry(EntryKind::Enroll, 33, NOW - 970);
        let ca = FakeLog::of_leaves(served, Some(6), tree_of(&honest));
        let watch = LogWatch::off();
        let mut watcher = watcher_in(&temp);
        watcher.poll_log(&ca, NOW).await.unwrap();
        watcher.cross_check(&ca, &watch, NOW).await;
        let status = watcher.status();
        assert!(status.split_view, "{status:?}");
        assert_eq!(status.entries_verified, 0, "nothing unverified is kept");
        assert!(
            status
                .split_view_reason
                .as_deref()
                .is_some_and(|r| r.contains("hash to root")),
            "{status:?}"
        );
        assert!(status.split_view_evidence[1].contains("entries 0..6"));
        // Saved like any alarm.
        assert!(watcher_in(&temp).status().split_view);
    }

    #[tokio::test]
    async fn peer_certificates_are_checked_once_the_log_moved_past_them() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        dir.write_log_policy(&policy_text()).unwrap();
        let log = membership(3);
        let ca = FakeLog::with_leaves(log.clone(), Some(log.len() as u64));
        let store = store_in(&temp);
        let monitor = parse_log_policy(&policy_text(), &trust_domain()).unwrap();
        let mut watcher = Watcher::open(monitor, store, Vec::new(), OWN, NOW).unwrap();
        let (watch, _) = {
            let (sender, receiver) = mpsc::channel(1);
            (
                LogWatch {
                    received: Some(sender),
                    acks: None,
                    status: Mutex::new(LogStatus::default()),
                    certificates: Mutex::new(CertificateQueue::new(16)),
                    node_revocations: Mutex::new(NodeRevocationQueue::new(16)),
                },
                receiver,
            )
        };
        let at = |secs: u64| Timestamp::from_unix_secs(secs);
        // Node 2's logged certificate (the CA back-dates notBefore by 60 s).
        watch.handle_certificate(node(2), &serial(2), at(NOW - 980 - 60));
        // Node 7's: valid from the CA, never logged.
        watch.handle_certificate(node(7), &serial(7), at(NOW - 500));
        // Node 8's, issued just now: the log has not moved past it yet.
        watch.handle_certificate(node(8), &serial(8), at(NOW - 30));
        // Before the log is verified nothing is judged.
        watcher.cross_check(&ca, &watch, NOW).await;
        let status = watcher.status();
        assert_eq!(status.certificates_checked, 0);
        watcher.poll_log(&ca, NOW).await.unwrap();
        watcher.cross_check(&ca, &watch, NOW).await;
        watch.set_status(watcher.status());
        let status = watch.status();
        assert_eq!(status.entries_verified, 4);
        assert_eq!(status.certificates_checked, 2);
        assert_eq!(status.certificates_pending, 1);
        assert_eq!(status.unlogged_certificates, 1);
        assert_eq!(status.unlogged.len(), 1);
        assert_eq!(status.unlogged[0].kind, "unlogged_certificate");
        assert_eq!(status.unlogged[0].serial, serial(7).to_hex());
        assert_eq!(status.unlogged[0].node_id, Some(node(7).to_string()));
        // A certificate update of node 7 presenting it again: not counted twice.
        watch.handle_certificate(node(7), &serial(7), at(NOW - 500));
        watcher.cross_check(&ca, &watch, NOW).await;
        assert_eq!(watcher.status().unlogged_certificates, 1);
        assert!(!watcher.status().split_view, "an alarm of its own kind");
    }

    /// A watcher on the store in `temp` raising `log_stalled` after [`SHORT_STALL`].
    fn stalling_watcher_in(temp: &tempfile::TempDir, now: u64) -> Watcher {
        let monitor = parse_log_policy(&policy_text(), &trust_domain()).unwrap();
        Watcher::open(monitor, store_in(temp), Vec::new(), OWN, now)
            .unwrap()
            .with_stall_after(SHORT_STALL, now)
    }

    const SHORT_STALL: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_ca_that_stops_serving_quorum_checkpoints_raises_log_stalled_until_they_return() {
        let temp = tempfile::tempdir().unwrap();
        let stall = SHORT_STALL.as_secs();
        let ca = FakeLog::with_leaves(membership(3), Some(4));
        let watch = watch_with_queue();
        let mut watcher = stalling_watcher_in(&temp, NOW);
        // Quorum checkpoints every 10 s: nothing, however long.
        for step in 0..10 {
            let now = NOW + 10 * step;
            watcher.poll_log(&ca, now).await;
            watcher.cross_check(&ca, &watch, now).await;
        }
        assert!(!watcher.status().log_stalled, "{:?}", watcher.status());
        let last = NOW + 90;
        // The CA is gone; members keep relaying the accepted head by gossip, which says
        // nothing about the log now.
        ca.with(|s| s.reachable = false);
        let relayed = watcher.current_note().unwrap().to_owned();
        for now in [last + 10, last + stall - 1] {
            watcher.poll_log(&ca, now).await;
            watcher.feed(&relayed, Source::Gossip, &ca, now).await;
            watcher.cross_check(&ca, &watch, now).await;
        }
        assert!(!watcher.status().log_stalled);
        watcher.cross_check(&ca, &watch, last + stall).await;
        let status = watcher.status();
        assert!(status.log_stalled, "{status:?}");
        assert_eq!(status.log_stalled_alarms, 1);
        assert!(
            status.log_stalled_reason.as_deref().is_some_and(
                |r| r.contains("no membership-log checkpoint meeting the witness quorum")
            ),
            "{status:?}"
        );
        assert_eq!(status.log_stall_secs, stall);
        // Saved: a restart keeps it raised and counted once.
        drop(watcher);
        let mut watcher = stalling_watcher_in(&temp, last + stall + 5);
        watcher.cross_check(&ca, &watch, last + stall + 5).await;
        let status = watcher.status();
        assert!(status.log_stalled);
        assert_eq!(status.log_stalled_alarms, 1);
        // The CA is back with quorum checkpoints: cleared by itself, kept in the history.
        ca.with(|s| s.reachable = true);
        watcher.poll_log(&ca, last + stall + 20).await;
        watcher.cross_check(&ca, &watch, last + stall + 20).await;
        let status = watcher.status();
        assert!(!status.log_stalled, "{status:?}");
        assert_eq!(status.log_stalled_alarms, 1);
        let history = store_in(&temp).log_stall_history().unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].ended_by, StallEnd::Recovered);
        assert_eq!(history[0].raised.raised_at, last + stall);
    }

    #[tokio::test]
    async fn a_frozen_log_raises_log_stalled_for_certificates_it_never_covers_own_rotation_too() {
        let temp = tempfile::tempdir().unwrap();
        let stall = SHORT_STALL.as_secs();
        let grace = crate::log_audit::LOG_GRACE.as_secs();
        // The CA keeps serving its last cosigned checkpoint (node 1's rotation at NOW): quorum
        // checkpoints arrive on time, the log never moves.
        let ca = FakeLog::with_leaves(membership(3), Some(4));
        let watch = watch_with_queue();
        let mut watcher = stalling_watcher_in(&temp, NOW);
        let at = Timestamp::from_unix_secs;
        // Node 1's logged rotation (notBefore back-dated 60 s), and a certificate of node 7
        // issued after the log froze.
        watch.handle_certificate(node(100), &serial(100), at(NOW - 60));
        watch.handle_certificate(node(7), &serial(7), at(NOW + 10));
        let deadline = |nb: u64| nb + grace + stall;
        let mut now = NOW;
        while now < deadline(NOW + 10) {
            watcher.poll_log(&ca, now).await;
            watcher.cross_check(&ca, &watch, now).await;
            now += 10;
        }
        let status = watcher.status();
        // Node 1's rotation is in the log: checked, nothing raised, though no later entry came.
        assert_eq!(status.certificates_checked, 1, "{status:?}");
        assert!(!status.log_stalled, "{status:?}");
        watcher.poll_log(&ca, deadline(NOW + 10)).await;
        watcher.cross_check(&ca, &watch, deadline(NOW + 10)).await;
        watch.set_status(watcher.status());
        let status = watch.status();
        assert!(status.log_stalled, "{status:?}");
        assert_eq!(
            (status.log_stalled_alarms, status.certificates_uncovered),
            (1, 1)
        );
        let reason = status.log_stalled_reason.clone().unwrap();
        assert!(reason.contains(&serial(7).to_string()), "{reason}");
        assert!(reason.contains(&node(7).to_string()), "{reason}");
        assert_eq!(
            status.certificates_pending, 1,
            "node 7's waits on for the log"
        );
        assert_eq!(
            status.unlogged_certificates, 0,
            "the log never moved past it"
        );
        // Checkpoints keep coming; the log does not move: it stays raised, across a restart.
        watcher.poll_log(&ca, deadline(NOW + 10) + 100).await;
        watcher
            .cross_check(&ca, &watch, deadline(NOW + 10) + 100)
            .await;
        assert!(watcher.status().log_stalled);
        drop(watcher);
        let mut watcher = stalling_watcher_in(&temp, deadline(NOW + 10) + 110);
        watcher.poll_log(&ca, deadline(NOW + 10) + 110).await;
        watcher
            .cross_check(&ca, &watch, deadline(NOW + 10) + 110)
            .await;
        assert!(watcher.status().log_stalled);

        // Acknowledged by its count; then this node's own rotation, never logged, raises the
        // next alarm.
        let acked = deadline(NOW + 10) + 120;
        assert_eq!(
            watcher
                .acknowledge(LogAlarmKind::LogStalled, 2, acked)
                .await,
            Ok(AlarmAck::Changed { alarms: 1 })
        );
        assert_eq!(
            watcher
                .acknowledge(LogAlarmKind::LogStalled, 1, acked)
                .await,
            Ok(AlarmAck::Acknowledged)
        );
        assert!(!watcher.status().log_stalled);
        assert_eq!(
            watcher
                .acknowledge(LogAlarmKind::LogStalled, 1, acked)
                .await,
            Ok(AlarmAck::NoAlarm)
        );
        let history = store_in(&temp).log_stall_history().unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].ended_by, StallEnd::Acknowledged);
        watch.handle_certificate(OWN, &serial(201), at(acked));
        watcher.poll_log(&ca, deadline(acked)).await;
        watcher.cross_check(&ca, &watch, deadline(acked)).await;
        let status = watcher.status();
        assert!(status.log_stalled, "{status:?}");
        assert_eq!(status.log_stalled_alarms, 2);
        let reason = status.log_stalled_reason.unwrap();
        assert!(reason.contains("this node's own certificate"), "{reason}");
        assert!(reason.contains(&serial(201).to_string()), "{reason}");
        assert!(!status.split_view, "an alarm of its own kind");
    }

    #[test]
    fn without_a_policy_nothing_is_watched() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        let (watch, task) =
            prepare(&dir, &trust_domain(), store_in(&temp), OWN, STALL, NOW).unwrap();
        assert!(task.is_none());
        assert!(!watch.status().policy);
        assert!(!watch.handle_gossip(note(&tree("a", 1), 1, &[1, 2])));
        watch.handle_certificate(node(1), &serial(1), Timestamp::from_unix_secs(NOW));
        assert!(watch.take_due_certificates(Some(u64::MAX)).is_empty());
    }

    #[test]
    fn a_policy_for_another_log_stops_the_node() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        dir.write_log_policy(&policy_text()).unwrap();
        assert!(matches!(
            prepare(
                &dir,
                &"other.mesh".parse().unwrap(),
                store_in(&temp),
                OWN,
                STALL,
                NOW
            ),
            Err(LogWatchError::Policy { .. })
        ));
    }

    #[test]
    fn the_gossip_queue_is_bounded() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        dir.write_log_policy(&policy_text()).unwrap();
        // Only read here (to check saved CRLs later), never parsed as a certificate.
        std::fs::write(dir.ca_cert(), ztmesh_pki::cert_der_to_pem(b"ca")).unwrap();
        let (watch, task) =
            prepare(&dir, &trust_domain(), store_in(&temp), OWN, STALL, NOW).unwrap();
        let mut task = task.unwrap();
        assert!(watch.status().policy);
        let n = note(&tree("a", 1), 1, &[1, 2]);
        for _ in 0..RECEIVED_QUEUE {
            assert!(watch.handle_gossip(n.clone()));
        }
        assert!(!watch.handle_gossip(n.clone()), "the queue is full");
        assert!(task.received.try_recv().is_ok());
        assert!(watch.handle_gossip(n));
    }
}
