//! The ztmesh CA: `ca init`, its HTTPS API and its state.
//!
//! - [`ca_service`]: `ca init`/keys and the routes (enroll, rotate — incl. an expired
//!   certificate under `--rotation-grace` —, revoke and CRLs, enrollment tokens, announce, CRL
//!   push, governance reports);
//! - [`ca_attest`]: the token desk (challenge nonces, `POST /v1/attest`, attestation tokens);
//! - [`ca_tpm2`]: the CA's half of TPM credential activation at enrollment;
//! - [`membership_log`]: the transparency log of membership events, checkpoints and the
//!   witnesses' cosignatures (formats in `ztmesh-membership`);
//! - [`store`]: the CA's SQLite database.
//!
//! It must never run node code: it depends on the runtime and the sans-IO crates only, and no
//! node or witness crate depends on it. A CA never decides alone what the mesh trusts beyond the
//! certificates it signs: every issuance and revocation is logged for members to audit.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The runtime's modules, named here as this crate's files name them (`crate::tls`, ...).
use ztmesh_core::rate_limit;
use ztmesh_runtime::{api_error, api_types, https, private_files, timefmt, tls};

pub mod ca_attest;
pub mod ca_dir;
pub mod ca_service;
mod ca_state;
pub mod ca_tpm2;
pub mod membership_log;
mod routes;
pub mod store;
