//! The upgrade from the JSON files in which earlier versions kept a node's revoked set
//! (`revoked-nodes.json`) and governance decisions (`governance.json`) to `state.db`.
//!
//! Each file found is parsed and checked as those versions checked it, then imported in one
//! transaction that also records the import (file name and SHA-256 of its bytes), and only
//! then renamed to `*.json.imported`, kept for the operator. A crash between the commit and the
//! rename leaves the file in place with its import recorded: the next start finds the same
//! bytes recorded and only renames it, so nothing is lost or imported twice. A file with other
//! bytes under an already imported name is refused, as is garbage: the node does not start.
//! This module must never delete an operator's file nor overwrite one with the rename.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use sha2::Digest;
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_trust::Param;

use super::{insert_revocations, NodeStateError, NodeStore};
use ztmesh_runtime::sqlite::{
    count_to_sql, lock, timestamp_from_sql, timestamp_to_sql, StoreError,
};

/// Where earlier versions kept the node ids learnt revoked: a JSON object from node id to the
/// time the revocation was learnt (Unix milliseconds).
pub const REVOKED_NODES_FILE: &str = "revoked-nodes.json";

/// Where earlier versions kept the governance decisions: a JSON object from parameter name to
/// the value decided.
pub const GOVERNANCE_FILE: &str = "governance.json";

/// Appended to the name of an imported file, which is kept.
pub const IMPORTED_SUFFIX: &str = ".imported";

/// One file [`NodeStore::import_legacy_files`] handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyImport {
    /// [`REVOKED_NODES_FILE`] or [`GOVERNANCE_FILE`].
    pub file: &'static str,
    /// Values it held.
    pub entries: usize,
    /// `false` when its import had been recorded already (a crash before the rename) and
    /// it was only renamed now.
    pub imported_now: bool,
}

/// A legacy file's content, parsed and checked.
enum Legacy {
    Revoked(BTreeMap<NodeId, Timestamp>),
    Governance(BTreeMap<Param, u64>),
}

impl Legacy {
    fn parse(file: &str, bytes: &[u8]) -> Result<Legacy, String> {
        if file == REVOKED_NODES_FILE {
            // The format `ztmesh_trust::RevokedSet` serialized to (a transparent map).
            return serde_json::from_slice(bytes)
                .map(Legacy::Revoked)
                .map_err(|e| e.to_string());
        }
        let decided: BTreeMap<Param, u64> =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        // The check earlier versions made when loading it.
        for (param, value) in &decided {
            param
                .check(*value)
                .map_err(|e| format!("{}: {e}", param.as_str()))?;
        }
        Ok(Legacy::Governance(decided))
    }

    fn len(&self) -> usize {
        match self {
            Legacy::Revoked(revoked) => revoked.len(),
            Legacy::Governance(decided) => decided.len(),
        }
    }
}

impl NodeStore {
    /// Imports `revoked-nodes.json` and `governance.json` from the node directory `dir` when
    /// they exist (see the module documentation); returns what it did for each file found.
    /// Run at start, before the revoked set and the decisions are read.
    pub fn import_legacy_files(
        &self,
        dir: &Path,
        now: Timestamp,
    ) -> Result<Vec<LegacyImport>, NodeStateError> {
        let mut done = Vec::new();
        for file in [REVOKED_NODES_FILE, GOVERNANCE_FILE] {
            if let Some(import) = self.import_legacy_file(dir, file, now)? {
                done.push(import);
            }
        }
        Ok(done)
    }

