//! `ztmesh demo` and `ztmesh bench ...`: their flags, help and bounds, turned into the options
//! of `ztmesh-lab`, which does the work. Nothing here starts a process or measures anything.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ztmesh_attest::EvidenceType;
use ztmesh_lab::bench::HandshakeOptions;
use ztmesh_lab::bench_attest::AttestOptions;
use ztmesh_lab::bench_core::{DtnOptions, GossipOptions};
use ztmesh_lab::bench_mesh::MeshOptions;
use ztmesh_lab::bench_tlog::TlogOptions;
use ztmesh_lab::demo::DemoOptions;

/// Options of `ztmesh demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of nodes (3..=16).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(3..=16))]
    nodes: u32,
    /// Keep the mesh running at the end and print commands to inspect it (Ctrl-C stops it).
    #[arg(long)]
    keep: bool,
    /// Directory to use instead of a fresh temporary one (must not exist yet).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Full mutual-TLS 1.3 handshakes per second over loopback: ztmesh's peer verifier (chain +
    /// revocation + identity profile) versus a plain rustls WebPki client verifier, same certificates.
    Handshake(HandshakeArgs),
    /// Validated gossip messages per second on one core versus raw Ed25519 verifications of
    /// the same key in the same run.
    Gossip(GossipArgs),
    /// Durable bundle accepts per second (fsync) at 1 KiB and 64 KiB versus a bare SQLite
    /// insert of the same bytes in the same run.
    Dtn(DtnArgs),
    /// Real node processes on loopback: full-dissemination latency of gossip, revocation
    /// propagation, and bundle latency through one relay (p50/p99, with a one-hop baseline).
    Mesh(MeshArgs),
    /// Membership-log appends per second while a checkpoint is cosigned by 2 of 3 loopback
    /// witnesses every second, versus the same appends with no checkpoints; and witness
    /// cosignatures per second versus one Ed25519 signature plus one consistency proof.
    Tlog(TlogArgs),
    /// Verifications per second of each attestation evidence type (dev, tpm2, tdx, sgx,
    /// sev-snp) on its sample evidence, versus only the raw signature verifications that
    /// evidence contains, same bytes and primitive crates, in the same run.
    Attest(AttestArgs),
}

/// Options of `ztmesh bench handshake`.
#[derive(Args, Debug)]
pub struct HandshakeArgs {
    /// Handshakes per measured round (each verifier runs this many, interleaved in 4 rounds).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    iterations: u32,
    /// Revoked serials in the CRL the ztmesh verifier checks against.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    revoked: u32,
}

/// Options of `ztmesh bench gossip`.
#[derive(Args, Debug)]
pub struct GossipArgs {
    /// Distinct signed anomaly messages. Each round feeds all of them to a fresh gossip core
    /// (a core drops what it has seen) and verifies all of them raw.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(10..=200_000))]
    messages: u32,
    /// Measured rounds per side, alternating, after one warm-up pass of each. Rates come from
    /// each side's fastest round (the one least disturbed by other load on a shared machine);
    /// the ratio of the means is printed too.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
}

/// Options of `ztmesh bench dtn`.
#[derive(Args, Debug)]
pub struct DtnArgs {
    /// Bundles accepted per payload size (1 KiB and 64 KiB), matched by as many baseline
    /// inserts. At most 2000, so that every bundle fits the router's default store bounds.
    /// The files go to the system temporary directory (`TMPDIR`), whose disk is what this
    /// measures.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(10..=2000))]
    bundles: u32,
}

/// Options of `ztmesh bench mesh`.
#[derive(Args, Debug)]
pub struct MeshArgs {
    /// Node processes (4..=64). Nodes keep up to 64 links, so every pair is linked.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(4..=64))]
    nodes: u32,
    /// Anomaly signatures published one after another, each on a random node.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    messages: u32,
    /// Nodes revoked one after another (at most nodes − 3: three stay for the bundle phase).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=61))]
    revocations: u32,
    /// 1 KiB bundles sent directly (baseline) and again through the relay.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    bundles: u32,
}

/// Options of `ztmesh bench tlog`.
#[derive(Args, Debug)]
pub struct TlogArgs {
    /// Length of each measured append round, per side. The checkpointing side signs one
    /// checkpoint in every second of it and has the witnesses cosign it.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Measured rounds per side, in both measurements, alternating, after a warm-up of each
    /// side. Rates come from each side's fastest round (the one least disturbed by other load).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Consecutive checkpoints the witness decides on and cosigns in each round of the
    /// cosignature measurement (the baseline does as many signatures and proofs).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(10..=20_000))]
    checkpoints: u32,
    /// Entries the log grows by between two consecutive checkpoints of the cosignature
    /// measurement (the first checkpoint has this many entries too).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=200))]
    entries_per_checkpoint: u32,
}

/// Options of `ztmesh bench attest`.
#[derive(Args, Debug)]
pub struct AttestArgs {
    /// Measured time per side (full verification, baseline) and evidence type, in seconds,
    /// split evenly into the rounds. Each round runs at least one operation per side.
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Evidence types to measure, comma-separated (default: all of dev, tpm2, tdx, sgx,
    /// sev-snp).
    #[arg(long, value_delimiter = ',', value_parser = ztmesh_lab::bench_attest::parse_evidence_type)]
    types: Vec<EvidenceType>,
    /// Measured rounds per side, alternating with the other side, after one warm-up round of
    /// each.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.001..=600.0).contains(&seconds) {
        return Err(format!("{seconds} s is outside 0.001..=600"));
    }
    Ok(seconds)
}

/// `ztmesh demo`.
pub async fn demo(args: DemoArgs) -> Result<()> {
    ztmesh_lab::demo::run(DemoOptions {
        nodes: args.nodes,
        keep: args.keep,
        dir: args.dir,
    })
    .await
}

/// `ztmesh bench ...`.
pub async fn bench(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Handshake(args) => {
            ztmesh_lab::bench::handshake(HandshakeOptions {
                iterations: args.iterations,
                revoked: args.revoked,
            })
            .await
        }
        BenchCommand::Gossip(args) => {
            ztmesh_lab::bench_core::gossip(GossipOptions {
                messages: args.messages,
                rounds: args.rounds,
            })
            .await
        }
        BenchCommand::Dtn(args) => {
            ztmesh_lab::bench_core::dtn(DtnOptions {
                bundles: args.bundles,
            })
            .await
        }
        BenchCommand::Mesh(args) => {
            ztmesh_lab::bench_mesh::run(MeshOptions {
                nodes: args.nodes,
                messages: args.messages,
                revocations: args.revocations,
                bundles: args.bundles,
            })
            .await
        }
        BenchCommand::Tlog(args) => {
            ztmesh_lab::bench_tlog::run(TlogOptions {
                seconds: args.seconds,
                rounds: args.rounds,
                checkpoints: args.checkpoints,
                entries_per_checkpoint: args.entries_per_checkpoint,
            })
            .await
        }
        BenchCommand::Attest(args) => {
            ztmesh_lab::bench_attest::run(AttestOptions {
                seconds: args.seconds,
                types: args.types,
                rounds: args.rounds,
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_outside_the_allowed_range_are_refused() {
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("601").is_err());
        assert!(parse_seconds("soon").unwrap_err().contains("soon"));
    }
}
