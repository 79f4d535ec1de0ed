//! The witness's SQLite database ([`WitnessStore`]): the head witnessed per log, moved by
//! compare-and-swap. How files are opened and migrated is shared ([`ztmesh_runtime::sqlite`]).
//!
//! All methods block on disk I/O; async callers run them in `spawn_blocking`.

mod witness_store;

pub use ztmesh_runtime::sqlite::StoreError;
#[allow(unused_imports)]
pub(crate) use ztmesh_runtime::sqlite::{
    count_from_sql, count_to_sql, limit_to_sql, lock, node_id_from_sql, open_database,
    timestamp_from_sql, timestamp_to_sql, Schema,
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

pub use witness_store::WitnessStore;
