//! Store-and-forward scenarios over [`MemoryStore`]s: several routers in one process, a virtual
//! clock, links that come and go, a seeded RNG for loss, and restarts that keep the store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_dtn::bpv7::{CreationTimestamp, PrimaryBlock};
use ztmesh_dtn::{
    Bundle, BundleId, BundleStore, DtnConfig, DtnError, DtnEvent, Eid, FragmentKey, Frame,
    MemoryStore, RefuseReason, RequestError, Router,
};

const HOUR: Duration = Duration::from_secs(3600);
const SECOND: Duration = Duration::from_secs(1);

fn node(n: u8) -> NodeId {
    NodeId::from_bytes([n; 20])
}

fn inbox(n: u8) -> Eid {
    Eid::new(node(n), "inbox").unwrap()
}

/// 2023-11-14T22:13:20Z.
fn start() -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000)
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

/// Decides whether a frame `from → to` is delivered (`false` drops it).
type Filter = Box<dyn FnMut(NodeId, NodeId, &Frame) -> bool>;

/// Several routers joined by links that deliver instantly, in order, unless lost.
struct Net {
    now: Timestamp,
    config: DtnConfig,
    routers: BTreeMap<NodeId, Router<MemoryStore>>,
    up: BTreeSet<(NodeId, NodeId)>,
    events: BTreeMap<NodeId, Vec<DtnEvent>>,
    rng: ChaCha8Rng,
    loss: f64,
    filter: Option<Filter>,
    frames: u64,
}

impl Net {
    fn new(nodes: &[u8], config: DtnConfig) -> Net {
        let routers = nodes
            .iter()
            .map(|&n| {
                (
                    node(n),
                    Router::new(node(n), config.clone(), MemoryStore::new()).unwrap(),
                )
            })
            .collect();
        Net {
            now: start(),
            config,
            routers,
            up: BTreeSet::new(),
            events: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(7),
            loss: 0.0,
            filter: None,
            frames: 0,
        }
    }

    fn router(&mut self, n: u8) -> &mut Router<MemoryStore> {
        self.routers.get_mut(&node(n)).unwrap()
    }

    fn pair(a: u8, b: u8) -> (NodeId, NodeId) {
        (node(a.min(b)), node(a.max(b)))
    }

    fn connect(&mut self, a: u8, b: u8) {
        self.up.insert(Self::pair(a, b));
        let now = self.now;
        self.router(a).handle_link_up(node(b), now);
        self.router(b).handle_link_up(node(a), now);
        self.flush();
    }

    fn disconnect(&mut self, a: u8, b: u8) {
        self.up.remove(&Self::pair(a, b));
        self.router(a).handle_link_down(&node(b));
        self.router(b).handle_link_down(&node(a));
    }

    fn send(&mut self, from: u8, to: Eid, data: Vec<u8>, ttl: Duration) -> BundleId {
        let now = self.now;
        let id = self
            .router(from)
            .accept_local(to, "app", data, ttl, now)
            .unwrap();
        self.flush();
        id
    }

    /// Moves frames until no router has anything to send.
    fn flush(&mut self) {
        loop {
            let mut moved = false;
            let ids: Vec<NodeId> = self.routers.keys().copied().collect();
            for from in ids {
                while let Some(transmit) = self.routers.get_mut(&from).unwrap().poll_transmit() {
                    moved = true;
                    self.frames += 1;
                    let pair = (from.min(transmit.to), from.max(transmit.to));
                    if !self.up.contains(&pair) || self.rng.gen_bool(self.loss) {
                        continue;
                    }
                    if let Some(filter) = &mut self.filter {
                        let frame = Frame::decode(&transmit.frame, &self.config.limits).unwrap();
                        if !filter(from, transmit.to, &frame) {
                            continue;
                        }
                    }
                    let now = self.now;
                    if let Some(to) = self.routers.get_mut(&transmit.to) {
                        to.handle_frame(from, &transmit.frame, now).unwrap();
                    }
                }
            }
            self.collect_events();
            if !moved {
                return;
            }
        }
    }

    fn collect_events(&mut self) {
        for (id, router) in &mut self.routers {
            while let Some(event) = router.poll_event() {
                self.events.entry(*id).or_default().push(event);
            }
        }
    }

