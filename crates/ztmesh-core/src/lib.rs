//! Base types shared by every ztmesh crate: the self-certifying [`NodeId`], the SPIFFE
//! [`TrustDomain`], wall-clock [`Timestamp`]s passed in by callers, and the framed CBOR messages
//! spoken on a mesh link ([`link`]), the sans-IO state machine of one link ([`link_machine`]),
//! and two small decision cores every runtime uses: the [`peer_table`] (known peers, backoff,
//! who dials whom) and the token buckets of [`rate_limit`].
//!
//! This crate never performs IO, reads a clock or draws randomness: callers pass `now` and bytes in.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod link;
pub mod link_budget;
pub mod link_machine;
mod node_id;
pub mod peer_table;
pub mod rate_limit;
pub mod signed;
mod time;
mod trust_domain;

pub use node_id::{NodeId, NodeIdError};
pub use time::Timestamp;
pub use trust_domain::{TrustDomain, TrustDomainError};
