//! The ztmesh runtime: everything that touches sockets, files, clocks and threads.
//!
//! - [`tls`]: rustls configurations and the mesh peer verifier;
//! - [`https`]: axum over TLS 1.3;
//! - [`ca_service`] / [`ca_client`]: the CA's HTTPS API and its clients;
//! - [`membership_log`]: the CA's transparency log of membership events and its witnesses;
//! - [`daemon`]: the node (`ztmesh run`), with [`peer_table`] as its sans-IO dialing core;
//! - [`store`]: SQLite state of the CA and of nodes;
//! - [`witness_service`]: the tlog witness, which [`node_witness`] runs inside a Tier 1 node;
//! - [`private_files`]: data directories, databases and logs only their owner may read;
//! - [`tpm_device`]: the node's TPM 2.0 through tpm2-tools (EK, AK, credential activation, quotes).
//!
//! Protocol decisions live in the sans-IO crates (`ztmesh-core`, `ztmesh-pki`) and in
//! [`peer_table`] / [`rate_limit`]; this crate only moves bytes between them and the world.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod api_error;
pub mod api_types;
pub mod attestation;
pub mod ca_attest;
pub mod ca_client;
pub mod ca_governance;
pub mod ca_service;
pub mod ca_tpm2;
pub mod daemon;
pub mod deny_list;
mod dtn_driver;
pub mod events;
// Public only so that `ztmesh bench gossip` can measure validation with the node's own
// `NodeMembership`; not part of the documented API.
#[doc(hidden)]
pub mod gossip_driver;
pub mod governance;
pub mod https;
pub mod link_budget;
pub mod local_api;
mod log_audit;
mod log_report;
mod log_stall;
mod log_watch;
pub mod membership_log;
mod node_api;
pub mod node_client;
pub mod node_dir;
mod node_token;
pub mod node_witness;
pub mod peer_table;
pub mod private_files;
pub mod rate_limit;
pub mod store;
pub mod timefmt;
pub mod tls;
pub mod tpm_device;
pub mod witness_service;