    fn import_legacy_file(
        &self,
        dir: &Path,
        file: &'static str,
        now: Timestamp,
    ) -> Result<Option<LegacyImport>, NodeStateError> {
        let path = dir.join(file);
        let kept_as = dir.join(format!("{file}{IMPORTED_SUFFIX}"));
        let legacy_error = |reason: String| NodeStateError::LegacyFile {
            path: path.clone(),
            reason,
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(legacy_error(e.to_string())),
        };
        let legacy = Legacy::parse(file, &bytes).map_err(legacy_error)?;
        let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let at = timestamp_to_sql(now, "import time")?;
        let imported_now = {
            let mut conn = lock(&self.connection);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(StoreError::from)?;
            let recorded: Option<(Vec<u8>, i64)> = tx
                .query_row(
                    "SELECT sha256, imported_at FROM legacy_imports WHERE file = ?1",
                    [file],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(StoreError::from)?;
            match recorded {
                Some((sha256, _)) if sha256 == digest => false,
                Some((_, imported_at)) => {
                    return Err(NodeStateError::AlreadyImported {
                        path,
                        kept_as,
                        imported_at: timestamp_from_sql(imported_at, "import time")?,
                    })
                }
                None => {
                    // Checked before writing anything, so that a refusal leaves no trace.
                    if kept_as.symlink_metadata().is_ok() {
                        return Err(NodeStateError::ImportedNameTaken { path, kept_as });
                    }
                    match &legacy {
                        Legacy::Revoked(revoked) => {
                            let revoked: Vec<(NodeId, Timestamp)> =
                                revoked.iter().map(|(n, t)| (*n, *t)).collect();
                            insert_revocations(&tx, &revoked, at, "imported")?;
                        }
                        Legacy::Governance(decided) => {
                            // A decision already in state.db was taken by this version, after
                            // anything an earlier version wrote: it stays.
                            let mut insert = tx
                                .prepare(
                                    "INSERT INTO governance_decisions
                                         (param, value, proposal, decided_at)
                                     VALUES (?1, ?2, NULL, ?3)
                                     ON CONFLICT (param) DO NOTHING",
                                )
                                .map_err(StoreError::from)?;
                            for (param, value) in decided {
                                insert
                                    .execute(params![
                                        param.as_str(),
                                        count_to_sql(*value, "governance value")?,
                                        at
                                    ])
                                    .map_err(StoreError::from)?;
                            }
                        }
                    }
                    tx.execute(
                        "INSERT INTO legacy_imports (file, sha256, entries, imported_at)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![
                            file,
                            digest.as_slice(),
                            count_to_sql(legacy.len() as u64, "imported entries")?,
                            at
                        ],
                    )
                    .map_err(StoreError::from)?;
                    tx.commit().map_err(StoreError::from)?;
                    true
                }
            }
        };
        if kept_as.symlink_metadata().is_ok() {
            // Only reachable when the import was recorded before: both names exist, which no
            // crash leaves (the rename is atomic). Someone put a file back; do not overwrite.
            return Err(NodeStateError::ImportedNameTaken { path, kept_as });
        }
        let rename_error = |source| NodeStateError::Rename {
            path: path.clone(),
            kept_as: kept_as.clone(),
            source,
        };
        std::fs::rename(&path, &kept_as).map_err(rename_error)?;
        // The rename is durable once the directory is: otherwise a power cut could bring the
        // old name back, which the next start would handle, but say the truth now.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(rename_error)?;
        tracing::info!(
            file,
            entries = legacy.len(),
            kept_as = %kept_as.display(),
            "imported into state.db"
        );
        Ok(Some(LegacyImport {
            file,
            entries: legacy.len(),
            imported_now,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztmesh_runtime::sqlite::{open_database, Schema};

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    const T_IMPORT: u64 = 1_800_000_000_000;

    /// Three revocations, as a node of the previous version wrote them (`serde_json::to_vec`
    /// of its `RevokedSet`, compact, in node-id order).
    fn old_revoked_json() -> (Vec<u8>, Vec<(NodeId, Timestamp)>) {
        let revoked = vec![
            (node(1), Timestamp::from_unix_millis(1_765_000_000_000)),
            (node(2), Timestamp::from_unix_millis(1_765_000_001_234)),
            (node(3), Timestamp::from_unix_millis(1_765_000_005_678)),
        ];
        let text = format!(
            "{{\"{}\":1765000000000,\"{}\":1765000001234,\"{}\":1765000005678}}",
            node(1),
            node(2),
            node(3)
        );
        // Pinned against the serializer the previous version called.
        let set: ztmesh_trust::RevokedSet = revoked.iter().copied().collect();
        assert_eq!(
            text.as_bytes(),
            serde_json::to_vec(&set).unwrap().as_slice()
        );
        (text.into_bytes(), revoked)
    }

    /// Three decisions, as the previous version wrote them (`serde_json::to_vec_pretty` of a
    /// map from parameter to value, in parameter order).
    fn old_governance_json() -> (Vec<u8>, BTreeMap<Param, u64>) {
        let decided = BTreeMap::from([
            (Param::GossipFanout, 2),
            (Param::RateLimitRpm, 6000),
            (Param::HealthCheckIntervalSecs, 30),
        ]);
        let text = "{\n  \"gossip_fanout\": 2,\n  \"rate_limit_rpm\": 6000,\n  \"health_check_interval_secs\": 30\n}";
        assert_eq!(
            text.as_bytes(),
            serde_json::to_vec_pretty(&decided).unwrap().as_slice()
        );
        (text.as_bytes().to_vec(), decided)
    }

    /// A node directory of the previous version: a `state.db` at its schema (version 5, with
    /// a peer in it) beside the two JSON files.
    fn old_node_dir() -> tempfile::TempDir {
        let dir = tempfile::TempDir::new().unwrap();
        let previous = Schema {
            application_id: super::super::SCHEMA.application_id,
            migrations: &super::super::SCHEMA.migrations[..5],
        };
        let conn = open_database(&dir.path().join("state.db"), &previous).unwrap();
        conn.execute(
            "INSERT INTO peers (node_id, addr, last_seen) VALUES (?1, '10.0.0.9:7000', 5)",
            [node(9).to_string()],
        )
        .unwrap();
        drop(conn);
        std::fs::write(dir.path().join(REVOKED_NODES_FILE), old_revoked_json().0).unwrap();
        std::fs::write(dir.path().join(GOVERNANCE_FILE), old_governance_json().0).unwrap();
        dir
    }

    fn open(dir: &tempfile::TempDir) -> NodeStore {
        NodeStore::open(&dir.path().join("state.db")).unwrap()
    }

    fn import(
        store: &NodeStore,
        dir: &tempfile::TempDir,
    ) -> Result<Vec<LegacyImport>, NodeStateError> {
        store.import_legacy_files(dir.path(), Timestamp::from_unix_millis(T_IMPORT))
    }

    fn imports_recorded(store: &NodeStore) -> i64 {
        lock(&store.connection)
            .query_row("SELECT count(*) FROM legacy_imports", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_data_directory_of_the_previous_version_keeps_every_value() {
        let dir = old_node_dir();
        let store = open(&dir);
        let done = import(&store, &dir).unwrap();
        assert_eq!(
            done,
            vec![
                LegacyImport {
                    file: REVOKED_NODES_FILE,
                    entries: 3,
                    imported_now: true
                },
                LegacyImport {
                    file: GOVERNANCE_FILE,
                    entries: 3,
                    imported_now: true
                },
            ]
        );
        assert_eq!(store.revoked_nodes().unwrap(), old_revoked_json().1);
        assert_eq!(
            store.governance_decisions().unwrap(),
            old_governance_json().1
        );
        // The migration kept what the previous schema held.
        assert_eq!(store.peers(10).unwrap()[0].node_id, node(9));
        // The files are kept, byte for byte, under their new names; the old names are gone.
        for (file, bytes) in [
            (REVOKED_NODES_FILE, old_revoked_json().0),
            (GOVERNANCE_FILE, old_governance_json().0),
        ] {
            assert!(!dir.path().join(file).exists());
            let kept = dir.path().join(format!("{file}{IMPORTED_SUFFIX}"));
            assert_eq!(std::fs::read(kept).unwrap(), bytes);
        }
        drop(store);

        // The next start imports nothing and still has every value.
        let store = open(&dir);
        assert_eq!(import(&store, &dir).unwrap(), vec![]);
        assert_eq!(store.revoked_nodes().unwrap(), old_revoked_json().1);
        assert_eq!(
            store.governance_decisions().unwrap(),
            old_governance_json().1
        );
        assert_eq!(imports_recorded(&store), 2);
    }

    #[test]
    fn a_crash_between_the_import_and_the_rename_neither_loses_nor_duplicates() {
        let dir = old_node_dir();
        let store = open(&dir);
        import(&store, &dir).unwrap();
        // The node ran on: a newer decision and one more revocation.
        store
            .record_governance_decision(
                Param::GossipFanout,
                5,
                "ab",
                Timestamp::from_unix_millis(T_IMPORT + 1),
            )
            .unwrap();
        store
            .record_node_revocations(
                &[(node(4), Timestamp::from_unix_millis(T_IMPORT + 2))],
                100,
                Timestamp::from_unix_millis(T_IMPORT + 2),
            )
            .unwrap();
        // What a crash after the commit and before the rename leaves: both files in place.
        for file in [REVOKED_NODES_FILE, GOVERNANCE_FILE] {
            std::fs::rename(
                dir.path().join(format!("{file}{IMPORTED_SUFFIX}")),
                dir.path().join(file),
            )
            .unwrap();
        }
        drop(store);
        let store = open(&dir);
        let done = import(&store, &dir).unwrap();
        assert!(
            done.iter().all(|d| !d.imported_now && d.entries == 3),
            "{done:?}"
        );
        // Nothing imported again: the newer decision stands, nothing was duplicated or lost.
        let mut expected = old_governance_json().1;
        expected.insert(Param::GossipFanout, 5);
        assert_eq!(store.governance_decisions().unwrap(), expected);
        let mut revoked = old_revoked_json().1;
        revoked.push((node(4), Timestamp::from_unix_millis(T_IMPORT + 2)));
        assert_eq!(store.revoked_nodes().unwrap(), revoked);
        assert_eq!(imports_recorded(&store), 2);
        for file in [REVOKED_NODES_FILE, GOVERNANCE_FILE] {
            assert!(!dir.path().join(file).exists());
            assert!(dir.path().join(format!("{file}{IMPORTED_SUFFIX}")).exists());
        }
    }

    #[test]
    fn garbage_or_out_of_bounds_json_is_refused_naming_the_file_and_nothing_is_imported() {
        let cases: [(&str, &[u8]); 8] = [
            (REVOKED_NODES_FILE, b"\xff"),
            (REVOKED_NODES_FILE, b"[1]"),
            (REVOKED_NODES_FILE, b"{\"not-a-node-id\": 5}"),
            (
                REVOKED_NODES_FILE,
                b"{\"aeaqcaibaeaqcaibaeaqcaibaeaqcaib\": -1}",
            ),
            (GOVERNANCE_FILE, b"{\"gossip_fanout\": 99}"),
            (GOVERNANCE_FILE, b"{\"nope\": 1}"),
            (GOVERNANCE_FILE, b"[1]"),
            (GOVERNANCE_FILE, b"{\"gossip_fanout\": 2"),
        ];
        for (file, garbage) in cases {
            let dir = tempfile::TempDir::new().unwrap();
            let store = open(&dir);
            std::fs::write(dir.path().join(file), garbage).unwrap();
            let error = import(&store, &dir).unwrap_err();
            assert!(
                matches!(&error, NodeStateError::LegacyFile { path, .. } if path.ends_with(file)),
                "{error:?}"
            );
            assert!(error.to_string().contains(file), "{error}");
            assert_eq!(std::fs::read(dir.path().join(file)).unwrap(), garbage);
            assert!(!dir.path().join(format!("{file}{IMPORTED_SUFFIX}")).exists());
            assert_eq!(imports_recorded(&store), 0);
            assert!(store.revoked_nodes().unwrap().is_empty());
            assert!(store.governance_decisions().unwrap().is_empty());
        }
    }

    #[test]
    fn another_file_under_an_imported_name_or_a_taken_name_is_refused() {
        let dir = old_node_dir();
        let store = open(&dir);
        import(&store, &dir).unwrap();
        std::fs::write(dir.path().join(GOVERNANCE_FILE), b"{\"gossip_fanout\": 9}").unwrap();
        let error = import(&store, &dir).unwrap_err();
        assert!(
            matches!(&error, NodeStateError::AlreadyImported { path, imported_at, .. }
                if path.ends_with(GOVERNANCE_FILE) && imported_at.as_unix_millis() == T_IMPORT),
            "{error:?}"
        );
        assert_eq!(
            store.governance_decisions().unwrap(),
            old_governance_json().1
        );
        assert!(dir.path().join(GOVERNANCE_FILE).exists());

        // Never overwrite a file already under the name an import keeps it as.
        let dir = old_node_dir();
        let store = open(&dir);
        let kept = dir
            .path()
            .join(format!("{REVOKED_NODES_FILE}{IMPORTED_SUFFIX}"));
        std::fs::write(&kept, b"operator's").unwrap();
        assert!(matches!(
            import(&store, &dir),
            Err(NodeStateError::ImportedNameTaken { .. })
        ));
        assert_eq!(std::fs::read(&kept).unwrap(), b"operator's");
        assert!(store.revoked_nodes().unwrap().is_empty());
        assert_eq!(imports_recorded(&store), 0);
    }
}
