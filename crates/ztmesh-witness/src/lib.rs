//! The C2SP tlog witness of ztmesh: [`witness_service`] serves `POST /add-checkpoint` (plain
//! HTTP through the runtime's accept loop) and cosigns checkpoints of the logs it follows,
//! moving each log's witnessed head in its [`store`] by compare-and-swap.
//!
//! Used by `ztmesh witness serve` and by a Tier 1 node's `[witness]`. It must never cosign a
//! checkpoint that is not consistent with the head it witnessed, and never depends on the CA or
//! node crates.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The runtime's modules, named here as this crate's files name them (`crate::https`, ...).
use ztmesh_runtime::{https, private_files, timefmt};

pub mod store;
pub mod witness_service;
