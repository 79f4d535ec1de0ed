//! Which peers a node knows, which it is linked to, and whom to dial next. Sans-IO: the
//! daemon feeds events in (`handle_*`) with `now` and asks [`PeerTable::poll_dials`] for work.
//!
//! Two rules keep a mesh of N nodes at one link per pair without coordination:
//! - between two nodes, the one with the smaller NodeId dials at once; the larger one waits
//!   [`LARGER_ID_GRACE`] first, so usually only one dial happens, yet a pair still connects
//!   when only the larger node knows about the other;
//! - if two links to the same peer come up anyway, both ends keep the link dialed by the
//!   smaller NodeId ([`preferred_link`]).
//!
//! Everything is bounded: known peers ([`MAX_KNOWN_PEERS`]) and bootstrap addresses.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::link::PeerAdvert;
use crate::{NodeId, Timestamp};

/// Most peers remembered; adverts beyond it are ignored.
pub const MAX_KNOWN_PEERS: usize = 1024;

/// Most bootstrap addresses tried.
pub const MAX_BOOTSTRAP: usize = 64;

/// First retry delay after a failed dial; doubles per failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);

/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long the node with the larger NodeId waits before dialing a peer it learned of or lost,
/// leaving the first move to the smaller one.
pub const LARGER_ID_GRACE: Duration = Duration::from_secs(2);

/// Who opened a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We dialed.
    Outbound,
    /// The peer dialed.
    Inbound,
}

impl Direction {
    /// `inbound` / `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Which of two links to the same peer both ends keep: the one dialed by the smaller NodeId.
/// Returns true when a new link in direction `new` should replace an existing one in direction
/// `existing`.
pub fn preferred_link(me: &NodeId, peer: &NodeId, existing: Direction, new: Direction) -> bool {
    let preferred = if me < peer {
        Direction::Outbound
    } else {
        Direction::Inbound
    };
    // Same direction: the newer link wins (the old one is likely dead but not yet noticed).
    new == existing || new == preferred
}

/// A dial the daemon should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTarget {
    /// Address to dial.
    pub addr: String,
    /// The NodeId expected there, if known; a different peer answering is a failed dial.
    pub expected: Option<NodeId>,
}

#[derive(Debug, Clone, Default)]
struct Backoff {
    failures: u32,
    next_attempt: Timestamp,
    in_flight: bool,
}

impl Backoff {
    fn ready(&self, now: Timestamp) -> bool {
        !self.in_flight && self.next_attempt <= now
    }

    fn failed(&mut self, now: Timestamp) {
        self.in_flight = false;
        let delay = BACKOFF_BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        self.next_attempt = now.saturating_add(delay);
    }

    fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[derive(Debug, Clone, Default)]
struct PeerEntry {
    addr: Option<String>,
    connected: bool,
    last_seen: Option<Timestamp>,
    backoff: Backoff,
    revoked: bool,
}

#[derive(Debug, Clone, Default)]
struct BootstrapEntry {
    resolved: Option<NodeId>,
    backoff: Backoff,
}

/// A peer as the table sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The peer.
    pub node_id: NodeId,
    /// Its mesh listener, if known.
    pub addr: Option<String>,
    /// Whether a link is up.
    pub connected: bool,
    /// Last frame or advert.
    pub last_seen: Option<Timestamp>,
}

/// The peer table of one node.
#[derive(Debug)]
pub struct PeerTable {
    me: NodeId,
    max_links: usize,
    peers: BTreeMap<NodeId, PeerEntry>,
    bootstrap: BTreeMap<String, BootstrapEntry>,
}

impl PeerTable {
    /// A table for node `me`, keeping at most `max_links` links.
    pub fn new(me: NodeId, max_links: usize) -> Self {
        PeerTable {
            me,
            max_links,
            peers: BTreeMap::new(),
            bootstrap: BTreeMap::new(),
        }
    }

    /// Adds a bootstrap address (dialed until it resolves to a peer).
    pub fn add_bootstrap(&mut self, addr: &str) {
        if self.bootstrap.len() < MAX_BOOTSTRAP {
            self.bootstrap.entry(addr.to_owned()).or_default();
        }
    }

    /// A peer advertised by an authenticated source (a linked peer or the CA).
    pub fn handle_advert(&mut self, advert: &PeerAdvert, now: Timestamp) {
        if advert.node_id == self.me {
            return;
        }
        if !self.peers.contains_key(&advert.node_id) && self.peers.len() >= MAX_KNOWN_PEERS {
            return;
        }
        let grace = self.grace(&advert.node_id);
        let entry = self.peers.entry(advert.node_id).or_default();
        if entry.addr.as_deref() != Some(advert.addr.as_str()) {
            entry.addr = Some(advert.addr.clone());
            // A new address deserves a prompt try (after the grace, for the larger id).
            if !entry.backoff.in_flight {
                entry.backoff.next_attempt = now.saturating_add(grace);
            }
        }
    }

