//! The node daemon (`ztmesh run`): mesh links over mutual TLS 1.3, peer exchange, heartbeats,
//! certificate rotation, CRL refresh, and the node's HTTPS API.
//!
//! Task layout (all bounded): one accept loop (a semaphore caps links), one dial loop driven by
//! the sans-IO [`PeerTable`], one task per link (an IO loop over the core's sans-IO
//! [`LinkMachine`]), and one task each for rotation, CRL refresh, CA announcements, the
//! membership-log watch, the writer of peers' addresses and the API server. Shutdown is a watch
//! channel every loop selects on.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zeroize::Zeroizing;
use ztmesh_core::link::{FrameDecoder, LinkMessage, PeerAdvert};
use ztmesh_core::link_budget::LinkRequest;
use ztmesh_core::link_machine::{LinkConfig, LinkEvent, LinkMachine};
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_gossip::kinds::{PeerExchange, RevocationRecord};
use ztmesh_gossip::{GossipError, MessageId, MessageKind, UnsignedMessage};
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::{IdentityKey, NodeCertificate, PkiError, Serial, TlsKeyPair};

use crate::ca_client::{CaClient, ClientError};
use crate::dtn_driver::{Command as DtnCommand, DtnHandle};
use crate::events::{EventHub, NodeEvent};
use crate::gossip_driver::{consequence, gossip_config, Consequence, Drained, GossipDriver};
use crate::log_watch::{LogWatch, LogWatchTask};
use crate::node_dir::{BoundAddrs, NodeConfig, NodeDir, NodeDirError};
use crate::peer_table::{preferred_link, DialTarget, Direction, PeerTable};
use crate::store::NodeStore;
use crate::timefmt::now;
use crate::tls::{CurrentCertificate, MeshTrust, ALPN_MESH};

/// Protocol version sent in Hello.
pub const PROTOCOL_VERSION: u32 = 1;

/// Commands queued to one link task; bounded so a stuck link cannot hoard memory. A gossip
/// frame dropped on a full queue is recovered by anti-entropy; a bundle by its retry.
const LINK_QUEUE: usize = 256;

/// How often a node gossips its own mesh address (peer exchange beyond direct neighbours).
const PEER_ADVERT_INTERVAL: Duration = Duration::from_secs(30);

/// How long a node's own address advertisement stays in the mesh.
const PEER_ADVERT_TTL: Duration = Duration::from_secs(120);

/// Peers whose last health report is remembered.
const MAX_HEALTH_TRACKED: usize = 4096;

/// Bounds of how long a health report stays in the mesh (four report intervals in between).
const HEALTH_TTL_MIN: Duration = Duration::from_secs(2);
const HEALTH_TTL_MAX: Duration = Duration::from_secs(60);

/// Hop limit of messages this node originates.
const GOSSIP_HOP_LIMIT: u8 = 16;

/// Time allowed for a TCP connect plus TLS handshake.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Data directory problem (a wrong passphrase included).
    #[error(transparent)]
    Dir(#[from] NodeDirError),
    /// State database problem.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The revoked nodes or governance decisions in `state.db`, or an earlier version's JSON
    /// file of them, cannot be used.
    #[error(transparent)]
    State(#[from] crate::store::NodeStateError),
    /// Certificate problem.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// TLS configuration problem.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Socket problem.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What failed.
        source: std::io::Error,
    },
    /// CA client set-up.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Inconsistent data directory.
    #[error("{0}")]
    Inconsistent(String),
}

/// Options of `ztmesh run`.
pub struct RunOptions {
    /// The node's data directory.
    pub dir: NodeDir,
    /// Passphrase of the key files; `None` only for plaintext keys.
    pub passphrase: Option<Zeroizing<Vec<u8>>>,
    /// Overrides `listen` of node.toml.
    pub listen: Option<SocketAddr>,
    /// Overrides `api_listen` of node.toml.
    pub api_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
struct CertState {
    serial: Serial,
    not_before: Timestamp,
    not_after: Timestamp,
}

/// Per-link counters, shared between the link task and the API.
#[derive(Debug)]
pub(crate) struct LinkInfo {
    pub id: u64,
    pub direction: Direction,
    pub remote: SocketAddr,
    pub established: Timestamp,
    pub peer_cert: Mutex<(Serial, Timestamp)>,
    pub heartbeats: AtomicU64,
    pub gaps: AtomicU64,
}

struct LinkHandle {
    info: Arc<LinkInfo>,
    commands: mpsc::Sender<LinkCommand>,
}

#[derive(Debug)]
enum LinkCommand {
    Send(LinkMessage),
    Close(&'static str),
}

/// Shared state of a running node.
pub(crate) struct Node {
    pub config: NodeConfig,
    pub node_id: NodeId,
    pub dir: NodeDir,
    pub trust: Arc<MeshTrust>,
    pub current: Arc<CurrentCertificate>,
    cert_state: RwLock<CertState>,
    identity: IdentityKey,
    /// The gossip core and the membership view it verifies origins against.
    pub(crate) gossip: GossipDriver,
    /// Peers' announced listen addresses on their way to `store`, written by one task.
    pub(crate) peer_upserts: crate::peer_upserts::PeerUpserts,
    /// Trust tiers of the peers this node knows (certificates seen on links, health reports).
    pub(crate) tiers: Mutex<ztmesh_trust::TrustBook>,
    /// When each peer's last health report arrived (bounded: cleared when over the cap).
    last_health: Mutex<HashMap<NodeId, Timestamp>>,
    /// This node's attester and its verifier of peers' evidence.
    pub(crate) attestor: crate::attestation::Attestor,
    /// Governance state: proposals, votes, the parameters decided (lock before `tiers`).
    pub(crate) governance: Mutex<ztmesh_trust::Governance>,
    /// The tier gates and their refusal counters.
    pub(crate) gates: Mutex<ztmesh_trust::Gates>,
    /// Health interval decided by governance, milliseconds (0: the configured one).
    pub(crate) health_override_ms: AtomicU64,
    /// Attestation verifications that succeeded / failed (peers and self).
    pub(crate) attestations_ok: AtomicU64,
    pub(crate) attestations_failed: AtomicU64,
    /// This node's attestation token from the CA and the count of refused received ones.
    pub(crate) token: crate::node_token::TokenHolder,
    /// Governance decisions and tier changes on their way to the CA's membership log.
    pub(crate) log_reports: crate::log_report::EventReporter,
    /// The bundle router thread.
    pub(crate) dtn: DtnHandle,
    /// Events for local applications (`GET /v1/events`, `ztmesh watch`).
    pub(crate) events: EventHub,
    /// The membership-log watch: gossiped checkpoints in, status out.
    pub(crate) log_watch: LogWatch,
    /// This node as a witness of the membership log (`[witness]`); `None` when not enabled.
    pub(crate) witness: Option<crate::node_witness::NodeWitness>,
    /// SHA-256 of `api.token`, the bearer credential of local applications.
    pub(crate) api_token_hash: [u8; 32],
    /// Wrong `api.token`s presented: counted (status) and limited per address.
    pub(crate) failed_api_tokens: Mutex<crate::rate_limit::FailedCredentials>,
    passphrase: Option<Zeroizing<Vec<u8>>>,
    links: Mutex<HashMap<NodeId, LinkHandle>>,
    pub table: Mutex<PeerTable>,
    pub store: Arc<NodeStore>,
    ca: CaClient,
    pub rotations: AtomicU64,
    pub self_revoked: AtomicBool,
    /// Serializes changes of the deny-list (file, then [`MeshTrust`], then links).
    deny_lock: tokio::sync::Mutex<()>,
    next_link_id: AtomicU64,
    pub mesh_addr: SocketAddr,
    pub api_addr: SocketAddr,
    connector: TlsConnector,
    link_slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

impl Node {
    fn protection(&self) -> Protection<'_> {
        match &self.passphrase {
            Some(p) => Protection::Passphrase(p),
            None => Protection::InsecurePlaintext,
        }
    }

    pub(crate) fn cert_summary(&self) -> (Serial, Timestamp, Timestamp) {
        let s = self.cert_state.read().unwrap_or_else(|p| p.into_inner());
        (s.serial.clone(), s.not_before, s.not_after)
    }

