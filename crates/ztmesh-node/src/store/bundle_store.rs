//! The DTN router's durable state in the node's `state.db`: held bundle pieces with the peers
//! that acknowledged them, delivered bundles, tombstones and the last creation timestamp
//! ([`SqliteBundleStore`], the SQLite [`BundleStore`]).
//!
//! Every write is one `BEGIN IMMEDIATE` transaction committed (WAL, `synchronous=FULL`)
//! before the method returns: the router acknowledges a bundle to a peer, and the API answers
//! the application, only after that. So a `kill -9` at any moment loses no accepted bundle and
//! never delivers one twice.
//!
//! The tables live beside [`NodeStore`](super::NodeStore)'s in the same file but are created
//! here with `CREATE TABLE IF NOT EXISTS` and versioned by their own row in `dtn_meta`, not by
//! `PRAGMA user_version`, which belongs to the node store's migrations. That keeps the two
//! stores independent: either may open the file first, and neither's schema changes touch the
//! other's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_dtn::bpv7::CreationTimestamp;
use ztmesh_dtn::{
    BundleId, BundleStore, DeliveredBundle, Eid, FragmentKey, HeldBundle, StoreUsage,
};

use ztmesh_runtime::sqlite::{
    count_from_sql, count_to_sql, enable_wal, lock, node_id_from_sql, schema_marks,
    timestamp_from_sql, timestamp_to_sql, StoreError, BUSY_TIMEOUT,
};

/// `PRAGMA application_id` of a node's `state.db` ("ztND", written by the node store's first
/// migration). A file marked otherwise belongs to something else and is refused.
const NODE_APPLICATION_ID: i64 = 0x7a74_4e44;

/// Version of the bundle tables, kept in `dtn_meta`. Raise it with a new step in
/// [`upgrade`] when the tables change; never edit [`SCHEMA_V1`].
const SCHEMA_VERSION: i64 = 1;

/// The bundle tables. Ids are stored in their canonical text form (`BundleId`'s `Display`),
/// which keeps 64-bit creation times and sequence numbers exact.
const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS dtn_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) STRICT;

-- Bundles and fragments this node forwards, or fragments for it awaiting their siblings.
CREATE TABLE IF NOT EXISTS dtn_held (
    bundle_id     TEXT NOT NULL,
    frag_offset   INTEGER NOT NULL CHECK (frag_offset >= 0),
    source        TEXT NOT NULL,
    destination   TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    is_fragment   INTEGER NOT NULL CHECK (is_fragment IN (0, 1)),
    total_adu_len INTEGER NOT NULL CHECK (total_adu_len >= 0),
    payload_len   INTEGER NOT NULL CHECK (payload_len >= 0),
    received_from TEXT,
    received_at   INTEGER NOT NULL,
    size          INTEGER NOT NULL CHECK (size >= 0),
    bytes         BLOB NOT NULL,
    PRIMARY KEY (bundle_id, frag_offset)
) STRICT;
CREATE INDEX IF NOT EXISTS dtn_held_by_expiry ON dtn_held (expires_at);

-- Peers that hold a piece (acknowledged it, or sent it again): never sent to again.
CREATE TABLE IF NOT EXISTS dtn_held_acks (
    bundle_id   TEXT NOT NULL,
    frag_offset INTEGER NOT NULL,
    peer        TEXT NOT NULL,
    PRIMARY KEY (bundle_id, frag_offset, peer),
    FOREIGN KEY (bundle_id, frag_offset) REFERENCES dtn_held (bundle_id, frag_offset)
        ON DELETE CASCADE
) STRICT;

