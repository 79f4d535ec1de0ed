//! What can go wrong: [`SimError`] when the caller asks for something impossible, and
//! [`Violation`] when the simulated mesh breaks an invariant the cores promise.

use std::fmt;

use ztmesh_core::{NodeId, Timestamp};
use ztmesh_dtn::{BundleId, DtnError};
use ztmesh_gossip::kinds::BodyError;
use ztmesh_gossip::{GossipError, MessageId};

/// Why a call on the simulator failed. Nothing happened when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration cannot work.
    #[error("invalid simulation config: {0}")]
    Config(String),
    /// No node has this index.
    #[error("no node {0}")]
    NoSuchNode(usize),
    /// The node is crashed; restart it first.
    #[error("node {0} is crashed")]
    Crashed(usize),
    /// The node is running; only a crashed node can restart.
    #[error("node {0} is running")]
    Running(usize),
    /// A node cannot link to itself.
    #[error("node {0} cannot link to itself")]
    SelfLink(usize),
    /// No link was ever added between these nodes.
    #[error("no link between nodes {0} and {1}")]
    NoSuchLink(usize, usize),
    /// `run_until` reached its deadline before its condition held.
    #[error("condition not met after {waited_ms} ms of virtual time")]
    Deadline {
        /// Virtual time that ran.
        waited_ms: u64,
    },
    /// The gossip core refused the call.
    #[error("gossip: {0}")]
    Gossip(#[from] GossipError),
    /// The DTN core refused the call.
    #[error("dtn: {0}")]
    Dtn(#[from] DtnError),
    /// A message body does not fit its kind's schema.
    #[error("gossip body: {0}")]
    Body(#[from] BodyError),
}

/// An invariant the simulated mesh broke: what the cores (or the runtime logic the simulator
/// plays) promise never to do. Each one is a bug somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A gossip core delivered one message twice in one incarnation of a node.
    DuplicateGossipDelivery {
        /// The node.
        node: usize,
        /// The message.
        id: MessageId,
        /// When.
        at: Timestamp,
    },
    /// A node delivered a message from an origin it knows is revoked.
    DeliveredFromRevoked {
        /// The node.
        node: usize,
        /// The message.
        id: MessageId,
        /// Its revoked origin.
        origin: NodeId,
    },
    /// A node sent a message from an origin it knows is revoked.
    ForwardedFromRevoked {
        /// The sender.
        node: usize,
        /// The receiver.
        to: usize,
        /// The message.
        id: MessageId,
        /// Its revoked origin.
        origin: NodeId,
    },
    /// A router delivered one bundle twice to the application, across all incarnations.
    DuplicateBundleDelivery {
        /// The node.
        node: usize,
        /// The bundle.
        id: BundleId,
        /// When.
        at: Timestamp,
    },
    /// A router delivered a bundle addressed to another node.
    MisdeliveredBundle {
        /// The node.
        node: usize,
        /// The bundle.
        id: BundleId,
    },
    /// A core failed an input it should have handled (a frame from an honest peer, a
    /// timeout, a receipt, a local publish the runtime makes).
    CoreFailed {
        /// The node.
        node: usize,
        /// Which input.
        input: &'static str,
        /// The error, as text.
        error: String,
    },
    /// A core asked to be woken at or before the instant it was just woken for, which would
    /// make a runtime spin.
    TimerStuck {
        /// The node.
        node: usize,
        /// When.
        at: Timestamp,
    },
    /// A core sent a frame to a node that does not exist.
    UnknownPeer {
        /// The sender.
        node: usize,
        /// The addressee.
        to: NodeId,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::DuplicateGossipDelivery { node, id, at } => {
                write!(
                    f,
                    "node {node} delivered gossip {} twice (at {at})",
                    id.short()
                )
            }
            Violation::DeliveredFromRevoked { node, id, origin } => write!(
                f,
                "node {node} delivered gossip {} from revoked origin {origin}",
                id.short()
            ),
            Violation::ForwardedFromRevoked {
                node,
                to,
                id,
                origin,
            } => write!(
                f,
                "node {node} sent gossip {} from revoked origin {origin} to node {to}",
                id.short()
            ),
            Violation::DuplicateBundleDelivery { node, id, at } => {
                write!(f, "node {node} delivered bundle {id} twice (at {at})")
            }
            Violation::MisdeliveredBundle { node, id } => {
                write!(f, "node {node} delivered bundle {id} addressed elsewhere")
            }
            Violation::CoreFailed { node, input, error } => {
                write!(f, "node {node} failed {input}: {error}")
            }
            Violation::TimerStuck { node, at } => {
                write!(f, "node {node} asked to be woken again at or before {at}")
            }
            Violation::UnknownPeer { node, to } => {
                write!(f, "node {node} sent a frame to unknown node {to}")
            }
        }
    }
}
