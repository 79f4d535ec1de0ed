//! `ztmesh bench tlog`: what the membership log costs, as two ratios against baselines measured
//! in the same run.
//!
//! 1. Durable appends while checkpoints are published. The CA's append path
//!    ([`CaStore::record_rotation`]: one SQLite transaction that records a certificate rotation
//!    and appends its log entry) runs flat out, while once a second the CA's publication code
//!    signs a checkpoint ([`MembershipLog::checkpoint_if_grown`]) and submits it
//!    ([`submit_checkpoint`] over [`HttpWitnessTransport`]) to three witness servers
//!    ([`WitnessService`], each with its own `witness.db`) listening on 127.0.0.1, under a
//!    policy whose quorum is two of the three. Baseline: the same append loop on a database of
//!    its own, with nothing signed or published.
//! 2. Witness cosignatures. The witness's decision and cosignature for consecutive checkpoints
//!    of one log ([`check_add_checkpoint`]: note parsing, log signature, consistency proof; the
//!    compare-and-swap of the head, held in memory here; [`StoredCheckpoint::cosign`]), against
//!    exactly one Ed25519 signature and one consistency-proof verification of the same sizes.
//!
//! The two sides of each measurement alternate in rounds so that drift on a shared machine hits
//! both alike, and each side's rate is its fastest round. The benchmark must never touch a
//! node's or a CA's data directory, nor any address but loopback: everything it writes lives in
//! a temporary directory removed at the end.
//!
//! [`StoredCheckpoint::cosign`]: ztmesh_tlog::StoredCheckpoint::cosign

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use ztmesh_ca::membership_log::{
    log_origin, submit_checkpoint, HttpWitnessTransport, LogPolicy, MembershipLog, PUBLISH_INTERVAL,
};
use ztmesh_ca::store::{CaStore, IssueKind, IssuedRecord};
use ztmesh_core::{NodeId, Timestamp, TrustDomain};
use ztmesh_pki::keyfile::Protection;
use ztmesh_pki::{
    CertificateAuthority, IdentityKey, NodeCertificateRequest, Serial, TlsKeyPair, TokenHash,
};
use ztmesh_tlog::merkle::verify_consistency;
use ztmesh_tlog::witness::check_add_checkpoint;
use ztmesh_tlog::{
    Checkpoint, CosignatureSigner, Hash, MerkleTree, Note, Signer, SwapOutcome, TreeHead, Verifier,
};
use ztmesh_witness::witness_service::{self, Witness, WitnessDir, WitnessService};

/// Options of `ztmesh bench tlog` (the CLI gives the bounds and the defaults).
#[derive(Debug, Clone)]
pub struct TlogOptions {
    /// Length of each measured append round, per side, in seconds. The checkpointing side
    /// signs one checkpoint in every second of it and has the witnesses cosign it.
    pub seconds: u64,
    /// Measured rounds per side, in both measurements, alternating, after a warm-up of each
    /// side. Rates come from each side's fastest round.
    pub rounds: u32,
    /// Consecutive checkpoints the witness decides on and cosigns in each round of the
    /// cosignature measurement (the baseline does as many signatures and proofs).
    pub checkpoints: u32,
    /// Entries the log grows by between two consecutive checkpoints of the cosignature
    /// measurement (the first checkpoint has this many entries too).
    pub entries_per_checkpoint: u32,
}

/// `ztmesh bench tlog`.
pub async fn run(args: TlogOptions) -> Result<()> {
    crate::check_bounds("seconds", args.seconds, 1..=600)?;
    crate::check_bounds("rounds", args.rounds, 1..=20)?;
    crate::check_bounds("checkpoints", args.checkpoints, 10..=20_000)?;
    crate::check_bounds(
        "entries_per_checkpoint",
        args.entries_per_checkpoint,
        1..=200,
    )?;
    let dir = tempfile::Builder::new()
        .prefix("ztmesh-bench-tlog-")
        .tempdir()?;
    appends(&args, dir.path()).await?;
    out!();
    let (checkpoints, entries, rounds) =
        (args.checkpoints, args.entries_per_checkpoint, args.rounds);
    // Pure computation on one core; kept off the runtime's worker threads.
    tokio::task::spawn_blocking(move || cosignatures(checkpoints, entries, rounds)).await?
}

