//! The witness's SQLite database ([`WitnessStore`]): the head witnessed per log, moved by
//! compare-and-swap. How files are opened and migrated is shared ([`ztmesh_runtime::sqlite`]).
//!
//! All methods block on disk I/O; async callers run them in `spawn_blocking`.

mod witness_store;

pub use ztmesh_runtime::sqlite::StoreError;

pub use witness_store::WitnessStore;
