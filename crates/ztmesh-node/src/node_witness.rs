//! A node as a witness of its own mesh's membership log: `[witness]` of `node.toml`.
//!
//! With `enabled = true`, `ztmesh run` serves the C2SP tlog-witness of [`crate::witness_service`]
//! (same route, state database, compare-and-swap and key as `ztmesh witness serve`) beside its
//! mesh links, for one log only: the membership log whose key is the `log` line of the node's
//! pinned `log-policy.txt`. A witness directory that does not trust that key yet is told to, as
//! `ztmesh witness add-log` would; other logs it may trust are ignored by the node.
//!
//! A cosignature tells every member "this history is the one I have seen", so only a node that
//! is itself Tier 1, judged by the same rules it applies to its peers (its own attestation,
//! binary and health), gives one. Every `add-checkpoint` asks the tier gate
//! ([`ztmesh_trust::Action::Witness`]) first; while the node is below Tier 1 the answer is 503
//! with the reason, counted in `status.trust.gate_refusals` and `status.witness`, and the
//! witness state is neither read nor written. What this module must never do: cosign while the
//! node is not Tier 1, or for a log other than the pinned one.
//!
//! The witness key is opened with the node's passphrase (or as plaintext when the node's keys
//! are), so `ztmesh witness init` must be run with the same passphrase.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use ztmesh_core::{NodeId, Timestamp};
use ztmesh_pki::keyfile::Protection;
use ztmesh_tlog::{Policy, Verifier};
use ztmesh_trust::{Action, Gates, TrustBook};

use crate::api_types::NodeWitnessStatus;
use crate::daemon::Node;
use crate::node_dir::{NodeConfig, NodeDir, NodeDirError};
use crate::witness_service::{
    self, CosignGate, TrustedLogs, Witness, WitnessDir, WitnessService, WitnessSetupError,
};

pub use crate::node_dir::NodeWitnessConfig;

