//! JSON bodies of the HTTP API, shared by servers and clients (documented in docs/openapi.yaml).
//! Requests refuse unknown fields, so a typo is a 400 rather than a silently ignored option.

use serde::{Deserialize, Serialize};
use ztmesh_core::link::PeerAdvert;
use ztmesh_pki::RevocationReason;

/// Evidence offered at enrollment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// Evidence type (`tpm2`, `tdx`, `sgx`, `sev-snp`, `dev`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Evidence, base64.
    pub payload: String,
}

/// `POST /v1/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token.
    pub token: String,
    /// PKCS#10 CSR for a fresh TLS key: PEM, or base64 of the DER.
    pub csr: String,
    /// The node's identity public key: base64 of its DER SubjectPublicKeyInfo.
    pub identity_key: String,
    /// Ed25519 signature by the identity key over `"ztmesh/v1/enroll-csr" || 0x00 || CSR DER`,
    /// base64: proves the enrolling party holds the identity key.
    pub identity_proof: String,
    /// The NodeId the node expects; must match the identity key when given.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Attestation evidence, when the CA policy asks for it.
    #[serde(default)]
    pub attestation: Option<Attestation>,
    /// For `tpm2` evidence whose attestation key the CA does not already trust: the secret
    /// recovered by TPM2_ActivateCredential from `POST /v1/enroll/tpm2/credential`, 64 hex
    /// digits. It proves the AK lives in the TPM of an endorsement key the CA allows.
    #[serde(default)]
    pub tpm2_credential_secret: Option<String>,
}

/// `POST /v1/enroll/tpm2/credential`: before enrolling, a node with a TPM asks the CA for a
/// credential (TPM2_MakeCredential) that only its TPM can activate, and only if the AK is
/// resident next to the EK.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tpm2CredentialRequest {
    /// The one-time enrollment token (checked, not spent).
    pub token: String,
    /// The endorsement key's TPM2B_PUBLIC, base64.
    pub ek_public: String,
    /// The attestation key's TPM2B_PUBLIC, base64.
    pub ak_public: String,
}

/// The answer to [`Tpm2CredentialRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tpm2CredentialResponse {
    /// The credential in the tpm2-tools file format (`tpm2_activatecredential -i`), base64.
    pub credential: String,
    /// Seconds the credential may be answered within.
    pub expires_in_secs: u64,
}

/// `POST /v1/log/events`: a mesh event a member reports for the membership log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LogEventReport {
    /// A governance proposal this node applied.
    GovernanceDecision {
        /// The proposal id, 64 hex digits.
        proposal: String,
        /// The parameter.
        param: String,
        /// Its new value.
        value: u64,
    },
    /// This node's trust book moved `node_id` to `tier`.
    TierChange {
        /// The node.
        node_id: String,
        /// `tier 1`, `tier 2` or `untrusted`.
        tier: String,
        /// Why.
        reason: String,
    },
}

/// `POST /v1/log/events` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEventAnswer {
    /// The index of the new entry; null when the log already said the same.
    pub index: Option<u64>,
}

/// `POST /v1/attest/challenge` answer: the nonce the node's evidence must bind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestChallengeResponse {
    /// 32 bytes, hex.
    pub nonce: String,
    /// Until when it may be answered (RFC 3339).
    pub expires_at: String,
}

/// `POST /v1/attest`: evidence answering the challenge, for an attestation token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// The challenge nonce, hex.
    pub nonce: String,
    /// The evidence: report data = report_data_binding(nonce, TLS key of the presented
    /// certificate).
    pub attestation: Attestation,
    /// SHA-256 of the node's executable, hex.
    pub binary_sha256: String,
}

/// `POST /v1/attest` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestResponse {
    /// The attestation token (COSE_Sign1), base64.
    pub token: String,
    /// The platform verified.
    pub platform: String,
    /// When it was issued (RFC 3339).
    pub issued_at: String,
    /// The release manifest version the binary was found in.
    pub manifest_version: String,
}

/// Mesh settings handed to a node at enrollment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MeshConfig {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Mesh listener addresses of nodes to dial first.
    pub bootstrap_peers: Vec<String>,
    /// Gossip fan-out.
    pub gossip_fanout: u32,
    /// Where to fetch the CRL.
    pub crl_url: String,
}

