//! One seed, one run: the same seed replays byte for byte, another seed does not.

use std::time::Duration;

use super::util::*;
use crate::Report;

/// A bit of everything: loss, gossip, a bundle across the mesh, a partition, a crash.
fn scenario(seed: u64) -> (Report, [u8; 32], u64) {
    let nodes = 40;
    let mut sim = mesh(seed, nodes, 2, 0.1);
    for seq in 0..5 {
        publish_health(&mut sim, (seq as usize * 7) % nodes, seq);
        sim.run_for(Duration::from_millis(300));
    }
    sim.send_bundle(3, 29, vec![7; 3000], HOUR)
        .expect("accepted");
    let left: Vec<usize> = (0..nodes / 2).collect();
    sim.partition(&[&left]).expect("partition");
    publish_health(&mut sim, 1, 99);
    sim.run_for(Duration::from_secs(5));
    sim.crash(11).expect("crash");
    sim.heal();
    sim.run_for(Duration::from_secs(5));
    sim.restart(11).expect("restart");
    sim.run_for(Duration::from_secs(20));
    (sim.report(), sim.trace_digest(), sim.steps())
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let (first, first_trace, first_steps) = scenario(6);
    let (again, again_trace, again_steps) = scenario(6);
    eprintln!("{first}");
    assert_eq!(first, again);
    assert_eq!(first.to_string(), again.to_string());
    assert_eq!(first_trace, again_trace);
    assert_eq!(first_steps, again_steps);
    assert_eq!(first.bundles.delivered, 1);

    let (other, other_trace, _) = scenario(7);
    assert_ne!(first_trace, other_trace);
    assert_ne!(first, other);
}
