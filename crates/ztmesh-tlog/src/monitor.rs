//! A monitor of one log's checkpoints: the part of a node that refuses to be shown two
//! different histories.
//!
//! [`CheckpointMonitor`] remembers the latest checkpoint it accepted and moves forward only
//! along verified consistency proofs. Every checkpoint, wherever it came from (the log itself,
//! or another node through gossip), goes through [`CheckpointMonitor::observe`]:
//!
//! 1. The note must be a checkpoint of the watched log, signed by the log key of the policy and
//!    cosigned by enough of its witnesses ([`crate::Policy::verify_checkpoint`]); a cosignature
//!    dated more than [`MAX_COSIGNATURE_SKEW_SECS`] after `now` does not count. Garbage is a
//!    [`MonitorError`]; a valid note short of the quorum is [`Observation::QuorumNotMet`] and
//!    changes nothing.
//! 2. Compared with the accepted head: the same head is [`Observation::Accepted`]; a smaller
//!    size is a rollback attempt, [`Observation::Stale`]; the same size with another root is a
//!    split view; a larger size is [`Observation::NeedsConsistency`]. The caller then fetches a
//!    consistency proof between the two sizes and hands it to
//!    [`CheckpointMonitor::handle_consistency`], which accepts the larger checkpoint or, if the
//!    proof fails, raises a split view.
//!
//! A split view ([`Observation::SplitView`]) is sticky: the monitor keeps both notes as evidence,
//! accepts nothing more, and answers every later valid checkpoint with the same evidence until
//! the operator acknowledges it ([`CheckpointMonitor::acknowledge_split_view`]); a monitor
//! resumed from a saved alarmed state is alarmed still. It must never accept a checkpoint that fails the policy, nor move its head except
//! along a verified proof; it never performs IO and never reads a clock (`now` is an argument).
//!
//! A monitor that restarts must not forget what it accepted, or a log rolled back while it was
//! down would look new to it: [`CheckpointMonitor::saved`] is what the caller persists after
//! every change, and [`CheckpointMonitor::resume`] starts a monitor again from it (the saved
//! head is verified against the policy once more; the alarm, its evidence and its count come
//! back as they were). Conflicts the caller finds outside the monitor (the log's entries do not
//! make the accepted root, the log itself serves an older head than it showed before) are
//! raised with [`CheckpointMonitor::raise_split_view`].
//!
//! Memory is bounded: one accepted head, one pending target (a larger checkpoint replaces a
//! smaller pending one) and one pair of evidence notes, each at most
//! [`MAX_CHECKPOINT_NOTE_LEN`] bytes.

use std::collections::BTreeSet;

use crate::checkpoint::{Checkpoint, CheckpointError, TreeHead};
use crate::merkle::{empty_root, verify_consistency, Hash};
use crate::note::{Note, NoteError};
use crate::policy::{Policy, PolicyError};

/// Largest checkpoint note a monitor looks at, in bytes. A checkpoint is three short lines; even
/// with the most signature lines a note may carry it stays well below this.
pub const MAX_CHECKPOINT_NOTE_LEN: usize = 16 * 1024;

/// How far in the future (after `now`) a cosignature timestamp may be and still count towards
/// the quorum: a witness cannot vouch for a checkpoint at a time that has not come yet.
pub const MAX_COSIGNATURE_SKEW_SECS: u64 = 600;

/// Why an observed note was refused before it could be compared with the accepted head. All
/// variants are faults of whoever produced or relayed the note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// The note is over [`MAX_CHECKPOINT_NOTE_LEN`] bytes; nothing was parsed.
    #[error("checkpoint note of {len} bytes exceeds the {MAX_CHECKPOINT_NOTE_LEN}-byte limit")]
    TooLarge {
        /// Length of the note.
        len: usize,
    },
    /// Not a signed note.
    #[error("not a signed note: {0}")]
    Note(NoteError),
    /// The note text is not a checkpoint.
    #[error("not a checkpoint: {0}")]
    Checkpoint(CheckpointError),
    /// A checkpoint of another log than the watched one.
    #[error("checkpoint of log {found:?}, but the monitor watches {watched:?}")]
    OtherLog {
        /// The checkpoint's origin.
        found: String,
        /// The watched origin (`None` when the policy names no log).
        watched: Option<String>,
    },
    /// A size-0 checkpoint whose root is not the empty-tree hash.
    #[error("a checkpoint of size 0 must carry the empty-tree root")]
    NonEmptyRootForEmptyTree,
    /// The log signature or a witness cosignature is missing or invalid.
    #[error("checkpoint refused by the policy: {0}")]
    Policy(PolicyError),
}

/// [`CheckpointMonitor::handle_consistency`] was given a proof for sizes the monitor is not
/// waiting for (it resolved or replaced that target in between): a caller fault. The proof is
/// ignored, never taken as evidence of a split view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no consistency proof is awaited from size {from_size} to size {to_size}")]
pub struct UnexpectedProof {
    /// The old size the proof was for.
    pub from_size: u64,
    /// The new size the proof was for.
    pub to_size: u64,
}

/// [`CheckpointMonitor::resume`] could not take the saved head: the saved state is damaged,
/// or the policy changed since it was saved. A local fault: the note was accepted once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The saved note is not a checkpoint of the watched log signed as the policy demands.
    #[error("the saved head is refused: {0}")]
    Refused(MonitorError),
    /// The saved note is validly signed by the log but its cosignatures no longer meet the
    /// policy's quorum.
    #[error("the saved head does not meet the witness quorum (counted: {cosigners:?})")]
    QuorumNotMet {
        /// Policy names of the witnesses whose cosignatures counted.
        cosigners: BTreeSet<String>,
    },
}

/// What a monitor keeps across restarts: written by [`CheckpointMonitor::saved`], read by
/// [`CheckpointMonitor::resume`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedMonitor {
    /// The note of the accepted head (full text with signatures).
    pub head: Option<String>,
    /// The split-view evidence, while alarmed.
    pub split_view: Option<(String, String)>,
    /// Split views detected over the monitor's whole life.
    pub split_view_alarms: u64,
}