/// Answer to `POST /v1/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The enrolled node's id.
    pub node_id: String,
    /// Serial of the issued certificate (hex).
    pub serial: String,
    /// The node certificate, PEM.
    pub certificate: String,
    /// The mesh CA certificate, PEM.
    pub ca_cert: String,
    /// Start of validity, RFC 3339.
    pub valid_not_before: String,
    /// End of validity, RFC 3339.
    pub valid_not_after: String,
    /// Mesh settings.
    pub config: MeshConfig,
}

/// `POST /v1/rotate` (mutual TLS with the current certificate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// CSR for a fresh TLS key: PEM or base64 DER.
    pub csr: String,
    /// Signature by the identity key over `"ztmesh/v1/rotate-csr" || 0x00 || CSR DER`, base64.
    pub identity_proof: String,
}

/// Answer to `POST /v1/rotate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotateResponse {
    /// Serial of the new certificate (hex).
    pub serial: String,
    /// The new certificate, PEM.
    pub certificate: String,
    /// Start of validity, RFC 3339.
    pub valid_not_before: String,
    /// End of validity, RFC 3339.
    pub valid_not_after: String,
}

/// `POST /v1/revoke` (admin): exactly one of `serial` and `node_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Serial (hex) of one certificate to revoke.
    #[serde(default)]
    pub serial: Option<String>,
    /// A node whose every certificate is revoked and which may never enroll or rotate again.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Why (RFC 5280 reason).
    #[serde(default)]
    pub reason: Option<RevocationReason>,
}

/// `POST /v1/tokens` (admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Lifetime in seconds (default 3600, at most 30 days).
    #[serde(default)]
    pub ttl_sec: Option<u64>,
    /// Restrict the token to one NodeId.
    #[serde(default)]
    pub node_id: Option<String>,
}

/// Answer to `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The token; shown once, the CA keeps only its hash.
    pub token: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
}

/// `POST /v1/announce` (mutual TLS): where a node can be reached.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceRequest {
    /// `host:port` of its mesh listener.
    #[serde(default)]
    pub mesh_addr: Option<String>,
    /// `host:port` of its HTTPS API (where the CA pushes CRLs).
    #[serde(default)]
    pub api_addr: Option<String>,
}

/// Answer to `POST /v1/announce`: other live members and where they listen.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnnounceResponse {
    /// Known members (never the caller).
    pub peers: Vec<PeerAdvert>,
}

/// `GET /v1/ca`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaInfo {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// The CA certificate, PEM.
    pub ca_cert: String,
    /// SHA-256 of the CA certificate DER, hex.
    pub fingerprint_sha256: String,
    /// Lifetime of the certificates it issues now, in seconds: `ca serve --cert-lifetime`,
    /// or the mesh's governed `cert_lifetime_secs` once the CA follows a decision.
    #[serde(default)]
    pub cert_lifetime_secs: u64,
    /// The governance proposal that set the lifetime, if one did (64 hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_lifetime_proposal: Option<String>,
}

/// One peer in `GET /v1/mesh/peers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub node_id: String,
    /// Whether a link is up now.
    pub connected: bool,
    /// Last frame received (RFC 3339), if ever.
    pub last_seen: Option<String>,
    /// Its mesh listener address, if known.
    pub address: Option<String>,
    /// Expiry of the certificate it last proved (RFC 3339), if connected.
    pub certificate_expires: Option<String>,
    /// Serial of that certificate.
    pub certificate_serial: Option<String>,
    /// `inbound` or `outbound`, if connected.
    pub direction: Option<String>,
    /// When the current link came up (RFC 3339).
    pub link_established: Option<String>,
    /// Identifier of the current link (changes when a link is re-established).
    pub link_id: Option<u64>,
    /// Heartbeats received on the current link.
    pub heartbeats_received: u64,
    /// Heartbeat sequence numbers skipped on the current link (lost messages).
    pub heartbeat_gaps: u64,
    /// Trust tier as this node judges it: `tier 1`, `tier 2` or `untrusted`.
    #[serde(default)]
    pub tier: String,
    /// Why (the first unmet requirement, or what qualified it).
    #[serde(default)]
    pub tier_reason: String,
    /// Last verified attestation: platform and time (RFC 3339), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attestation: Option<String>,
    /// Health checks passed / judged (the uptime behind Tier 1).
    #[serde(default)]
    pub health: String,
    /// The binary hash it reported (hex), and whether the signed release manifest lists it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// Consecutive failed attestation verifications (3 bar Tier 1).
    #[serde(default)]
    pub attestation_failures: u32,
}

