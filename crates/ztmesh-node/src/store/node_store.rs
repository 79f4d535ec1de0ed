//! A node's own `state.db`: the peers it has seen, the newest CRL it accepted and the history
//! of its own certificates.
//!
//! The CRL is kept by compare-and-swap on its number, so a replayed older CRL can never
//! replace a newer one on disk (and so un-revoke anybody after a restart). The peer table is
//! fed by network input and therefore bounded: beyond its capacity the least recently seen
//! peers are dropped.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_pki::Serial;

use super::{
    count_from_sql, count_to_sql, limit_to_sql, lock, node_id_from_sql, open_database,
    timestamp_from_sql, timestamp_to_sql, Schema, StoreError,
};

/// How many peers [`NodeStore::open`] keeps at most.
pub const DEFAULT_PEER_CAPACITY: usize = 4096;

const SCHEMA: Schema = Schema {
    // "ztND"
    application_id: 0x7a74_4e44,
    migrations: &[r#"
CREATE TABLE peers (
    node_id   TEXT PRIMARY KEY NOT NULL,
    addr      TEXT NOT NULL,
    last_seen INTEGER NOT NULL
) STRICT;
CREATE INDEX peers_by_last_seen ON peers (last_seen);

-- Singleton: the newest verified CRL.
CREATE TABLE crl (
    id     INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    number INTEGER NOT NULL CHECK (number >= 0),
    der    BLOB NOT NULL
) STRICT;

CREATE TABLE issuances (
    serial     BLOB PRIMARY KEY NOT NULL,
    not_before INTEGER NOT NULL,
    not_after  INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    issued_at  INTEGER NOT NULL
) STRICT;
"#],
};

/// A peer remembered across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPeer {
    /// The peer.
    pub node_id: NodeId,
    /// Its mesh address.
    pub addr: String,
    /// When it was last seen.
    pub last_seen: Timestamp,
}

/// One of the node's own certificates: `(serial, not_before, not_after, kind, issued_at)`.
pub type Issuance = (Serial, Timestamp, Timestamp, String, Timestamp);

/// A node's local database. `Send + Sync`; every method blocks (run it in `spawn_blocking`).
#[derive(Debug)]
pub struct NodeStore {
    connection: Mutex<Connection>,
    /// Bound on the peer table, which grows with what other nodes tell us.
    peer_capacity: usize,
}

