//! The simulator's own contract: refused calls, frames cut by crashes, links closed over a
//! revocation, the deadline of `run_until`.

use std::time::Duration;

use ztmesh_gossip::kinds::RevocationRecord;
use ztmesh_gossip::{GossipError, MessageKind, OriginRefusal, Refusal};

use super::util::*;
use crate::{FrameFate, LinkParams, SimConfig, SimError, Simulation, PLACEHOLDER_CRL};

#[test]
fn impossible_calls_are_refused_and_change_nothing() {
    let mut sim = Simulation::new(SimConfig::new(8, 3)).unwrap();
    assert!(matches!(sim.add_link(0, 0), Err(SimError::SelfLink(0))));
    assert!(matches!(sim.add_link(0, 3), Err(SimError::NoSuchNode(3))));
    assert!(matches!(
        sim.set_link_up(0, 1, false),
        Err(SimError::NoSuchLink(0, 1))
    ));
    assert!(matches!(sim.restart(1), Err(SimError::Running(1))));
    sim.crash(1).unwrap();
    assert!(matches!(sim.crash(1), Err(SimError::Crashed(1))));
    assert!(matches!(
        sim.publish(1, MessageKind::Health, health(1), HOUR),
        Err(SimError::Crashed(1))
    ));
    assert!(matches!(
        sim.send_bundle(1, 0, vec![1], HOUR),
        Err(SimError::Crashed(1))
    ));
    assert!(matches!(
        sim.publish(0, MessageKind::Health, vec![0xff], HOUR),
        Err(SimError::Gossip(_))
    ));
    let loss = LinkParams::default().with_loss(1.5);
    assert!(matches!(
        sim.set_all_link_params(loss),
        Err(SimError::Config(_))
    ));
    assert!(matches!(
        Simulation::new(SimConfig::new(8, 0)),
        Err(SimError::Config(_))
    ));
    let started = sim.now();
    let waited = sim.run_until(|_| false, Duration::from_secs(5));
    assert!(matches!(
        waited,
        Err(SimError::Deadline { waited_ms: 5000 })
    ));
    assert_eq!(sim.now(), started.saturating_add(Duration::from_secs(5)));
}

#[test]
fn frames_in_flight_to_a_crashed_node_are_lost() {
    let mut config = SimConfig::new(9, 2);
    config.link =
        LinkParams::new(Duration::from_millis(100), Duration::from_millis(100), 0.0).expect("link");
    let mut sim = Simulation::new(config).unwrap();
    sim.add_link(0, 1).unwrap();
    sim.run_for(SECOND);
    let id = publish_health(&mut sim, 0, 1);
    sim.run_for(Duration::from_millis(50));
    sim.crash(1).unwrap();
    sim.run_for(SECOND);
    let frame = sim
        .message_frames()
        .iter()
        .find(|f| f.id == id)
        .expect("pushed");
    assert_eq!(frame.fate, FrameFate::Cut);
    assert_eq!(sim.coverage(&id), 1);
    // Restarted, the node catches up through the digest exchange of the new link.
    sim.restart(1).unwrap();
    sim.run_until(|sim| sim.is_fully_covered(&id), Duration::from_secs(5))
        .expect("caught up");
}

#[test]
fn nodes_close_their_links_to_a_node_they_learn_is_revoked() {
    let mut sim = mesh(10, 6, 1, 0.0);
    let revoked = 2;
    let neighbours = sim.neighbours(revoked);
    assert!(neighbours.iter().all(|&n| sim.is_live(revoked, n)));
    let record = sim.publish_revocation(4, &[revoked], HOUR).unwrap();
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.coverage(&record), 5);
    assert!(neighbours.iter().all(|&n| !sim.is_live(revoked, n)));
    // Only the CA signs revocations: a member's record is refused at its own node.
    let body = RevocationRecord {
        crl: PLACEHOLDER_CRL.to_vec(),
        revoked_nodes: vec![sim.node_id(3).unwrap()],
    }
    .encode()
    .unwrap();
    let forged = sim.publish(0, MessageKind::Revocation, body, HOUR);
    assert!(
        matches!(
            forged,
            Err(SimError::Gossip(GossipError::Local(Refusal::Origin {
                reason: OriginRefusal::KindNotAllowed,
                ..
            })))
        ),
        "{forged:?}"
    );
    assert!(!sim.knows_revoked(1, &sim.node_id(3).unwrap()));
}
