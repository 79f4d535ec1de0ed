//! The node as a monitor of the CA's membership log (DESIGN.md §3, "Transparency log and
//! witnesses"): it follows the log through cosigned checkpoints, passes them on by gossip, and
//! raises the split-view alarm when it sees two histories that cannot both be true.
//!
//! The decisions are the sans-IO [`CheckpointMonitor`]'s; this module feeds it. The policy is
//! `log-policy.txt`, pinned at enrollment with the CA certificate; without it the log is not
//! watched. Checkpoints come from two places, and both go through the same monitor:
//!
//! - the CA itself (`GET /v1/log/checkpoint`), polled by the daemon's log-watch loop;
//! - other members, as [`MessageKind::Checkpoint`](ztmesh_gossip::MessageKind) gossip: that is
//!   how a node that cannot reach the CA still learns the log, and how a CA that shows
//!   different nodes different logs is caught by any node that sees both.
//!
//! A larger checkpoint is accepted only once the CA has proved it consistent with the accepted
//! one; while the CA cannot be reached the monitor keeps it pending and the loop retries. Every
//! checkpoint that moves the accepted head is published as gossip.
//!
//! The monitor lives in one task (the loop), so a proof always answers the request it was
//! fetched for; the API reads a [`LogStatus`] snapshot the loop refreshes after every wake-up.
//! What must never happen here: accepting a checkpoint the monitor did not, or blocking gossip
//! delivery on the CA (received notes go through a bounded queue, dropped when full).

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use ztmesh_core::TrustDomain;
use ztmesh_tlog::{CheckpointMonitor, Hash, Observation, Policy, PolicyParseError};

use crate::api_types::LogStatus;
use crate::ca_client::ClientError;
use crate::node_dir::{NodeDir, NodeDirError};

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

/// Why a log policy cannot be used by this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogPolicyError {
    /// Not a tlog-policy.
    #[error(transparent)]
    Parse(#[from] PolicyParseError),
    /// No log of the policy is the membership log of this mesh.
    #[error("the policy has no log {expected:?} (its logs: {found:?})")]
    NoMembershipLog {
        /// Origins of the policy's logs.
        found: Vec<String>,
        /// `<trust domain>/membership`.
        expected: String,
    },
}

/// Parses a log policy and binds a monitor to its membership log of `trust_domain`.
pub fn parse_log_policy(
    text: &str,
    trust_domain: &TrustDomain,
) -> Result<CheckpointMonitor, LogPolicyError> {
    let policy = Policy::parse(text)?;
    let expected = crate::membership_log::log_origin(trust_domain);
    let found = policy
        .logs()
        .iter()
        .map(|log| log.verifier.name().to_owned())
        .collect();
    CheckpointMonitor::for_origin(policy, &expected)
        .ok_or(LogPolicyError::NoMembershipLog { found, expected })
}

/// Where the monitor gets what it cannot know by itself: the log's latest checkpoint and
/// consistency proofs. The CA client in production, an in-memory log in tests.
pub(crate) trait LogSource {
    /// The latest cosigned checkpoint note; `None` while the log has none.
    async fn latest_checkpoint(&self) -> Result<Option<String>, ClientError>;
    /// The consistency proof from tree size `old` to `new`.
    async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ClientError>;
}

impl LogSource for crate::ca_client::CaClient {
    async fn latest_checkpoint(&self) -> Result<Option<String>, ClientError> {
        self.log_checkpoint().await
    }

    async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ClientError> {
        self.log_consistency_proof(old, new).await
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

/// The monitor and what the node does with its answers. Owned by the log-watch loop.
pub(crate) struct Watcher {
    monitor: CheckpointMonitor,
    /// Checkpoints the CA served that were older than the accepted one. Older checkpoints by
    /// gossip are not counted: members relay what they accepted, and a late relay or a
    /// message pulled by anti-entropy after a newer head is no rollback attempt. A CA that
    /// answers with an older head than it already showed this node is one.
    stale_from_ca: u64,
}

impl Watcher {
    pub(crate) fn new(monitor: CheckpointMonitor) -> Self {
        Watcher {
            monitor,
            stale_from_ca: 0,
        }
    }

    /// The note of the accepted head.
    pub(crate) fn current_note(&self) -> Option<&str> {
        self.monitor.current_note()
    }

    /// Looks at one checkpoint note, fetching a consistency proof from `log` if the monitor
    /// asks for one. Returns the note to publish when the accepted head moved.
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
            if source == Source::Ca && matches!(observation, Observation::Stale { .. }) {
                self.stale_from_ca += 1;
            }
            self.report(&observation, source, alarms);
        }
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
        if let Some(observation) = self.prove(from, to, log).await {
            self.report(&observation, Source::Gossip, alarms);
        }
        self.moved_since(before)
    }

