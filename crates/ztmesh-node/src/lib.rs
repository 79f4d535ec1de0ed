//! The ztmesh node daemon (`ztmesh run`): everything a member of the mesh runs.
//!
//! - [`daemon`]: node state, accept/dial loops and per-link tasks, with [`peer_table`] as its
//!   sans-IO dialing core;
//! - gossip and bundle drivers over the sans-IO cores (`ztmesh-gossip`, `ztmesh-dtn`);
//! - [`governance`], [`node_token`], [`attestation`] and [`tpm_device`]: tiers, votes and the
//!   node's evidence;
//! - the membership-log monitor (`log_watch`, `log_audit`, `log_stall`, `log_report`);
//! - [`node_witness`]: the tlog witness (`ztmesh-witness`) inside a Tier 1 node;
//! - [`node_api`] / [`local_api`] / [`deny_list`]: the node's HTTPS API;
//! - [`ca_client`] / [`node_client`]: clients of the CA and of a node's API;
//! - [`store`]: the node's `state.db` and bundle store; [`node_dir`]: its data directory.
//!
//! Protocol decisions live in the sans-IO crates; the plumbing it shares with the CA and the
//! witness (TLS, the accept loop, API errors, SQLite) lives in `ztmesh-runtime`. It must never
//! depend on the CA crate: it reaches the CA over HTTPS only.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The runtime's modules, sans-IO cores and the membership formats, named here as this crate's files name them
// (`crate::tls`, `crate::membership_log`, ...).
use ztmesh_core::{peer_table, rate_limit};
use ztmesh_membership as membership_log;
use ztmesh_runtime::{api_error, api_types, https, private_files, timefmt, tls};
use ztmesh_witness::witness_service;

pub mod attestation;
pub mod ca_client;
pub mod daemon;
pub mod deny_list;
mod dtn_driver;
pub mod events;
mod gossip_driver;
pub mod governance;
pub mod local_api;
mod log_audit;
mod log_report;
mod log_stall;
mod log_watch;
mod node_api;
pub mod node_client;
pub mod node_dir;
pub mod node_membership;
mod node_token;
pub mod node_witness;
mod peer_upserts;
pub mod store;
pub mod tpm_device;
