//! The CA's database: enrollment tokens, every certificate it issued, revocations, the CRL
//! number and the latest signed CRL, the nodes it knows, and the membership log (its entries,
//! latest checkpoint and the size each witness last cosigned).
//!
//! The store decides nothing about cryptography; it guards the state transitions that must
//! not race: a token is used at most once, a revoked node never gets another certificate, and
//! the CRL number moves forward together with the revocations it covers. Each of those is one
//! `BEGIN IMMEDIATE` transaction that re-checks its preconditions under the write lock, so the
//! guarantees hold across threads, connections and processes sharing the file. The same
//! transaction appends the membership-log entry that records the change: a change is logged
//! if and only if it is committed.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_pki::{RevocationReason, RevokedEntry, Serial, TokenHash};

use ztmesh_membership::{EntryKind, EventEntry, LogEntry};

use ztmesh_runtime::sqlite::{
    count_from_sql, count_to_sql, limit_to_sql, lock, node_id_from_sql, open_database,
    timestamp_from_sql, timestamp_to_sql, Schema, StoreError,
};

/// Schema of the CA database. Times are unix milliseconds, node ids their lowercase base32
/// text, serials their big-endian magnitude bytes.
const SCHEMA: Schema = Schema {
    // "ztCA"
    application_id: 0x7a74_4341,
    migrations: &[
        r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

-- One row per node the CA has issued to or heard from. A node is revoked as a whole here, so
-- that it can never enroll or rotate again, whatever token or certificate it presents.
CREATE TABLE nodes (
    node_id           TEXT PRIMARY KEY NOT NULL,
    revoked_at        INTEGER,
    revocation_reason TEXT,
    mesh_addr         TEXT,
    api_addr          TEXT,
    last_seen         INTEGER,
    CHECK ((revoked_at IS NULL) = (revocation_reason IS NULL))
) STRICT;
CREATE INDEX nodes_by_last_seen ON nodes (last_seen);

-- Only the SHA-256 of a token is kept: a copy of this file must not let anyone enroll.
CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    node_id    TEXT,
    used_at    INTEGER,
    used_by    TEXT REFERENCES nodes (node_id),
    CHECK ((used_at IS NULL) = (used_by IS NULL))
) STRICT;

CREATE TABLE certificates (
    serial     BLOB PRIMARY KEY NOT NULL,
    node_id    TEXT NOT NULL REFERENCES nodes (node_id),
    not_before INTEGER NOT NULL,
    not_after  INTEGER NOT NULL,
    issued_at  INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('enroll', 'rotate')),
    der        BLOB NOT NULL
) STRICT;
CREATE INDEX certificates_by_node ON certificates (node_id);

CREATE TABLE revocations (
    serial     BLOB PRIMARY KEY NOT NULL REFERENCES certificates (serial),
    revoked_at INTEGER NOT NULL,
    reason     TEXT NOT NULL
) STRICT;

-- Singleton. `number` is the highest CRL number handed out (by a revocation or by
-- next_crl_number); the signed_* columns hold the newest CRL actually signed and saved.
CREATE TABLE crl (
    id            INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    number        INTEGER NOT NULL CHECK (number >= 0),
    signed_number INTEGER,
    der           BLOB,
    this_update   INTEGER,
    next_update   INTEGER,
    CHECK ((signed_number IS NULL) = (der IS NULL)
       AND (der IS NULL) = (this_update IS NULL)
       AND (this_update IS NULL) = (next_update IS NULL))
) STRICT;
INSERT INTO crl (id, number) VALUES (1, 0);
"#,
        // The membership log (see `crate::membership_log`). Entries are appended in the
        // transaction of the state change they record, so the log can never miss or invent
        // one; their index is dense from 0. The latest checkpoint note (log signature and
        // the witness cosignatures gathered so far) and the size each witness last cosigned
        // survive restarts.
        r#"
CREATE TABLE log_entries (
    idx  INTEGER PRIMARY KEY NOT NULL CHECK (idx >= 0),
    leaf BLOB NOT NULL
) STRICT;

-- Singleton: the newest signed checkpoint, as the note text served to everyone.
CREATE TABLE log_checkpoint (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    size INTEGER NOT NULL CHECK (size >= 0),
    note TEXT NOT NULL
) STRICT;

-- Keyed by the witness's vkey: the state belongs to the key, whatever name a policy gives it.
CREATE TABLE log_witnesses (
    vkey          TEXT PRIMARY KEY NOT NULL,
    cosigned_size INTEGER NOT NULL CHECK (cosigned_size >= 0)
) STRICT;
"#,
        // Mesh events in the membership log (manifest changes, governance decisions, tier
        // changes): what the log last said under each key, so a repeated report appends
        // nothing. Updated in the transaction that appends the entry.
        r#"
CREATE TABLE log_event_state (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    idx   INTEGER NOT NULL REFERENCES log_entries (idx)
) STRICT;
"#,
        // The last attestation token issued to each node: the nodes the CA attested, whose
        // reports of governance decisions count (see `ca_governance`). `governed_params` holds
        // the decisions the CA follows, and `governed_applied` the proposals already applied.
        r#"
CREATE TABLE attested_nodes (
    node_id   TEXT PRIMARY KEY NOT NULL REFERENCES nodes (node_id),
    issued_at INTEGER NOT NULL
) STRICT;
CREATE TABLE governed_params (
    param      TEXT PRIMARY KEY NOT NULL,
    value      INTEGER NOT NULL CHECK (value >= 0),
    proposal   TEXT NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT;
CREATE TABLE governed_applied (
    proposal   TEXT PRIMARY KEY NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT;
"#,
        // The TPM attestation key (AK) each node proved at enrollment by credential activation
        // against an allowed endorsement key (EK): the token desk trusts that node's quotes
        // signed with it. Written in the enrollment's transaction; a later enrollment of the
        // same node with another activated AK replaces the row.
        r#"
CREATE TABLE tpm2_attestation_keys (
    node_id       TEXT PRIMARY KEY NOT NULL REFERENCES nodes (node_id),
    ak_pem        TEXT NOT NULL,
    ek_name       TEXT NOT NULL CHECK (length(ek_name) > 0 AND ek_name NOT GLOB '*[^0-9a-f]*'),
    registered_at INTEGER NOT NULL
) STRICT;
"#,
        // Serials signed with the CA's key that this database never issued (a rogue issuance
        // a node's log audit found): revoked by serial and listed in every CRL beside
        // `revocations`, which only holds certificates of this database. `node_id` is the
        // node the certificate names, as the operator gave it, for the log entry.
        r#"
CREATE TABLE foreign_revocations (
    serial     BLOB PRIMARY KEY NOT NULL,
    node_id    TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    reason     TEXT NOT NULL
) STRICT;
"#,
    ],
};

/// One certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedRecord {
    /// Serial number of the certificate.
    pub serial: Serial,
    /// The node it was issued to.
    pub node_id: NodeId,
    /// Start of validity.
    pub not_before: Timestamp,
    /// End of validity.
    pub not_after: Timestamp,
    /// The DER certificate.
    pub cert_der: Vec<u8>,
    /// When the CA issued it.
    pub issued_at: Timestamp,
    /// Whether it came from an enrollment or a rotation.
    pub kind: IssueKind,
}

/// A saved signed CRL: `(number, der, this_update, next_update)`.
pub type SavedCrl = (u64, Vec<u8>, Timestamp, Timestamp);

/// How a certificate came to be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// First certificate of a node, against a one-time token.
    Enroll,
    /// Replacement certificate, requested with a still valid one.
    Rotate,
}

impl IssueKind {
    /// The text stored in the database (and used in JSON): `enroll` or `rotate`.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::Enroll => "enroll",
            IssueKind::Rotate => "rotate",
        }
    }

    fn from_sql(text: &str) -> Result<Self, StoreError> {
        match text {
            "enroll" => Ok(IssueKind::Enroll),
            "rotate" => Ok(IssueKind::Rotate),
            other => Err(StoreError::Corrupt(format!("issue kind {other:?}"))),
        }
    }
}

/// Why a token could not be redeemed. Nothing was changed when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedeemError {
    /// No token with this hash was ever created.
    #[error("unknown enrollment token")]
    Unknown,
    /// The token was already used to enroll a node.
    #[error("enrollment token was already used")]
    AlreadyUsed,
    /// The token expired before it was presented.
    #[error("enrollment token has expired")]
    Expired,
    /// The token is restricted to another node id.
    #[error("enrollment token is restricted to another node")]
    WrongNode,
    /// The node was revoked and may not enroll again.
    #[error("node is revoked and may not enroll")]
    NodeRevoked,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a rotation could not be recorded. Nothing was changed when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    /// The presented certificate was not issued by this CA to this node.
    #[error("presented certificate is unknown for this node")]
    UnknownCertificate,
    /// The presented certificate was revoked.
    #[error("presented certificate is revoked")]
    CertificateRevoked,
    /// The node was revoked and may not rotate.
    #[error("node is revoked and may not rotate")]
    NodeRevoked,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// One certificate this CA issued.
    Serial(Serial),
    /// One certificate said to name `node_id`: one this CA issued (to that node), or one
    /// signed with its key outside this database, revoked all the same.
    SerialOf {
        /// Its serial.
        serial: Serial,
        /// The node it names.
        node_id: NodeId,
    },
    /// A node: all its certificates, and it may never enroll or rotate again.
    Node(NodeId),
}