    pub(crate) fn link_infos(&self) -> HashMap<NodeId, Arc<LinkInfo>> {
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, h)| (*id, h.info.clone()))
            .collect()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, PeerTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies and applies a CRL (pushed by the CA or fetched), persists it, and closes links
    /// to peers it revokes. Returns the serials it newly revokes.
    pub(crate) async fn apply_crl(self: &Arc<Self>, der: &[u8]) -> Result<Vec<Serial>, PkiError> {
        let (crl, newly) = self.trust.apply_crl(der)?;
        let store = self.store.clone();
        let der = der.to_vec();
        let number = crl.number;
        match tokio::task::spawn_blocking(move || store.save_crl(number, &der)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not persist CRL"),
            Err(error) => tracing::warn!(%error, "could not persist CRL"),
        }
        let (own_serial, _, _) = self.cert_summary();
        if self.trust.is_revoked(&own_serial) && !self.self_revoked.swap(true, Ordering::SeqCst) {
            tracing::error!(serial = %own_serial, "this node's certificate is revoked; peers will refuse it");
        }
        self.close_revoked_links();
        if !newly.is_empty() {
            tracing::info!(
                crl_number = number,
                newly_revoked = newly.len(),
                "applied CRL"
            );
        }
        Ok(newly)
    }

    fn close_revoked_links(&self) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for (peer, handle) in links.iter() {
            let serial = handle
                .info
                .peer_cert
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone();
            if self.trust.is_revoked(&serial) {
                tracing::warn!(%peer, %serial, "closing link to revoked peer");
                self.table().handle_revoked(peer);
                let _ = handle.commands.try_send(LinkCommand::Close("peer revoked"));
            }
        }
    }

