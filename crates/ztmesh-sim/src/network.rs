//! The simulated network: links between nodes (administratively up or down, each with its own
//! delay and loss), partitions into islands, and what happened to every frame.
//!
//! A link is *live* when it is up, both ends run, both ends are on the same island and neither
//! end has closed it because it learnt the other is revoked. The cores are told exactly about
//! changes in liveness, as a runtime tells them about connections opening and closing. Each
//! time a link stops being live its epoch grows: a frame carries the epoch it was sent in and
//! is dropped on arrival if the link died meanwhile, the way bytes written to a TCP connection
//! never appear on the next one.

use std::collections::{BTreeMap, BTreeSet};

use ztmesh_core::Timestamp;

use crate::LinkParams;

/// Which core a frame belongs to (the runtime wraps it in `LinkMessage::Gossip` or
/// `LinkMessage::Bundle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// A gossip frame.
    Gossip,
    /// A DTN frame (bundle or ack).
    Bundle,
}

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrameFate {
    /// Still travelling.
    InFlight,
    /// Handed to the receiving core.
    Delivered,
    /// Dropped by the link's loss.
    Lost,
    /// Sent to a peer without a live link (the runtime has nowhere to write it).
    NoLink,
    /// The link died (or an end crashed) while the frame travelled.
    Cut,
}

/// Frame counters of one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Frames the cores handed out.
    pub sent: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Frames handed to the receiving core.
    pub delivered: u64,
    /// Frames dropped by loss.
    pub lost: u64,
    /// Frames addressed to a peer without a live link.
    pub no_link: u64,
    /// Frames in flight when their link died.
    pub cut: u64,
}

impl ChannelStats {
    pub(crate) fn count(&mut self, fate: FrameFate) {
        match fate {
            FrameFate::InFlight => {}
            FrameFate::Delivered => self.delivered += 1,
            FrameFate::Lost => self.lost += 1,
            FrameFate::NoLink => self.no_link += 1,
            FrameFate::Cut => self.cut += 1,
        }
    }
}

/// Frame counters of the whole network since the start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Gossip frames.
    pub gossip: ChannelStats,
    /// DTN frames.
    pub bundle: ChannelStats,
    /// Gossip frames carrying a message (pushes and pull answers).
    pub gossip_messages: u64,
    /// Gossip digests.
    pub gossip_digests: u64,
    /// Gossip want lists.
    pub gossip_wants: u64,
    /// DTN frames carrying a bundle or fragment.
    pub bundles: u64,
    /// DTN acks.
    pub acks: u64,
}

impl NetworkStats {
    pub(crate) fn channel(&mut self, channel: Channel) -> &mut ChannelStats {
        match channel {
            Channel::Gossip => &mut self.gossip,
            Channel::Bundle => &mut self.bundle,
        }
    }
}

/// One link between two nodes (both directions).
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) params: LinkParams,
    /// Administrative state: whether the cable is plugged in.
    pub(crate) up: bool,
    /// Whether the cores at both ends were told the link is up.
    pub(crate) live: bool,
    /// Grows each time the link stops being live.
    pub(crate) epoch: u64,
    /// Per direction (from the lower index, from the higher), when the last frame sent
    /// arrives: later frames never overtake it.
    pub(crate) busy_until: [Timestamp; 2],
}

/// Links, neighbours and islands.
#[derive(Debug)]
pub(crate) struct Network {
    links: BTreeMap<(usize, usize), Link>,
    neighbours: Vec<BTreeSet<usize>>,
    /// Island of each node; nodes on different islands cannot reach each other.
    island: Vec<usize>,
}

/// The key of the link between `a` and `b`, whichever way round.
pub(crate) fn link_key(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Network {
    pub(crate) fn new(nodes: usize) -> Self {
        Network {
            links: BTreeMap::new(),
            neighbours: vec![BTreeSet::new(); nodes],
            island: vec![0; nodes],
        }
    }

    /// Adds a link (administratively up, not yet live); false if it existed.
    pub(crate) fn add(&mut self, a: usize, b: usize, params: LinkParams) -> bool {
        let key = link_key(a, b);
        if self.links.contains_key(&key) {
            return false;
        }
        self.links.insert(
            key,
            Link {
                params,
                up: true,
                live: false,
                epoch: 0,
                busy_until: [Timestamp::EPOCH; 2],
            },
        );
        self.neighbours[a].insert(b);
        self.neighbours[b].insert(a);
        true
    }

    pub(crate) fn get(&self, a: usize, b: usize) -> Option<&Link> {
        self.links.get(&link_key(a, b))
    }

    pub(crate) fn get_mut(&mut self, a: usize, b: usize) -> Option<&mut Link> {
        self.links.get_mut(&link_key(a, b))
    }

    pub(crate) fn neighbours(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.neighbours[node].iter().copied()
    }

    pub(crate) fn keys(&self) -> Vec<(usize, usize)> {
        self.links.keys().copied().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    pub(crate) fn same_island(&self, a: usize, b: usize) -> bool {
        self.island[a] == self.island[b]
    }

    /// Puts each listed group on its own island and every unlisted node on one more.
    pub(crate) fn set_islands(&mut self, groups: &[&[usize]]) {
        self.island.iter_mut().for_each(|island| *island = 0);
        for (number, group) in groups.iter().enumerate() {
            for &node in group.iter() {
                if let Some(island) = self.island.get_mut(node) {
                    *island = number + 1;
                }
            }
        }
    }
}