/// What an observed checkpoint (or a consistency proof) meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The checkpoint is now the accepted head: the first one meeting the policy, the same as
    /// the accepted head, or a larger one whose consistency proof verified.
    Accepted {
        /// Its tree size.
        size: u64,
        /// Its root hash.
        root: Hash,
    },
    /// A larger checkpoint meeting the policy: fetch the consistency proof from `from.size` to
    /// `to.size` and hand it to [`CheckpointMonitor::handle_consistency`]. Until then it is the
    /// monitor's one pending target.
    NeedsConsistency {
        /// The accepted head.
        from: TreeHead,
        /// The pending target.
        to: TreeHead,
    },
    /// Validly signed by the log, but the witnesses that (validly and timely) cosigned it do
    /// not meet the quorum. Not accepted; nothing changed.
    QuorumNotMet {
        /// Policy names of the witnesses whose cosignatures counted.
        cosigners: BTreeSet<String>,
    },
    /// Smaller than the accepted head: a rollback attempt (or a stale relay). Not accepted,
    /// counted in [`MonitorStats::stale`].
    Stale {
        /// Its tree size.
        size: u64,
    },
    /// Two checkpoints meeting the policy that cannot both be true: the same size with
    /// different roots, or a larger one whose consistency proof failed. The monitor is now
    /// alarmed and keeps answering this until acknowledged.
    SplitView {
        /// The two notes (full text with signatures): the one held first, then the conflicting
        /// one.
        evidence: (String, String),
    },
}

/// Counters since the monitor was created (`split_view_alarms`: since it was first created,
/// across [`CheckpointMonitor::resume`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorStats {
    /// Times the accepted head moved (the first checkpoint included).
    pub accepted: u64,
    /// Valid checkpoints refused for want of a quorum.
    pub quorum_not_met: u64,
    /// Checkpoints smaller than the accepted head.
    pub stale: u64,
    /// Split views detected (the monitor went from calm to alarmed).
    pub split_view_alarms: u64,
}

/// A checkpoint that met the policy, with what the monitor keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    tree: TreeHead,
    /// The whole note as received (parsing is exact, so printing it back gives the same text).
    note: String,
    /// Witnesses whose cosignatures counted.
    cosigners: BTreeSet<String>,
}

/// Watches one log through its checkpoints; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct CheckpointMonitor {
    policy: Policy,
    /// The origin of the policy's first `log` line.
    origin: Option<String>,
    current: Option<Head>,
    /// A larger checkpoint waiting for its consistency proof; only ever set while `current` is.
    pending: Option<Head>,
    /// Set once, by the first split view; cleared only by an acknowledgement.
    split_view: Option<(String, String)>,
    stats: MonitorStats,
}

impl CheckpointMonitor {
    /// A monitor of the log named by the policy's first `log` line (the one a membership-log
    /// policy has), with nothing accepted yet. A policy without a `log` line makes every note
    /// [`MonitorError::OtherLog`].
    pub fn new(policy: Policy) -> Self {
        let origin = policy
            .logs()
            .first()
            .map(|log| log.verifier.name().to_owned());
        CheckpointMonitor {
            policy,
            origin,
            current: None,
            pending: None,
            split_view: None,
            stats: MonitorStats::default(),
        }
    }

    /// A monitor of the policy's log whose origin (key name) is `origin`, with nothing accepted
    /// yet; `None` when the policy has no such log.
    pub fn for_origin(policy: Policy, origin: &str) -> Option<Self> {
        if !policy
            .logs()
            .iter()
            .any(|log| log.verifier.name() == origin)
        {
            return None;
        }
        let mut monitor = CheckpointMonitor::new(policy);
        monitor.origin = Some(origin.to_owned());
        Some(monitor)
    }

    /// The watched log's origin.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The policy checkpoints are verified against.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The accepted head, if any.
    pub fn current(&self) -> Option<TreeHead> {
        self.current.as_ref().map(|head| head.tree)
    }

    /// The note of the accepted head.
    pub fn current_note(&self) -> Option<&str> {
        self.current.as_ref().map(|head| head.note.as_str())
    }

    /// Policy names of the witnesses whose cosignatures counted for the accepted head.
    pub fn current_cosigners(&self) -> Option<&BTreeSet<String>> {
        self.current.as_ref().map(|head| &head.cosigners)
    }

    /// The consistency proof still awaited, as `(from, to)`, if any.
    pub fn pending(&self) -> Option<(TreeHead, TreeHead)> {
        match (&self.current, &self.pending) {
            (Some(current), Some(pending)) => Some((current.tree, pending.tree)),
            _ => None,
        }
    }

    /// The split-view evidence, while alarmed.
    pub fn split_view(&self) -> Option<&(String, String)> {
        self.split_view.as_ref()
    }

    /// Counters since creation.
    pub fn stats(&self) -> MonitorStats {
        self.stats
    }

    /// The operator has seen the alarm: clear it and hand back the evidence. The accepted head
    /// stays the one held before the split view.
    pub fn acknowledge_split_view(&mut self) -> Option<(String, String)> {
        self.split_view.take()
    }

    /// What to persist so that [`CheckpointMonitor::resume`] can carry on after a restart.
    pub fn saved(&self) -> SavedMonitor {
        SavedMonitor {
            head: self.current.as_ref().map(|head| head.note.clone()),
            split_view: self.split_view.clone(),
            split_view_alarms: self.stats.split_view_alarms,
        }
    }