/// Why the node's witness cannot start. `ztmesh run` refuses to start rather than run without
/// the witness it was configured to be.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeWitnessError {
    /// `[witness]` is invalid.
    #[error("{0}")]
    Config(String),
    /// `data_dir` holds no witness.
    #[error("witness.data_dir {} holds no witness: run `ztmesh witness init --data-dir {} --name <witness name>` with the node's passphrase", .0.display(), .0.display())]
    NotInitialized(PathBuf),
    /// The node has no pinned log policy, so there is no log to witness.
    #[error("witness.enabled = true, but this node has no pinned log policy ({}): a node witnesses only its mesh's membership log, whose key the policy names; enroll with a CA that serves --log-policy, or set witness.enabled = false", .0.display())]
    NoPolicy(PathBuf),
    /// The pinned policy is unreadable or not one for this mesh's membership log.
    #[error("{}: {message}", .path.display())]
    Policy {
        /// `log-policy.txt`.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The node directory could not be read.
    #[error(transparent)]
    Dir(#[from] NodeDirError),
    /// The witness directory, its key or its listener failed (the reason is included, since
    /// the daemon reports this as one line).
    #[error("witness in {}: {}", .dir.display(), error_chain(.error))]
    Setup {
        /// The witness data directory.
        dir: PathBuf,
        /// What failed (boxed: it is large, and start-up errors are rare).
        error: Box<WitnessSetupError>,
    },
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The node's witness as the status page sees it.
pub(crate) struct NodeWitness {
    listen: SocketAddr,
    witness: Arc<Witness>,
}

/// What the witness task owns: the bound listener and the witness.
pub(crate) struct NodeWitnessTask {
    service: WitnessService,
}

/// The log keys of the mesh's membership log in the pinned policy, by origin.
fn membership_logs(dir: &NodeDir, config: &NodeConfig) -> Result<TrustedLogs, NodeWitnessError> {
    let path = dir.log_policy();
    let text = dir
        .read_log_policy()?
        .ok_or_else(|| NodeWitnessError::NoPolicy(path.clone()))?;
    let policy_error = |message: String| NodeWitnessError::Policy {
        path: path.clone(),
        message,
    };
    // The same check the log watch makes: the policy must name this mesh's log.
    crate::log_watch::parse_log_policy(&text, &config.trust_domain)
        .map_err(|e| policy_error(e.to_string()))?;
    let policy = Policy::parse(&text).map_err(|e| policy_error(e.to_string()))?;
    let origin = crate::membership_log::log_origin(&config.trust_domain);
    let mut logs = TrustedLogs::default();
    for log in policy.logs() {
        if log.verifier.name() == origin && !logs.verifiers(&origin).contains(&log.verifier) {
            logs.insert(&origin, log.verifier.clone());
        }
    }
    Ok(logs)
}

/// Makes the witness in `dir` trust `verifier` for `origin`, unless it already does.
fn ensure_trusted(
    dir: &WitnessDir,
    origin: &str,
    verifier: &Verifier,
) -> Result<(), WitnessSetupError> {
    let config = witness_service::read_config(dir)?;
    let trusted = config
        .trusted_logs()
        .map_err(|source| WitnessSetupError::Config {
            path: dir.config(),
            source,
        })?;
    if trusted.verifiers(origin).contains(verifier) {
        return Ok(());
    }
    let entry = witness_service::add_log(dir, &verifier.to_string(), Some(origin))?;
    tracing::info!(origin = %entry.origin, vkey = %entry.vkey, witness_dir = %dir.0.display(), "witness: now trusting the mesh's membership log (as `ztmesh witness add-log`)");
    Ok(())
}

/// Reads `[witness]` and, when enabled, readies the witness: the pinned policy's membership
/// log trusted (added to `witness.toml` if missing), the key opened with `protection`, the
/// listener bound. `None` when the witness is not enabled.
pub(crate) async fn prepare(
    dir: &NodeDir,
    config: &NodeConfig,
    protection: &Protection<'_>,
) -> Result<Option<(NodeWitness, NodeWitnessTask)>, NodeWitnessError> {
    let settings = &config.witness;
    if !settings.enabled {
        return Ok(None);
    }
    let listen = settings
        .listen
        .ok_or_else(|| NodeWitnessError::Config(crate::node_dir::MISSING_LISTEN.into()))?;
    let witness_dir = WitnessDir(settings.data_dir_in(&dir.0));
    let setup = |error: WitnessSetupError| match error {
        WitnessSetupError::NotInitialized(path) => NodeWitnessError::NotInitialized(path),
        error => NodeWitnessError::Setup {
            dir: witness_dir.0.clone(),
            error: Box::new(error),
        },
    };
    // The directory first: "run witness init" is the most useful thing to say.
    witness_service::read_config(&witness_dir).map_err(setup)?;
    let logs = membership_logs(dir, config)?;
    let origin = crate::membership_log::log_origin(&config.trust_domain);
    for verifier in logs.verifiers(&origin) {
        ensure_trusted(&witness_dir, &origin, verifier).map_err(setup)?;
    }
    let (witness, witness_config) =
        Witness::open(&witness_dir, protection, config.insecure_plaintext_key).map_err(setup)?;
    let ignored = witness_config
        .logs
        .iter()
        .filter(|log| log.origin != origin)
        .count();
    if ignored > 0 {
        tracing::info!(
            ignored,
            "witness: logs other than the mesh's membership log in witness.toml are not witnessed by the node"
        );
    }
    let witness = witness.with_logs(logs);
    let service = WitnessService::bind(witness, listen).await.map_err(setup)?;
    let bound = service.local_addr().map_err(|source| {
        setup(WitnessSetupError::Io {
            path: PathBuf::from(listen.to_string()),
            source,
        })
    })?;
    tracing::info!(listen = %bound, vkey = %service.witness().verifier(), "witness of the membership log: cosigns only while this node is Tier 1");
    Ok(Some((
        NodeWitness {
            listen: bound,
            witness: service.witness().clone(),
        },
        NodeWitnessTask { service },
    )))
}

impl NodeWitnessTask {
    /// Serves until `shutdown`, cosigning only while `node` is Tier 1. The gate holds the node
    /// weakly: connections still open at shutdown must not keep it alive.
    pub(crate) async fn run(
        self,
        node: Weak<Node>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let gate: CosignGate = Arc::new(move || match node.upgrade() {
            Some(node) => node.witness_gate(),
            None => Err("this node is shutting down".into()),
        });
        self.service.run_gated(gate, shutdown).await;
    }
}

/// The gate's decision for `node` at `now`, by the table of [`ztmesh_trust::required_tier`];
/// a refusal is counted in `gates` and worded for the log operator who reads the 503.
pub(crate) fn check_own_tier(
    book: &TrustBook,
    gates: &mut Gates,
    node: &NodeId,
    now: Timestamp,
) -> Result<(), String> {
    gates
        .check(book, node, Action::Witness, now)
        .map_err(|refusal| {
            format!(
                "this node is {} ({}); only Tier 1 nodes witness",
                refusal.tier, refusal.reason
            )
        })
}

impl Node {
    /// Whether this node may cosign now: its own tier, as the trust book judges it.
    pub(crate) fn witness_gate(&self) -> Result<(), String> {
        let tiers = self.tiers();
        check_own_tier(
            &tiers,
            &mut self.gates(),
            &self.node_id,
            crate::timefmt::now(),
        )
    }

    /// `status.witness`: `None` unless `[witness]` is enabled.
    pub(crate) fn witness_status(&self) -> Option<NodeWitnessStatus> {
        let witness = self.witness.as_ref()?;
        Some(NodeWitnessStatus {
            listen: witness.listen.to_string(),
            vkey: witness.witness.verifier().to_string(),
            cosigned: witness.witness.cosigned(),
            refused_not_tier1: self.gates().refusals(Action::Witness),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use axum::body::Body;
    use ed25519_dalek::SigningKey;
    use tower::ServiceExt;
    use ztmesh_tlog::witness::parse_cosignature_response;
    use ztmesh_tlog::{AddCheckpointRequest, Checkpoint, MerkleTree, Note, Signer};
    use ztmesh_trust::{BinaryHash, Platform, Tier, TrustPolicy};

    use super::*;
    use ztmesh_witness::store::WitnessStore;

    const ORIGIN: &str = "test.ztmesh/membership";
    const NODE_TOML: &str = "node_id = \"xj4bnp4pahh6uqkbidpf3lrceoyagynd\"\ntrust_domain = \"test.ztmesh\"\nca_url = \"https://127.0.0.1:1\"\ncrl_url = \"https://127.0.0.1:1/v1/crl\"\ninsecure_plaintext_key = true\n";

    fn log_signer() -> Signer {
        Signer::new(ORIGIN, SigningKey::from_bytes(&[3; 32])).unwrap()
    }

    /// An add-checkpoint body for a log of `size` leaves, from size 0.
    fn body(size: u64) -> (Vec<u8>, Note) {
        let mut tree = MerkleTree::new();
        for i in 0..size {
            tree.append(format!("entry {i}").as_bytes());
        }
        let checkpoint = Checkpoint::new(ORIGIN, size, tree.root_at(size).unwrap()).unwrap();
        let note = Note::sign(&checkpoint.to_string(), &[&log_signer()]).unwrap();
        let body =
            AddCheckpointRequest::new(0, tree.consistency_proof(0, size).unwrap(), note.clone())
                .unwrap()
                .to_body()
                .into_bytes();
        (body, note)
    }

    /// A node directory with `node.toml` = the base config plus `extra`.
    fn node_dir(extra: &str) -> (tempfile::TempDir, NodeDir) {
        let temp = tempfile::tempdir().unwrap();
        let dir = NodeDir(temp.path().to_owned());
        std::fs::write(dir.config(), format!("{NODE_TOML}{extra}")).unwrap();
        (temp, dir)
    }

    fn policy(witness_vkey: &str) -> String {
        format!(
            "log {}\nwitness self {witness_vkey} http://127.0.0.1:1\nquorum self\n",
            log_signer().vkey()
        )
    }

    const ENABLED: &str = "\n[witness]\nenabled = true\nlisten = \"127.0.0.1:0\"\n";

    #[test]
    fn config_defaults_unknown_keys_and_missing_listen() {
        let (_temp, dir) = node_dir("");
        let config = dir.read_config().unwrap();
        assert_eq!(config.witness, NodeWitnessConfig::default());
        assert!(!config.witness.enabled);
        assert_eq!(config.witness.data_dir_in(&dir.0), dir.0.join("witness"));
        // A default table is not written back, so enrolled node.toml files stay as they were.
        dir.write_config(&config).unwrap();
        let written = std::fs::read_to_string(dir.config()).unwrap();
        assert!(!written.contains("[witness]"), "{written}");

        let (_temp, dir) = node_dir(&format!("{ENABLED}data_dir = \"/srv/w\"\n"));
        let config = dir.read_config().unwrap();
        assert!(config.witness.enabled);
        assert_eq!(config.witness.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(config.witness.data_dir_in(&dir.0), PathBuf::from("/srv/w"));
        dir.write_config(&config).unwrap();
        assert_eq!(dir.read_config().unwrap(), config);

        for (bad, expected) in [
            (
                "\n[witness]\nenabled = true\n",
                "witness.listen is required",
            ),
            ("\n[witness]\nenable = true\n", "unknown field `enable`"),
            ("\n[witness]\nenabled = \"yes\"\n", "invalid type"),
            (
                "\n[witness]\nlisten = \"nowhere\"\n",
                "invalid socket address",
            ),
            (
                "\n[witness]\ndata_dir = \"\"\n",
                "witness.data_dir must not be empty",
            ),
        ] {
            let (_temp, dir) = node_dir(bad);
            let error = dir.read_config().unwrap_err().to_string();
            assert!(error.contains(expected), "{bad:?}: {error}");
        }
    }

    #[tokio::test]
    async fn start_errors_say_what_to_do() {
        // Enabled, but the data directory was never initialized.
        let (_temp, dir) = node_dir(ENABLED);
        let config = dir.read_config().unwrap();
        let error = prepare(&dir, &config, &Protection::InsecurePlaintext)
            .await
            .err()
            .unwrap();
        let witness_dir = dir.0.join("witness");
        assert!(
            matches!(error, NodeWitnessError::NotInitialized(_)),
            "{error}"
        );
        assert!(
            error.to_string().contains(&format!(
                "ztmesh witness init --data-dir {}",
                witness_dir.display()
            )),
            "{error}"
        );

        // Initialized, but no pinned policy: nothing to witness.
        witness_service::init_witness(
            &WitnessDir(witness_dir.clone()),
            "node.test/witness",
            &Protection::InsecurePlaintext,
        )
        .unwrap();
        let error = prepare(&dir, &config, &Protection::InsecurePlaintext)
            .await
            .err()
            .unwrap();
        assert!(matches!(error, NodeWitnessError::NoPolicy(_)), "{error}");
        assert!(
            error.to_string().contains("no pinned log policy"),
            "{error}"
        );

        // A policy for another mesh's log.
        let other = Signer::new("other.mesh/membership", SigningKey::from_bytes(&[4; 32])).unwrap();
        dir.write_log_policy(&format!("log {}\n", other.vkey()))
            .unwrap();
        let error = prepare(&dir, &config, &Protection::InsecurePlaintext)
            .await
            .err()
            .unwrap();
        assert!(matches!(error, NodeWitnessError::Policy { .. }), "{error}");

        // Disabled: nothing is read at all.
        let (_temp, dir) = node_dir("");
        let config = dir.read_config().unwrap();
        assert!(prepare(&dir, &config, &Protection::InsecurePlaintext)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn start_trusts_the_pinned_log_once_and_only_it() {
        let (_temp, dir) = node_dir(ENABLED);
        let config = dir.read_config().unwrap();
        let witness_dir = WitnessDir(dir.0.join("witness"));
        let report = witness_service::init_witness(
            &witness_dir,
            "node.test/witness",
            &Protection::InsecurePlaintext,
        )
        .unwrap();
        // The directory also trusts some other log; the node must not witness it.
        let other = Signer::new("other.example/log", SigningKey::from_bytes(&[5; 32])).unwrap();
        witness_service::add_log(&witness_dir, &other.vkey(), None).unwrap();
        dir.write_log_policy(&policy(&report.vkey)).unwrap();

        for _ in 0..2 {
            let (status, task) = prepare(&dir, &config, &Protection::InsecurePlaintext)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(status.witness.verifier().to_string(), report.vkey);
            assert_ne!(status.listen.port(), 0, "the bound address is reported");
            assert_eq!(
                status.witness.logs().verifiers(ORIGIN),
                &[log_signer().verifier()]
            );
            assert!(status
                .witness
                .logs()
                .verifiers("other.example/log")
                .is_empty());
            assert_eq!(status.witness.logs().len(), 1);
            drop(task);
        }
        // Added once, by the first start.
        let logs = witness_service::read_config(&witness_dir).unwrap().logs;
        assert_eq!(
            logs.iter().filter(|l| l.origin == ORIGIN).count(),
            1,
            "{logs:?}"
        );
    }

    async fn post(router: axum::Router, body: Vec<u8>) -> (http::StatusCode, String) {
        let response = router
            .oneshot(
                http::Request::post("/add-checkpoint")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// The gate as the daemon wires it, over a trust book the test drives: below Tier 1 the
    /// witness answers 503 with the reason, counts the refusal and stores nothing; at Tier 1 the
    /// same request is cosigned and stored.
    #[tokio::test]
    async fn only_a_tier1_node_cosigns_and_a_refusal_changes_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let witness_dir = WitnessDir(temp.path().join("witness"));
        witness_service::init_witness(
            &witness_dir,
            "node.test/witness",
            &Protection::InsecurePlaintext,
        )
        .unwrap();
        witness_service::add_log(&witness_dir, &log_signer().vkey(), None).unwrap();
        let (witness, _) =
            Witness::open(&witness_dir, &Protection::InsecurePlaintext, true).unwrap();
        let witness = Arc::new(witness);

        let me = NodeId::from_bytes([1; 20]);
        let now = Timestamp::from_unix_secs(1_800_000_000);
        let mut book = TrustBook::new(TrustPolicy::default()).unwrap();
        book.handle_certificate(
            me,
            Timestamp::from_unix_secs(1_799_990_000),
            now.saturating_add(Duration::from_secs(86_400)),
            now,
        );
        let state = Arc::new(Mutex::new((book, Gates::new())));
        let gate: CosignGate = {
            let state = state.clone();
            Arc::new(move || {
                let (book, gates) = &mut *state.lock().unwrap();
                check_own_tier(book, gates, &me, now)
            })
        };
        let router = witness_service::router(witness.clone(), gate);

        let (request, note) = body(4);
        let (status, text) = post(router.clone(), request.clone()).await;
        assert_eq!(status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            text.starts_with("this node is tier 2 (")
                && text.ends_with("; only Tier 1 nodes witness\n"),
            "{text:?}"
        );
        assert_eq!(state.lock().unwrap().1.refusals(Action::Witness), 1);
        assert_eq!(witness.cosigned(), 0);
        let store = WitnessStore::open(&witness_dir.state_db()).unwrap();
        assert!(store.heads().unwrap().is_empty());

        {
            let (book, _) = &mut *state.lock().unwrap();
            book.handle_verification_success(me, Platform::Tpm2, now);
            book.handle_binary(me, BinaryHash([7; 32]), true, now);
            for _ in 0..100 {
                book.handle_health_check(me, true, now);
            }
            assert_eq!(book.tier(&me, now).0, Tier::Tier1);
        }
        let (status, text) = post(router, request).await;
        assert_eq!(status, http::StatusCode::OK, "{text}");
        let lines = parse_cosignature_response(&text).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(witness.verifier().verify(note.text(), &lines[0]).is_ok());
        assert_eq!(witness.cosigned(), 1);
        assert_eq!(store.head(ORIGIN).unwrap().map(|h| h.size), Some(4));
        assert_eq!(state.lock().unwrap().1.refusals(Action::Witness), 1);
    }
}
