//! A node's data directory: its documented files and its configuration.
//!
//! | file | what |
//! |---|---|
//! | `node.toml` | configuration (written by `ztmesh enroll`, editable) |
//! | `identity.key` | identity key, PKCS#8 sealed with the passphrase |
//! | `node.key` | TLS key of the current certificate, sealed likewise |
//! | `node.pem` | current node certificate (PEM) |
//! | `ca.pem` | mesh CA certificate (PEM), pinned at enrollment |
//! | `log-policy.txt` | membership-log tlog-policy, pinned at enrollment with the CA; absent = log not watched |
//! | `state.db` | SQLite: peers, latest CRL, certificate history |
//! | `node.addr.json` | written by `ztmesh run` once listening: bound addresses and pid |
//! | `witness/` | default place of the witness data directory when `[witness]` is enabled |
//!
//! Rotation writes `node.key.new` and `node.pem.new`, then renames the key and then the
//! certificate. If a crash falls between the two renames, start-up finds a key that does not
//! match `node.pem` next to a `node.pem.new` that does, and completes the rename.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ztmesh_core::{NodeId, TrustDomain};
use ztmesh_pki::keyfile::{self, KdfParams, Protection};
use ztmesh_pki::{IdentityKey, PkiError, TlsKeyPair};

use crate::private_files::write_private_file;

/// Node configuration (`node.toml`). Unknown keys are an error, so a typo never silently
/// leaves a default in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (derived from the identity key; checked at start).
    pub node_id: NodeId,
    /// SPIFFE trust domain of the mesh.
    pub trust_domain: TrustDomain,
    /// Base URL of the CA API.
    pub ca_url: String,
    /// Mesh listener address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// HTTPS API listener address.
    #[serde(default = "default_listen")]
    pub api_listen: SocketAddr,
    /// Mesh addresses to dial at start.
    #[serde(default)]
    pub bootstrap_peers: Vec<String>,
    /// Gossip fan-out (used by later protocol layers).
    #[serde(default = "default_fanout")]
    pub gossip_fanout: u32,
    /// Where to fetch the CRL.
    pub crl_url: String,
    /// Heartbeat interval on every link, milliseconds (100..=60000).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// How often to fetch the CRL, seconds (1..=86400).
    #[serde(default = "default_crl_refresh")]
    pub crl_refresh_secs: u64,
    /// Most mesh links kept at once.
    #[serde(default = "default_max_peers")]
    pub max_peers: usize,
    /// Keys are stored unencrypted (only with `--insecure-plaintext-key`).
    #[serde(default)]
    pub insecure_plaintext_key: bool,
    /// How often this node gossips its health report and checks its peers', milliseconds
    /// (100..=3600000). Tier 1 needs 100 checks, so this sets how soon a peer can earn it.
    #[serde(default = "default_health_ms")]
    pub health_interval_ms: u64,
    /// Attestation on links: this node's attester, what it accepts from peers, the pinned
    /// release key and the signed manifest.
    #[serde(default)]
    pub attestation: crate::attestation::AttestationConfig,
    /// Seconds without a membership-log checkpoint meeting the witness quorum (or a
    /// certificate waiting that long past its grace without the log covering it) before the
    /// `log_stalled` alarm is raised (20..=604800).
    #[serde(default = "default_log_stall_secs")]
    pub log_stall_secs: u64,
    /// This node as a witness of its mesh's membership log (off by default; not written
    /// while default).
    #[serde(default, skip_serializing_if = "NodeWitnessConfig::is_default")]
    pub witness: NodeWitnessConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
fn default_fanout() -> u32 {
    3
}
fn default_heartbeat_ms() -> u64 {
    1000
}
fn default_crl_refresh() -> u64 {
    60
}
fn default_health_ms() -> u64 {
    15_000
}
fn default_log_stall_secs() -> u64 {
    crate::log_stall::DEFAULT_STALL_SECS
}
fn default_max_peers() -> usize {
    64
}

