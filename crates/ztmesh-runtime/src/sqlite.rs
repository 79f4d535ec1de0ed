//! SQLite plumbing shared by every store (the CA's database, a node's `state.db`, the
//! witness's database): how a file is opened ([`open_database`]: WAL journal,
//! `synchronous=FULL` so that whatever an API call acknowledged survives a power cut, foreign
//! keys enforced, a 5 s busy timeout so that several connections to one file wait for each
//! other instead of failing), versioned migrations tracked in `PRAGMA user_version`, the
//! [`StoreError`] every store returns, and value conversions.
//!
//! Security-critical changes (token use, revocation, CRL numbers) are compare-and-swap inside
//! one `BEGIN IMMEDIATE` transaction in the stores that use this module, so they hold across
//! threads *and* across connections or processes sharing the file. This module must never hand
//! out a connection in the middle of a transaction, nor let a database written by a newer
//! ztmesh be modified by an older one. It holds no store's schema.
//!
//! All functions block on disk I/O; async callers run them in `spawn_blocking`.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use crate::private_files::prepare_private_database;
use ztmesh_core::Timestamp;

/// How long a connection waits for another connection's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite itself failed (I/O error, lock timeout, constraint violation, ...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A value read back from the database is not what this code ever writes.
    #[error("database content is corrupt: {0}")]
    Corrupt(String),
    /// The database was written by a newer ztmesh; an older one must not touch it.
    #[error("database schema version {found} is newer than the supported version {supported}; upgrade ztmesh")]
    SchemaTooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The file belongs to another store (for example a node's `state.db` opened as the CA
    /// database), told apart by `PRAGMA application_id`.
    #[error("database belongs to another application or store (application_id {found:#x}, expected {expected:#x})")]
    WrongDatabase {
        /// `PRAGMA application_id` of the file.
        found: i64,
        /// The id this store writes.
        expected: i64,
    },
    /// SQLite refused to switch the file to WAL mode (for example on a file system without
    /// shared memory support); the durability and concurrency guarantees would not hold.
    #[error("cannot use WAL journal mode, SQLite reports journal_mode={0}")]
    WalUnavailable(String),
    /// A value given to the store does not fit in an SQLite INTEGER (63 bits).
    #[error("{0} is too large to store")]
    OutOfRange(&'static str),
    /// The database file could not be created or made private (mode 0600).
    #[error("database file: {0}")]
    Io(#[source] std::io::Error),
}

/// The schema of one store: the `application_id` that marks its files and its migrations in
/// order. Migration `i` (0-based) moves the file from `user_version = i` to `i + 1`; a
/// migration is never edited after release, changes come as new entries.
pub struct Schema {
    /// Written to `PRAGMA application_id` by the first migration.
    pub application_id: i32,
    /// SQL batches, oldest first.
    pub migrations: &'static [&'static str],
}

impl Schema {
    /// The version the last migration leaves the file at.
    pub fn supported_version(&self) -> i64 {
        self.migrations.len() as i64
    }
}

/// Opens (creating if needed) an SQLite file with the pragmas every store relies on, then
/// brings its schema up to date.
pub fn open_database(path: &Path, schema: &Schema) -> Result<Connection, StoreError> {
    prepare_private_database(path).map_err(StoreError::Io)?;
    let mut conn = Connection::open(path)?;
    // Set first: switching to WAL and migrating may have to wait for another connection.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    enable_wal(&conn)?;
    // FULL (not the WAL default NORMAL) so that a commit is on disk before we acknowledge it:
    // an enrollment token must not come back to life after a crash.
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    migrate(&mut conn, schema)?;
    Ok(conn)
}

/// Switches the file to WAL (a no-op when it already is).
pub fn enable_wal(conn: &Connection) -> Result<(), StoreError> {
    // Changing the journal mode needs an exclusive lock, and when several connections open a
    // fresh file at once SQLite answers SQLITE_BUSY here without consulting the busy handler.
    // Retrying within the same time budget makes concurrent first opens safe.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get::<_, String>(0))
        {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => return Err(StoreError::WalUnavailable(mode)),
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Reads `(user_version, application_id)`.
pub fn schema_marks(conn: &Connection) -> Result<(i64, i64), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let application_id: i64 = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    Ok((version, application_id))
}

/// Checks the marks of a file against the schema; `Ok(true)` when no migration is needed.
fn check_marks(version: i64, application_id: i64, schema: &Schema) -> Result<bool, StoreError> {
    let expected = i64::from(schema.application_id);
    // A fresh file has both marks at 0; anything else must be ours.
    if application_id != expected && !(version == 0 && application_id == 0) {
        return Err(StoreError::WrongDatabase {
            found: application_id,
            expected,
        });
    }
    if version < 0 {
        return Err(StoreError::Corrupt(format!(
            "negative schema version {version}"
        )));
    }
    if version > schema.supported_version() {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: schema.supported_version(),
        });
    }
    Ok(version == schema.supported_version())
}