/// Result of a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeOutcome {
    /// Serials revoked by this call (empty when the target was already revoked).
    pub newly_revoked: Vec<Serial>,
    /// The CRL number after the call: bumped by one when anything changed, else unchanged.
    pub crl_number: u64,
    /// All revoked entries after the call, for signing the next CRL.
    pub entries: Vec<RevokedEntry>,
    /// The node banned as a whole by this call (a node target not revoked before).
    pub revoked_node: Option<NodeId>,
}

/// Why a revocation failed. Nothing was changed when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevokeError {
    /// No certificate with this serial is known, and no node was given to log it under.
    #[error("nothing to revoke: unknown serial or node")]
    NotFound,
    /// The serial was issued by this CA to another node than the one given.
    #[error("certificate {serial} was issued to {owner}, not to the node given")]
    OwnerMismatch {
        /// The serial, hex.
        serial: String,
        /// Its owner in this database.
        owner: NodeId,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A node the CA knows, for the peer list it hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownNode {
    /// The node.
    pub node_id: NodeId,
    /// Mesh (TLS transport) address it announced, if any.
    pub mesh_addr: Option<String>,
    /// HTTP API address it announced, if any.
    pub api_addr: Option<String>,
    /// Last announcement or certificate issuance.
    pub last_seen: Timestamp,
}

/// What the CA knows about a token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// When it was created.
    pub created_at: Timestamp,
    /// First instant at which it is no longer accepted.
    pub expires_at: Timestamp,
    /// The only node allowed to use it, if restricted.
    pub node_id: Option<NodeId>,
    /// When it was used, if it was.
    pub used_at: Option<Timestamp>,
}

/// A TPM attestation key to register for a node at enrollment (see
/// [`CaStore::redeem_token_registering`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tpm2KeyRegistration {
    /// The AK public key, PEM `PUBLIC KEY`.
    pub ak_pem: String,
    /// The name of the endorsement key it was activated under, lowercase hex.
    pub ek_name_hex: String,
}

/// The TPM attestation key registered for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredTpm2Key {
    /// The AK and the EK it was activated under.
    pub key: Tpm2KeyRegistration,
    /// When the enrollment that registered it committed.
    pub registered_at: Timestamp,
}

/// The CA's database. `Send + Sync`; every method blocks (run it in `spawn_blocking`).
///
/// One connection per handle, behind a mutex. Several handles (or processes) may open the
/// same file: the compare-and-swap methods still hold, because they take SQLite's write lock
/// before reading what they check.
#[derive(Debug)]
pub struct CaStore {
    connection: Mutex<Connection>,
}

/// The entry for a certificate the CA issued.
pub fn issued_entry(kind: EntryKind, record: &IssuedRecord) -> LogEntry {
    LogEntry {
        kind,
        node_id: record.node_id,
        serial: record.serial.to_hex(),
        not_after: Some(record.not_after.as_unix_secs()),
        at: record.issued_at.as_unix_secs(),
    }
}

