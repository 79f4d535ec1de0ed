//! Store-and-forward through relays that meet the destination later, signed receipts freeing
//! copies, and crashes that must neither lose nor duplicate an accepted bundle.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ztmesh_dtn::BundleId;
use ztmesh_gossip::MessageKind;

use super::util::*;
use crate::{LinkParams, SimConfig, Simulation};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;

fn deliveries(sim: &Simulation, id: &BundleId) -> u32 {
    sim.bundle(id).expect("accepted").deliveries
}

#[test]
fn bundle_waits_at_a_relay_and_the_receipt_frees_every_copy() {
    // A - B - C, plus D hanging off B. A and C never link; D never meets C.
    let mut sim = Simulation::new(SimConfig::new(4, 4)).expect("config");
    sim.add_link(A, B).unwrap();
    sim.add_link(B, D).unwrap();
    sim.add_link(B, C).unwrap();
    sim.set_link_up(B, C, false).unwrap();

    let id = sim
        .send_bundle(A, C, b"store me, forward me".to_vec(), HOUR)
        .expect("accepted");
    sim.run_until(
        |sim| sim.holds_bundle(B, &id) && sim.holds_bundle(D, &id),
        Duration::from_secs(10),
    )
    .expect("the relays take copies");
    sim.set_link_up(A, B, false).unwrap();
    sim.run_for(Duration::from_secs(30));
    assert_eq!(deliveries(&sim, &id), 0, "C is unreachable");
    for node in [A, B, D] {
        assert!(sim.holds_bundle(node, &id), "node {node} keeps its copy");
    }

    sim.set_link_up(B, C, true).unwrap();
    sim.run_until(
        |sim| deliveries(sim, &id) == 1 && !sim.holds_bundle(B, &id) && !sim.holds_bundle(D, &id),
        Duration::from_secs(30),
    )
    .expect("C gets it from B, and the relays let go");
    let receipt = sim
        .report()
        .messages
        .into_iter()
        .find(|m| m.kind == MessageKind::BundleReceipt)
        .expect("C published a receipt");
    assert_eq!(Some(receipt.origin), sim.node_id(C));
    // D never linked to C, so only C's signed receipt can have freed its copy.
    assert!(sim.delivered_at(D, &receipt.id).is_some());
    assert!(sim.holds_bundle(A, &id), "A, cut off, has not heard yet");

    sim.set_link_up(A, B, true).unwrap();
    sim.run_until(|sim| !sim.holds_bundle(A, &id), Duration::from_secs(30))
        .expect("A learns of the receipt once reconnected and frees its copy");
    sim.run_for(Duration::from_secs(120));
    assert_eq!(deliveries(&sim, &id), 1);
    assert_eq!(sim.report().bundles.delivered, 1);
}

/// One chaotic run: a sender, two relays and a destination; bundles sent while the sender and
/// a relay (and now and then the destination) crash and restart and links flap; then calm.
/// Returns (accepted, delivered, expired).
fn crash_restart_run(seed: u64) -> (usize, usize, usize) {
    const S: usize = 0;
    const R1: usize = 1;
    const R2: usize = 2;
    const DEST: usize = 3;
    let ttl = Duration::from_secs(180);
    let mut config = SimConfig::new(seed, 4);
    config.link = LinkParams::default().with_loss(0.05);
    // Small fragments, so that larger payloads travel in pieces and reassemble at DEST.
    config.dtn.max_fragment_payload = 512;
    let mut sim = Simulation::new(config).expect("config");
    let links = [(S, R1), (R1, DEST), (S, R2), (R2, DEST)];
    for (a, b) in links {
        sim.add_link(a, b).unwrap();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut accepted = Vec::new();
    for _ in 0..90 {
        if sim.is_running(S) && rng.gen_bool(0.3) {
            let payload: Vec<u8> = (0..rng.gen_range(1..2000)).map(|_| rng.gen()).collect();
            accepted.push(sim.send_bundle(S, DEST, payload, ttl).expect("accepted"));
        }
        for (node, p) in [(S, 0.1), (R1, 0.1), (DEST, 0.03)] {
            if rng.gen_bool(p) {
                if sim.is_running(node) {
                    sim.crash(node).unwrap();
                } else {
                    sim.restart(node).unwrap();
                }
            }
        }
        if rng.gen_bool(0.1) {
            let (a, b) = links[rng.gen_range(0..links.len())];
            let up = rng.gen_bool(0.5);
            sim.set_link_up(a, b, up).unwrap();
        }
        sim.run_for(Duration::from_millis(rng.gen_range(100..2000)));
    }
    // Calm: everyone back, every link up, until every lifetime is over.
    for node in [S, R1, DEST] {
        if !sim.is_running(node) {
            sim.restart(node).unwrap();
        }
    }
    for (a, b) in links {
        sim.set_link_up(a, b, true).unwrap();
    }
    sim.run_for(ttl + Duration::from_secs(60));

    let (mut delivered, mut expired) = (0, 0);
    for id in &accepted {
        let record = sim.bundle(id).expect("recorded");
        assert!(record.deliveries <= 1, "seed {seed}: {id} delivered twice");
        if record.deliveries == 1 {
            delivered += 1;
        } else {
            assert!(sim.now() >= record.expires_at, "seed {seed}: {id} lost");
            expired += 1;
        }
        for node in 0..4 {
            assert!(
                !sim.holds_bundle(node, id),
                "seed {seed}: node {node} still holds {id} after its lifetime"
            );
        }
    }
    assert!(sim.violations().is_empty());
    (accepted.len(), delivered, expired)
}

#[test]
fn crashes_never_lose_nor_duplicate_an_accepted_bundle() {
    let (mut accepted, mut delivered, mut expired) = (0, 0, 0);
    for seed in 0..50 {
        let (a, d, e) = crash_restart_run(seed);
        accepted += a;
        delivered += d;
        expired += e;
    }
    eprintln!(
        "50 runs: {accepted} bundles accepted, {delivered} delivered once, {expired} expired"
    );
    assert!(accepted > 500, "only {accepted} bundles");
    // With a calm phase longer than any retry backoff, every bundle gets through.
    assert_eq!(delivered, accepted, "{expired} expired undelivered");
}
