//! A node's SQLite stores: its own `state.db` ([`NodeStore`]) and its bundle store
//! ([`SqliteBundleStore`]). How files are opened and migrated is shared
//! ([`ztmesh_runtime::sqlite`]); the schemas live here.
//!
//! All methods block on disk I/O; async callers run them in `spawn_blocking`.

mod bundle_store;
mod node_store;

pub(crate) use ztmesh_runtime::private_files::prepare_private_database;
pub use ztmesh_runtime::sqlite::StoreError;
#[allow(unused_imports)]
pub(crate) use ztmesh_runtime::sqlite::{
    count_from_sql, count_to_sql, enable_wal, limit_to_sql, lock, node_id_from_sql, open_database,
    schema_marks, timestamp_from_sql, timestamp_to_sql, Schema, BUSY_TIMEOUT,
};

/// Test check shared by this crate's stores: the connection is in WAL mode with
/// `synchronous=FULL` (what every acknowledged write relies on). Returns the schema version.
#[cfg(test)]
pub(crate) fn assert_durable(conn: &rusqlite::Connection) -> i64 {
    let (mode, synchronous, version) =
        ztmesh_runtime::sqlite::durability_marks(conn).expect("pragmas readable");
    assert_eq!(mode, "wal");
    assert_eq!(synchronous, 2, "2 is FULL");
    version
}

pub use bundle_store::SqliteBundleStore;
pub use node_store::{
    AlarmAck, EndedStall, FollowedEntry, Issuance, LegacyImport, LogWatchSwap, NodeStateError,
    NodeStore, SavedLogAlarm, SavedLogHead, SavedLogStall, SavedLogWatch, SavedStallAlarm,
    StallEnd, StoredPeer, DEFAULT_PEER_CAPACITY, GOVERNANCE_FILE, IMPORTED_SUFFIX,
    REVOKED_NODES_FILE,
};