    pub(crate) fn governance(&self) -> std::sync::MutexGuard<'_, ztmesh_trust::Governance> {
        self.governance.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn gates(&self) -> std::sync::MutexGuard<'_, ztmesh_trust::Gates> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn tiers(&self) -> std::sync::MutexGuard<'_, ztmesh_trust::TrustBook> {
        self.tiers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A peer presented a verified certificate (at handshake or in a rotation update).
    fn record_certificate(&self, peer: NodeId, not_before: Timestamp, not_after: Timestamp) {
        self.tiers()
            .handle_certificate(peer, not_before, not_after, now());
        self.log_tier_changes();
    }

    /// The trust part of `GET /v1/status`.
    pub(crate) fn trust_status(&self) -> crate::api_types::TrustStatus {
        let (tier, reason) = self.tiers().tier(&self.node_id, now());
        let binary = self.attestor.binary_sha256();
        crate::api_types::TrustStatus {
            tier: tier.to_string(),
            tier_reason: reason.to_string(),
            binary_sha256: hex::encode(binary),
            binary_in_manifest: self.attestor.binary_in_manifest(&binary),
            manifest_version: self.attestor.manifest().map(|m| m.version().to_owned()),
            attester: self.attestor.attester().describe().into(),
            dev_attestation_accepted: self.attestor.dev_allowed(),
            attestations_ok: self.attestations_ok.load(Ordering::Relaxed),
            attestations_failed: self.attestations_failed.load(Ordering::Relaxed),
            gate_refusals: {
                let gates = self.gates();
                ztmesh_trust::Action::ALL
                    .into_iter()
                    .map(|a| (a.as_str().to_owned(), gates.refusals(a)))
                    .collect()
            },
            parameters: self.parameter_values(),
            token: self.token.status(),
            log_reports_sent: self.log_reports.counts().0,
            log_reports_dropped: self.log_reports.counts().1,
        }
    }

    /// The client of the CA API (presenting this node's current certificate).
    pub(crate) fn ca(&self) -> &CaClient {
        &self.ca
    }

    /// How often health reports are sent and checked.
    pub(crate) fn health_interval(&self) -> Duration {
        match self.health_override_ms.load(Ordering::SeqCst) {
            0 => Duration::from_millis(self.config.health_interval_ms),
            ms => Duration::from_millis(ms),
        }
    }

    /// The SubjectPublicKeyInfo of this node's current TLS certificate.
    pub(crate) fn own_tls_spki(&self) -> Option<Vec<u8>> {
        NodeCertificate::parse(&self.current.leaf_der())
            .ok()
            .map(|c| c.tls_public_key_spki_der)
    }

    /// Feeds the trust book with the outcome of one attestation exchange with `peer` (or with
    /// this node itself), logging what changed.
    fn record_attestation(
        &self,
        peer: NodeId,
        binary: Option<[u8; 32]>,
        result: Result<crate::attestation::Verified, crate::attestation::LinkAttestError>,
    ) {
        use crate::attestation::LinkAttestError;
        let t = now();
        {
            let mut tiers = self.tiers();
            if let Some(hash) = binary {
                let listed = self.attestor.binary_in_manifest(&hash);
                tiers.handle_binary(peer, ztmesh_trust::BinaryHash(hash), listed, t);
            }
            match result {
                Ok(verified) => {
                    self.attestations_ok.fetch_add(1, Ordering::Relaxed);
                    tiers.handle_verification_success(peer, verified.platform, t);
                    if verified.platform == ztmesh_trust::Platform::Dev {
                        tracing::info!(%peer, "attestation verified: platform dev (SIMULATED TEE, not hardware)");
                    } else {
                        tracing::info!(%peer, platform = %verified.platform, tcb = ?verified.verdict.tcb_status, "attestation verified");
                    }
                }
                Err(LinkAttestError::NoAttester) => {
                    tracing::debug!(%peer, "peer has no attester");
                }
                Err(error) => {
                    self.attestations_failed.fetch_add(1, Ordering::Relaxed);
                    match tiers.handle_verification_failure(peer, t) {
                        ztmesh_trust::VerificationOutcome::Warning { consecutive } => {
                            tracing::warn!(%peer, reason = error.reason(), %error, consecutive, "attestation failed (warning)");
                        }
                        ztmesh_trust::VerificationOutcome::Demoted { consecutive } => {
                            tracing::warn!(%peer, reason = error.reason(), %error, consecutive, "attestation failed: demoted below tier 1");
                        }
                    }
                }
            }
        }
        self.log_tier_changes();
    }

    /// Challenges this node's own attester, so that its own tier is judged by the same rules
    /// as its peers' (the electorate of governance includes the local node).
    async fn attest_self(&self) {
        let Some(spki) = self.own_tls_spki() else {
            return;
        };
        let mut nonce = [0u8; ztmesh_core::link::TEE_NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let secs = now().as_unix_secs();
        let LinkMessage::TeeResponse {
            nonce: echoed,
            evidence_type,
            evidence,
            binary_sha256,
        } = self.attestor.respond(&nonce, &spki, secs).await
        else {
            return;
        };
        let result = self.attestor.verify(
            Some(&nonce),
            &echoed,
            &evidence_type,
            &evidence,
            &binary_sha256,
            &[&spki],
            secs,
        );
        self.record_attestation(self.node_id, Some(self.attestor.binary_sha256()), result);
    }

    /// One health check per linked peer: did its health report arrive within two intervals?
    /// Peers linked for less than that are not judged yet. The node itself passes while it runs.
    fn check_health(&self) {
        let t = now();
        let window = self.health_interval() * 2;
        let links = self.link_infos();
        let last = self
            .last_health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        {
            let mut tiers = self.tiers();
            for (peer, info) in &links {
                if t.duration_since(info.established) < window {
                    continue;
                }
                let ok = last
                    .get(peer)
                    .is_some_and(|at| t.duration_since(*at) <= window);
                tiers.handle_health_check(*peer, ok, t);
            }
            tiers.handle_health_check(self.node_id, true, t);
            tiers.handle_timeout(t);
        }
        self.log_tier_changes();
    }

    fn log_tier_changes(&self) {
        let mut tiers = self.tiers();
        while let Some(change) = tiers.poll_event() {
            tracing::info!(peer = %change.peer, from = %change.from, to = %change.to, reason = %change.reason, "tier change");
            self.log_reports
                .report(crate::api_types::LogEventReport::TierChange {
                    node_id: change.peer.to_string(),
                    tier: change.to.to_string(),
                    reason: crate::log_report::clean_reason(&change.reason.to_string()),
                });
        }
    }

    /// Queues `message` on the link to `peer`, if there is one. A full queue drops it: gossip
    /// recovers by anti-entropy, bundles by their retry.
    pub(crate) fn send_to(&self, peer: &NodeId, message: LinkMessage) -> bool {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        match links.get(peer) {
            Some(handle) => handle.commands.try_send(LinkCommand::Send(message)).is_ok(),
            None => false,
        }
    }

    /// Acts on what the gossip core produced: frames to links, delivered messages to their
    /// consumers.
    pub(crate) fn dispatch_gossip(self: &Arc<Self>, drained: Drained) {
        for transmit in drained.transmits {
            self.send_to(
                &transmit.to,
                LinkMessage::Gossip {
                    frame: transmit.frame,
                },
            );
        }
        for message in drained.delivered {
            match consequence(&message) {
                Consequence::Anomaly(anomaly) => {
                    tracing::info!(id = %anomaly.id, origin = %anomaly.origin, indicator = %anomaly.indicator, score = anomaly.risk_score, "anomaly signature received");
                    self.events.emit(NodeEvent::Anomaly(anomaly));
                }
                Consequence::Revocation(record) => {
                    let node = self.clone();
                    tokio::spawn(async move { node.handle_revocation_record(record).await });
                }
                Consequence::PeerAddress { node, addr } => {
                    if node != self.node_id {
                        self.table().handle_advert(
                            &PeerAdvert {
                                node_id: node,
                                addr,
                            },
                            now(),
                        );
                    }
                }
                Consequence::BundleReceipt { from, bundle_id } => {
                    self.dtn.send(DtnCommand::Receipt { from, bundle_id });
                }
                Consequence::Checkpoint(note) => {
                    self.log_watch.handle_gossip(note);
                }
                Consequence::Health { from } => {
                    if from != self.node_id {
                        let mut last = self.last_health.lock().unwrap_or_else(|p| p.into_inner());
                        if last.len() >= MAX_HEALTH_TRACKED && !last.contains_key(&from) {
                            last.clear();
                        }
                        last.insert(from, now());
                    }
                }
                Consequence::Proposal {
                    id,
                    from,
                    body,
                    created_at,
                } => self.handle_proposal(id, from, body, created_at),
                Consequence::Vote { from, body } => self.handle_vote(from, body),
                Consequence::Nothing => {}
            }
        }
    }

    /// A CA-signed revocation record: its CRL is applied like any other (verified, only if
    /// newer), and each node it names is revoked by id only when that CRL newly lists one of
    /// the node's certificates (known from a link, a verified gossip origin or the log's
    /// `enroll`/`rotate` entries). The record alone proves nothing: whoever holds the CA key
    /// could name anyone with an unchanged CRL and leave no trace. Every other named node is
    /// held, unapplied, until the membership log shows its revocation (see
    /// [`log_audit::NodeRevocationQueue`](crate::log_audit::NodeRevocationQueue)); applied ones
    /// are held to the log too.
    async fn handle_revocation_record(self: Arc<Self>, record: RevocationRecord) {
        // Taken before the CRL is applied, as applying it closes the links it revokes.
        let linked = self.link_serials();
        let newly = match self.apply_crl(&record.crl).await {
            Ok(newly) => newly,
            Err(PkiError::StaleCrl { .. }) => Vec::new(),
            Err(error) => {
                tracing::warn!(%error, "CRL in a CA-signed revocation record not applied");
                Vec::new()
            }
        };
        let mut owners = HashSet::new();
        let mut unknown = Vec::new();
        for serial in &newly {
            let owner = linked
                .iter()
                .find(|(_, linked)| linked == serial)
                .map(|(peer, _)| *peer)
                .or_else(|| self.gossip.owner_of_serial(serial));
            match owner {
                Some(owner) => {
                    owners.insert(owner);
                }
                None => unknown.push(serial.to_hex()),
            }
        }
        if !unknown.is_empty() {
            let store = self.store.clone();
            let found = tokio::task::spawn_blocking(move || {
                unknown
                    .iter()
                    .filter_map(|serial| store.logged_owner(serial).ok().flatten())
                    .filter_map(|owner| owner.parse::<NodeId>().ok())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            owners.extend(found);
        }
        let learnt = now();
        let mut justified = Vec::new();
        for revoked in &record.revoked_nodes {
            if owners.contains(revoked) {
                justified.push(*revoked);
                self.log_watch
                    .handle_node_revocation(*revoked, learnt, true);
            } else if self.tiers().revoked().contains(revoked) {
                // In force already (justified before): nothing to hold.
            } else if self
                .log_watch
                .handle_node_revocation(*revoked, learnt, false)
            {
                tracing::warn!(node = %revoked, crl_number = ?self.trust.crl_state().0, "a CA-signed record revokes this node, but no newer CRL lists any of its certificates; held until the membership log shows the revocation");
            } else {
                tracing::warn!(node = %revoked, "a CA-signed record revokes this node, but no newer CRL lists any of its certificates and this node cannot check the membership log; not applied");
            }
        }
        if justified.is_empty() && !newly.is_empty() {
            // Certificates revoked, no node as a whole: applications still hear of the CRL.
            let (crl_number, _) = self.trust.crl_state();
            self.events.emit(NodeEvent::Revocation {
                nodes: Vec::new(),
                crl_number: crl_number.unwrap_or(0),
            });
        }
        self.apply_node_revocations(&justified);
    }

    /// The certificate serial each live link's peer holds.
    fn link_serials(&self) -> Vec<(NodeId, Serial)> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .iter()
            .map(|(peer, handle)| {
                let serial = handle
                    .info
                    .peer_cert
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .0
                    .clone();
                (*peer, serial)
            })
            .collect()
    }

    /// Revokes `nodes` by id: their gossip is refused and purged, they drop to Untrusted (a
    /// tier change reported to the log), the revocations are recorded in `state.db`, and
    /// links to them close. Only for revocations a newer CRL or the membership log justified.
    pub(crate) fn apply_node_revocations(&self, nodes: &[NodeId]) {
        if nodes.is_empty() {
            return;
        }
        self.gossip.revoke_nodes(nodes);
        let (learnt, capacity) = {
            let mut tiers = self.tiers();
            for revoked in nodes {
                tiers.handle_revoked(*revoked, now());
            }
            // Only these nodes are written (with the time the book keeps for each): another
            // thread's older copy of the whole set can then never take one of them out.
            let learnt: Vec<(NodeId, Timestamp)> = nodes
                .iter()
                .filter_map(|node| tiers.revoked().revoked_at(node).map(|at| (*node, at)))
                .collect();
            (learnt, tiers.policy().max_revoked)
        };
        if let Err(error) = self.store.record_node_revocations(&learnt, capacity, now()) {
            tracing::error!(%error, "could not record the revoked nodes in state.db");
        }
        self.log_tier_changes();
        self.close_links_to(nodes, "peer revoked");
        let (crl_number, _) = self.trust.crl_state();
        tracing::warn!(nodes = ?nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>(), "nodes revoked");
        self.events.emit(NodeEvent::Revocation {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            crl_number: crl_number.unwrap_or(0),
        });
    }

    /// Changes the operator's deny-list with `change`: written to `deny-list.json` first (a
    /// change that is not durable is not applied), then put in force for every handshake, and
    /// links to a peer it now denies are closed. Returns the list in force.
    pub(crate) async fn update_deny(
        &self,
        change: impl FnOnce(&mut crate::deny_list::DenySet) -> Result<(), crate::deny_list::DenyError>,
    ) -> Result<crate::deny_list::DenyListResponse, crate::deny_list::DenyError> {
        let _guard = self.deny_lock.lock().await;
        let mut set = self.trust.denied();
        change(&mut set)?;
        let dir = self.dir.0.clone();
        let saved = set.clone();
        tokio::task::spawn_blocking(move || crate::deny_list::save(&dir, &saved))
            .await
            .map_err(|e| crate::deny_list::DenyError::File {
                path: crate::deny_list::DENY_FILE.into(),
                reason: e.to_string(),
            })??;
        let response = set.to_response();
        self.trust.set_denied(set);
        tracing::warn!(nodes = ?response.nodes, serials = ?response.serials, "deny-list changed");
        let denied: Vec<NodeId> = self
            .link_serials()
            .into_iter()
            .filter(|(peer, serial)| self.trust.is_denied(peer, serial))
            .map(|(peer, _)| peer)
            .collect();
        // Not marked revoked in the peer table: dials keep failing at the handshake while
        // denied, and succeed again once the entry is removed.
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for peer in &denied {
            if let Some(handle) = links.get(peer) {
                tracing::warn!(%peer, "closing link to a denied peer");
                let _ = handle.commands.try_send(LinkCommand::Close("peer denied"));
            }
        }
        Ok(response)
    }

    fn close_links_to(&self, nodes: &[NodeId], reason: &'static str) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for node in nodes {
            if let Some(handle) = links.get(node) {
                self.table().handle_revoked(node);
                let _ = handle.commands.try_send(LinkCommand::Close(reason));
            }
        }
    }

    /// Signs a gossip message of this node (identity key; its current certificate rides along
    /// so receivers many hops away can check it).
    pub(crate) fn sign_gossip(
        &self,
        kind: MessageKind,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, GossipError> {
        let created_at = now();
        UnsignedMessage {
            origin: self.node_id,
            kind,
            body,
            created_at,
            expires_at: created_at.saturating_add(ttl),
            hop_limit: GOSSIP_HOP_LIMIT,
        }
        .sign(Some(self.current.leaf_der()), |tbs| {
            self.identity.sign_envelope(tbs)
        })
    }

    /// Signs and publishes a message of this node.
    pub(crate) fn publish_own(
        self: &Arc<Self>,
        kind: MessageKind,
        body: Vec<u8>,
        ttl: Duration,
    ) -> Result<MessageId, GossipError> {
        let cose = self.sign_gossip(kind, body, ttl)?;
        self.publish_signed(cose)
    }

    /// Publishes an already signed message (own, or submitted over the API).
    pub(crate) fn publish_signed(
        self: &Arc<Self>,
        cose: Vec<u8>,
    ) -> Result<MessageId, GossipError> {
        let (result, drained) = self.gossip.publish(cose, now());
        self.dispatch_gossip(drained);
        result
    }

    fn broadcast(&self, message: LinkMessage) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for handle in links.values() {
            // A full queue means a stuck link; the heartbeat timeout will close it.
            let _ = handle.commands.try_send(LinkCommand::Send(message.clone()));
        }
    }
}

/// Runs a node until `shutdown` resolves. Writes `node.addr.json` once listening.
pub async fn run(
    options: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let dir = options.dir;
    let mut config = dir.read_config()?;
    if let Some(listen) = options.listen {
        config.listen = listen;
    }
    if let Some(api) = options.api_listen {
        config.api_listen = api;
    }
    let allow_plaintext = config.insecure_plaintext_key;
    let protection = match &options.passphrase {
        Some(p) => Protection::Passphrase(p),
        None => Protection::InsecurePlaintext,
    };
    let identity = dir.read_identity(&protection, allow_plaintext)?;
    if identity.public().node_id() != config.node_id {
        return Err(NodeError::Inconsistent(format!(
            "identity.key belongs to {}, but node.toml says {}",
            identity.public().node_id(),
            config.node_id
        )));
    }
    let (tls_key, cert_der) = dir.read_tls(&protection, allow_plaintext)?;
    let ca_der = NodeDir::read_cert(&dir.ca_cert())?;
    let trust = Arc::new(MeshTrust::new(ca_der.clone(), config.trust_domain.clone()));
    // The operator's denials hold from the first handshake on; a damaged file stops the start
    // rather than trusting what the operator refused.
    let denied =
        crate::deny_list::load(&dir.0).map_err(|e| NodeError::Inconsistent(e.to_string()))?;
    if !denied.is_empty() {
        tracing::warn!(
            entries = denied.len(),
            "deny-list loaded from deny-list.json"
        );
    }
    trust.set_denied(denied);
    let store = Arc::new(NodeStore::open(&dir.state_db())?);
    // Data directories of earlier versions: revoked-nodes.json and governance.json move into
    // state.db once, before either is read.
    for import in store.import_legacy_files(&dir.0, now())? {
        tracing::info!(
            file = import.file,
            entries = import.entries,
            imported_now = import.imported_now,
            "kept in state.db from now on"
        );
    }
    if let Some((_, der)) = store.latest_crl()? {
        if let Err(error) = trust.apply_crl(&der) {
            tracing::warn!(%error, "stored CRL not applied");
        }
    }
    let parsed = NodeCertificate::parse(&cert_der)?;
    // The certificate in use is part of this node's history (the enrollment certificate is
    // recorded here, at the first start); the log audit judges entries in its name by it.
    let kind = if store.issuances()?.is_empty() {
        "enroll"
    } else {
        "rotate"
    };
    store.record_issuance(
        &parsed.serial,
        parsed.not_before,
        parsed.not_after,
        kind,
        now(),
    )?;
    let current = Arc::new(CurrentCertificate::new(
        vec![cert_der.clone()],
        &tls_key.to_pkcs8_der(),
    )?);
    let server_config = crate::tls::mesh_server_config(trust.clone(), current.clone())?;
    let client_config = crate::tls::mesh_client_config(trust.clone(), current.clone())?;
    let ca = CaClient::new(&config.ca_url, &ca_der, Some(current.clone()))?;

    let mesh_listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Io {
            what: format!("binding the mesh listener {}", config.listen),
            source,
        })?;
    let api_listener = TcpListener::bind(config.api_listen)
        .await
        .map_err(|source| NodeError::Io {
            what: format!("binding the API listener {}", config.api_listen),
            source,
        })?;
    let mesh_addr = mesh_listener.local_addr().map_err(|source| NodeError::Io {
        what: "mesh listener address".into(),
        source,
    })?;
    let api_addr = api_listener.local_addr().map_err(|source| NodeError::Io {
        what: "API listener address".into(),
        source,
    })?;

    let mut table = PeerTable::new(config.node_id, config.max_peers);
    for addr in &config.bootstrap_peers {
        table.add_bootstrap(addr);
    }
    let t0 = now();
    for peer in store.peers(config.max_peers * 4)? {
        table.handle_advert(
            &PeerAdvert {
                node_id: peer.node_id,
                addr: peer.addr,
            },
            t0,
        );
    }

    // Decisions taken by governance before a restart stay in force.
    let decided = store.governance_decisions()?;
    let mut parameters = ztmesh_trust::Parameters::default();
    let _ = parameters.set(
        ztmesh_trust::Param::GossipFanout,
        u64::from(config.gossip_fanout),
    );
    for (param, value) in &decided {
        parameters
            .set(*param, *value)
            .map_err(|e| NodeError::Inconsistent(format!("state.db: governance: {e}")))?;
        tracing::info!(
            param = param.as_str(),
            value,
            "governance decision in force"
        );
    }
    let governance =
        ztmesh_trust::Governance::new(ztmesh_trust::GovernancePolicy::default(), parameters)
            .map_err(|e| NodeError::Inconsistent(format!("governance: {e}")))?;
    let gossip = GossipDriver::new(
        config.node_id,
        gossip_config(
            parameters.gossip_fanout() as u32,
            parameters.rate_limit_rpm(),
        ),
        trust.clone(),
    )?;
    let api_token = dir.ensure_api_token()?;
    let api_token_hash: [u8; 32] = sha2::Sha256::digest(api_token.as_bytes()).into();

    let (dtn, dtn_commands, router) = crate::dtn_driver::prepare(config.node_id, &dir.state_db())?;
    let (log_watch, log_watch_task) = crate::log_watch::prepare(
        &dir,
        &config.trust_domain,
        store.clone(),
        config.node_id,
        std::time::Duration::from_secs(config.log_stall_secs),
        now().as_unix_secs(),
    )
    .map_err(|e| NodeError::Inconsistent(e.to_string()))?;
    log_watch.handle_certificate(config.node_id, &parsed.serial, parsed.not_before);
    let (witness, witness_task) = crate::node_witness::prepare(&dir, &config, &protection)
        .await
        .map_err(|e| NodeError::Inconsistent(format!("[witness]: {e}")))?
        .unzip();

    let binary_sha256 = crate::attestation::own_binary_sha256().map_err(NodeError::Inconsistent)?;
    let attestor = crate::attestation::Attestor::load(
        &dir.0,
        &config.attestation,
        binary_sha256,
        now().as_unix_secs(),
    )
    .map_err(|e| NodeError::Inconsistent(format!("[attestation]: {e}")))?;
    if attestor.dev_allowed() {
        tracing::warn!("attestation: accepting dev (SIMULATED TEE) evidence toward tier 1; for demos only, this mesh has no hardware-backed tier 1");
    }
    if attestor.attester() == crate::attestation::Attester::Dev {
        tracing::warn!("attestation: answering challenges with the dev (SIMULATED TEE) attester");
    }
    if attestor.manifest().is_none() {
        tracing::info!(
            "attestation: no signed release manifest configured; no peer can reach tier 1"
        );
    }
    tracing::info!(binary_sha256 = %hex::encode(binary_sha256), "own executable");
    let mut revoked: ztmesh_trust::RevokedSet = store.revoked_nodes()?.into_iter().collect();
    if log_watch.is_watched() {
        audit_persisted_revocations(&store, &log_watch, &mut revoked)?;
    }
    let revoked_nodes: Vec<NodeId> = revoked.iter().map(|(node, _)| *node).collect();
    let mut tiers = ztmesh_trust::TrustBook::with_revoked(
        ztmesh_trust::TrustPolicy {
            dev_counts_as_hardware: attestor.dev_allowed(),
            attestation_validity: parameters.attestation_validity(),
            ..ztmesh_trust::TrustPolicy::default()
        },
        revoked,
    )
    .map_err(|e| NodeError::Inconsistent(format!("trust policy: {e}")))?;
    tiers.handle_certificate(config.node_id, parsed.not_before, parsed.not_after, now());

    // Revocations learnt before a restart stay in force in gossip too.
    gossip.revoke_nodes(&revoked_nodes);
    if !revoked_nodes.is_empty() {
        tracing::info!(
            count = revoked_nodes.len(),
            "revoked nodes reloaded from state.db"
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let node = Arc::new(Node {
        tiers: Mutex::new(tiers),
        last_health: Mutex::new(HashMap::new()),
        attestor,
        governance: Mutex::new(governance),
        gates: Mutex::new(ztmesh_trust::Gates::new()),
        health_override_ms: AtomicU64::new(
            if decided.contains_key(&ztmesh_trust::Param::HealthCheckIntervalSecs) {
                u64::try_from(parameters.health_check_interval().as_millis()).unwrap_or(u64::MAX)
            } else {
                0
            },
        ),
        attestations_ok: AtomicU64::new(0),
        attestations_failed: AtomicU64::new(0),
        token: Default::default(),
        log_reports: Default::default(),
        dtn,
        gossip,
        peer_upserts: Default::default(),
        events: EventHub::default(),
        log_watch,
        witness,
        api_token_hash,
        failed_api_tokens: Mutex::default(),
        node_id: config.node_id,
        link_slots: Arc::new(Semaphore::new(config.max_peers)),
        config,
        dir: dir.clone(),
        trust,
        current,
        cert_state: RwLock::new(CertState {
            serial: parsed.serial.clone(),
            not_before: parsed.not_before,
            not_after: parsed.not_after,
        }),
        identity,
        passphrase: options.passphrase,
        links: Mutex::new(HashMap::new()),
        table: Mutex::new(table),
        store,
        ca,
        rotations: AtomicU64::new(0),
        self_revoked: AtomicBool::new(false),
        deny_lock: tokio::sync::Mutex::new(()),
        next_link_id: AtomicU64::new(1),
        mesh_addr,
        api_addr,
        connector: TlsConnector::from(client_config),
        shutdown: shutdown_rx,
    });
    if node.trust.is_revoked(&parsed.serial) {
        node.self_revoked.store(true, Ordering::SeqCst);
        tracing::error!("this node's certificate is revoked");
    }

    crate::dtn_driver::start(Arc::downgrade(&node), dtn_commands, router).map_err(|source| {
        NodeError::Io {
            what: "starting the bundle router thread".into(),
            source,
        }
    })?;

    let api_tls = crate::tls::api_server_config(node.trust.clone(), node.current.clone())?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(accept_loop(node.clone(), mesh_listener, server_config));
    tasks.spawn(dial_loop(node.clone()));
    tasks.spawn(rotation_loop(node.clone()));
    tasks.spawn(crate::node_token::token_loop(node.clone()));
    tasks.spawn(crate::log_report::report_loop(node.clone()));
    tasks.spawn(crl_loop(node.clone()));
    tasks.spawn(announce_loop(node.clone()));
    tasks.spawn(gossip_loop(node.clone()));
    tasks.spawn(advert_loop(node.clone()));
    {
        let node = node.clone();
        let mut stop = node.shutdown.clone();
        tasks.spawn(async move {
            let store = node.store.clone();
            let write = move |batch: Vec<crate::peer_upserts::PeerUpsert>| {
                for (peer, addr, at) in batch {
                    if let Err(error) = store.upsert_peer(&peer, &addr, at) {
                        tracing::debug!(%peer, %error, "could not record a peer's address");
                    }
                }
            };
            node.peer_upserts
                .run(write, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
    }
    if let Some(task) = log_watch_task {
        tasks.spawn(log_watch_loop(node.clone(), task));
    } else {
        tracing::info!("no log-policy.txt: the membership log is not watched");
    }
    if let Some(task) = witness_task {
        let mut stop = node.shutdown.clone();
        tasks.spawn(task.run(Arc::downgrade(&node), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    {
        let node = node.clone();
        let mut stop = node.shutdown.clone();
        tasks.spawn(async move {
            let router = crate::node_api::router(node.clone());
            let members = Arc::new(crate::https::MeshMembers::new(node.trust.clone()));
            crate::https::serve(api_listener, api_tls, members, router, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        });
    }

    let addrs = BoundAddrs {
        node_id: node.node_id,
        mesh: mesh_addr,
        api: api_addr,
        pid: std::process::id(),
    };
    let text = serde_json::to_vec_pretty(&addrs).unwrap_or_default();
    crate::private_files::write_private_file(&dir.addr_file(), &text).map_err(|source| {
        NodeError::Io {
            what: "writing node.addr.json".into(),
            source,
        }
    })?;
    tracing::info!(node = %node.node_id, mesh = %mesh_addr, api = %api_addr, "node running");

    shutdown.await;
    let _ = shutdown_tx.send(true);
    node.broadcast_close();
    tasks.shutdown().await;
    Ok(())
}

impl Node {
    fn broadcast_close(&self) {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for handle in links.values() {
            let _ = handle
                .commands
                .try_send(LinkCommand::Close("shutting down"));
        }
    }
}

async fn accept_loop(node: Arc<Node>, listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(config);
    let mut stop = node.shutdown.clone();
    loop {
        let permit = tokio::select! {
            _ = stopped(&mut stop) => return,
            p = node.link_slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, remote) = tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "mesh accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(DIAL_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::info!(%remote, %error, "mesh handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "mesh handshake timed out");
                    return;
                }
            };
            let (_, session) = tls.get_ref();
            // rustls refuses a client that offers only other protocols; one that offers
            // none completes the handshake, so the protocol is required here, before any frame.
            if session.alpn_protocol() != Some(ALPN_MESH) {
                tracing::info!(%remote, "mesh link refused: client did not negotiate ALPN ztmesh/1");
                return;
            }
            let Some(peer_der) = session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec())
            else {
                return;
            };
            let peer = match node.trust.verify_peer(&peer_der, now()) {
                Ok(peer) => peer,
                Err(error) => {
                    tracing::info!(%remote, %error, "mesh link refused");
                    return;
                }
            };
            run_link(node, tls, peer, Direction::Inbound, remote, None).await;
        });
    }
}

async fn dial_loop(node: Arc<Node>) {
    let mut stop = node.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        if node.self_revoked.load(Ordering::SeqCst) {
            continue;
        }
        let targets = node.table().poll_dials(now());
        for target in targets {
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(error) = dial(node.clone(), &target).await {
                    tracing::debug!(addr = %target.addr, %error, "dial failed");
                    node.table().handle_dial_failed(&target, now());
                }
            });
        }
    }
}

async fn dial(node: Arc<Node>, target: &DialTarget) -> Result<(), String> {
    let Ok(permit) = node.link_slots.clone().try_acquire_owned() else {
        return Err("link limit reached".into());
    };
    let remote: SocketAddr = match target.addr.parse() {
        Ok(a) => a,
        Err(_) => tokio::net::lookup_host(&target.addr)
            .await
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("address did not resolve")?,
    };
    if remote == node.mesh_addr {
        return Err("refusing to dial our own listener".into());
    }
    // Mesh certificates carry no DNS names (peers are identified by NodeId), but TLS needs a
    // server name to send: the expected NodeId when known.
    let name = target
        .expected
        .map(|id| id.to_string())
        .unwrap_or_else(|| "mesh.ztmesh.invalid".into());
    let server_name = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = TcpStream::connect(remote)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        node.connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| e.to_string())
    };
    let tls = tokio::time::timeout(DIAL_TIMEOUT, connect)
        .await
        .map_err(|_| "timed out".to_string())??;
    let peer_der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or("no peer certificate")?;
    let peer = node
        .trust
        .verify_peer(&peer_der, now())
        .map_err(|e| e.to_string())?;
    if peer.node_id == node.node_id {
        return Err("dialed ourselves".into());
    }
    if let Some(expected) = target.expected {
        if expected != peer.node_id {
            return Err(format!("expected {expected}, found {}", peer.node_id));
        }
    }
    let dialed = target.addr.clone();
    tokio::spawn(async move {
        let _permit = permit;
        run_link(node, tls, peer, Direction::Outbound, remote, Some(dialed)).await;
    });
    Ok(())
}

