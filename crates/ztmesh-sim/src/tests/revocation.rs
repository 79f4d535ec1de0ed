//! A CA-signed revocation record spreads to every node of 200 but the one it names, and from
//! then on nobody but the revoked node itself delivers or relays its messages.

use std::collections::BTreeSet;
use std::time::Duration;

use ztmesh_gossip::MessageId;

use super::util::*;
use crate::{FrameFate, LinkParams, SimConfig};

const NODES: usize = 200;

#[test]
fn revocation_reaches_everyone_and_silences_the_revoked_node() {
    let seed = 3;
    let mut config = SimConfig::new(seed, NODES);
    config.link = LinkParams::default().with_loss(0.05);
    // Links to the revoked node stay up, so its frames keep reaching its neighbours and only
    // their gossip cores stand between it and the mesh.
    config.close_links_to_revoked = false;
    let mut sim = mesh_with(config, 3);
    let revoked = 17;
    let revoked_id = sim.node_id(revoked).expect("node");
    let ca_host = 150;

    // Before its revocation the node is a member like any other.
    let mut early = Vec::new();
    for seq in 0..3 {
        early.push(publish_health(&mut sim, revoked, seq));
    }
    sim.run_until(
        |sim| early.iter().all(|id| sim.is_fully_covered(id)),
        Duration::from_secs(30),
    )
    .expect("the node's early messages reach everyone");

    let revocation = sim
        .publish_revocation(ca_host, &[revoked], HOUR)
        .expect("publish revocation");
    let members: Vec<usize> = (0..NODES).filter(|&n| n != revoked).collect();
    let took = sim
        .run_until(
            |sim| {
                members
                    .iter()
                    .all(|&n| sim.delivered_at(n, &revocation).is_some())
            },
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}: revocation reached {}", sim.coverage(&revocation)));
    let interval = sim.config().gossip.anti_entropy_interval_ms;
    eprintln!(
        "revocation reached all {} other nodes in {} ms ({} anti-entropy rounds)",
        members.len(),
        took.as_millis(),
        (took.as_millis() as u64).div_ceil(interval)
    );
    // Measured with seed 3: 4.1 s, 3 rounds. The revoked node itself never hears of it: each
    // neighbour drops it as a gossip peer the moment it learns, before relaying anything.
    assert_eq!(sim.coverage(&revocation), NODES - 1);
    assert!(took <= Duration::from_secs(30), "revocation took {took:?}");
    for node in (0..NODES).filter(|&n| n != revoked) {
        assert!(sim.knows_revoked(node, &revoked_id), "node {node}");
        // Its stored messages were purged: anti-entropy cannot hand them out again.
        let gossip = sim.gossip(node).expect("running");
        assert!(gossip.is_revoked(&revoked_id));
        assert!(
            gossip.messages().all(|m| m.origin != revoked_id),
            "node {node} still stores a message of the revoked node"
        );
    }

    let mut late = Vec::new();
    for seq in 10..15 {
        late.push(publish_health(&mut sim, revoked, seq));
        sim.run_for(Duration::from_millis(500));
    }
    sim.run_for(Duration::from_secs(30));
    for id in &late {
        assert_eq!(
            sim.coverage(id),
            1,
            "only the revoked node delivers its messages"
        );
        assert!(sim.delivered_at(revoked, id).is_some());
    }

    // Frames carrying any of its messages, sent by another node after that node had delivered
    // the revocation: none. (The simulator would also have panicked on the first one.)
    let ours: BTreeSet<MessageId> = early.iter().chain(&late).copied().collect();
    let frames = sim.message_frames();
    let relayed_after_revocation = frames
        .iter()
        .filter(|f| ours.contains(&f.id) && f.from != revoked)
        .filter(|f| {
            sim.delivered_at(f.from, &revocation)
                .is_some_and(|t| t <= f.sent_at)
        })
        .count();
    assert_eq!(relayed_after_revocation, 0);
    // The revoked node did keep talking, and its neighbours' cores were what refused it.
    let knocked = frames
        .iter()
        .filter(|f| late.contains(&f.id) && f.fate == FrameFate::Delivered)
        .count();
    assert!(knocked > 0, "the revoked node's late frames reached nobody");
    let refused: u64 = sim
        .neighbours(revoked)
        .into_iter()
        .map(|n| sim.gossip_frame_errors(n))
        .sum();
    assert!(
        refused >= knocked as u64,
        "{refused} refusals for {knocked} frames"
    );
    let report = sim.report();
    eprintln!("{report}");
    assert_eq!(report.violations, 0);
}