-- Whole bundles delivered to a local service, until the application deletes them.
CREATE TABLE IF NOT EXISTS dtn_delivered (
    bundle_id   TEXT PRIMARY KEY NOT NULL,
    source      TEXT NOT NULL,
    destination TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    len         INTEGER NOT NULL CHECK (len >= 0),
    payload     BLOB NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS dtn_delivered_by_expiry ON dtn_delivered (expires_at);

-- Ids delivered here or freed by a receipt, until the bundle expires.
CREATE TABLE IF NOT EXISTS dtn_tombstones (
    bundle_id TEXT PRIMARY KEY NOT NULL,
    until     INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS dtn_tombstones_by_expiry ON dtn_tombstones (until);
"#;

/// The SQLite [`BundleStore`]. `Send + Sync`; every method blocks on disk I/O.
#[derive(Debug)]
pub struct SqliteBundleStore {
    connection: Mutex<Connection>,
}

impl SqliteBundleStore {
    /// Opens (creating if needed) the bundle tables in the node's `state.db` at `path`, on a
    /// connection of its own.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        ztmesh_runtime::private_files::prepare_private_database(path).map_err(StoreError::Io)?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        enable_wal(&conn)?;
        // FULL: a commit is on disk before the router acknowledges what it recorded.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        upgrade(&mut conn)?;
        Ok(SqliteBundleStore {
            connection: Mutex::new(conn),
        })
    }

    /// Runs `write` in one `BEGIN IMMEDIATE` transaction and commits it.
    fn write<T>(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = write(&tx)?;
        tx.commit()?;
        Ok(value)
    }
}

/// Creates or checks the bundle tables, under the write lock so that concurrent first opens
/// agree.
fn upgrade(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (_, application_id) = schema_marks(&tx)?;
    // A fresh file is unmarked until the node store migrates it; anything else must be ours.
    if application_id != 0 && application_id != NODE_APPLICATION_ID {
        return Err(StoreError::WrongDatabase {
            found: application_id,
            expected: NODE_APPLICATION_ID,
        });
    }
    tx.execute_batch(SCHEMA_V1)?;
    let version: Option<i64> = tx
        .query_row(
            "SELECT value FROM dtn_meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    match version {
        None => {
            tx.execute(
                "INSERT INTO dtn_meta (key, value) VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION],
            )?;
        }
        Some(found) if found > SCHEMA_VERSION => {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            })
        }
        Some(found) if found < 1 => {
            return Err(StoreError::Corrupt(format!(
                "bundle schema version {found}"
            )))
        }
        Some(_) => {}
    }
    tx.commit()?;
    Ok(())
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

fn bundle_id_from_sql(text: &str) -> Result<BundleId, StoreError> {
    text.parse().map_err(|e| corrupt("bundle id", e))
}

fn eid_from_sql(text: &str) -> Result<Eid, StoreError> {
    text.parse().map_err(|e| corrupt("endpoint id", e))
}

/// `(bundle_id, frag_offset)` of a key, as stored.
fn key_to_sql(key: &FragmentKey) -> Result<(String, i64), StoreError> {
    Ok((
        key.id.to_string(),
        count_to_sql(key.offset, "fragment offset")?,
    ))
}

fn read_held(row: &rusqlite::Row<'_>) -> Result<HeldBundle, StoreError> {
    let received_from: Option<String> = row.get(8)?;
    Ok(HeldBundle {
        key: FragmentKey {
            id: bundle_id_from_sql(&row.get::<_, String>(0)?)?,
            offset: count_from_sql(row.get(1)?, "fragment offset")?,
        },
        source: eid_from_sql(&row.get::<_, String>(2)?)?,
        destination: eid_from_sql(&row.get::<_, String>(3)?)?,
        expires_at: timestamp_from_sql(row.get(4)?, "held expires_at")?,
        is_fragment: row.get::<_, i64>(5)? == 1,
        total_adu_len: count_from_sql(row.get(6)?, "total ADU length")?,
        payload_len: count_from_sql(row.get(7)?, "payload length")?,
        received_from: received_from.as_deref().map(node_id_from_sql).transpose()?,
        received_at: timestamp_from_sql(row.get(9)?, "held received_at")?,
        size: count_from_sql(row.get(10)?, "held size")?,
        acked_by: Vec::new(),
    })
}

fn read_delivered(row: &rusqlite::Row<'_>) -> Result<DeliveredBundle, StoreError> {
    Ok(DeliveredBundle {
        id: bundle_id_from_sql(&row.get::<_, String>(0)?)?,
        source: eid_from_sql(&row.get::<_, String>(1)?)?,
        destination: eid_from_sql(&row.get::<_, String>(2)?)?,
        received_at: timestamp_from_sql(row.get(3)?, "delivered received_at")?,
        expires_at: timestamp_from_sql(row.get(4)?, "delivered expires_at")?,
        len: count_from_sql(row.get(5)?, "delivered length")?,
    })
}

/// Tombstones `id` until `until`, keeping a later time already recorded.
fn tombstone(tx: &Transaction<'_>, id: &str, until: Timestamp) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO dtn_tombstones (bundle_id, until) VALUES (?1, ?2)
         ON CONFLICT (bundle_id) DO UPDATE SET until = max(until, excluded.until)",
        params![id, timestamp_to_sql(until, "tombstone")?],
    )?;
    Ok(())
}

