//! What the simulator remembers about each message, message frame and bundle, for reports and
//! for tests to assert on.

use std::collections::{BTreeMap, BTreeSet};

use ztmesh_core::{NodeId, Timestamp};
use ztmesh_dtn::BundleId;
use ztmesh_gossip::{MessageId, MessageKind};

use crate::FrameFate;

/// A gossip message published through the simulator.
#[derive(Debug, Clone)]
pub(crate) struct MessageRecord {
    pub(crate) origin: NodeId,
    pub(crate) kind: MessageKind,
    pub(crate) published_at: Timestamp,
    /// The node whose gossip core it was handed to (the origin, or the node injecting a
    /// CA-signed record).
    pub(crate) publisher: usize,
    /// Length of the COSE envelope.
    pub(crate) size: usize,
    /// First delivery per node, over all incarnations.
    pub(crate) first_delivery: BTreeMap<usize, Timestamp>,
    /// When the last node first delivered it.
    pub(crate) full_at: Option<Timestamp>,
    pub(crate) frames_sent: u64,
    pub(crate) frames_delivered: u64,
    pub(crate) bytes_sent: u64,
}

/// One gossip frame that carried a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageFrame {
    /// When the sender's core handed it out.
    pub sent_at: Timestamp,
    /// The sender.
    pub from: usize,
    /// The addressee.
    pub to: usize,
    /// The message it carried.
    pub id: MessageId,
    /// Its hop budget (0 for a pull answer or a last hop).
    pub hops_left: u8,
    /// What became of it.
    pub fate: FrameFate,
}

/// A bundle accepted by a node's router through [`crate::Simulation::send_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRecord {
    /// Its id.
    pub id: BundleId,
    /// The node that accepted it from its application.
    pub from: usize,
    /// The node it is addressed to.
    pub to: usize,
    /// Payload length.
    pub len: usize,
    /// When the router accepted it (and it was durable).
    pub accepted_at: Timestamp,
    /// When its lifetime ends everywhere.
    pub expires_at: Timestamp,
    /// Deliveries to the application at its destination (more than one is a bug).
    pub deliveries: u32,
    /// The first of them.
    pub delivered_at: Option<Timestamp>,
    /// Nodes that reported dropping data of it because its lifetime ended.
    pub expired_on: BTreeSet<usize>,
}
