//! Cross-checks of what a node is shown against the membership log it verified ("no single
//! machine, not even the CA, can forge membership"): sans-IO decisions, driven by
//! [`log_watch`](crate::log_watch).
//!
//! Accepting a cosigned checkpoint only says the log *has* some history; this module reads
//! that history and holds the CA to it:
//!
//! - [`EntryFollower`] fetches the entries the node does not have yet, in batches of at most
//!   [`ENTRIES_PER_BATCH`], and keeps a batch only once it provably belongs to the accepted
//!   checkpoint: the RFC 6962 root recomputed over every entry so far is the checkpoint's root,
//!   or (for a batch that ends below it) a consistency proof from that recomputed root to the
//!   checkpoint's verifies. Anything else is the log contradicting its own signed, witnessed
//!   head: a split view. Its memory is a [`MerkleFrontier`] (O(log n)); the entries themselves
//!   go to the node's SQLite store, where serials are looked up.
//! - A peer certificate accepted on a link waits in the bounded [`CertificateQueue`] until the
//!   verified log has moved past its issuance: until an entry committed at or after its
//!   `notBefore` + [`LOG_GRACE`]. Then a serial with no `enroll` or `rotate` entry is an
//!   `unlogged_certificate`. Likewise each serial of the CRL in force, once the log has moved
//!   past the CRL's `thisUpdate` + [`LOG_GRACE`], must have a `revoke_node` or
//!   `revoke_certificate` entry, or it is an `unlogged_revocation`.
//!
//! - Each revocation by node id (a CA-signed record's `revoked_nodes`) waits in the bounded
//!   [`NodeRevocationQueue`] until the log shows a `revoke_node` entry for that node, or
//!   moves past the time this node learnt it + [`LOG_GRACE`] without one: an
//!   `unlogged_revocation` naming the node (no serial). Unlike the other findings this one
//!   also decides: a revocation no newer CRL justified is held unapplied until the log shows
//!   it, and is never applied if the log does not (the node daemon acts on the verdicts).
//!
//! - The other way round, each CRL the log has moved past must list every serial the log shows
//!   revoked by its `thisUpdate` − [`LOG_GRACE`], or it is a `withheld_revocation`: a CA
//!   (or whoever signs with its key) hiding from this node a revocation it logged for everyone
//!   else. The CA lists every revocation it ever made in every CRL, expired certificates
//!   included, so an omission is never routine.
//! - Every `enroll` or `rotate` entry naming this node must be one of the certificates it
//!   holds or held ([`NodeStore::record_issuance`](crate::store::NodeStore::record_issuance)),
//!   once [`LOG_GRACE`] has passed since the entry was committed, or it is a
//!   `foreign_certificate`: a certificate in this node's name given to someone else (or, the
//!   one honest cause, a rotation whose answer never reached this node). Entries before the
//!   index at which the node started keeping its history are not judged (see
//!   [`NodeStore::own_audit_start`](crate::store::NodeStore::own_audit_start)); the index,
//!   unlike the CA-chosen `at`, cannot be moved by the CA. The node's own certificates go
//!   through the [`CertificateQueue`] like its peers'. A certificate the log neither shows nor
//!   moves past in time is [`log_stall`](crate::log_stall)'s to report (`log_stalled`).
//!
//! These are alarms, never refusals: a link stays up and a CRL stays in force. The time rule
//! leaves room for honest races (see [`LOG_GRACE`]), but a refusal on a timing judgement would
//! turn a slow CA into an outage; the alarm is for the operator, with the node and serial.
//! The time compared is the CA's own `at` of its entries: a CA that both issues unlogged and
//! stops logging anything newer delays the alarm (`log_stalled` is raised meanwhile), which then
//! never clears either.
//!
//! This module must never keep an entry that was not verified against an accepted root, and
//! never count a certificate as checked before the log could show it.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use ztmesh_core::{NodeId, Timestamp};
use ztmesh_pki::Serial;
use ztmesh_tlog::merkle::{leaf_hash, verify_consistency};
use ztmesh_tlog::{Hash, MerkleFrontier, TreeHead};

use crate::api_types::UnloggedFinding;
use crate::membership_log::{EntryKind, LogEntry};
use crate::store::FollowedEntry;

/// How long after a certificate's `notBefore` (or a CRL's `thisUpdate`) the log must have moved
/// on before a missing entry counts. The CA back-dates `notBefore` by its 60 s clock-skew
/// allowance and logs the issuance in the same transaction, at `notBefore` + 60 s; 30 s more
/// covers a slow commit and entries committed out of `at` order by concurrent requests (each
/// takes its time before its transaction). A CRL is signed after the revocations it lists are
/// committed, so its `thisUpdate` needs the same room at most.
pub(crate) const LOG_GRACE: Duration = Duration::from_secs(90);

/// Most entries asked for in one request (the CA answers at most
/// [`MAX_ENTRIES_PER_REQUEST`](crate::membership_log::MAX_ENTRIES_PER_REQUEST)).
pub(crate) const ENTRIES_PER_BATCH: u64 = MAX_ENTRIES_PER_FETCH;

/// Most log entries [`CaClient::log_entries`](crate::ca_client::CaClient::log_entries) asks
/// for at once.
pub const MAX_ENTRIES_PER_FETCH: u64 = 256;

/// Most batches fetched per wake-up of the log-watch loop, so a node far behind catches up over
/// several wake-ups instead of holding the loop (and the CA) for minutes.
pub(crate) const BATCHES_PER_WAKE: usize = 8;

/// Most log entries a node follows; beyond, it stops cross-checking (and says so in its
/// status) rather than grow its database without end.
pub(crate) const MAX_FOLLOWED_ENTRIES: u64 = 1 << 24;