/// Stores held pieces (and the acks they arrived with) inside `tx`; pieces already held stay.
fn insert_held(tx: &Transaction<'_>, pieces: &[(HeldBundle, Vec<u8>)]) -> Result<(), StoreError> {
    let mut insert = tx.prepare(
        "INSERT INTO dtn_held (bundle_id, frag_offset, source, destination, expires_at,
                 is_fragment, total_adu_len, payload_len, received_from, received_at, size,
                 bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (bundle_id, frag_offset) DO NOTHING",
    )?;
    let mut ack = tx.prepare(
        "INSERT INTO dtn_held_acks (bundle_id, frag_offset, peer) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
    )?;
    for (record, bytes) in pieces {
        let (id, offset) = key_to_sql(&record.key)?;
        let inserted = insert.execute(params![
            id,
            offset,
            record.source.to_string(),
            record.destination.to_string(),
            timestamp_to_sql(record.expires_at, "held expires_at")?,
            i64::from(record.is_fragment),
            count_to_sql(record.total_adu_len, "total ADU length")?,
            count_to_sql(record.payload_len, "payload length")?,
            record.received_from.map(|peer| peer.to_string()),
            timestamp_to_sql(record.received_at, "held received_at")?,
            count_to_sql(bytes.len() as u64, "held size")?,
            bytes,
        ])?;
        if inserted == 1 {
            for peer in &record.acked_by {
                ack.execute(params![id, offset, peer.to_string()])?;
            }
        }
    }
    Ok(())
}

