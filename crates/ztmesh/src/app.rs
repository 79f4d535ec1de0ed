//! Commands of local applications: `publish`, `watch` and `bundle`. They reach the node's API
//! with its `api.token`, so they need no passphrase and never touch key material.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{Args, Subcommand};
use ztmesh_node::events::NodeEvent;
use ztmesh_node::local_api::{PublishAnomalyRequest, SendBundleRequest};
use ztmesh_node::node_client::LocalApiClient;
use ztmesh_node::node_dir::NodeDir;
use ztmesh_runtime::timefmt::parse_duration;

/// Largest file `bundle send` reads (the node enforces its own limit too).
const MAX_BUNDLE_FILE: u64 = 16 * 1024 * 1024;

#[derive(Subcommand, Debug)]
pub enum PublishCommand {
    /// Publish an anomaly signature: a hash of the event and a short description, never raw logs.
    Anomaly(PublishAnomalyArgs),
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The node's data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct PublishAnomalyArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// SHA-256 of the observed event, 64 hex characters.
    #[arg(long = "hash", value_name = "SHA256")]
    hash: String,
    /// Indicator type, e.g. port_scan (1–64 characters of a-z 0-9 _ . : -).
    #[arg(long = "type", value_name = "TYPE")]
    indicator: String,
    /// Risk score 0–100.
    #[arg(long = "score", value_parser = clap::value_parser!(u8).range(0..=100))]
    score: u8,
    /// Detection rule id.
    #[arg(long)]
    rule: Option<String>,
    /// Metadata entry KEY=VALUE (repeatable, at most 8).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// How long the signature stays in the mesh.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[derive(Args, Debug)]
pub struct AnomaliesArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print each event as one JSON line.
    #[arg(long)]
    json: bool,
    /// Stop after this many events (not counting the initial ready event).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Send a file as a delay-tolerant bundle (accepted once it is on disk; delivered when a path appears).
    Send(BundleSendArgs),
    /// List bundles delivered to this node (and, with --queued, those held for forwarding).
    List(BundleListArgs),
    /// Write a delivered bundle's payload to a file.
    Get(BundleGetArgs),
}

#[derive(Args, Debug)]
pub struct BundleSendArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Destination NodeId (or dtn://<NodeId>/<service>).
    #[arg(long)]
    to: String,
    /// Destination service when --to is a NodeId.
    #[arg(long)]
    service: Option<String>,
    /// Lifetime: the bundle is deleted everywhere when it expires.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// File to send.
    file: PathBuf,
}

#[derive(Args, Debug)]
pub struct BundleListArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Also list bundles queued here for forwarding.
    #[arg(long)]
    queued: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct BundleGetArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Bundle id (from `bundle list`).
    id: String,
    /// Output file ("-" for stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Delete the bundle from the node after writing it (acknowledge).
    #[arg(long)]
    delete: bool,
}

pub(crate) fn client(node: &NodeArgs) -> Result<LocalApiClient> {
    LocalApiClient::from_dir(&NodeDir(node.data_dir.clone())).with_context(|| {
        format!(
            "reaching the node of {} (is `ztmesh run` running?)",
            node.data_dir.display()
        )
    })
}

pub async fn publish(command: PublishCommand) -> Result<()> {
    let PublishCommand::Anomaly(args) = command;
    if args.meta.len() > 8 {
        bail!("at most 8 --meta entries");
    }
    let request = PublishAnomalyRequest {
        event_sha256: args.hash.to_lowercase(),
        indicator: args.indicator,
        risk_score: args.score,
        rule_id: args.rule,
        metadata: args.meta.into_iter().collect::<BTreeMap<_, _>>(),
        ttl_sec: Some(args.ttl.as_secs().max(1)),
    };
    let answer = client(&args.node)?.publish_anomaly(&request).await?;
    out!("{}", answer.id);
    Ok(())
}

#[derive(Args, Debug)]
pub struct ProposeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Parameter: gossip_fanout, rate_limit_rpm, cert_lifetime_secs, attestation_validity_secs
    /// or health_check_interval_secs.
    param: String,
    /// The new value (within the parameter's bounds).
    value: u64,
    /// How long the vote stays open.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    ttl: Duration,
}

#[derive(Args, Debug)]
pub struct VoteArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The proposal id (64 hex, from `ztmesh proposals`).
    id: String,
    /// approve or reject.
    #[arg(value_parser = ["approve", "reject"])]
    choice: String,
}

#[derive(Args, Debug)]
pub struct ProposalsArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `ztmesh propose`: a signed governance proposal, gossiped mesh-wide.
pub async fn propose(args: ProposeArgs) -> Result<()> {
    let answer = client(&args.node)?
        .propose(&args.param, args.value, Some(args.ttl.as_secs().max(1)))
        .await?;
    out!("{}", answer.id);
    Ok(())
}

/// `ztmesh vote`: a signed vote; only Tier 1 votes count.
pub async fn vote(args: VoteArgs) -> Result<()> {
    let answer = client(&args.node)?
        .vote(&args.id, args.choice == "approve")
        .await?;
    out!("{}", answer.id);
    Ok(())
}

