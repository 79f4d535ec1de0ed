//! One simulated node: its identity, its cores while it runs, its durable state across
//! crashes, and the simulator's record of what it delivered.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_dtn::{BundleId, MemoryStore, Router};
use ztmesh_gossip::{Gossip, MessageId};

/// The two sans-IO cores of a running node.
#[derive(Debug)]
pub(crate) struct Cores {
    pub(crate) gossip: Gossip<ChaCha8Rng>,
    pub(crate) router: Router<MemoryStore>,
}

/// A node runs its cores, or is crashed and keeps only what was durable.
#[derive(Debug)]
pub(crate) enum NodeState {
    // Boxed: the cores are large and a crashed node holds only its store.
    Running(Box<Cores>),
    Crashed(MemoryStore),
}

/// One node of the simulation.
#[derive(Debug)]
pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    pub(crate) key: SigningKey,
    pub(crate) state: NodeState,
    /// Grows with each restart; seeds the gossip RNG and scopes gossip dedupe checks (the
    /// gossip core keeps no durable state, so it may deliver a message again after a restart).
    pub(crate) incarnation: u64,
    /// Origins this node learnt are revoked. Durable, as the real node persists its revocation
    /// list, and fed to each new gossip core on restart.
    pub(crate) revoked: BTreeSet<NodeId>,
    /// Gossip messages delivered, with the incarnation that last delivered each.
    pub(crate) delivered: BTreeMap<MessageId, u64>,
    /// Bundles delivered to the application, ever (the application's own record).
    pub(crate) bundles_delivered: BTreeMap<BundleId, Timestamp>,
    /// The one wake-up time the node currently wants; timer events for any other are stale.
    pub(crate) timer: Option<Timestamp>,
    /// When its timer last fired, so a core that asks for the same instant again cannot spin
    /// the simulation.
    pub(crate) woken_at: Option<Timestamp>,
    /// Gossip refusal events (stale, revoked, rate-limited and the like).
    pub(crate) gossip_refusals: u64,
    /// Gossip frames whose `handle_frame` returned an error (refusals plus frames from peers
    /// the core does not count as linked).
    pub(crate) gossip_frame_errors: u64,
    /// DTN refusal events.
    pub(crate) dtn_refusals: u64,
}

impl SimNode {
    pub(crate) fn cores_mut(&mut self) -> Option<&mut Cores> {
        match &mut self.state {
            NodeState::Running(cores) => Some(cores),
            NodeState::Crashed(_) => None,
        }
    }

    pub(crate) fn cores(&self) -> Option<&Cores> {
        match &self.state {
            NodeState::Running(cores) => Some(cores),
            NodeState::Crashed(_) => None,
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.cores().is_some()
    }

    pub(crate) fn store(&self) -> &MemoryStore {
        match &self.state {
            NodeState::Running(cores) => cores.router.store(),
            NodeState::Crashed(store) => store,
        }
    }
}

/// The gossip RNG of `node` in its `incarnation` under `seed`: independent streams, so that
/// one node's draws never shift another's.
pub(crate) fn core_rng(seed: u64, node: usize, incarnation: u64) -> ChaCha8Rng {
    let seed: [u8; 32] = Sha256::new()
        .chain_update(b"ztmesh-sim/gossip-rng")
        .chain_update(seed.to_be_bytes())
        .chain_update((node as u64).to_be_bytes())
        .chain_update(incarnation.to_be_bytes())
        .finalize()
        .into();
    ChaCha8Rng::from_seed(seed)
}
