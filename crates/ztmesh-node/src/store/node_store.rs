//! A node's own `state.db`: the peers it has seen, the newest CRL it accepted, the history
//! of its own certificates, and its watch of the CA's membership log (the accepted head, the
//! split-view alarm, and the log entries it verified).
//!
//! The CRL is kept by compare-and-swap on its number, so a replayed older CRL can never
//! replace a newer one on disk (and so un-revoke anybody after a restart). The log head is
//! kept the same way on its size ([`NodeStore::save_log_watch`]): it only moves forward, a
//! head of the saved size with another root is recorded as an alarm instead of replacing it,
//! and an alarm once saved stays. Verified log entries are only appended, densely, and never
//! beyond the saved head. The peer table is fed by network input and therefore bounded:
//! beyond its capacity the least recently seen peers are dropped.
//!
//! It also keeps the node ids learnt revoked and the governance decisions in force, which
//! earlier versions kept in `revoked-nodes.json` and `governance.json` (imported once, see
//! [`legacy_json`]). A revocation is only ever added by [`NodeStore::record_node_revocations`],
//! never written as a whole set, so a writer holding an older view of the set cannot take a
//! newer revocation out; rows leave only to stay within the trust book's bound, oldest first,
//! and by the start audit ([`NodeStore::forget_node_revocation`], compare-and-swap on the time
//! the audit judged). Governance decisions read back are held to their parameter's bounds: a
//! value out of bounds is a [`NodeStateError`], never put in force.

mod legacy_json;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_pki::Serial;
use ztmesh_trust::Param;

pub use legacy_json::{LegacyImport, GOVERNANCE_FILE, IMPORTED_SUFFIX, REVOKED_NODES_FILE};

use ztmesh_runtime::sqlite::{
    count_from_sql, count_to_sql, limit_to_sql, lock, node_id_from_sql, open_database,
    timestamp_from_sql, timestamp_to_sql, Schema, StoreError,
};

/// How many peers [`NodeStore::open`] keeps at most.
pub const DEFAULT_PEER_CAPACITY: usize = 4096;

const SCHEMA: Schema = Schema {
    // "ztND"
    application_id: 0x7a74_4e44,
    migrations: &[
        r#"
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
"#,
        r#"
-- Singleton: the membership-log checkpoint this node accepted (log_watch.rs).
CREATE TABLE log_head (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    size INTEGER NOT NULL CHECK (size >= 0),
    root BLOB NOT NULL CHECK (length(root) = 32),
    note TEXT NOT NULL
) STRICT;

-- Singleton: the split-view alarm (reason and evidence while raised) and how many were raised.
CREATE TABLE log_alarm (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    alarms     INTEGER NOT NULL CHECK (alarms >= 0),
    reason     TEXT,
    evidence_a TEXT,
    evidence_b TEXT,
    CHECK ((reason IS NULL) = (evidence_a IS NULL) AND (reason IS NULL) = (evidence_b IS NULL))
) STRICT;

-- Membership-log entries verified against an accepted root, dense from index 0.
CREATE TABLE log_entries (
    idx       INTEGER PRIMARY KEY NOT NULL CHECK (idx >= 0),
    leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32),
    kind      TEXT NOT NULL,
    node_id   TEXT NOT NULL,
    serial    TEXT NOT NULL,
    at        INTEGER NOT NULL CHECK (at >= 0)
) STRICT;
CREATE INDEX log_entries_by_serial ON log_entries (serial);
"#,
        r#"
CREATE INDEX log_entries_by_node ON log_entries (node_id, idx);

-- Singleton: the first log index at which this node judges the entries naming it against its
-- own certificate history (log_audit.rs). Set once, to the entries followed at that time, so a
-- node that followed the log before keeping a complete history does not judge older entries.
CREATE TABLE own_audit (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    from_index INTEGER NOT NULL CHECK (from_index >= 0)
) STRICT;
"#,
        r#"
-- Split-view alarms the operator acknowledged, with their evidence (log_watch.rs).
CREATE TABLE log_alarm_history (
    alarms          INTEGER PRIMARY KEY NOT NULL CHECK (alarms > 0),
    reason          TEXT NOT NULL,
    evidence_a      TEXT NOT NULL,
    evidence_b      TEXT NOT NULL,
    acknowledged_at INTEGER NOT NULL CHECK (acknowledged_at >= 0)
) STRICT;
"#,
        r#"
-- Singleton: the log_stalled alarm (log_stall.rs): when a checkpoint meeting the quorum last
-- arrived, the last acknowledgement, how many alarms were raised, and the raised one.
CREATE TABLE log_stall (
    id              INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    last_quorum_at  INTEGER CHECK (last_quorum_at >= 0),
    acknowledged_at INTEGER CHECK (acknowledged_at >= 0),
    alarms          INTEGER NOT NULL CHECK (alarms >= 0),
    raised_at       INTEGER CHECK (raised_at >= 0),
    reason          TEXT,
    await_log_at    INTEGER CHECK (await_log_at >= 0),
    CHECK ((raised_at IS NULL) = (reason IS NULL)),
    CHECK (raised_at IS NOT NULL OR await_log_at IS NULL)
) STRICT;

-- Every log_stalled alarm that ended: cleared by itself (`recovered`) or by the operator.
CREATE TABLE log_stall_history (
    alarms    INTEGER PRIMARY KEY NOT NULL CHECK (alarms > 0),
    raised_at INTEGER NOT NULL CHECK (raised_at >= 0),
    reason    TEXT NOT NULL,
    ended_at  INTEGER NOT NULL CHECK (ended_at >= 0),
    ended_by  TEXT NOT NULL CHECK (ended_by IN ('recovered', 'acknowledged'))
) STRICT;
"#,
        r#"
-- Node ids learnt revoked (daemon.rs), each with when its revocation was first learnt. Rows
-- are only added (the first time learnt stays); they leave only to keep the set within the
-- trust book's bound (oldest first) and by the start audit against the membership log.
-- `source`: 'learnt' at run time, 'imported' from an earlier version's revoked-nodes.json.
CREATE TABLE revoked_nodes (
    node_id     TEXT PRIMARY KEY NOT NULL,
    learnt_at   INTEGER NOT NULL CHECK (learnt_at >= 0),
    recorded_at INTEGER NOT NULL CHECK (recorded_at >= 0),
    source      TEXT NOT NULL CHECK (source IN ('learnt', 'imported'))
) STRICT;
CREATE INDEX revoked_nodes_by_age ON revoked_nodes (learnt_at, node_id);

-- Governance decisions in force (governance.rs), one value per parameter, with the proposal
-- that decided it: NULL when imported from an earlier version's governance.json, which kept
-- only the value.
CREATE TABLE governance_decisions (
    param      TEXT PRIMARY KEY NOT NULL,
    value      INTEGER NOT NULL CHECK (value >= 0),
    proposal   TEXT,
    decided_at INTEGER NOT NULL CHECK (decided_at >= 0)
) STRICT;

-- JSON files of earlier versions imported into this database, recorded in the import's own
-- transaction: the SHA-256 of the bytes imported makes a second import of the same file
-- impossible, and one of another file of that name is refused (node_store/legacy_json.rs).
CREATE TABLE legacy_imports (
    file        TEXT PRIMARY KEY NOT NULL,
    sha256      BLOB NOT NULL CHECK (length(sha256) = 32),
    entries     INTEGER NOT NULL CHECK (entries >= 0),
    imported_at INTEGER NOT NULL CHECK (imported_at >= 0)
) STRICT;
"#,
    ],
};