impl CaStore {
    /// Opens or creates the database at `path` and migrates it to the current schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = open_database(path, &SCHEMA)?;
        Ok(CaStore {
            connection: Mutex::new(connection),
        })
    }

    /// Sets a small configuration value (overwrites).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        lock(&self.connection).execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Reads a configuration value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.connection)
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?)
    }

    /// Records a new enrollment token by its hash. A token may be restricted to one node id.
    pub fn insert_token(
        &self,
        hash: &TokenHash,
        created_at: Timestamp,
        expires_at: Timestamp,
        node_id: Option<NodeId>,
    ) -> Result<(), StoreError> {
        let created_at = timestamp_to_sql(created_at, "token created_at")?;
        let expires_at = timestamp_to_sql(expires_at, "token expires_at")?;
        lock(&self.connection).execute(
            "INSERT INTO tokens (hash, created_at, expires_at, node_id) VALUES (?1, ?2, ?3, ?4)",
            params![
                &hash.0[..],
                created_at,
                expires_at,
                node_id.map(|n| n.to_string())
            ],
        )?;
        Ok(())
    }

    /// What is known about a token, if it exists.
    pub fn token_info(&self, hash: &TokenHash) -> Result<Option<TokenInfo>, StoreError> {
        let conn = lock(&self.connection);
        let raw = conn
            .query_row(
                "SELECT created_at, expires_at, node_id, used_at FROM tokens WHERE hash = ?1",
                [&hash.0[..]],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, Option<i64>>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((created_at, expires_at, node_id, used_at)) = raw else {
            return Ok(None);
        };
        Ok(Some(TokenInfo {
            created_at: timestamp_from_sql(created_at, "token created_at")?,
            expires_at: timestamp_from_sql(expires_at, "token expires_at")?,
            node_id: node_id.as_deref().map(node_id_from_sql).transpose()?,
            used_at: used_at
                .map(|t| timestamp_from_sql(t, "token used_at"))
                .transpose()?,
        }))
    }

    /// Uses a token and records the certificate issued against it, in one transaction.
    ///
    /// Checks, under the write lock: the token exists, is unused, has not expired at `now`
    /// (`now >= expires_at` is expired), its node restriction (if any) is `record.node_id`,
    /// and that node is not revoked. Then marks the token used and inserts the record. Of many
    /// concurrent calls for one token, across connections too, exactly one succeeds; the
    /// others get [`RedeemError::AlreadyUsed`]. On any error nothing changes, so a refused
    /// token stays usable.
    pub fn redeem_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        record: &IssuedRecord,
    ) -> Result<(), RedeemError> {
        self.redeem_token_registering(hash, now, record, None)
    }

    /// [`Self::redeem_token`], also registering `tpm2` (the TPM attestation key the node
    /// activated at this enrollment) for `record.node_id` in the same transaction: the key is
    /// registered if and only if the certificate is issued.
    pub fn redeem_token_registering(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        record: &IssuedRecord,
        tpm2: Option<&Tpm2KeyRegistration>,
    ) -> Result<(), RedeemError> {
        let now_sql = timestamp_to_sql(now, "now")?;
        let mut conn = lock(&self.connection);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let token = tx
            .query_row(
                "SELECT expires_at, node_id, used_at FROM tokens WHERE hash = ?1",
                [&hash.0[..]],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(StoreError::from)?;
        let Some((expires_at, restricted_to, used_at)) = token else {
            return Err(RedeemError::Unknown);
        };
        if used_at.is_some() {
            return Err(RedeemError::AlreadyUsed);
        }
        if now_sql >= expires_at {
            return Err(RedeemError::Expired);
        }
        if let Some(restricted_to) = restricted_to {
            if node_id_from_sql(&restricted_to)? != record.node_id {
                return Err(RedeemError::WrongNode);
            }
        }
        if node_revoked(&tx, &record.node_id)? {
            return Err(RedeemError::NodeRevoked);
        }
        upsert_issued_node(&tx, record)?;
        // The write lock already excludes a concurrent use; the `used_at IS NULL` guard and the
        // row count keep the swap correct even if the checks above are ever reordered.
        let changed = tx
            .execute(
                "UPDATE tokens SET used_at = ?2, used_by = ?3 WHERE hash = ?1 AND used_at IS NULL",
                params![&hash.0[..], now_sql, record.node_id.to_string()],
            )
            .map_err(StoreError::from)?;
        if changed != 1 {
            return Err(RedeemError::AlreadyUsed);
        }
        insert_certificate(&tx, record)?;
        if let Some(tpm2) = tpm2 {
            tx.execute(
                "INSERT INTO tpm2_attestation_keys (node_id, ak_pem, ek_name, registered_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (node_id) DO UPDATE SET ak_pem = excluded.ak_pem,
                     ek_name = excluded.ek_name, registered_at = excluded.registered_at",
                params![
                    record.node_id.to_string(),
                    tpm2.ak_pem,
                    tpm2.ek_name_hex,
                    now_sql
                ],
            )
            .map_err(StoreError::from)?;
        }
        append_log_entry(&tx, &issued_entry(EntryKind::Enroll, record))?;
        tx.commit().map_err(StoreError::from)?;
        tracing::info!(node = %record.node_id, serial = %record.serial, "token redeemed");
        Ok(())
    }

    /// Records a rotation, in one transaction: `presented_serial` must be a certificate this
    /// CA issued to `record.node_id`, not revoked, and the node not revoked.
    pub fn record_rotation(
        &self,
        presented_serial: &Serial,
        record: &IssuedRecord,
    ) -> Result<(), RotateError> {
        let mut conn = lock(&self.connection);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let owner: Option<String> = tx
            .query_row(
                "SELECT node_id FROM certificates WHERE serial = ?1",
                [presented_serial.as_bytes()],
                |row| row.get(0),
            )
            .optional()
            .map_err(StoreError::from)?;
        match owner {
            Some(owner) if node_id_from_sql(&owner)? == record.node_id => {}
            _ => return Err(RotateError::UnknownCertificate),
        }
        // The node check comes first: it is the stronger statement when both hold.
        if node_revoked(&tx, &record.node_id)? {
            return Err(RotateError::NodeRevoked);
        }
        if serial_revoked(&tx, presented_serial)? {
            return Err(RotateError::CertificateRevoked);
        }
        upsert_issued_node(&tx, record)?;
        insert_certificate(&tx, record)?;
        append_log_entry(&tx, &issued_entry(EntryKind::Rotate, record))?;
        tx.commit().map_err(StoreError::from)?;
        tracing::info!(node = %record.node_id, serial = %record.serial, "rotation recorded");
        Ok(())
    }

    /// Revokes one certificate, or a node: the node is marked revoked (it can never enroll or
    /// rotate again) and all its certificates are revoked, expired or not. The CRL number is
    /// bumped by one, in the same transaction, when anything changed; revoking what is already
    /// revoked changes nothing.
    ///
    /// The membership log gets one entry per newly revoked certificate (kind `revoke_node` or
    /// `revoke_certificate` after the target), so the log alone says which serials are
    /// revoked; a node banned when all its certificates were already revoked gets one
    /// `revoke_node` entry naming its newest certificate.
    pub fn revoke(
        &self,
        target: &RevokeTarget,
        reason: RevocationReason,
        now: Timestamp,
    ) -> Result<RevokeOutcome, RevokeError> {
        let now_sql = timestamp_to_sql(now, "now")?;
        let reason_text = reason_to_sql(reason)?;
        let mut conn = lock(&self.connection);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let mut changed = false;
        let mut revoked_node = None;
        let mut foreign = None;
        let candidates: Vec<Serial> = match target {
            RevokeTarget::SerialOf { serial, node_id } => {
                let owner: Option<String> = tx
                    .query_row(
                        "SELECT node_id FROM certificates WHERE serial = ?1",
                        [serial.as_bytes()],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(StoreError::from)?;
                match owner {
                    Some(owner) => {
                        let owner = node_id_from_sql(&owner)?;
                        if &owner != node_id {
                            return Err(RevokeError::OwnerMismatch {
                                serial: serial.to_hex(),
                                owner,
                            });
                        }
                        vec![serial.clone()]
                    }
                    None => {
                        // Not issued from this database: whoever signed it used the CA's
                        // key outside it. Revoked all the same, and logged under the node
                        // the certificate names.
                        let inserted = tx
                            .execute(
                                "INSERT INTO foreign_revocations (serial, node_id, revoked_at, reason)
                                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (serial) DO NOTHING",
                                params![serial.as_bytes(), node_id.to_string(), now_sql, reason_text],
                            )
                            .map_err(StoreError::from)?;
                        if inserted == 1 {
                            foreign = Some((serial.clone(), *node_id));
                        }
                        Vec::new()
                    }
                }
            }
            RevokeTarget::Serial(serial) => {
                let known: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM certificates WHERE serial = ?1)",
                        [serial.as_bytes()],
                        |row| row.get(0),
                    )
                    .map_err(StoreError::from)?;
                if !known {
                    return Err(RevokeError::NotFound);
                }
                vec![serial.clone()]
            }
            RevokeTarget::Node(node_id) => {
                let node_text = node_id.to_string();
                let revoked_at: Option<Option<i64>> = tx
                    .query_row(
                        "SELECT revoked_at FROM nodes WHERE node_id = ?1",
                        [&node_text],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(StoreError::from)?;
                match revoked_at {
                    None => {
                        // A node this database never issued to (a certificate signed with
                        // the CA's key outside it names it): banned all the same, so it can
                        // never enroll, and logged; nodes apply it once the log shows it.
                        tx.execute(
                            "INSERT INTO nodes (node_id, revoked_at, revocation_reason)
                             VALUES (?1, ?2, ?3)",
                            params![node_text, now_sql, reason_text],
                        )
                        .map_err(StoreError::from)?;
                        changed = true;
                        revoked_node = Some(*node_id);
                    }
                    Some(Some(_)) => {}
                    Some(None) => {
                        tx.execute(
                            "UPDATE nodes SET revoked_at = ?2, revocation_reason = ?3
                             WHERE node_id = ?1",
                            params![node_text, now_sql, reason_text],
                        )
                        .map_err(StoreError::from)?;
                        changed = true;
                        revoked_node = Some(*node_id);
                    }
                }
                let mut statement = tx
                    .prepare("SELECT serial FROM certificates WHERE node_id = ?1 ORDER BY rowid")
                    .map_err(StoreError::from)?;
                let serials = statement
                    .query_map([&node_text], |row| row.get::<_, Vec<u8>>(0))
                    .map_err(StoreError::from)?
                    .map(|bytes| bytes.map(|b| Serial::from_bytes(&b)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::from)?;
                serials
            }
        };
        let mut newly_revoked = Vec::new();
        for serial in candidates {
            let inserted = tx
                .execute(
                    "INSERT INTO revocations (serial, revoked_at, reason) VALUES (?1, ?2, ?3)
                     ON CONFLICT (serial) DO NOTHING",
                    params![serial.as_bytes(), now_sql, reason_text],
                )
                .map_err(StoreError::from)?;
            if inserted == 1 {
                newly_revoked.push(serial);
            }
        }
        changed |= !newly_revoked.is_empty();
        let kind = match target {
            RevokeTarget::Serial(_) | RevokeTarget::SerialOf { .. } => EntryKind::RevokeCertificate,
            RevokeTarget::Node(_) => EntryKind::RevokeNode,
        };
        for serial in &newly_revoked {
            let node_id = certificate_owner(&tx, serial)?;
            append_log_entry(&tx, &LogEntry::revoked(kind, node_id, serial, now))?;
        }
        if let Some((serial, node_id)) = foreign {
            append_log_entry(&tx, &LogEntry::revoked(kind, node_id, &serial, now))?;
            newly_revoked.push(serial);
            changed = true;
        }
        if let (Some(node_id), true) = (revoked_node, newly_revoked.is_empty()) {
            let newest = newest_certificate(&tx, &node_id)?;
            let serial = newest.map(|s| s.to_hex()).unwrap_or_default();
            append_log_entry(
                &tx,
                &LogEntry {
                    kind: EntryKind::RevokeNode,
                    node_id,
                    serial,
                    not_after: None,
                    at: now.as_unix_secs(),
                },
            )?;
        }
        if changed {
            tx.execute("UPDATE crl SET number = number + 1 WHERE id = 1", [])
                .map_err(StoreError::from)?;
        }
        let crl_number = read_crl_number(&tx)?;
        let entries = read_revoked_entries(&tx)?;
        tx.commit().map_err(StoreError::from)?;
        if changed {
            tracing::warn!(
                ?target,
                ?reason,
                revoked = newly_revoked.len(),
                crl_number,
                "revoked"
            );
        }
        Ok(RevokeOutcome {
            newly_revoked,
            crl_number,
            entries,
            revoked_node,
        })
    }

    /// All revoked certificates, in order of revocation.
    pub fn revoked_entries(&self) -> Result<Vec<RevokedEntry>, StoreError> {
        read_revoked_entries(&lock(&self.connection))
    }

    /// The current CRL number: 0 on a fresh database, bumped by every revocation that changed
    /// something, by [`CaStore::next_crl_number`] and raised by [`CaStore::save_crl`].
    pub fn crl_number(&self) -> Result<u64, StoreError> {
        read_crl_number(&lock(&self.connection))
    }

    /// Atomically increments the CRL number and returns the new one, for signing a fresh CRL
    /// without revocation changes (the initial CRL, periodic re-signing).
    pub fn next_crl_number(&self) -> Result<u64, StoreError> {
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("UPDATE crl SET number = number + 1 WHERE id = 1", [])?;
        let number = read_crl_number(&tx)?;
        tx.commit()?;
        Ok(number)
    }

    /// Keeps a signed CRL if its number is greater than the saved one (an older CRL signed
    /// concurrently must not replace a newer one). Also raises the CRL number to at least
    /// `number`, so later revocations never reuse a number already signed.
    pub fn save_crl(
        &self,
        number: u64,
        der: &[u8],
        this_update: Timestamp,
        next_update: Timestamp,
    ) -> Result<(), StoreError> {
        let number = count_to_sql(number, "CRL number")?;
        let this_update = timestamp_to_sql(this_update, "CRL this_update")?;
        let next_update = timestamp_to_sql(next_update, "CRL next_update")?;
        lock(&self.connection).execute(
            "UPDATE crl SET signed_number = ?1, der = ?2, this_update = ?3, next_update = ?4,
                            number = max(number, ?1)
             WHERE id = 1 AND (signed_number IS NULL OR signed_number < ?1)",
            params![number, der, this_update, next_update],
        )?;
        Ok(())
    }

    /// The newest saved CRL: `(number, der, this_update, next_update)`.
    pub fn latest_crl(&self) -> Result<Option<SavedCrl>, StoreError> {
        let conn = lock(&self.connection);
        let raw = conn.query_row(
            "SELECT signed_number, der, this_update, next_update FROM crl WHERE id = 1",
            [],
            |row| {
                Ok((
                    row.get::<_, Option<i64>>(0)?,
                    row.get::<_, Option<Vec<u8>>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, Option<i64>>(3)?,
                ))
            },
        )?;
        match raw {
            (None, None, None, None) => Ok(None),
            (Some(number), Some(der), Some(this_update), Some(next_update)) => Ok(Some((
                count_from_sql(number, "CRL number")?,
                der,
                timestamp_from_sql(this_update, "CRL this_update")?,
                timestamp_from_sql(next_update, "CRL next_update")?,
            ))),
            _ => Err(StoreError::Corrupt("CRL row partly empty".into())),
        }
    }

    /// Whether the node was revoked.
    pub fn is_node_revoked(&self, node_id: &NodeId) -> Result<bool, StoreError> {
        node_revoked(&lock(&self.connection), node_id)
    }

    /// The certificate with this serial, if this CA issued it.
    pub fn certificate(&self, serial: &Serial) -> Result<Option<IssuedRecord>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare(&format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = ?1"
        ))?;
        let mut rows = statement.query([serial.as_bytes()])?;
        rows.next()?.map(issued_from_row).transpose()
    }

    /// Every certificate issued, oldest first.
    pub fn certificates(&self) -> Result<Vec<IssuedRecord>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare(&format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM certificates ORDER BY issued_at, rowid"
        ))?;
        let mut rows = statement.query([])?;
        let mut records = Vec::new();
        while let Some(row) = rows.next()? {
            records.push(issued_from_row(row)?);
        }
        Ok(records)
    }

    /// Records a node's announced addresses (replacing the previous ones) and when it was seen.
    pub fn announce(
        &self,
        node_id: &NodeId,
        mesh_addr: Option<&str>,
        api_addr: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let now = timestamp_to_sql(now, "announce time")?;
        lock(&self.connection).execute(
            "INSERT INTO nodes (node_id, mesh_addr, api_addr, last_seen) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (node_id) DO UPDATE SET
                 mesh_addr = excluded.mesh_addr,
                 api_addr = excluded.api_addr,
                 last_seen = excluded.last_seen",
            params![node_id.to_string(), mesh_addr, api_addr, now],
        )?;
        Ok(())
    }

    /// Up to `limit` non-revoked nodes, most recently seen first.
    pub fn known_nodes(&self, limit: usize) -> Result<Vec<KnownNode>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn.prepare(
            "SELECT node_id, mesh_addr, api_addr, last_seen FROM nodes
             WHERE revoked_at IS NULL AND last_seen IS NOT NULL
             ORDER BY last_seen DESC, node_id
             LIMIT ?1",
        )?;
        let mut rows = statement.query([limit_to_sql(limit)])?;
        let mut nodes = Vec::new();
        while let Some(row) = rows.next()? {
            nodes.push(KnownNode {
                node_id: node_id_from_sql(&row.get::<_, String>(0)?)?,
                mesh_addr: row.get(1)?,
                api_addr: row.get(2)?,
                last_seen: timestamp_from_sql(row.get(3)?, "node last_seen")?,
            });
        }
        Ok(nodes)
    }
}