fn now() -> Timestamp {
    ztmesh_runtime::timefmt::now()
}

// ----- appends with checkpoints -----

/// The trust domain whose membership log is measured (its origin is `<domain>/membership`).
const TRUST_DOMAIN: &str = "bench.ztmesh.test";

/// Witness servers started, all in the policy.
const WITNESSES: usize = 3;

/// Cosignatures the policy demands of them.
const QUORUM: usize = 2;

/// Appends per side before measuring (first writes grow the files), and one checkpoint
/// cosigned by every witness on the checkpointing side (first connections, first heads).
const WARM_UP_APPENDS: u32 = 20;

/// Where in each second of a round the checkpoint is signed: mid-second, so that a round of
/// `n` seconds signs exactly `n` checkpoints, each while appends are running.
const TICK_OFFSET: Duration = Duration::from_millis(500);

/// Validity written into each rotation record, as the CA's default certificate lifetime would.
const CERTIFICATE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One CA database and the node whose certificate it rotates again and again. A rotation is
/// what the CA commits when a node renews: the new certificate and its membership-log entry in
/// one immediate transaction, durable on return.
struct Rotations {
    store: Arc<CaStore>,
    node_id: NodeId,
    /// The DER of a real node certificate, stored with every record so rows have real sizes.
    cert_der: Vec<u8>,
    /// The enrollment certificate, presented by every rotation (never revoked, so every
    /// rotation is allowed).
    presented: Serial,
    /// Number in the next record's serial; serials must be unique in a CA database.
    next_serial: u64,
}

/// A serial of 16 significant bytes (as the CA draws them) that counts `number`.
fn serial(number: u64) -> Serial {
    let mut bytes = [0x40u8; 16];
    bytes[8..].copy_from_slice(&number.to_be_bytes());
    Serial::from_bytes(&bytes)
}

impl Rotations {
    /// Opens a CA database at `path` and enrolls `node_id` with a one-time token, as the CA
    /// does (that enrollment is the log's first entry).
    fn open(path: &Path, node_id: NodeId, cert_der: Vec<u8>) -> Result<Self> {
        let store = Arc::new(CaStore::open(path)?);
        let mut rotations = Rotations {
            store,
            node_id,
            cert_der,
            presented: serial(0),
            next_serial: 0,
        };
        let token = TokenHash([7; 32]);
        let t = now();
        rotations
            .store
            .insert_token(&token, t, t.saturating_add(Duration::from_secs(60)), None)?;
        let enrollment = rotations.record(IssueKind::Enroll);
        rotations.store.redeem_token(&token, t, &enrollment)?;
        Ok(rotations)
    }

    fn record(&mut self, kind: IssueKind) -> IssuedRecord {
        let issued_at = now();
        let record = IssuedRecord {
            serial: serial(self.next_serial),
            node_id: self.node_id,
            not_before: issued_at.saturating_sub(Duration::from_secs(60)),
            not_after: issued_at.saturating_add(CERTIFICATE_LIFETIME),
            cert_der: self.cert_der.clone(),
            issued_at,
            kind,
        };
        self.next_serial += 1;
        record
    }

    fn rotate(&mut self) -> Result<()> {
        let record = self.record(IssueKind::Rotate);
        self.store.record_rotation(&self.presented, &record)?;
        Ok(())
    }

    fn rotate_times(&mut self, count: u32) -> Result<()> {
        (0..count).try_for_each(|_| self.rotate())
    }

