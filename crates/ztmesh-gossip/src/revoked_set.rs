//! The origins this node refuses outright, bounded.

use std::collections::{BTreeSet, VecDeque};

use ztmesh_core::NodeId;

/// Revoked origins, checked before any key lookup or signature work.
///
/// This is a fast local filter, not the source of truth: the runtime's revocation state (which
/// [`crate::Membership`] consults) is. When full, the oldest revocation is forgotten first; by
/// then that node's short-lived certificates have long expired, so membership refuses it anyway.
#[derive(Debug)]
pub(crate) struct RevokedSet {
    capacity: usize,
    members: BTreeSet<NodeId>,
    order: VecDeque<NodeId>,
}

impl RevokedSet {
    pub(crate) fn new(capacity: usize) -> Self {
        RevokedSet {
            capacity,
            members: BTreeSet::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn contains(&self, node: &NodeId) -> bool {
        self.members.contains(node)
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Adds `node`; returns how many older entries were forgotten to make room.
    pub(crate) fn insert(&mut self, node: NodeId) -> usize {
        if !self.members.insert(node) {
            return 0;
        }
        self.order.push_back(node);
        let mut evicted = 0;
        while self.members.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.members.remove(&oldest);
            evicted += 1;
        }
        evicted
    }
}