/// A governance decision the CA follows, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernedParam {
    /// The parameter's wire name.
    pub param: String,
    /// Its value in force.
    pub value: u64,
    /// The proposal that set it.
    pub proposal: String,
    /// When the CA applied it.
    pub applied_at: Timestamp,
}

impl CaStore {
    /// Records that `node_id` received an attestation token at `at`.
    pub fn record_attested(&self, node_id: &NodeId, at: Timestamp) -> Result<(), StoreError> {
        let at = timestamp_to_sql(at, "token time")?;
        lock(&self.connection).execute(
            "INSERT INTO attested_nodes (node_id, issued_at) VALUES (?1, ?2)
             ON CONFLICT (node_id) DO UPDATE SET issued_at = max(issued_at, excluded.issued_at)",
            params![node_id.to_string(), at],
        )?;
        Ok(())
    }

    /// The non-revoked nodes that received an attestation token at or after `since`.
    pub fn attested_since(
        &self,
        since: Timestamp,
    ) -> Result<std::collections::BTreeSet<NodeId>, StoreError> {
        let since = timestamp_to_sql(since, "attested since")?;
        let conn = lock(&self.connection);
        let mut statement = conn.prepare(
            "SELECT a.node_id FROM attested_nodes a JOIN nodes n ON n.node_id = a.node_id
             WHERE n.revoked_at IS NULL AND a.issued_at >= ?1",
        )?;
        let mut rows = statement.query([since])?;
        let mut nodes = std::collections::BTreeSet::new();
        while let Some(row) = rows.next()? {
            nodes.insert(node_id_from_sql(&row.get::<_, String>(0)?)?);
        }
        Ok(nodes)
    }

    /// Puts `value` of `param` into force as decided by `proposal`, and marks the proposal
    /// applied, in one transaction. Answers `false` (and changes nothing) when the proposal
    /// was already applied.
    pub fn apply_governed(
        &self,
        param: &str,
        value: u64,
        proposal: &str,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let at = timestamp_to_sql(at, "governance time")?;
        let value = i64::try_from(value).map_err(|_| StoreError::OutOfRange("governed value"))?;
        let mut conn = lock(&self.connection);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let fresh = tx.execute(
            "INSERT INTO governed_applied (proposal, applied_at) VALUES (?1, ?2)
             ON CONFLICT (proposal) DO NOTHING",
            params![proposal, at],
        )? == 1;
        if fresh {
            tx.execute(
                "INSERT INTO governed_params (param, value, proposal, applied_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (param) DO UPDATE SET value = excluded.value,
                     proposal = excluded.proposal, applied_at = excluded.applied_at",
                params![param, value, proposal, at],
            )?;
        }
        tx.commit()?;
        Ok(fresh)
    }

    /// The decision in force for `param`, if any.
    pub fn governed(&self, param: &str) -> Result<Option<GovernedParam>, StoreError> {
        let row = lock(&self.connection)
            .query_row(
                "SELECT value, proposal, applied_at FROM governed_params WHERE param = ?1",
                [param],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(value, proposal, applied_at)| {
            Ok(GovernedParam {
                param: param.to_owned(),
                value: u64::try_from(value)
                    .map_err(|_| StoreError::Corrupt(format!("{param} = {value}")))?,
                proposal,
                applied_at: timestamp_from_sql(applied_at, "governance time")?,
            })
        })
        .transpose()
    }

    /// The proposals applied so far (newest `limit`).
    pub fn governed_applied(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let conn = lock(&self.connection);
        let mut statement = conn
            .prepare("SELECT proposal FROM governed_applied ORDER BY applied_at DESC LIMIT ?1")?;
        let mut rows = statement.query([limit_to_sql(limit)])?;
        let mut proposals = Vec::new();
        while let Some(row) = rows.next()? {
            proposals.push(row.get(0)?);
        }
        Ok(proposals)
    }
}

/// Most log entries [`CaStore::log_entries`] returns in one call.
const MAX_LOG_ENTRIES_PER_READ: usize = 10_000;

impl CaStore {
    /// Number of entries in the membership log.
    pub fn log_size(&self) -> Result<u64, StoreError> {
        read_log_size(&lock(&self.connection))
    }

    /// Up to `count` (at most 10 000) log entries from index `start`, in
    /// order, as `(index, leaf bytes)`.
    pub fn log_entries(&self, start: u64, count: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let Ok(start) = i64::try_from(start) else {
            return Ok(Vec::new());
        };
        let count = count.min(MAX_LOG_ENTRIES_PER_READ);
        let conn = lock(&self.connection);
        let mut statement = conn.prepare_cached(
            "SELECT idx, leaf FROM log_entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2",
        )?;
        let mut rows = statement.query(params![start, limit_to_sql(count)])?;
        let mut entries = Vec::new();
        let mut expected = start;
        while let Some(row) = rows.next()? {
            let idx: i64 = row.get(0)?;
            // Indexes are dense: a gap would shift every later leaf and break every proof.
            if idx != expected {
                return Err(StoreError::Corrupt(format!(
                    "log index {idx} where {expected} was expected"
                )));
            }
            expected += 1;
            entries.push((count_from_sql(idx, "log index")?, row.get(1)?));
        }
        Ok(entries)
    }

