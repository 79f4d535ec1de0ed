//! The operator's local deny-list as data: node ids and certificate serials a node refuses
//! whatever the CA says ([`DenySet`]), its wire and file form ([`DenyListResponse`]) and
//! `deny-list.json` (mode 0600, crash-safe). [`MeshTrust`](crate::tls::MeshTrust) holds the
//! set and refuses what it names at every mesh handshake; the node's routes that change it live
//! in the node crate.
//!
//! It only ever removes trust; it must never admit anything.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use ztmesh_core::NodeId;
use ztmesh_pki::Serial;

/// The file in the node's data directory.
pub const DENY_FILE: &str = "deny-list.json";

/// Most entries (nodes and serials together); an operator denying more wants a CA revocation.
pub const MAX_DENIED: usize = 4096;

/// One entry: a node (all its certificates) or one certificate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DenyEntry {
    /// Every certificate naming this node.
    Node(NodeId),
    /// One certificate.
    Serial(Serial),
}

/// Why an entry or a deny-list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DenyError {
    /// Neither a NodeId nor a serial.
    #[error("{0:?} is neither a NodeId (32 base32 characters) nor a certificate serial (hex); prefix with node: or serial: to say which")]
    Malformed(String),
    /// The list holds [`MAX_DENIED`] entries already.
    #[error("the deny-list is full ({MAX_DENIED} entries)")]
    Full,
    /// `deny-list.json` is unreadable or not a deny-list.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl std::str::FromStr for DenyEntry {
    type Err = DenyError;

    /// `node:<NodeId>`, `serial:<hex>`, or bare: a NodeId if it reads as one, else a serial.
    fn from_str(text: &str) -> Result<Self, DenyError> {
        let malformed = || DenyError::Malformed(text.chars().take(80).collect());
        let text = text.trim();
        if let Some(node) = text.strip_prefix("node:") {
            return node.parse().map(DenyEntry::Node).map_err(|_| malformed());
        }
        if let Some(serial) = text.strip_prefix("serial:") {
            return parse_serial(serial).ok_or_else(malformed);
        }
        if let Ok(node) = text.parse::<NodeId>() {
            return Ok(DenyEntry::Node(node));
        }
        parse_serial(text).ok_or_else(malformed)
    }
}

fn parse_serial(text: &str) -> Option<DenyEntry> {
    // The serial's bytes are the entry, whatever the case or colons it was written with.
    Serial::from_hex(text).ok().map(DenyEntry::Serial)
}

impl std::fmt::Display for DenyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenyEntry::Node(node) => write!(f, "{node}"),
            DenyEntry::Serial(serial) => f.write_str(&serial.to_hex()),
        }
    }
}

/// The denied nodes and serials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenySet {
    nodes: BTreeSet<NodeId>,
    serials: BTreeSet<Serial>,
}

/// The wire and file form of a [`DenySet`]: sorted lists of NodeIds and lowercase hex serials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyListResponse {
    /// Denied nodes.
    pub nodes: Vec<String>,
    /// Denied certificate serials, lowercase hex.
    pub serials: Vec<String>,
}

impl DenySet {
    /// Whether a certificate of `node` with `serial` is denied.
    pub fn denies(&self, node: &NodeId, serial: &Serial) -> bool {
        self.nodes.contains(node) || self.serials.contains(serial)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.nodes.len() + self.serials.len()
    }

    /// Whether nothing is denied.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `entry`; returns whether it was new. Refused when full.
    pub fn insert(&mut self, entry: DenyEntry) -> Result<bool, DenyError> {
        if self.contains(&entry) {
            return Ok(false);
        }
        if self.len() >= MAX_DENIED {
            return Err(DenyError::Full);
        }
        Ok(match entry {
            DenyEntry::Node(node) => self.nodes.insert(node),
            DenyEntry::Serial(serial) => self.serials.insert(serial),
        })
    }

    /// Removes `entry`; returns whether it was there.
    pub fn remove(&mut self, entry: &DenyEntry) -> bool {
        match entry {
            DenyEntry::Node(node) => self.nodes.remove(node),
            DenyEntry::Serial(serial) => self.serials.remove(serial),
        }
    }

    /// Whether `entry` is in the set.
    pub fn contains(&self, entry: &DenyEntry) -> bool {
        match entry {
            DenyEntry::Node(node) => self.nodes.contains(node),
            DenyEntry::Serial(serial) => self.serials.contains(serial),
        }
    }

    /// The lists, as the API and the file carry them.
    pub fn to_response(&self) -> DenyListResponse {
        DenyListResponse {
            nodes: self.nodes.iter().map(NodeId::to_string).collect(),
            serials: self.serials.iter().map(Serial::to_hex).collect(),
        }
    }