    /// This (fresh) monitor carrying on from `saved` at `now_secs`: the saved head becomes the
    /// accepted head again, once its note passes the policy as it did when it was accepted;
    /// the alarm, its evidence and the alarm count are restored as saved. Nothing is pending
    /// and the other counters start at 0. The saved evidence is taken as is: it is shown to
    /// the operator, never compared with anything.
    pub fn resume(mut self, saved: SavedMonitor, now_secs: u64) -> Result<Self, ResumeError> {
        self.current = match &saved.head {
            None => None,
            Some(note) => match self.verify(note, now_secs) {
                Ok(Ok(head)) => Some(head),
                Ok(Err(cosigners)) => return Err(ResumeError::QuorumNotMet { cosigners }),
                Err(error) => return Err(ResumeError::Refused(error)),
            },
        };
        self.pending = None;
        // An alarm counts at least once, whatever the saved count says.
        let alarms = saved
            .split_view_alarms
            .max(u64::from(saved.split_view.is_some()));
        self.split_view = saved.split_view;
        self.stats = MonitorStats {
            split_view_alarms: alarms,
            ..MonitorStats::default()
        };
        Ok(self)
    }

    /// Raises the split-view alarm for a conflict the caller found outside the monitor, with
    /// `held` (the accepted note) and `conflicting` (what contradicts it) as evidence: the
    /// log's entries do not make the accepted root, or the log itself served a checkpoint
    /// older than one it showed before. Already alarmed, the first evidence stays and nothing
    /// is counted again. Answers [`Observation::SplitView`] with the evidence in force.
    pub fn raise_split_view(&mut self, held: String, conflicting: String) -> Observation {
        if let Some(evidence) = &self.split_view {
            return Observation::SplitView {
                evidence: evidence.clone(),
            };
        }
        let evidence = (held, conflicting);
        self.pending = None;
        self.stats.split_view_alarms += 1;
        self.split_view = Some(evidence.clone());
        Observation::SplitView { evidence }
    }

    /// Parses and verifies a note against the watched log and the policy: the head it makes,
    /// or (inner `Err`) the cosigners that counted when they fall short of the quorum.
    fn verify(
        &self,
        note_text: &str,
        now_secs: u64,
    ) -> Result<Result<Head, BTreeSet<String>>, MonitorError> {
        if note_text.len() > MAX_CHECKPOINT_NOTE_LEN {
            return Err(MonitorError::TooLarge {
                len: note_text.len(),
            });
        }
        let note = Note::parse(note_text).map_err(MonitorError::Note)?;
        let checkpoint = Checkpoint::parse(note.text()).map_err(MonitorError::Checkpoint)?;
        if Some(checkpoint.origin()) != self.origin.as_deref() {
            return Err(MonitorError::OtherLog {
                found: checkpoint.origin().to_owned(),
                watched: self.origin.clone(),
            });
        }
        let tree = checkpoint.tree_head();
        if tree.size == 0 && tree.root != empty_root() {
            return Err(MonitorError::NonEmptyRootForEmptyTree);
        }
        let cosigners = match self.policy.verify_checkpoint(&note) {
            Ok(verified) => {
                let latest = now_secs.saturating_add(MAX_COSIGNATURE_SKEW_SECS);
                let timely: BTreeSet<String> = verified
                    .cosigners
                    .into_iter()
                    .filter(|(_, timestamp)| *timestamp <= latest)
                    .map(|(name, _)| name)
                    .collect();
                if !self.policy.evaluate(timely.iter().map(String::as_str)) {
                    return Ok(Err(timely));
                }
                timely
            }
            Err(PolicyError::QuorumNotMet { cosigners }) => return Ok(Err(cosigners)),
            Err(error) => return Err(MonitorError::Policy(error)),
        };
        Ok(Ok(Head {
            tree,
            note: note.to_string(),
            cosigners,
        }))
    }

    /// Looks at one checkpoint note (full text with signature lines) at `now_secs` (POSIX
    /// seconds); see the [module documentation](self) for what each answer means.
    pub fn observe(&mut self, note_text: &str, now_secs: u64) -> Result<Observation, MonitorError> {
        let observed = match self.verify(note_text, now_secs)? {
            Ok(head) => head,
            Err(cosigners) => return Ok(self.quorum_not_met(cosigners)),
        };
        let tree = observed.tree;

        if let Some(evidence) = &self.split_view {
            return Ok(Observation::SplitView {
                evidence: evidence.clone(),
            });
        }
        let Some(current) = &self.current else {
            return Ok(self.accept(observed));
        };
        let current_tree = current.tree;
        if tree.size < current_tree.size {
            self.stats.stale += 1;
            return Ok(Observation::Stale { size: tree.size });
        }
        if tree.size == current_tree.size {
            if tree.root == current_tree.root {
                return Ok(Observation::Accepted {
                    size: tree.size,
                    root: tree.root,
                });
            }
            let held = current.note.clone();
            return Ok(self.raise_split_view(held, observed.note));
        }
        if current_tree.size == 0 {
            // The empty tree is a prefix of every tree: there is nothing to prove.
            return Ok(self.accept(observed));
        }
        match &self.pending {
            Some(pending) if pending.tree.size == tree.size && pending.tree.root != tree.root => {
                let held = pending.note.clone();
                Ok(self.raise_split_view(held, observed.note))
            }
            // One target at a time: a smaller one than the pending target waits its turn (the
            // log will show it again, or it becomes stale once the larger one is accepted).
            Some(pending) if pending.tree.size >= tree.size => Ok(Observation::NeedsConsistency {
                from: current_tree,
                to: pending.tree,
            }),
            _ => {
                self.pending = Some(observed);
                Ok(Observation::NeedsConsistency {
                    from: current_tree,
                    to: tree,
                })
            }
        }
    }