    /// The newest saved checkpoint note: `(size, note text)`.
    pub fn log_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let raw: Option<(i64, String)> = lock(&self.connection)
            .query_row(
                "SELECT size, note FROM log_checkpoint WHERE id = 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        raw.map(|(size, note)| Ok((count_from_sql(size, "checkpoint size")?, note)))
            .transpose()
    }

    /// Saves a checkpoint note unless a larger checkpoint is saved already (a slow writer must
    /// not replace a newer checkpoint with an older one). Same size replaces: that is how
    /// cosignatures are added to the note. Returns whether the note was saved.
    pub fn save_log_checkpoint(&self, size: u64, note: &str) -> Result<bool, StoreError> {
        let size = count_to_sql(size, "checkpoint size")?;
        let changed = lock(&self.connection).execute(
            "INSERT INTO log_checkpoint (id, size, note) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET size = excluded.size, note = excluded.note
             WHERE log_checkpoint.size <= excluded.size",
            params![size, note],
        )?;
        Ok(changed == 1)
    }

    /// The tree size the witness with this vkey last cosigned for this log (0 if never).
    pub fn witness_cosigned_size(&self, vkey: &str) -> Result<u64, StoreError> {
        let size: Option<i64> = lock(&self.connection)
            .query_row(
                "SELECT cosigned_size FROM log_witnesses WHERE vkey = ?1",
                [vkey],
                |row| row.get(0),
            )
            .optional()?;
        size.map_or(Ok(0), |size| count_from_sql(size, "witness cosigned size"))
    }

    /// Records the size a witness just cosigned. It is the witness's own state mirrored here
    /// (the witness answers 409 with the truth when this is off), so it is set, not maxed.
    pub fn set_witness_cosigned_size(&self, vkey: &str, size: u64) -> Result<(), StoreError> {
        let size = count_to_sql(size, "witness cosigned size")?;
        lock(&self.connection).execute(
            "INSERT INTO log_witnesses (vkey, cosigned_size) VALUES (?1, ?2)
             ON CONFLICT (vkey) DO UPDATE SET cosigned_size = excluded.cosigned_size",
            params![vkey, size],
        )?;
        Ok(())
    }
}

impl CaStore {
    /// The TPM attestation key registered for `node_id` at its enrollment, if any.
    pub fn tpm2_attestation_key(
        &self,
        node_id: &NodeId,
    ) -> Result<Option<RegisteredTpm2Key>, StoreError> {
        let row = lock(&self.connection)
            .query_row(
                "SELECT ak_pem, ek_name, registered_at FROM tpm2_attestation_keys
                 WHERE node_id = ?1",
                [node_id.to_string()],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(ak_pem, ek_name_hex, registered_at)| {
            Ok(RegisteredTpm2Key {
                key: Tpm2KeyRegistration {
                    ak_pem,
                    ek_name_hex,
                },
                registered_at: timestamp_from_sql(registered_at, "tpm2 key registered_at")?,
            })
        })
        .transpose()
    }
}

const CERTIFICATE_COLUMNS: &str = "serial, node_id, not_before, not_after, der, issued_at, kind";

fn issued_from_row(row: &Row<'_>) -> Result<IssuedRecord, StoreError> {
    Ok(IssuedRecord {
        serial: Serial::from_bytes(&row.get::<_, Vec<u8>>(0)?),
        node_id: node_id_from_sql(&row.get::<_, String>(1)?)?,
        not_before: timestamp_from_sql(row.get(2)?, "certificate not_before")?,
        not_after: timestamp_from_sql(row.get(3)?, "certificate not_after")?,
        cert_der: row.get(4)?,
        issued_at: timestamp_from_sql(row.get(5)?, "certificate issued_at")?,
        kind: IssueKind::from_sql(&row.get::<_, String>(6)?)?,
    })
}

/// Creates the node row a certificate refers to, and counts the issuance as a sighting.
fn upsert_issued_node(tx: &Transaction<'_>, record: &IssuedRecord) -> Result<(), StoreError> {
    let issued_at = timestamp_to_sql(record.issued_at, "certificate issued_at")?;
    tx.execute(
        "INSERT INTO nodes (node_id, last_seen) VALUES (?1, ?2)
         ON CONFLICT (node_id) DO UPDATE SET
             last_seen = max(coalesce(last_seen, excluded.last_seen), excluded.last_seen)",
        params![record.node_id.to_string(), issued_at],
    )?;
    Ok(())
}

fn insert_certificate(tx: &Transaction<'_>, record: &IssuedRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO certificates (serial, node_id, not_before, not_after, issued_at, kind, der)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            record.serial.as_bytes(),
            record.node_id.to_string(),
            timestamp_to_sql(record.not_before, "certificate not_before")?,
            timestamp_to_sql(record.not_after, "certificate not_after")?,
            timestamp_to_sql(record.issued_at, "certificate issued_at")?,
            record.kind.as_str(),
            record.cert_der,
        ],
    )?;
    Ok(())
}

impl CaStore {
    /// Appends a mesh event to the membership log unless the log already says the same under
    /// its key (see [`EventEntry::dedupe`]). Returns the new entry's index, or `None` when
    /// nothing was appended.
    pub fn append_event(&self, entry: &EventEntry) -> Result<Option<u64>, StoreError> {
        let (key, value) = entry.dedupe();
        let mut conn = lock(&self.connection);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let current: Option<String> = tx
            .query_row(
                "SELECT value FROM log_event_state WHERE key = ?1",
                [&key],
                |row| row.get(0),
            )
            .optional()
            .map_err(StoreError::from)?;
        if current.as_deref() == Some(value.as_str()) {
            return Ok(None);
        }
        let idx: i64 = tx
            .query_row(
                "INSERT INTO log_entries (idx, leaf)
                 SELECT coalesce(max(idx) + 1, 0), ?1 FROM log_entries
                 RETURNING idx",
                [entry.to_leaf()],
                |row| row.get(0),
            )
            .map_err(StoreError::from)?;
        tx.execute(
            "INSERT INTO log_event_state (key, value, idx) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, idx = excluded.idx",
            rusqlite::params![key, value, idx],
        )
        .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(Some(count_from_sql(idx, "log index")?))
    }
}

/// Appends one membership-log entry with the next index; only ever called inside the
/// transaction of the change the entry records.
fn append_log_entry(tx: &Transaction<'_>, entry: &LogEntry) -> Result<u64, StoreError> {
    let idx: i64 = tx.query_row(
        "INSERT INTO log_entries (idx, leaf)
         SELECT coalesce(max(idx) + 1, 0), ?1 FROM log_entries
         RETURNING idx",
        [entry.to_leaf()],
        |row| row.get(0),
    )?;
    count_from_sql(idx, "log index")
}

fn read_log_size(conn: &Connection) -> Result<u64, StoreError> {
    // Indexes are dense from 0, so the size is one past the largest.
    let next: i64 = conn.query_row(
        "SELECT coalesce(max(idx) + 1, 0) FROM log_entries",
        [],
        |row| row.get(0),
    )?;
    count_from_sql(next, "log size")
}

fn certificate_owner(conn: &Connection, serial: &Serial) -> Result<NodeId, StoreError> {
    let owner: String = conn.query_row(
        "SELECT node_id FROM certificates WHERE serial = ?1",
        [serial.as_bytes()],
        |row| row.get(0),
    )?;
    node_id_from_sql(&owner)
}

fn newest_certificate(conn: &Connection, node_id: &NodeId) -> Result<Option<Serial>, StoreError> {
    let serial: Option<Vec<u8>> = conn
        .query_row(
            "SELECT serial FROM certificates WHERE node_id = ?1 ORDER BY issued_at DESC, rowid DESC LIMIT 1",
            [node_id.to_string()],
            |row| row.get(0),
        )
        .optional()?;
    Ok(serial.map(|bytes| Serial::from_bytes(&bytes)))
}

fn node_revoked(conn: &Connection, node_id: &NodeId) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM nodes WHERE node_id = ?1 AND revoked_at IS NOT NULL)",
        [node_id.to_string()],
        |row| row.get(0),
    )?)
}

fn serial_revoked(conn: &Connection, serial: &Serial) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM revocations WHERE serial = ?1)
             OR EXISTS (SELECT 1 FROM foreign_revocations WHERE serial = ?1)",
        [serial.as_bytes()],
        |row| row.get(0),
    )?)
}

