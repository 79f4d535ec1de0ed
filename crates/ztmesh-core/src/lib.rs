//! Base types shared by every ztmesh crate: the self-certifying [`NodeId`], the SPIFFE
//! [`TrustDomain`], wall-clock [`Timestamp`]s passed in by callers, and the framed CBOR messages
//! spoken on a mesh link ([`link`]) and the sans-IO state machine of one link ([`link_machine`]).
//!
//! This crate never performs IO, reads a clock or draws randomness: callers pass `now` and bytes in.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod link;
pub mod link_budget;
pub mod link_machine;
mod node_id;
pub mod signed;
mod time;
mod trust_domain;

pub use node_id::{NodeId, NodeIdError};
pub use time::Timestamp;
pub use trust_domain::{TrustDomain, TrustDomainError};
