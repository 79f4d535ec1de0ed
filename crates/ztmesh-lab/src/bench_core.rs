//! In-process benchmarks of the gossip and bundle cores, each printed as a ratio against a
//! baseline measured in the same run: raw Ed25519 verifications of the same signatures for
//! gossip validation, bare SQLite inserts of the same bytes for durable bundle accepts. The two
//! sides alternate in rounds so that drift on a shared machine hits both alike.
//!
//! The benchmarks drive the real cores with the node's real membership and store, but never
//! touch a network or a node's data directory: the bundle benchmark writes only to a temporary
//! directory that is removed at the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use ed25519_dalek::{Signature, VerifyingKey};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rusqlite::{Connection, TransactionBehavior};
use sha2::{Digest, Sha256};
use ztmesh_core::{NodeId, Timestamp, TrustDomain};
use ztmesh_dtn::{DtnConfig, Eid, Router};
use ztmesh_gossip::kinds::AnomalySignature;
use ztmesh_gossip::{Gossip, GossipConfig, GossipEvent, GossipFrame, MessageKind, UnsignedMessage};
use ztmesh_node::node_membership::NodeMembership;
use ztmesh_node::store::SqliteBundleStore;
use ztmesh_pki::{
    CertificateAuthority, IdentityKey, NodeCertificateRequest, RevocationReason, RevokedEntry,
    Serial, TlsKeyPair,
};
use ztmesh_runtime::tls::MeshTrust;

/// Options of `ztmesh bench gossip` (the CLI gives the bounds and the defaults).
#[derive(Debug, Clone)]
pub struct GossipOptions {
    /// Distinct signed anomaly messages. Each round feeds all of them to a fresh gossip core
    /// (a core drops what it has seen) and verifies all of them raw.
    pub messages: u32,
    /// Measured rounds per side, alternating, after one warm-up pass of each. Rates come from
    /// each side's fastest round; the ratio of the means is printed too.
    pub rounds: u32,
}

/// Options of `ztmesh bench dtn` (the CLI gives the bounds and the defaults).
#[derive(Debug, Clone)]
pub struct DtnOptions {
    /// Bundles accepted per payload size (1 KiB and 64 KiB), matched by as many baseline
    /// inserts. At most 2000, so that every bundle fits the router's default store bounds.
    pub bundles: u32,
}

/// `ztmesh bench gossip`.
pub async fn gossip(args: GossipOptions) -> Result<()> {
    crate::check_bounds("messages", args.messages, 10..=200_000)?;
    crate::check_bounds("rounds", args.rounds, 1..=50)?;
    // Pure computation on one core; kept off the runtime's worker threads.
    tokio::task::spawn_blocking(move || run_gossip(args)).await?
}

/// `ztmesh bench dtn`.
pub async fn dtn(args: DtnOptions) -> Result<()> {
    crate::check_bounds("bundles", args.bundles, 10..=2000)?;
    // Every accept blocks on fsync.
    tokio::task::spawn_blocking(move || run_dtn(args)).await?
}

// ----- gossip -----

/// Most time validation may add over the raw signature checks it contains (`1 - ratio`).
const GOSSIP_OVERHEAD_TARGET: f64 = 0.25;

/// Peers linked to the receiving core besides the sender: enough for a full default fanout, so
/// every accepted message also runs the forward path.
const RELAY_PEERS: u8 = 3;

/// Revoked serials in the CRL in force, so the revocation check looks at a realistic set.
const REVOKED_SERIALS: u32 = 1000;

/// Messages from one member, signed with its identity key and carrying its node certificate,
/// plus what the raw baseline verifies.
struct SignedMessages {
    trust: Arc<MeshTrust>,
    /// Each message as a `GossipFrame::Message` frame from a neighbour.
    frames: Vec<Vec<u8>>,
    /// The Sig_structure bytes each signature covers, as the signer saw them, and the signature.
    signed: Vec<(Vec<u8>, Signature)>,
    /// The origin's identity key.
    key: VerifyingKey,
    /// When the messages were made; the cores' virtual clocks start here.
    created_at: Timestamp,
}