/// Holds the revocations recorded in `state.db` to the membership log at start (a node that
/// watches the log).
///
/// Each entry is kept in force only if the verified log this node followed shows a
/// `revoke_node` entry for it. Any other entry is taken out of the set (and `state.db`) and
/// held unapplied, like a fresh record no newer CRL justified: applied again if the log shows
/// it, an `unlogged_revocation` if the log moves past the time it was learnt without. The
/// choice: a revocation only removes trust, but one the log does not justify is exactly the
/// attack (a CA-signed record excluding a node with no trace), and keeping it would carry the
/// attack across every restart. The certificates of an honestly revoked node stay refused by
/// the CRL meanwhile; only the ban by id waits for the log.
fn audit_persisted_revocations(
    store: &NodeStore,
    log_watch: &LogWatch,
    revoked: &mut ztmesh_trust::RevokedSet,
) -> Result<(), NodeError> {
    let mut unjustified = Vec::new();
    for (node, _) in revoked.iter() {
        let kinds = store.logged_kinds_for_node(&node.to_string())?;
        if !crate::log_audit::node_revocation_is_logged(&kinds) {
            unjustified.push(*node);
        }
    }
    if unjustified.is_empty() {
        return Ok(());
    }
    for node in &unjustified {
        if let Some(learnt) = revoked.remove(node) {
            store.forget_node_revocation(node, learnt)?;
            log_watch.handle_node_revocation(*node, learnt, false);
            tracing::warn!(%node, learnt = %crate::timefmt::rfc3339(learnt), "persisted revocation: the membership log followed so far shows no revocation of this node; held, not applied, until it does");
        }
    }
    Ok(())
}

