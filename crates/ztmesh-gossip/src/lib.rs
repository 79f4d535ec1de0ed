//! Signed gossip for ztmesh (DESIGN.md §3 "Gossip"): epidemic push with fan-out, push-pull
//! anti-entropy, dedupe, TTL and hop limits, per-peer bounds and rates, and per-kind trust gates.
//!
//! [`Gossip`] is a sans-IO state machine: the node runtime feeds it link events, frames, locally
//! signed messages, revocations and timeouts (`handle_*`, [`Gossip::publish`]) together with
//! `now`, and drains frames to send and events to act on (`poll_*`). It never reads a clock,
//! draws OS randomness or touches a socket, so the simulator can run hundreds of nodes on a
//! virtual clock with a seeded RNG.
//!
//! Messages are COSE_Sign1 envelopes ([`UnsignedMessage::sign`], [`ztmesh_core::signed`]),
//! identified by the SHA-256 of their bytes ([`MessageId`]). A message is accepted only after its
//! origin is resolved through [`Membership`] (which decides who may sign which
//! [`MessageKind`]), its signature verifies, and its payload is fresh and fits its kind's schema
//! ([`kinds`]). It must never forward what it has not verified, nor anything from a revoked
//! origin, and every queue, cache and set it keeps is bounded by [`GossipConfig`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cbor;
mod config;
mod error;
mod frame;
mod gossip;
pub mod kinds;
mod membership;
mod message;
mod message_id;
mod message_store;
mod revoked_set;
mod seen_cache;
mod token_bucket;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, GossipConfig};
pub use error::{GossipError, Refusal};
pub use frame::GossipFrame;
pub use gossip::{Gossip, GossipEvent, GossipStats, Transmit};
pub use membership::{Membership, OriginRefusal};
pub use message::{claimed_kind, MessageKind, UnsignedMessage, VerifiedMessage};
pub use message_id::{MessageId, MessageIdError};

/// Domain-separation label of gossip signatures (the COSE external_aad): a gossip signature
/// never verifies as any other kind of signed object, nor the reverse.
pub const GOSSIP_LABEL: &str = "ztmesh/v1/gossip";