fn signed_messages(count: u32) -> Result<SignedMessages> {
    let domain: TrustDomain = "bench.ztmesh.test".parse().map_err(|e| anyhow!("{e}"))?;
    let t = ztmesh_runtime::timefmt::now();
    let hour = Duration::from_secs(3600);
    let ca = CertificateAuthority::generate(domain.clone(), t, hour)?;
    let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
    let origin = identity.public().node_id();
    let tls_key = TlsKeyPair::generate()?;
    let csr = tls_key.csr_der(&origin, &domain)?;
    let certificate = ca
        .issue_node_certificate(&NodeCertificateRequest {
            csr_der: &csr,
            identity_key: &identity.public(),
            serial: Serial::random(&mut rand::rngs::OsRng),
            not_before: t.saturating_sub(Duration::from_secs(60)),
            not_after: t.saturating_add(hour),
        })?
        .der;
    let revoked: Vec<RevokedEntry> = (0..REVOKED_SERIALS)
        .map(|_| RevokedEntry {
            serial: Serial::random(&mut rand::rngs::OsRng),
            revoked_at: t,
            reason: RevocationReason::Unspecified,
        })
        .collect();
    let trust = Arc::new(MeshTrust::new(ca.cert_der().to_vec(), domain));
    trust.apply_crl(&ca.sign_crl(&revoked, 1, t, t.saturating_add(hour))?)?;

    let mut frames = Vec::with_capacity(count as usize);
    let mut signed = Vec::with_capacity(count as usize);
    for index in 0..count {
        let body = AnomalySignature {
            event_sha256: Sha256::digest(index.to_be_bytes()).into(),
            indicator: "ssh.bruteforce".into(),
            risk_score: (index % 101) as u8,
            rule_id: Some("sshd.failed_password".into()),
            metadata: BTreeMap::from([
                ("host".to_owned(), format!("web-{}", index % 16)),
                ("source".to_owned(), format!("198.51.100.{}", index % 256)),
            ]),
        }
        .encode()?;
        let message = UnsignedMessage {
            origin,
            kind: MessageKind::Anomaly,
            body,
            created_at: t,
            expires_at: t.saturating_add(Duration::from_secs(24 * 3600)),
            hop_limit: 4,
        };
        let mut seen_by_signer = None;
        let cose = message.sign(Some(certificate.clone()), |to_be_signed| {
            let signature = identity.sign_envelope(to_be_signed);
            seen_by_signer = Some((to_be_signed.to_vec(), Signature::from_bytes(&signature)));
            signature
        })?;
        signed.push(seen_by_signer.context("the signer was not called")?);
        frames.push(GossipFrame::Message { cose, hops_left: 3 }.encode()?);
    }
    Ok(SignedMessages {
        trust,
        frames,
        signed,
        key: identity.public().verifying_key(),
        created_at: t,
    })
}

/// What one pass of the gossip core did.
struct Validated {
    elapsed: Duration,
    delivered: u64,
    forwarded: u64,
}

/// Feeds `frames` from one neighbour to a fresh core with the node's membership (certificate
/// cache cold, so the first message pays the certificate check as in a running node), draining
/// deliveries and forwards after each frame.
fn validate_pass(messages: &SignedMessages, frames: &[Vec<u8>]) -> Result<Validated> {
    let config = GossipConfig::default();
    // Frames arrive here faster than one peer's allowed rate. The virtual clock advances by one
    // frame's worth of tokens per frame, so the limiter runs and admits every frame, as it
    // would for a neighbour sending at the allowed rate.
    let step_ms = (1000 / u64::from(config.peer_messages_per_sec.max(1))).max(1);
    let mut gossip = Gossip::new(
        NodeId::from_bytes([1; 20]),
        config,
        StdRng::seed_from_u64(1),
    );
    let mut membership = NodeMembership::new(messages.trust.clone())?;
    let sender = NodeId::from_bytes([2; 20]);
    let relays = (0..RELAY_PEERS).map(|i| NodeId::from_bytes([10 + i; 20]));
    for peer in std::iter::once(sender).chain(relays) {
        gossip.handle_link_up(peer, messages.created_at);
    }
    // Link-up digests, not part of what is measured.
    while gossip.poll_transmit().is_some() {}

    let mut now = messages.created_at;
    let (mut delivered, mut forwarded) = (0u64, 0u64);
    let start = Instant::now();
    for frame in frames {
        now = Timestamp::from_unix_millis(now.as_unix_millis().saturating_add(step_ms));
        gossip.handle_frame(sender, frame, now, &mut membership)?;
        while let Some(transmit) = gossip.poll_transmit() {
            forwarded += 1;
            std::hint::black_box(transmit);
        }
        while let Some(event) = gossip.poll_event() {
            match event {
                GossipEvent::Delivered(message) => {
                    delivered += 1;
                    std::hint::black_box(message);
                }
                other => bail!("the gossip core did not accept a bench message: {other:?}"),
            }
        }
    }
    let elapsed = start.elapsed();
    ensure!(
        delivered == frames.len() as u64,
        "{delivered} of {} messages delivered",
        frames.len()
    );
    Ok(Validated {
        elapsed,
        delivered,
        forwarded,
    })
}