    /// Rotates as fast as the disk allows for `duration`.
    fn rotate_for(&mut self, duration: Duration) -> Result<Round> {
        let start = Instant::now();
        let mut appended = 0u64;
        while start.elapsed() < duration {
            self.rotate()?;
            appended += 1;
        }
        Ok(Round {
            appended,
            elapsed: start.elapsed(),
        })
    }

    /// [`Rotations::rotate_for`] on a blocking thread; hands `self` back for the next round.
    async fn rotate_for_blocking(mut self, duration: Duration) -> Result<(Self, Round)> {
        tokio::task::spawn_blocking(move || {
            let round = self.rotate_for(duration)?;
            Ok((self, round))
        })
        .await?
    }
}

/// Appends made in one measured round.
#[derive(Debug, Clone, Copy)]
struct Round {
    appended: u64,
    elapsed: Duration,
}

impl Round {
    fn rate(&self) -> f64 {
        self.appended as f64 / self.elapsed.as_secs_f64()
    }
}

/// A node identity and a certificate the CA issued it, for the rows the benchmark writes.
fn enrolled_node() -> Result<(NodeId, Vec<u8>)> {
    let domain: TrustDomain = TRUST_DOMAIN.parse().map_err(|e| anyhow!("{e}"))?;
    let t = now();
    let ca = CertificateAuthority::generate(domain.clone(), t, Duration::from_secs(3600))?;
    let identity = IdentityKey::generate(&mut rand::rngs::OsRng);
    let node_id = identity.public().node_id();
    let key = TlsKeyPair::generate()?;
    let csr = key.csr_der(&node_id, &domain)?;
    let issued = ca.issue_node_certificate(&NodeCertificateRequest {
        csr_der: &csr,
        identity_key: &identity.public(),
        serial: serial(0),
        not_before: t.saturating_sub(Duration::from_secs(60)),
        not_after: t.saturating_add(CERTIFICATE_LIFETIME),
    })?;
    Ok((node_id, issued.der))
}

/// Witness servers running in this process, and the CA's policy naming them.
struct LocalWitnesses {
    policy: LogPolicy,
    /// Dropping it completes every server's shutdown future.
    shutdown: watch::Sender<()>,
    servers: Vec<JoinHandle<()>>,
}