fn read_crl_number(conn: &Connection) -> Result<u64, StoreError> {
    let number: Option<i64> = conn
        .query_row("SELECT number FROM crl WHERE id = 1", [], |row| row.get(0))
        .optional()?;
    let number = number.ok_or_else(|| StoreError::Corrupt("CRL row missing".into()))?;
    count_from_sql(number, "CRL number")
}

fn read_revoked_entries(conn: &Connection) -> Result<Vec<RevokedEntry>, StoreError> {
    let mut statement = conn.prepare(
        "SELECT serial, revoked_at, reason, 0 AS foreign_first, rowid FROM revocations
             UNION ALL
             SELECT serial, revoked_at, reason, 1, rowid FROM foreign_revocations
             ORDER BY 2, 4, 5",
    )?;
    let mut rows = statement.query([])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        entries.push(RevokedEntry {
            serial: Serial::from_bytes(&row.get::<_, Vec<u8>>(0)?),
            revoked_at: timestamp_from_sql(row.get(1)?, "revoked_at")?,
            reason: reason_from_sql(&row.get::<_, String>(2)?)?,
        });
    }
    Ok(entries)
}

/// Reasons are stored as their serde name (`key_compromise`, ...). Going through serde rather
/// than a local match keeps new variants of the non-exhaustive enum storable.
fn reason_to_sql(reason: RevocationReason) -> Result<String, StoreError> {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(text)) => Ok(text),
        other => Err(StoreError::Corrupt(format!(
            "revocation reason {reason:?} has no text form: {other:?}"
        ))),
    }
}