impl NodeConfig {
    /// Checks value ranges that the types do not carry.
    pub fn validate(&self) -> Result<(), String> {
        if !(100..=60_000).contains(&self.heartbeat_interval_ms) {
            return Err("heartbeat_interval_ms must be between 100 and 60000".into());
        }
        if !(1..=86_400).contains(&self.crl_refresh_secs) {
            return Err("crl_refresh_secs must be between 1 and 86400".into());
        }
        if !(1..=1024).contains(&self.max_peers) {
            return Err("max_peers must be between 1 and 1024".into());
        }
        if !(100..=3_600_000).contains(&self.health_interval_ms) {
            return Err("health_interval_ms must be between 100 and 3600000".into());
        }
        let stall = crate::log_stall::MIN_STALL_SECS..=crate::log_stall::MAX_STALL_SECS;
        if !stall.contains(&self.log_stall_secs) {
            return Err(format!(
                "log_stall_secs must be between {} and {} (the log-watch loop fetches the CA's checkpoint every 10 s)",
                stall.start(),
                stall.end()
            ));
        }
        self.attestation.validate()?;
        self.witness.validate()?;
        if !self.ca_url.starts_with("https://") {
            return Err("ca_url must be an https:// URL".into());
        }
        Ok(())
    }

    /// Heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }
}

/// Parses and validates the text of a `node.toml`. Pure: [`NodeDir::read_config`] is this
/// over the file's contents; the error is the message an operator sees after the path.
pub fn parse_config(text: &str) -> Result<NodeConfig, String> {
    let config: NodeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    config.validate()?;
    Ok(config)
}

/// Errors reading or writing a node directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeDirError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// `node.toml` is not valid.
    #[error("{path}: {message}")]
    Config {
        /// Which file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Key or certificate problem (a wrong passphrase included).
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The directory holds no enrolled node.
    #[error("{0} holds no enrolled node: run `ztmesh enroll` first")]
    NotEnrolled(PathBuf),
    /// The directory already holds an enrolled node.
    #[error("{0} already holds an enrolled node (refusing to overwrite it)")]
    AlreadyEnrolled(PathBuf),
}

/// Paths and file operations of one node directory.
#[derive(Debug, Clone)]
pub struct NodeDir(pub PathBuf);