/// The accepted membership-log checkpoint as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedLogHead {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: [u8; 32],
    /// The checkpoint note, signatures included.
    pub note: String,
}

/// A raised split-view alarm as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedLogAlarm {
    /// Why, for the operator.
    pub reason: String,
    /// The accepted note, then what contradicts it.
    pub evidence: (String, String),
}

/// What [`NodeStore::acknowledge_log_alarm`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlarmAck {
    /// The alarm was cleared and its evidence moved to the history.
    Acknowledged,
    /// No alarm is raised.
    NoAlarm,
    /// The alarm count is not the one acknowledged: another alarm was raised meanwhile, and
    /// nothing changed.
    Changed {
        /// The count saved.
        alarms: u64,
    },
}

/// A node's watch of the membership log as saved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedLogWatch {
    /// The accepted checkpoint.
    pub head: Option<SavedLogHead>,
    /// The alarm, while raised.
    pub alarm: Option<SavedLogAlarm>,
    /// Alarms raised over the node's life.
    pub alarms: u64,
}

/// The `log_stalled` alarm state as saved (see `log_stall.rs`); times in Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedLogStall {
    /// When a checkpoint meeting the quorum last arrived (`None`: nothing saved yet).
    pub last_quorum_at: Option<u64>,
    /// When the operator last acknowledged an alarm.
    pub acknowledged_at: Option<u64>,
    /// Alarms raised over the node's life.
    pub alarms: u64,
    /// The alarm, while raised.
    pub raised: Option<SavedStallAlarm>,
}

/// A raised `log_stalled` alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedStallAlarm {
    /// When it was raised.
    pub raised_at: u64,
    /// Why, for the operator.
    pub reason: String,
    /// Raised (or joined) by certificates: it cannot clear before the verified log has an
    /// entry committed at or after this time.
    pub await_log_at: Option<u64>,
}

/// How a `log_stalled` alarm ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallEnd {
    /// The log was live again.
    Recovered,
    /// The operator acknowledged it.
    Acknowledged,
}

impl StallEnd {
    fn as_str(self) -> &'static str {
        match self {
            StallEnd::Recovered => "recovered",
            StallEnd::Acknowledged => "acknowledged",
        }
    }
}

/// One ended `log_stalled` alarm of `log_stall_history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedStall {
    /// Its number (the alarm count when it was raised).
    pub alarm: u64,
    /// What it was.
    pub raised: SavedStallAlarm,
    /// When it ended.
    pub ended_at: u64,
    /// How.
    pub ended_by: StallEnd,
}

/// What [`NodeStore::save_log_watch`] did with the head it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogWatchSwap {
    /// Saved (or the same head was saved already).
    Saved,
    /// The saved head is larger: it stays (the alarm state given was merged in).
    OlderThanSaved {
        /// Size of the saved head.
        saved_size: u64,
    },
    /// The saved head has the same size and another root: it stays, and an alarm naming both
    /// notes was saved (unless one was raised already).
    ConflictsWithSaved {
        /// The saved head.
        saved: SavedLogHead,
    },
}

/// One verified membership-log entry as kept for cross-checks. Entries of kinds this node does
/// not know keep their leaf hash (for the root) with kind `unknown` and empty fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedEntry {
    /// RFC 6962 hash of the leaf.
    pub leaf_hash: [u8; 32],
    /// `enroll`, `rotate`, `revoke_node`, `revoke_certificate` or `unknown`.
    pub kind: String,
    /// The node concerned (text form).
    pub node_id: String,
    /// The certificate serial, lowercase hex.
    pub serial: String,
    /// When the CA committed the entry (Unix seconds).
    pub at: u64,
}

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