/// The tier-gated action a gossip frame from a neighbour is: anti-entropy (a digest or a want
/// list), or relaying a revocation record. Other pushed messages are gated by their origin's
/// membership, not by the neighbour's tier. Frames that do not decode are left to the gossip
/// core, which refuses them.
fn gated_action(
    frame: &ztmesh_gossip::GossipFrame,
    config: &ztmesh_gossip::GossipConfig,
) -> Option<ztmesh_trust::Action> {
    match frame {
        ztmesh_gossip::GossipFrame::Digest { .. } | ztmesh_gossip::GossipFrame::Want { .. } => {
            Some(ztmesh_trust::Action::AntiEntropy)
        }
        ztmesh_gossip::GossipFrame::Message { cose, .. } => {
            (ztmesh_gossip::claimed_kind(cose, config)
                == Some(ztmesh_gossip::MessageKind::Revocation))
            .then_some(ztmesh_trust::Action::RevocationRelay)
        }
        _ => None,
    }
}

/// Registers a link, resolving duplicates by [`preferred_link`]. Returns false if this link
/// must be dropped.
fn register_link(node: &Node, peer: NodeId, handle: LinkHandle) -> bool {
    let mut links = node.links.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(existing) = links.get(&peer) {
        if !preferred_link(
            &node.node_id,
            &peer,
            existing.info.direction,
            handle.info.direction,
        ) {
            return false;
        }
        let _ = existing
            .commands
            .try_send(LinkCommand::Close("replaced by a preferred link"));
    }
    links.insert(peer, handle);
    true
}

