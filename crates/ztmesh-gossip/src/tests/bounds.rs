//! Every bound in `GossipConfig`, hit on purpose.

use ed25519_dalek::Signer;
use ztmesh_core::Timestamp;

use super::util::*;
use crate::{GossipConfig, GossipError, GossipEvent, GossipFrame, MessageId, Refusal};

/// A health message from the pair's peer, expiring `ttl_ms` from now.
fn from_peer(pair: &Pair, seq: u64, ttl_ms: u64) -> Vec<u8> {
    let mut unsigned = pair.unsigned(seq);
    unsigned.expires_at = Timestamp::from_unix_millis(pair.now.as_unix_millis() + ttl_ms);
    Pair::sign_by(&pair.peer, &unsigned)
}

fn digest_of(count: usize) -> Vec<u8> {
    GossipFrame::Digest {
        ids: (0..count).map(|i| MessageId([i as u8; 32])).collect(),
        reply: true,
    }
    .encode()
    .unwrap()
}

fn feed(pair: &mut Pair, frame: &[u8]) -> Result<(), GossipError> {
    let (peer, now) = (pair.peer_id, pair.now);
    pair.gossip
        .handle_frame(peer, frame, now, &mut pair.membership)
}

#[test]
fn seen_cache_capacity_is_respected() {
    let mut pair = Pair::new(GossipConfig {
        seen_cache_capacity: 4,
        store_capacity: 4,
        ..GossipConfig::default()
    });
    for seq in 0..6 {
        pair.receive(from_peer(&pair, seq, 10_000 + seq * 1000))
            .unwrap();
    }
    let stats = pair.gossip.stats();
    assert_eq!(stats.seen, 4);
    // Two entries each from the id and signature caches.
    assert_eq!(stats.seen_evicted, 4);
    assert_eq!(stats.delivered, 6);
}

#[test]
fn store_count_bound_evicts_the_soonest_expiring() {
    let mut pair = Pair::new(GossipConfig {
        store_capacity: 3,
        ..GossipConfig::default()
    });
    let mut ids = Vec::new();
    for (seq, ttl_s) in [30, 10, 50, 20, 40].into_iter().enumerate() {
        let cose = from_peer(&pair, seq as u64, ttl_s * 1000);
        ids.push(MessageId::of(&cose));
        pair.receive(cose).unwrap();
    }
    let stats = pair.gossip.stats();
    assert_eq!((stats.stored, stats.store_evicted), (3, 2));
    let kept: Vec<MessageId> = pair.gossip.messages().map(|m| m.id).collect();
    assert_eq!(kept, vec![ids[0], ids[2], ids[4]]);
}

#[test]
fn store_byte_bound_is_respected() {
    let probe = Pair::new(GossipConfig::default());
    let one = from_peer(&probe, 0, 10_000);
    let stored_len = one.len() + crate::tests::util::health_body(0).len();
    let store_bytes = stored_len * 5 / 2;
    let mut pair = Pair::new(GossipConfig {
        store_bytes,
        ..GossipConfig::default()
    });
    for seq in 0..4 {
        pair.receive(from_peer(&pair, seq, 10_000 + seq * 1000))
            .unwrap();
    }
    let stats = pair.gossip.stats();
    assert!(stats.stored_bytes <= store_bytes);
    assert_eq!((stats.stored, stats.store_evicted), (2, 2));
}

#[test]
fn peer_queue_bound_drops_and_counts() {
    let mut pair = Pair::new(GossipConfig {
        peer_queue_len: 2,
        ..GossipConfig::default()
    });
    let third = node_id_of(&signing_key(102).verifying_key());
    let now = pair.now;
    pair.gossip.handle_link_up(third, now);
    pair.transmits();
    for seq in 0..5 {
        let mut unsigned = pair.unsigned(seq);
        unsigned.origin = pair.gossip.local();
        let cose = Pair::sign_by(&pair.local, &unsigned);
        pair.gossip
            .publish(cose, now, &mut pair.membership)
            .unwrap();
    }
    // Each of the two peers takes two frames; three more each are dropped.
    assert_eq!(pair.gossip.stats().queue_dropped, 6);
    assert_eq!(pair.transmits().len(), 4);
    assert_eq!(pair.gossip.stats().delivered, 5);
}