/// Most peer certificates waiting for the log; more are not queued (and counted). Certificates
/// come only from links, one per peer and rotation, so this is reached only by a mesh far larger
/// than one node's links or by a log that stopped moving.
pub(crate) const MAX_PENDING_CERTIFICATES: usize = 4096;

/// Most findings listed in the status (the counters count them all).
pub(crate) const MAX_FINDINGS_SHOWN: usize = 32;

/// Most distinct serials remembered as already reported (to report each once); when full, the
/// memory is cleared and a serial seen again is reported again.
pub(crate) const MAX_REPORTED: usize = 4096;

/// Whether the log, whose newest verified entry was committed at `log_time`, has moved far
/// enough past `issued` (a `notBefore` or a `thisUpdate`) for a missing entry to count.
pub(crate) fn is_due(issued: Timestamp, log_time: Option<u64>) -> bool {
    log_time.is_some_and(|at| at >= issued.as_unix_secs().saturating_add(LOG_GRACE.as_secs()))
}

/// Whether an entry naming this node, committed at `at` (Unix seconds), is old enough at
/// `now_secs` for the node to have recorded the certificate it names.
pub(crate) fn own_entry_is_due(at: u64, now_secs: u64) -> bool {
    now_secs >= at.saturating_add(LOG_GRACE.as_secs())
}

/// The latest commit time (Unix seconds) of a logged revocation that a CRL with this
/// `thisUpdate` must list.
pub(crate) fn revocations_due_by(this_update: Timestamp) -> u64 {
    this_update
        .as_unix_secs()
        .saturating_sub(LOG_GRACE.as_secs())
}

/// Most entries naming this node judged per wake-up.
pub(crate) const OWN_ENTRIES_PER_WAKE: usize = 1000;

/// The logged revocations `(serial, node_id)` that a CRL listing `listed` leaves out.
pub(crate) fn withheld<'a>(
    logged: &'a [(String, String)],
    listed: &'a HashSet<String>,
) -> impl Iterator<Item = &'a (String, String)> + 'a {
    logged
        .iter()
        .filter(move |(serial, _)| !listed.contains(serial))
}

/// Whether the entries naming a serial (their kinds) include its issuance.
pub(crate) fn issuance_is_logged(kinds: &[String]) -> bool {
    kinds
        .iter()
        .any(|kind| kind == EntryKind::Enroll.as_str() || kind == EntryKind::Rotate.as_str())
}

/// Whether the entries naming a serial (their kinds) include its revocation.
pub(crate) fn revocation_is_logged(kinds: &[String]) -> bool {
    kinds.iter().any(|kind| {
        kind == EntryKind::RevokeNode.as_str() || kind == EntryKind::RevokeCertificate.as_str()
    })
}

/// What the node keeps of one leaf: its hash, and what it says if this node knows its kind.
pub(crate) fn followed_entry(leaf: &[u8]) -> FollowedEntry {
    let leaf_hash = *leaf_hash(leaf).as_bytes();
    match LogEntry::from_leaf(leaf) {
        Ok(entry) => FollowedEntry {
            leaf_hash,
            kind: entry.kind.as_str().to_owned(),
            node_id: entry.node_id.to_string(),
            serial: entry.serial,
            at: entry.at,
        },
        // A kind added after this build (or garbage the log committed to anyway): it still
        // counts for the root, and names nothing.
        Err(_) => FollowedEntry {
            leaf_hash,
            kind: "unknown".into(),
            node_id: String::new(),
            serial: String::new(),
            at: 0,
        },
    }
}

/// Why a batch of entries the log answered cannot be used (a broken answer, retried later;
/// no signed statement was contradicted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BatchError {
    /// No entry at all where the accepted checkpoint says there are some.
    #[error("the log answered no entries from index {start}")]
    Empty {
        /// The first index asked for.
        start: u64,
    },
    /// Not the consecutive indexes asked for.
    #[error("entry {got} answered where {expected} was expected")]
    OutOfOrder {
        /// The index expected.
        expected: u64,
        /// The index answered.
        got: u64,
    },
    /// More entries than asked for.
    #[error("{got} entries answered where at most {asked} were asked for")]
    TooMany {
        /// Entries asked for.
        asked: u64,
        /// Entries answered.
        got: usize,
    },
}

/// Fetched entries, parsed and hashed, not yet shown to belong to the accepted checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    start: u64,
    entries: Vec<FollowedEntry>,
    /// The tree of every verified entry and this batch's.
    frontier: MerkleFrontier,
}

impl Batch {
    /// Index of the first entry.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// One past the last entry.
    pub(crate) fn end(&self) -> u64 {
        self.frontier.size()
    }

    /// The entries, to be stored once verified.
    pub(crate) fn entries(&self) -> &[FollowedEntry] {
        &self.entries
    }

    /// Whether it ends below `accepted`, so that a consistency proof from its end to the
    /// accepted size is needed to verify it.
    pub(crate) fn needs_proof(&self, accepted: TreeHead) -> bool {
        self.end() < accepted.size
    }

    /// Checks that the log's entries so far, this batch included, are a prefix of the
    /// accepted tree: the recomputed root is the accepted one, or `proof` (from this batch's
    /// end to the accepted size; ignored when the batch reaches it) proves the recomputed tree
    /// a prefix of it. `Err` says how they disagree: the log contradicts its own checkpoint.
    pub(crate) fn verify(&self, accepted: TreeHead, proof: &[Hash]) -> Result<(), String> {
        let root = self.frontier.root();
        let (start, end) = (self.start, self.end());
        if end > accepted.size {
            return Err(format!(
                "entries {start}..{end} go past the accepted size {}",
                accepted.size
            ));
        }
        if end == accepted.size {
            return if root == accepted.root {
                Ok(())
            } else {
                Err(format!(
                    "the log's entries 0..{end} hash to root {root}, not to the root {} of its checkpoint of size {}",
                    accepted.root, accepted.size
                ))
            };
        }
        verify_consistency(end, accepted.size, proof, &root, &accepted.root).map_err(|error| {
            format!(
                "the log's entries 0..{end} (root {root}) are not a prefix of its checkpoint of size {} (root {}): {error}",
                accepted.size, accepted.root
            )
        })
    }
}

