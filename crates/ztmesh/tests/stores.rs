//! Each SQLite store refuses a file written by another one: the CA's database, a node's
//! `state.db` and the witness's database carry their own `application_id`, so a path mix-up
//! is an error at open, never a silent migration of the wrong file.

use ztmesh_ca::store::CaStore;
use ztmesh_node::store::{NodeStore, SqliteBundleStore};
use ztmesh_runtime::sqlite::StoreError;
use ztmesh_witness::store::WitnessStore;

#[test]
fn node_state_db_is_not_a_ca_db() {
    let dir = tempfile::TempDir::new().unwrap();
    drop(NodeStore::open(&dir.path().join("ca.db")).unwrap());
    assert!(matches!(
        CaStore::open(&dir.path().join("ca.db")),
        Err(StoreError::WrongDatabase { .. })
    ));
}

#[test]
fn node_state_db_is_not_a_witness_db() {
    let dir = tempfile::TempDir::new().unwrap();
    drop(NodeStore::open(&dir.path().join("state.db")).unwrap());
    assert!(matches!(
        WitnessStore::open(&dir.path().join("state.db")),
        Err(StoreError::WrongDatabase { .. })
    ));
}

#[test]
fn ca_db_is_not_a_node_state_db_nor_a_witness_db() {
    let dir = tempfile::TempDir::new().unwrap();
    drop(CaStore::open(&dir.path().join("state.db")).unwrap());
    assert!(matches!(
        NodeStore::open(&dir.path().join("state.db")),
        Err(StoreError::WrongDatabase { .. })
    ));
    assert!(matches!(
        SqliteBundleStore::open(&dir.path().join("state.db")),
        Err(StoreError::WrongDatabase { .. })
    ));
    assert!(matches!(
        WitnessStore::open(&dir.path().join("state.db")),
        Err(StoreError::WrongDatabase { .. })
    ));
}
