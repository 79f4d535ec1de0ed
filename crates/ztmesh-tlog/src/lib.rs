//! The ztmesh membership log, as values and decisions: RFC 6962 Merkle hashing and proofs
//! ([`merkle`]), C2SP signed notes ([`note`]), tlog checkpoints ([`checkpoint`]), Ed25519
//! cosignatures ([`cosignature`]), the tlog-witness `add-checkpoint` decision ([`witness`]), the
//! tlog-policy quorum rules ([`policy`]) and a split-view-detecting checkpoint monitor
//! ([`monitor`]).
//!
//! This crate never performs IO, reads a clock or draws ambient randomness. Callers pass the
//! current time (as POSIX seconds) and an RNG where one is needed, and persist whatever a decision
//! tells them to: the witness logic here decides whether to cosign, it never stores a head.
//!
//! Errors are split by whose fault they are. Peer faults (bytes that arrived from elsewhere and
//! are wrong) are [`ProofError`], [`NoteError`], [`CheckpointError`], [`CosignatureError`],
//! [`WitnessError`], [`PolicyError`] and [`MonitorError`]; local faults (the caller misused an
//! API, configured a bad key or saved a damaged state) are [`TreeError`], [`SignError`],
//! [`KeyError`], [`PolicyParseError`], [`UnexpectedProof`] and [`ResumeError`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod cosignature;
mod key;
mod limits;
pub mod merkle;
pub mod monitor;
pub mod note;
pub mod policy;
pub mod witness;

pub use checkpoint::{Checkpoint, CheckpointError, TreeHead};
pub use cosignature::{CosignatureError, CosignatureSigner, CosignatureVerifier};
pub use key::{KeyError, SIGNATURE_TYPE_COSIGNATURE_V1, SIGNATURE_TYPE_ED25519};
pub use merkle::{Hash, MerkleFrontier, MerkleTree, ProofError, TreeError};
pub use monitor::{
    CheckpointMonitor, MonitorError, MonitorStats, Observation, ResumeError, SavedMonitor,
    UnexpectedProof,
};
pub use note::{Note, NoteError, NoteSignature, SignError, Signer, VerifiedNote, Verifier};
pub use policy::{Policy, PolicyError, PolicyParseError};
pub use witness::{
    AcceptedCheckpoint, AddCheckpointRequest, StoredCheckpoint, SwapOutcome, WitnessError,
};