/// Follows the log's entries up to the accepted checkpoint; see the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct EntryFollower {
    frontier: MerkleFrontier,
    /// Latest `at` among the verified entries (Unix seconds).
    newest_at: Option<u64>,
    capacity: u64,
}

impl EntryFollower {
    /// A follower holding the verified entries whose leaf hashes are given (in index order)
    /// and whose latest commit time is `newest_at`, following at most `capacity` entries.
    pub(crate) fn resume(
        leaf_hashes: impl IntoIterator<Item = [u8; 32]>,
        newest_at: Option<u64>,
        capacity: u64,
    ) -> Self {
        let mut follower = EntryFollower {
            frontier: MerkleFrontier::new(),
            newest_at,
            capacity,
        };
        follower.extend_verified(leaf_hashes);
        follower
    }

    /// Appends the leaf hashes of entries verified earlier (read back from the store).
    pub(crate) fn extend_verified(&mut self, leaf_hashes: impl IntoIterator<Item = [u8; 32]>) {
        for hash in leaf_hashes {
            self.frontier.append_leaf_hash(Hash::from_bytes(hash));
        }
    }

    /// Entries verified.
    pub(crate) fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// When the newest verified entry was committed (Unix seconds).
    pub(crate) fn newest_at(&self) -> Option<u64> {
        self.newest_at
    }

    /// Whether the follower stopped at its capacity below `accepted_size`.
    pub(crate) fn is_full(&self, accepted_size: u64) -> bool {
        self.size() >= self.capacity && accepted_size > self.size()
    }

    /// The next `(start, count)` to fetch towards `accepted_size`, if any.
    pub(crate) fn next_request(&self, accepted_size: u64) -> Option<(u64, u64)> {
        let limit = accepted_size.min(self.capacity);
        let start = self.size();
        (start < limit).then(|| (start, (limit - start).min(ENTRIES_PER_BATCH)))
    }

    /// Parses the log's answer to the request `(start, count)`: `(index, leaf)` pairs.
    pub(crate) fn handle_entries(
        &self,
        (start, count): (u64, u64),
        answer: &[(u64, Vec<u8>)],
    ) -> Result<Batch, BatchError> {
        if answer.is_empty() {
            return Err(BatchError::Empty { start });
        }
        if answer.len() as u64 > count {
            return Err(BatchError::TooMany {
                asked: count,
                got: answer.len(),
            });
        }
        let mut frontier = self.frontier.clone();
        let mut entries = Vec::with_capacity(answer.len());
        for (index, leaf) in answer {
            if *index != frontier.size() {
                return Err(BatchError::OutOfOrder {
                    expected: frontier.size(),
                    got: *index,
                });
            }
            let entry = followed_entry(leaf);
            frontier.append_leaf_hash(Hash::from_bytes(entry.leaf_hash));
            entries.push(entry);
        }
        Ok(Batch {
            start,
            entries,
            frontier,
        })
    }

    /// Takes a batch that verified (and was stored).
    pub(crate) fn commit(&mut self, batch: Batch) {
        debug_assert_eq!(batch.start, self.size());
        let newest = batch.entries.iter().map(|entry| entry.at).max();
        self.newest_at = self.newest_at.max(newest);
        self.frontier = batch.frontier;
    }
}

/// A peer certificate waiting for the log to move past its issuance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingCertificate {
    /// Whose.
    pub(crate) node_id: NodeId,
    /// Its serial.
    pub(crate) serial: Serial,
    /// Its `notBefore`.
    pub(crate) not_before: Timestamp,
}

/// Peer certificates accepted on links and not yet checked; bounded by `capacity`.
#[derive(Debug)]
pub(crate) struct CertificateQueue {
    /// Keyed by serial: a certificate presented again (a link flapping) waits once.
    pending: BTreeMap<Serial, PendingCertificate>,
    capacity: usize,
    /// Certificates not queued because the queue was full.
    dropped: u64,
    /// Waiting certificates already handed out by [`CertificateQueue::take_overdue`] (a subset
    /// of `pending`'s keys, so bounded by it).
    overdue: HashSet<Serial>,
}

impl CertificateQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        CertificateQueue {
            pending: BTreeMap::new(),
            capacity,
            dropped: 0,
            overdue: HashSet::new(),
        }
    }

    /// A certificate accepted on a link (at link-up or by a certificate update).
    pub(crate) fn handle_certificate(
        &mut self,
        node_id: NodeId,
        serial: &Serial,
        not_before: Timestamp,
    ) {
        if self.pending.contains_key(serial) {
            return;
        }
        // Finish what is queued before taking more: the oldest wait is the next to come due.
        if self.pending.len() >= self.capacity {
            self.dropped += 1;
            return;
        }
        self.pending.insert(
            serial.clone(),
            PendingCertificate {
                node_id,
                serial: serial.clone(),
                not_before,
            },
        );
    }

    /// Removes and returns the certificates the log (newest verified entry at `log_time`) has
    /// moved past.
    pub(crate) fn take_due(&mut self, log_time: Option<u64>) -> Vec<PendingCertificate> {
        let due: Vec<Serial> = self
            .pending
            .values()
            .filter(|pending| is_due(pending.not_before, log_time))
            .map(|pending| pending.serial.clone())
            .collect();
        due.iter()
            .filter_map(|serial| {
                self.overdue.remove(serial);
                self.pending.remove(serial)
            })
            .collect()
    }

    /// The waiting certificates whose `deadline` (computed from their `notBefore`) has passed
    /// at `now`, each handed out once: they stay queued, to be judged when the log moves past
    /// them, unless [`CertificateQueue::settle`]d. For the `log_stalled` check
    /// ([`log_stall`](crate::log_stall)).
    pub(crate) fn take_overdue(
        &mut self,
        now: u64,
        deadline: impl Fn(Timestamp) -> u64,
    ) -> Vec<PendingCertificate> {
        let overdue: Vec<PendingCertificate> = self
            .pending
            .values()
            .filter(|pending| !self.overdue.contains(&pending.serial))
            .filter(|pending| deadline(pending.not_before) <= now)
            .cloned()
            .collect();
        self.overdue
            .extend(overdue.iter().map(|pending| pending.serial.clone()));
        overdue
    }

    /// Hands certificates out again by the next [`CertificateQueue::take_overdue`] (their
    /// check could not be carried out).
    pub(crate) fn unmark_overdue(&mut self, certificates: &[PendingCertificate]) {
        for pending in certificates {
            self.overdue.remove(&pending.serial);
        }
    }

    /// Takes a certificate out of the queue: the log showed its issuance before moving past it.
    pub(crate) fn settle(&mut self, serial: &Serial) -> Option<PendingCertificate> {
        self.overdue.remove(serial);
        self.pending.remove(serial)
    }

    /// Certificates waiting.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Certificates not queued for want of room.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Whether the entries naming a node (their kinds) include a revocation of the node itself:
