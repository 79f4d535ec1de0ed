//! Scenario tests over the real cores. Each builds a mesh from a seed, drives it, and asserts
//! on what the simulator recorded; a broken invariant panics at the step that broke it.

mod api;
mod bundles;
mod churn;
mod determinism;
mod dissemination;
mod partition;
mod revocation;
mod util;
