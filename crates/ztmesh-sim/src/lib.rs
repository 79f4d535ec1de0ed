//! A deterministic simulator of whole ztmesh meshes (DESIGN.md §7 item 2): N nodes, each
//! running the real sans-IO cores ([`ztmesh_gossip::Gossip`] and [`ztmesh_dtn::Router`] over a
//! [`ztmesh_dtn::MemoryStore`]), joined by simulated links with delay, loss, partitions and
//! crashes, on one virtual clock.
//!
//! It is for testing the protocols at a scale and with a hostility no process-level test can
//! afford: hundreds of nodes, lossy links, split brains, kill -9 in the middle of a transfer,
//! all in a unit test that replays byte for byte from one seed. It must never touch a socket,
//! a wall clock or ambient randomness, nor reimplement what the cores decide: it only moves
//! their frames, wakes them when they ask, and plays the node runtime's part (signing,
//! membership, revocation handling, delivery receipts) as the real node does.
//!
//! ```
//! use std::time::Duration;
//! use ztmesh_gossip::{kinds::Health, MessageKind};
//! use ztmesh_sim::{SimConfig, Simulation};
//!
//! let mut sim = Simulation::new(SimConfig::new(7, 10)).unwrap();
//! sim.add_ring().unwrap();
//! let body = Health { seq: 1, uptime_ms: 0, links: 2 }.encode().unwrap();
//! let id = sim
//!     .publish(0, MessageKind::Health, body, Duration::from_secs(60))
//!     .unwrap();
//! sim.run_until(|sim| sim.is_fully_covered(&id), Duration::from_secs(30))
//!     .unwrap();
//! println!("{}", sim.report());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod error;
mod event_queue;
mod membership;
mod network;
mod node;
mod records;
mod report;
mod simulation;

#[cfg(test)]
mod tests;

pub use config::{LinkParams, SimConfig, DEFAULT_START};
pub use error::{SimError, Violation};
pub use membership::node_id_of;
pub use network::{Channel, ChannelStats, FrameFate, NetworkStats};
pub use records::{BundleRecord, MessageFrame};
pub use report::{BundleSummary, MessageReport, Report};
pub use simulation::{Simulation, BUNDLE_SERVICE, PLACEHOLDER_CRL, SOURCE_SERVICE};
