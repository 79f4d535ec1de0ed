//! Epidemic broadcast at scale: 200 nodes, fanout 3, 10 % loss on every link.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::util::*;

const NODES: usize = 200;
const MESSAGES: u64 = 20;

#[test]
fn two_hundred_nodes_under_loss_deliver_every_message_exactly_once() {
    let seed = 1;
    let mut sim = mesh(seed, NODES, 3, 0.10);
    assert_eq!(sim.config().gossip.fanout, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ids = Vec::new();
    for seq in 0..MESSAGES {
        let origin = rng.gen_range(0..NODES);
        ids.push(publish_health(&mut sim, origin, seq));
        sim.run_for(Duration::from_millis(250));
    }
    sim.run_until(
        |sim| ids.iter().all(|id| sim.is_fully_covered(id)),
        Duration::from_secs(60),
    )
    .expect("every message reaches every node within 60 s");
    // Long enough for any late duplicate to show up.
    sim.run_for(Duration::from_secs(10));

    for node in 0..NODES {
        let stats = sim.gossip(node).expect("running").stats();
        // The simulator panics on a second delivery; this also catches a missing one.
        assert_eq!(stats.delivered, MESSAGES, "node {node} deliveries");
    }
    let report = sim.report();
    eprintln!("{report}");
    assert_eq!(report.fully_covered().count(), MESSAGES as usize);
    assert_eq!(report.violations, 0);
    assert!(sim.stats().gossip.lost > 0, "the links did lose frames");
    // Measured with seed 1: full coverage in 1.6 s .. 9.3 s (median 3.8 s), i.e. 1 to 5
    // anti-entropy rounds of 2 s; duplicate ratio 2.91 .. 3.01 (about the fanout: every node
    // pushes each message once to 3 peers). The bounds leave room for other seeds and core
    // tuning, not for a regression in kind.
    let max_coverage_ms = report.max_coverage_ms().expect("covered");
    assert!(
        max_coverage_ms <= 20_000,
        "full coverage took {max_coverage_ms} ms"
    );
    let max_rounds = report.max_rounds().expect("covered");
    assert!(max_rounds <= 10, "{max_rounds} rounds to full coverage");
    let ratio = report.max_duplicate_ratio().expect("messages");
    assert!(
        ratio.is_finite() && (1.0..=4.0).contains(&ratio),
        "duplicate ratio {ratio}"
    );
}
