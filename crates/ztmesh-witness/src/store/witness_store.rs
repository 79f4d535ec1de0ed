//! A witness's `witness.db`: for every log origin, the tree head it last cosigned.
//!
//! That one row per log is the whole of a witness's memory, and the only thing that stops it
//! from cosigning a rollback or a fork after a restart. It therefore changes only through
//! [`WitnessStore::compare_and_swap`], one `BEGIN IMMEDIATE` transaction that re-reads the head
//! under the write lock, so two requests checked against the same head cannot both commit —
//! whether they race inside one process or across processes sharing the file. This module
//! must never move a head backwards or to another root at the same size, even when asked to.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use ztmesh_tlog::{Hash, SwapOutcome, TreeHead};

use ztmesh_runtime::sqlite::{
    count_from_sql, count_to_sql, lock, open_database, Schema, StoreError,
};

const SCHEMA: Schema = Schema {
    // "ztWT"
    application_id: 0x7a74_5754,
    migrations: &[r#"
-- The latest cosigned head of each log, keyed by the checkpoint origin line.
CREATE TABLE heads (
    origin TEXT PRIMARY KEY NOT NULL,
    size   INTEGER NOT NULL CHECK (size >= 0),
    root   BLOB NOT NULL CHECK (length(root) = 32)
) STRICT;
"#],
};

/// A witness's state database. `Send + Sync`; every method blocks (run it in `spawn_blocking`).
#[derive(Debug)]
pub struct WitnessStore {
    connection: Mutex<Connection>,
}

impl WitnessStore {
    /// Opens or creates `witness.db` at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(WitnessStore {
            connection: Mutex::new(open_database(path, &SCHEMA)?),
        })
    }

    /// The head last cosigned for `origin`; `None` if the witness never cosigned for it.
    pub fn head(&self, origin: &str) -> Result<Option<TreeHead>, StoreError> {
        read_head(&lock(&self.connection), origin)
    }

    /// Every stored head, ordered by origin.
    pub fn heads(&self) -> Result<Vec<(String, TreeHead)>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare("SELECT origin, size, root FROM heads ORDER BY origin")?;
        let mut rows = statement.query([])?;
        let mut heads = Vec::new();
        while let Some(row) = rows.next()? {
            let origin: String = row.get(0)?;
            let head = head_from_sql(&origin, row.get(1)?, &row.get::<_, Vec<u8>>(2)?)?;
            heads.push((origin, head));
        }
        Ok(heads)
    }

    /// Stores `new` as the head of `origin` if, and only if, the stored head still equals
    /// `expected` (`None`: no head stored yet), in one immediate transaction.
    ///
    /// Otherwise nothing changes and the answer is [`SwapOutcome::Conflict`] with the size
    /// stored now (0 when there is none). As a second line of defence behind the witness
    /// decision, a swap that would shrink the head, or change its root at the same size, is a
    /// conflict too, even when `expected` matches. [`SwapOutcome::Swapped`] is returned only
    /// after the commit is durable (`synchronous=FULL`), so a cosignature issued after it can
    /// never outlive the head it vouches for.
    pub fn compare_and_swap(
        &self,
        origin: &str,
        expected: Option<TreeHead>,
        new: TreeHead,
    ) -> Result<SwapOutcome, StoreError> {
        let size = count_to_sql(new.size, "tree size")?;
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let stored = read_head(&tx, origin)?;
        let stored_size = stored.map_or(0, |head| head.size);
        let backwards = stored.is_some_and(|head| {
            new.size < head.size || (new.size == head.size && new.root != head.root)
        });
        if stored != expected || backwards {
            // Dropping the transaction rolls it back; nothing was written.
            return Ok(SwapOutcome::Conflict { stored_size });
        }
        tx.execute(
            "INSERT INTO heads (origin, size, root) VALUES (?1, ?2, ?3)
             ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root",
            params![origin, size, new.root.as_bytes().as_slice()],
        )?;
        tx.commit()?;
        Ok(SwapOutcome::Swapped)
    }
}

fn read_head(conn: &Connection, origin: &str) -> Result<Option<TreeHead>, StoreError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT size, root FROM heads WHERE origin = ?1",
            [origin],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    row.map(|(size, root)| head_from_sql(origin, size, &root))
        .transpose()
}