/// `verify_strict` over each message's Sig_structure with the origin's key: the cryptographic
/// floor of validation.
fn raw_pass(messages: &SignedMessages, count: usize) -> Result<Duration> {
    let start = Instant::now();
    for (to_be_signed, signature) in &messages.signed[..count] {
        messages
            .key
            .verify_strict(to_be_signed, signature)
            .context("a bench signature does not verify")?;
    }
    Ok(start.elapsed())
}

fn run_gossip(args: GossipOptions) -> Result<()> {
    let messages = signed_messages(args.messages)?;
    let warm_up = messages.frames.len().min(1000);
    validate_pass(&messages, &messages.frames[..warm_up])?;
    raw_pass(&messages, warm_up)?;

    let (mut validated, mut raw) = (Vec::new(), Vec::new());
    let (mut delivered, mut forwarded) = (0u64, 0u64);
    for _ in 0..args.rounds {
        let pass = validate_pass(&messages, &messages.frames)?;
        validated.push(pass.elapsed);
        delivered += pass.delivered;
        forwarded += pass.forwarded;
        raw.push(raw_pass(&messages, messages.signed.len())?);
    }
    let per_round = f64::from(args.messages);
    let fastest = |rounds: &[Duration]| rounds.iter().min().copied().unwrap_or(Duration::MAX);
    let mean = |rounds: &[Duration]| {
        rounds.iter().sum::<Duration>().as_secs_f64() / rounds.len().max(1) as f64
    };
    let validated_rate = per_round / fastest(&validated).as_secs_f64();
    let raw_rate = per_round / fastest(&raw).as_secs_f64();
    let ratio = validated_rate / raw_rate;
    let mean_ratio = mean(&raw) / mean(&validated);
    let frame_len = messages.frames.iter().map(Vec::len).sum::<usize>() / messages.frames.len();
    out!(
        "gossip validation on one core: {} distinct signed anomaly messages (~{frame_len} B frames \
         with the origin's certificate) x {} rounds, {REVOKED_SERIALS} revoked serials in the CRL",
        args.messages,
        args.rounds
    );
    out!(
        "  each accepted message forwarded to {:.1} of {RELAY_PEERS} linked peers on average",
        forwarded as f64 / delivered as f64
    );
    out!("  raw Ed25519 verify_strict (baseline): {raw_rate:>10.0} verifications/s");
    out!("  validated by Gossip::handle_frame:    {validated_rate:>10.0} messages/s");
    out!("  ratio of the means over all rounds:   {mean_ratio:>10.3}");
    out!("  ratio validated / raw:                {ratio:>10.3}");
    let overhead = 1.0 - ratio;
    out!(
        "  overhead 1 - ratio:                   {:>9.1}% (target <= {:.0}%: {})",
        overhead * 100.0,
        GOSSIP_OVERHEAD_TARGET * 100.0,
        if overhead <= GOSSIP_OVERHEAD_TARGET {
            "met"
        } else {
            "missed"
        }
    );
    Ok(())
}

// ----- dtn -----

/// Payload sizes measured: a small message and a full fragment.
const BUNDLE_SIZES: [usize; 2] = [1024, 64 * 1024];