impl NodeDir {
    /// `node.toml`.
    pub fn config(&self) -> PathBuf {
        self.0.join("node.toml")
    }
    /// `identity.key`.
    pub fn identity_key(&self) -> PathBuf {
        self.0.join("identity.key")
    }
    /// `node.key`.
    pub fn tls_key(&self) -> PathBuf {
        self.0.join("node.key")
    }
    /// `node.pem`.
    pub fn cert(&self) -> PathBuf {
        self.0.join("node.pem")
    }
    /// `ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.pem")
    }
    /// `state.db`.
    pub fn state_db(&self) -> PathBuf {
        self.0.join("state.db")
    }
    /// `node.addr.json`.
    pub fn addr_file(&self) -> PathBuf {
        self.0.join("node.addr.json")
    }
    /// `log-policy.txt`.
    pub fn log_policy(&self) -> PathBuf {
        self.0.join("log-policy.txt")
    }

    /// Reads `log-policy.txt`; `None` when the node has none.
    pub fn read_log_policy(&self) -> Result<Option<String>, NodeDirError> {
        let path = self.log_policy();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NodeDirError::Io { path, source }),
        }
    }

    /// Writes `log-policy.txt`.
    pub fn write_log_policy(&self, text: &str) -> Result<(), NodeDirError> {
        let path = self.log_policy();
        write_private_file(&path, text.as_bytes()).map_err(Self::io(&path))
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NodeDirError + '_ {
        move |source| NodeDirError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// `api.token`: the bearer credential of local applications (publish, bundles, events).
    pub fn api_token(&self) -> PathBuf {
        self.0.join("api.token")
    }

    /// Reads the local API token, creating it (32 random bytes, mode 0600) when missing. Local
    /// applications use it instead of the node's keys, so they never see key material.
    pub fn ensure_api_token(&self) -> Result<String, NodeDirError> {
        let path = self.api_token();
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(text.trim().to_owned()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(NodeDirError::Io {
                    path,
                    source: error,
                })
            }
        }
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let token = format!(
            "ztl1_{}",
            data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase()
        );
        write_private_file(&path, token.as_bytes()).map_err(Self::io(&path))?;
        Ok(token)
    }

    /// Reads the local API token written by `ztmesh run`.
    pub fn read_api_token(&self) -> Result<String, NodeDirError> {
        let path = self.api_token();
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(Self::io(&path))
    }

    /// Reads and validates `node.toml`.
    pub fn read_config(&self) -> Result<NodeConfig, NodeDirError> {
        let path = self.config();
        if !path.exists() {
            return Err(NodeDirError::NotEnrolled(self.0.clone()));
        }
        let text = std::fs::read_to_string(&path).map_err(Self::io(&path))?;
        parse_config(&text).map_err(|message| NodeDirError::Config { path, message })
    }

    /// Writes `node.toml`.
    pub fn write_config(&self, config: &NodeConfig) -> Result<(), NodeDirError> {
        let path = self.config();
        let text = toml::to_string_pretty(config).map_err(|e| NodeDirError::Config {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_private_file(&path, text.as_bytes()).map_err(Self::io(&path))
    }

    /// Seals and writes a key file.
    pub fn write_key(
        &self,
        path: &Path,
        pkcs8_der: &[u8],
        protection: &Protection<'_>,
    ) -> Result<(), NodeDirError> {
        let sealed = keyfile::seal(
            pkcs8_der,
            protection,
            KdfParams::DEFAULT,
            &mut rand::rngs::OsRng,
        )?;
        write_private_file(path, sealed.as_bytes()).map_err(Self::io(path))
    }

    /// Reads and opens a key file.
    pub fn read_key(
        &self,
        path: &Path,
        protection: &Protection<'_>,
        allow_plaintext: bool,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, NodeDirError> {
        let text = std::fs::read_to_string(path).map_err(Self::io(path))?;
        Ok(keyfile::open(&text, protection, allow_plaintext)?)
    }

    /// Reads the identity key.
    pub fn read_identity(
        &self,
        protection: &Protection<'_>,
        allow_plaintext: bool,
    ) -> Result<IdentityKey, NodeDirError> {
        let der = self.read_key(&self.identity_key(), protection, allow_plaintext)?;
        Ok(IdentityKey::from_pkcs8_der(&der)?)
    }

    /// Reads a PEM certificate file as DER.
    pub fn read_cert(path: &Path) -> Result<Vec<u8>, NodeDirError> {
        let text = std::fs::read_to_string(path).map_err(Self::io(path))?;
        Ok(ztmesh_pki::cert_pem_to_der(&text)?)
    }

    /// Installs a new certificate and its key: `.new` files first, then key and certificate
    /// renamed in that order (see the module docs for crash recovery).
    pub fn install_certificate(
        &self,
        cert_der: &[u8],
        key: &TlsKeyPair,
        protection: &Protection<'_>,
    ) -> Result<(), NodeDirError> {
        let key_new = self.tls_key().with_extension("key.new");
        let cert_new = self.cert().with_extension("pem.new");
        self.write_key(&key_new, &key.to_pkcs8_der(), protection)?;
        write_private_file(&cert_new, ztmesh_pki::cert_der_to_pem(cert_der).as_bytes())
            .map_err(Self::io(&cert_new))?;
        std::fs::rename(&key_new, self.tls_key()).map_err(Self::io(&key_new))?;
        std::fs::rename(&cert_new, self.cert()).map_err(Self::io(&cert_new))?;
        if let Ok(d) = std::fs::File::open(&self.0) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Reads the current TLS key and certificate, finishing an interrupted install first.
    pub fn read_tls(
        &self,
        protection: &Protection<'_>,
        allow_plaintext: bool,
    ) -> Result<(TlsKeyPair, Vec<u8>), NodeDirError> {
        // A running daemon may be installing a rotated certificate (two renames) while this
        // reads, e.g. for `ztmesh status`. Both files are read back to back, before the slow key
        // decryption, and a mismatch is read again (the decryption in between gives the install
        // time to finish) before it is taken for an install interrupted by a crash.
        let mut attempts = 0;
        let key = loop {
            let key_path = self.tls_key();
            let key_text = std::fs::read_to_string(&key_path).map_err(Self::io(&key_path))?;
            let cert_path = self.cert();
            let cert_text = std::fs::read_to_string(&cert_path).map_err(Self::io(&cert_path))?;
            let key = TlsKeyPair::from_pkcs8_der(&keyfile::open(
                &key_text,
                protection,
                allow_plaintext,
            )?)?;
            let cert = ztmesh_pki::cert_pem_to_der(&cert_text)?;
            let parsed = ztmesh_pki::NodeCertificate::parse(&cert)?;
            if parsed.tls_public_key_spki_der == key.public_key_spki_der() {
                return Ok((key, cert));
            }
            attempts += 1;
            if attempts == 3 {
                break key;
            }
        };
        let cert_new = self.cert().with_extension("pem.new");
        if cert_new.exists() {
            let pending = Self::read_cert(&cert_new)?;
            if ztmesh_pki::NodeCertificate::parse(&pending)?.tls_public_key_spki_der
                == key.public_key_spki_der()
            {
                tracing::warn!("completing a certificate installation interrupted by a crash");
                std::fs::rename(&cert_new, self.cert()).map_err(Self::io(&cert_new))?;
                return Ok((key, pending));
            }
        }
        Err(NodeDirError::Config {
            path: self.tls_key(),
            message: "node.key does not match node.pem".into(),
        })
    }
}

/// Bound addresses written to `node.addr.json` once a node listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoundAddrs {
    /// NodeId.
    pub node_id: NodeId,
    /// Mesh listener.
    pub mesh: SocketAddr,
    /// API listener.
    pub api: SocketAddr,
    /// Process id.
    pub pid: u32,
}

/// `[witness]` of `node.toml`. Unknown keys are refused, like everywhere in `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeWitnessConfig {
    /// Serve the witness while the node runs.
    #[serde(default)]
    pub enabled: bool,
    /// Where the plain-HTTP `POST /add-checkpoint` listens; required when enabled, since the
    /// CA's log policy names this address (port 0 picks one; `ztmesh status` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The witness data directory made by `ztmesh witness init`; relative paths are inside
    /// the node directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

/// Refusal of `enabled = true` without `listen`.
pub(crate) const MISSING_LISTEN: &str = "witness.listen is required when witness.enabled = true (the address the CA's log policy names for this witness)";

fn default_data_dir() -> PathBuf {
    PathBuf::from("witness")
}

impl Default for NodeWitnessConfig {
    fn default() -> Self {
        NodeWitnessConfig {
            enabled: false,
            listen: None,
            data_dir: default_data_dir(),
        }
    }
}

impl NodeWitnessConfig {
    /// Whether this is the default (then `node.toml` need not carry the table).
    pub fn is_default(&self) -> bool {
        *self == NodeWitnessConfig::default()
    }

    /// Checks what the types do not carry (no file is read here).
    pub fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("witness.data_dir must not be empty".into());
        }
        if self.enabled && self.listen.is_none() {
            return Err(MISSING_LISTEN.into());
        }
        Ok(())
    }

    /// The witness data directory, relative paths resolved inside `node_dir`.
    pub fn data_dir_in(&self, node_dir: &Path) -> PathBuf {
        if self.data_dir.is_absolute() {
            self.data_dir.clone()
        } else {
            node_dir.join(&self.data_dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use ztmesh_core::Timestamp;
    use ztmesh_pki::{CertificateAuthority, IdentityKey, NodeCertificateRequest, Serial};

    fn issue(ca: &CertificateAuthority, identity: &IdentityKey, key: &TlsKeyPair) -> Vec<u8> {
        let now = Timestamp::from_unix_secs(1_800_000_000);
        let csr = key
            .csr_der(&identity.public().node_id(), ca.trust_domain())
            .unwrap();
        ca.issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr,
            identity_key: &identity.public(),
            serial: Serial::random(&mut rand::rngs::OsRng),
            not_before: now,
            not_after: now.saturating_add(Duration::from_secs(3600)),
        })
        .unwrap()
        .der
    }

    /// A crash between renaming `node.key.new` and `node.pem.new` leaves the new key beside the
    /// old certificate; reading the directory must finish the installation, not fail.
    #[test]
    fn read_tls_completes_an_installation_interrupted_between_the_renames() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        let protection = Protection::InsecurePlaintext;
        let ca = CertificateAuthority::generate(
            "test.ztmesh".parse().unwrap(),
            Timestamp::from_unix_secs(1_700_000_000),
            Duration::from_secs(400 * 86_400 * 10),
        )
        .unwrap();
        let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
        let (old_key, new_key) = (
            TlsKeyPair::generate().unwrap(),
            TlsKeyPair::generate().unwrap(),
        );
        let (old_cert, new_cert) = (
            issue(&ca, &identity, &old_key),
            issue(&ca, &identity, &new_key),
        );
        dir.install_certificate(&old_cert, &old_key, &protection)
            .unwrap();

        // Simulate the crash: both .new files written, only the key renamed.
        dir.write_key(&dir.tls_key(), &new_key.to_pkcs8_der(), &protection)
            .unwrap();
        let pending = dir.cert().with_extension("pem.new");
        std::fs::write(&pending, ztmesh_pki::cert_der_to_pem(&new_cert)).unwrap();

        let (key, cert) = dir.read_tls(&protection, true).unwrap();
        assert_eq!(cert, new_cert);
        assert_eq!(key.public_key_spki_der(), new_key.public_key_spki_der());
        assert!(
            !pending.exists(),
            "the pending certificate was moved into place"
        );
        assert_eq!(NodeDir::read_cert(&dir.cert()).unwrap(), new_cert);
    }

    #[test]
    fn read_tls_refuses_a_key_that_matches_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        let protection = Protection::InsecurePlaintext;
        let ca = CertificateAuthority::generate(
            "test.ztmesh".parse().unwrap(),
            Timestamp::from_unix_secs(1_700_000_000),
            Duration::from_secs(4000 * 86_400),
        )
        .unwrap();
        let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
        let key = TlsKeyPair::generate().unwrap();
        dir.install_certificate(&issue(&ca, &identity, &key), &key, &protection)
            .unwrap();
        let stray = TlsKeyPair::generate().unwrap();
        dir.write_key(&dir.tls_key(), &stray.to_pkcs8_der(), &protection)
            .unwrap();
        assert!(matches!(
            dir.read_tls(&protection, true),
            Err(NodeDirError::Config { .. })
        ));
    }

    #[test]
    fn config_ranges_and_unknown_keys_are_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        let good = "node_id = \"xj4bnp4pahh6uqkbidpf3lrceoyagynd\"\ntrust_domain = \"t.test\"\nca_url = \"https://127.0.0.1:1\"\ncrl_url = \"https://127.0.0.1:1/v1/crl\"\n";
        std::fs::write(dir.config(), good).unwrap();
        assert_eq!(
            dir.read_config().unwrap().log_stall_secs,
            crate::log_stall::DEFAULT_STALL_SECS
        );
        std::fs::write(dir.config(), format!("{good}log_stall_secs = 20\n")).unwrap();
        assert_eq!(dir.read_config().unwrap().log_stall_secs, 20);
        for bad in [
            format!("{good}heartbeat_interval_ms = 5\n"),
            format!("{good}crl_refresh_secs = 0\n"),
            format!("{good}max_peers = 0\n"),
            format!("{good}log_stall_secs = 19\n"),
            format!("{good}log_stall_secs = 604801\n"),
            format!("{good}bogus = 1\n"),
            good.replace("https://127.0.0.1:1\"\ncrl", "http://127.0.0.1:1\"\ncrl"),
            good.replace("xj4b", "XJ4B"),
        ] {
            std::fs::write(dir.config(), &bad).unwrap();
            assert!(
                matches!(dir.read_config(), Err(NodeDirError::Config { .. })),
                "{bad}"
            );
        }
    }
}