/// Why the node's persisted revocations or governance decisions cannot be used; the node
/// refuses to start on it rather than run with less than it had decided.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeStateError {
    /// The database itself failed.
    #[error("state.db: {0}")]
    Store(#[from] StoreError),
    /// A governance decision in `state.db` names a parameter this build does not know.
    #[error("state.db: governance decision for unknown parameter {0:?}")]
    UnknownParam(String),
    /// A governance decision in `state.db` is outside its parameter's bounds.
    #[error("state.db: governance decision {param} = {value}: {reason}")]
    ValueOutOfBounds {
        /// The parameter.
        param: &'static str,
        /// The value found.
        value: u64,
        /// The bound it breaks.
        reason: String,
    },
    /// A JSON file of an earlier version cannot be read, is not what that version wrote, or
    /// holds a value out of bounds. Nothing of it was imported; it stays where it is.
    #[error("{}: {reason}", path.display())]
    LegacyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file of this name was imported before and this one has other content. Importing it
    /// as well could bring back what the node decided since, so the operator must look.
    #[error("{}: a file of this name was already imported into state.db at {imported_at} and this one differs; move it away (the imported one is kept as {})", path.display(), kept_as.display())]
    AlreadyImported {
        /// The file found.
        path: PathBuf,
        /// Where the imported one was kept.
        kept_as: PathBuf,
        /// When it was imported.
        imported_at: Timestamp,
    },
    /// The name an imported file is kept under is taken; nothing was imported, so that no
    /// operator file is overwritten.
    #[error("{}: cannot keep it as {} after importing it, that name is taken; move one of them away", path.display(), kept_as.display())]
    ImportedNameTaken {
        /// The file to import.
        path: PathBuf,
        /// The name it would be kept under.
        kept_as: PathBuf,
    },
    /// The imported file could not be renamed. Its values are in `state.db`; the next start
    /// finds the import recorded and only renames it.
    #[error("{}: imported, but not renamed to {}: {source}", path.display(), kept_as.display())]
    Rename {
        /// The imported file.
        path: PathBuf,
        /// The name it should be kept under.
        kept_as: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
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

    /// The saved watch of the membership log (empty when nothing was saved yet).
    pub fn log_watch(&self) -> Result<SavedLogWatch, StoreError> {
        read_log_watch(&lock(&self.connection))
    }

    /// Saves the accepted head and the alarm state in one transaction, by compare-and-swap
    /// against what is saved (whoever wrote it): the head only moves forward, and one of the
    /// saved size with another root is refused and saved as an alarm instead. An alarm, once
    /// saved, stays with its first evidence; the alarm count never goes down.
    pub fn save_log_watch(&self, state: &SavedLogWatch) -> Result<LogWatchSwap, StoreError> {
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let saved = read_log_watch(&tx)?;
        let mut alarm = saved.alarm.clone().or_else(|| state.alarm.clone());
        let mut alarms = saved.alarms.max(state.alarms);
        let outcome = match (&state.head, &saved.head) {
            (Some(new), Some(old)) if new.size < old.size => LogWatchSwap::OlderThanSaved {
                saved_size: old.size,
            },
            (Some(new), Some(old)) if new.size == old.size && new.root != old.root => {
                if alarm.is_none() {
                    alarm = Some(SavedLogAlarm {
                        reason: format!(
                            "a checkpoint of size {} with another root than the saved one",
                            new.size
                        ),
                        evidence: (old.note.clone(), new.note.clone()),
                    });
                    alarms += 1;
                }
                LogWatchSwap::ConflictsWithSaved { saved: old.clone() }
            }
            // The same head again keeps the note first saved.
            (Some(new), Some(old)) if new.size == old.size => LogWatchSwap::Saved,
            (Some(new), _) => {
                tx.execute(
                    "INSERT INTO log_head (id, size, root, note) VALUES (1, ?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET
                         size = excluded.size, root = excluded.root, note = excluded.note",
                    params![
                        count_to_sql(new.size, "log size")?,
                        new.root.as_slice(),
                        new.note
                    ],
                )?;
                LogWatchSwap::Saved
            }
            // A head is never forgotten.
            (None, _) => LogWatchSwap::Saved,
        };
        let (reason, evidence_a, evidence_b) = match &alarm {
            Some(alarm) => (
                Some(alarm.reason.as_str()),
                Some(alarm.evidence.0.as_str()),
                Some(alarm.evidence.1.as_str()),
            ),
            None => (None, None, None),
        };
        tx.execute(
            "INSERT INTO log_alarm (id, alarms, reason, evidence_a, evidence_b)
             VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET alarms = excluded.alarms, reason = excluded.reason,
                 evidence_a = excluded.evidence_a, evidence_b = excluded.evidence_b",
            params![
                count_to_sql(alarms, "alarm count")?,
                reason,
                evidence_a,
                evidence_b
            ],
        )?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Clears the raised split-view alarm by compare-and-swap on the alarm count the operator
    /// saw (`expected_alarms`), keeping its reason and evidence in `log_alarm_history`. The
    /// count never goes down.
    pub fn acknowledge_log_alarm(
        &self,
        expected_alarms: u64,
        at: Timestamp,
    ) -> Result<AlarmAck, StoreError> {
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let saved = read_log_watch(&tx)?;
        let Some(alarm) = saved.alarm else {
            return Ok(AlarmAck::NoAlarm);
        };
        if saved.alarms != expected_alarms {
            return Ok(AlarmAck::Changed {
                alarms: saved.alarms,
            });
        }
        tx.execute(
            "INSERT INTO log_alarm_history (alarms, reason, evidence_a, evidence_b, acknowledged_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                count_to_sql(saved.alarms, "alarm count")?,
                alarm.reason,
                alarm.evidence.0,
                alarm.evidence.1,
                timestamp_to_sql(at, "acknowledgement time")?,
            ],
        )?;
        tx.execute(
            "UPDATE log_alarm SET reason = NULL, evidence_a = NULL, evidence_b = NULL WHERE id = 1",
            [],
        )?;
        tx.commit()?;
        Ok(AlarmAck::Acknowledged)
    }

    /// The acknowledged alarms, oldest first: `(alarm count, reason, evidence, acknowledged at)`.
    pub fn acknowledged_log_alarms(
        &self,
    ) -> Result<Vec<(u64, SavedLogAlarm, Timestamp)>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare(
            "SELECT alarms, reason, evidence_a, evidence_b, acknowledged_at
             FROM log_alarm_history ORDER BY alarms",
        )?;
        let mut rows = statement.query([])?;
        let mut history = Vec::new();
        while let Some(row) = rows.next()? {
            history.push((
                count_from_sql(row.get(0)?, "alarm count")?,
                SavedLogAlarm {
                    reason: row.get(1)?,
                    evidence: (row.get(2)?, row.get(3)?),
                },
                timestamp_from_sql(row.get(4)?, "acknowledgement time")?,
            ));
        }
        Ok(history)
    }

    /// The saved `log_stalled` state (empty when nothing was saved yet).
    pub fn log_stall(&self) -> Result<SavedLogStall, StoreError> {
        let conn = lock(&self.connection);
        type Row = (
            Option<i64>,
            Option<i64>,
            i64,
            Option<i64>,
            Option<String>,
            Option<i64>,
        );
        let row: Option<Row> = conn
            .query_row(
                "SELECT last_quorum_at, acknowledged_at, alarms, raised_at, reason, await_log_at
                 FROM log_stall WHERE id = 1",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((last_quorum_at, acknowledged_at, alarms, raised_at, reason, await_log_at)) = row
        else {
            return Ok(SavedLogStall::default());
        };
        let time =
            |value: Option<i64>, what: &str| value.map(|v| count_from_sql(v, what)).transpose();
        let raised = match (time(raised_at, "stall raised_at")?, reason) {
            (Some(raised_at), Some(reason)) => Some(SavedStallAlarm {
                raised_at,
                reason,
                await_log_at: time(await_log_at, "stall await_log_at")?,
            }),
            _ => None,
        };
        Ok(SavedLogStall {
            last_quorum_at: time(last_quorum_at, "stall last_quorum_at")?,
            acknowledged_at: time(acknowledged_at, "stall acknowledged_at")?,
            alarms: count_from_sql(alarms, "stall alarm count")?,
            raised,
        })
    }

    /// Saves the `log_stalled` state and, in the same transaction, the alarm that `ended`
    /// (if one did) in `log_stall_history`; an alarm ends once (the first row saved for its
    /// number stays). The alarm count never goes down.
    pub fn save_log_stall(
        &self,
        state: &SavedLogStall,
        ended: Option<&EndedStall>,
    ) -> Result<(), StoreError> {
        let time = |value: Option<u64>, what: &'static str| {
            value.map(|v| count_to_sql(v, what)).transpose()
        };
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO log_stall
                 (id, last_quorum_at, acknowledged_at, alarms, raised_at, reason, await_log_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET last_quorum_at = excluded.last_quorum_at,
                 acknowledged_at = excluded.acknowledged_at,
                 alarms = max(log_stall.alarms, excluded.alarms),
                 raised_at = excluded.raised_at, reason = excluded.reason,
                 await_log_at = excluded.await_log_at",
            params![
                time(state.last_quorum_at, "stall last_quorum_at")?,
                time(state.acknowledged_at, "stall acknowledged_at")?,
                count_to_sql(state.alarms, "stall alarm count")?,
                time(
                    state.raised.as_ref().map(|r| r.raised_at),
                    "stall raised_at"
                )?,
                state.raised.as_ref().map(|r| r.reason.as_str()),
                time(
                    state.raised.as_ref().and_then(|r| r.await_log_at),
                    "stall await_log_at"
                )?,
            ],
        )?;
        if let Some(ended) = ended {
            tx.execute(
                "INSERT INTO log_stall_history (alarms, raised_at, reason, ended_at, ended_by)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (alarms) DO NOTHING",
                params![
                    count_to_sql(ended.alarm, "stall alarm count")?,
                    count_to_sql(ended.raised.raised_at, "stall raised_at")?,
                    ended.raised.reason,
                    count_to_sql(ended.ended_at, "stall ended_at")?,
                    ended.ended_by.as_str(),
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The `log_stalled` alarms that ended, oldest first.
    pub fn log_stall_history(&self) -> Result<Vec<EndedStall>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare(
            "SELECT alarms, raised_at, reason, ended_at, ended_by FROM log_stall_history
             ORDER BY alarms",
        )?;
        let mut rows = statement.query([])?;
        let mut history = Vec::new();
        while let Some(row) = rows.next()? {
            let ended_by: String = row.get(4)?;
            history.push(EndedStall {
                alarm: count_from_sql(row.get(0)?, "stall alarm count")?,
                raised: SavedStallAlarm {
                    raised_at: count_from_sql(row.get(1)?, "stall raised_at")?,
                    reason: row.get(2)?,
                    await_log_at: None,
                },
                ended_at: count_from_sql(row.get(3)?, "stall ended_at")?,
                ended_by: match ended_by.as_str() {
                    "recovered" => StallEnd::Recovered,
                    "acknowledged" => StallEnd::Acknowledged,
                    other => return Err(StoreError::Corrupt(format!("stall ended_by {other:?}"))),
                },
            });
        }
        Ok(history)
    }

    /// Number of verified log entries kept (they are dense from index 0).
    pub fn followed_log_size(&self) -> Result<u64, StoreError> {
        read_followed_size(&lock(&self.connection))
    }

    /// Appends verified entries at index `first`, by compare-and-swap: only when `first` is
    /// the number of entries kept and the entries stay within the saved head. Returns whether
    /// they were appended.
    pub fn append_followed_entries(
        &self,
        first: u64,
        entries: &[FollowedEntry],
    ) -> Result<bool, StoreError> {
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head_size: Option<i64> = tx
            .query_row("SELECT size FROM log_head WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()?;
        let head_size = head_size.map_or(Ok(0), |size| count_from_sql(size, "log size"))?;
        let end = first
            .checked_add(entries.len() as u64)
            .ok_or(StoreError::OutOfRange("log index"))?;
        if read_followed_size(&tx)? != first || end > head_size {
            return Ok(false);
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO log_entries (idx, leaf_hash, kind, node_id, serial, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (index, entry) in (first..).zip(entries) {
                insert.execute(params![
                    count_to_sql(index, "log index")?,
                    entry.leaf_hash.as_slice(),
                    entry.kind,
                    entry.node_id,
                    entry.serial,
                    count_to_sql(entry.at, "log entry time")?,
                ])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// Up to `limit` leaf hashes of verified entries from index `start`, in order.
    pub fn followed_leaf_hashes(
        &self,
        start: u64,
        limit: usize,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare_cached(
            "SELECT leaf_hash FROM log_entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2",
        )?;
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        let mut rows = statement.query(params![start, limit_to_sql(limit)])?;
        let mut hashes = Vec::new();
        while let Some(row) = rows.next()? {
            let bytes: Vec<u8> = row.get(0)?;
            hashes.push(
                <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| StoreError::Corrupt("log leaf hash length".into()))?,
            );
        }
        Ok(hashes)
    }

    /// The latest commit time among the verified entries (Unix seconds).
    pub fn followed_newest_at(&self) -> Result<Option<u64>, StoreError> {
        let at: Option<i64> =
            lock(&self.connection)
                .query_row("SELECT max(at) FROM log_entries", [], |row| row.get(0))?;
        at.map(|at| count_from_sql(at, "log entry time"))
            .transpose()
    }

    /// Whether `serial` is one of the node's own certificates ([`NodeStore::record_issuance`]).
    pub fn holds_issuance(&self, serial: &Serial) -> Result<bool, StoreError> {
        let found: Option<i64> = lock(&self.connection)
            .query_row(
                "SELECT 1 FROM issuances WHERE serial = ?1",
                [serial.as_bytes()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// The first log index whose entries naming this node are judged against its certificate
    /// history: fixed on the first call, to the number of entries followed then.
    pub fn own_audit_start(&self) -> Result<u64, StoreError> {
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let followed = read_followed_size(&tx)?;
        tx.execute(
            "INSERT INTO own_audit (id, from_index) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
            [count_to_sql(followed, "log index")?],
        )?;
        let from: i64 =
            tx.query_row("SELECT from_index FROM own_audit WHERE id = 1", [], |row| {
                row.get(0)
            })?;
        tx.commit()?;
        count_from_sql(from, "log index")
    }

    /// Up to `limit` verified `enroll` and `rotate` entries naming `node_id` (text form) from
    /// index `start`, in index order: `(index, serial, at)`.
    pub fn issuances_logged_for(
        &self,
        node_id: &str,
        start: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String, u64)>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare_cached(
            "SELECT idx, serial, at FROM log_entries
             WHERE node_id = ?1 AND idx >= ?2 AND kind IN ('enroll', 'rotate')
             ORDER BY idx LIMIT ?3",
        )?;
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        let mut rows = statement.query(params![node_id, start, limit_to_sql(limit)])?;
        let mut found = Vec::new();
        while let Some(row) = rows.next()? {
            found.push((
                count_from_sql(row.get(0)?, "log index")?,
                row.get(1)?,
                count_from_sql(row.get(2)?, "log entry time")?,
            ));
        }
        Ok(found)
    }

    /// The verified revocation entries (`revoke_node`, `revoke_certificate`) committed at or
    /// before `until` (Unix seconds): `(serial, node_id)`, one per serial.
    pub fn revocations_logged_until(
        &self,
        until: u64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare_cached(
            "SELECT serial, min(node_id) FROM log_entries
             WHERE kind IN ('revoke_node', 'revoke_certificate') AND serial != '' AND at <= ?1
             GROUP BY serial ORDER BY serial",
        )?;
        let until = i64::try_from(until).unwrap_or(i64::MAX);
        let found = statement
            .query_map([until], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<Vec<(String, String)>, _>>()?;
        Ok(found)
    }

    /// The kinds of the verified entries naming node `node_id`.
    pub fn logged_kinds_for_node(&self, node_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare_cached(
            "SELECT DISTINCT kind FROM log_entries WHERE node_id = ?1 ORDER BY kind",
        )?;
        let kinds = statement
            .query_map([node_id], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(kinds)
    }

    /// The node a verified `enroll` or `rotate` entry gives certificate `serial` (lowercase
    /// hex) to, if the log shows its issuance.
    pub fn logged_owner(&self, serial: &str) -> Result<Option<String>, StoreError> {
        let conn = lock(&self.connection);
        let owner = conn
            .prepare_cached(
                "SELECT node_id FROM log_entries
                 WHERE serial = ?1 AND kind IN ('enroll', 'rotate') ORDER BY idx LIMIT 1",
            )?
            .query_row([serial], |row| row.get(0))
            .optional()?;
        Ok(owner)
    }

    /// The kinds of the verified entries naming certificate `serial` (lowercase hex).
    pub fn logged_kinds(&self, serial: &str) -> Result<Vec<String>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare_cached(
            "SELECT DISTINCT kind FROM log_entries WHERE serial = ?1 ORDER BY kind",
        )?;
        let kinds = statement
            .query_map([serial], |row| row.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(kinds)
    }

    /// Adds revocations by node id, each with when it was learnt, in one transaction. A node
    /// already recorded keeps the earliest time. Nothing is ever removed for being absent
    /// from `revoked`: callers pass what they newly learnt, so a writer with an older view
    /// cannot undo a revocation another wrote. Beyond `capacity` (the trust book's
    /// `max_revoked`) the oldest other revocations are forgotten, as the book forgets them.
    pub fn record_node_revocations(
        &self,
        revoked: &[(NodeId, Timestamp)],
        capacity: usize,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        if revoked.is_empty() {
            return Ok(());
        }
        let at = timestamp_to_sql(at, "revocation record time")?;
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_revocations(&tx, revoked, at, "learnt")?;
        let count: i64 = tx.query_row("SELECT count(*) FROM revoked_nodes", [], |r| r.get(0))?;
        let excess = count.saturating_sub(limit_to_sql(capacity.max(1)));
        if excess > 0 {
            let fresh: std::collections::BTreeSet<String> =
                revoked.iter().map(|(node, _)| node.to_string()).collect();
            let oldest = {
                let mut statement = tx.prepare(
                    "SELECT node_id FROM revoked_nodes ORDER BY learnt_at, node_id LIMIT ?1",
                )?;
                let rows = statement
                    .query_map([excess.saturating_add(limit_to_sql(fresh.len()))], |r| {
                        r.get::<_, String>(0)
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            let mut delete = tx.prepare("DELETE FROM revoked_nodes WHERE node_id = ?1")?;
            for node in oldest
                .iter()
                .filter(|node| !fresh.contains(*node))
                .take(usize::try_from(excess).unwrap_or(usize::MAX))
            {
                delete.execute([node])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Takes `node`'s revocation out, only if it is still the one learnt at `learnt_at`
    /// (compare-and-swap): for the start audit, which holds a persisted revocation the
    /// membership log does not justify unapplied instead. Returns whether it was removed.
    pub fn forget_node_revocation(
        &self,
        node: &NodeId,
        learnt_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let learnt_at = timestamp_to_sql(learnt_at, "revocation time")?;
        let removed = lock(&self.connection).execute(
            "DELETE FROM revoked_nodes WHERE node_id = ?1 AND learnt_at = ?2",
            params![node.to_string(), learnt_at],
        )?;
        Ok(removed == 1)
    }

    /// The node ids recorded revoked, with when each was learnt, in id order.
    pub fn revoked_nodes(&self) -> Result<Vec<(NodeId, Timestamp)>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare("SELECT node_id, learnt_at FROM revoked_nodes")?;
        let mut rows = statement.query([])?;
        let mut revoked = Vec::new();
        while let Some(row) = rows.next()? {
            revoked.push((
                node_id_from_sql(&row.get::<_, String>(0)?)?,
                timestamp_from_sql(row.get(1)?, "revocation time")?,
            ));
        }
        // The text order of base32 is not the order of the ids' bytes.
        revoked.sort_unstable_by_key(|(node, _)| *node);
        Ok(revoked)
    }

    /// Records that governance decided `param = value` by `proposal` (hex id), replacing the
    /// value in force. Callers write decisions in the order they were taken (the node holds
    /// its governance lock), so the last write is the latest decision.
    pub fn record_governance_decision(
        &self,
        param: Param,
        value: u64,
        proposal: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let value = count_to_sql(value, "governance value")?;
        let at = timestamp_to_sql(at, "governance decision time")?;
        lock(&self.connection).execute(
            "INSERT INTO governance_decisions (param, value, proposal, decided_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (param) DO UPDATE SET value = excluded.value,
                 proposal = excluded.proposal, decided_at = excluded.decided_at",
            params![param.as_str(), value, proposal, at],
        )?;
        Ok(())
    }

    /// The governance decisions in force, each held to its parameter's bounds: an unknown
    /// parameter or a value out of bounds is an error, never put in force.
    pub fn governance_decisions(&self) -> Result<BTreeMap<Param, u64>, NodeStateError> {
        let rows = {
            let conn = lock(&self.connection);
            let mut statement = conn
                .prepare("SELECT param, value FROM governance_decisions ORDER BY param")
                .map_err(StoreError::from)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(StoreError::from)?;
            rows
        };
        let mut decided = BTreeMap::new();
        for (name, value) in rows {
            let param = Param::ALL
                .into_iter()
                .find(|p| p.as_str() == name)
                .ok_or(NodeStateError::UnknownParam(name))?;
            let value = count_from_sql(value, "governance value")?;
            param
                .check(value)
                .map_err(|e| NodeStateError::ValueOutOfBounds {
                    param: param.as_str(),
                    value,
                    reason: e.to_string(),
                })?;
            decided.insert(param, value);
        }
        Ok(decided)
    }
}

/// Inserts revocations, keeping the earliest time for a node already recorded.
fn insert_revocations(
    tx: &rusqlite::Transaction<'_>,
    revoked: &[(NodeId, Timestamp)],
    at: i64,
    source: &str,
) -> Result<(), StoreError> {
    let mut insert = tx.prepare(
        "INSERT INTO revoked_nodes (node_id, learnt_at, recorded_at, source)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (node_id) DO UPDATE SET learnt_at = min(learnt_at, excluded.learnt_at)",
    )?;
    for (node, learnt) in revoked {
        insert.execute(params![
            node.to_string(),
            timestamp_to_sql(*learnt, "revocation time")?,
            at,
            source
        ])?;
    }
    Ok(())
}

fn read_log_watch(conn: &Connection) -> Result<SavedLogWatch, StoreError> {
    let head: Option<(i64, Vec<u8>, String)> = conn
        .query_row(
            "SELECT size, root, note FROM log_head WHERE id = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let head = head
        .map(|(size, root, note)| {
            Ok::<_, StoreError>(SavedLogHead {
                size: count_from_sql(size, "log size")?,
                root: <[u8; 32]>::try_from(root.as_slice())
                    .map_err(|_| StoreError::Corrupt("log root length".into()))?,
                note,
            })
        })
        .transpose()?;
    type AlarmRow = (i64, Option<String>, Option<String>, Option<String>);
    let alarm: Option<AlarmRow> = conn
        .query_row(
            "SELECT alarms, reason, evidence_a, evidence_b FROM log_alarm WHERE id = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    let (alarms, alarm) = match alarm {
        None => (0, None),
        Some((alarms, reason, a, b)) => (
            count_from_sql(alarms, "alarm count")?,
            match (reason, a, b) {
                (Some(reason), Some(a), Some(b)) => Some(SavedLogAlarm {
                    reason,
                    evidence: (a, b),
                }),
                _ => None,
            },
        ),
    };
    Ok(SavedLogWatch {
        head,
        alarm,
        alarms,
    })
}

fn read_followed_size(conn: &Connection) -> Result<u64, StoreError> {
    let next: i64 = conn.query_row(
        "SELECT coalesce(max(idx) + 1, 0) FROM log_entries",
        [],
        |row| row.get(0),
    )?;
    count_from_sql(next, "log size")
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
        let durable = ztmesh_runtime::sqlite::durable_version(&conn).unwrap();
        assert_eq!(durable, Some(SCHEMA.supported_version()));
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

    fn head(size: u64, root: u8) -> SavedLogHead {
        SavedLogHead {
            size,
            root: [root; 32],
            note: format!("note {size} {root}"),
        }
    }

    fn watch_of(head: SavedLogHead) -> SavedLogWatch {
        SavedLogWatch {
            head: Some(head),
            ..SavedLogWatch::default()
        }
    }

    #[test]
    fn the_log_head_only_moves_forward_and_a_conflict_becomes_an_alarm() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(store.log_watch().unwrap(), SavedLogWatch::default());
        assert_eq!(
            store.save_log_watch(&watch_of(head(5, 1))).unwrap(),
            LogWatchSwap::Saved
        );
        // Smaller: refused, whatever its root.
        for root in [1, 2] {
            assert_eq!(
                store.save_log_watch(&watch_of(head(3, root))).unwrap(),
                LogWatchSwap::OlderThanSaved { saved_size: 5 }
            );
        }
        // The same head again: nothing changes, the first note stays.
        let mut again = head(5, 1);
        again.note = "other cosigners".into();
        assert_eq!(
            store.save_log_watch(&watch_of(again)).unwrap(),
            LogWatchSwap::Saved
        );
        assert_eq!(store.log_watch().unwrap().head, Some(head(5, 1)));
        assert_eq!(store.log_watch().unwrap().alarm, None);
        // The same size with another root: refused and saved as an alarm.
        assert_eq!(
            store.save_log_watch(&watch_of(head(5, 9))).unwrap(),
            LogWatchSwap::ConflictsWithSaved { saved: head(5, 1) }
        );
        drop(store);
        // All of it lives in the file.
        let store = open(&dir);
        let saved = store.log_watch().unwrap();
        assert_eq!(saved.head, Some(head(5, 1)));
        assert_eq!(saved.alarms, 1);
        let alarm = saved.alarm.unwrap();
        assert_eq!(
            alarm.evidence,
            ("note 5 1".to_owned(), "note 5 9".to_owned())
        );
        assert!(alarm.reason.contains("size 5"), "{}", alarm.reason);
        // Larger moves forward; a state without a head never erases it.
        assert_eq!(
            store.save_log_watch(&watch_of(head(8, 3))).unwrap(),
            LogWatchSwap::Saved
        );
        assert_eq!(
            store.save_log_watch(&SavedLogWatch::default()).unwrap(),
            LogWatchSwap::Saved
        );
        assert_eq!(store.log_watch().unwrap().head, Some(head(8, 3)));
        assert!(store.log_watch().unwrap().alarm.is_some());
    }

    #[test]
    fn an_alarm_once_saved_stays_and_its_count_never_goes_down() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        let alarm = |reason: &str| SavedLogAlarm {
            reason: reason.into(),
            evidence: (format!("{reason} a"), format!("{reason} b")),
        };
        let first = SavedLogWatch {
            head: Some(head(4, 1)),
            alarm: Some(alarm("first")),
            alarms: 1,
        };
        store.save_log_watch(&first).unwrap();
        // A calm state from a monitor that knows less does not clear it ...
        store.save_log_watch(&watch_of(head(4, 1))).unwrap();
        assert_eq!(store.log_watch().unwrap(), first);
        // ... and a second alarm keeps the first evidence but counts.
        store
            .save_log_watch(&SavedLogWatch {
                head: Some(head(4, 1)),
                alarm: Some(alarm("second")),
                alarms: 2,
            })
            .unwrap();
        let saved = store.log_watch().unwrap();
        assert_eq!(saved.alarm, Some(alarm("first")));
        assert_eq!(saved.alarms, 2);
    }

    #[test]
    fn an_alarm_is_acknowledged_only_as_the_one_seen_and_its_evidence_is_kept() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(
            store.acknowledge_log_alarm(0, ts(1)).unwrap(),
            AlarmAck::NoAlarm
        );
        let alarm = |reason: &str| SavedLogAlarm {
            reason: reason.into(),
            evidence: (format!("{reason} a"), format!("{reason} b")),
        };
        store
            .save_log_watch(&SavedLogWatch {
                head: Some(head(4, 1)),
                alarm: Some(alarm("first")),
                alarms: 2,
            })
            .unwrap();
        assert_eq!(
            store.acknowledge_log_alarm(1, ts(5_000)).unwrap(),
            AlarmAck::Changed { alarms: 2 }
        );
        assert_eq!(store.log_watch().unwrap().alarm, Some(alarm("first")));
        assert!(store.acknowledged_log_alarms().unwrap().is_empty());
        assert_eq!(
            store.acknowledge_log_alarm(2, ts(5_000)).unwrap(),
            AlarmAck::Acknowledged
        );
        let saved = store.log_watch().unwrap();
        assert_eq!((saved.alarm, saved.alarms), (None, 2));
        assert_eq!(saved.head, Some(head(4, 1)), "the head stays");
        assert_eq!(
            store.acknowledged_log_alarms().unwrap(),
            vec![(2, alarm("first"), ts(5_000))]
        );
        assert_eq!(
            store.acknowledge_log_alarm(2, ts(6_000)).unwrap(),
            AlarmAck::NoAlarm
        );
        // The next alarm is saved with its own evidence, and acknowledged apart.
        store
            .save_log_watch(&SavedLogWatch {
                head: Some(head(4, 1)),
                alarm: Some(alarm("third")),
                alarms: 3,
            })
            .unwrap();
        assert_eq!(store.log_watch().unwrap().alarm, Some(alarm("third")));
        assert_eq!(
            store.acknowledge_log_alarm(3, ts(7_000)).unwrap(),
            AlarmAck::Acknowledged
        );
        drop(store);
        let reopened = open(&dir);
        assert_eq!(reopened.acknowledged_log_alarms().unwrap().len(), 2);
        assert_eq!(reopened.log_watch().unwrap().alarms, 3);
    }

    #[test]
    fn the_log_stalled_state_and_its_history_outlive_a_reopen_and_the_count_never_goes_down() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(store.log_stall().unwrap(), SavedLogStall::default());
        let raised = SavedStallAlarm {
            raised_at: 2_000,
            reason: "frozen".into(),
            await_log_at: Some(2_000),
        };
        let state = SavedLogStall {
            last_quorum_at: Some(1_000),
            acknowledged_at: None,
            alarms: 2,
            raised: Some(raised.clone()),
        };
        store.save_log_stall(&state, None).unwrap();
        drop(store);
        let store = open(&dir);
        assert_eq!(store.log_stall().unwrap(), state);
        // Ended by the operator: kept in the history in the same transaction.
        let ended = EndedStall {
            alarm: 2,
            raised: raised.clone(),
            ended_at: 2_500,
            ended_by: StallEnd::Acknowledged,
        };
        let cleared = SavedLogStall {
            acknowledged_at: Some(2_500),
            raised: None,
            ..state.clone()
        };
        store.save_log_stall(&cleared, Some(&ended)).unwrap();
        // A lower count given is not saved.
        store
            .save_log_stall(
                &SavedLogStall {
                    alarms: 1,
                    ..cleared.clone()
                },
                None,
            )
            .unwrap();
        drop(store);
        let store = open(&dir);
        assert_eq!(store.log_stall().unwrap(), cleared);
        let history = store.log_stall_history().unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(
            (history[0].alarm, history[0].ended_at, history[0].ended_by),
            (2, 2_500, StallEnd::Acknowledged)
        );
        assert_eq!(history[0].raised.reason, "frozen");
        // One alarm ends once: the first row stays.
        let again = EndedStall {
            ended_by: StallEnd::Recovered,
            ..ended.clone()
        };
        store.save_log_stall(&cleared, Some(&again)).unwrap();
        // (What the alarm waited for is not history.)
        let kept = EndedStall {
            raised: SavedStallAlarm {
                await_log_at: None,
                ..raised
            },
            ..ended
        };
        assert_eq!(store.log_stall_history().unwrap(), vec![kept]);
    }

    /// Two connections (two processes on one data directory, or a writer that read the state
    /// before another wrote it) race to save heads: the compare-and-swap inside one
    /// transaction leaves the largest head, and of two different roots for one size exactly
    /// one is saved and the other becomes the alarm.
    #[test]
    fn racing_writers_cannot_roll_the_head_back_or_overwrite_a_fork() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("state.db");
        drop(open(&dir));
        let barrier = std::sync::Barrier::new(8);
        let outcomes: Vec<LogWatchSwap> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let (barrier, path) = (&barrier, &path);
                    scope.spawn(move || {
                        let store = NodeStore::open(path).unwrap();
                        barrier.wait();
                        // Sizes 10..=13 twice each, the two writers of a size with other roots.
                        let size = 10 + u64::from(i % 4);
                        store.save_log_watch(&watch_of(head(size, i))).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let store = open(&dir);
        let saved = store.log_watch().unwrap();
        let saved_head = saved.head.unwrap();
        // Nothing is larger than 13, so the first writer of 13 saved it and the second found
        // it there with another root: whatever the interleaving of the others.
        assert_eq!(saved_head.size, 13, "the largest head wins");
        let thirteen = [&outcomes[3], &outcomes[7]];
        assert_eq!(
            thirteen
                .iter()
                .filter(|o| ***o == LogWatchSwap::Saved)
                .count(),
            1,
            "{outcomes:?}"
        );
        assert!(thirteen
            .iter()
            .any(|o| matches!(o, LogWatchSwap::ConflictsWithSaved { .. })));
        assert!(saved_head.root == [3; 32] || saved_head.root == [7; 32]);
        // The first conflict raised the alarm; later ones found it raised.
        assert_eq!(saved.alarms, 1);
        assert!(saved.alarm.is_some());
        // Whatever the interleaving, a later smaller write is refused.
        assert!(matches!(
            store.save_log_watch(&watch_of(head(12, 2))).unwrap(),
            LogWatchSwap::OlderThanSaved { saved_size: 13 }
        ));
    }

    #[test]
    fn two_writers_of_the_same_size_make_one_head_and_one_alarm() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("state.db");
        let (first, second) = (
            NodeStore::open(&path).unwrap(),
            NodeStore::open(&path).unwrap(),
        );
        // Both read an empty state, then write: the second's write is judged against the
        // first's, not against what it read.
        assert_eq!(first.log_watch().unwrap().head, None);
        assert_eq!(second.log_watch().unwrap().head, None);
        assert_eq!(
            first.save_log_watch(&watch_of(head(6, 1))).unwrap(),
            LogWatchSwap::Saved
        );
        assert_eq!(
            second.save_log_watch(&watch_of(head(6, 2))).unwrap(),
            LogWatchSwap::ConflictsWithSaved { saved: head(6, 1) }
        );
        let saved = first.log_watch().unwrap();
        assert_eq!(saved.head, Some(head(6, 1)));
        assert_eq!(saved.alarms, 1);
    }

    fn entry(serial: &str, kind: &str, at: u64) -> FollowedEntry {
        FollowedEntry {
            leaf_hash: [at as u8; 32],
            kind: kind.into(),
            node_id: "n".into(),
            serial: serial.into(),
            at,
        }
    }

    #[test]
    fn followed_entries_are_dense_and_never_beyond_the_saved_head() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        // No head yet: nothing can be verified, nothing is kept.
        assert!(!store
            .append_followed_entries(0, &[entry("aa", "enroll", 1)])
            .unwrap());
        store.save_log_watch(&watch_of(head(3, 1))).unwrap();
        assert!(!store
            .append_followed_entries(1, &[entry("aa", "enroll", 1)])
            .unwrap());
        assert!(store
            .append_followed_entries(0, &[entry("aa", "enroll", 10), entry("bb", "rotate", 30)])
            .unwrap());
        // Replayed or past the head: refused.
        assert!(!store
            .append_followed_entries(0, &[entry("cc", "enroll", 40)])
            .unwrap());
        assert!(!store
            .append_followed_entries(2, &[entry("cc", "enroll", 40), entry("dd", "enroll", 41)])
            .unwrap());
        assert!(store
            .append_followed_entries(2, &[entry("aa", "revoke_node", 20)])
            .unwrap());
        drop(store);
        let store = open(&dir);
        assert_eq!(store.followed_log_size().unwrap(), 3);
        assert_eq!(
            store.followed_leaf_hashes(1, 10).unwrap(),
            vec![[30; 32], [20; 32]]
        );
        assert_eq!(store.followed_leaf_hashes(0, 1).unwrap(), vec![[10; 32]]);
        assert_eq!(store.followed_newest_at().unwrap(), Some(30));
        assert_eq!(store.logged_kinds("aa").unwrap(), ["enroll", "revoke_node"]);
        assert_eq!(store.logged_kinds("bb").unwrap(), ["rotate"]);
        assert!(store.logged_kinds("zz").unwrap().is_empty());
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

    #[test]
    fn a_stale_writer_cannot_undo_a_revocation() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("state.db");
        drop(open(&dir));
        // Eight writers at once, each with its own connection and its own revocation; each
        // also writes again the revocation it saw before (a stale view of the set).
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for i in 0..8u8 {
                let (barrier, path) = (&barrier, &path);
                scope.spawn(move || {
                    let store = NodeStore::open(path).unwrap();
                    barrier.wait();
                    store
                        .record_node_revocations(&[(node(i), ts(100 + u64::from(i)))], 100, ts(1))
                        .unwrap();
                    store
                        .record_node_revocations(&[(node(i), ts(500))], 100, ts(2))
                        .unwrap();
                });
            }
        });
        let store = open(&dir);
        let revoked = store.revoked_nodes().unwrap();
        // Every revocation is there, with the time it was first learnt.
        assert_eq!(
            revoked,
            (0..8u8)
                .map(|i| (node(i), ts(100 + u64::from(i))))
                .collect::<Vec<_>>()
        );
        // A writer holding the set from before the others wrote removes nothing.
        store
            .record_node_revocations(&[(node(0), ts(100))], 100, ts(3))
            .unwrap();
        assert_eq!(store.revoked_nodes().unwrap(), revoked);
    }

    #[test]
    fn revocations_beyond_capacity_forget_the_oldest_others_first() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        store
            .record_node_revocations(&[(node(1), ts(10)), (node(2), ts(20))], 2, ts(1))
            .unwrap();
        // A new revocation learnt with an older time still stays; the oldest other goes.
        store
            .record_node_revocations(&[(node(3), ts(5))], 2, ts(2))
            .unwrap();
        assert_eq!(
            store.revoked_nodes().unwrap(),
            vec![(node(2), ts(20)), (node(3), ts(5))]
        );
    }

    #[test]
    fn the_start_audit_forgets_only_the_revocation_it_judged() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        store
            .record_node_revocations(&[(node(1), ts(10))], 10, ts(1))
            .unwrap();
        assert!(!store.forget_node_revocation(&node(1), ts(11)).unwrap());
        assert_eq!(store.revoked_nodes().unwrap(), vec![(node(1), ts(10))]);
        assert!(store.forget_node_revocation(&node(1), ts(10)).unwrap());
        assert!(store.revoked_nodes().unwrap().is_empty());
    }

    #[test]
    fn governance_decisions_reload_and_values_out_of_bounds_are_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let store = open(&dir);
            assert!(store.governance_decisions().unwrap().is_empty());
            store
                .record_governance_decision(Param::GossipFanout, 5, "aa", ts(1))
                .unwrap();
            store
                .record_governance_decision(Param::HealthCheckIntervalSecs, 30, "bb", ts(2))
                .unwrap();
            store
                .record_governance_decision(Param::GossipFanout, 2, "cc", ts(3))
                .unwrap();
        }
        let store = open(&dir);
        assert_eq!(
            store.governance_decisions().unwrap(),
            BTreeMap::from([
                (Param::GossipFanout, 2),
                (Param::HealthCheckIntervalSecs, 30)
            ])
        );
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.execute(
            "UPDATE governance_decisions SET value = 99 WHERE param = 'gossip_fanout'",
            [],
        )
        .unwrap();
        assert!(matches!(
            store.governance_decisions(),
            Err(NodeStateError::ValueOutOfBounds {
                param: "gossip_fanout",
                value: 99,
                ..
            })
        ));
        conn.execute(
            "UPDATE governance_decisions SET value = 2, param = 'nope' WHERE param = 'gossip_fanout'",
            [],
        )
        .unwrap();
        assert!(matches!(
            store.governance_decisions(),
            Err(NodeStateError::UnknownParam(name)) if name == "nope"
        ));
    }
}