impl NodeStore {
    /// Opens or creates `state.db` at `path`, keeping at most [`DEFAULT_PEER_CAPACITY`] peers.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_peer_capacity(path, DEFAULT_PEER_CAPACITY)
    }

    /// Like [`NodeStore::open`] with another bound on the peer table.
    pub fn open_with_peer_capacity(path: &Path, peer_capacity: usize) -> Result<Self, StoreError> {
        Ok(NodeStore {
            connection: Mutex::new(open_database(path, &SCHEMA)?),
            peer_capacity,
        })
    }

    /// Records a peer's address. The newest sighting wins: an update with an older
    /// `last_seen` than the stored one is ignored, so stale gossip cannot roll back an address.
    /// When the table is over capacity, the least recently seen peers are dropped.
    pub fn upsert_peer(
        &self,
        node_id: &NodeId,
        addr: &str,
        last_seen: Timestamp,
    ) -> Result<(), StoreError> {
        let last_seen = timestamp_to_sql(last_seen, "peer last_seen")?;
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO peers (node_id, addr, last_seen) VALUES (?1, ?2, ?3)
             ON CONFLICT (node_id) DO UPDATE SET addr = excluded.addr, last_seen = excluded.last_seen
             WHERE excluded.last_seen >= peers.last_seen",
            params![node_id.to_string(), addr, last_seen],
        )?;
        let count: i64 = tx.query_row("SELECT count(*) FROM peers", [], |row| row.get(0))?;
        let capacity = limit_to_sql(self.peer_capacity);
        if count > capacity {
            tx.execute(
                "DELETE FROM peers WHERE node_id NOT IN (
                     SELECT node_id FROM peers ORDER BY last_seen DESC, node_id LIMIT ?1)",
                [capacity],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets a peer (no error if it was unknown).
    pub fn remove_peer(&self, node_id: &NodeId) -> Result<(), StoreError> {
        lock(&self.connection).execute(
            "DELETE FROM peers WHERE node_id = ?1",
            [node_id.to_string()],
        )?;
        Ok(())
    }

    /// Up to `limit` peers, most recently seen first.
    pub fn peers(&self, limit: usize) -> Result<Vec<StoredPeer>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare(
            "SELECT node_id, addr, last_seen FROM peers ORDER BY last_seen DESC, node_id LIMIT ?1",
        )?;
        let mut rows = statement.query([limit_to_sql(limit)])?;
        let mut peers = Vec::new();
        while let Some(row) = rows.next()? {
            peers.push(StoredPeer {
                node_id: node_id_from_sql(&row.get::<_, String>(0)?)?,
                addr: row.get(1)?,
                last_seen: timestamp_from_sql(row.get(2)?, "peer last_seen")?,
            });
        }
        Ok(peers)
    }

    /// Keeps the CRL only if `number` is greater than the stored one (compare-and-swap in one
    /// statement); returns whether it was stored.
    pub fn save_crl(&self, number: u64, der: &[u8]) -> Result<bool, StoreError> {
        let number = count_to_sql(number, "CRL number")?;
        let changed = lock(&self.connection).execute(
            "INSERT INTO crl (id, number, der) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET number = excluded.number, der = excluded.der
             WHERE excluded.number > crl.number",
            params![number, der],
        )?;
        Ok(changed == 1)
    }

    /// The stored CRL: `(number, der)`.
    pub fn latest_crl(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let raw: Option<(i64, Vec<u8>)> = lock(&self.connection)
            .query_row("SELECT number, der FROM crl WHERE id = 1", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        raw.map(|(number, der)| Ok((count_from_sql(number, "CRL number")?, der)))
            .transpose()
    }

    /// Appends one of the node's own certificates to its history. Recording the same serial
    /// again is a no-op, so a retry after a crash is harmless.
    pub fn record_issuance(
        &self,
        serial: &Serial,
        not_before: Timestamp,
        not_after: Timestamp,
        kind: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        lock(&self.connection).execute(
            "INSERT INTO issuances (serial, not_before, not_after, kind, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (serial) DO NOTHING",
            params![
                serial.as_bytes(),
                timestamp_to_sql(not_before, "issuance not_before")?,
                timestamp_to_sql(not_after, "issuance not_after")?,
                kind,
                timestamp_to_sql(at, "issuance time")?,
            ],
        )?;
        Ok(())
    }

    /// The node's certificate history, oldest first:
    /// `(serial, not_before, not_after, kind, issued_at)`.
    pub fn issuances(&self) -> Result<Vec<Issuance>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare(
            "SELECT serial, not_before, not_after, kind, issued_at FROM issuances
             ORDER BY issued_at, rowid",
        )?;
        let mut rows = statement.query([])?;
        let mut history = Vec::new();
        while let Some(row) = rows.next()? {
            history.push((
                Serial::from_bytes(&row.get::<_, Vec<u8>>(0)?),
                timestamp_from_sql(row.get(1)?, "issuance not_before")?,
                timestamp_from_sql(row.get(2)?, "issuance not_after")?,
                row.get(3)?,
                timestamp_from_sql(row.get(4)?, "issuance time")?,
            ));
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    fn ts(millis: u64) -> Timestamp {
        Timestamp::from_unix_millis(millis)
    }

    fn open(dir: &tempfile::TempDir) -> NodeStore {
        NodeStore::open(&dir.path().join("state.db")).unwrap()
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NodeStore>();
    }

    #[test]
    fn data_survives_reopen_and_journal_is_wal() {
        let dir = tempfile::TempDir::new().unwrap();
        let serial = Serial::from_bytes(&[0x41; 16]);
        {
            let store = open(&dir);
            store.upsert_peer(&node(1), "10.0.0.1:7000", ts(5)).unwrap();
            assert!(store.save_crl(2, b"crl-2").unwrap());
            store
                .record_issuance(&serial, ts(1), ts(100), "enroll", ts(2))
                .unwrap();
        }
        let store = open(&dir);
        assert_eq!(
            store.peers(10).unwrap(),
            vec![StoredPeer {
                node_id: node(1),
                addr: "10.0.0.1:7000".into(),
                last_seen: ts(5)
            }]
        );
        assert_eq!(store.latest_crl().unwrap(), Some((2, b"crl-2".to_vec())));
        assert_eq!(
            store.issuances().unwrap(),
            vec![(serial, ts(1), ts(100), "enroll".to_owned(), ts(2))]
        );
        let conn = lock(&store.connection);
        assert_eq!(
            crate::store::assert_durable(&conn),
            SCHEMA.supported_version()
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        drop(open(&dir));
        Connection::open(dir.path().join("state.db"))
            .unwrap()
            .pragma_update(None, "user_version", 42)
            .unwrap();
        assert!(matches!(
            NodeStore::open(&dir.path().join("state.db")),
            Err(StoreError::SchemaTooNew { found: 42, .. })
        ));
    }

    #[test]
    fn crl_only_moves_forward() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(store.latest_crl().unwrap(), None);
        assert!(store.save_crl(3, b"crl-3").unwrap());
        assert!(!store.save_crl(2, b"crl-2").unwrap());
        assert!(!store.save_crl(3, b"crl-3-replayed").unwrap());
        assert_eq!(store.latest_crl().unwrap(), Some((3, b"crl-3".to_vec())));
        assert!(store.save_crl(4, b"crl-4").unwrap());
        drop(store);
        // The rule holds across restarts: it lives in the file, not in memory.
        let store = open(&dir);
        assert!(!store.save_crl(1, b"crl-1").unwrap());
        assert_eq!(store.latest_crl().unwrap(), Some((4, b"crl-4".to_vec())));
    }

    #[test]
    fn peers_are_bounded_and_most_recent_first() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = NodeStore::open_with_peer_capacity(&dir.path().join("state.db"), 5).unwrap();
        for n in 1..=12u8 {
            store
                .upsert_peer(&node(n), &format!("10.0.0.{n}:7000"), ts(u64::from(n)))
                .unwrap();
        }
        let all = store.peers(usize::MAX).unwrap();
        assert_eq!(
            all.iter().map(|p| p.node_id).collect::<Vec<_>>(),
            vec![node(12), node(11), node(10), node(9), node(8)]
        );
        assert_eq!(store.peers(2).unwrap().len(), 2);
        assert!(store.peers(0).unwrap().is_empty());

        // An older sighting neither revives an evicted peer nor rolls back an address.
        store.upsert_peer(&node(1), "old", ts(0)).unwrap();
        store.upsert_peer(&node(12), "stale", ts(1)).unwrap();
        let all = store.peers(10).unwrap();
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|p| p.node_id != node(1)));
        assert_eq!(all[0].addr, "10.0.0.12:7000");

        store
            .upsert_peer(&node(12), "10.9.9.9:7000", ts(99))
            .unwrap();
        assert_eq!(store.peers(1).unwrap()[0].addr, "10.9.9.9:7000");

        store.remove_peer(&node(12)).unwrap();
        store.remove_peer(&node(77)).unwrap();
        assert_eq!(store.peers(10).unwrap()[0].node_id, node(11));
    }

    #[test]
    fn issuances_are_idempotent_and_ordered() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        let first = Serial::from_bytes(&[0x41; 16]);
        let second = Serial::from_bytes(&[0x42; 16]);
        store
            .record_issuance(&second, ts(50), ts(150), "rotate", ts(50))
            .unwrap();
        store
            .record_issuance(&first, ts(1), ts(100), "enroll", ts(1))
            .unwrap();
        store
            .record_issuance(&first, ts(1), ts(100), "enroll", ts(1))
            .unwrap();
        let kinds: Vec<_> = store
            .issuances()
            .unwrap()
            .into_iter()
            .map(|(serial, _, _, kind, _)| (serial, kind))
            .collect();
        assert_eq!(
            kinds,
            vec![(first, "enroll".to_owned()), (second, "rotate".to_owned())]
        );
    }

    #[test]
    fn corrupt_peer_rows_are_errors_not_panics() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        lock(&store.connection)
            .execute(
                "INSERT INTO peers (node_id, addr, last_seen) VALUES ('x', 'a', -1)",
                [],
            )
            .unwrap();
        assert!(matches!(store.peers(10), Err(StoreError::Corrupt(_))));
    }
}