/// Answer to `GET /v1/mesh/peers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeersResponse {
    /// The node answering.
    pub node_id: String,
    /// Its peers.
    pub peers: Vec<PeerInfo>,
}

/// Answer to `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    /// This node.
    pub node_id: String,
    /// Trust domain.
    pub trust_domain: String,
    /// Mesh listener address.
    pub mesh_addr: String,
    /// API address.
    pub api_addr: String,
    /// Current certificate serial.
    pub certificate_serial: String,
    /// Current certificate validity start.
    pub certificate_not_before: String,
    /// Current certificate expiry.
    pub certificate_not_after: String,
    /// When rotation is due.
    pub renew_at: String,
    /// Certificates rotated since start.
    pub rotations: u64,
    /// CRL number in force.
    pub crl_number: Option<u64>,
    /// Serials revoked by it.
    pub revoked_serials: usize,
    /// Whether this node's own certificate is revoked.
    pub self_revoked: bool,
    /// The operator's local deny-list in force (`ztmesh deny`).
    #[serde(default)]
    pub denied: crate::deny_set::DenyListResponse,
    /// Links up.
    pub peers_connected: usize,
    /// Wrong `api.token`s presented to this node since start (each logged with its address).
    #[serde(default)]
    pub failed_api_tokens: u64,
    /// Peers known.
    pub peers_known: usize,
    /// Gossip counters since start.
    #[serde(default)]
    pub gossip: GossipCounters,
    /// The node's watch of the CA's membership log.
    #[serde(default)]
    pub log: LogStatus,
    /// Attestation, tiers, enforcement and governance as this node sees them.
    #[serde(default)]
    pub trust: TrustStatus,
    /// This node as a witness of the membership log (`[witness]` of node.toml); `null` when
    /// not enabled.
    #[serde(default)]
    pub witness: Option<NodeWitnessStatus>,
}

/// The witness side of `GET /v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeWitnessStatus {
    /// Where `POST /add-checkpoint` listens (plain HTTP).
    pub listen: String,
    /// The witness's cosignature/v1 vkey, as the log policy lists it.
    pub vkey: String,
    /// Checkpoints cosigned since start.
    pub cosigned: u64,
    /// `add-checkpoint` requests refused since start because this node was not Tier 1.
    pub refused_not_tier1: u64,
}

/// The trust side of `GET /v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustStatus {
    /// This node's own tier, judged by the same rules as its peers'.
    pub tier: String,
    /// Why.
    pub tier_reason: String,
    /// SHA-256 of this node's executable (hex).
    pub binary_sha256: String,
    /// Whether the signed release manifest in force lists that binary.
    pub binary_in_manifest: bool,
    /// Version of the signed release manifest in force, if any.
    pub manifest_version: Option<String>,
    /// What this node answers challenges with (`none`, `dev`).
    pub attester: String,
    /// Whether dev (simulated TEE) evidence counts toward Tier 1 here. Demos only.
    pub dev_attestation_accepted: bool,
    /// Attestation verifications that succeeded since start.
    pub attestations_ok: u64,
    /// Attestation verifications that failed since start.
    pub attestations_failed: u64,
    /// Requests refused by the tier gates since start, per action.
    #[serde(default)]
    pub gate_refusals: std::collections::BTreeMap<String, u64>,
    /// Governed parameters in force.
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, u64>,
    /// This node's attestation token from the CA, attached to its proposals and votes.
    #[serde(default)]
    pub token: TokenStatus,
    /// Governance decisions and tier changes reported to the CA's membership log since start.
    #[serde(default)]
    pub log_reports_sent: u64,
    /// Reports dropped (queue full, or the CA refused or was unreachable five times).
    #[serde(default)]
    pub log_reports_dropped: u64,
}