#[test]
fn per_peer_message_rate_is_enforced() {
    let mut pair = Pair::new(GossipConfig {
        peer_messages_per_sec: 5,
        ..GossipConfig::default()
    });
    let frame = GossipFrame::Want { ids: vec![] }.encode().unwrap();
    let results: Vec<bool> = (0..8).map(|_| feed(&mut pair, &frame).is_ok()).collect();
    assert_eq!(results, [true, true, true, true, true, false, false, false]);
    assert_eq!(
        feed(&mut pair, &frame),
        Err(GossipError::Peer(Refusal::RateLimited))
    );
    assert_eq!(pair.gossip.stats().rate_limited, 4);
    // Counted, not queued as events.
    assert!(pair.events().is_empty());
    // Five per second refill one every 200 ms.
    pair.now = at(200);
    assert!(feed(&mut pair, &frame).is_ok());
    assert!(feed(&mut pair, &frame).is_err());
}

#[test]
fn a_governed_peer_rate_applies_to_linked_peers_at_once() {
    let mut pair = Pair::new(GossipConfig::default());
    let frame = GossipFrame::Want { ids: vec![] }.encode().unwrap();
    // 150 a minute rounds up to 3 a second, for the peer already linked.
    pair.gossip
        .set_peer_frames_per_minute(150, pair.now)
        .unwrap();
    assert_eq!(pair.gossip.config().peer_messages_per_sec, 3);
    let accepted = (0..10).filter(|_| feed(&mut pair, &frame).is_ok()).count();
    assert_eq!(accepted, 3);
    assert_eq!(pair.gossip.stats().rate_limited, 7);
    assert_eq!(
        pair.gossip.set_peer_frames_per_minute(0, pair.now),
        Err(crate::ConfigError::Invalid {
            field: "peer_messages_per_sec",
            reason: "must be positive"
        })
    );
    assert_eq!(pair.gossip.config().peer_messages_per_sec, 3);
}

#[test]
fn per_peer_byte_rate_is_enforced() {
    let frame = digest_of(8);
    let per_second = 1000;
    let mut pair = Pair::new(GossipConfig {
        peer_bytes_per_sec: per_second,
        ..GossipConfig::default()
    });
    let fits = per_second as usize / frame.len();
    assert!(fits >= 2);
    let accepted = (0..fits + 3)
        .filter(|_| feed(&mut pair, &frame).is_ok())
        .count();
    assert_eq!(accepted, fits);
    assert_eq!(pair.gossip.stats().rate_limited, 3);
}

#[test]
fn digest_and_want_sizes_are_bounded_both_ways() {
    let mut pair = Pair::new(GossipConfig {
        digest_max_ids: 4,
        ..GossipConfig::default()
    });
    assert_eq!(
        feed(&mut pair, &digest_of(5)),
        Err(GossipError::Peer(Refusal::TooManyIds { count: 5, max: 4 }))
    );
    let want = GossipFrame::Want {
        ids: vec![MessageId([9; 32]); 5],
    };
    assert_eq!(
        feed(&mut pair, &want.encode().unwrap()),
        Err(GossipError::Peer(Refusal::TooManyIds { count: 5, max: 4 }))
    );
    // What this node sends respects the same bound.
    for seq in 0..10 {
        pair.receive(from_peer(&pair, seq, 60_000)).unwrap();
    }
    pair.transmits();
    pair.gossip.handle_timeout(at(2_000));
    let digests: Vec<usize> = pair
        .transmits()
        .iter()
        .filter_map(|t| match decode(&t.frame) {
            GossipFrame::Digest { ids, .. } => Some(ids.len()),
            _ => None,
        })
        .collect();
    assert_eq!(digests, [4]);
}