fn head_from_sql(origin: &str, size: i64, root: &[u8]) -> Result<TreeHead, StoreError> {
    let size = count_from_sql(size, "tree size")?;
    let root = Hash::from_slice(root).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "root of {origin:?} is {} bytes, not 32",
            root.len()
        ))
    })?;
    Ok(TreeHead { size, root })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use ztmesh_tlog::merkle::leaf_hash;

    const ORIGIN: &str = "log.example/a";

    fn head(size: u64, tag: &str) -> TreeHead {
        TreeHead {
            size,
            root: leaf_hash(format!("{tag}{size}").as_bytes()),
        }
    }

    fn open(dir: &tempfile::TempDir) -> WitnessStore {
        WitnessStore::open(&dir.path().join("witness.db")).unwrap()
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<WitnessStore>();
    }

    #[test]
    fn file_is_wal_with_full_sync() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        let durable = ztmesh_runtime::sqlite::durable_version(&lock(&store.connection)).unwrap();
        assert_eq!(durable, Some(1));
    }

    #[test]
    fn swap_succeeds_only_from_the_expected_head() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(store.head(ORIGIN).unwrap(), None);

        // First head: insert-if-absent.
        let h5 = head(5, "a");
        assert_eq!(
            store.compare_and_swap(ORIGIN, None, h5).unwrap(),
            SwapOutcome::Swapped
        );
        assert_eq!(store.head(ORIGIN).unwrap(), Some(h5));
        // A second "first head" loses: a row exists now.
        assert_eq!(
            store.compare_and_swap(ORIGIN, None, head(7, "a")).unwrap(),
            SwapOutcome::Conflict { stored_size: 5 }
        );
        // The right expectation moves it forward.
        let h9 = head(9, "a");
        assert_eq!(
            store.compare_and_swap(ORIGIN, Some(h5), h9).unwrap(),
            SwapOutcome::Swapped
        );
        // A stale expectation, even of a head that was once stored, does not.
        assert_eq!(
            store
                .compare_and_swap(ORIGIN, Some(h5), head(20, "a"))
                .unwrap(),
            SwapOutcome::Conflict { stored_size: 9 }
        );
        // Same size, other root than expected: not the stored head.
        assert_eq!(
            store
                .compare_and_swap(ORIGIN, Some(head(9, "b")), head(20, "a"))
                .unwrap(),
            SwapOutcome::Conflict { stored_size: 9 }
        );
        assert_eq!(store.head(ORIGIN).unwrap(), Some(h9));
        // Origins are independent.
        assert_eq!(store.head("log.example/b").unwrap(), None);
        assert_eq!(
            store
                .compare_and_swap("log.example/b", Some(h9), h9)
                .unwrap(),
            SwapOutcome::Conflict { stored_size: 0 }
        );
    }

    #[test]
    fn swap_never_moves_backwards_or_forks_even_when_asked() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        let h9 = head(9, "a");
        store.compare_and_swap(ORIGIN, None, h9).unwrap();
        assert_eq!(
            store
                .compare_and_swap(ORIGIN, Some(h9), head(4, "a"))
                .unwrap(),
            SwapOutcome::Conflict { stored_size: 9 }
        );
        assert_eq!(
            store
                .compare_and_swap(ORIGIN, Some(h9), head(9, "fork"))
                .unwrap(),
            SwapOutcome::Conflict { stored_size: 9 }
        );
        // Re-storing the same head is a no-op success (a re-submitted checkpoint).
        assert_eq!(
            store.compare_and_swap(ORIGIN, Some(h9), h9).unwrap(),
            SwapOutcome::Swapped
        );
        assert_eq!(store.head(ORIGIN).unwrap(), Some(h9));
    }

    #[test]
    fn heads_survive_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let store = open(&dir);
            store.compare_and_swap(ORIGIN, None, head(3, "a")).unwrap();
            store
                .compare_and_swap("log.example/b", None, TreeHead::empty())
                .unwrap();
        }
        let store = open(&dir);
        assert_eq!(
            store.heads().unwrap(),
            vec![
                (ORIGIN.to_owned(), head(3, "a")),
                ("log.example/b".to_owned(), TreeHead::empty()),
            ]
        );
    }

    #[test]
    fn sizes_beyond_sqlite_integers_are_refused_not_wrapped() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        assert!(matches!(
            store.compare_and_swap(ORIGIN, None, head(u64::MAX, "a")),
            Err(StoreError::OutOfRange(_))
        ));
        assert_eq!(store.head(ORIGIN).unwrap(), None);
    }

    #[test]
    fn corrupt_rows_are_errors_not_panics() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        store.compare_and_swap(ORIGIN, None, head(3, "a")).unwrap();
        lock(&store.connection)
            .execute("UPDATE heads SET size = -1", [])
            .unwrap_err();
        // The CHECK constraints keep bad rows out; bypass them to read one back.
        lock(&store.connection)
            .execute_batch("PRAGMA ignore_check_constraints = ON; UPDATE heads SET root = x'00';")
            .unwrap();
        assert!(matches!(store.head(ORIGIN), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn another_stores_file_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("state.db");
        // Another store's file (the node's and the CA's: crates/ztmesh/tests/stores.rs).
        let foreign = Schema {
            application_id: 0x0bad_cafe,
            migrations: &["CREATE TABLE b (x INTEGER) STRICT;"],
        };
        drop(open_database(&path, &foreign).unwrap());
        assert!(matches!(
            WitnessStore::open(&path),
            Err(StoreError::WrongDatabase { .. })
        ));
    }

    /// Many connections (as separate processes would hold) race to move the same head: exactly
    /// one swap commits per round, and the stored size never goes down.
    #[test]
    fn racing_swaps_across_connections_have_one_winner() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("witness.db");
        const RACERS: usize = 6;
        let stores: Vec<Arc<WitnessStore>> = (0..RACERS)
            .map(|_| Arc::new(WitnessStore::open(&path).unwrap()))
            .collect();
        let mut current: Option<TreeHead> = None;
        for round in 0..20u64 {
            let barrier = Arc::new(Barrier::new(RACERS));
            let outcomes: Vec<(TreeHead, SwapOutcome)> = std::thread::scope(|scope| {
                let handles: Vec<_> = stores
                    .iter()
                    .enumerate()
                    .map(|(i, store)| {
                        let barrier = barrier.clone();
                        scope.spawn(move || {
                            let new = head(round * 10 + 1 + i as u64, &format!("r{i}-"));
                            barrier.wait();
                            (new, store.compare_and_swap(ORIGIN, current, new).unwrap())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<TreeHead> = outcomes
                .iter()
                .filter(|(_, outcome)| *outcome == SwapOutcome::Swapped)
                .map(|(new, _)| *new)
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
            let stored = stores[0].head(ORIGIN).unwrap();
            assert_eq!(stored, Some(winners[0]));
            for (_, outcome) in &outcomes {
                if let SwapOutcome::Conflict { stored_size } = outcome {
                    assert_eq!(*stored_size, winners[0].size);
                }
            }
            assert!(stored.map(|h| h.size) > current.map(|h| h.size));
            current = stored;
        }
    }
}