/// This node's CA-issued attestation token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenStatus {
    /// Whether it holds one.
    pub held: bool,
    /// The platform it vouches for.
    pub platform: Option<String>,
    /// When the CA issued it (RFC 3339).
    pub issued_at: Option<String>,
    /// Why the last attempt to get one failed, if it did.
    pub last_error: Option<String>,
    /// Tokens received from the CA since start.
    pub refreshed: u64,
    /// Proposals and votes received and not counted because their token did not hold.
    pub refused_received: u64,
}

/// What a node knows of the CA's membership log (from checkpoints it fetched or was gossiped).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogStatus {
    /// Whether a log policy was pinned at enrollment (`log-policy.txt`); without one the log is
    /// not watched and the other fields stay empty.
    pub policy: bool,
    /// Size of the accepted checkpoint.
    pub size: Option<u64>,
    /// Its root hash (base64).
    pub root: Option<String>,
    /// Policy names of the witnesses whose cosignatures made it acceptable.
    #[serde(default)]
    pub witnesses_met: Vec<String>,
    /// The log showed this node two histories that cannot both be true: two valid
    /// checkpoints that conflict, a checkpoint from the CA older than one it showed before (a
    /// rollback), or entries that do not make the accepted checkpoint. Saved in `state.db`:
    /// it stays set across restarts.
    pub split_view: bool,
    /// Split views detected over the node's life (saved across restarts).
    pub split_view_alarms: u64,
    /// While `split_view`: what conflicted, in words.
    #[serde(default)]
    pub split_view_reason: Option<String>,
    /// Validly log-signed checkpoints refused for want of a witness quorum, since start.
    pub quorum_not_met: u64,
    /// Checkpoints the CA served that were older than the accepted one (rollback attempts),
    /// since start. Older checkpoints relayed by gossip are late, not counted.
    pub stale: u64,
    /// While `split_view`: the two conflicting checkpoint notes, the one held first first (or
    /// the held note and how the log's entries contradict it).
    #[serde(default)]
    pub split_view_evidence: Vec<String>,
    /// Log entries fetched from the CA and verified against the accepted checkpoint's root.
    #[serde(default)]
    pub entries_verified: u64,
    /// Certificate checks against the verified log since start: peer and own certificates
    /// (is the issuance logged?) and logged certificates in this node's name (does it hold
    /// them?).
    #[serde(default)]
    pub certificates_checked: u64,
    /// Peer certificates waiting for the verified log to move past their issuance.
    #[serde(default)]
    pub certificates_pending: u64,
    /// Peer certificates never checked because too many were waiting (4096).
    #[serde(default)]
    pub certificates_dropped: u64,
    /// Revocation checks against the verified log since start: each serial of a CRL (is its
    /// revocation logged?) and each logged revocation (does the CRL list it?).
    #[serde(default)]
    pub revocations_checked: u64,
    /// `unlogged_certificate` alarms since start: a peer's (or this node's) certificate the CA
    /// issued without logging it.
    #[serde(default)]
    pub unlogged_certificates: u64,
    /// `unlogged_revocation` alarms since start: a CRL revocation, or a revocation by node id
    /// from a CA-signed record, missing from the log.
    #[serde(default)]
    pub unlogged_revocations: u64,
    /// Revocations by node id waiting for the verified log (held unapplied when no newer CRL
    /// listed one of the node's certificates).
    #[serde(default)]
    pub node_revocations_pending: u64,
    /// Of those, the ones held unapplied.
    #[serde(default)]
    pub node_revocations_held: u64,
    /// `withheld_revocation` alarms since start: a revocation the log shows that the CRL in
    /// force leaves out (by its `thisUpdate` − 90 s).
    #[serde(default)]
    pub withheld_revocations: u64,
    /// `foreign_certificate` alarms since start: a logged certificate in this node's name that
    /// it never held.
    #[serde(default)]
    pub foreign_certificates: u64,
    /// The latest of those alarms (at most 32), oldest first.
    #[serde(default)]
    pub unlogged: Vec<UnloggedFinding>,
    /// The `log_stalled` alarm is raised: no checkpoint meeting the witness quorum arrived
    /// within `log_stall_secs`, or a certificate this node was shown (a peer's or its own)
    /// waited past its grace and `log_stall_secs` without the verified log covering its
    /// issuance. A liveness alarm: it clears by itself once quorum checkpoints arrive again
    /// and the log has moved past the certificates it waited for, or by acknowledgement.
    /// Saved in `state.db`.
    #[serde(default)]
    pub log_stalled: bool,
    /// `log_stalled` alarms over the node's life (saved across restarts).
    #[serde(default)]
    pub log_stalled_alarms: u64,
    /// While `log_stalled`: why, in words.
    #[serde(default)]
    pub log_stalled_reason: Option<String>,
    /// While `log_stalled`: when it was raised, RFC 3339.
    #[serde(default)]
    pub log_stalled_since: Option<String>,
    /// When the last checkpoint meeting the quorum arrived from the CA (or moved the head by
    /// gossip), or when watching began, RFC 3339.
    #[serde(default)]
    pub last_quorum_checkpoint: Option<String>,
    /// `log_stall_secs` of node.toml in force.
    #[serde(default)]
    pub log_stall_secs: u64,
    /// Certificates found waiting past their `log_stalled` deadline without the log covering
    /// their issuance, since start.
    #[serde(default)]
    pub certificates_uncovered: u64,
}