    /// The consistency proof from `from` to `to` (as given by
    /// [`Observation::NeedsConsistency`]). A proof that verifies makes the pending checkpoint
    /// the accepted head; one that does not is a split view. A proof for any other pair of
    /// heads (the target was resolved or replaced meanwhile) is refused and changes nothing.
    pub fn handle_consistency(
        &mut self,
        from: TreeHead,
        to: TreeHead,
        proof: &[Hash],
    ) -> Result<Observation, UnexpectedProof> {
        let unexpected = UnexpectedProof {
            from_size: from.size,
            to_size: to.size,
        };
        if self.pending() != Some((from, to)) {
            return Err(unexpected);
        }
        let (Some(current), Some(pending)) = (&self.current, self.pending.take()) else {
            return Err(unexpected);
        };
        match verify_consistency(from.size, to.size, proof, &from.root, &to.root) {
            Ok(()) => Ok(self.accept(pending)),
            Err(_) => {
                let held = current.note.clone();
                Ok(self.raise_split_view(held, pending.note))
            }
        }
    }

    fn quorum_not_met(&mut self, cosigners: BTreeSet<String>) -> Observation {
        self.stats.quorum_not_met += 1;
        Observation::QuorumNotMet { cosigners }
    }

    fn accept(&mut self, head: Head) -> Observation {
        let accepted = Observation::Accepted {
            size: head.tree.size,
            root: head.tree.root,
        };
        if self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.tree.size <= head.tree.size)
        {
            self.pending = None;
        }
        self.stats.accepted += 1;
        self.current = Some(head);
        accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosignature::CosignatureSigner;
    use crate::merkle::MerkleTree;
    use crate::note::Signer;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    const ORIGIN: &str = "example.test/membership";
    const NOW: u64 = 1_800_000_000;

    fn log_key() -> Signer {
        Signer::new(ORIGIN, SigningKey::from_bytes(&[100; 32])).unwrap()
    }

    fn witness(i: u8) -> CosignatureSigner {
        CosignatureSigner::new(
            &format!("witness-{i}.test"),
            SigningKey::from_bytes(&[i; 32]),
        )
        .unwrap()
    }

    /// Two of the three witnesses A, B, C.
    fn policy() -> Policy {
        Policy::parse(&format!(
            "log {}\nwitness A {}\nwitness B {}\nwitness C {}\ngroup G 2 A B C\nquorum G\n",
            log_key().vkey(),
            witness(1).vkey(),
            witness(2).vkey(),
            witness(3).vkey(),
        ))
        .unwrap()
    }