async fn run_link<S>(
    node: Arc<Node>,
    stream: S,
    peer: NodeCertificate,
    direction: Direction,
    remote: SocketAddr,
    dialed: Option<String>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer_id = peer.node_id;
    if peer_id == node.node_id {
        return;
    }
    let (tx, mut rx) = mpsc::channel(LINK_QUEUE);
    let info = Arc::new(LinkInfo {
        id: node.next_link_id.fetch_add(1, Ordering::Relaxed),
        direction,
        remote,
        established: now(),
        peer_cert: Mutex::new((peer.serial.clone(), peer.not_after)),
        heartbeats: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
    });
    if !register_link(
        &node,
        peer_id,
        LinkHandle {
            info: info.clone(),
            commands: tx,
        },
    ) {
        tracing::debug!(peer = %peer_id, "dropping duplicate link");
        return;
    }
    node.table()
        .handle_link_up(peer_id, dialed.as_deref(), now());
    let drained = node.gossip.link_up(peer_id, now());
    node.dispatch_gossip(drained);
    node.dtn.send(DtnCommand::LinkUp(peer_id));
    node.record_certificate(peer_id, peer.not_before, peer.not_after);
    node.log_watch
        .handle_certificate(peer_id, &peer.serial, peer.not_before);
    tracing::info!(peer = %peer_id, direction = direction.as_str(), %remote, link = info.id, "link up");

    let reason = drive_link(&node, stream, &peer, &info, &mut rx).await;

    {
        let mut links = node.links.lock().unwrap_or_else(|p| p.into_inner());
        if links.get(&peer_id).map(|h| h.info.id) == Some(info.id) {
            links.remove(&peer_id);
            node.table().handle_link_down(&peer_id, now());
            node.gossip.link_down(&peer_id);
            node.dtn.send(DtnCommand::LinkDown(peer_id));
        }
    }
    tracing::info!(peer = %peer_id, link = info.id, reason, "link down");
}

async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &LinkMessage,
) -> Result<(), &'static str> {
    let frame = message.to_frame().map_err(|_| "could not encode a frame")?;
    writer.write_all(&frame).await.map_err(|_| "write failed")?;
    writer.flush().await.map_err(|_| "write failed")
}

/// Logs requests dropped over a link's budget: the first, then every hundredth, so that a
/// flood does not become a flood of log lines.
fn log_over_budget(peer: &NodeId, what: &str, refused: u64) {
    if refused == 1 || refused.is_multiple_of(100) {
        tracing::warn!(%peer, refused, "{what} over the link's budget dropped");
    }
}

/// The link's own clock for its [`LinkMachine`]: the wall clock when the link opened, moved on
/// by the monotonic clock, so a wall-clock jump neither stalls heartbeats nor kills the link,
/// and a deadline converts back to an instant to sleep until.
struct LinkClock {
    opened: tokio::time::Instant,
    opened_at: Timestamp,
}

impl LinkClock {
    fn new() -> Self {
        LinkClock {
            opened: tokio::time::Instant::now(),
            opened_at: now(),
        }
    }

    fn now(&self) -> Timestamp {
        self.opened_at.saturating_add(self.opened.elapsed())
    }

    /// The instant of `at`; a deadline too far out for the platform's clock is a year away,
    /// which is as good as never for a link and cannot overflow.
    fn instant(&self, at: Timestamp) -> tokio::time::Instant {
        const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
        let after = at.duration_since(self.opened_at).min(FAR);
        self.opened.checked_add(after).unwrap_or(self.opened)
    }
}

/// What a link task holds besides its machine: where to write, whom it talks to.
struct LinkIo<'a, W> {
    node: &'a Arc<Node>,
    info: &'a LinkInfo,
    peer_id: NodeId,
    writer: W,
    /// The peer's TLS keys on this link: the handshake certificate's, then the latest rotated one.
    peer_spkis: Vec<Vec<u8>>,
    clock: LinkClock,
}

impl<W: AsyncWrite + Unpin> LinkIo<'_, W> {
    /// Carries out what the machine asks after an input: its events in order (any of which may
    /// end the link), then its transmits.
    async fn settle(&mut self, machine: &mut LinkMachine) -> Result<(), &'static str> {
        let node = self.node;
        let peer_id = self.peer_id;
        while let Some(event) = machine.poll_event() {
            match event {
                LinkEvent::PeerListens(addr) => {
                    node.table().handle_listen_addr(peer_id, &addr.to_string());
                    node.peer_upserts.submit(peer_id, addr.to_string(), now());
                }
                LinkEvent::Heartbeat { missed } => {
                    self.info.heartbeats.fetch_add(1, Ordering::Relaxed);
                    if missed > 0 {
                        self.info.gaps.fetch_add(missed, Ordering::Relaxed);
                    }
                }
                LinkEvent::PeerListRequested => {
                    if !node.gate(&peer_id, ztmesh_trust::Action::PeerExchange) {
                        continue;
                    }
                    if let Err(refused) = machine.admit(self.clock.now(), LinkRequest::PeerList) {
                        log_over_budget(&peer_id, "peer-list request", refused);
                        continue;
                    }
                    let peers: Vec<PeerAdvert> = node
                        .table()
                        .connected_adverts()
                        .into_iter()
                        .filter(|p| p.node_id != peer_id)
                        .collect();
                    machine.send(LinkMessage::PeerList { peers });
                }
                LinkEvent::PeerList(peers) => {
                    let at = now();
                    let mut table = node.table();
                    for advert in &peers {
                        table.handle_advert(advert, at);
                    }
                }
                LinkEvent::Gossip(frame) => {
                    // Parsed once: gated here by the neighbour's tier, then handed on parsed.
                    let decoded = node.gossip.decode(&frame);
                    let gated = decoded
                        .as_ref()
                        .ok()
                        .and_then(|parsed| gated_action(parsed, node.gossip.decoding()));
                    if gated.is_some_and(|action| !node.gate(&peer_id, action)) {
                        continue;
                    }
                    let (result, drained) =
                        node.gossip
                            .handle_decoded_frame(peer_id, frame.len(), decoded, now());
                    if let Err(error) = result {
                        tracing::debug!(peer = %peer_id, %error, "gossip frame refused");
                    }
                    node.dispatch_gossip(drained);
                }
                LinkEvent::Bundle(frame) => {
                    node.dtn.send(DtnCommand::Frame(peer_id, frame));
                }
                LinkEvent::CertificateUpdate(certificate) => {
                    match node.trust.verify_peer(&certificate, now()) {
                        Ok(new) if new.node_id == peer_id => {
                            tracing::debug!(peer = %peer_id, serial = %new.serial, "peer rotated its certificate");
                            node.record_certificate(peer_id, new.not_before, new.not_after);
                            node.log_watch
                                .handle_certificate(peer_id, &new.serial, new.not_before);
                            self.peer_spkis.truncate(1);
                            self.peer_spkis.push(new.tls_public_key_spki_der.clone());
                            *self
                                .info
                                .peer_cert
                                .lock()
                                .unwrap_or_else(|p| p.into_inner()) = (new.serial, new.not_after);
                        }
                        Ok(_) => return Err("certificate update for another node"),
                        Err(error) => {
                            tracing::warn!(peer = %peer_id, %error, "refused certificate update");
                            return Err("invalid certificate update");
                        }
                    }
                }
                LinkEvent::Challenged { nonce } => {
                    if let Some(spki) = node.own_tls_spki() {
                        let response = node
                            .attestor
                            .respond(&nonce, &spki, now().as_unix_secs())
                            .await;
                        machine.send(response);
                    }
                }
                LinkEvent::OverBudget { request, refused } => {
                    let what = match request {
                        LinkRequest::PeerList => "peer-list request",
                        LinkRequest::TeeChallenge => "TEE challenge",
                    };
                    log_over_budget(&peer_id, what, refused);
                }
                LinkEvent::TeeResponse {
                    sent,
                    nonce,
                    evidence_type,
                    evidence,
                    binary_sha256,
                } => {
                    let keys: Vec<&[u8]> = self.peer_spkis.iter().map(Vec::as_slice).collect();
                    let result = node.attestor.verify(
                        sent.as_deref(),
                        &nonce,
                        &evidence_type,
                        &evidence,
                        &binary_sha256,
                        &keys,
                        now().as_unix_secs(),
                    );
                    let binary = <[u8; 32]>::try_from(binary_sha256.as_slice()).ok();
                    node.record_attestation(peer_id, binary, result);
                }
                LinkEvent::ChallengeDue => {
                    let mut nonce = vec![0u8; ztmesh_core::link::TEE_NONCE_LEN];
                    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
                    machine.send_challenge(self.clock.now(), nonce);
                }
                LinkEvent::ChallengeUnanswered => {
                    node.record_attestation(
                        peer_id,
                        None,
                        Err(crate::attestation::LinkAttestError::Unanswered),
                    );
                }
                LinkEvent::CheckPeer => {
                    let (serial, not_after) = self
                        .info
                        .peer_cert
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if node.trust.is_revoked(&serial) {
                        return Err("peer revoked");
                    }
                    if node.trust.is_denied(&peer_id, &serial) {
                        return Err("peer denied");
                    }
                    if not_after <= now() {
                        return Err("peer certificate expired");
                    }
                }
                LinkEvent::Closed(reason) => return Err(reason.as_str()),
                _ => {}
            }
        }
        while let Some(message) = machine.poll_transmit() {
            write_message(&mut self.writer, &message).await?;
        }
        Ok(())
    }
}