/// Which alarm of the membership-log watch an acknowledgement is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogAlarmKind {
    /// The split-view alarm (`status.log.split_view_alarms` counts them).
    #[default]
    SplitView,
    /// The `log_stalled` alarm (`status.log.log_stalled_alarms` counts them).
    LogStalled,
}

/// Body of `POST /v1/log/alarm/acknowledge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeAlarmRequest {
    /// Which alarm: `split_view` when not given.
    #[serde(default)]
    pub alarm: LogAlarmKind,
    /// The alarm count (`status.log.split_view_alarms`, or `log_stalled_alarms`) the operator
    /// looked at: the alarm is cleared only while it is still that one.
    pub alarms: u64,
}

/// Answer of `POST /v1/log/alarm/acknowledge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcknowledgeAlarmResponse {
    /// Always true in a 200 answer.
    pub acknowledged: bool,
    /// Which alarm was acknowledged.
    #[serde(default)]
    pub alarm: LogAlarmKind,
    /// Its count, unchanged by the acknowledgement.
    #[serde(default)]
    pub alarms: u64,
    /// The same count, for a split-view acknowledgement (as before `alarm` existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_view_alarms: Option<u64>,
}

/// A certificate or revocation on which the node and the verified membership log disagree (an
/// alarm only: links and CRLs are not refused over it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnloggedFinding {
    /// `unlogged_certificate`, `unlogged_revocation`, `withheld_revocation` or
    /// `foreign_certificate`.
    pub kind: String,
    /// The certificate serial, lowercase hex; empty for a revocation by node id.
    pub serial: String,
    /// Whose certificate: the node that presented it, the node the log names (withheld and
    /// foreign), `null` for an unlogged revocation.
    pub node_id: Option<String>,
    /// The certificate's notBefore (unlogged), the CRL's thisUpdate (revocations), or when the
    /// CA logged it (foreign), RFC 3339.
    pub issued: String,
}

/// Gossip counters of a node (since it started).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GossipCounters {
    /// Messages accepted and delivered (own and received).
    pub delivered: u64,
    /// Copies of messages already seen.
    pub duplicates: u64,
    /// Messages or frames refused (bad signature, unknown or revoked origin, expired, ...).
    pub refused: u64,
    /// Messages pushed on to peers.
    pub forwarded: u64,
    /// Messages pulled by anti-entropy.
    pub pulled: u64,
    /// Frames dropped by per-peer rate limits.
    pub rate_limited: u64,
    /// Frames dropped on full per-peer queues.
    pub queue_dropped: u64,
    /// Frames a second each peer may send now (the governed `rate_limit_rpm`, rounded up).
    pub peer_frames_per_sec: u32,
}
