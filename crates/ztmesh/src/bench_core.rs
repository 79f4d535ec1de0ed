//! In-process benchmarks of the gossip and bundle cores.

use anyhow::{bail, Result};
use clap::Args;

/// Options of `ztmesh bench gossip`.
#[derive(Args, Debug)]
pub struct GossipArgs {}

/// Options of `ztmesh bench dtn`.
#[derive(Args, Debug)]
pub struct DtnArgs {}

/// `ztmesh bench gossip`.
pub async fn gossip(_args: GossipArgs) -> Result<()> {
    bail!("not built yet")
}

/// `ztmesh bench dtn`.
pub async fn dtn(_args: DtnArgs) -> Result<()> {
    bail!("not built yet")
}
