//! Whole-mesh behaviour: exactly-once delivery, where pushes go, hop limits, revocation and
//! anti-entropy under loss.

use std::collections::{BTreeMap, BTreeSet};

use super::util::*;
use crate::{GossipConfig, GossipError, GossipFrame, MessageId, Refusal};

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;

fn default_config(_: usize) -> GossipConfig {
    GossipConfig::default()
}

/// 30 nodes on a ring with chords to i+7, each link up.
fn thirty_nodes(seed: u64, loss_per_mille: u32) -> Network {
    let mut network = Network::new(30, default_config, seed);
    network.ring_with_chords(7);
    network.settle();
    network.loss_per_mille = loss_per_mille;
    network
}

/// Asserts every node delivered exactly `ids`, each once.
fn assert_everyone_delivered_once(network: &Network, ids: &BTreeSet<MessageId>) {
    for (i, node) in network.nodes.iter().enumerate() {
        assert_eq!(&node.delivered_ids(), ids, "node {i} delivered set");
        assert_eq!(
            node.delivered.len(),
            ids.len(),
            "node {i} delivered a message twice"
        );
    }
}

#[test]
fn every_node_delivers_each_message_exactly_once() {
    let mut network = thirty_nodes(1, 0);
    let mut ids = BTreeSet::new();
    for (seq, publisher) in [0, 5, 11, 17, 29, 0, 5, 11, 17, 29].into_iter().enumerate() {
        ids.insert(network.publish_health(publisher, seq as u64, HOUR_MS, 6));
    }
    network.advance(10_000);
    assert_everyone_delivered_once(&network, &ids);
    let duplicates: u64 = network
        .nodes
        .iter()
        .map(|n| n.gossip.stats().duplicates)
        .sum();
    assert!(
        duplicates > 0,
        "the mesh is redundant enough to produce duplicates"
    );
}

#[test]
fn never_pushed_back_to_the_sender_nor_to_the_origin() {
    let mut network = thirty_nodes(2, 200);
    let mut origin = BTreeMap::new();
    for publisher in [3, 8, 21] {
        let id = network.publish_health(publisher, publisher as u64, HOUR_MS, 8);
        origin.insert(id, publisher);
    }
    network.advance(20_000);
    // Who first handed each node each message: that node must never send it back there.
    let mut first_sender: BTreeMap<(usize, MessageId), usize> = BTreeMap::new();
    let mut checked = 0;
    for (from, to, id, _, carried) in network.message_frames().collect::<Vec<_>>() {
        assert_ne!(to, origin[&id], "message {id:?} sent back to its origin");
        assert_ne!(
            first_sender.get(&(from, id)),
            Some(&to),
            "node {from} sent {id:?} back to the node it got it from"
        );
        checked += 1;
        if carried {
            first_sender.entry((to, id)).or_insert(from);
        }
    }
    assert!(checked > 90, "only {checked} message frames");
}

#[test]
fn hop_limit_stops_forwarding() {
    let mut network = Network::new(6, default_config, 3);
    for i in 0..5 {
        network.link(i, i + 1);
    }
    network.settle();
    let id = network.publish_health(0, 1, HOUR_MS, 2);
    network.settle();
    let reached: Vec<bool> = network
        .nodes
        .iter()
        .map(|node| node.delivered_ids().contains(&id))
        .collect();
    // Origin, then relays with hops 2, 1, 0: the node given 0 delivers but stops.
    assert_eq!(reached, [true, true, true, true, false, false]);
    let hops: Vec<(usize, usize, u8)> = network
        .message_frames()
        .map(|(from, to, _, hops, _)| (from, to, hops))
        .collect();
    assert_eq!(hops, [(0, 1, 2), (1, 2, 1), (2, 3, 0)]);
    // Anti-entropy still reaches the rest.
    network.advance(30_000);
    assert!(network
        .nodes
        .iter()
        .all(|n| n.delivered_ids().contains(&id)));
}

