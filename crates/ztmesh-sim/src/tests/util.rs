//! Shared builders for the scenario tests.

use std::time::Duration;

use ztmesh_gossip::kinds::Health;
use ztmesh_gossip::{MessageId, MessageKind};

use crate::{LinkParams, SimConfig, Simulation};

pub(crate) const SECOND: Duration = Duration::from_secs(1);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// A health body; `seq` keeps messages from one origin distinct.
pub(crate) fn health(seq: u64) -> Vec<u8> {
    Health {
        seq,
        uptime_ms: seq * 1000,
        links: 8,
    }
    .encode()
    .expect("valid health body")
}

/// `nodes` nodes on a ring plus `per_node` random links each, every link losing `loss` of its
/// frames, after a second for the link-up exchanges to finish.
pub(crate) fn mesh(seed: u64, nodes: usize, per_node: usize, loss: f64) -> Simulation {
    let mut config = SimConfig::new(seed, nodes);
    config.link = LinkParams::default().with_loss(loss);
    mesh_with(config, per_node)
}

pub(crate) fn mesh_with(config: SimConfig, per_node: usize) -> Simulation {
    let mut sim = Simulation::new(config).expect("valid config");
    sim.add_ring().expect("ring");
    sim.add_random_links(per_node).expect("random links");
    sim.run_for(SECOND);
    sim
}

/// Node `node` publishes health message `seq`, living an hour.
pub(crate) fn publish_health(sim: &mut Simulation, node: usize, seq: u64) -> MessageId {
    sim.publish(node, MessageKind::Health, health(seq), HOUR)
        .expect("publish")
}
