//! A node's SQLite stores: its own `state.db` ([`NodeStore`]) and its bundle store
//! ([`SqliteBundleStore`]). How files are opened and migrated is shared
//! ([`ztmesh_runtime::sqlite`]); the schemas live here.
//!
//! All methods block on disk I/O; async callers run them in `spawn_blocking`.

mod bundle_store;
mod node_store;

pub use ztmesh_runtime::sqlite::StoreError;

pub use bundle_store::SqliteBundleStore;
pub use node_store::{
    AlarmAck, EndedStall, FollowedEntry, Issuance, LegacyImport, LogWatchSwap, NodeStateError,
    NodeStore, SavedLogAlarm, SavedLogHead, SavedLogStall, SavedLogWatch, SavedStallAlarm,
    StallEnd, StoredPeer, DEFAULT_PEER_CAPACITY, GOVERNANCE_FILE, IMPORTED_SUFFIX,
    REVOKED_NODES_FILE,
};
