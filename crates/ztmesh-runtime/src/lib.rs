//! The runtime plumbing every ztmesh server shares: the CA, the witness and the node daemon.
//!
//! - [`tls`]: rustls configurations (TLS 1.3 only) and the mesh peer verifier, `MeshTrust`;
//! - [`https`]: the one accept loop of every HTTP server, over TLS or plain TCP, with the
//!   sans-IO [`admission`] of connections (handshake slots, unauthenticated pool, reserve for
//!   authenticated clients) and header, body and idle deadlines;
//! - [`api_error`] / [`api_types`]: the JSON error body with its HTTP status, request and
//!   response types of the HTTP APIs;
//! - [`sqlite`]: how every store opens and migrates its file, and [`StoreError`](sqlite::StoreError);
//! - [`private_files`]: data directories, databases, keys and logs only their owner may read;
//! - [`deny_set`]: the operator's deny-list as data, which `MeshTrust` enforces;
//! - [`timefmt`]: the wall clock and RFC 3339 / duration parsing.
//!
//! It owns no role: it never serves a CA, node or witness route, never holds a store's schema,
//! and depends on no role crate (`ztmesh-ca`, `ztmesh-witness`, `ztmesh-node` depend on it).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod api_error;
pub mod api_types;
pub mod deny_set;
pub mod https;
pub mod private_files;
pub mod sqlite;
pub mod timefmt;
pub mod tls;