impl LocalWitnesses {
    /// Creates, configures and starts [`WITNESSES`] witnesses in `dir`, each trusting
    /// `log_signer`, as `ztmesh witness init`, `add-log` and `serve` would (keys unencrypted:
    /// they live and die with the temporary directory).
    async fn start(dir: &Path, log_signer: &Signer) -> Result<Self> {
        let (shutdown, stopped) = watch::channel(());
        let mut policy = format!("log {}\n", log_signer.vkey());
        let mut members = Vec::new();
        let mut servers = Vec::new();
        for index in 1..=WITNESSES {
            let witness_dir = WitnessDir(dir.join(format!("witness-{index}")));
            let name = format!("witness-{index}.{TRUST_DOMAIN}");
            let report =
                witness_service::init_witness(&witness_dir, &name, &Protection::InsecurePlaintext)?;
            witness_service::add_log(&witness_dir, &log_signer.vkey(), None)?;
            let (witness, _) = Witness::open(&witness_dir, &Protection::InsecurePlaintext, true)?;
            let service =
                WitnessService::bind(witness, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
            let addr = service.local_addr()?;
            let mut stop = stopped.clone();
            servers.push(tokio::spawn(service.run(async move {
                // Err once the sender is dropped: that is the signal.
                let _ = stop.changed().await;
            })));
            let member = format!("w{index}");
            policy.push_str(&format!("witness {member} {} http://{addr}\n", report.vkey));
            members.push(member);
        }
        policy.push_str(&format!(
            "group witnesses {QUORUM} {}\nquorum witnesses\n",
            members.join(" ")
        ));
        Ok(LocalWitnesses {
            policy: LogPolicy::parse(policy, &log_signer.verifier())?,
            shutdown,
            servers,
        })
    }

    async fn stop(self) -> Result<()> {
        drop(self.shutdown);
        for server in self.servers {
            server.await?;
        }
        Ok(())
    }
}

/// The CA side of publication: the log over the checkpointing side's database, its key, and
/// the way to the witnesses.
struct Publisher {
    log: Arc<MembershipLog>,
    signer: Signer,
    transport: HttpWitnessTransport,
}

/// What became of one signed checkpoint.
#[derive(Debug, Clone, Copy)]
struct Publication {
    /// Witnesses whose verified cosignature the log kept.
    cosignatures: usize,
    /// From the tick to the cosignature that completed the quorum, if it was completed.
    quorum_after: Option<Duration>,
}

impl Publisher {
    /// One tick of the CA's publisher: signs a checkpoint if the log grew, submits it to every
    /// witness of the policy at once and waits for all answers. Submissions that fail are
    /// added to `failures`.
    async fn tick(
        &self,
        policy: &LogPolicy,
        failures: &mut Vec<String>,
    ) -> Result<Option<Publication>> {
        let tick = Instant::now();
        let published = {
            let (log, signer) = (self.log.clone(), self.signer.clone());
            tokio::task::spawn_blocking(move || log.checkpoint_if_grown(&signer)).await??
        };
        let Some(published) = published else {
            return Ok(None);
        };
        let published = &published;
        let answers = futures::future::join_all(policy.witnesses().iter().map(|witness| async {
            let result = submit_checkpoint(&self.log, witness, &self.transport, published).await;
            (result, tick.elapsed())
        }))
        .await;
        let mut cosigned_after = Vec::new();
        for (result, after) in answers {
            match result {
                Ok(_) => cosigned_after.push(after),
                Err(error) => failures.push(error.to_string()),
            }
        }
        cosigned_after.sort();
        // The note nodes would be served: the policy decides, exactly as a node checks it.
        let note = self
            .log
            .latest_note()
            .context("no checkpoint after signing one")?;
        let quorum = note.text() == published.note.text()
            && policy.policy().verify_checkpoint(&note).is_ok();
        Ok(Some(Publication {
            cosignatures: cosigned_after.len(),
            quorum_after: cosigned_after.get(QUORUM - 1).copied().filter(|_| quorum),
        }))
    }

    /// One measured round: `rotations` appends for `duration` while a checkpoint is signed
    /// and cosigned in every second of it.
    async fn round(
        &self,
        policy: &LogPolicy,
        rotations: Rotations,
        duration: Duration,
        publications: &mut Vec<Publication>,
        failures: &mut Vec<String>,
    ) -> Result<(Rotations, Round)> {
        let start = tokio::time::Instant::now();
        let appending = tokio::spawn(rotations.rotate_for_blocking(duration));
        let deadline = start + duration;
        let mut ticks = tokio::time::interval_at(start + TICK_OFFSET, PUBLISH_INTERVAL);
        // A tick held up by a slow publication is not made up for: one checkpoint at a time.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            publications.extend(self.tick(policy, failures).await?);
        }
        appending.await?
    }
}

