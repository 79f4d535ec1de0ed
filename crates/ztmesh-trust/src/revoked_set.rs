//! The node ids this node knows to be revoked. The runtime persists it (each revocation as it
//! is learnt) and hands it back to [`crate::TrustBook::with_revoked`] on start, so a restart
//! never forgets a revocation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ztmesh_core::{NodeId, Timestamp};

/// Revoked node ids with the time each revocation was learnt.
///
/// Revocation only removes trust, so it is accepted at once and never undone. The set is bounded
/// by the book's policy; when full, the oldest revocation is forgotten first: by then the revoked
/// node's short-lived certificate (24 h by default) has long expired, which keeps it Untrusted
/// on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RevokedSet {
    entries: BTreeMap<NodeId, Timestamp>,
}

impl RevokedSet {
    /// An empty set.
    pub fn new() -> Self {
        RevokedSet::default()
    }

    /// Whether `node` is revoked.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.entries.contains_key(node)
    }

    /// When `node`'s revocation was learnt.
    pub fn revoked_at(&self, node: &NodeId) -> Option<Timestamp> {
        self.entries.get(node).copied()
    }

    /// Number of revoked nodes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Revoked nodes in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Timestamp)> {
        self.entries.iter()
    }

    /// Takes `node` out of the set, before a trust book is made from it: for a persisted
    /// revocation the runtime could not justify at start (it decides; the book never lifts a
    /// revocation). Returns when it had been learnt, if it was in the set.
    pub fn remove(&mut self, node: &NodeId) -> Option<Timestamp> {
        self.entries.remove(node)
    }

    /// Adds `node` (keeping the first revocation time), evicting the oldest entries beyond
    /// `max`. Returns how many entries were evicted.
    pub(crate) fn insert(&mut self, node: NodeId, now: Timestamp, max: usize) -> usize {
        self.entries.entry(node).or_insert(now);
        let mut evicted = 0;
        while self.entries.len() > max.max(1) {
            let oldest = self
                .entries
                .iter()
                .filter(|(id, _)| **id != node)
                .min_by_key(|(id, at)| (**at, **id))
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    self.entries.remove(&id);
                    evicted += 1;
                }
                None => break,
            }
        }
        evicted
    }
}

/// A set read back from the runtime's store; a node listed twice keeps its earliest time. Not
/// bounded here: [`crate::TrustBook::with_revoked`] refuses a set larger than its policy allows.
impl FromIterator<(NodeId, Timestamp)> for RevokedSet {
    fn from_iter<I: IntoIterator<Item = (NodeId, Timestamp)>>(entries: I) -> Self {
        let mut set = RevokedSet::new();
        for (node, at) in entries {
            set.entries
                .entry(node)
                .and_modify(|first| *first = (*first).min(at))
                .or_insert(at);
        }
        set
    }
}