    async fn prove(
        &mut self,
        from: ztmesh_tlog::TreeHead,
        to: ztmesh_tlog::TreeHead,
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

    fn moved_since(&self, before: Option<ztmesh_tlog::TreeHead>) -> Option<String> {
        if self.monitor.current() == before {
            return None;
        }
        self.monitor.current_note().map(str::to_owned)
    }

    fn report(&self, observation: &Observation, source: Source, alarms_before: u64) {
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
                match source {
                    Source::Ca => tracing::warn!(
                        size,
                        ?current,
                        "the CA served a checkpoint older than the accepted one"
                    ),
                    Source::Gossip => tracing::debug!(size, ?current, "stale gossiped checkpoint"),
                }
            }
            Observation::SplitView { evidence } => {
                if self.monitor.stats().split_view_alarms > alarms_before {
                    // Debug formatting keeps each note (several lines) on the one log line.
                    tracing::error!(
                        from,
                        checkpoint_a = ?evidence.0,
                        checkpoint_b = ?evidence.1,
                        "SPLIT VIEW: two membership-log checkpoints that cannot both be true; the log or its witnesses misbehave"
                    );
                }
            }
        }
    }

    /// What `GET /v1/status` shows.
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
            quorum_not_met: stats.quorum_not_met,
            stale: self.stale_from_ca,
            split_view_evidence: evidence
                .map(|(a, b)| vec![a.clone(), b.clone()])
                .unwrap_or_default(),
        }
    }
}

/// The node's side of the watch: the queue gossip delivery feeds and the status the API reads.
pub(crate) struct LogWatch {
    /// `None` when the node has no log policy (nothing is watched, notes are ignored).
    received: Option<mpsc::Sender<String>>,
    status: Mutex<LogStatus>,
}

/// What the log-watch loop owns.
pub(crate) struct LogWatchTask {
    pub(crate) watcher: Watcher,
    pub(crate) received: mpsc::Receiver<String>,
}

/// Why log watching cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogWatchError {
    /// `log-policy.txt` could not be read.
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
}

/// Reads the pinned policy: with one, the watch and the task that drives it; without, a watch
/// that says so in the status and ignores gossiped checkpoints.
pub(crate) fn prepare(
    dir: &NodeDir,
    trust_domain: &TrustDomain,
) -> Result<(LogWatch, Option<LogWatchTask>), LogWatchError> {
    let Some(text) = dir.read_log_policy()? else {
        return Ok((LogWatch::off(), None));
    };
    let monitor = parse_log_policy(&text, trust_domain).map_err(|error| LogWatchError::Policy {
        path: dir.log_policy(),
        error,
    })?;
    let watcher = Watcher::new(monitor);
    let (sender, received) = mpsc::channel(RECEIVED_QUEUE);
    let watch = LogWatch {
        received: Some(sender),
        status: Mutex::new(watcher.status()),
    };
    Ok((watch, Some(LogWatchTask { watcher, received })))
}