/// Applies the missing migrations, each in its own `BEGIN IMMEDIATE` transaction. The version
/// is re-read under the write lock, so connections opening the same file concurrently apply
/// each migration exactly once.
fn migrate(conn: &mut Connection, schema: &Schema) -> Result<(), StoreError> {
    let (version, application_id) = schema_marks(conn)?;
    if check_marks(version, application_id, schema)? {
        return Ok(());
    }
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (version, application_id) = schema_marks(&tx)?;
        if check_marks(version, application_id, schema)? {
            return Ok(());
        }
        let index = usize::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("schema version {version}")))?;
        let sql = schema.migrations.get(index).ok_or_else(|| {
            StoreError::Corrupt(format!("no migration from schema version {version}"))
        })?;
        tx.execute_batch(sql)?;
        // Both pragmas write the database header, which is part of the transaction: a crash
        // leaves either the old version with the old tables or the new version with the new.
        tx.pragma_update(None, "user_version", version + 1)?;
        if version == 0 {
            tx.pragma_update(None, "application_id", schema.application_id)?;
        }
        tx.commit()?;
        tracing::info!(from = version, to = version + 1, "migrated database schema");
    }
}

/// A timestamp as an SQLite INTEGER (unix millis).
pub fn timestamp_to_sql(timestamp: Timestamp, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(timestamp.as_unix_millis()).map_err(|_| StoreError::OutOfRange(what))
}

/// An INTEGER read back as a timestamp; negative values were never written by us.
pub fn timestamp_from_sql(millis: i64, what: &str) -> Result<Timestamp, StoreError> {
    u64::try_from(millis)
        .map(Timestamp::from_unix_millis)
        .map_err(|_| StoreError::Corrupt(format!("{what}: negative timestamp {millis}")))
}

/// A counter (CRL number) as an SQLite INTEGER.
pub fn count_to_sql(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange(what))
}

/// An INTEGER read back as a counter.
pub fn count_from_sql(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what}: negative value {value}")))
}

/// A node id read back from its TEXT column.
pub fn node_id_from_sql(text: &str) -> Result<ztmesh_core::NodeId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("node id {text:?}: {e}")))
}