#[test]
fn fanout_is_respected_and_random() {
    // A hub linked to ten leaves.
    let mut network = Network::new(11, default_config, 4);
    for leaf in 1..11 {
        network.link(0, leaf);
    }
    network.settle();
    let mut targets = BTreeSet::new();
    for seq in 0..10 {
        let start = network.log.len();
        let id = network.publish_health(0, seq, HOUR_MS, 4);
        network.settle();
        let pushes: Vec<usize> = network.log[start..]
            .iter()
            .filter(|sent| matches!(&sent.frame, GossipFrame::Message { cose, .. } if MessageId::of(cose) == id))
            .map(|sent| {
                assert_eq!(sent.from, 0, "leaves have no one else to push to");
                sent.to
            })
            .collect();
        assert_eq!(pushes.len(), 3, "own message pushed to fanout peers");
        targets.extend(pushes);
    }
    assert!(
        targets.len() > 3,
        "targets are drawn at random: {targets:?}"
    );
    // A leaf's message: one push to the hub, which relays to three other leaves.
    let start = network.log.len();
    network.publish_health(1, 99, HOUR_MS, 4);
    network.settle();
    let pushes: Vec<(usize, usize)> = network.log[start..]
        .iter()
        .filter(|sent| matches!(sent.frame, GossipFrame::Message { .. }))
        .map(|sent| (sent.from, sent.to))
        .collect();
    assert_eq!(pushes.len(), 4);
    assert_eq!(pushes[0], (1, 0));
    assert!(pushes[1..].iter().all(|&(from, to)| from == 0 && to != 1));
    assert_eq!(network.nodes[0].gossip.stats().forwarded, 10 * 3 + 3);
}

#[test]
fn revoked_origin_is_dropped_purged_and_never_forwarded() {
    let mut network = Network::new(10, default_config, 5);
    network.ring_with_chords(3);
    network.settle();
    let revoked = 3;
    let lagging = 4;
    let before = network.publish_health(revoked, 1, HOUR_MS, 6);
    network.advance(5_000);
    assert!(network
        .nodes
        .iter()
        .all(|n| n.delivered_ids().contains(&before)));

    let revoked_id = network.nodes[revoked].id;
    for i in 0..10 {
        if i == revoked || i == lagging {
            continue;
        }
        network.nodes[i].gossip.handle_revoked(revoked_id);
        if network.linked(i, revoked) {
            network.unlink(i, revoked);
        }
        assert!(
            network.nodes[i].gossip.message(&before).is_none(),
            "node {i}"
        );
        assert_eq!(network.nodes[i].gossip.stats().revoked_purged, 1);
    }
    // The revoked node still reaches the lagging one, which relays to everyone else.
    assert!(network.linked(revoked, lagging));
    let start = network.log.len();
    let after = network.publish_health(revoked, 2, HOUR_MS, 6);
    network.advance(20_000);
    for (i, node) in network.nodes.iter().enumerate() {
        let expected = i == revoked || i == lagging;
        assert_eq!(node.delivered_ids().contains(&after), expected, "node {i}");
    }
    let mut wants_per_node: BTreeMap<usize, usize> = BTreeMap::new();
    for sent in &network.log[start..] {
        match &sent.frame {
            GossipFrame::Message { cose, .. } if MessageId::of(cose) == after => {
                assert!(
                    sent.from == revoked || sent.from == lagging,
                    "node {} forwarded a revoked origin's message",
                    sent.from
                );
            }
            GossipFrame::Want { ids } if ids.contains(&after) => {
                *wants_per_node.entry(sent.from).or_default() += 1;
            }
            _ => {}
        }
    }
    // Refused once for good, then never pulled again.
    assert!(
        wants_per_node.values().all(|&count| count <= 1),
        "{wants_per_node:?}"
    );
    let refusals = network
        .nodes
        .iter()
        .flat_map(|n| &n.frame_errors)
        .filter(|e| **e == GossipError::Peer(Refusal::RevokedOrigin(revoked_id)))
        .count();
    assert!(refusals > 0);
}