/// The IO loop of one link: frames read are decoded once and handed to the link's
/// [`LinkMachine`], which owns the protocol (Hello, heartbeats, dead peer, challenges,
/// peer-list requests, budgets); what it queues is written, and its next deadline is slept to.
async fn drive_link<S>(
    node: &Arc<Node>,
    stream: S,
    peer: &NodeCertificate,
    info: &LinkInfo,
    rx: &mut mpsc::Receiver<LinkCommand>,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let clock = LinkClock::new();
    let config = LinkConfig::new(
        PROTOCOL_VERSION,
        Some(node.mesh_addr.to_string()),
        info.remote,
        node.config.heartbeat_interval(),
        node.attestor.reattest_interval(),
    );
    let mut machine = LinkMachine::new(clock.now(), config);
    let mut io = LinkIo {
        node,
        info,
        peer_id: peer.node_id,
        writer,
        peer_spkis: vec![peer.tls_public_key_spki_der.clone()],
        clock,
    };
    let mut stop = node.shutdown.clone();
    let mut decoder = FrameDecoder::new();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if let Err(reason) = io.settle(&mut machine).await {
            return reason;
        }
        let Some(due) = machine.poll_timeout() else {
            return machine.closed().map_or("link closed", |r| r.as_str());
        };
        tokio::select! {
            _ = stopped(&mut stop) => return "shutting down",
            read = reader.read(&mut buffer) => {
                let n = match read {
                    Ok(0) => return "closed by peer",
                    Ok(n) => n,
                    Err(_) => return "read failed",
                };
                decoder.push(&buffer[..n]);
                loop {
                    let message = match decoder.next_message() {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(peer = %io.peer_id, %error, "malformed frame; closing link");
                            return "malformed frame";
                        }
                    };
                    node.table().handle_seen(&io.peer_id, now());
                    machine.handle_message(io.clock.now(), message);
                    if let Err(reason) = io.settle(&mut machine).await {
                        return reason;
                    }
                }
            }
            _ = tokio::time::sleep_until(io.clock.instant(due)) => {
                machine.handle_timeout(io.clock.now());
            }
            command = rx.recv() => match command {
                Some(LinkCommand::Send(message)) => machine.send(message),
                Some(LinkCommand::Close(reason)) => {
                    let _ = io.writer.shutdown().await;
                    return reason;
                }
                None => return "link dropped",
            },
        }
    }
}

