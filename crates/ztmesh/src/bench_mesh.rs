//! Benchmarks over real node processes on loopback.

use anyhow::{bail, Result};
use clap::Args;

/// Options of `ztmesh bench mesh`.
#[derive(Args, Debug)]
pub struct MeshArgs {}

/// `ztmesh bench mesh`.
pub async fn run(_args: MeshArgs) -> Result<()> {
    bail!("not built yet")
}
