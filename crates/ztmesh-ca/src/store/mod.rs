//! The CA's SQLite database ([`CaStore`]): tokens, certificates, revocations, CRL numbers,
//! nodes, TPM keys and the membership log's leaves. How files are opened and migrated is shared
//! ([`ztmesh_runtime::sqlite`]); the schema lives here.
//!
//! All methods block on disk I/O; async callers run them in `spawn_blocking`.

mod ca_store;

pub use ztmesh_runtime::sqlite::StoreError;

pub use ca_store::{
    issued_entry, CaStore, GovernedParam, IssueKind, IssuedRecord, KnownNode, RedeemError,
    RegisteredTpm2Key, RevokeError, RevokeOutcome, RevokeTarget, RotateError, SavedCrl, TokenInfo,
    Tpm2KeyRegistration,
};