async fn rotation_loop(node: Arc<Node>) {
    let mut stop = node.shutdown.clone();
    let mut failures = 0u32;
    loop {
        let (_, not_before, not_after) = node.cert_summary();
        let due = ztmesh_pki::renew_at(not_before, not_after);
        let t = now();
        if t < due || node.self_revoked.load(Ordering::SeqCst) {
            // Re-check at least every 5 s so a wall-clock jump is noticed.
            let wait = due
                .duration_since(t)
                .clamp(Duration::from_millis(200), Duration::from_secs(5));
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        // Past expiry the CA still rotates this node within its `--rotation-grace`, on the
        // identity proof every rotation carries; the retries below keep asking until it does.
        let expired = t > not_after;
        match rotate_once(&node).await {
            Ok(serial) => {
                failures = 0;
                node.rotations.fetch_add(1, Ordering::SeqCst);
                if expired {
                    tracing::warn!(%serial, "certificate re-established after it had expired");
                } else {
                    tracing::info!(%serial, "certificate rotated");
                }
            }
            Err(error) => {
                failures += 1;
                if let ClientError::Refused { status: 403, .. } = &error {
                    tracing::error!(%error, "the CA refuses to rotate this node's certificate");
                }
                let backoff = Duration::from_secs(1u64 << failures.min(5));
                tracing::warn!(%error, retry_in = ?backoff, "certificate rotation failed");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}

async fn rotate_once(node: &Arc<Node>) -> Result<Serial, ClientError> {
    let key = TlsKeyPair::generate().map_err(NodeDirError::from)?;
    let answer = node
        .ca
        .rotate(
            &node.identity,
            &key,
            &node.node_id,
            &node.config.trust_domain,
        )
        .await?;
    let der = ztmesh_pki::cert_pem_to_der(&answer.certificate)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let cert = node
        .trust
        .verify_peer(&der, now())
        .map_err(|e| ClientError::Protocol(format!("rotated certificate: {e}")))?;
    if cert.node_id != node.node_id || cert.tls_public_key_spki_der != key.public_key_spki_der() {
        return Err(ClientError::Protocol(
            "rotated certificate is not for our keys".into(),
        ));
    }
    node.dir
        .install_certificate(&der, &key, &node.protection())?;
    node.current
        .replace(vec![der.clone()], &key.to_pkcs8_der())?;
    *node.cert_state.write().unwrap_or_else(|p| p.into_inner()) = CertState {
        serial: cert.serial.clone(),
        not_before: cert.not_before,
        not_after: cert.not_after,
    };
    node.record_certificate(node.node_id, cert.not_before, cert.not_after);
    let store = node.store.clone();
    let (serial, nb, na) = (cert.serial.clone(), cert.not_before, cert.not_after);
    let recorded = tokio::task::spawn_blocking(move || {
        store.record_issuance(&serial, nb, na, "rotate", now())
    })
    .await;
    if !matches!(recorded, Ok(Ok(()))) {
        // Recorded again at the next start (the certificate is installed by then).
        tracing::warn!("could not record the rotated certificate in this node's history");
    }
    node.log_watch
        .handle_certificate(node.node_id, &cert.serial, cert.not_before);
    // Peers learn the new certificate now, so links outlive the old one's expiry.
    node.broadcast(LinkMessage::CertificateUpdate { certificate: der });
    Ok(cert.serial)
}

async fn crl_loop(node: Arc<Node>) {
    let mut stop = node.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(node.config.crl_refresh_secs));
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        match node.ca.fetch_crl(&node.config.crl_url).await {
            Ok(der) => match node.apply_crl(&der).await {
                Ok(_) | Err(PkiError::StaleCrl { .. }) => {}
                Err(error) => tracing::warn!(%error, "fetched CRL refused"),
            },
            Err(error) => tracing::debug!(%error, "CRL fetch failed"),
        }
    }
}

async fn announce_loop(node: Arc<Node>) {
    let mut stop = node.shutdown.clone();
    let mut delay = Duration::from_millis(200);
    loop {
        let request = crate::api_types::AnnounceRequest {
            mesh_addr: Some(node.mesh_addr.to_string()),
            api_addr: Some(node.api_addr.to_string()),
        };
        match node.ca.announce(&request).await {
            Ok(answer) => {
                let t = now();
                let mut table = node.table();
                for advert in answer.peers.iter().take(crate::peer_table::MAX_KNOWN_PEERS) {
                    table.handle_advert(advert, t);
                }
                delay = Duration::from_secs(node.config.crl_refresh_secs);
            }
            Err(error) => {
                tracing::debug!(%error, "announce to CA failed");
                delay = (delay * 2).min(Duration::from_secs(node.config.crl_refresh_secs));
            }
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Drives the gossip core's timers (anti-entropy rounds, expiry).
async fn gossip_loop(node: Arc<Node>) {
    let mut stop = node.shutdown.clone();
    loop {
        let wait = match node.gossip.poll_timeout() {
            Some(at) => {
                Duration::from_millis(at.as_unix_millis().saturating_sub(now().as_unix_millis()))
            }
            None => Duration::from_secs(1),
        };
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
            _ = node.gossip.wake.notified() => continue,
        }
        let drained = node.gossip.handle_timeout(now());
        node.dispatch_gossip(drained);
    }
}

/// Gossips this node's own mesh address (so nodes beyond its neighbours can dial it) and a
/// periodic health report.
async fn advert_loop(node: Arc<Node>) {
    let mut stop = node.shutdown.clone();
    let mut tick = tokio::time::interval(PEER_ADVERT_INTERVAL);
    let mut health = tokio::time::interval(node.health_interval());
    let health_ttl = (node.health_interval() * 4).clamp(HEALTH_TTL_MIN, HEALTH_TTL_MAX);
    let mut self_attest = tokio::time::interval(node.attestor.reattest_interval());
    let started = std::time::Instant::now();
    let mut seq = 0u64;
    loop {
        let advert = tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => true,
            _ = health.tick() => {
                node.governance_tick();
                if health.period() != node.health_interval() {
                    health = tokio::time::interval(node.health_interval());
                    health.reset();
                }
                false
            }
            _ = self_attest.tick() => {
                node.attest_self().await;
                continue;
            }
        };
        if node.self_revoked.load(Ordering::SeqCst) {
            continue;
        }
        if !advert {
            node.check_health();
            seq += 1;
            let report = ztmesh_gossip::kinds::Health {
                seq,
                uptime_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                links: u32::try_from(node.link_infos().len()).unwrap_or(u32::MAX),
            };
            let published = report.encode().map_err(|e| e.to_string()).and_then(|body| {
                node.publish_own(MessageKind::Health, body, health_ttl)
                    .map_err(|e| e.to_string())
            });
            if let Err(error) = published {
                tracing::debug!(%error, "could not publish the health report");
            }
            continue;
        }
        let published = PeerExchange {
            addr: node.mesh_addr.to_string(),
        }
        .encode()
        .map_err(|e| e.to_string())
        .and_then(|body| {
            node.publish_own(MessageKind::PeerExchange, body, PEER_ADVERT_TTL)
                .map_err(|e| e.to_string())
        });
        if let Err(error) = published {
            tracing::debug!(%error, "could not publish the peer advertisement");
        }
    }
}

/// Watches the CA's membership log: fetches its checkpoint every few seconds and after a
/// gossiped one (at most once a second), retries an awaited consistency proof, runs the
/// cross-checks of entries, peer certificates and the CRL against the log, and gossips every
/// checkpoint that moves the accepted head (and the head again while the log is quiet).
async fn log_watch_loop(node: Arc<Node>, task: LogWatchTask) {
    use crate::log_watch::{
        Source, CHECKPOINT_REPUBLISH_INTERVAL, CHECKPOINT_TTL, LOG_WATCH_INTERVAL,
        MIN_GOSSIP_FETCH_INTERVAL,
    };
    let LogWatchTask {
        mut watcher,
        mut received,
        mut acks,
    } = task;
    let mut stop = node.shutdown.clone();
    let mut tick = tokio::time::interval(LOG_WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_fetch: Option<std::time::Instant> = None;
    let mut last_publish: Option<std::time::Instant> = None;
    loop {
        let gossiped = tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => None,
            Some(note) = received.recv() => Some(note),
            Some(ack) = acks.recv() => {
                let outcome = watcher
                    .acknowledge(ack.kind, ack.expected_alarms, now().as_unix_secs())
                    .await;
                node.log_watch.set_status(watcher.status());
                // The asker may have gone (timed out); the outcome is saved either way.
                let _ = ack.reply.send(outcome);
                continue;
            }
        };
        let mut moved = Vec::new();
        let fetch = match &gossiped {
            Some(note) => {
                moved.extend(
                    watcher
                        .feed(note, Source::Gossip, &node.ca, now().as_unix_secs())
                        .await,
                );
                last_fetch.is_none_or(|at| at.elapsed() >= MIN_GOSSIP_FETCH_INTERVAL)
            }
            None => {
                moved.extend(watcher.retry_pending(&node.ca).await);
                true
            }
        };
        if fetch {
            last_fetch = Some(std::time::Instant::now());
            moved.extend(watcher.poll_log(&node.ca, now().as_unix_secs()).await);
        }
        watcher
            .cross_check(&node.ca, &node.log_watch, now().as_unix_secs())
            .await;
        let logged = watcher.judge_node_revocations(&node.log_watch).await;
        node.apply_node_revocations(&logged);
        node.log_watch.set_status(watcher.status());
        if node.self_revoked.load(Ordering::SeqCst) {
            continue;
        }
        if moved.is_empty()
            && last_publish.is_some_and(|at| at.elapsed() >= CHECKPOINT_REPUBLISH_INTERVAL)
        {
            moved.extend(watcher.current_note().map(str::to_owned));
        }
        for note in moved {
            last_publish = Some(std::time::Instant::now());
            let published = ztmesh_gossip::kinds::CheckpointNote::new(note)
                .and_then(|note| note.encode())
                .map_err(|e| e.to_string())
                .and_then(|body| {
                    node.publish_own(MessageKind::Checkpoint, body, CHECKPOINT_TTL)
                        .map_err(|e| e.to_string())
                });
            if let Err(error) = published {
                tracing::debug!(%error, "could not publish the accepted checkpoint");
            }
        }
    }
}

/// Resolves once shutdown is signalled (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztmesh_gossip::{GossipFrame, MessageId, MessageKind, UnsignedMessage};
    use ztmesh_trust::Action;

    fn message_frame(kind: MessageKind, body: Vec<u8>) -> Vec<u8> {
        let cose = UnsignedMessage {
            origin: NodeId::from_bytes([1; 20]),
            kind,
            body,
            created_at: Timestamp::from_unix_secs(1_000),
            expires_at: Timestamp::from_unix_secs(2_000),
            hop_limit: 3,
        }
        .sign(None, |_| [0; 64])
        .unwrap();
        GossipFrame::Message { cose, hops_left: 2 }
            .encode()
            .unwrap()
    }

    /// What a link does with a gossip frame's bytes: decode once, gate the parsed form.
    fn gated(frame: &[u8]) -> Option<Action> {
        let config = ztmesh_gossip::GossipConfig::default();
        GossipFrame::decode(frame, &config)
            .ok()
            .and_then(|parsed| gated_action(&parsed, &config))
    }

    #[test]
    fn digests_wants_and_relayed_revocations_are_gated_other_messages_are_not() {
        let digest = GossipFrame::Digest {
            ids: vec![MessageId([1; 32])],
            reply: false,
        };
        let want = GossipFrame::Want {
            ids: vec![MessageId([1; 32])],
        };
        assert_eq!(gated(&digest.encode().unwrap()), Some(Action::AntiEntropy));
        assert_eq!(gated(&want.encode().unwrap()), Some(Action::AntiEntropy));
        let revocation = ztmesh_gossip::kinds::RevocationRecord {
            crl: vec![0x30, 0x00],
            revoked_nodes: Vec::new(),
        }
        .encode()
        .unwrap();
        assert_eq!(
            gated(&message_frame(MessageKind::Revocation, revocation)),
            Some(Action::RevocationRelay)
        );
        let vote = ztmesh_gossip::kinds::GovernanceVote {
            proposal_id: vec![7; 32],
            approve: true,
            token: Vec::new(),
        }
        .encode()
        .unwrap();
        assert_eq!(gated(&message_frame(MessageKind::Vote, vote)), None);
        assert_eq!(gated(b"garbage"), None);
    }
}