    /// The set a file or an answer describes; every entry must parse.
    pub fn from_response(lists: &DenyListResponse) -> Result<Self, DenyError> {
        if lists.nodes.len() + lists.serials.len() > MAX_DENIED {
            return Err(DenyError::Full);
        }
        let mut set = DenySet::default();
        for node in &lists.nodes {
            set.insert(format!("node:{node}").parse()?)?;
        }
        for serial in &lists.serials {
            set.insert(format!("serial:{serial}").parse()?)?;
        }
        Ok(set)
    }
}

/// Reads `deny-list.json` from `dir` (empty when absent). A damaged file is an error, not an
/// empty list: starting without the operator's denials would silently trust what they refused.
pub fn load(dir: &Path) -> Result<DenySet, DenyError> {
    let path = dir.join(DENY_FILE);
    let file_error = |reason: String| DenyError::File {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let lists: DenyListResponse =
                serde_json::from_slice(&bytes).map_err(|e| file_error(e.to_string()))?;
            DenySet::from_response(&lists).map_err(|e| file_error(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DenySet::default()),
        Err(e) => Err(file_error(e.to_string())),
    }
}

/// Writes `deny-list.json` in `dir`: mode 0600, synced, renamed into place, directory synced.
pub fn save(dir: &Path, set: &DenySet) -> Result<(), DenyError> {
    let path = dir.join(DENY_FILE);
    let text = serde_json::to_vec_pretty(&set.to_response()).map_err(|e| DenyError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    crate::private_files::write_private_file(&path, &text).map_err(|e| DenyError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// `POST /v1/deny` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRequest {
    /// A NodeId or a certificate serial (hex), optionally prefixed `node:` or `serial:`.
    pub entry: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    #[test]
    fn entries_parse_as_a_node_or_a_serial_and_garbage_is_refused() {
        let id = node(3);
        assert_eq!(id.to_string().parse(), Ok(DenyEntry::Node(id)));
        assert_eq!(format!("node:{id}").parse(), Ok(DenyEntry::Node(id)));
        let serial = Serial::from_bytes(&[0x40, 1, 2, 3]);
        assert_eq!(
            serial.to_hex().parse(),
            Ok(DenyEntry::Serial(serial.clone()))
        );
        assert_eq!(
            format!("serial:{}", serial.to_hex()).parse(),
            Ok(DenyEntry::Serial(serial))
        );
        for garbage in [
            "",
            "node:",
            "serial:",
            "not a node",
            "zz",
            "node:abc",
            "serial:xyz",
            "40010203 ",
            "4001020G",
        ] {
            if garbage == "40010203 " {
                // Surrounding blanks are trimmed, as a shell copy-paste adds them.
                assert!(garbage.parse::<DenyEntry>().is_ok());
                continue;
            }
            assert!(
                matches!(garbage.parse::<DenyEntry>(), Err(DenyError::Malformed(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn the_set_denies_by_node_or_serial_and_is_bounded() {
        let mut set = DenySet::default();
        let serial = Serial::from_bytes(&[0x40, 9]);
        assert!(set.insert(DenyEntry::Node(node(1))).unwrap());
        assert!(!set.insert(DenyEntry::Node(node(1))).unwrap());
        assert!(set.insert(DenyEntry::Serial(serial.clone())).unwrap());
        assert!(set.denies(&node(1), &Serial::from_bytes(&[1])));
        assert!(set.denies(&node(2), &serial));
        assert!(!set.denies(&node(2), &Serial::from_bytes(&[1])));
        assert!(set.remove(&DenyEntry::Node(node(1))));
        assert!(!set.remove(&DenyEntry::Node(node(1))));
        assert_eq!(DenySet::from_response(&set.to_response()), Ok(set.clone()));

        let mut full = DenySet::default();
        for i in 0..MAX_DENIED as u32 {
            let mut bytes = [0u8; 20];
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            full.insert(DenyEntry::Node(NodeId::from_bytes(bytes)))
                .unwrap();
        }
        assert_eq!(full.insert(DenyEntry::Serial(serial)), Err(DenyError::Full));
    }

    #[test]
    fn the_file_is_private_survives_a_reload_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(DenySet::default()));
        let mut set = DenySet::default();
        set.insert(DenyEntry::Node(node(5))).unwrap();
        save(dir.path(), &set).unwrap();
        assert_eq!(load(dir.path()), Ok(set));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DENY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(
            dir.path().join(DENY_FILE),
            b"{\"nodes\": [\"nope\"], \"serials\": []}",
        )
        .unwrap();
        assert!(matches!(load(dir.path()), Err(DenyError::File { .. })));
        std::fs::write(dir.path().join(DENY_FILE), b"garbage").unwrap();
        assert!(matches!(load(dir.path()), Err(DenyError::File { .. })));
    }
}