/// Rounds each side's bundles are split into, alternating router and baseline.
const DTN_ROUNDS: u32 = 10;

/// Bundles accepted (and rows inserted) per side before measuring: first writes grow the files.
const DTN_WARM_UP: u32 = 4;

/// The router under test, over the node's SQLite store, and where its bundles go.
struct BundleRouter {
    router: Router<SqliteBundleStore>,
    destination: Eid,
}

impl BundleRouter {
    fn open(path: &Path) -> Result<Self> {
        let store = SqliteBundleStore::open(path)?;
        let router = Router::new(NodeId::from_bytes([1; 20]), DtnConfig::default(), store)?;
        // No link to it is up: every bundle is stored durably and waits for a contact.
        let destination = Eid::new(NodeId::from_bytes([2; 20]), "bench")?;
        Ok(BundleRouter {
            router,
            destination,
        })
    }

    fn accept(&mut self, payload: &[u8], count: u32) -> Result<Duration> {
        let start = Instant::now();
        for _ in 0..count {
            self.router.accept_local(
                self.destination.clone(),
                "bench",
                payload.to_vec(),
                Duration::from_secs(3600),
                ztmesh_runtime::timefmt::now(),
            )?;
            while self.router.poll_event().is_some() {}
        }
        Ok(start.elapsed())
    }
}

/// A bare connection set up as the node's stores set up theirs (WAL, `synchronous=FULL`).
fn baseline_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    ensure!(mode.eq_ignore_ascii_case("wal"), "journal mode {mode}");
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         CREATE TABLE payloads (id INTEGER PRIMARY KEY, payload BLOB NOT NULL) STRICT;",
    )?;
    Ok(conn)
}

/// One `INSERT` of `payload` per committed transaction.
fn baseline_insert(conn: &mut Connection, payload: &[u8], count: u32) -> Result<Duration> {
    let start = Instant::now();
    for _ in 0..count {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("INSERT INTO payloads (payload) VALUES (?1)")?
            .execute([payload])?;
        tx.commit()?;
    }
    Ok(start.elapsed())
}

fn run_dtn(args: DtnOptions) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("ztmesh-bench-dtn-")
        .tempdir()?;
    let mut router = BundleRouter::open(&dir.path().join("state.db"))?;
    let mut baseline = baseline_connection(&dir.path().join("baseline.db"))?;
    let payloads: Vec<Vec<u8>> = BUNDLE_SIZES
        .iter()
        .map(|&size| (0..size).map(|i| (i % 251) as u8).collect())
        .collect();
    for payload in &payloads {
        router.accept(payload, DTN_WARM_UP)?;
        baseline_insert(&mut baseline, payload, DTN_WARM_UP)?;
    }

    let mut accepted = [Duration::ZERO; BUNDLE_SIZES.len()];
    let mut inserted = [Duration::ZERO; BUNDLE_SIZES.len()];
    for round in 0..DTN_ROUNDS {
        // Spreads the remainder over the first rounds so each side does exactly `bundles`.
        let count = args.bundles / DTN_ROUNDS + u32::from(round < args.bundles % DTN_ROUNDS);
        for (index, payload) in payloads.iter().enumerate() {
            accepted[index] += router.accept(payload, count)?;
            inserted[index] += baseline_insert(&mut baseline, payload, count)?;
        }
    }

    out!(
        "durable bundle accepts to a remote destination, {} per size (SQLite WAL, synchronous=FULL, in {})",
        args.bundles,
        dir.path().display()
    );
    let total = f64::from(args.bundles);
    for (index, size) in BUNDLE_SIZES.iter().enumerate() {
        let accept_rate = total / accepted[index].as_secs_f64();
        let insert_rate = total / inserted[index].as_secs_f64();
        out!("  {} KiB payload", size / 1024);
        out!("    bare SQLite insert per transaction (baseline): {insert_rate:>8.1} inserts/s");
        out!("    Router::accept_local:                          {accept_rate:>8.1} accepts/s");
        out!(
            "    ratio router / baseline:                       {:>8.3}",
            accept_rate / insert_rate
        );
    }
    Ok(())
}