/// A caller's limit as an SQLite LIMIT value.
pub fn limit_to_sql(limit: usize) -> i64 {
    // Larger than any table can be, so saturating does not change the meaning.
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Locks a store's connection. A panic while the lock was held cannot leave a transaction
/// open (rusqlite rolls back on drop, including during unwinding), so a poisoned lock is
/// still safe to use.
pub fn lock(connection: &std::sync::Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    connection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The schema version of a connection that keeps what every acknowledged write relies on
/// (WAL journal, `synchronous=FULL`); `None` when either is off. The stores' tests check it.
pub fn durable_version(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    // 2 is FULL.
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok((mode.eq_ignore_ascii_case("wal") && synchronous == 2).then_some(version))
}

/// Test check: the connection is durable; returns the schema version.
#[cfg(test)]
fn assert_durable(conn: &Connection) -> i64 {
    durable_version(conn)
        .unwrap()
        .expect("WAL journal and synchronous=FULL")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_SCHEMA: Schema = Schema {
        application_id: 0x7a74_7465,
        migrations: &[
            "CREATE TABLE a (x INTEGER NOT NULL) STRICT;",
            "ALTER TABLE a ADD COLUMN y TEXT; INSERT INTO a (x, y) VALUES (1, 'from v2');",
        ],
    };

    const OTHER_SCHEMA: Schema = Schema {
        application_id: 0x0bad_cafe,
        migrations: &["CREATE TABLE b (x INTEGER) STRICT;"],
    };

    #[test]
    fn pragmas_are_set_on_every_connection() {
        let dir = tempfile::TempDir::new().unwrap();
        let conn = open_database(&dir.path().join("t.db"), &TEST_SCHEMA).unwrap();
        assert_durable(&conn);
        let foreign_keys: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(foreign_keys, 1);
        assert_eq!(schema_marks(&conn).unwrap(), (2, 0x7a74_7465));
    }

    #[test]
    fn migrations_run_once_in_order_and_resume_from_stored_version() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        let first = Schema {
            application_id: TEST_SCHEMA.application_id,
            migrations: &TEST_SCHEMA.migrations[..1],
        };
        drop(open_database(&path, &first).unwrap());
        // Reopening with the longer list applies only the second migration; reopening again
        // applies nothing (the INSERT would otherwise run twice).
        drop(open_database(&path, &TEST_SCHEMA).unwrap());
        let conn = open_database(&path, &TEST_SCHEMA).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM a WHERE y = 'from v2'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(schema_marks(&conn).unwrap().0, 2);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        drop(open_database(&path, &TEST_SCHEMA).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        match open_database(&path, &TEST_SCHEMA) {
            Err(StoreError::SchemaTooNew {
                found: 7,
                supported: 2,
            }) => {}
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn another_stores_file_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        drop(open_database(&path, &OTHER_SCHEMA).unwrap());
        assert!(matches!(
            open_database(&path, &TEST_SCHEMA),
            Err(StoreError::WrongDatabase { .. })
        ));
    }

    const BROKEN_MIGRATIONS: [&str; 2] = [
        "CREATE TABLE a (x INTEGER NOT NULL) STRICT;",
        "ALTER TABLE a ADD COLUMN z TEXT; THIS IS NOT SQL;",
    ];

    #[test]
    fn failed_migration_leaves_previous_version_intact() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        let first = Schema {
            application_id: TEST_SCHEMA.application_id,
            migrations: &TEST_SCHEMA.migrations[..1],
        };
        drop(open_database(&path, &first).unwrap());
        let broken = Schema {
            application_id: TEST_SCHEMA.application_id,
            migrations: &BROKEN_MIGRATIONS,
        };
        assert!(matches!(
            open_database(&path, &broken),
            Err(StoreError::Sqlite(_))
        ));
        let conn = Connection::open(&path).unwrap();
        assert_eq!(schema_marks(&conn).unwrap().0, 1);
        // The half-applied ALTER was rolled back with the rest of its migration.
        assert!(conn.prepare("SELECT z FROM a").is_err());
    }

    #[test]
    fn concurrent_opens_migrate_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("t.db");
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    barrier.wait();
                    open_database(&path, &TEST_SCHEMA).unwrap();
                });
            }
        });
        let conn = open_database(&path, &TEST_SCHEMA).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn out_of_range_values_are_refused_not_wrapped() {
        assert!(matches!(
            timestamp_to_sql(Timestamp::from_unix_millis(u64::MAX), "t"),
            Err(StoreError::OutOfRange("t"))
        ));
        assert!(matches!(
            timestamp_from_sql(-1, "t"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            count_from_sql(-5, "n"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            node_id_from_sql("nope"),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(limit_to_sql(usize::MAX), i64::MAX);
    }
}