/// only `revoke_node` bans a node by id; `revoke_certificate` names one certificate, and
/// its owner may hold others.
pub(crate) fn node_revocation_is_logged(kinds: &[String]) -> bool {
    kinds
        .iter()
        .any(|kind| kind == EntryKind::RevokeNode.as_str())
}

/// Most revocations by node id waiting for the log; more are refused (and counted). Only
/// CA-signed records fill it, so a full queue means a CA (or its key) revoking in bulk
/// outside the log, which the ones queued already report.
pub(crate) const MAX_PENDING_NODE_REVOCATIONS: usize = 1024;

/// A revocation by node id (a CA-signed record's `revoked_nodes`, or one persisted in
/// `state.db` at start) waiting for the verified log to show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingNodeRevocation {
    /// The node revoked.
    pub(crate) node_id: NodeId,
    /// When this node learnt it (its own clock, not the record's: a back-dated record must
    /// not be judged before the log could show it, nor a future-dated one never).
    pub(crate) learnt: Timestamp,
    /// Whether it is in force already (a newer CRL listed one of the node's certificates);
    /// one not in force is held and applied only once the log shows it.
    pub(crate) applied: bool,
}

/// What the log said about a revocation by node id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeRevocationVerdict {
    /// The log shows a `revoke_node` entry for it.
    Logged(PendingNodeRevocation),
    /// The log moved past it ([`LOG_GRACE`]) without showing it: `unlogged_revocation`.
    Unlogged(PendingNodeRevocation),
}

/// Revocations by node id waiting for the log; keyed by node, bounded by `capacity`.
///
/// The rule it serves: a node is treated as revoked only when a newer CRL lists one of its
/// certificates, or when the witnessed log shows its revocation. A record naming a node
/// whose certificates the CRL it carries does not newly list is held here unapplied, then
/// applied if the log shows it, or dropped and reported if the log moves past it without.
/// Applied ones are queued too, so every revocation a node acts on is held to the log.
#[derive(Debug)]
pub(crate) struct NodeRevocationQueue {
    pending: BTreeMap<NodeId, PendingNodeRevocation>,
    capacity: usize,
    dropped: u64,
}

impl NodeRevocationQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        NodeRevocationQueue {
            pending: BTreeMap::new(),
            capacity,
            dropped: 0,
        }
    }

    /// Queues `node_id`'s revocation, learnt at `learnt`. A node queued already keeps its
    /// first time and becomes applied if this one is. Returns false when the queue is full.
    pub(crate) fn handle_revocation(
        &mut self,
        node_id: NodeId,
        learnt: Timestamp,
        applied: bool,
    ) -> bool {
        if let Some(pending) = self.pending.get_mut(&node_id) {
            pending.applied |= applied;
            return true;
        }
        if self.pending.len() >= self.capacity {
            self.dropped += 1;
            return false;
        }
        self.pending.insert(
            node_id,
            PendingNodeRevocation {
                node_id,
                learnt,
                applied,
            },
        );
        true
    }

    /// The nodes waiting, to be looked up in the log.
    pub(crate) fn nodes(&self) -> Vec<NodeId> {
        self.pending.keys().copied().collect()
    }

    /// Judges the waiting revocations: those `logged` says the log shows, and those the log
    /// (newest verified entry at `log_time`) has moved past without showing, leave the queue
    /// with their verdict; the others keep waiting.
    pub(crate) fn judge(
        &mut self,
        log_time: Option<u64>,
        logged: &HashSet<NodeId>,
    ) -> Vec<NodeRevocationVerdict> {
        let decided: Vec<NodeId> = self
            .pending
            .values()
            .filter(|pending| logged.contains(&pending.node_id) || is_due(pending.learnt, log_time))
            .map(|pending| pending.node_id)
            .collect();
        decided
            .into_iter()
            .filter_map(|node| self.pending.remove(&node))
            .map(|pending| {
                if logged.contains(&pending.node_id) {
                    NodeRevocationVerdict::Logged(pending)
                } else {
                    NodeRevocationVerdict::Unlogged(pending)
                }
            })
            .collect()
    }

    /// Revocations waiting.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Revocations waiting unapplied.
    pub(crate) fn held(&self) -> usize {
        self.pending.values().filter(|p| !p.applied).count()
    }
}

