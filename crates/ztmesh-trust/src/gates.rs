//! The enforcement table: which tier a peer needs for each thing it may ask of this node, and
//! the one check the runtime calls before serving it.
//!
//! The table is the single source of truth for per-action trust; the runtime must not decide
//! tiers on its own. Untrusted peers are refused everything, since every action needs Tier 2
//! or better.

use std::fmt;

use serde::{Deserialize, Serialize};
use ztmesh_core::{NodeId, Timestamp};

use crate::tiers::{Reason, Tier, TrustBook};

/// Something a peer asks this node to take part in, or (for [`Action::Witness`]) something this
/// node does on the mesh's behalf and so checks against its own tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Anti-entropy digest exchange and the pulls it triggers.
    AntiEntropy,
    /// Peer exchange (addresses of other nodes).
    PeerExchange,
    /// Relaying a revocation record.
    RevocationRelay,
    /// A governance proposal or vote that is counted.
    Governance,
    /// Threshold key-share traffic.
    KeyShare,
    /// Cosigning the mesh's membership log as one of its witnesses. The node checks its own
    /// tier: a cosignature vouches for the log to every member, so only Tier 1 gives one.
    Witness,
}

impl Action {
    /// Every action, in table order.
    pub const ALL: [Action; 6] = [
        Action::AntiEntropy,
        Action::PeerExchange,
        Action::RevocationRelay,
        Action::Governance,
        Action::KeyShare,
        Action::Witness,
    ];

    /// A stable name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::AntiEntropy => "anti_entropy",
            Action::PeerExchange => "peer_exchange",
            Action::RevocationRelay => "revocation_relay",
            Action::Governance => "governance",
            Action::KeyShare => "key_share",
            Action::Witness => "witness",
        }
    }

    const fn index(self) -> usize {
        match self {
            Action::AntiEntropy => 0,
            Action::PeerExchange => 1,
            Action::RevocationRelay => 2,
            Action::Governance => 3,
            Action::KeyShare => 4,
            Action::Witness => 5,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lowest tier a peer must have for `action` (DESIGN.md §3).
pub const fn required_tier(action: Action) -> Tier {
    match action {
        Action::AntiEntropy | Action::PeerExchange | Action::RevocationRelay => Tier::Tier2,
        Action::Governance | Action::KeyShare | Action::Witness => Tier::Tier1,
    }
}

/// A peer was refused an action: its tier was too low.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{peer} refused {action}: {tier} < {required} ({reason})", required = required_tier(*.action))]
pub struct Refusal {
    /// The peer.
    pub peer: NodeId,
    /// What it asked for.
    pub action: Action,
    /// Its tier at the time.
    pub tier: Tier,
    /// Why it has that tier.
    pub reason: Reason,
}

/// Checks actions against a [`TrustBook`] and counts refusals per action for metrics.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    refusals: [u64; Action::ALL.len()],
}

impl Gates {
    /// Gates with zeroed counters.
    pub fn new() -> Self {
        Gates::default()
    }

    /// `Ok` when `peer` has at least the tier `action` needs at `now`; otherwise the refusal,
    /// counted.
    pub fn check(
        &mut self,
        book: &TrustBook,
        peer: &NodeId,
        action: Action,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        let (tier, reason) = book.tier(peer, now);
        if tier >= required_tier(action) {
            return Ok(());
        }
        self.refusals[action.index()] += 1;
        Err(Refusal {
            peer: *peer,
            action,
            tier,
            reason,
        })
    }

    /// Refusals of `action` so far.
    pub fn refusals(&self, action: Action) -> u64 {
        self.refusals[action.index()]
    }
}