impl LogWatch {
    fn off() -> Self {
        LogWatch {
            received: None,
            status: Mutex::new(LogStatus::default()),
        }
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

    pub(crate) fn status(&self) -> LogStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_status(&self, status: LogStatus) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use ztmesh_tlog::{Checkpoint, CosignatureSigner, MerkleTree, Note, Signer, TreeHead};

    const NOW: u64 = 1_800_000_000;

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

    fn tree(branch: &str, size: u64) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for i in 0..size {
            tree.append(format!("{branch}-{i}").as_bytes());
        }
        tree
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

    /// An in-memory CA log: serves the checkpoint of `served` leaves of `tree`, and proofs
    /// from `tree` (or nothing while unreachable).
    struct FakeLog {
        state: Mutex<FakeState>,
    }

    struct FakeState {
        tree: MerkleTree,
        served: Option<u64>,
        reachable: bool,
        proofs_served: usize,
    }

    impl FakeLog {
        fn new(tree: MerkleTree, served: Option<u64>) -> Self {
            FakeLog {
                state: Mutex::new(FakeState {
                    tree,
                    served,
                    reachable: true,
                    proofs_served: 0,
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
    }

    fn watcher() -> Watcher {
        Watcher::new(parse_log_policy(&policy_text(), &trust_domain()).unwrap())
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
        let ca = FakeLog::new(tree("a", 20), None);
        let mut watcher = watcher();
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
        let log = tree("a", 12);
        let ca = FakeLog::new(log.clone(), Some(4));
        let mut watcher = watcher();
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
        let log = tree("a", 6);
        let ca = FakeLog::new(log.clone(), Some(6));
        let mut watcher = watcher();
        let held = watcher.poll_log(&ca, NOW).await.unwrap();
        let forged = note(&tree("b", 6), 6, &[1, 2]);
        assert_eq!(watcher.feed(&forged, Source::Gossip, &ca, NOW).await, None);
        let status = watcher.status();
        assert!(status.split_view);
        assert_eq!(status.split_view_alarms, 1);
        assert_eq!(status.split_view_evidence, [held, forged.clone()]);
        // The CA's own view and the forgery keep coming: the alarm stays, counted once.
        watcher.poll_log(&ca, NOW).await;
        watcher.feed(&forged, Source::Gossip, &ca, NOW).await;
        assert_eq!(watcher.status().split_view_alarms, 1);
        assert_eq!(watcher.status().size, Some(6));
    }

    #[tokio::test]
    async fn a_ca_proof_that_does_not_hold_is_a_split_view() {
        // The CA serves checkpoints of one history and proofs of another.
        let ca = FakeLog::new(tree("b", 9), None);
        let mut watcher = watcher();
        watcher
            .feed(&note(&tree("a", 9), 3, &[1, 2]), Source::Gossip, &ca, NOW)
            .await
            .unwrap();
        ca.with(|s| s.served = Some(9));
        assert_eq!(watcher.poll_log(&ca, NOW).await, None);
        assert!(watcher.status().split_view);
    }

    #[tokio::test]
    async fn refused_notes_are_counted_and_change_nothing() {
        let log = tree("a", 8);
        let ca = FakeLog::new(log.clone(), Some(8));
        let mut watcher = watcher();
        watcher.poll_log(&ca, NOW).await.unwrap();
        // One witness of the two required.
        watcher
            .feed(&note(&log, 8, &[1]), Source::Gossip, &ca, NOW)
            .await;
        // An older checkpoint relayed late: not taken, and no rollback attempt.
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
        // The CA itself going back in time is one.
        ca.with(|s| s.served = Some(5));
        assert_eq!(watcher.poll_log(&ca, NOW).await, None);
        let status = watcher.status();
        assert_eq!((status.size, status.stale), (Some(8), 1));
        assert!(!status.split_view);
    }

    #[test]
    fn without_a_policy_nothing_is_watched() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        let (watch, task) = prepare(&dir, &trust_domain()).unwrap();
        assert!(task.is_none());
        assert!(!watch.status().policy);
        assert!(!watch.handle_gossip(note(&tree("a", 1), 1, &[1, 2])));
    }

    #[test]
    fn a_policy_for_another_log_stops_the_node() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        dir.write_log_policy(&policy_text()).unwrap();
        assert!(matches!(
            prepare(&dir, &"other.mesh".parse().unwrap()),
            Err(LogWatchError::Policy { .. })
        ));
    }

    #[test]
    fn the_gossip_queue_is_bounded() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        dir.write_log_policy(&policy_text()).unwrap();
        let (watch, task) = prepare(&dir, &trust_domain()).unwrap();
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
