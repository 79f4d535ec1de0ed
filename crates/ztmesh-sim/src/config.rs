//! What a simulation is made of: how many nodes, which seed, the cores' own configurations, and
//! how the links between nodes behave by default.

use std::time::Duration;

use ztmesh_core::Timestamp;
use ztmesh_dtn::DtnConfig;
use ztmesh_gossip::GossipConfig;

use crate::SimError;

/// 2023-11-14T22:13:20Z: a realistic Unix time, well after the DTN epoch (2000), so creation
/// timestamps and certificates-to-be look like the real thing.
pub const DEFAULT_START: Timestamp = Timestamp::from_unix_millis(1_700_000_000_000);

/// How one link carries frames: a delay drawn uniformly from `min_delay..=max_delay` per frame
/// (frames on one direction of a link still arrive in order, as on a TCP connection) and an
/// independent loss probability per frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    /// Shortest one-way delay.
    pub min_delay: Duration,
    /// Longest one-way delay.
    pub max_delay: Duration,
    /// Probability in `0.0..=1.0` that a frame is lost.
    pub loss: f64,
}

impl LinkParams {
    /// A link with the given delay range and loss probability.
    pub fn new(min_delay: Duration, max_delay: Duration, loss: f64) -> Result<Self, SimError> {
        let params = LinkParams {
            min_delay,
            max_delay,
            loss,
        };
        params.validate()?;
        Ok(params)
    }

    /// The same delays with another loss probability.
    pub fn with_loss(self, loss: f64) -> Self {
        LinkParams { loss, ..self }
    }

    /// Checks the delay range and the probability.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.min_delay > self.max_delay {
            return Err(SimError::Config("link min_delay exceeds max_delay".into()));
        }
        // Written so that NaN fails too.
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(SimError::Config(
                "link loss must be within 0.0..=1.0".into(),
            ));
        }
        Ok(())
    }
}

impl Default for LinkParams {
    /// 5 to 50 ms one way, no loss: a LAN-to-WAN spread without surprises.
    fn default() -> Self {
        LinkParams {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            loss: 0.0,
        }
    }
}

/// The configuration of a [`crate::Simulation`]. One `seed` and one configuration give the same
/// run, byte for byte.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds everything random: node keys, each core's RNG, loss, delays and topology helpers.
    pub seed: u64,
    /// Number of nodes, indexed `0..nodes`.
    pub nodes: usize,
    /// Virtual time at which the run starts.
    pub start: Timestamp,
    /// Configuration of every node's gossip core.
    pub gossip: GossipConfig,
    /// Configuration of every node's DTN router.
    pub dtn: DtnConfig,
    /// Parameters of links created without explicit ones.
    pub link: LinkParams,
    /// Hop limit of messages published through the simulator.
    pub hop_limit: u8,
    /// Lifetime of the delivery receipts a bundle's destination publishes.
    pub receipt_ttl: Duration,
    /// Whether a node closes its link to a peer it learns is revoked, as the real runtime does
    /// (DESIGN.md §3 "Transport"). Turn it off to check that the gossip core alone refuses a
    /// revoked peer whose link stays up.
    pub close_links_to_revoked: bool,
    /// Whether a broken invariant ([`crate::Violation`]) panics at the step that broke it
    /// (what tests want: the panic names the moment) rather than only being recorded.
    pub panic_on_violation: bool,
}

impl SimConfig {
    /// `nodes` nodes under the mesh defaults, with `seed`.
    pub fn new(seed: u64, nodes: usize) -> Self {
        SimConfig {
            seed,
            nodes,
            start: DEFAULT_START,
            gossip: GossipConfig::default(),
            dtn: DtnConfig::default(),
            link: LinkParams::default(),
            hop_limit: 16,
            receipt_ttl: Duration::from_secs(24 * 3600),
            close_links_to_revoked: true,
            panic_on_violation: true,
        }
    }

    /// Checks everything a run depends on, the cores' configurations included.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.nodes == 0 {
            return Err(SimError::Config(
                "a simulation needs at least one node".into(),
            ));
        }
        self.link.validate()?;
        self.gossip
            .validate()
            .map_err(|e| SimError::Config(e.to_string()))?;
        self.dtn.validate().map_err(SimError::Dtn)?;
        if self.receipt_ttl.is_zero() {
            return Err(SimError::Config("receipt_ttl must be positive".into()));
        }
        Ok(())
    }
}