/// Records `creation` as the newest local creation timestamp inside `tx`, unless a newer one
/// is already recorded.
fn reserve_creation(tx: &Transaction<'_>, creation: CreationTimestamp) -> Result<(), StoreError> {
    let time = count_to_sql(creation.dtn_time_ms, "creation time")?;
    let seq = count_to_sql(creation.seq, "creation sequence number")?;
    let last = read_last_creation(tx)?;
    if last.is_some_and(|last| last >= creation) {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO dtn_meta (key, value) VALUES ('creation_time', ?1), ('creation_seq', ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![time, seq],
    )?;
    Ok(())
}

impl BundleStore for SqliteBundleStore {
    type Error = StoreError;

    fn insert_held(&mut self, pieces: &[(HeldBundle, Vec<u8>)]) -> Result<(), StoreError> {
        self.write(|tx| insert_held(tx, pieces))
    }

    fn insert_local(
        &mut self,
        creation: CreationTimestamp,
        pieces: &[(HeldBundle, Vec<u8>)],
    ) -> Result<(), StoreError> {
        // One transaction, one fsync: the creation timestamp and the bundle become durable
        // together (neither is of use without the other).
        self.write(|tx| {
            reserve_creation(tx, creation)?;
            insert_held(tx, pieces)
        })
    }

    fn list_held(&self) -> Result<Vec<HeldBundle>, StoreError> {
        let conn = lock(&self.connection);
        let mut acks: HashMap<(String, i64), Vec<NodeId>> = HashMap::new();
        let mut statement =
            conn.prepare("SELECT bundle_id, frag_offset, peer FROM dtn_held_acks ORDER BY rowid")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            acks.entry((row.get(0)?, row.get(1)?))
                .or_default()
                .push(node_id_from_sql(&row.get::<_, String>(2)?)?);
        }
        let mut statement = conn.prepare(
            "SELECT bundle_id, frag_offset, source, destination, expires_at, is_fragment,
                    total_adu_len, payload_len, received_from, received_at, size
             FROM dtn_held ORDER BY rowid",
        )?;
        let mut rows = statement.query([])?;
        let mut held = Vec::new();
        while let Some(row) = rows.next()? {
            let mut record = read_held(row)?;
            if let Some(peers) = acks.remove(&(row.get(0)?, row.get(1)?)) {
                record.acked_by = peers;
            }
            held.push(record);
        }
        Ok(held)
    }

    fn held_bytes(&self, key: &FragmentKey) -> Result<Option<Vec<u8>>, StoreError> {
        let (id, offset) = key_to_sql(key)?;
        Ok(lock(&self.connection)
            .query_row(
                "SELECT bytes FROM dtn_held WHERE bundle_id = ?1 AND frag_offset = ?2",
                params![id, offset],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn record_ack(&mut self, key: &FragmentKey, peer: &NodeId) -> Result<(), StoreError> {
        let (id, offset) = key_to_sql(key)?;
        self.write(|tx| {
            // Through the held row, so an ack for a piece no longer held records nothing.
            tx.execute(
                "INSERT INTO dtn_held_acks (bundle_id, frag_offset, peer)
                 SELECT bundle_id, frag_offset, ?3 FROM dtn_held
                 WHERE bundle_id = ?1 AND frag_offset = ?2
                 ON CONFLICT DO NOTHING",
                params![id, offset, peer.to_string()],
            )?;
            Ok(())
        })
    }

    fn remove_held(&mut self, key: &FragmentKey) -> Result<(), StoreError> {
        let (id, offset) = key_to_sql(key)?;
        self.write(|tx| {
            tx.execute(
                "DELETE FROM dtn_held WHERE bundle_id = ?1 AND frag_offset = ?2",
                params![id, offset],
            )?;
            Ok(())
        })
    }

    fn remove_bundle(
        &mut self,
        id: &BundleId,
        tombstone_until: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(|tx| {
            tx.execute("DELETE FROM dtn_held WHERE bundle_id = ?1", [&id])?;
            if let Some(until) = tombstone_until {
                tombstone(tx, &id, until)?;
            }
            Ok(())
        })
    }

    fn is_tombstoned(&self, id: &BundleId) -> Result<bool, StoreError> {
        Ok(lock(&self.connection)
            .query_row(
                "SELECT 1 FROM dtn_tombstones WHERE bundle_id = ?1",
                [id.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn deliver(&mut self, bundle: &DeliveredBundle, payload: &[u8]) -> Result<bool, StoreError> {
        let id = bundle.id.to_string();
        self.write(|tx| {
            // The exactly-once check and the delivery are one transaction: two deliveries of
            // one id cannot both pass it, even across connections.
            let seen = tx
                .query_row(
                    "SELECT 1 FROM dtn_tombstones WHERE bundle_id = ?1",
                    [&id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if seen {
                return Ok(false);
            }
            tx.execute("DELETE FROM dtn_held WHERE bundle_id = ?1", [&id])?;
            tombstone(tx, &id, bundle.expires_at)?;
            tx.execute(
                "INSERT INTO dtn_delivered (bundle_id, source, destination, received_at,
                     expires_at, len, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    bundle.source.to_string(),
                    bundle.destination.to_string(),
                    timestamp_to_sql(bundle.received_at, "delivered received_at")?,
                    timestamp_to_sql(bundle.expires_at, "delivered expires_at")?,
                    count_to_sql(payload.len() as u64, "delivered length")?,
                    payload,
                ],
            )?;
            Ok(true)
        })
    }

    fn list_delivered(&self) -> Result<Vec<DeliveredBundle>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare(
            "SELECT bundle_id, source, destination, received_at, expires_at, len
             FROM dtn_delivered ORDER BY received_at, rowid",
        )?;
        let mut rows = statement.query([])?;
        let mut delivered = Vec::new();
        while let Some(row) = rows.next()? {
            delivered.push(read_delivered(row)?);
        }
        Ok(delivered)
    }

    fn delivered_payload(&self, id: &BundleId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.connection)
            .query_row(
                "SELECT payload FROM dtn_delivered WHERE bundle_id = ?1",
                [id.to_string()],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn delete_delivered(&mut self, id: &BundleId) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(|tx| {
            Ok(tx.execute("DELETE FROM dtn_delivered WHERE bundle_id = ?1", [&id])? == 1)
        })
    }

    fn reserve_creation(&mut self, creation: CreationTimestamp) -> Result<(), StoreError> {
        self.write(|tx| reserve_creation(tx, creation))
    }

    fn last_creation(&self) -> Result<Option<CreationTimestamp>, StoreError> {
        read_last_creation(&lock(&self.connection))
    }

    fn usage(&self) -> Result<StoreUsage, StoreError> {
        let (bundles, bytes, tombstones): (i64, i64, i64) = lock(&self.connection).query_row(
            "SELECT (SELECT count(*) FROM dtn_held) + (SELECT count(*) FROM dtn_delivered),
                    (SELECT coalesce(sum(size), 0) FROM dtn_held)
                        + (SELECT coalesce(sum(len), 0) FROM dtn_delivered),
                    (SELECT count(*) FROM dtn_tombstones)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        Ok(StoreUsage {
            bundles: count_from_sql(bundles, "bundle count")?,
            bytes: count_from_sql(bytes, "byte count")?,
            tombstones: count_from_sql(tombstones, "tombstone count")?,
        })
    }

    fn purge_expired(&mut self, now: Timestamp) -> Result<Vec<BundleId>, StoreError> {
        let now = timestamp_to_sql(now, "purge time")?;
        let ids: Vec<String> = self.write(|tx| {
            let mut statement = tx.prepare(
                "SELECT bundle_id FROM dtn_held WHERE expires_at <= ?1
                 UNION SELECT bundle_id FROM dtn_delivered WHERE expires_at <= ?1",
            )?;
            let ids = statement
                .query_map([now], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            tx.execute("DELETE FROM dtn_held WHERE expires_at <= ?1", [now])?;
            tx.execute("DELETE FROM dtn_delivered WHERE expires_at <= ?1", [now])?;
            tx.execute("DELETE FROM dtn_tombstones WHERE until <= ?1", [now])?;
            Ok(ids)
        })?;
        let mut ids = ids
            .iter()
            .map(|id| bundle_id_from_sql(id))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn next_expiry(&self) -> Result<Option<Timestamp>, StoreError> {
        let next: Option<i64> = lock(&self.connection).query_row(
            "SELECT min(t) FROM (
                 SELECT min(expires_at) AS t FROM dtn_held
                 UNION ALL SELECT min(expires_at) FROM dtn_delivered
                 UNION ALL SELECT min(until) FROM dtn_tombstones)",
            [],
            |row| row.get(0),
        )?;
        next.map(|t| timestamp_from_sql(t, "expiry")).transpose()
    }
}

fn read_last_creation(conn: &Connection) -> Result<Option<CreationTimestamp>, StoreError> {
    let read = |key: &str| -> Result<Option<i64>, StoreError> {
        Ok(conn
            .query_row("SELECT value FROM dtn_meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?)
    };
    match (read("creation_time")?, read("creation_seq")?) {
        (Some(time), Some(seq)) => Ok(Some(CreationTimestamp {
            dtn_time_ms: count_from_sql(time, "creation time")?,
            seq: count_from_sql(seq, "creation sequence number")?,
        })),
        (None, None) => Ok(None),
        _ => Err(StoreError::Corrupt("half a creation timestamp".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ztmesh_dtn::bpv7::PrimaryBlock;
    use ztmesh_dtn::{Bundle, DtnConfig, DtnError, DtnEvent, MemoryStore, Router};

    use super::*;
    use crate::store::NodeStore;

    const HOUR: Duration = Duration::from_secs(3600);

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    fn ts(millis: u64) -> Timestamp {
        Timestamp::from_unix_millis(millis)
    }

    fn start() -> Timestamp {
        ts(1_700_000_000_000)
    }

    fn open(dir: &tempfile::TempDir) -> SqliteBundleStore {
        SqliteBundleStore::open(&dir.path().join("state.db")).unwrap()
    }

    fn id(seq: u64) -> BundleId {
        BundleId {
            source: node(1),
            dtn_time_ms: 700_000_000_000,
            seq,
        }
    }

    /// A held piece of bundle `seq` at `offset`, expiring at `expires`.
    fn piece(seq: u64, offset: u64, expires: u64) -> (HeldBundle, Vec<u8>) {
        let bytes = vec![seq as u8; 10 + offset as usize];
        let record = HeldBundle {
            key: FragmentKey {
                id: id(seq),
                offset,
            },
            source: Eid::new(node(1), "app").unwrap(),
            destination: Eid::new(node(3), "inbox").unwrap(),
            expires_at: ts(expires),
            is_fragment: offset > 0,
            total_adu_len: 100,
            payload_len: 10,
            received_from: (seq % 2 == 1).then_some(node(2)),
            received_at: ts(5),
            size: bytes.len() as u64,
            acked_by: Vec::new(),
        };
        (record, bytes)
    }

    fn delivered(seq: u64, expires: u64, len: u64) -> DeliveredBundle {
        DeliveredBundle {
            id: id(seq),
            source: Eid::new(node(1), "app").unwrap(),
            destination: Eid::new(node(3), "inbox").unwrap(),
            received_at: ts(7),
            expires_at: ts(expires),
            len,
        }
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SqliteBundleStore>();
    }

    #[test]
    fn everything_survives_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        let creation = CreationTimestamp {
            dtn_time_ms: 700_000_000_000,
            seq: 4,
        };
        {
            let mut store = open(&dir);
            store
                .insert_held(&[piece(0, 0, 1000), piece(1, 64, 1000)])
                .unwrap();
            store
                .record_ack(&piece(0, 0, 1000).0.key, &node(4))
                .unwrap();
            assert!(store.deliver(&delivered(2, 1000, 3), b"abc").unwrap());
            store.remove_bundle(&id(3), Some(ts(900))).unwrap();
            store.reserve_creation(creation).unwrap();
        }
        let store = open(&dir);
        let held = store.list_held().unwrap();
        let mut expected0 = piece(0, 0, 1000).0;
        expected0.acked_by = vec![node(4)];
        assert_eq!(held, vec![expected0, piece(1, 64, 1000).0]);
        assert_eq!(
            store.held_bytes(&held[1].key).unwrap(),
            Some(piece(1, 64, 1000).1)
        );
        assert_eq!(store.list_delivered().unwrap(), vec![delivered(2, 1000, 3)]);
        assert_eq!(
            store.delivered_payload(&id(2)).unwrap(),
            Some(b"abc".to_vec())
        );
        assert!(store.is_tombstoned(&id(2)).unwrap());
        assert!(store.is_tombstoned(&id(3)).unwrap());
        assert!(!store.is_tombstoned(&id(0)).unwrap());
        assert_eq!(store.last_creation().unwrap(), Some(creation));
        assert_eq!(
            store.usage().unwrap(),
            StoreUsage {
                bundles: 3,
                bytes: 10 + 74 + 3,
                tombstones: 2
            }
        );
        let conn = lock(&store.connection);
        let durable = ztmesh_runtime::sqlite::durable_version(&conn).unwrap();
        assert!(durable.is_some(), "WAL journal and synchronous=FULL");
    }

    #[test]
    fn delivered_exactly_once_across_reopen_and_application_delete() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let mut store = open(&dir);
            store
                .insert_held(&[piece(5, 0, 1000), piece(5, 10, 1000)])
                .unwrap();
            assert!(store.deliver(&delivered(5, 1000, 20), &[1; 20]).unwrap());
            // Delivery dropped the fragments in the same transaction.
            assert!(store.list_held().unwrap().is_empty());
        }
        let mut store = open(&dir);
        assert!(!store.deliver(&delivered(5, 1000, 20), &[1; 20]).unwrap());
        assert!(store.delete_delivered(&id(5)).unwrap());
        assert!(!store.delete_delivered(&id(5)).unwrap());
        drop(store);
        let mut store = open(&dir);
        assert!(!store.deliver(&delivered(5, 1000, 20), &[1; 20]).unwrap());
        assert!(store.list_delivered().unwrap().is_empty());
        assert_eq!(store.delivered_payload(&id(5)).unwrap(), None);
    }

    #[test]
    fn expiry_purges_held_delivered_and_tombstones() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut store = open(&dir);
        store
            .insert_held(&[piece(0, 0, 100), piece(0, 10, 100), piece(1, 0, 300)])
            .unwrap();
        store.record_ack(&piece(0, 0, 100).0.key, &node(4)).unwrap();
        assert!(store.deliver(&delivered(2, 200, 1), b"x").unwrap());
        store.remove_bundle(&id(3), Some(ts(50))).unwrap();
        assert_eq!(store.next_expiry().unwrap(), Some(ts(50)));
        assert_eq!(store.purge_expired(ts(49)).unwrap(), vec![]);
        assert_eq!(store.purge_expired(ts(50)).unwrap(), vec![]);
        assert!(!store.is_tombstoned(&id(3)).unwrap());
        assert_eq!(store.purge_expired(ts(200)).unwrap(), vec![id(0), id(2)]);
        assert_eq!(store.list_held().unwrap(), vec![piece(1, 0, 300).0]);
        assert!(store.list_delivered().unwrap().is_empty());
        // The delivered id's tombstone went with it (same expiry).
        assert!(!store.is_tombstoned(&id(2)).unwrap());
        assert_eq!(store.next_expiry().unwrap(), Some(ts(300)));
        // Acks of purged pieces went with them.
        let acks: i64 = lock(&store.connection)
            .query_row("SELECT count(*) FROM dtn_held_acks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(acks, 0);
        assert_eq!(store.purge_expired(ts(300)).unwrap(), vec![id(1)]);
        assert_eq!(store.next_expiry().unwrap(), None);
        assert_eq!(store.usage().unwrap(), StoreUsage::default());
    }

    #[test]
    fn writes_are_idempotent_and_acks_need_a_held_piece() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut store = open(&dir);
        store.insert_held(&[piece(0, 0, 100)]).unwrap();
        let mut changed = piece(0, 0, 999);
        changed.1 = vec![9; 3];
        store.insert_held(&[changed]).unwrap();
        assert_eq!(store.list_held().unwrap(), vec![piece(0, 0, 100).0]);
        store.record_ack(&piece(7, 0, 100).0.key, &node(4)).unwrap();
        store.record_ack(&piece(0, 0, 100).0.key, &node(4)).unwrap();
        store.record_ack(&piece(0, 0, 100).0.key, &node(4)).unwrap();
        assert_eq!(store.list_held().unwrap()[0].acked_by, vec![node(4)]);
        store.remove_held(&piece(0, 0, 100).0.key).unwrap();
        assert!(store.list_held().unwrap().is_empty());
        // Tombstones keep the later time; creation timestamps only move forward.
        store.remove_bundle(&id(1), Some(ts(500))).unwrap();
        store.remove_bundle(&id(1), Some(ts(400))).unwrap();
        assert_eq!(store.purge_expired(ts(450)).unwrap(), vec![]);
        assert!(store.is_tombstoned(&id(1)).unwrap());
        let later = CreationTimestamp {
            dtn_time_ms: 10,
            seq: 2,
        };
        store.reserve_creation(later).unwrap();
        store
            .reserve_creation(CreationTimestamp {
                dtn_time_ms: 10,
                seq: 1,
            })
            .unwrap();
        assert_eq!(store.last_creation().unwrap(), Some(later));
    }

    #[test]
    fn shares_state_db_with_the_node_store_in_either_order() {
        for bundle_first in [true, false] {
            let dir = tempfile::TempDir::new().unwrap();
            let path = dir.path().join("state.db");
            let (node_store, mut bundles) = if bundle_first {
                let bundles = SqliteBundleStore::open(&path).unwrap();
                (NodeStore::open(&path).unwrap(), bundles)
            } else {
                let node_store = NodeStore::open(&path).unwrap();
                (node_store, SqliteBundleStore::open(&path).unwrap())
            };
            node_store
                .upsert_peer(&node(9), "10.0.0.9:7000", ts(1))
                .unwrap();
            bundles.insert_held(&[piece(0, 0, 100)]).unwrap();
            drop((node_store, bundles));
            let node_store = NodeStore::open(&path).unwrap();
            let bundles = SqliteBundleStore::open(&path).unwrap();
            assert_eq!(node_store.peers(10).unwrap().len(), 1);
            assert_eq!(bundles.list_held().unwrap().len(), 1);
        }
    }

    #[test]
    fn foreign_files_and_newer_schemas_are_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        // Another store's file (the CA's database is checked in crates/ztmesh/tests/stores.rs).
        let ca = dir.path().join("ca.db");
        let foreign = ztmesh_runtime::sqlite::Schema {
            application_id: 0x0bad_cafe,
            migrations: &["CREATE TABLE b (x INTEGER) STRICT;"],
        };
        drop(ztmesh_runtime::sqlite::open_database(&ca, &foreign).unwrap());
        assert!(matches!(
            SqliteBundleStore::open(&ca),
            Err(StoreError::WrongDatabase { .. })
        ));

        drop(open(&dir));
        Connection::open(dir.path().join("state.db"))
            .unwrap()
            .execute(
                "UPDATE dtn_meta SET value = 2 WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        assert!(matches!(
            SqliteBundleStore::open(&dir.path().join("state.db")),
            Err(StoreError::SchemaTooNew {
                found: 2,
                supported: 1
            })
        ));
    }

    #[test]
    fn corrupt_rows_are_errors_not_panics() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        lock(&store.connection)
            .execute(
                "INSERT INTO dtn_tombstones (bundle_id, until) VALUES ('not-an-id', 5)",
                [],
            )
            .unwrap();
        let mut store = store;
        assert!(matches!(
            store.purge_expired(ts(10)),
            Ok(ids) if ids.is_empty()
        ));
        lock(&store.connection)
            .execute(
                "INSERT INTO dtn_delivered VALUES ('not-an-id', 'x', 'y', 1, 5, 1, x'00')",
                [],
            )
            .unwrap();
        assert!(matches!(
            store.list_delivered(),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.purge_expired(ts(10)),
            Err(StoreError::Corrupt(_))
        ));
    }

    fn router(dir: &tempfile::TempDir, n: u8, config: &DtnConfig) -> Router<SqliteBundleStore> {
        let store = SqliteBundleStore::open(&dir.path().join(format!("node{n}.db"))).unwrap();
        Router::new(node(n), config.clone(), store).unwrap()
    }

    /// Moves frames between two routers until both are quiet.
    fn exchange(
        a: &mut Router<SqliteBundleStore>,
        b: &mut Router<SqliteBundleStore>,
        now: Timestamp,
    ) {
        loop {
            let mut moved = false;
            while let Some(t) = a.poll_transmit() {
                moved = true;
                b.handle_frame(a.local(), &t.frame, now).unwrap();
            }
            while let Some(t) = b.poll_transmit() {
                moved = true;
                a.handle_frame(b.local(), &t.frame, now).unwrap();
            }
            if !moved {
                return;
            }
        }
    }

    fn deliveries(router: &mut Router<SqliteBundleStore>) -> usize {
        std::iter::from_fn(|| router.poll_event())
            .filter(|e| matches!(e, DtnEvent::Delivered { .. }))
            .count()
    }

    #[test]
    fn router_restart_mid_reassembly_delivers_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let config = DtnConfig::default();
        let now = start();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut a = router(&dir, 1, &config);
        let mut b = router(&dir, 2, &config);
        let dest = Eid::new(node(2), "inbox").unwrap();
        let id = a
            .accept_local(dest, "app", data.clone(), HOUR, now)
            .unwrap();
        a.handle_link_up(node(2), now);
        b.handle_link_up(node(1), now);
        // Two of the five fragments reach B, then B is killed (its router dropped).
        for _ in 0..2 {
            let t = a.poll_transmit().unwrap();
            b.handle_frame(node(1), &t.frame, now).unwrap();
        }
        while a.poll_transmit().is_some() {}
        drop(b);
        let mut b = router(&dir, 2, &config);
        assert_eq!(b.store().list_held().unwrap().len(), 2);
        b.handle_link_up(node(1), now);
        a.handle_link_down(&node(2));
        a.handle_link_up(node(2), now);
        exchange(&mut a, &mut b, now);
        assert_eq!(deliveries(&mut b), 1);
        assert_eq!(b.store().delivered_payload(&id).unwrap().unwrap(), data);
        assert!(a.store().list_held().unwrap().is_empty());
        // Again after another restart: the id is remembered, nothing is delivered twice.
        drop(b);
        let mut b = router(&dir, 2, &config);
        let late = Bundle {
            primary: PrimaryBlock::new(
                Eid::new(node(2), "inbox").unwrap(),
                Eid::new(node(1), "app").unwrap(),
                id.creation(),
                HOUR,
            ),
            payload: vec![1; 10],
        };
        let frame = ztmesh_dtn::Frame::Bundle {
            bytes: late.encode(),
        }
        .encode();
        b.handle_frame(node(1), &frame, now).unwrap();
        assert_eq!(deliveries(&mut b), 0);
        assert_eq!(b.store().list_delivered().unwrap().len(), 1);
    }

    #[test]
    fn router_bounds_hold_over_sqlite() {
        let dir = tempfile::TempDir::new().unwrap();
        let config = DtnConfig {
            max_stored_bundles: 3,
            ..DtnConfig::default()
        };
        let mut a = router(&dir, 1, &config);
        let dest = Eid::new(node(2), "inbox").unwrap();
        // 200 kB is four fragments: more than the bound allows.
        assert!(matches!(
            a.accept_local(dest.clone(), "app", vec![0; 200_000], HOUR, start()),
            Err(DtnError::StoreFull { .. })
        ));
        for n in 0..3u8 {
            a.accept_local(dest.clone(), "app", vec![n], HOUR, start())
                .unwrap();
        }
        assert!(matches!(
            a.accept_local(dest, "app", vec![9], HOUR, start()),
            Err(DtnError::StoreFull { bundles: 3, .. })
        ));
        // Expiry frees the room, in the file too.
        let later = start().saturating_add(HOUR);
        a.handle_timeout(later).unwrap();
        assert_eq!(a.store().usage().unwrap(), StoreUsage::default());
        let expired = std::iter::from_fn(|| a.poll_event())
            .filter(|e| matches!(e, DtnEvent::Expired { .. }))
            .count();
        assert_eq!(expired, 3);
    }

    /// What a store shows after a sequence of operations.
    type Observed = (
        Vec<HeldBundle>,
        Vec<DeliveredBundle>,
        StoreUsage,
        Vec<BundleId>,
    );

    #[test]
    fn memory_and_sqlite_stores_agree() {
        // The same operations on both stores give the same observable state.
        fn run<S: BundleStore>(store: &mut S) -> Observed
        where
            S::Error: std::fmt::Debug,
        {
            store
                .insert_held(&[piece(0, 0, 100), piece(1, 0, 200), piece(1, 10, 200)])
                .unwrap();
            store
                .record_ack(&piece(1, 10, 200).0.key, &node(6))
                .unwrap();
            store.remove_held(&piece(1, 0, 200).0.key).unwrap();
            store.deliver(&delivered(2, 150, 2), b"hi").unwrap();
            store.deliver(&delivered(2, 150, 2), b"hi").unwrap();
            store.remove_bundle(&id(3), Some(ts(120))).unwrap();
            let purged = store.purge_expired(ts(100)).unwrap();
            (
                store.list_held().unwrap(),
                store.list_delivered().unwrap(),
                store.usage().unwrap(),
                purged,
            )
        }
        let dir = tempfile::TempDir::new().unwrap();
        assert_eq!(run(&mut open(&dir)), run(&mut MemoryStore::new()));
    }
}