    /// Runs timers and frames until `duration` of virtual time has passed.
    fn advance(&mut self, duration: Duration) {
        let end = self.now.saturating_add(duration);
        loop {
            self.flush();
            let next = self.routers.values().filter_map(|r| r.poll_timeout()).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for router in self.routers.values_mut() {
                        if router.poll_timeout().is_some_and(|t| t <= now) {
                            router.handle_timeout(now).unwrap();
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = end;
        self.flush();
    }

    /// Simulates a crash of node `n`: the router is dropped, its store kept.
    fn restart(&mut self, n: u8) {
        let router = self.routers.remove(&node(n)).unwrap();
        let store = router.into_store();
        self.routers.insert(
            node(n),
            Router::new(node(n), self.config.clone(), store).unwrap(),
        );
        let peers: Vec<NodeId> = self
            .up
            .iter()
            .filter_map(|&(a, b)| {
                if a == node(n) {
                    Some(b)
                } else if b == node(n) {
                    Some(a)
                } else {
                    None
                }
            })
            .collect();
        let now = self.now;
        for peer in peers {
            // Both ends see the link drop and come back with the process.
            self.routers
                .get_mut(&peer)
                .unwrap()
                .handle_link_down(&node(n));
            self.routers
                .get_mut(&peer)
                .unwrap()
                .handle_link_up(node(n), now);
            self.router(n).handle_link_up(peer, now);
        }
        self.flush();
    }

    /// Delivers every requested receipt, signed by the node that asked for it, to every
    /// router (what gossip does).
    fn gossip_receipts(&mut self) {
        let receipts: Vec<(NodeId, BundleId)> = self
            .events
            .iter()
            .flat_map(|(signer, events)| {
                events.iter().filter_map(move |e| match e {
                    DtnEvent::ReceiptNeeded { id } => Some((*signer, *id)),
                    _ => None,
                })
            })
            .collect();
        let now = self.now;
        for router in self.routers.values_mut() {
            for (signer, id) in &receipts {
                router.handle_receipt(*signer, id, now).unwrap();
            }
        }
        self.flush();
    }

    fn events(&self, n: u8) -> Vec<DtnEvent> {
        self.events.get(&node(n)).cloned().unwrap_or_default()
    }

    fn delivered_count(&self, n: u8, id: BundleId) -> usize {
        self.events(n)
            .iter()
            .filter(|e| matches!(e, DtnEvent::Delivered { id: d, .. } if *d == id))
            .count()
    }

    fn refusals(&self, n: u8) -> Vec<RefuseReason> {
        self.events(n)
            .into_iter()
            .filter_map(|e| match e {
                DtnEvent::Refused { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }

    fn held(&mut self, n: u8) -> usize {
        self.router(n).store().list_held().unwrap().len()
    }

    fn inbox_payload(&mut self, n: u8, id: BundleId) -> Option<Vec<u8>> {
        self.router(n).store().delivered_payload(&id).unwrap()
    }
}

#[test]
fn direct_delivery() {
    let mut net = Net::new(&[1, 2], DtnConfig::default());
    net.connect(1, 2);
    let id = net.send(1, inbox(2), b"hello".to_vec(), HOUR);
    assert_eq!(net.delivered_count(2, id), 1);
    assert_eq!(net.inbox_payload(2, id).unwrap(), b"hello");
    let listed = net.router(2).store().list_delivered().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].source, Eid::new(node(1), "app").unwrap());
    assert_eq!(listed[0].destination.service(), "inbox");
    assert_eq!(
        listed[0].expires_at,
        listed[0].received_at.saturating_add(HOUR)
    );
    assert!(net.events(2).contains(&DtnEvent::ReceiptNeeded { id }));
    // The destination's own ack ends the source's responsibility.
    assert_eq!(net.held(1), 0);
    // Bundle, ack: nothing more.
    assert_eq!(net.frames, 2);
}

#[test]
fn local_destination_is_delivered_at_once() {
    let mut net = Net::new(&[1], DtnConfig::default());
    let id = net.send(1, inbox(1), b"to myself".to_vec(), HOUR);
    assert_eq!(net.delivered_count(1, id), 1);
    // Nothing left the node: no receipt to publish, nothing held.
    assert!(!net.events(1).contains(&DtnEvent::ReceiptNeeded { id }));
    assert_eq!(net.held(1), 0);
    assert_eq!(net.inbox_payload(1, id).unwrap(), b"to myself");
}

#[test]
fn relay_carries_a_bundle_between_nodes_that_never_meet() {
    let mut net = Net::new(&[1, 2, 3], DtnConfig::default());
    net.connect(1, 2);
    let id = net.send(1, inbox(3), b"via B".to_vec(), HOUR);
    // B took a copy (epidemic) and acknowledged it; A keeps its own until a receipt.
    assert_eq!(net.held(2), 1);
    assert_eq!(net.held(1), 1);
    net.disconnect(1, 2);
    net.advance(Duration::from_secs(600));
    net.connect(2, 3);
    assert_eq!(net.delivered_count(3, id), 1);
    assert_eq!(net.inbox_payload(3, id).unwrap(), b"via B");
    // C acknowledged to B, so B let go; A still holds a copy until the receipt.
    assert_eq!(net.held(2), 0);
    assert_eq!(net.held(1), 1);
    net.gossip_receipts();
    assert_eq!(net.held(1), 0);
}

#[test]
fn destination_offline_then_back_over_a_lossy_link() {
    let mut net = Net::new(&[1, 2], DtnConfig::default());
    net.loss = 0.5;
    let id = net.send(1, inbox(2), payload(300_000, 1), HOUR);
    net.advance(Duration::from_secs(1200));
    assert_eq!(net.delivered_count(2, id), 0);
    assert_eq!(net.held(1), 5, "300 kB in 64 KiB fragments");
    net.connect(1, 2);
    net.advance(Duration::from_secs(1800));
    assert_eq!(net.delivered_count(2, id), 1);
    assert_eq!(net.inbox_payload(2, id).unwrap(), payload(300_000, 1));
    // Retries were needed, and every piece is now acknowledged by the destination.
    assert!(net.frames > 10);
    assert_eq!(net.held(1), 0);
    assert_eq!(net.held(2), 0);
}

#[test]
fn ttl_expiry_removes_the_bundle_everywhere() {
    let mut net = Net::new(&[1, 2, 3], DtnConfig::default());
    net.connect(1, 2);
    let id = net.send(1, inbox(3), payload(100_000, 2), Duration::from_secs(600));
    assert_eq!(net.held(1), 2);
    assert_eq!(net.held(2), 2);
    net.advance(Duration::from_secs(599));
    assert_eq!(net.held(2), 2);
    net.advance(Duration::from_secs(1));
    for n in [1, 2] {
        assert_eq!(net.held(n), 0);
        assert!(net.events(n).contains(&DtnEvent::Expired { id }));
        assert_eq!(net.router(n).store().usage().unwrap(), Default::default());
    }
    // Meeting the destination afterwards delivers nothing.
    net.connect(2, 3);
    net.connect(1, 3);
    assert_eq!(net.delivered_count(3, id), 0);
    // Nothing left to wait for.
    assert_eq!(net.router(1).poll_timeout(), None);
}

#[test]
fn copies_from_two_relays_are_delivered_once() {
    let mut net = Net::new(&[1, 2, 3, 4], DtnConfig::default());
    net.connect(1, 2);
    net.connect(1, 3);
    let id = net.send(1, inbox(4), payload(200_000, 3), HOUR);
    assert_eq!(net.held(2), 4);
    assert_eq!(net.held(3), 4);
    net.disconnect(1, 2);
    net.disconnect(1, 3);
    // Both relays meet the destination at the same moment and race their copies; B's last
    // two fragments are lost at first, so D completes the ADU from both relays' pieces.
    net.filter = Some(Box::new(|from, _, frame| match frame {
        Frame::Bundle { bytes } => {
            from != node(2)
                || Bundle::decode(bytes, &Default::default())
                    .unwrap()
                    .key()
                    .offset
                    < 131_072
        }
        Frame::Ack { .. } => true,
    }));
    net.up.insert(Net::pair(2, 4));
    net.up.insert(Net::pair(3, 4));
    let now = net.now;
    for (a, b) in [(2, 4), (4, 2), (3, 4), (4, 3)] {
        net.router(a).handle_link_up(node(b), now);
    }
    net.flush();
    net.filter = None;
    net.advance(Duration::from_secs(10));
    assert_eq!(net.delivered_count(4, id), 1);
    assert_eq!(net.inbox_payload(4, id).unwrap(), payload(200_000, 3));
    assert_eq!((net.held(2), net.held(3)), (0, 0));
    // Later copies (here A's, after the application deleted the bundle) are dropped too.
    assert!(net.router(4).store_mut().delete_delivered(&id).unwrap());
    net.connect(1, 4);
    assert_eq!(net.delivered_count(4, id), 1);
    assert_eq!(net.held(1), 0);
    assert_eq!(net.inbox_payload(4, id), None);
}

#[test]
fn receipt_frees_relay_copies_and_late_copies_are_dropped() {
    let mut net = Net::new(&[1, 2, 3, 4], DtnConfig::default());
    net.connect(1, 2);
    net.connect(1, 3);
    let id = net.send(1, inbox(9), b"x".to_vec(), HOUR);
    assert_eq!((net.held(1), net.held(2), net.held(3)), (1, 1, 1));
    net.disconnect(1, 3);
    let now = net.now;
    // A receipt signed by anybody but the destination changes nothing.
    net.router(2).handle_receipt(node(3), &id, now).unwrap();
    assert_eq!(net.held(2), 1);
    for n in [1, 2] {
        net.router(n).handle_receipt(node(9), &id, now).unwrap();
    }
    assert_eq!((net.held(1), net.held(2)), (0, 0));
    // The relay that missed the receipt still offers its copy: acknowledged, not stored.
    net.connect(3, 2);
    assert_eq!(net.held(2), 0);
    net.router(3).handle_receipt(node(9), &id, now).unwrap();
    assert_eq!(net.held(3), 0);
    // Tombstones go when the bundle would have expired.
    net.advance(HOUR);
    assert_eq!(net.router(2).store().usage().unwrap().tombstones, 0);
}

#[test]
fn receipt_before_the_copy_drops_the_copy_on_arrival() {
    let mut net = Net::new(&[1, 2], DtnConfig::default());
    let now = net.now;
    // Ids are predictable: node 1's bundles at this instant get seq 0, 1, ...
    let id = |seq| BundleId {
        source: node(1),
        dtn_time_ms: ztmesh_dtn::bpv7::dtn_time_from_timestamp(now).unwrap(),
        seq,
    };
    // For the first bundle, a receipt forged by node 5 and the real one by its destination,
    // node 9; for the second, only a forged one.
    net.router(2).handle_receipt(node(9), &id(0), now).unwrap();
    net.router(2).handle_receipt(node(5), &id(0), now).unwrap();
    net.router(2).handle_receipt(node(5), &id(1), now).unwrap();
    net.connect(1, 2);
    assert_eq!(net.send(1, inbox(9), b"late".to_vec(), HOUR), id(0));
    // Acknowledged (so node 1 stops offering it) but not stored; remembered from now on.
    assert_eq!(net.held(2), 0);
    assert_eq!(net.router(2).store().usage().unwrap().tombstones, 1);
    assert_eq!(
        net.router(1).store().list_held().unwrap()[0].acked_by,
        vec![node(2)]
    );
    // The forged receipt does not stop the second bundle.
    assert_eq!(net.send(1, inbox(9), b"kept".to_vec(), HOUR), id(1));
    assert_eq!(net.held(2), 1);
}

#[test]
fn early_receipts_are_bounded() {
    let config = DtnConfig {
        max_tombstones: 2,
        ..DtnConfig::default()
    };
    let mut router = Router::new(node(2), config, MemoryStore::new()).unwrap();
    let now = start();
    let id = |seq| BundleId {
        source: node(1),
        dtn_time_ms: ztmesh_dtn::bpv7::dtn_time_from_timestamp(now).unwrap(),
        seq,
    };
    for seq in 0..3 {
        router.handle_receipt(node(9), &id(seq), now).unwrap();
    }
    // The third was not remembered: its copy is stored as usual.
    let mut sender = Router::new(node(1), DtnConfig::default(), MemoryStore::new()).unwrap();
    router.handle_link_up(node(1), now);
    sender.handle_link_up(node(2), now);
    for _ in 0..3 {
        sender
            .accept_local(inbox(9), "app", vec![0], HOUR, now)
            .unwrap();
    }
    while let Some(t) = sender.poll_transmit() {
        router.handle_frame(node(1), &t.frame, now).unwrap();
    }
    let held: Vec<u64> = router.held().map(|h| h.key.id.seq).collect();
    assert_eq!(held, vec![2]);
}

#[test]
fn one_mib_payload_travels_in_64_kib_fragments_through_a_relay() {
    let mut net = Net::new(&[1, 2, 3], DtnConfig::default());
    let data = payload(1 << 20, 4);
    net.connect(1, 2);
    let id = net.send(1, inbox(3), data.clone(), HOUR);
    assert_eq!(net.held(1), 16);
    assert_eq!(net.held(2), 16);
    net.disconnect(1, 2);
    net.connect(2, 3);
    assert_eq!(net.delivered_count(3, id), 1);
    assert_eq!(net.inbox_payload(3, id).unwrap(), data);
    assert_eq!(net.held(3), 0, "fragments are dropped once reassembled");
    let delivered = &net.router(3).store().list_delivered().unwrap()[0];
    assert_eq!(delivered.len, 1 << 20);
}

#[test]
fn missing_fragment_expires_cleanly_without_delivery() {
    let mut net = Net::new(&[1, 2], DtnConfig::default());
    // The fragment at offset 128 KiB never arrives.
    net.filter = Some(Box::new(|_, _, frame| match frame {
        Frame::Bundle { bytes } => {
            let bundle = Bundle::decode(bytes, &Default::default()).unwrap();
            bundle.key().offset != 128 * 1024
        }
        Frame::Ack { .. } => true,
    }));
    net.connect(1, 2);
    let id = net.send(1, inbox(2), payload(300_000, 5), Duration::from_secs(900));
    net.advance(Duration::from_secs(899));
    assert_eq!(net.held(2), 4);
    assert_eq!(net.delivered_count(2, id), 0);
    net.advance(Duration::from_secs(1));
    assert_eq!(net.delivered_count(2, id), 0);
    assert!(net.events(2).contains(&DtnEvent::Expired { id }));
    for n in [1, 2] {
        assert_eq!(net.router(n).store().usage().unwrap(), Default::default());
        assert_eq!(net.router(n).poll_timeout(), None);
    }
}

#[test]
fn crash_mid_flight_loses_nothing_and_delivers_once() {
    let mut net = Net::new(&[1, 2], DtnConfig::default());
    // Only half the fragments get through before both nodes crash.
    let mut budget = 3;
    net.filter = Some(Box::new(move |_, _, frame| match frame {
        Frame::Bundle { .. } if budget > 0 => {
            budget -= 1;
            true
        }
        Frame::Bundle { .. } => false,
        Frame::Ack { .. } => true,
    }));
    let data = payload(400_000, 6);
    let id = net.send(1, inbox(2), data.clone(), HOUR);
    net.connect(1, 2);
    assert_eq!(net.held(2), 3);
    net.restart(1);
    net.restart(2);
    net.filter = None;
    net.advance(Duration::from_secs(120));
    assert_eq!(net.delivered_count(2, id), 1);
    assert_eq!(net.inbox_payload(2, id).unwrap(), data);
    assert_eq!(net.held(1), 0);

    // A crash after delivery: a copy that arrives later is dropped and the receipt is asked
    // for again (it may not have gone out before the crash).
    net.restart(2);
    let receipts_before = net
        .events(2)
        .iter()
        .filter(|e| matches!(e, DtnEvent::ReceiptNeeded { .. }))
        .count();
    let bundle = Bundle {
        primary: {
            let mut p = PrimaryBlock::new(
                inbox(2),
                Eid::new(node(1), "app").unwrap(),
                CreationTimestamp {
                    dtn_time_ms: id.dtn_time_ms,
                    seq: id.seq,
                },
                HOUR,
            );
            p.fragment = Some(ztmesh_dtn::bpv7::FragmentInfo {
                offset: 0,
                total_adu_len: data.len() as u64,
            });
            p
        },
        payload: data[..65536].to_vec(),
    };
    let frame = Frame::Bundle {
        bytes: bundle.encode(),
    }
    .encode();
    let now = net.now;
    net.router(2).handle_frame(node(1), &frame, now).unwrap();
    net.collect_events();
    assert_eq!(net.delivered_count(2, id), 1);
    let receipts_after = net
        .events(2)
        .iter()
        .filter(|e| matches!(e, DtnEvent::ReceiptNeeded { .. }))
        .count();
    assert_eq!(receipts_after, receipts_before + 1);
    assert_eq!(net.held(2), 0);
}

#[test]
fn restart_with_all_fragments_stored_but_not_delivered_delivers() {
    let config = DtnConfig::default();
    let data = payload(100_000, 7);
    let mut source = Router::new(node(1), config.clone(), MemoryStore::new()).unwrap();
    let now = start();
    source.handle_link_up(node(2), now);
    let id = source
        .accept_local(inbox(2), "app", data.clone(), HOUR, now)
        .unwrap();
    // Store the fragments straight into B's store, as if B crashed after the last insert.
    let mut store = MemoryStore::new();
    while let Some(t) = source.poll_transmit() {
        let Frame::Bundle { bytes } = Frame::decode(&t.frame, &config.limits).unwrap() else {
            continue;
        };
        let bundle = Bundle::decode(&bytes, &config.limits).unwrap();
        let record = ztmesh_dtn::HeldBundle::new(&bundle, bytes.len(), Some(node(1)), now);
        store.insert_held(&[(record, bytes)]).unwrap();
    }
    let mut dest = Router::new(node(2), config, store).unwrap();
    assert!(matches!(dest.poll_event(), Some(DtnEvent::Delivered { id: d, .. }) if d == id));
    assert_eq!(dest.store().delivered_payload(&id).unwrap().unwrap(), data);
    assert_eq!(dest.store().list_held().unwrap().len(), 0);
}

#[test]
fn creation_ids_stay_unique_across_restarts_when_the_clock_steps_back() {
    let config = DtnConfig::default();
    let mut router = Router::new(node(1), config.clone(), MemoryStore::new()).unwrap();
    let t = start();
    let a = router
        .accept_local(inbox(2), "app", vec![1], HOUR, t)
        .unwrap();
    let b = router
        .accept_local(inbox(2), "app", vec![2], HOUR, t)
        .unwrap();
    assert_eq!((a.dtn_time_ms, a.seq + 1), (b.dtn_time_ms, b.seq));
    let mut router = Router::new(node(1), config, router.into_store()).unwrap();
    let c = router
        .accept_local(
            inbox(2),
            "app",
            vec![3],
            HOUR,
            t.saturating_sub(Duration::from_secs(5)),
        )
        .unwrap();
    assert!(c > b, "{c} after {b}");
    assert_eq!(router.store().list_held().unwrap().len(), 3);
}

#[test]
fn stored_bundle_and_byte_bounds_refuse_local_accepts() {
    let config = DtnConfig {
        max_stored_bundles: 2,
        max_stored_bytes: 10_000,
        ..DtnConfig::default()
    };
    let mut router = Router::new(node(1), config, MemoryStore::new()).unwrap();
    let now = start();
    for _ in 0..2 {
        router
            .accept_local(inbox(2), "app", vec![0; 100], HOUR, now)
            .unwrap();
    }
    let full = router.accept_local(inbox(2), "app", vec![0; 100], HOUR, now);
    assert!(matches!(full, Err(DtnError::StoreFull { bundles: 2, .. })));
    assert_eq!(full.unwrap_err().http_status(), 507);

    let config = DtnConfig {
        max_stored_bytes: 10_000,
        ..DtnConfig::default()
    };
    let mut router = Router::new(node(1), config, MemoryStore::new()).unwrap();
    router
        .accept_local(inbox(2), "app", vec![0; 9_000], HOUR, now)
        .unwrap();
    assert!(matches!(
        router.accept_local(inbox(2), "app", vec![0; 2_000], HOUR, now),
        Err(DtnError::StoreFull { .. })
    ));
    // The refused accept did not consume anything.
    assert_eq!(router.store().list_held().unwrap().len(), 1);
}

#[test]
fn relay_refuses_copies_when_full_and_the_sender_keeps_trying() {
    let mut net = Net::new(&[1, 2, 3], DtnConfig::default());
    net.routers.insert(
        node(2),
        Router::new(
            node(2),
            DtnConfig {
                max_stored_bundles: 1,
                ..DtnConfig::default()
            },
            MemoryStore::new(),
        )
        .unwrap(),
    );
    net.connect(1, 2);
    let first = net.send(1, inbox(3), b"one".to_vec(), HOUR);
    let second = net.send(1, inbox(3), b"two".to_vec(), HOUR);
    assert_eq!(net.held(2), 1);
    assert_eq!(net.refusals(2), vec![RefuseReason::StoreFull]);
    // B delivers its copy to C, has room again, and takes A's retry.
    net.connect(2, 3);
    net.advance(Duration::from_secs(5));
    assert_eq!(net.delivered_count(3, first), 1);
    assert_eq!(net.delivered_count(3, second), 1);
}

#[test]
fn outstanding_sends_per_peer_are_bounded() {
    let config = DtnConfig {
        max_outstanding_per_peer: 2,
        ack_timeout: Duration::from_secs(10),
        ..DtnConfig::default()
    };
    let limits = config.limits.clone();
    let mut router = Router::new(node(1), config, MemoryStore::new()).unwrap();
    let mut now = start();
    for n in 0..5u8 {
        router
            .accept_local(inbox(2), "app", vec![n], HOUR, now)
            .unwrap();
    }
    // The peer never acknowledges.
    router.handle_link_up(node(2), now);
    let mut sent: Vec<(Timestamp, u64)> = Vec::new();
    let deadline = start().saturating_add(Duration::from_secs(120));
    loop {
        while let Some(transmit) = router.poll_transmit() {
            let Frame::Bundle { bytes } = Frame::decode(&transmit.frame, &limits).unwrap() else {
                panic!("only bundles are sent");
            };
            sent.push((now, Bundle::decode(&bytes, &limits).unwrap().id().seq));
        }
        now = router.poll_timeout().unwrap();
        if now > deadline {
            break;
        }
        router.handle_timeout(now).unwrap();
    }
    let distinct_by = |t: Timestamp| {
        let mut seqs: Vec<u64> = sent
            .iter()
            .filter(|(at, _)| *at <= t)
            .map(|(_, s)| *s)
            .collect();
        seqs.sort();
        seqs.dedup();
        seqs
    };
    // Only two pieces are in flight while their retries (1, 3, 7, 15 s) keep them fresh.
    assert_eq!(
        distinct_by(start().saturating_add(Duration::from_secs(20))),
        vec![0, 1]
    );
    assert_eq!(sent.iter().filter(|(at, _)| *at == start()).count(), 2);
    // Once the backoff exceeds the ack timeout, slots free up between retries and the
    // others get their turn, still never more than two within any ack timeout.
    assert_eq!(distinct_by(deadline), vec![0, 1, 2, 3, 4]);
    for (at, _) in &sent {
        let window_end = at.saturating_add(Duration::from_secs(10));
        let mut in_window: Vec<u64> = sent
            .iter()
            .filter(|(t, _)| t >= at && *t < window_end)
            .map(|(_, s)| *s)
            .collect();
        in_window.sort();
        in_window.dedup();
        assert!(in_window.len() <= 2, "{in_window:?} within 10 s of {at:?}");
    }
}

#[test]
fn reassembly_buffers_are_bounded() {
    let config = DtnConfig {
        max_reassemblies: 1,
        ..DtnConfig::default()
    };
    let mut net = Net::new(&[1, 2], DtnConfig::default());
    net.routers.insert(
        node(2),
        Router::new(node(2), config, MemoryStore::new()).unwrap(),
    );
    // The first ADU's last fragment is lost at first, so its buffer is still open when the
    // second ADU's fragments arrive.
    net.filter = Some(Box::new(|_, _, frame| match frame {
        Frame::Bundle { bytes } => {
            let key = Bundle::decode(bytes, &Default::default()).unwrap().key();
            !(key.id.seq == 0 && key.offset == 131_072)
        }
        Frame::Ack { .. } => true,
    }));
    let first = net.send(1, inbox(2), payload(150_000, 8), HOUR);
    let second = net.send(1, inbox(2), payload(150_000, 9), HOUR);
    assert_eq!((first.seq, second.seq), (0, 1));
    net.connect(1, 2);
    assert_eq!(net.refusals(2), vec![RefuseReason::ReassemblyFull; 3]);
    assert_eq!(net.held(2), 2);
    net.filter = None;
    net.advance(Duration::from_secs(10));
    assert_eq!(net.delivered_count(2, first), 1);
    assert_eq!(net.delivered_count(2, second), 1);
}

#[test]
fn adu_and_lifetime_bounds_refuse_bundles_and_requests() {
    let config = DtnConfig {
        max_adu_len: 1000,
        max_lifetime: HOUR,
        ..DtnConfig::default()
    };
    let mut router = Router::new(node(2), config, MemoryStore::new()).unwrap();
    let now = start();
    assert!(matches!(
        router.accept_local(inbox(3), "app", vec![0; 1001], HOUR, now),
        Err(DtnError::Request(RequestError::PayloadTooLarge {
            len: 1001,
            max: 1000
        }))
    ));
    for ttl in [Duration::ZERO, HOUR + Duration::from_millis(1)] {
        assert!(matches!(
            router.accept_local(inbox(3), "app", vec![0], ttl, now),
            Err(DtnError::Request(RequestError::Lifetime { .. }))
        ));
    }
    assert!(matches!(
        router.accept_local(inbox(3), "BAD", vec![0], HOUR, now),
        Err(DtnError::Request(RequestError::Eid(_)))
    ));

    let creation = CreationTimestamp {
        dtn_time_ms: ztmesh_dtn::bpv7::dtn_time_from_timestamp(now).unwrap(),
        seq: 0,
    };
    let source = Eid::new(node(1), "app").unwrap();
    let frame = |bundle: &Bundle| {
        Frame::Bundle {
            bytes: bundle.encode(),
        }
        .encode()
    };
    let mut huge = Bundle {
        primary: PrimaryBlock::new(inbox(2), source.clone(), creation, HOUR),
        payload: vec![0; 10],
    };
    huge.primary.fragment = Some(ztmesh_dtn::bpv7::FragmentInfo {
        offset: 0,
        total_adu_len: 1_000_000,
    });
    // A clock up to `max_clock_skew` (5 min) ahead is tolerated; beyond, the bundle would
    // outlive any lifetime accepted here.
    let ahead = CreationTimestamp {
        dtn_time_ms: creation.dtn_time_ms + 299_000,
        seq: 0,
    };
    let skewed = Bundle {
        primary: PrimaryBlock::new(inbox(3), source.clone(), ahead, HOUR),
        payload: vec![0],
    };
    router.handle_frame(node(1), &frame(&skewed), now).unwrap();
    assert!(router.poll_event().is_none());
    assert!(router.poll_transmit().is_some(), "stored and acknowledged");
    let long = Bundle {
        primary: PrimaryBlock::new(inbox(3), source.clone(), creation, HOUR + 301 * SECOND),
        payload: vec![0],
    };
    let old = Bundle {
        primary: PrimaryBlock::new(
            inbox(3),
            source,
            CreationTimestamp {
                dtn_time_ms: creation.dtn_time_ms - 2 * 3_600_000,
                seq: 0,
            },
            HOUR,
        ),
        payload: vec![0],
    };
    for bundle in [&huge, &long, &old] {
        router.handle_frame(node(1), &frame(bundle), now).unwrap();
    }
    let reasons: Vec<_> = std::iter::from_fn(|| router.poll_event())
        .map(|e| match e {
            DtnEvent::Refused { reason, .. } => reason,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            RefuseReason::AduTooLarge,
            RefuseReason::LifetimeTooLong,
            RefuseReason::Expired
        ]
    );
    // Refused bundles are not acknowledged.
    assert!(router.poll_transmit().is_none());
}

#[test]
fn tombstone_bound_refuses_further_deliveries() {
    let config = DtnConfig {
        max_tombstones: 1,
        ..DtnConfig::default()
    };
    let mut net = Net::new(&[1, 2], DtnConfig::default());
    net.routers.insert(
        node(2),
        Router::new(node(2), config, MemoryStore::new()).unwrap(),
    );
    net.connect(1, 2);
    let first = net.send(1, inbox(2), b"1".to_vec(), Duration::from_secs(60));
    let second = net.send(1, inbox(2), b"2".to_vec(), HOUR);
    assert_eq!(net.delivered_count(2, first), 1);
    assert_eq!(net.delivered_count(2, second), 0);
    assert_eq!(net.refusals(2), vec![RefuseReason::TombstonesFull]);
    // When the first id is forgotten at its expiry, the second gets through on a retry.
    net.advance(Duration::from_secs(120));
    assert_eq!(net.delivered_count(2, second), 1);
}

#[test]
fn transmit_and_event_queues_are_bounded() {
    let config = DtnConfig {
        max_queued_transmits: 1,
        max_queued_events: 1,
        ..DtnConfig::default()
    };
    let mut router = Router::new(node(1), config, MemoryStore::new()).unwrap();
    let now = start();
    for n in 0..3u8 {
        router
            .accept_local(inbox(1), "app", vec![n], HOUR, now)
            .unwrap();
    }
    assert_eq!(router.dropped_events(), 2);
    assert!(router.poll_event().is_some());
    assert!(router.poll_event().is_none());
    // Delivered bundles stay listed even when their events were dropped.
    assert_eq!(router.store().list_delivered().unwrap().len(), 3);

    for n in 0..3u8 {
        router
            .accept_local(inbox(2), "app", vec![n], HOUR, now)
            .unwrap();
    }
    router.handle_link_up(node(2), now);
    assert_eq!(router.dropped_transmits(), 2);
    assert!(router.poll_transmit().is_some());
    assert!(router.poll_transmit().is_none());
    // The dropped ones go out on their retry.
    let next = router.poll_timeout().unwrap();
    router.handle_timeout(next).unwrap();
    assert!(router.poll_transmit().is_some());
}

#[test]
fn store_failure_is_reported_and_nothing_is_acknowledged() {
    let mut router = Router::new(node(1), DtnConfig::default(), MemoryStore::new()).unwrap();
    let now = start();
    router.store_mut().fail_writes(true);
    assert!(matches!(
        router.accept_local(inbox(2), "app", vec![1], HOUR, now),
        Err(DtnError::Store(_))
    ));
    let mut sender = Router::new(node(2), DtnConfig::default(), MemoryStore::new()).unwrap();
    sender.handle_link_up(node(1), now);
    sender
        .accept_local(inbox(3), "app", vec![1], HOUR, now)
        .unwrap();
    let transmit = sender.poll_transmit().unwrap();
    router.handle_link_up(node(2), now);
    assert!(matches!(
        router.handle_frame(node(2), &transmit.frame, now),
        Err(DtnError::Store(_))
    ));
    assert!(
        router.poll_transmit().is_none(),
        "no ack for what was not stored"
    );
    router.store_mut().fail_writes(false);
    router.handle_frame(node(2), &transmit.frame, now).unwrap();
    assert!(router.poll_transmit().is_some());
}

#[test]
fn an_unworkable_config_is_refused_at_construction() {
    let config = DtnConfig {
        max_fragment_payload: 0,
        ..DtnConfig::default()
    };
    assert!(matches!(
        Router::new(node(1), config, MemoryStore::new()),
        Err(DtnError::Config(_))
    ));
}

#[test]
fn acks_for_pieces_never_sent_are_ignored() {
    let mut router = Router::new(node(1), DtnConfig::default(), MemoryStore::new()).unwrap();
    let now = start();
    let id = router
        .accept_local(inbox(3), "app", vec![1], HOUR, now)
        .unwrap();
    let ack = Frame::Ack {
        key: FragmentKey { id, offset: 0 },
    }
    .encode();
    // No link, so nothing was sent to node 2: its ack changes nothing.
    router.handle_frame(node(2), &ack, now).unwrap();
    assert!(router.store().list_held().unwrap()[0].acked_by.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_frames_are_errors_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut router = Router::new(node(1), DtnConfig::default(), MemoryStore::new()).unwrap();
        router.handle_link_up(node(2), start());
        let _ = router.handle_frame(node(2), &bytes, start());
        prop_assert_eq!(router.store().usage().unwrap().bundles, 0);
    }

    #[test]
    fn corrupted_bundle_frames_are_refused(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut sender = Router::new(node(2), DtnConfig::default(), MemoryStore::new()).unwrap();
        sender.handle_link_up(node(1), start());
        sender.accept_local(inbox(1), "app", b"payload".to_vec(), HOUR, start()).unwrap();
        let mut frame = sender.poll_transmit().unwrap().frame;
        let i = at.index(frame.len());
        frame[i] ^= xor;
        let mut router = Router::new(node(1), DtnConfig::default(), MemoryStore::new()).unwrap();
        router.handle_link_up(node(2), start());
        let result = router.handle_frame(node(2), &frame, start());
        // Either refused as malformed, or (a flip in the frame header that still parses as
        // an ack) harmless: never a delivery of corrupted bytes.
        if result.is_ok() {
            prop_assert!(router.store().list_delivered().unwrap().is_empty());
        } else {
            prop_assert!(result.unwrap_err().is_peer_fault());
        }
    }
}