/// Which cross-check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FindingKind {
    /// A peer certificate whose issuance is not in the log.
    UnloggedCertificate,
    /// A CRL revocation that is not in the log.
    UnloggedRevocation,
    /// A logged revocation that the CRL in force leaves out.
    WithheldRevocation,
    /// A logged certificate in this node's name that it never held.
    ForeignCertificate,
}

impl FindingKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FindingKind::UnloggedCertificate => "unlogged_certificate",
            FindingKind::UnloggedRevocation => "unlogged_revocation",
            FindingKind::WithheldRevocation => "withheld_revocation",
            FindingKind::ForeignCertificate => "foreign_certificate",
        }
    }
}

/// Counters and the latest findings of the cross-checks, since the node started (the checks
/// run again after a restart, on the certificates and CRL seen then).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) certificates_checked: u64,
    pub(crate) revocations_checked: u64,
    pub(crate) unlogged_certificates: u64,
    pub(crate) unlogged_revocations: u64,
    pub(crate) withheld_revocations: u64,
    pub(crate) foreign_certificates: u64,
    /// The latest findings, newest last, at most [`MAX_FINDINGS_SHOWN`].
    recent: VecDeque<UnloggedFinding>,
    /// What was reported already, so each is counted once.
    reported: HashSet<(FindingKind, Serial)>,
    /// Nodes whose unlogged revocation by node id was reported already.
    reported_nodes: HashSet<NodeId>,
}

impl Findings {
    /// Counts a check of `kind`, and records a failure if `logged` is false. Returns whether
    /// it is a new finding (not reported before).
    pub(crate) fn record(
        &mut self,
        kind: FindingKind,
        serial: &Serial,
        node_id: Option<NodeId>,
        issued: Timestamp,
        logged: bool,
    ) -> bool {
        match kind {
            FindingKind::UnloggedCertificate | FindingKind::ForeignCertificate => {
                self.certificates_checked += 1
            }
            FindingKind::UnloggedRevocation | FindingKind::WithheldRevocation => {
                self.revocations_checked += 1
            }
        }
        if logged {
            return false;
        }
        if self.reported.len() >= MAX_REPORTED {
            self.reported.clear();
        }
        if !self.reported.insert((kind, serial.clone())) {
            return false;
        }
        match kind {
            FindingKind::UnloggedCertificate => self.unlogged_certificates += 1,
            FindingKind::UnloggedRevocation => self.unlogged_revocations += 1,
            FindingKind::WithheldRevocation => self.withheld_revocations += 1,
            FindingKind::ForeignCertificate => self.foreign_certificates += 1,
        }
        if self.recent.len() >= MAX_FINDINGS_SHOWN {
            self.recent.pop_front();
        }
        self.recent.push_back(UnloggedFinding {
            kind: kind.as_str().to_owned(),
            serial: serial.to_hex(),
            node_id: node_id.map(|node| node.to_string()),
            issued: crate::timefmt::rfc3339(issued),
        });
        true
    }

    /// Counts a check of a revocation by node id, and records an `unlogged_revocation` (with
    /// no serial) if `logged` is false. Returns whether it is a new finding.
    pub(crate) fn record_node_revocation(
        &mut self,
        node_id: NodeId,
        learnt: Timestamp,
        logged: bool,
    ) -> bool {
        self.revocations_checked += 1;
        if logged {
            return false;
        }
        if self.reported_nodes.len() >= MAX_REPORTED {
            self.reported_nodes.clear();
        }
        if !self.reported_nodes.insert(node_id) {
            return false;
        }
        self.unlogged_revocations += 1;
        if self.recent.len() >= MAX_FINDINGS_SHOWN {
            self.recent.pop_front();
        }
        self.recent.push_back(UnloggedFinding {
            kind: FindingKind::UnloggedRevocation.as_str().to_owned(),
            serial: String::new(),
            node_id: Some(node_id.to_string()),
            issued: crate::timefmt::rfc3339(learnt),
        });
        true
    }