/// `ztmesh proposals`: what the node holds and the parameters in force.
pub async fn proposals(args: ProposalsArgs) -> Result<()> {
    let answer = client(&args.node)?.proposals().await?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    out!(
        "{:<64} {:<27} {:>8} {:>9} {:>8} {:<8} EXPIRES",
        "ID",
        "PARAM = VALUE",
        "APPROVE",
        "REJECT",
        "TIER 1",
        "STATE"
    );
    for p in &answer.proposals {
        out!(
            "{:<64} {:<27} {:>8} {:>9} {:>8} {:<8} {}",
            p.id,
            format!("{} = {}", p.param, p.value),
            p.approvals,
            p.rejections,
            p.tier1_nodes,
            if p.applied { "applied" } else { "open" },
            p.expires_at
        );
    }
    let params: Vec<String> = answer
        .parameters
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    out!("in force: {}", params.join(", "));
    Ok(())
}

pub async fn anomalies(args: AnomaliesArgs) -> Result<()> {
    let answer = client(&args.node)?.anomalies().await?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    for a in &answer.anomalies {
        out!("{}", describe(&NodeEvent::Anomaly(a.clone())));
    }
    Ok(())
}

pub async fn watch(args: WatchArgs) -> Result<()> {
    let client = client(&args.node)?;
    let mut seen = 0u64;
    let limit = args.count;
    let json = args.json;
    client
        .watch(|event| {
            if json {
                out!("{}", serde_json::to_string(&event).unwrap_or_default());
            } else {
                out!("{}", describe(&event));
            }
            if !matches!(event, NodeEvent::Ready { .. }) {
                seen += 1;
            }
            limit.is_none_or(|n| seen < n)
        })
        .await?;
    Ok(())
}

fn describe(event: &NodeEvent) -> String {
    match event {
        NodeEvent::Ready { node_id, at } => format!("watching node {node_id} since {at}"),
        NodeEvent::Anomaly(a) => format!(
            "anomaly  {} from {} type={} score={} hash={}{}",
            a.id,
            a.origin,
            a.indicator,
            a.risk_score,
            a.event_sha256,
            a.rule_id
                .as_ref()
                .map(|r| format!(" rule={r}"))
                .unwrap_or_default()
        ),
        NodeEvent::Bundle(b) => format!(
            "bundle   {} from {} to {} ({} bytes)",
            b.bundle_id, b.source, b.destination, b.len
        ),
        NodeEvent::Revocation { nodes, crl_number } => {
            format!("revocation crl={crl_number} nodes={}", nodes.join(","))
        }
        NodeEvent::Governance {
            param,
            value,
            proposal_id,
        } => format!("governance {param} = {value} (proposal {proposal_id})"),
        NodeEvent::Lagged { missed } => {
            format!("lagged   {missed} events missed (list them with the API)")
        }
        other => format!("{other:?}"),
    }
}

pub async fn bundle(command: BundleCommand) -> Result<()> {
    match command {
        BundleCommand::Send(args) => {
            let size = std::fs::metadata(&args.file)
                .with_context(|| format!("reading {}", args.file.display()))?
                .len();
            if size > MAX_BUNDLE_FILE {
                bail!(
                    "{} is {size} bytes; bundles carry at most {MAX_BUNDLE_FILE}",
                    args.file.display()
                );
            }
            let payload = std::fs::read(&args.file)
                .with_context(|| format!("reading {}", args.file.display()))?;
            let request = SendBundleRequest {
                destination: args.to,
                ttl_sec: args.ttl.as_secs().max(1),
                payload: base64::engine::general_purpose::STANDARD.encode(payload),
                service: args.service,
            };
            let answer = client(&args.node)?.send_bundle(&request).await?;
            out!("{}", answer.bundle_id);
            eprintln!("accepted; expires {}", answer.expires_at);
        }
        BundleCommand::List(args) => {
            let answer = client(&args.node)?.bundles(args.queued).await?;
            if args.json {
                out!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            out!(
                "{:<56} {:<48} {:>9} {:<21}",
                "DELIVERED",
                "SOURCE",
                "BYTES",
                "RECEIVED"
            );
            for b in &answer.delivered {
                out!(
                    "{:<56} {:<48} {:>9} {:<21}",
                    b.bundle_id,
                    b.source,
                    b.len,
                    b.received_at
                );
            }
            if let Some(queued) = &answer.queued {
                out!(
                    "{:<56} {:<48} {:>9} {:<21}",
                    "QUEUED",
                    "DESTINATION",
                    "BYTES",
                    "EXPIRES"
                );
                for b in queued {
                    out!(
                        "{:<56} {:<48} {:>9} {:<21}",
                        b.bundle_id,
                        b.destination,
                        b.len,
                        b.expires_at
                    );
                }
            }
        }
        BundleCommand::Get(args) => {
            let client = client(&args.node)?;
            let content = client.bundle(&args.id).await?;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(content.payload.as_bytes())
                .context("the node sent a payload that is not base64")?;
            if args.output.as_os_str() == "-" {
                use std::io::Write;
                std::io::stdout().write_all(&payload)?;
            } else {
                std::fs::write(&args.output, &payload)
                    .with_context(|| format!("writing {}", args.output.display()))?;
                eprintln!("wrote {} bytes to {}", payload.len(), args.output.display());
            }
            if args.delete {
                client.delete_bundle(&args.id).await?;
            }
        }
    }
    Ok(())
}