#[test]
fn revoked_set_is_bounded_oldest_forgotten_first() {
    let mut pair = Pair::new(GossipConfig {
        max_revoked: 3,
        ..GossipConfig::default()
    });
    let origins: Vec<_> = (200..205)
        .map(|seed| node_id_of(&signing_key(seed).verifying_key()))
        .collect();
    for origin in &origins {
        pair.gossip.handle_revoked(*origin);
    }
    let stats = pair.gossip.stats();
    assert_eq!((stats.revoked, stats.revoked_evicted), (3, 2));
    let remembered: Vec<bool> = origins.iter().map(|o| pair.gossip.is_revoked(o)).collect();
    assert_eq!(remembered, [false, false, true, true, true]);
}

#[test]
fn max_peers_is_respected() {
    let mut pair = Pair::new(GossipConfig {
        max_peers: 2,
        fanout: 2,
        ..GossipConfig::default()
    });
    let now = pair.now;
    let second = node_id_of(&signing_key(300).verifying_key());
    let third = node_id_of(&signing_key(301).verifying_key());
    pair.gossip.handle_link_up(second, now);
    pair.gossip.handle_link_up(third, now);
    let stats = pair.gossip.stats();
    assert_eq!((stats.peers, stats.peers_refused), (2, 1));
    let frame = GossipFrame::Want { ids: vec![] }.encode().unwrap();
    assert_eq!(
        pair.gossip
            .handle_frame(third, &frame, now, &mut pair.membership),
        Err(GossipError::NotLinked(third))
    );
}

#[test]
fn delivery_queue_applies_backpressure_without_losing_messages() {
    let mut pair = Pair::new(GossipConfig {
        event_queue_len: 2,
        ..GossipConfig::default()
    });
    let messages: Vec<Vec<u8>> = (0..3).map(|seq| from_peer(&pair, seq, 60_000)).collect();
    pair.receive(messages[0].clone()).unwrap();
    pair.receive(messages[1].clone()).unwrap();
    assert_eq!(
        pair.receive(messages[2].clone()),
        Err(GossipError::Backpressure)
    );
    assert_eq!(pair.gossip.stats().backpressure, 1);
    assert_eq!(pair.events().len(), 2);
    // Not marked as seen: once drained, the same bytes are accepted.
    pair.receive(messages[2].clone()).unwrap();
    assert!(matches!(&pair.events()[..], [GossipEvent::Delivered(m)] if m.cose == messages[2]));
}

#[test]
fn refusal_events_are_bounded_oldest_dropped() {
    let mut pair = Pair::new(GossipConfig {
        event_queue_len: 2,
        ..GossipConfig::default()
    });
    let forged = Pair::sign_by(&pair.local, &pair.unsigned(1));
    let mut expired = pair.unsigned(2);
    expired.created_at = at(0).saturating_sub(std::time::Duration::from_secs(10));
    expired.expires_at = at(0);
    let mut future = pair.unsigned(3);
    future.created_at = at(3_600_000);
    future.expires_at = at(3_700_000);
    for unsigned in [expired, future] {
        let _ = pair.receive(forged.clone());
        let key = pair.peer.clone();
        let cose = unsigned.sign(None, |tbs| key.sign(tbs).to_bytes()).unwrap();
        let _ = pair.receive(cose);
    }
    let stats = pair.gossip.stats();
    assert_eq!((stats.refused, stats.events_dropped), (4, 2));
    let kept: Vec<Refusal> = pair
        .events()
        .into_iter()
        .filter_map(|event| match event {
            GossipEvent::Refused { reason, .. } => reason.refusal().cloned(),
            GossipEvent::Delivered(_) => None,
        })
        .collect();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0], Refusal::AlreadyRefused);
    assert!(matches!(kept[1], Refusal::FromFuture { .. }));
}
