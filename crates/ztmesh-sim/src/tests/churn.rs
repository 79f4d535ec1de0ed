//! Everything at once on a small mesh: bundles between random pairs and gossip from random
//! origins while nodes crash and restart, partitions come and go and links lose 10 % of their
//! frames; then calm, after which nothing accepted may be missing or left behind.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::util::*;
use crate::{LinkParams, SimConfig, Simulation};

const NODES: usize = 25;

fn churn(seed: u64) {
    let mut config = SimConfig::new(seed, NODES);
    config.link = LinkParams::default().with_loss(0.1);
    config.dtn.max_fragment_payload = 700;
    let mut sim = Simulation::new(config).expect("config");
    sim.add_ring().unwrap();
    sim.add_random_links(1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ttl = Duration::from_secs(300);
    let (mut bundles, mut messages, mut crashes) = (Vec::new(), Vec::new(), 0);
    for seq in 0..150 {
        let (from, to) = (rng.gen_range(0..NODES), rng.gen_range(0..NODES));
        if sim.is_running(from) && rng.gen_bool(0.4) {
            let payload: Vec<u8> = (0..rng.gen_range(1..3000)).map(|_| rng.gen()).collect();
            bundles.push(sim.send_bundle(from, to, payload, ttl).expect("accepted"));
        }
        if sim.is_running(from) && rng.gen_bool(0.2) {
            messages.push(publish_health(&mut sim, from, seq));
        }
        let node = rng.gen_range(0..NODES);
        if rng.gen_bool(0.15) {
            if sim.is_running(node) {
                sim.crash(node).unwrap();
                crashes += 1;
            } else {
                sim.restart(node).unwrap();
            }
        }
        if rng.gen_bool(0.05) {
            let island: Vec<usize> = (0..NODES).filter(|_| rng.gen_bool(0.5)).collect();
            sim.partition(&[&island]).unwrap();
        }
        if rng.gen_bool(0.05) {
            sim.heal();
        }
        sim.run_for(Duration::from_millis(rng.gen_range(10..1500)));
    }
    assert!(crashes > 5, "seed {seed}: only {crashes} crashes");

    sim.heal();
    for node in 0..NODES {
        if !sim.is_running(node) {
            sim.restart(node).unwrap();
        }
    }
    // Gossip keeps nothing across a crash: a message whose every holder crashed before passing
    // it on is gone, by design. Any message some running node still holds must spread.
    let held: Vec<_> = messages
        .iter()
        .filter(|id| (0..NODES).any(|n| sim.gossip(n).is_some_and(|g| g.message(id).is_some())))
        .copied()
        .collect();
    sim.run_for(Duration::from_secs(200));
    for id in &held {
        assert!(
            sim.is_fully_covered(id),
            "seed {seed}: message {id:?} stuck"
        );
    }
    for id in &bundles {
        let record = sim.bundle(id).expect("recorded");
        // The router delivers at most once (the simulator panics otherwise) and, with every
        // bundle still alive through the calm, at least once.
        assert_eq!(record.deliveries, 1, "seed {seed}: bundle {id}");
        for node in 0..NODES {
            assert!(
                !sim.holds_bundle(node, id),
                "seed {seed}: node {node} still holds {id} after its receipt"
            );
        }
    }
    assert!(
        held.len() * 10 >= messages.len() * 8,
        "seed {seed}: most messages survive"
    );
}

#[test]
fn churn_partitions_and_loss_lose_nothing_accepted() {
    for seed in 0..3 {
        churn(seed);
    }
}
