//! Random input sequences against a plain reference model of the tier rules: the book never
//! panics, its tier always equals the model's, and its events tell a consistent story (each
//! `from` is the previous `to`; after a timeout the story ends at the current tier).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use ztmesh_core::{NodeId, Timestamp};

use super::util::*;
use crate::{Platform, Tier, TrustBook, TrustPolicy};

const PEERS: u8 = 4;
const MAX_PEERS: usize = 3;
const WINDOW: usize = 100;

#[derive(Debug, Clone)]
enum Op {
    Certificate {
        peer: u8,
        early: bool,
        hours: u64,
    },
    Success {
        peer: u8,
        platform: Platform,
    },
    Failure {
        peer: u8,
    },
    Binary {
        peer: u8,
        in_manifest: bool,
    },
    Health {
        peer: u8,
        ok: bool,
        count: usize,
    },
    Revoke {
        peer: u8,
    },
    /// Everything Tier 1 needs at once, so that the sequences spend time near its boundaries.
    Bootstrap {
        peer: u8,
    },
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let peer = 0..PEERS;
    let platform = prop_oneof![
        Just(Platform::Tpm2),
        Just(Platform::SevSnp),
        Just(Platform::Dev)
    ];
    prop_oneof![
        4 => (peer.clone(), any::<bool>(), 1..48u64)
            .prop_map(|(peer, early, hours)| Op::Certificate { peer, early, hours }),
        4 => (peer.clone(), platform).prop_map(|(peer, platform)| Op::Success { peer, platform }),
        4 => peer.clone().prop_map(|peer| Op::Failure { peer }),
        4 => (peer.clone(), any::<bool>()).prop_map(|(peer, in_manifest)| Op::Binary { peer, in_manifest }),
        16 => (peer.clone(), prop::bool::weighted(0.8), 1..15usize)
            .prop_map(|(peer, ok, count)| Op::Health { peer, ok, count }),
        1 => peer.clone().prop_map(|peer| Op::Revoke { peer }),
        8 => peer.prop_map(|peer| Op::Bootstrap { peer }),
        8 => (0..2 * 3600u64).prop_map(|secs| Op::Advance { secs }),
        4 => (0..40 * 3600u64).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// Everything fed in about one peer, recomputed from scratch with the DESIGN rules.
#[derive(Debug, Default, Clone)]
struct ModelPeer {
    certificate: Option<(Timestamp, Timestamp)>,
    attestation: Option<(Platform, Timestamp)>,
    failures: u32,
    binary: Option<bool>,
    health: Vec<bool>,
}

#[derive(Debug, Default)]
struct Model {
    peers: BTreeMap<NodeId, ModelPeer>,
    /// Least recently updated first.
    order: Vec<NodeId>,
    revoked: Vec<NodeId>,
    dev_ok: bool,
}

impl Model {
    fn touch(&mut self, peer: NodeId) -> &mut ModelPeer {
        self.order.retain(|p| *p != peer);
        if !self.peers.contains_key(&peer) && self.peers.len() == MAX_PEERS {
            let oldest = self.order.remove(0);
            self.peers.remove(&oldest);
        }
        self.order.push(peer);
        self.peers.entry(peer).or_default()
    }

    fn tier(&self, peer: &NodeId, now: Timestamp) -> Tier {
        if self.revoked.contains(peer) {
            return Tier::Untrusted;
        }
        let Some(p) = self.peers.get(peer) else {
            return Tier::Untrusted;
        };
        match p.certificate {
            Some((from, until)) if from <= now && now < until => {}
            _ => return Tier::Untrusted,
        }
        let window = &p.health[p.health.len().saturating_sub(WINDOW)..];
        let ok = window.iter().filter(|ok| **ok).count();
        let tier1 = p.failures < 3
            && p.attestation.is_some_and(|(platform, verified)| {
                (platform != Platform::Dev || self.dev_ok)
                    && now.as_unix_millis() < verified.as_unix_millis() + 24 * 3600 * 1000
            })
            && p.binary == Some(true)
            && window.len() >= 100
            && ok * 10 >= window.len() * 9;
        if tier1 {
            Tier::Tier1
        } else {
            Tier::Tier2
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tiers_match_the_reference_model(dev_ok in any::<bool>(), ops in prop::collection::vec(op(), 1..80)) {
        let policy = TrustPolicy {
            max_peers: MAX_PEERS,
            health_window: WINDOW,
            dev_counts_as_hardware: dev_ok,
            ..TrustPolicy::default()
        };
        let mut book = TrustBook::new(policy).unwrap();
        let mut model = Model { dev_ok, ..Model::default() };
        let mut story: BTreeMap<NodeId, Tier> = BTreeMap::new();
        let mut now = T0;
        for op in ops {
            let mut timed_out = false;
            match op {
                Op::Certificate { peer, early, hours } => {
                    let from = if early { now.saturating_sub(HOUR) } else { now.saturating_add(HOUR) };
                    let until = now.saturating_add(Duration::from_secs(hours * 3600));
                    book.handle_certificate(node(peer), from, until, now);
                    model.touch(node(peer)).certificate = Some((from, until));
                }
                Op::Success { peer, platform } => {
                    book.handle_verification_success(node(peer), platform, now);
                    let p = model.touch(node(peer));
                    p.attestation = Some((platform, now));
                    p.failures = 0;
                }
                Op::Failure { peer } => {
                    book.handle_verification_failure(node(peer), now);
                    model.touch(node(peer)).failures += 1;
                }
                Op::Binary { peer, in_manifest } => {
                    book.handle_binary(node(peer), GOOD_BINARY, in_manifest, now);
                    model.touch(node(peer)).binary = Some(in_manifest);
                }
                Op::Health { peer, ok, count } => {
                    for _ in 0..count {
                        book.handle_health_check(node(peer), ok, now);
                        model.touch(node(peer)).health.push(ok);
                    }
                }
                Op::Revoke { peer } => {
                    book.handle_revoked(node(peer), now);
                    if !model.revoked.contains(&node(peer)) {
                        model.revoked.push(node(peer));
                    }
                }
                Op::Bootstrap { peer } => {
                    let until = now.saturating_add(DAY);
                    book.handle_certificate(node(peer), now, until, now);
                    book.handle_verification_success(node(peer), Platform::Tpm2, now);
                    book.handle_binary(node(peer), GOOD_BINARY, true, now);
                    let p = model.touch(node(peer));
                    p.certificate = Some((now, until));
                    p.attestation = Some((Platform::Tpm2, now));
                    p.failures = 0;
                    p.binary = Some(true);
                    for _ in 0..WINDOW {
                        book.handle_health_check(node(peer), true, now);
                        model.touch(node(peer)).health.push(true);
                    }
                }
                Op::Advance { secs } => {
                    now = now.saturating_add(Duration::from_secs(secs));
                    book.handle_timeout(now);
                    timed_out = true;
                }
            }
            while let Some(change) = book.poll_event() {
                let before = story.get(&change.peer).copied().unwrap_or(Tier::Untrusted);
                prop_assert_eq!(change.from, before, "event {:?}", change);
                prop_assert_ne!(change.from, change.to);
                story.insert(change.peer, change.to);
            }
            for peer in (0..PEERS).map(node) {
                let (tier, reason) = book.tier(&peer, now);
                prop_assert_eq!(tier, model.tier(&peer, now), "{} ({})", peer, reason);
                if timed_out {
                    prop_assert_eq!(story.get(&peer).copied().unwrap_or(Tier::Untrusted), tier);
                }
            }
            prop_assert!(book.peer_count() <= MAX_PEERS);
            if let Some(next) = book.poll_timeout() {
                prop_assert!(next > now);
            }
        }
    }
}