    /// A log of `size` leaves named `<branch>-<i>`.
    fn tree(branch: &str, size: u64) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for i in 0..size {
            tree.append(format!("{branch}-{i}").as_bytes());
        }
        tree
    }

    /// The checkpoint of `tree` at `size`, signed by `signer` and cosigned at `at` by witnesses.
    fn note_by(signer: &Signer, tree: &MerkleTree, size: u64, witnesses: &[u8], at: u64) -> String {
        let checkpoint = Checkpoint::new(signer.name(), size, tree.root_at(size).unwrap()).unwrap();
        let mut note = Note::sign(&checkpoint.to_string(), &[signer]).unwrap();
        for &i in witnesses {
            note.add_signature(witness(i).cosign(note.text(), at).unwrap())
                .unwrap();
        }
        note.to_string()
    }

    fn note(tree: &MerkleTree, size: u64, witnesses: &[u8]) -> String {
        note_by(&log_key(), tree, size, witnesses, NOW)
    }

    fn head(tree: &MerkleTree, size: u64) -> TreeHead {
        TreeHead {
            size,
            root: tree.root_at(size).unwrap(),
        }
    }

    fn accepted(tree: &MerkleTree, size: u64) -> Observation {
        Observation::Accepted {
            size,
            root: tree.root_at(size).unwrap(),
        }
    }

    /// Observes `to` on a monitor holding `from`, and answers with the log's proof.
    fn grow(monitor: &mut CheckpointMonitor, tree: &MerkleTree, from: u64, to: u64) -> Observation {
        assert_eq!(
            monitor.observe(&note(tree, to, &[1, 2]), NOW).unwrap(),
            Observation::NeedsConsistency {
                from: monitor.current().unwrap(),
                to: head(tree, to)
            }
        );
        let proof = tree.consistency_proof(from, to).unwrap();
        monitor
            .handle_consistency(monitor.current().unwrap(), head(tree, to), &proof)
            .unwrap()
    }

    #[test]
    fn the_first_checkpoint_meeting_the_policy_is_accepted_and_seeing_it_again_changes_nothing() {
        let mut monitor = CheckpointMonitor::new(policy());
        assert_eq!(monitor.origin(), Some(ORIGIN));
        assert_eq!(monitor.current(), None);
        let log = tree("a", 5);
        let first = note(&log, 5, &[1, 3]);
        assert_eq!(monitor.observe(&first, NOW).unwrap(), accepted(&log, 5));
        assert_eq!(monitor.current(), Some(head(&log, 5)));
        assert_eq!(monitor.current_note(), Some(first.as_str()));
        assert_eq!(
            monitor.current_cosigners().unwrap(),
            &BTreeSet::from(["A".to_owned(), "C".to_owned()])
        );
        // The same head again, even with other cosigners: accepted, not moved.
        assert_eq!(
            monitor.observe(&note(&log, 5, &[2, 3]), NOW).unwrap(),
            accepted(&log, 5)
        );
        assert_eq!(monitor.current_note(), Some(first.as_str()));
        assert_eq!(
            monitor.stats(),
            MonitorStats {
                accepted: 1,
                ..MonitorStats::default()
            }
        );
    }

    #[test]
    fn consistent_growth_is_accepted_once_its_proof_verifies() {
        let log = tree("a", 40);
        let mut monitor = CheckpointMonitor::new(policy());
        monitor.observe(&note(&log, 3, &[1, 2]), NOW).unwrap();
        assert_eq!(grow(&mut monitor, &log, 3, 7), accepted(&log, 7));
        assert_eq!(monitor.pending(), None);
        // A power-of-two old size (whose root the proof leaves out) and a long jump.
        assert_eq!(grow(&mut monitor, &log, 7, 8), accepted(&log, 8));
        assert_eq!(grow(&mut monitor, &log, 8, 40), accepted(&log, 40));
        assert_eq!(monitor.current(), Some(head(&log, 40)));
        assert_eq!(monitor.stats().accepted, 4);
        assert_eq!(monitor.split_view(), None);
    }

    #[test]
    fn growth_from_the_empty_tree_needs_no_proof() {
        let log = tree("a", 4);
        let mut monitor = CheckpointMonitor::new(policy());
        assert_eq!(
            monitor.observe(&note(&log, 0, &[1, 2]), NOW).unwrap(),
            accepted(&log, 0)
        );
        assert_eq!(
            monitor.observe(&note(&log, 4, &[1, 2]), NOW).unwrap(),
            accepted(&log, 4)
        );
    }

    #[test]
    fn a_fork_of_the_same_size_is_a_split_view_and_the_alarm_sticks() {
        let (honest, fork) = (tree("a", 9), tree("b", 9));
        let mut monitor = CheckpointMonitor::new(policy());
        let held = note(&honest, 6, &[1, 2]);
        monitor.observe(&held, NOW).unwrap();
        let forged = note(&fork, 6, &[2, 3]);
        let evidence = (held.clone(), forged.clone());
        assert_eq!(
            monitor.observe(&forged, NOW).unwrap(),
            Observation::SplitView {
                evidence: evidence.clone()
            }
        );
        assert_eq!(monitor.split_view(), Some(&evidence));
        assert_eq!(monitor.stats().split_view_alarms, 1);

        // Alarmed: valid growth on either branch is answered with the same evidence, nothing is
        // accepted and the alarm is not counted again.
        for next in [note(&honest, 9, &[1, 2]), note(&fork, 9, &[1, 2]), held] {
            assert_eq!(
                monitor.observe(&next, NOW).unwrap(),
                Observation::SplitView {
                    evidence: evidence.clone()
                }
            );
        }
        assert_eq!(monitor.current(), Some(head(&honest, 6)));
        assert_eq!(monitor.pending(), None);
        assert_eq!(monitor.stats().split_view_alarms, 1);
        // What does not meet the policy is still refused as such.
        assert!(matches!(
            monitor.observe(&note(&fork, 9, &[1]), NOW),
            Ok(Observation::QuorumNotMet { .. })
        ));

        // The operator acknowledges: the old head stays, and the fork alarms again.
        assert_eq!(monitor.acknowledge_split_view(), Some(evidence));
        assert_eq!(monitor.split_view(), None);
        assert!(matches!(
            monitor.observe(&forged, NOW),
            Ok(Observation::SplitView { .. })
        ));
        assert_eq!(monitor.stats().split_view_alarms, 2);
    }

    #[test]
    fn a_successor_whose_consistency_proof_fails_is_a_split_view() {
        let (honest, fork) = (tree("a", 12), tree("b", 12));
        let mut monitor = CheckpointMonitor::new(policy());
        let held = note(&honest, 5, &[1, 2]);
        monitor.observe(&held, NOW).unwrap();
        let successor = note(&fork, 12, &[1, 3]);
        assert_eq!(
            monitor.observe(&successor, NOW).unwrap(),
            Observation::NeedsConsistency {
                from: head(&honest, 5),
                to: head(&fork, 12)
            }
        );
        // The fork's own proof shows its own prefix, not ours.
        let proof = fork.consistency_proof(5, 12).unwrap();
        assert_eq!(
            monitor
                .handle_consistency(head(&honest, 5), head(&fork, 12), &proof)
                .unwrap(),
            Observation::SplitView {
                evidence: (held, successor)
            }
        );
        assert_eq!(monitor.current(), Some(head(&honest, 5)));
        assert_eq!(monitor.stats().split_view_alarms, 1);
    }

    #[test]
    fn a_garbage_proof_is_a_split_view() {
        let log = tree("a", 12);
        for proof in [
            vec![],
            vec![Hash::from_bytes([7; 32]); 3],
            vec![Hash::from_bytes([7; 32]); 65],
        ] {
            let mut monitor = CheckpointMonitor::new(policy());
            monitor.observe(&note(&log, 5, &[1, 2]), NOW).unwrap();
            monitor.observe(&note(&log, 12, &[1, 2]), NOW).unwrap();
            assert!(matches!(
                monitor.handle_consistency(head(&log, 5), head(&log, 12), &proof),
                Ok(Observation::SplitView { .. })
            ));
        }
    }

    #[test]
    fn a_checkpoint_without_quorum_changes_nothing() {
        let log = tree("a", 9);
        let mut monitor = CheckpointMonitor::new(policy());
        assert_eq!(
            monitor.observe(&note(&log, 4, &[2]), NOW).unwrap(),
            Observation::QuorumNotMet {
                cosigners: BTreeSet::from(["B".to_owned()])
            }
        );
        assert_eq!(monitor.current(), None);
        monitor.observe(&note(&log, 4, &[1, 2]), NOW).unwrap();
        // Neither a larger one nor a fork counts without the quorum.
        assert!(matches!(
            monitor.observe(&note(&log, 9, &[3]), NOW),
            Ok(Observation::QuorumNotMet { .. })
        ));
        assert!(matches!(
            monitor.observe(&note(&tree("b", 4), 4, &[]), NOW),
            Ok(Observation::QuorumNotMet { .. })
        ));
        assert_eq!(monitor.current(), Some(head(&log, 4)));
        assert_eq!(monitor.pending(), None);
        assert_eq!(monitor.split_view(), None);
        assert_eq!(monitor.stats().quorum_not_met, 3);
    }

    #[test]
    fn cosignatures_from_the_future_do_not_count() {
        let log = tree("a", 3);
        let mut monitor = CheckpointMonitor::new(policy());
        let early = note_by(
            &log_key(),
            &log,
            3,
            &[1, 2],
            NOW + MAX_COSIGNATURE_SKEW_SECS + 1,
        );
        assert_eq!(
            monitor.observe(&early, NOW).unwrap(),
            Observation::QuorumNotMet {
                cosigners: BTreeSet::new()
            }
        );
        let in_skew = note_by(
            &log_key(),
            &log,
            3,
            &[1, 2],
            NOW + MAX_COSIGNATURE_SKEW_SECS,
        );
        assert_eq!(monitor.observe(&in_skew, NOW).unwrap(), accepted(&log, 3));
    }

    #[test]
    fn a_rollback_is_stale_and_counted() {
        let log = tree("a", 10);
        let mut monitor = CheckpointMonitor::new(policy());
        monitor.observe(&note(&log, 10, &[1, 2]), NOW).unwrap();
        assert_eq!(
            monitor.observe(&note(&log, 3, &[1, 2]), NOW).unwrap(),
            Observation::Stale { size: 3 }
        );
        // Even from another history: smaller is stale, not compared.
        assert_eq!(
            monitor
                .observe(&note(&tree("b", 9), 9, &[1, 2]), NOW)
                .unwrap(),
            Observation::Stale { size: 9 }
        );
        assert_eq!(monitor.current(), Some(head(&log, 10)));
        assert_eq!(monitor.stats().stale, 2);
    }

    #[test]
    fn one_pending_target_at_a_time() {
        let log = tree("a", 30);
        let mut monitor = CheckpointMonitor::new(policy());
        monitor.observe(&note(&log, 4, &[1, 2]), NOW).unwrap();
        monitor.observe(&note(&log, 10, &[1, 2]), NOW).unwrap();
        assert_eq!(monitor.pending(), Some((head(&log, 4), head(&log, 10))));
        // Larger replaces the pending target; smaller (or the same) points back at it.
        monitor.observe(&note(&log, 20, &[1, 2]), NOW).unwrap();
        assert_eq!(monitor.pending(), Some((head(&log, 4), head(&log, 20))));
        for size in [12, 20] {
            assert_eq!(
                monitor.observe(&note(&log, size, &[2, 3]), NOW).unwrap(),
                Observation::NeedsConsistency {
                    from: head(&log, 4),
                    to: head(&log, 20)
                }
            );
        }
        // The proof for the replaced target is refused as unexpected, never a split view.
        let stale_proof = log.consistency_proof(4, 10).unwrap();
        assert_eq!(
            monitor.handle_consistency(head(&log, 4), head(&log, 10), &stale_proof),
            Err(UnexpectedProof {
                from_size: 4,
                to_size: 10
            })
        );
        assert_eq!(monitor.split_view(), None);
        let proof = log.consistency_proof(4, 20).unwrap();
        assert_eq!(
            monitor
                .handle_consistency(head(&log, 4), head(&log, 20), &proof)
                .unwrap(),
            accepted(&log, 20)
        );
        // Nothing awaited any more.
        assert!(monitor
            .handle_consistency(head(&log, 4), head(&log, 20), &proof)
            .is_err());
    }

    #[test]
    fn two_successors_of_the_same_size_while_a_proof_is_awaited_are_a_split_view() {
        let (honest, fork) = (tree("a", 8), tree("b", 8));
        let mut monitor = CheckpointMonitor::new(policy());
        monitor.observe(&note(&honest, 2, &[1, 2]), NOW).unwrap();
        let first = note(&honest, 8, &[1, 2]);
        let second = note(&fork, 8, &[1, 3]);
        monitor.observe(&first, NOW).unwrap();
        assert_eq!(
            monitor.observe(&second, NOW).unwrap(),
            Observation::SplitView {
                evidence: (first, second)
            }
        );
        assert_eq!(monitor.pending(), None);
    }

    #[test]
    fn notes_that_are_not_valid_checkpoints_of_the_log_are_typed_errors() {
        let log = tree("a", 3);
        let mut monitor = CheckpointMonitor::new(policy());
        let good = note(&log, 3, &[1, 2]);

        assert_eq!(
            monitor.observe(&"x".repeat(MAX_CHECKPOINT_NOTE_LEN + 1), NOW),
            Err(MonitorError::TooLarge {
                len: MAX_CHECKPOINT_NOTE_LEN + 1
            })
        );
        assert!(matches!(
            monitor.observe("hello\n", NOW),
            Err(MonitorError::Note(NoteError::NoSignatureBlock))
        ));
        let not_a_checkpoint = Note::sign("hello\n", &[&log_key()]).unwrap().to_string();
        assert!(matches!(
            monitor.observe(&not_a_checkpoint, NOW),
            Err(MonitorError::Checkpoint(_))
        ));
        let stranger = Signer::new("other.test/log", SigningKey::from_bytes(&[5; 32])).unwrap();
        assert_eq!(
            monitor.observe(&note_by(&stranger, &log, 3, &[1, 2], NOW), NOW),
            Err(MonitorError::OtherLog {
                found: "other.test/log".into(),
                watched: Some(ORIGIN.into())
            })
        );
        // The right origin under another key: not the log's signature.
        let impostor = Signer::new(ORIGIN, SigningKey::from_bytes(&[6; 32])).unwrap();
        assert_eq!(
            monitor.observe(&note_by(&impostor, &log, 3, &[1, 2], NOW), NOW),
            Err(MonitorError::Policy(PolicyError::LogSignature(
                NoteError::NoTrustedSignature
            )))
        );
        // A tampered cosignature from a policy witness refuses the whole note.
        let mut tampered = Note::parse(&good).unwrap();
        let line = witness(3).cosign(tampered.text(), NOW).unwrap();
        let mut bytes = line.signature().to_vec();
        bytes[20] ^= 1;
        tampered
            .add_signature(
                crate::note::NoteSignature::new(line.name(), line.key_id(), bytes).unwrap(),
            )
            .unwrap();
        assert!(matches!(
            monitor.observe(&tampered.to_string(), NOW),
            Err(MonitorError::Policy(PolicyError::BadCosignature { .. }))
        ));
        // Size 0 must carry the empty root.
        let checkpoint = Checkpoint::new(ORIGIN, 0, Hash::from_bytes([1; 32])).unwrap();
        let empty = Note::sign(&checkpoint.to_string(), &[&log_key()])
            .unwrap()
            .to_string();
        assert_eq!(
            monitor.observe(&empty, NOW),
            Err(MonitorError::NonEmptyRootForEmptyTree)
        );
        // None of that changed anything.
        assert_eq!(monitor.current(), None);
        assert_eq!(monitor.stats(), MonitorStats::default());
        assert_eq!(monitor.observe(&good, NOW).unwrap(), accepted(&log, 3));

        // A monitor bound to a log further down the policy.
        let other = Signer::new("other.test/log", SigningKey::from_bytes(&[5; 32])).unwrap();
        let two_logs = Policy::parse(&format!("log {}\n{}", other.vkey(), policy())).unwrap();
        assert_eq!(
            CheckpointMonitor::new(two_logs.clone()).origin(),
            Some("other.test/log")
        );
        let mut second = CheckpointMonitor::for_origin(two_logs.clone(), ORIGIN).unwrap();
        assert_eq!(second.observe(&good, NOW).unwrap(), accepted(&log, 3));
        assert!(CheckpointMonitor::for_origin(two_logs, "nowhere.test/log").is_none());

        // A policy without a log line watches nothing.
        let mut blind = CheckpointMonitor::new(Policy::parse("quorum none\n").unwrap());
        assert_eq!(blind.origin(), None);
        assert!(matches!(
            blind.observe(&good, NOW),
            Err(MonitorError::OtherLog { watched: None, .. })
        ));
    }

    /// A monitor restarted from what `monitor` saved.
    fn restarted(monitor: &CheckpointMonitor) -> CheckpointMonitor {
        CheckpointMonitor::new(policy())
            .resume(monitor.saved(), NOW)
            .unwrap()
    }

    #[test]
    fn a_resumed_monitor_holds_its_head_against_rollbacks_forks_and_inconsistent_successors() {
        let (honest, fork) = (tree("a", 20), tree("b", 20));
        let mut before = CheckpointMonitor::new(policy());
        before.observe(&note(&honest, 4, &[1, 2]), NOW).unwrap();
        assert_eq!(grow(&mut before, &honest, 4, 10), accepted(&honest, 10));
        let held = before.current_note().unwrap().to_owned();

        let mut monitor = restarted(&before);
        assert_eq!(monitor.current(), Some(head(&honest, 10)));
        assert_eq!(monitor.current_note(), Some(held.as_str()));
        assert_eq!(
            monitor.current_cosigners().unwrap(),
            &BTreeSet::from(["A".to_owned(), "B".to_owned()])
        );
        assert_eq!(monitor.pending(), None);
        assert_eq!(monitor.stats(), MonitorStats::default());
        // The older checkpoint it accepted before is stale now, from any history.
        assert_eq!(
            monitor.observe(&note(&honest, 4, &[1, 2]), NOW).unwrap(),
            Observation::Stale { size: 4 }
        );
        assert_eq!(
            monitor.observe(&note(&fork, 9, &[1, 2]), NOW).unwrap(),
            Observation::Stale { size: 9 }
        );
        // A larger one from another history fails its proof.
        let mut inconsistent = restarted(&before);
        let successor = note(&fork, 14, &[1, 3]);
        assert!(matches!(
            inconsistent.observe(&successor, NOW).unwrap(),
            Observation::NeedsConsistency { .. }
        ));
        let proof = fork.consistency_proof(10, 14).unwrap();
        assert_eq!(
            inconsistent
                .handle_consistency(head(&honest, 10), head(&fork, 14), &proof)
                .unwrap(),
            Observation::SplitView {
                evidence: (held.clone(), successor)
            }
        );
        // The same size with another root is a split view.
        let forged = note(&fork, 10, &[2, 3]);
        assert_eq!(
            monitor.observe(&forged, NOW).unwrap(),
            Observation::SplitView {
                evidence: (held, forged)
            }
        );
        // The honest log still grows from the resumed head on a calm monitor.
        let mut calm = restarted(&before);
        assert_eq!(grow(&mut calm, &honest, 10, 20), accepted(&honest, 20));
    }

    #[test]
    fn an_alarm_survives_a_restart_with_its_evidence_and_count() {
        let (honest, fork) = (tree("a", 9), tree("b", 9));
        let mut before = CheckpointMonitor::new(policy());
        before.observe(&note(&honest, 6, &[1, 2]), NOW).unwrap();
        before.observe(&note(&fork, 6, &[1, 2]), NOW).unwrap();
        let evidence = before.split_view().unwrap().clone();
        let saved = before.saved();
        assert_eq!(saved.split_view_alarms, 1);

        let mut monitor = restarted(&before);
        assert_eq!(monitor.split_view(), Some(&evidence));
        assert_eq!(monitor.stats().split_view_alarms, 1);
        assert_eq!(monitor.current(), Some(head(&honest, 6)));
        // Still alarmed: honest growth is not accepted, and nothing is counted again.
        assert_eq!(
            monitor.observe(&note(&honest, 9, &[1, 2]), NOW).unwrap(),
            Observation::SplitView {
                evidence: evidence.clone()
            }
        );
        assert_eq!(monitor.stats().split_view_alarms, 1);
        // Acknowledged, saved and restarted: calm, with the count kept.
        monitor.acknowledge_split_view();
        let calm = restarted(&monitor);
        assert_eq!(calm.split_view(), None);
        assert_eq!(calm.stats().split_view_alarms, 1);
        // A saved alarm with a lost count still counts once.
        let repaired = CheckpointMonitor::new(policy())
            .resume(
                SavedMonitor {
                    split_view_alarms: 0,
                    ..saved
                },
                NOW,
            )
            .unwrap();
        assert_eq!(repaired.stats().split_view_alarms, 1);
    }

    #[test]
    fn a_damaged_or_no_longer_acceptable_saved_head_is_refused() {
        let log = tree("a", 5);
        let fresh = || CheckpointMonitor::new(policy());
        let saved = |head: String| SavedMonitor {
            head: Some(head),
            ..SavedMonitor::default()
        };
        // Nothing saved: a fresh monitor.
        let empty = fresh().resume(SavedMonitor::default(), NOW).unwrap();
        assert_eq!(empty.current(), None);
        assert_eq!(empty.saved(), SavedMonitor::default());
        assert!(matches!(
            fresh().resume(saved("garbage".into()), NOW),
            Err(ResumeError::Refused(MonitorError::Note(_)))
        ));
        assert_eq!(
            fresh().resume(saved(note(&log, 5, &[3])), NOW).unwrap_err(),
            ResumeError::QuorumNotMet {
                cosigners: BTreeSet::from(["C".to_owned()])
            }
        );
        let stranger = Signer::new("other.test/log", SigningKey::from_bytes(&[5; 32])).unwrap();
        assert!(matches!(
            fresh().resume(saved(note_by(&stranger, &log, 5, &[1, 2], NOW)), NOW),
            Err(ResumeError::Refused(MonitorError::OtherLog { .. }))
        ));
        // Cosignatures dated after the restart's clock do not count.
        let future = note_by(&log_key(), &log, 5, &[1, 2], NOW + 10_000);
        assert!(matches!(
            fresh().resume(saved(future), NOW),
            Err(ResumeError::QuorumNotMet { .. })
        ));
    }

    #[test]
    fn an_alarm_raised_by_the_caller_is_sticky_and_counted_once() {
        let log = tree("a", 8);
        let mut monitor = CheckpointMonitor::new(policy());
        let held = note(&log, 8, &[1, 2]);
        monitor.observe(&held, NOW).unwrap();
        monitor.observe(&note(&log, 8, &[1, 2]), NOW).unwrap();
        let raised = monitor.raise_split_view(held.clone(), "entries 0..8 hash elsewhere".into());
        let evidence = (held.clone(), "entries 0..8 hash elsewhere".to_owned());
        assert_eq!(
            raised,
            Observation::SplitView {
                evidence: evidence.clone()
            }
        );
        // A second report keeps the first evidence and is not counted.
        assert_eq!(
            monitor.raise_split_view(held.clone(), "another".into()),
            Observation::SplitView {
                evidence: evidence.clone()
            }
        );
        assert_eq!(monitor.stats().split_view_alarms, 1);
        assert_eq!(
            monitor.observe(&held, NOW).unwrap(),
            Observation::SplitView { evidence }
        );
        assert_eq!(monitor.current(), Some(head(&log, 8)));
    }

    proptest! {
        #[test]
        fn garbage_never_panics_nor_changes_the_state(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut monitor = CheckpointMonitor::new(policy());
            let log = tree("a", 3);
            monitor.observe(&note(&log, 3, &[1, 2]), NOW).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            prop_assert!(monitor.observe(&text, NOW).is_err());
            prop_assert_eq!(monitor.current(), Some(head(&log, 3)));
            prop_assert_eq!(monitor.stats().accepted, 1);
        }

        #[test]
        fn note_shaped_garbage_never_panics(
            lines in proptest::collection::vec("[a-z0-9/+= .]{0,50}", 0..5),
            signature in "(\u{2014} )?[a-z./]{0,25} ?[A-Za-z0-9+/=]{0,100}",
        ) {
            let mut monitor = CheckpointMonitor::new(policy());
            let text = format!("{ORIGIN}\n{}\n\n{signature}\n", lines.join("\n"));
            let _ = monitor.observe(&text, NOW);
            prop_assert_eq!(monitor.current(), None);
        }

        /// Whatever order an honest log's checkpoints arrive in, with proofs served by the log:
        /// never an alarm, and the accepted size never goes down.
        #[test]
        fn an_honest_log_never_alarms_and_never_rolls_back(
            sizes in proptest::collection::vec(1u64..64, 1..20),
        ) {
            let log = tree("a", 64);
            let mut monitor = CheckpointMonitor::new(policy());
            let mut largest_accepted = 0;
            for size in sizes {
                let mut observation = monitor.observe(&note(&log, size, &[1, 3]), NOW).unwrap();
                if let Observation::NeedsConsistency { from, to } = observation {
                    let proof = log.consistency_proof(from.size, to.size).unwrap();
                    observation = monitor.handle_consistency(from, to, &proof).unwrap();
                }
                let is_split_view = matches!(observation, Observation::SplitView { .. });
                prop_assert!(!is_split_view);
                let current = monitor.current().unwrap();
                prop_assert!(current.size >= largest_accepted);
                prop_assert_eq!(current, head(&log, current.size));
                largest_accepted = current.size;
            }
            prop_assert_eq!(monitor.stats().split_view_alarms, 0);
        }

        /// A second history that departs from the first before the accepted size is always
        /// caught once both are seen at sizes the monitor must compare.
        #[test]
        fn a_fork_is_always_caught(accepted_size in 1u64..20, fork_size in 1u64..40) {
            let honest = tree("a", 40);
            // The fork shares no leaf with the honest log.
            let fork = tree("b", 40);
            let mut monitor = CheckpointMonitor::new(policy());
            monitor.observe(&note(&honest, accepted_size, &[1, 2]), NOW).unwrap();
            let mut observation = monitor.observe(&note(&fork, fork_size, &[2, 3]), NOW).unwrap();
            if let Observation::NeedsConsistency { from, to } = observation {
                let proof = fork.consistency_proof(from.size, to.size).unwrap();
                observation = monitor.handle_consistency(from, to, &proof).unwrap();
            }
            if fork_size >= accepted_size {
                let is_split_view = matches!(observation, Observation::SplitView { .. });
                prop_assert!(is_split_view);
            } else {
                prop_assert_eq!(observation, Observation::Stale { size: fork_size });
            }
            prop_assert_eq!(monitor.current(), Some(head(&honest, accepted_size)));
        }
    }
}