    /// The latest findings, oldest first.
    pub(crate) fn recent(&self) -> Vec<UnloggedFinding> {
        self.recent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztmesh_core::NodeId;
    use ztmesh_tlog::MerkleTree;

    const T0: u64 = 1_800_000_000;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    fn serial(n: u8) -> Serial {
        Serial::from_bytes(&[0x40, n, 1, 2, 3])
    }

    fn issued(kind: EntryKind, n: u8, at: u64) -> Vec<u8> {
        LogEntry {
            kind,
            node_id: node(n),
            serial: serial(n).to_hex(),
            not_after: Some(at + 86_400),
            at,
        }
        .to_leaf()
    }

    fn revoked(n: u8, at: u64) -> Vec<u8> {
        LogEntry {
            kind: EntryKind::RevokeCertificate,
            node_id: node(n),
            serial: serial(n).to_hex(),
            not_after: None,
            at,
        }
        .to_leaf()
    }

    /// A log of `n` enrollments, node `i` at `T0 + 10 i`.
    fn leaves(n: u8) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| issued(EntryKind::Enroll, i, T0 + 10 * u64::from(i)))
            .collect()
    }

    fn tree_of(leaves: &[Vec<u8>]) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for leaf in leaves {
            tree.append(leaf);
        }
        tree
    }

    fn head(tree: &MerkleTree, size: u64) -> TreeHead {
        TreeHead {
            size,
            root: tree.root_at(size).unwrap(),
        }
    }

    fn answer(leaves: &[Vec<u8>], start: u64, count: u64) -> Vec<(u64, Vec<u8>)> {
        leaves
            .iter()
            .enumerate()
            .map(|(i, leaf)| (i as u64, leaf.clone()))
            .skip(start as usize)
            .take(count as usize)
            .collect()
    }

    /// Follows `leaves` (served honestly, proofs from `proof_tree`) up to `accepted`, as the
    /// watcher does; returns the verification error if any.
    fn follow(
        follower: &mut EntryFollower,
        leaves: &[Vec<u8>],
        proof_tree: &MerkleTree,
        accepted: TreeHead,
    ) -> Result<(), String> {
        while let Some(request) = follower.next_request(accepted.size) {
            let batch = follower
                .handle_entries(request, &answer(leaves, request.0, request.1))
                .unwrap();
            let proof = if batch.needs_proof(accepted) {
                proof_tree
                    .consistency_proof(batch.end(), accepted.size)
                    .unwrap()
            } else {
                Vec::new()
            };
            batch.verify(accepted, &proof)?;
            follower.commit(batch);
        }
        Ok(())
    }

    #[test]
    fn honest_entries_are_followed_in_bounded_batches_up_to_the_accepted_root() {
        let log: Vec<Vec<u8>> = (0..700u32)
            .map(|i| issued(EntryKind::Rotate, (i % 200) as u8, T0 + u64::from(i)))
            .collect();
        let tree = tree_of(&log);
        let mut follower = EntryFollower::resume([], None, MAX_FOLLOWED_ENTRIES);
        assert_eq!(follower.next_request(600), Some((0, ENTRIES_PER_BATCH)));
        // Batches below the head are verified by proof, the last one by the root itself.
        follow(&mut follower, &log, &tree, head(&tree, 600)).unwrap();
        assert_eq!(follower.size(), 600);
        assert_eq!(follower.newest_at(), Some(T0 + 599));
        assert_eq!(follower.next_request(600), None);
        // The head moves on: the follower carries on from where it stopped.
        assert_eq!(follower.next_request(700), Some((600, 100)));
        follow(&mut follower, &log, &tree, head(&tree, 700)).unwrap();
        assert_eq!(follower.size(), 700);
        // A restart rebuilds the same frontier from the stored leaf hashes.
        let hashes = (0..700).map(|i| *tree.leaf_hash(i).unwrap().as_bytes());
        let resumed = EntryFollower::resume(hashes, Some(T0 + 699), MAX_FOLLOWED_ENTRIES);
        assert_eq!(resumed.frontier.root(), tree.root());
        assert_eq!(resumed.next_request(700), None);
    }

    #[test]
    fn entries_that_do_not_make_the_accepted_root_are_a_contradiction() {
        let honest = leaves(20);
        let tree = tree_of(&honest);
        // The log serves one entry changed (an issuance taken out and replaced).
        let mut served = honest.clone();
        served[7] = issued(EntryKind::Enroll, 99, T0 + 70);
        // Reaching the head: the root differs.
        let mut follower = EntryFollower::resume([], None, MAX_FOLLOWED_ENTRIES);
        let error = follow(&mut follower, &served, &tree, head(&tree, 20)).unwrap_err();
        assert!(error.contains("hash to root"), "{error}");
        assert_eq!(follower.size(), 0, "nothing unverified is kept");
        // Below the head: the honest tree's proof does not fit the served entries.
        let big = leaves(200);
        let big_tree = tree_of(&big);
        let mut served = big.clone();
        served[3] = issued(EntryKind::Enroll, 98, T0);
        let mut follower = EntryFollower::resume([], None, MAX_FOLLOWED_ENTRIES);
        let request = (0, 50);
        let batch = follower
            .handle_entries(request, &answer(&served, 0, 50))
            .unwrap();
        assert!(batch.needs_proof(head(&big_tree, 200)));
        let proof = big_tree.consistency_proof(50, 200).unwrap();
        let error = batch.verify(head(&big_tree, 200), &proof).unwrap_err();
        assert!(error.contains("not a prefix"), "{error}");
        // And a garbage proof for honest entries is one too.
        let batch = follower
            .handle_entries(request, &answer(&big, 0, 50))
            .unwrap();
        assert!(batch
            .verify(head(&big_tree, 200), &[Hash::from_bytes([1; 32])])
            .is_err());
        batch.verify(head(&big_tree, 200), &proof).unwrap();
        follower.commit(batch);
        assert_eq!(follower.size(), 50);
    }

    #[test]
    fn broken_answers_are_refused_without_judging_the_log() {
        let log = leaves(10);
        let follower = EntryFollower::resume([], None, MAX_FOLLOWED_ENTRIES);
        assert_eq!(
            follower.handle_entries((0, 5), &[]).unwrap_err(),
            BatchError::Empty { start: 0 }
        );
        assert_eq!(
            follower
                .handle_entries((0, 2), &answer(&log, 0, 3))
                .unwrap_err(),
            BatchError::TooMany { asked: 2, got: 3 }
        );
        assert_eq!(
            follower
                .handle_entries((0, 5), &answer(&log, 1, 3))
                .unwrap_err(),
            BatchError::OutOfOrder {
                expected: 0,
                got: 1
            }
        );
        // A short answer is fine: it is verified by proof like any batch below the head.
        let tree = tree_of(&log);
        let batch = follower
            .handle_entries((0, 10), &answer(&log, 0, 4))
            .unwrap();
        assert_eq!(batch.end(), 4);
        batch
            .verify(head(&tree, 10), &tree.consistency_proof(4, 10).unwrap())
            .unwrap();
        // A batch past the accepted head is refused.
        let batch = follower
            .handle_entries((0, 10), &answer(&log, 0, 10))
            .unwrap();
        assert!(batch.verify(head(&tree, 6), &[]).is_err());
    }

    #[test]
    fn leaves_of_unknown_kinds_count_for_the_root_and_name_nothing() {
        let mut log = leaves(3);
        log.push(br#"{"kind":"tier_change","node_id":"x"}"#.to_vec());
        log.push(revoked(1, T0 + 100));
        let tree = tree_of(&log);
        let mut follower = EntryFollower::resume([], None, MAX_FOLLOWED_ENTRIES);
        follow(&mut follower, &log, &tree, head(&tree, 5)).unwrap();
        let unknown = followed_entry(&log[3]);
        assert_eq!(
            (unknown.kind.as_str(), unknown.serial.as_str(), unknown.at),
            ("unknown", "", 0)
        );
        assert_eq!(follower.newest_at(), Some(T0 + 100));
        let known = followed_entry(&log[4]);
        assert_eq!(known.kind, "revoke_certificate");
        assert_eq!(known.serial, serial(1).to_hex());
        assert_eq!(known.node_id, node(1).to_string());
    }

    #[test]
    fn the_follower_stops_at_its_capacity() {
        let log = leaves(30);
        let tree = tree_of(&log);
        let mut follower = EntryFollower::resume([], None, 12);
        follow(&mut follower, &log, &tree, head(&tree, 30)).unwrap();
        assert_eq!(follower.size(), 12);
        assert!(follower.is_full(30));
        assert!(!follower.is_full(12));
        assert_eq!(follower.next_request(30), None);
    }

    #[test]
    fn a_certificate_is_due_once_the_log_moved_past_its_issuance_and_the_grace() {
        let not_before = Timestamp::from_unix_secs(T0);
        let grace = LOG_GRACE.as_secs();
        assert!(!is_due(not_before, None), "an empty log shows nothing");
        // The honest CA's own entry: at notBefore + 60 s, inside the grace.
        assert!(!is_due(not_before, Some(T0 + 60)));
        assert!(!is_due(not_before, Some(T0 + grace - 1)));
        assert!(is_due(not_before, Some(T0 + grace)));
        assert!(is_due(Timestamp::from_unix_secs(0), Some(grace)));
    }

    #[test]
    fn issuances_and_revocations_are_told_apart() {
        let kinds = |list: &[&str]| list.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
        assert!(issuance_is_logged(&kinds(&["enroll"])));
        assert!(issuance_is_logged(&kinds(&["revoke_node", "rotate"])));
        assert!(!issuance_is_logged(&kinds(&["revoke_certificate"])));
        assert!(!issuance_is_logged(&kinds(&[])));
        assert!(revocation_is_logged(&kinds(&["enroll", "revoke_node"])));
        assert!(revocation_is_logged(&kinds(&["revoke_certificate"])));
        assert!(!revocation_is_logged(&kinds(&[
            "enroll", "rotate", "unknown"
        ])));
    }

    #[test]
    fn the_queue_waits_for_the_log_and_is_bounded() {
        let mut queue = CertificateQueue::new(3);
        let at = |secs: u64| Timestamp::from_unix_secs(secs);
        queue.handle_certificate(node(1), &serial(1), at(T0));
        queue.handle_certificate(node(1), &serial(1), at(T0));
        queue.handle_certificate(node(2), &serial(2), at(T0 + 50));
        queue.handle_certificate(node(3), &serial(3), at(T0 + 500));
        assert_eq!(queue.len(), 3);
        // Full: a fourth is not queued, and counted.
        queue.handle_certificate(node(4), &serial(4), at(T0));
        assert_eq!((queue.len(), queue.dropped()), (3, 1));
        assert!(queue.take_due(None).is_empty());
        assert!(queue.take_due(Some(T0 + 89)).is_empty());
        let due = queue.take_due(Some(T0 + 140));
        assert_eq!(
            due.iter().map(|p| p.node_id).collect::<Vec<_>>(),
            [node(1), node(2)]
        );
        assert_eq!(queue.len(), 1);
        assert!(queue.take_due(Some(T0 + 140)).is_empty(), "taken once");
        queue.handle_certificate(node(4), &serial(4), at(T0));
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn overdue_certificates_are_handed_out_once_and_stay_queued_until_settled() {
        let mut queue = CertificateQueue::new(8);
        let at = |secs: u64| Timestamp::from_unix_secs(secs);
        queue.handle_certificate(node(1), &serial(1), at(T0));
        queue.handle_certificate(node(2), &serial(2), at(T0 + 100));
        let deadline = |not_before: Timestamp| not_before.as_unix_secs() + 200;
        assert!(queue.take_overdue(T0 + 199, deadline).is_empty());
        let overdue = queue.take_overdue(T0 + 200, deadline);
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].serial, serial(1));
        assert!(queue.take_overdue(T0 + 250, deadline).is_empty(), "once");
        assert_eq!(queue.len(), 2, "still waiting for the log");
        // A check that failed hands it out again.
        queue.unmark_overdue(&overdue);
        assert_eq!(queue.take_overdue(T0 + 250, deadline).len(), 1);
        // The log moves past it: judged the usual way, and forgotten.
        assert_eq!(queue.take_due(Some(T0 + 90)).len(), 1);
        assert!(queue.overdue.is_empty());
        assert_eq!(queue.take_overdue(T0 + 300, deadline).len(), 1);
        assert!(queue.settle(&serial(2)).is_some());
        assert_eq!((queue.len(), queue.overdue.len()), (0, 0));
    }

    /// The whole decision with a real tree: certificates seen on links against the entries
    /// the follower verified.
    #[test]
    fn logged_serials_pass_and_an_unlogged_one_is_found_once() {
        let mut log = leaves(4);
        log.push(issued(EntryKind::Rotate, 9, T0 + 200));
        // Its own entry does not make a certificate due (it is inside the grace): a later one
        // does.
        log.push(issued(EntryKind::Enroll, 10, T0 + 300));
        let tree = tree_of(&log);
        let mut follower = EntryFollower::resume([], None, MAX_FOLLOWED_ENTRIES);
        let mut kept: Vec<FollowedEntry> = Vec::new();
        while let Some(request) = follower.next_request(6) {
            let batch = follower
                .handle_entries(request, &answer(&log, request.0, request.1))
                .unwrap();
            batch.verify(head(&tree, 6), &[]).unwrap();
            kept.extend_from_slice(batch.entries());
            follower.commit(batch);
        }
        let kinds_of = |serial: &Serial| -> Vec<String> {
            kept.iter()
                .filter(|entry| entry.serial == serial.to_hex())
                .map(|entry| entry.kind.clone())
                .collect()
        };
        let mut queue = CertificateQueue::new(MAX_PENDING_CERTIFICATES);
        let at = Timestamp::from_unix_secs;
        // Node 1's logged certificate, node 9's logged rotation, and node 7's certificate the
        // CA issued without logging it (notBefore inside the log's time span).
        queue.handle_certificate(node(1), &serial(1), at(T0 + 10 - 60));
        queue.handle_certificate(node(9), &serial(9), at(T0 + 200 - 60));
        queue.handle_certificate(node(7), &serial(7), at(T0 + 20));
        // One whose issuance the log has not moved past (by the grace) is not judged yet.
        queue.handle_certificate(node(8), &serial(8), at(T0 + 250));
        let mut findings = Findings::default();
        for pending in queue.take_due(follower.newest_at()) {
            let logged = issuance_is_logged(&kinds_of(&pending.serial));
            findings.record(
                FindingKind::UnloggedCertificate,
                &pending.serial,
                Some(pending.node_id),
                pending.not_before,
                logged,
            );
        }
        assert_eq!(findings.certificates_checked, 3);
        assert_eq!(findings.unlogged_certificates, 1);
        let recent = findings.recent();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].kind, "unlogged_certificate");
        assert_eq!(recent[0].serial, serial(7).to_hex());
        assert_eq!(recent[0].node_id, Some(node(7).to_string()));
        assert_eq!(queue.len(), 1, "node 8 waits for the log");
        // The same serial seen again is checked again but reported once.
        assert!(!findings.record(
            FindingKind::UnloggedCertificate,
            &serial(7),
            Some(node(7)),
            at(T0),
            false
        ));
        assert_eq!(findings.unlogged_certificates, 1);
        // A revocation of a logged certificate that the log does not show is its own kind.
        assert!(findings.record(
            FindingKind::UnloggedRevocation,
            &serial(1),
            None,
            at(T0),
            revocation_is_logged(&kinds_of(&serial(1)))
        ));
        assert_eq!(findings.unlogged_revocations, 1);
        assert_eq!(findings.revocations_checked, 1);
    }

    #[test]
    fn a_revocation_by_node_id_waits_for_the_log_and_only_a_logged_one_passes() {
        let mut queue = NodeRevocationQueue::new(2);
        let learnt = Timestamp::from_unix_secs(T0);
        assert!(queue.handle_revocation(node(1), learnt, false));
        assert!(queue.handle_revocation(node(2), learnt, true));
        // Seen again (re-gossiped, or applied by a later CRL): queued once, applied wins.
        assert!(queue.handle_revocation(node(1), Timestamp::from_unix_secs(T0 + 50), true));
        assert!(!queue.handle_revocation(node(3), learnt, false));
        assert_eq!((queue.len(), queue.dropped), (2, 1));

        // The log has not moved past them and shows neither: both wait.
        let none = HashSet::new();
        assert!(queue.judge(Some(T0 + 89), &none).is_empty());
        assert!(queue.judge(None, &none).is_empty());
        // The log shows node 2's revocation: it passes at once, before the grace.
        let logged: HashSet<NodeId> = [node(2)].into();
        let verdicts = queue.judge(Some(T0 + 10), &logged);
        assert_eq!(
            verdicts,
            vec![NodeRevocationVerdict::Logged(PendingNodeRevocation {
                node_id: node(2),
                learnt,
                applied: true,
            })]
        );
        // Past the grace without an entry: unlogged, with its first time.
        let verdicts = queue.judge(Some(T0 + 90), &none);
        assert_eq!(
            verdicts,
            vec![NodeRevocationVerdict::Unlogged(PendingNodeRevocation {
                node_id: node(1),
                learnt,
                applied: true,
            })]
        );
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn only_a_revoke_node_entry_bans_a_node_by_id() {
        let kinds = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(node_revocation_is_logged(&kinds(&[
            "enroll",
            "revoke_node"
        ])));
        assert!(!node_revocation_is_logged(&kinds(&[
            "enroll",
            "revoke_certificate"
        ])));
        assert!(!node_revocation_is_logged(&kinds(&[])));
    }

    #[test]
    fn an_unlogged_revocation_by_node_id_is_found_once() {
        let mut findings = Findings::default();
        let learnt = Timestamp::from_unix_secs(T0);
        assert!(!findings.record_node_revocation(node(1), learnt, true));
        assert!(findings.record_node_revocation(node(2), learnt, false));
        assert!(!findings.record_node_revocation(node(2), learnt, false));
        assert_eq!(findings.revocations_checked, 3);
        assert_eq!(findings.unlogged_revocations, 1);
        let recent = findings.recent();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].kind, "unlogged_revocation");
        assert_eq!(recent[0].serial, "");
        assert_eq!(recent[0].node_id, Some(node(2).to_string()));
    }

    #[test]
    fn findings_shown_and_remembered_are_bounded() {
        let mut findings = Findings::default();
        let at = Timestamp::from_unix_secs(T0);
        for i in 0..(MAX_REPORTED + 10) {
            let serial = Serial::from_bytes(&(i as u64 + 1).to_be_bytes());
            assert!(findings.record(FindingKind::UnloggedCertificate, &serial, None, at, false));
        }
        assert_eq!(findings.recent().len(), MAX_FINDINGS_SHOWN);
        assert!(findings.reported.len() <= MAX_REPORTED);
        assert_eq!(
            findings.recent().last().unwrap().serial,
            Serial::from_bytes(&(MAX_REPORTED as u64 + 10).to_be_bytes()).to_hex()
        );
        assert_eq!(findings.unlogged_certificates, MAX_REPORTED as u64 + 10);
    }
}