#[test]
fn anti_entropy_delivers_everything_to_30_nodes_despite_20_percent_loss() {
    let mut network = thirty_nodes(6, 200);
    let mut ids = BTreeSet::new();
    for i in 0..30 {
        // A weak push (one relay) so that loss leaves holes for anti-entropy to fill.
        ids.insert(network.publish_health(i, i as u64, HOUR_MS, 1));
    }
    network.settle();
    let holes: usize = network
        .nodes
        .iter()
        .map(|n| ids.len() - n.delivered_ids().len())
        .sum();
    assert!(holes > 0, "pushes alone should not cover the mesh");
    network.advance(MINUTE_MS);
    assert_everyone_delivered_once(&network, &ids);
    let pulled: u64 = network.nodes.iter().map(|n| n.gossip.stats().pulled).sum();
    assert!(pulled as usize >= holes);
}

#[test]
fn anti_entropy_delivers_the_messages_of_a_node_that_never_pushes() {
    let mut network = Network::new(
        30,
        |i| GossipConfig {
            fanout: if i == 0 { 0 } else { 3 },
            ..GossipConfig::default()
        },
        7,
    );
    network.ring_with_chords(7);
    network.settle();
    network.loss_per_mille = 200;
    let ids: BTreeSet<MessageId> = (0..3)
        .map(|seq| network.publish_health(0, seq, HOUR_MS, 8))
        .collect();
    network.settle();
    assert_eq!(network.message_frames().count(), 0, "node 0 pushes nothing");
    network.advance(MINUTE_MS);
    assert_everyone_delivered_once(&network, &ids);
}

#[test]
fn anti_entropy_delivers_to_a_node_that_never_receives_pushes() {
    let mut network = thirty_nodes(8, 200);
    let isolated = 7;
    // Drop every message frame to the isolated node except answers to its own want lists.
    let mut wanted = BTreeSet::new();
    network.filter = Some(Box::new(move |from, to, frame| match frame {
        GossipFrame::Want { ids } if from == isolated => {
            wanted.extend(ids.iter().copied());
            true
        }
        GossipFrame::Message { cose, .. } if to == isolated => {
            wanted.contains(&MessageId::of(cose))
        }
        _ => true,
    }));
    let ids: BTreeSet<MessageId> = [0, 6, 8, 15, 22]
        .into_iter()
        .map(|i| network.publish_health(i, i as u64, HOUR_MS, 8))
        .collect();
    network.settle();
    assert!(network.nodes[isolated].delivered.is_empty());
    network.advance(MINUTE_MS);
    assert_everyone_delivered_once(&network, &ids);
    let dropped_pushes = network
        .log
        .iter()
        .filter(|s| {
            s.to == isolated && !s.carried && matches!(s.frame, GossipFrame::Message { .. })
        })
        .count();
    assert!(dropped_pushes > 0);
}

#[test]
fn a_node_linking_late_catches_up_at_once() {
    let mut network = Network::new(6, default_config, 9);
    for i in 0..5 {
        network.link(i, (i + 1) % 5);
    }
    network.settle();
    let ids: BTreeSet<MessageId> = (0..3)
        .map(|i| network.publish_health(i, i as u64, HOUR_MS, 8))
        .collect();
    network.settle();
    network.link(5, 2);
    network.settle(); // no time passes: the link-up digest does it
    assert_eq!(network.nodes[5].delivered_ids(), ids);
}

#[test]
fn expired_messages_leave_the_store_and_digests() {
    let mut network = Network::new(3, default_config, 10);
    network.link(0, 1);
    network.link(1, 2);
    network.settle();
    let short = network.publish_health(0, 1, 5_000, 4);
    let long = network.publish_health(0, 2, HOUR_MS, 4);
    network.advance(4_000);
    assert!(network
        .nodes
        .iter()
        .all(|n| n.gossip.messages().count() == 2));
    network.advance(6_000);
    let start = network.log.len();
    network.advance(10_000);
    for node in &network.nodes {
        assert_eq!(node.gossip.stats().stored, 1);
        assert!(node.gossip.message(&short).is_none());
        assert!(node.gossip.message(&long).is_some());
    }
    for sent in &network.log[start..] {
        if let GossipFrame::Digest { ids, .. } = &sent.frame {
            assert!(!ids.contains(&short));
        }
    }
}