fn reason_from_sql(text: &str) -> Result<RevocationReason, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("revocation reason {text:?}")))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Instant;

    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    fn serial(n: u16) -> Serial {
        let mut bytes = [0x40u8; 16];
        bytes[14..].copy_from_slice(&n.to_be_bytes());
        Serial::from_bytes(&bytes)
    }

    fn ts(millis: u64) -> Timestamp {
        Timestamp::from_unix_millis(millis)
    }

    fn record(node_id: NodeId, serial_number: u16, kind: IssueKind) -> IssuedRecord {
        IssuedRecord {
            serial: serial(serial_number),
            node_id,
            not_before: ts(1_000),
            not_after: ts(100_000),
            cert_der: vec![0x30, 0x03, serial_number as u8],
            issued_at: ts(1_000 + u64::from(serial_number)),
            kind,
        }
    }

    fn open(dir: &tempfile::TempDir) -> CaStore {
        CaStore::open(&dir.path().join("ca.db")).unwrap()
    }

    fn token(n: u8) -> TokenHash {
        TokenHash([n; 32])
    }

    /// Enrolls `node_id` with a fresh token and certificate `serial_number`.
    fn enroll(store: &CaStore, node_id: NodeId, token_byte: u8, serial_number: u16) {
        store
            .insert_token(&token(token_byte), ts(0), ts(10_000), None)
            .unwrap();
        store
            .redeem_token(
                &token(token_byte),
                ts(500),
                &record(node_id, serial_number, IssueKind::Enroll),
            )
            .unwrap();
    }

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CaStore>();
    }

    #[test]
    fn data_survives_reopen_and_journal_is_wal() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let store = open(&dir);
            store.set_meta("trust_domain", "example.mesh").unwrap();
            enroll(&store, node(1), 1, 1);
            store
                .revoke(
                    &RevokeTarget::Serial(serial(1)),
                    RevocationReason::Superseded,
                    ts(600),
                )
                .unwrap();
        }
        let store = open(&dir);
        assert_eq!(
            store.meta("trust_domain").unwrap().as_deref(),
            Some("example.mesh")
        );
        assert_eq!(store.meta("missing").unwrap(), None);
        assert_eq!(
            store.certificates().unwrap(),
            vec![record(node(1), 1, IssueKind::Enroll)]
        );
        assert_eq!(store.crl_number().unwrap(), 1);
        assert_eq!(
            store.revoked_entries().unwrap(),
            vec![RevokedEntry {
                serial: serial(1),
                revoked_at: ts(600),
                reason: RevocationReason::Superseded
            }]
        );
        let conn = lock(&store.connection);
        let durable = ztmesh_runtime::sqlite::durable_version(&conn).unwrap();
        assert_eq!(durable, Some(SCHEMA.supported_version()));
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        drop(open(&dir));
        Connection::open(dir.path().join("ca.db"))
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        match CaStore::open(&dir.path().join("ca.db")) {
            Err(StoreError::SchemaTooNew {
                found: 99,
                supported,
            }) => assert_eq!(supported, SCHEMA.supported_version()),
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }

    #[test]
    fn token_info_tracks_use() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(store.token_info(&token(9)).unwrap(), None);
        store
            .insert_token(&token(9), ts(5), ts(10_000), Some(node(3)))
            .unwrap();
        let info = TokenInfo {
            created_at: ts(5),
            expires_at: ts(10_000),
            node_id: Some(node(3)),
            used_at: None,
        };
        assert_eq!(store.token_info(&token(9)).unwrap(), Some(info.clone()));
        store
            .redeem_token(&token(9), ts(700), &record(node(3), 1, IssueKind::Enroll))
            .unwrap();
        assert_eq!(
            store.token_info(&token(9)).unwrap(),
            Some(TokenInfo {
                used_at: Some(ts(700)),
                ..info
            })
        );
        // A second insert of the same hash must not reset the used token.
        assert!(store
            .insert_token(&token(9), ts(5), ts(10_000), None)
            .is_err());
    }

    fn assert_one_winner(results: Vec<Result<(), RedeemError>>, store: &CaStore) {
        let wins = results.iter().filter(|r| r.is_ok()).count();
        let already_used = results
            .iter()
            .filter(|r| matches!(r, Err(RedeemError::AlreadyUsed)))
            .count();
        assert_eq!((wins, already_used), (1, 31), "{results:?}");
        assert_eq!(store.certificates().unwrap().len(), 1);
        assert!(store
            .token_info(&token(1))
            .unwrap()
            .unwrap()
            .used_at
            .is_some());
    }

    #[test]
    fn token_race_in_one_handle_has_exactly_one_winner() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Arc::new(open(&dir));
        store
            .insert_token(&token(1), ts(0), ts(10_000), None)
            .unwrap();
        let barrier = Arc::new(Barrier::new(32));
        let started = Instant::now();
        let handles: Vec<_> = (0..32u16)
            .map(|i| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    store.redeem_token(
                        &token(1),
                        ts(500),
                        &record(node(i as u8 + 1), i + 1, IssueKind::Enroll),
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        eprintln!("32 redeems, one handle: {:?}", started.elapsed());
        assert_one_winner(results, &store);
    }

    #[test]
    fn token_race_across_connections_has_exactly_one_winner() {
        let dir = tempfile::TempDir::new().unwrap();
        let setup = open(&dir);
        setup
            .insert_token(&token(1), ts(0), ts(10_000), None)
            .unwrap();
        // 32 independent connections: only SQLite's write lock orders them.
        let stores: Vec<CaStore> = (0..32).map(|_| open(&dir)).collect();
        let barrier = Arc::new(Barrier::new(32));
        let started = Instant::now();
        let handles: Vec<_> = stores
            .into_iter()
            .zip(0..32u16)
            .map(|(store, i)| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    store.redeem_token(
                        &token(1),
                        ts(500),
                        &record(node(i as u8 + 1), i + 1, IssueKind::Enroll),
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        eprintln!("32 redeems, 32 connections: {:?}", started.elapsed());
        assert_one_winner(results, &setup);
    }

    #[test]
    fn refused_tokens_change_nothing() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        let rec = record(node(1), 1, IssueKind::Enroll);

        assert!(matches!(
            store.redeem_token(&token(7), ts(1), &rec),
            Err(RedeemError::Unknown)
        ));

        store
            .insert_token(&token(1), ts(0), ts(1_000), None)
            .unwrap();
        assert!(matches!(
            store.redeem_token(&token(1), ts(1_000), &rec),
            Err(RedeemError::Expired)
        ));

        store
            .insert_token(&token(2), ts(0), ts(10_000), Some(node(2)))
            .unwrap();
        assert!(matches!(
            store.redeem_token(&token(2), ts(1), &rec),
            Err(RedeemError::WrongNode)
        ));

        // Revoke node 3, then try to re-enroll it with a fresh token.
        enroll(&store, node(3), 3, 30);
        store
            .revoke(
                &RevokeTarget::Node(node(3)),
                RevocationReason::KeyCompromise,
                ts(600),
            )
            .unwrap();
        store
            .insert_token(&token(4), ts(0), ts(10_000), None)
            .unwrap();
        assert!(matches!(
            store.redeem_token(&token(4), ts(700), &record(node(3), 31, IssueKind::Enroll)),
            Err(RedeemError::NodeRevoked)
        ));

        for refused in [1, 2, 4] {
            assert_eq!(
                store.token_info(&token(refused)).unwrap().unwrap().used_at,
                None,
                "token {refused} must stay unused"
            );
        }
        assert_eq!(store.certificates().unwrap().len(), 1);
        // The refused tokens still work for the right caller.
        store
            .redeem_token(&token(2), ts(1), &record(node(2), 2, IssueKind::Enroll))
            .unwrap();
        store.redeem_token(&token(4), ts(700), &rec).unwrap();
    }

    #[test]
    fn duplicate_serial_rolls_back_token_use() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        enroll(&store, node(1), 1, 1);
        store
            .insert_token(&token(2), ts(0), ts(10_000), None)
            .unwrap();
        assert!(matches!(
            store.redeem_token(&token(2), ts(1), &record(node(2), 1, IssueKind::Enroll)),
            Err(RedeemError::Store(StoreError::Sqlite(_)))
        ));
        assert_eq!(store.token_info(&token(2)).unwrap().unwrap().used_at, None);
    }

    #[test]
    fn revoking_a_node_revokes_all_its_certificates_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(store.crl_number().unwrap(), 0);
        enroll(&store, node(1), 1, 1);
        enroll(&store, node(2), 2, 2);
        store
            .record_rotation(&serial(1), &record(node(1), 3, IssueKind::Rotate))
            .unwrap();
        // A certificate already expired long ago is revoked too.
        let mut old = record(node(1), 4, IssueKind::Rotate);
        old.not_after = ts(2);
        store.record_rotation(&serial(3), &old).unwrap();

        let outcome = store
            .revoke(
                &RevokeTarget::Node(node(1)),
                RevocationReason::KeyCompromise,
                ts(900),
            )
            .unwrap();
        assert_eq!(outcome.newly_revoked, vec![serial(1), serial(3), serial(4)]);
        assert_eq!(outcome.crl_number, 1);
        assert_eq!(outcome.entries.len(), 3);
        assert!(outcome
            .entries
            .iter()
            .all(|e| e.reason == RevocationReason::KeyCompromise && e.revoked_at == ts(900)));
        assert!(store.is_node_revoked(&node(1)).unwrap());
        assert!(!store.is_node_revoked(&node(2)).unwrap());
        assert!(!store.is_node_revoked(&node(99)).unwrap());

        let again = store
            .revoke(
                &RevokeTarget::Node(node(1)),
                RevocationReason::KeyCompromise,
                ts(950),
            )
            .unwrap();
        assert!(again.newly_revoked.is_empty());
        assert_eq!(again.crl_number, 1);
        assert_eq!(again.entries, outcome.entries);
        let serial_again = store
            .revoke(
                &RevokeTarget::Serial(serial(3)),
                RevocationReason::Unspecified,
                ts(960),
            )
            .unwrap();
        assert!(serial_again.newly_revoked.is_empty());
        assert_eq!(store.crl_number().unwrap(), 1);

        let other = store
            .revoke(
                &RevokeTarget::Serial(serial(2)),
                RevocationReason::CessationOfOperation,
                ts(970),
            )
            .unwrap();
        assert_eq!(other.newly_revoked, vec![serial(2)]);
        assert_eq!(other.crl_number, 2);
        assert_eq!(other.entries.len(), 4);
        assert_eq!(store.revoked_entries().unwrap(), other.entries);
        // Revoking one certificate does not revoke its node.
        assert!(!store.is_node_revoked(&node(2)).unwrap());
    }

    #[test]
    fn an_unknown_serial_alone_is_not_found_and_changes_nothing() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        enroll(&store, node(1), 1, 1);
        assert!(matches!(
            store.revoke(
                &RevokeTarget::Serial(serial(77)),
                RevocationReason::Unspecified,
                ts(1)
            ),
            Err(RevokeError::NotFound)
        ));
        // A known serial given with another node than its owner.
        assert!(matches!(
            store.revoke(
                &RevokeTarget::SerialOf {
                    serial: serial(1),
                    node_id: node(2)
                },
                RevocationReason::Unspecified,
                ts(1)
            ),
            Err(RevokeError::OwnerMismatch { owner, .. }) if owner == node(1)
        ));
        assert_eq!(store.crl_number().unwrap(), 0);
        assert!(store.revoked_entries().unwrap().is_empty());
    }

    #[test]
    fn a_serial_and_a_node_unknown_to_the_database_are_revoked_all_the_same() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        enroll(&store, node(1), 1, 1);
        // A rogue certificate signed with the CA's key outside the database.
        let foreign = RevokeTarget::SerialOf {
            serial: serial(77),
            node_id: node(9),
        };
        let outcome = store
            .revoke(&foreign, RevocationReason::KeyCompromise, ts(10))
            .unwrap();
        assert_eq!(outcome.newly_revoked, vec![serial(77)]);
        assert_eq!(outcome.crl_number, 1);
        assert_eq!(outcome.revoked_node, None);
        assert_eq!(
            store.revoked_entries().unwrap(),
            vec![RevokedEntry {
                serial: serial(77),
                revoked_at: ts(10),
                reason: RevocationReason::KeyCompromise,
            }]
        );
        // Once: again changes nothing.
        let again = store
            .revoke(&foreign, RevocationReason::KeyCompromise, ts(20))
            .unwrap();
        assert!(again.newly_revoked.is_empty());
        assert_eq!(again.crl_number, 1);
        // Its own certificate given with its owner: an ordinary revocation.
        let own = store
            .revoke(
                &RevokeTarget::SerialOf {
                    serial: serial(1),
                    node_id: node(1),
                },
                RevocationReason::Unspecified,
                ts(30),
            )
            .unwrap();
        assert_eq!(own.newly_revoked, vec![serial(1)]);
        assert_eq!(store.revoked_entries().unwrap().len(), 2);

        // A node the database never knew: banned (no certificate to list), the CRL moves on.
        let stranger = store
            .revoke(
                &RevokeTarget::Node(node(8)),
                RevocationReason::Unspecified,
                ts(40),
            )
            .unwrap();
        assert!(stranger.newly_revoked.is_empty());
        assert_eq!(stranger.revoked_node, Some(node(8)));
        assert_eq!(stranger.crl_number, 3);
        assert!(store.is_node_revoked(&node(8)).unwrap());
    }

    #[test]
    fn rotation_is_refused_after_revocation_or_for_foreign_certificates() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        enroll(&store, node(1), 1, 1);
        enroll(&store, node(2), 2, 2);

        assert!(matches!(
            store.record_rotation(&serial(50), &record(node(1), 10, IssueKind::Rotate)),
            Err(RotateError::UnknownCertificate)
        ));
        // Node 1 presenting node 2's certificate.
        assert!(matches!(
            store.record_rotation(&serial(2), &record(node(1), 10, IssueKind::Rotate)),
            Err(RotateError::UnknownCertificate)
        ));

        store
            .revoke(
                &RevokeTarget::Serial(serial(2)),
                RevocationReason::Superseded,
                ts(600),
            )
            .unwrap();
        assert!(matches!(
            store.record_rotation(&serial(2), &record(node(2), 11, IssueKind::Rotate)),
            Err(RotateError::CertificateRevoked)
        ));

        store
            .revoke(
                &RevokeTarget::Node(node(1)),
                RevocationReason::KeyCompromise,
                ts(700),
            )
            .unwrap();
        assert!(matches!(
            store.record_rotation(&serial(1), &record(node(1), 12, IssueKind::Rotate)),
            Err(RotateError::NodeRevoked)
        ));
        assert_eq!(store.certificates().unwrap().len(), 2);
        assert_eq!(store.certificate(&serial(12)).unwrap(), None);
        assert_eq!(
            store.certificate(&serial(1)).unwrap(),
            Some(record(node(1), 1, IssueKind::Enroll))
        );
    }

    #[test]
    fn certificates_are_listed_oldest_first() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        enroll(&store, node(1), 1, 5);
        store
            .record_rotation(&serial(5), &record(node(1), 9, IssueKind::Rotate))
            .unwrap();
        enroll(&store, node(2), 2, 7);
        let kinds: Vec<_> = store
            .certificates()
            .unwrap()
            .into_iter()
            .map(|r| (r.serial, r.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (serial(5), IssueKind::Enroll),
                (serial(7), IssueKind::Enroll),
                (serial(9), IssueKind::Rotate)
            ]
        );
    }

    #[test]
    fn crl_numbers_only_move_forward() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(store.latest_crl().unwrap(), None);
        assert_eq!(store.next_crl_number().unwrap(), 1);
        store.save_crl(1, b"crl-1", ts(10), ts(20)).unwrap();
        store.save_crl(3, b"crl-3", ts(30), ts(40)).unwrap();
        store.save_crl(2, b"crl-2", ts(50), ts(60)).unwrap();
        store.save_crl(3, b"crl-3b", ts(50), ts(60)).unwrap();
        assert_eq!(
            store.latest_crl().unwrap(),
            Some((3, b"crl-3".to_vec(), ts(30), ts(40)))
        );
        // Saving number 3 raised the counter, so the next revocation signs number 4.
        assert_eq!(store.crl_number().unwrap(), 3);
        enroll(&store, node(1), 1, 1);
        let outcome = store
            .revoke(
                &RevokeTarget::Serial(serial(1)),
                RevocationReason::Unspecified,
                ts(600),
            )
            .unwrap();
        assert_eq!(outcome.crl_number, 4);
        assert_eq!(store.next_crl_number().unwrap(), 5);
        assert_eq!(store.crl_number().unwrap(), 5);
    }

    #[test]
    fn attested_nodes_and_governed_decisions_persist() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        for n in 1..=3u8 {
            store.announce(&node(n), None, None, ts(1)).unwrap();
        }
        store.record_attested(&node(1), ts(10_000)).unwrap();
        store.record_attested(&node(2), ts(50_000)).unwrap();
        store.record_attested(&node(3), ts(60_000)).unwrap();
        // An older issuance never moves the time back.
        store.record_attested(&node(2), ts(20_000)).unwrap();
        let since = |t| store.attested_since(ts(t)).unwrap();
        assert_eq!(since(40_000), [node(2), node(3)].into_iter().collect());
        store
            .revoke(
                &RevokeTarget::Node(node(3)),
                RevocationReason::KeyCompromise,
                ts(70_000),
            )
            .unwrap();
        assert_eq!(since(0), [node(1), node(2)].into_iter().collect());

        assert_eq!(store.governed("cert_lifetime_secs").unwrap(), None);
        assert!(store
            .apply_governed("cert_lifetime_secs", 7200, "p1", ts(80_000))
            .unwrap());
        // The same proposal applies once, even with another value.
        assert!(!store
            .apply_governed("cert_lifetime_secs", 60, "p1", ts(81_000))
            .unwrap());
        drop(store);
        let store = open(&dir);
        let governed = store.governed("cert_lifetime_secs").unwrap().unwrap();
        assert_eq!((governed.value, governed.proposal.as_str()), (7200, "p1"));
        assert_eq!(governed.applied_at, ts(80_000));
        assert!(store
            .apply_governed("cert_lifetime_secs", 600, "p2", ts(90_000))
            .unwrap());
        assert_eq!(
            store.governed("cert_lifetime_secs").unwrap().unwrap().value,
            600
        );
        assert_eq!(store.governed_applied(10).unwrap(), ["p2", "p1"]);
        assert_eq!(store.governed_applied(1).unwrap(), ["p2"]);
        assert_eq!(store.attested_since(ts(0)).unwrap().len(), 2);
    }

    #[test]
    fn known_nodes_are_bounded_recent_first_and_exclude_revoked() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        for n in 1..=10u8 {
            store
                .announce(
                    &node(n),
                    Some(&format!("10.0.0.{n}:7000")),
                    None,
                    ts(u64::from(n) * 10_000),
                )
                .unwrap();
        }
        let listed = store.known_nodes(3).unwrap();
        assert_eq!(
            listed.iter().map(|k| k.node_id).collect::<Vec<_>>(),
            vec![node(10), node(9), node(8)]
        );
        assert_eq!(listed[0].mesh_addr.as_deref(), Some("10.0.0.10:7000"));
        assert_eq!(listed[0].last_seen, ts(100_000));
        assert!(store.known_nodes(0).unwrap().is_empty());
        assert_eq!(store.known_nodes(usize::MAX).unwrap().len(), 10);

        store
            .revoke(
                &RevokeTarget::Node(node(10)),
                RevocationReason::CessationOfOperation,
                ts(1),
            )
            .unwrap();
        store
            .announce(&node(9), None, Some("10.0.0.9:8443"), ts(200_000))
            .unwrap();
        let listed = store.known_nodes(2).unwrap();
        assert_eq!(listed[0].node_id, node(9));
        assert_eq!(listed[0].mesh_addr, None);
        assert_eq!(listed[0].api_addr.as_deref(), Some("10.0.0.9:8443"));
        assert_eq!(listed[1].node_id, node(8));
    }

    #[test]
    fn corrupt_rows_are_errors_not_panics() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        enroll(&store, node(1), 1, 1);
        {
            let conn = lock(&store.connection);
            conn.execute("PRAGMA foreign_keys = OFF", []).unwrap();
            conn.execute(
                "UPDATE certificates SET node_id = 'NOT-A-NODE', issued_at = -3",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO revocations (serial, revoked_at, reason) VALUES (x'01', 1, 'bogus')",
                [],
            )
            .unwrap();
        }
        assert!(matches!(store.certificates(), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            store.certificate(&serial(1)),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.revoked_entries(),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn revocation_reasons_round_trip_as_text() {
        for reason in [
            RevocationReason::Unspecified,
            RevocationReason::KeyCompromise,
            RevocationReason::CessationOfOperation,
            RevocationReason::Superseded,
        ] {
            let text = reason_to_sql(reason).unwrap();
            assert_eq!(reason_from_sql(&text).unwrap(), reason);
        }
        assert_eq!(
            reason_to_sql(RevocationReason::KeyCompromise).unwrap(),
            "key_compromise"
        );
    }

    fn tpm2_key(n: u8) -> Tpm2KeyRegistration {
        Tpm2KeyRegistration {
            ak_pem: format!("-----BEGIN PUBLIC KEY-----\nAK{n}\n-----END PUBLIC KEY-----\n"),
            ek_name_hex: format!("000b{}", hex::encode([n; 32])),
        }
    }

    #[test]
    fn tpm2_key_is_registered_with_the_enrollment_and_survives_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let store = open(&dir);
            store
                .insert_token(&token(1), ts(0), ts(10_000), None)
                .unwrap();
            store
                .redeem_token_registering(
                    &token(1),
                    ts(2_000),
                    &record(node(1), 1, IssueKind::Enroll),
                    Some(&tpm2_key(1)),
                )
                .unwrap();
            // Enrolled without a TPM key: nothing registered.
            enroll(&store, node(2), 2, 2);
        }
        let store = open(&dir);
        assert_eq!(
            store.tpm2_attestation_key(&node(1)).unwrap(),
            Some(RegisteredTpm2Key {
                key: tpm2_key(1),
                registered_at: ts(2_000),
            })
        );
        assert_eq!(store.tpm2_attestation_key(&node(2)).unwrap(), None);
        assert_eq!(store.tpm2_attestation_key(&node(3)).unwrap(), None);

        // A later enrollment of the same node with another activated key replaces it.
        store
            .insert_token(&token(3), ts(0), ts(10_000), None)
            .unwrap();
        store
            .redeem_token_registering(
                &token(3),
                ts(3_000),
                &record(node(1), 3, IssueKind::Enroll),
                Some(&tpm2_key(3)),
            )
            .unwrap();
        assert_eq!(
            store.tpm2_attestation_key(&node(1)).unwrap().unwrap().key,
            tpm2_key(3)
        );
    }

    #[test]
    fn a_refused_enrollment_registers_no_tpm2_key() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open(&dir);
        enroll(&store, node(1), 1, 1);
        // The token is spent: the redemption and the registration fail together.
        let refused = store.redeem_token_registering(
            &token(1),
            ts(600),
            &record(node(2), 2, IssueKind::Enroll),
            Some(&tpm2_key(2)),
        );
        assert!(matches!(refused, Err(RedeemError::AlreadyUsed)));
        assert_eq!(store.tpm2_attestation_key(&node(2)).unwrap(), None);
        // Any failure of the enrollment (here a duplicate serial) leaves nothing registered.
        store
            .insert_token(&token(2), ts(0), ts(10_000), None)
            .unwrap();
        let duplicate = store.redeem_token_registering(
            &token(2),
            ts(700),
            &record(node(2), 1, IssueKind::Enroll),
            Some(&tpm2_key(2)),
        );
        assert!(duplicate.is_err());
        assert_eq!(store.tpm2_attestation_key(&node(2)).unwrap(), None);
        // A malformed EK name is refused by the schema, and rolls the enrollment back.
        let bad = Tpm2KeyRegistration {
            ek_name_hex: "not hex".into(),
            ..tpm2_key(2)
        };
        assert!(store
            .redeem_token_registering(
                &token(2),
                ts(800),
                &record(node(2), 2, IssueKind::Enroll),
                Some(&bad),
            )
            .is_err());
        assert!(store.certificate(&serial(2)).unwrap().is_none());
        assert_eq!(store.token_info(&token(2)).unwrap().unwrap().used_at, None);
    }
}
