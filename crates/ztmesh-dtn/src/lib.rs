//! ztmesh's delay-tolerant bundles: the BPv7 codec (RFC 9171, [`bpv7`]), fragmentation and
//! reassembly ([`fragment`]), the hop-by-hop frames ([`frame`]) and the store-and-forward
//! state machine ([`Router`]) over a durable [`BundleStore`].
//!
//! This crate is sans-IO: it never opens a socket or a file, never reads a clock and never
//! draws randomness. Callers pass `now` and received bytes in and take frames and events out;
//! durable storage is whatever [`BundleStore`] the runtime supplies (SQLite in the node, a
//! [`MemoryStore`] in tests and simulations).
//!
//! A bundle's journey: the application hands it to [`Router::accept_local`], which fragments
//! it if needed and stores it durably before returning. The router sends it to the
//! destination when a link to it is up, and otherwise hands copies to every connected peer
//! (epidemic store-and-forward), retrying unacknowledged sends with exponential backoff. Each
//! hop acknowledges a piece only once it is durable. At the destination the fragments are
//! reassembled and the whole ADU is delivered exactly once; the destination then publishes a
//! signed receipt (by gossip, outside this crate) which frees every relay's copy. Whatever is
//! left when the bundle's lifetime ends is purged everywhere.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bpv7;
mod cbor;
mod config;
pub mod error;
pub mod fragment;
pub mod frame;
mod router;
pub mod store;

pub use bpv7::{Bundle, BundleId, Eid, FragmentKey, Limits};
pub use config::{DtnConfig, MAX_BUNDLE_OVERHEAD};
pub use error::{BundleIdError, DecodeError, DtnError, EidError, FragmentError, RequestError};
pub use frame::Frame;
pub use router::{DtnEvent, RefuseReason, Router, Transmit};
pub use store::{BundleStore, DeliveredBundle, HeldBundle, MemoryStore, StoreUsage};