    /// A link to `peer` came up; `addr` is its mesh listener if it told us (Hello), and
    /// `dialed` the address we dialed, if outbound.
    pub fn handle_link_up(&mut self, peer: NodeId, dialed: Option<&str>, now: Timestamp) {
        if let Some(addr) = dialed {
            if let Some(b) = self.bootstrap.get_mut(addr) {
                b.resolved = Some(peer);
                b.backoff.reset();
            }
        }
        let entry = self.peers.entry(peer).or_default();
        entry.connected = true;
        entry.last_seen = Some(now);
        entry.backoff.reset();
        if let Some(addr) = dialed {
            entry.addr.get_or_insert_with(|| addr.to_owned());
        }
    }

    /// The peer told us where it listens.
    pub fn handle_listen_addr(&mut self, peer: NodeId, addr: &str) {
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.addr = Some(addr.to_owned());
        }
    }

    /// A frame arrived from `peer`.
    pub fn handle_seen(&mut self, peer: &NodeId, now: Timestamp) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.last_seen = Some(now);
        }
    }

    /// The link to `peer` went down.
    pub fn handle_link_down(&mut self, peer: &NodeId, now: Timestamp) {
        let grace = self.grace(peer);
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.connected = false;
            // Do not hammer a peer that just dropped us.
            entry.backoff.failed(now.saturating_add(grace));
        }
    }

    fn grace(&self, peer: &NodeId) -> Duration {
        if self.me < *peer {
            Duration::ZERO
        } else {
            LARGER_ID_GRACE
        }
    }

    /// A dial failed.
    pub fn handle_dial_failed(&mut self, target: &DialTarget, now: Timestamp) {
        if let Some(id) = &target.expected {
            if let Some(entry) = self.peers.get_mut(id) {
                entry.backoff.failed(now);
            }
        } else if let Some(b) = self.bootstrap.get_mut(&target.addr) {
            b.backoff.failed(now);
        }
    }

    /// The peer is revoked: never dial it again.
    pub fn handle_revoked(&mut self, peer: &NodeId) {
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.revoked = true;
            entry.connected = false;
        }
    }

    fn connected_count(&self) -> usize {
        self.peers.values().filter(|p| p.connected).count()
    }

    /// Dials to start now; each returned target is marked in flight until
    /// [`PeerTable::handle_link_up`] or [`PeerTable::handle_dial_failed`].
    pub fn poll_dials(&mut self, now: Timestamp) -> Vec<DialTarget> {
        let mut budget = self.max_links.saturating_sub(self.connected_count());
        let mut targets = Vec::new();
        for (id, entry) in self.peers.iter_mut() {
            if budget == 0 {
                break;
            }
            let Some(addr) = &entry.addr else { continue };
            if entry.connected || entry.revoked || !entry.backoff.ready(now) {
                continue;
            }
            entry.backoff.in_flight = true;
            budget -= 1;
            targets.push(DialTarget {
                addr: addr.clone(),
                expected: Some(*id),
            });
        }
        for (addr, entry) in self.bootstrap.iter_mut() {
            if budget == 0 {
                break;
            }
            // A resolved bootstrap address is a known peer now: the rules above apply to it.
            if entry.resolved.is_some() || !entry.backoff.ready(now) {
                continue;
            }
            entry.backoff.in_flight = true;
            budget -= 1;
            targets.push(DialTarget {
                addr: addr.clone(),
                expected: None,
            });
        }
        targets
    }

    /// Peers with a live link and a known address: what we tell others (only peers that proved
    /// their identity to us are ever advertised).
    pub fn connected_adverts(&self) -> Vec<PeerAdvert> {
        self.peers
            .iter()
            .filter(|(_, p)| p.connected && !p.revoked)
            .filter_map(|(id, p)| {
                p.addr.as_ref().map(|addr| PeerAdvert {
                    node_id: *id,
                    addr: addr.clone(),
                })
            })
            .collect()
    }

    /// Every known peer.
    pub fn peers(&self) -> Vec<PeerView> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.revoked)
            .map(|(id, p)| PeerView {
                node_id: *id,
                addr: p.addr.clone(),
                connected: p.connected,
                last_seen: p.last_seen,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    fn advert(n: u8) -> PeerAdvert {
        PeerAdvert {
            node_id: id(n),
            addr: format!("127.0.0.1:{}", 4000 + u16::from(n)),
        }
    }

    #[test]
    fn the_smaller_id_dials_first_and_the_larger_after_a_grace() {
        let t = Timestamp::from_unix_secs(1);
        let mut low = PeerTable::new(id(1), 8);
        let mut high = PeerTable::new(id(2), 8);
        low.handle_advert(&advert(2), t);
        high.handle_advert(&advert(1), t);
        assert_eq!(low.poll_dials(t).len(), 1);
        assert!(high.poll_dials(t).is_empty());
        // Regression: when only the larger node knows the pair, it must still connect.
        let later = t.saturating_add(LARGER_ID_GRACE);
        assert_eq!(
            high.poll_dials(later),
            vec![DialTarget {
                addr: advert(1).addr,
                expected: Some(id(1))
            }]
        );
    }

    #[test]
    fn both_ends_keep_the_same_link() {
        let (a, b) = (id(1), id(2));
        // Link L1 dialed by a, link L2 dialed by b; each end sees them in either order.
        // At a: L1 is Outbound, L2 Inbound. At b: L1 Inbound, L2 Outbound.
        // a keeps L1 whichever came first:
        assert!(!preferred_link(
            &a,
            &b,
            Direction::Outbound,
            Direction::Inbound
        ));
        assert!(preferred_link(
            &a,
            &b,
            Direction::Inbound,
            Direction::Outbound
        ));
        // b keeps L1 too:
        assert!(preferred_link(
            &b,
            &a,
            Direction::Outbound,
            Direction::Inbound
        ));
        assert!(!preferred_link(
            &b,
            &a,
            Direction::Inbound,
            Direction::Outbound
        ));
    }

    #[test]
    fn failed_dials_back_off_exponentially_up_to_the_cap() {
        let mut t = Timestamp::from_unix_secs(100);
        let mut table = PeerTable::new(id(1), 8);
        table.handle_advert(&advert(2), t);
        let mut delays = Vec::new();
        for _ in 0..10 {
            let target = table.poll_dials(t).pop().expect("dial due");
            assert!(table.poll_dials(t).is_empty(), "in flight: no second dial");
            table.handle_dial_failed(&target, t);
            // Find when the next dial becomes due.
            let mut probe = t;
            while table.poll_dials(probe).is_empty() {
                probe = probe.saturating_add(Duration::from_millis(100));
            }
            delays.push(probe.duration_since(t));
            // poll_dials marked it in flight; fail it at `probe`.
            table.handle_dial_failed(
                &DialTarget {
                    addr: String::new(),
                    expected: Some(id(2)),
                },
                probe,
            );
            t = probe.saturating_add(BACKOFF_MAX);
        }
        assert_eq!(delays[0], BACKOFF_BASE);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*delays.last().unwrap(), BACKOFF_MAX);
    }

    #[test]
    fn bootstrap_is_dialed_until_resolved_then_peer_rules_apply() {
        let t = Timestamp::from_unix_secs(1);
        let mut table = PeerTable::new(id(5), 8);
        table.add_bootstrap("127.0.0.1:9");
        let target = table.poll_dials(t).pop().unwrap();
        assert_eq!(target.expected, None);
        // It turns out to be a smaller id: after the link drops we wait longer than it would.
        table.handle_link_up(id(1), Some("127.0.0.1:9"), t);
        table.handle_link_down(&id(1), t);
        assert!(table
            .poll_dials(t.saturating_add(LARGER_ID_GRACE))
            .is_empty());
        let redial = table.poll_dials(t.saturating_add(LARGER_ID_GRACE + BACKOFF_BASE));
        assert_eq!(
            redial,
            vec![DialTarget {
                addr: "127.0.0.1:9".into(),
                expected: Some(id(1))
            }]
        );
    }

    #[test]
    fn revoked_peers_are_never_dialed_nor_advertised() {
        let t = Timestamp::from_unix_secs(1);
        let mut table = PeerTable::new(id(1), 8);
        table.handle_advert(&advert(2), t);
        table.handle_link_up(id(2), None, t);
        assert_eq!(table.connected_adverts().len(), 1);
        table.handle_revoked(&id(2));
        assert!(table.connected_adverts().is_empty());
        assert!(table.poll_dials(t.saturating_add(BACKOFF_MAX)).is_empty());
    }

    #[test]
    fn known_peers_and_dials_are_bounded() {
        let t = Timestamp::from_unix_secs(1);
        let mut table = PeerTable::new(NodeId::from_bytes([0; 20]), 4);
        for i in 0..(MAX_KNOWN_PEERS + 50) {
            let mut bytes = [0u8; 20];
            bytes[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            table.handle_advert(
                &PeerAdvert {
                    node_id: NodeId::from_bytes(bytes),
                    addr: "127.0.0.1:1".into(),
                },
                t,
            );
        }
        assert_eq!(table.peers().len(), MAX_KNOWN_PEERS);
        assert_eq!(table.poll_dials(t).len(), 4, "max_links bounds dials");
    }

    #[test]
    fn self_adverts_are_ignored() {
        let t = Timestamp::from_unix_secs(1);
        let mut table = PeerTable::new(id(1), 4);
        table.handle_advert(&advert(1), t);
        assert!(table.peers().is_empty());
    }
}