async fn appends(args: &TlogOptions, dir: &Path) -> Result<()> {
    let domain: TrustDomain = TRUST_DOMAIN.parse().map_err(|e| anyhow!("{e}"))?;
    let signer = Signer::generate(&log_origin(&domain), &mut rand::rngs::OsRng)?;
    let witnesses = LocalWitnesses::start(dir, &signer).await?;
    let (node_id, cert_der) = enrolled_node()?;
    let mut checkpointed = Rotations::open(&dir.join("ca.db"), node_id, cert_der.clone())?;
    let mut baseline = Rotations::open(&dir.join("baseline.db"), node_id, cert_der)?;
    // The witnesses speak plain http://, which leaves these TLS settings unused.
    let tls = rustls::ClientConfig::builder_with_provider(ztmesh_runtime::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let publisher = Publisher {
        log: Arc::new(MembershipLog::open(checkpointed.store.clone(), &signer)?),
        signer,
        transport: HttpWitnessTransport::new(tls).map_err(|e| anyhow!("{e}"))?,
    };

    let mut failures = Vec::new();
    checkpointed.rotate_times(WARM_UP_APPENDS)?;
    let warm_up = publisher
        .tick(&witnesses.policy, &mut failures)
        .await?
        .context("the log did not grow during the warm-up")?;
    if warm_up.cosignatures != WITNESSES {
        bail!(
            "only {} of {WITNESSES} witnesses cosigned the first checkpoint: {}",
            warm_up.cosignatures,
            failures.join("; ")
        );
    }
    baseline.rotate_times(WARM_UP_APPENDS)?;

    let duration = Duration::from_secs(args.seconds);
    let (mut with_checkpoints, mut without) = (Vec::new(), Vec::new());
    let mut publications = Vec::new();
    for _ in 0..args.rounds {
        let (rotations, round) = publisher
            .round(
                &witnesses.policy,
                checkpointed,
                duration,
                &mut publications,
                &mut failures,
            )
            .await?;
        checkpointed = rotations;
        with_checkpoints.push(round);
        let (rotations, round) = baseline.rotate_for_blocking(duration).await?;
        baseline = rotations;
        without.push(round);
    }
    let log_size = publisher.log.sync()?;
    drop(publisher);
    witnesses.stop().await?;

    let fastest = |rounds: &[Round]| rounds.iter().map(Round::rate).fold(0.0, f64::max);
    let (checkpointed_rate, baseline_rate) = (fastest(&with_checkpoints), fastest(&without));
    let signed = publications.len();
    let cosignatures: usize = publications.iter().map(|p| p.cosignatures).sum();
    let mut quorum_after: Vec<Duration> =
        publications.iter().filter_map(|p| p.quorum_after).collect();
    quorum_after.sort();
    out!(
        "membership-log appends: CaStore::record_rotation, one SQLite transaction per entry \
         (WAL, synchronous=FULL) in {}, {} rounds of {} s per side",
        dir.display(),
        args.rounds,
        args.seconds
    );
    out!(
        "  checkpoints: one per second, MembershipLog::checkpoint_if_grown + submit_checkpoint \
         over HTTP to {WITNESSES} witness servers on 127.0.0.1 (witness.db each), policy quorum \
         {QUORUM} of {WITNESSES}; log size at the end {log_size}"
    );
    out!("  no checkpoints (baseline):                {baseline_rate:>9.1} appends/s");
    out!("  a cosigned checkpoint every second:       {checkpointed_rate:>9.1} appends/s");
    out!(
        "  checkpoints signed {signed}, cosignatures kept {cosignatures} of {}",
        signed * WITNESSES
    );
    if let (Some(median), Some(slowest)) = (
        quorum_after.get(quorum_after.len() / 2),
        quorum_after.last(),
    ) {
        out!(
            "  tick to {QUORUM}-of-{WITNESSES} quorum: median {:.1} ms, slowest {:.1} ms",
            median.as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0
        );
    }
    if let Some(first) = failures.first() {
        out!(
            "  {} submissions failed, the first: {first}",
            failures.len()
        );
    }
    out!(
        "  checkpoints that met the {QUORUM}-of-{WITNESSES} quorum: {} of {signed}",
        quorum_after.len()
    );
    out!(
        "  ratio checkpointed / baseline:            {:>9.3}",
        checkpointed_rate / baseline_rate
    );
    Ok(())
}

// ----- witness cosignatures -----

/// Checkpoints of each side decided before measuring.
const COSIGN_WARM_UP: usize = 100;

/// Consecutive signed checkpoints of one growing log, as a witness receives them.
struct ConsecutiveCheckpoints {
    /// The log key, as the witness trusts it.
    log_verifiers: Vec<Verifier>,
    log_key: VerifyingKey,
    cosigner: CosignatureSigner,
    /// A bare Ed25519 key for the baseline's signature.
    baseline_key: SigningKey,
    /// The witness's clock for every cosignature (POSIX seconds).
    time_secs: u64,
    /// The head the witness cosigned before the first step.
    first: TreeHead,
    steps: Vec<Step>,
}

/// One `add-checkpoint` from the previous checkpoint to the next.
struct Step {
    old: TreeHead,
    new: TreeHead,
    proof: Vec<Hash>,
    /// The signed note as it arrives (text, blank line, log signature line).
    note: String,
    /// The checkpoint body and the log's signature of it, for the floor.
    text: String,
    log_signature: Signature,
    /// The bytes a v1 cosignature of this checkpoint signs, for the baseline.
    cosigned_message: Vec<u8>,
}

impl ConsecutiveCheckpoints {
    fn new(checkpoints: u32, entries_per_checkpoint: u32) -> Result<Self> {
        let domain: TrustDomain = TRUST_DOMAIN.parse().map_err(|e| anyhow!("{e}"))?;
        let origin = log_origin(&domain);
        let log_signer = Signer::generate(&origin, &mut rand::rngs::OsRng)?;
        let cosigner = CosignatureSigner::generate(
            &format!("witness.{TRUST_DOMAIN}"),
            &mut rand::rngs::OsRng,
        )?;
        let time_secs = now().as_unix_secs();
        let mut tree = MerkleTree::new();
        let grow = |tree: &mut MerkleTree| {
            for _ in 0..entries_per_checkpoint {
                let index = tree.size();
                tree.append(&index.to_be_bytes());
            }
            TreeHead {
                size: tree.size(),
                root: tree.root(),
            }
        };
        let first = grow(&mut tree);
        let mut steps = Vec::with_capacity(checkpoints as usize);
        let mut old = first;
        for _ in 0..checkpoints {
            let new = grow(&mut tree);
            let text = Checkpoint::new(&origin, new.size, new.root)?.to_string();
            let note = Note::sign(&text, &[&log_signer])?;
            let log_signature = Signature::from_slice(
                note.signatures()
                    .first()
                    .context("a signed note without a signature")?
                    .signature(),
            )?;
            steps.push(Step {
                old,
                new,
                proof: tree.consistency_proof(old.size, new.size)?,
                note: note.to_string(),
                cosigned_message: format!("cosignature/v1\ntime {time_secs}\n{text}").into_bytes(),
                text,
                log_signature,
            });
            old = new;
        }
        Ok(ConsecutiveCheckpoints {
            log_verifiers: vec![log_signer.verifier()],
            log_key: *log_signer.verifier().public_key(),
            cosigner,
            baseline_key: SigningKey::generate(&mut rand::rngs::OsRng),
            time_secs,
            first,
            steps,
        })
    }
}

/// The witness's stored head, in memory: what `WitnessStore::compare_and_swap` decides,
/// without the write to `witness.db`.
struct HeadInMemory(Option<TreeHead>);

impl HeadInMemory {
    fn compare_and_swap(&mut self, expected: Option<TreeHead>, new: TreeHead) -> SwapOutcome {
        if self.0 != expected {
            return SwapOutcome::Conflict {
                stored_size: self.0.map_or(0, |head| head.size),
            };
        }
        self.0 = Some(new);
        SwapOutcome::Swapped
    }
}

/// The witness path for every step: decide, swap the head, cosign (the 200 body).
fn witness_pass(data: &ConsecutiveCheckpoints, steps: &[Step]) -> Result<Duration> {
    let mut head = HeadInMemory(Some(data.first));
    let start = Instant::now();
    for step in steps {
        let known = head.0;
        let accepted = check_add_checkpoint(
            known,
            step.old.size,
            &step.proof,
            &step.note,
            &data.log_verifiers,
        )?;
        let outcome = head.compare_and_swap(known, accepted.new_head());
        let stored = accepted.after_swap(outcome)?;
        std::hint::black_box(stored.cosign(&[&data.cosigner], data.time_secs)?);
    }
    Ok(start.elapsed())
}

/// The baseline for every step: one consistency-proof verification and one Ed25519
/// signature over the bytes a cosignature signs.
fn baseline_pass(data: &ConsecutiveCheckpoints, steps: &[Step]) -> Result<Duration> {
    let start = Instant::now();
    for step in steps {
        verify_consistency(
            step.old.size,
            step.new.size,
            &step.proof,
            &step.old.root,
            &step.new.root,
        )?;
        std::hint::black_box(data.baseline_key.sign(&step.cosigned_message));
    }
    Ok(start.elapsed())
}

/// The baseline plus the strict verification of the log's signature: every cryptographic
/// operation the witness path cannot skip.
fn floor_pass(data: &ConsecutiveCheckpoints, steps: &[Step]) -> Result<Duration> {
    let start = Instant::now();
    for step in steps {
        data.log_key
            .verify_strict(step.text.as_bytes(), &step.log_signature)?;
        verify_consistency(
            step.old.size,
            step.new.size,
            &step.proof,
            &step.old.root,
            &step.new.root,
        )?;
        std::hint::black_box(data.baseline_key.sign(&step.cosigned_message));
    }
    Ok(start.elapsed())
}

fn cosignatures(checkpoints: u32, entries_per_checkpoint: u32, rounds: u32) -> Result<()> {
    let data = ConsecutiveCheckpoints::new(checkpoints, entries_per_checkpoint)?;
    let warm_up = &data.steps[..data.steps.len().min(COSIGN_WARM_UP)];
    witness_pass(&data, warm_up)?;
    baseline_pass(&data, warm_up)?;
    floor_pass(&data, warm_up)?;

    let (mut witness, mut baseline, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        witness.push(witness_pass(&data, &data.steps)?);
        baseline.push(baseline_pass(&data, &data.steps)?);
        floor.push(floor_pass(&data, &data.steps)?);
    }
    let per_round = data.steps.len() as f64;
    let rate = |rounds: &[Duration]| {
        per_round
            / rounds
                .iter()
                .min()
                .copied()
                .unwrap_or(Duration::MAX)
                .as_secs_f64()
    };
    let (witness_rate, baseline_rate, floor_rate) = (rate(&witness), rate(&baseline), rate(&floor));
    let proof_lengths = data.steps.iter().map(|step| step.proof.len());
    let shortest = proof_lengths.clone().min().unwrap_or(0);
    let longest = proof_lengths.clone().max().unwrap_or(0);
    let mean = proof_lengths.sum::<usize>() as f64 / per_round;
    out!(
        "witness cosignatures on one core: {} consecutive checkpoints {} entries apart \
         (sizes {}..{}), head state in memory (no witness.db), x {rounds} rounds",
        data.steps.len(),
        entries_per_checkpoint,
        data.first.size,
        data.steps
            .last()
            .map_or(data.first.size, |step| step.new.size),
    );
    out!("  consistency proofs of {shortest}..{longest} hashes ({mean:.1} on average)");
    out!("  1 Ed25519 sign + 1 consistency proof (baseline): {baseline_rate:>9.0} /s");
    out!("  + strict verify of the log signature (floor):    {floor_rate:>9.0} /s");
    out!("  check_add_checkpoint + swap + cosign:            {witness_rate:>9.0} cosignatures/s");
    out!(
        "  ratio cosign path / floor:                       {:>9.3}",
        witness_rate / floor_rate
    );
    out!(
        "  ratio cosign path / baseline:                    {:>9.3}",
        witness_rate / baseline_rate
    );
    Ok(())
}
