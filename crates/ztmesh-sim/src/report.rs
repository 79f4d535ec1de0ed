//! What a run measured: per message, how long it took to reach every node, in how many
//! anti-entropy rounds and at what cost in frames and bytes; for the whole run, traffic and
//! the fate of bundles.
//!
//! Definitions:
//! - **coverage time**: from publication until the last node first delivered the message;
//! - **rounds**: anti-entropy intervals elapsed by then, `ceil(coverage / interval)`;
//! - **duplicate ratio**: gossip frames that carried the message (pushes and pull answers,
//!   lost ones included) divided by `N - 1`, the number of frames a perfect broadcast needs;
//! - **bytes**: the length of those frames.

use std::fmt;

use ztmesh_core::NodeId;
use ztmesh_gossip::{MessageId, MessageKind};

use crate::NetworkStats;

/// One message's dissemination.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageReport {
    /// The message.
    pub id: MessageId,
    /// Its signer.
    pub origin: NodeId,
    /// Its kind.
    pub kind: MessageKind,
    /// The node that handed it to its gossip core.
    pub publisher: usize,
    /// When, in ms since the start.
    pub published_at_ms: u64,
    /// COSE envelope length.
    pub size: usize,
    /// Nodes that delivered it.
    pub reached: usize,
    /// Time until every node had delivered it, if every node has.
    pub coverage_ms: Option<u64>,
    /// Anti-entropy intervals in that time.
    pub rounds: Option<u64>,
    /// Gossip frames that carried it.
    pub frames_sent: u64,
    /// Those that arrived.
    pub frames_delivered: u64,
    /// `frames_sent / (N - 1)`.
    pub duplicate_ratio: f64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
}

/// What became of the bundles accepted so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleSummary {
    /// Accepted by a router.
    pub accepted: u64,
    /// Delivered exactly once.
    pub delivered: u64,
    /// Delivered more than once (a bug).
    pub duplicated: u64,
    /// Never delivered, lifetime over.
    pub expired: u64,
    /// Not delivered yet, still alive.
    pub pending: u64,
}

/// A run's measurements. Equal seeds and calls give equal reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Links added.
    pub links: usize,
    /// Virtual time since the start.
    pub elapsed_ms: u64,
    /// The gossip anti-entropy interval rounds are counted in.
    pub anti_entropy_interval_ms: u64,
    /// Every message published, in order.
    pub messages: Vec<MessageReport>,
    /// Frame counters.
    pub network: NetworkStats,
    /// Bundle outcomes.
    pub bundles: BundleSummary,
    /// Broken invariants recorded.
    pub violations: usize,
}

impl Report {
    /// Messages every node delivered.
    pub fn fully_covered(&self) -> impl Iterator<Item = &MessageReport> {
        self.messages.iter().filter(|m| m.coverage_ms.is_some())
    }

    /// Longest coverage time among fully covered messages.
    pub fn max_coverage_ms(&self) -> Option<u64> {
        self.fully_covered().filter_map(|m| m.coverage_ms).max()
    }

    /// Most rounds among fully covered messages.
    pub fn max_rounds(&self) -> Option<u64> {
        self.fully_covered().filter_map(|m| m.rounds).max()
    }

    /// Highest duplicate ratio among all messages.
    pub fn max_duplicate_ratio(&self) -> Option<f64> {
        self.messages
            .iter()
            .map(|m| m.duplicate_ratio)
            .max_by(f64::total_cmp)
    }

    /// Mean duplicate ratio over all messages.
    pub fn mean_duplicate_ratio(&self) -> Option<f64> {
        if self.messages.is_empty() {
            return None;
        }
        let sum: f64 = self.messages.iter().map(|m| m.duplicate_ratio).sum();
        Some(sum / self.messages.len() as f64)
    }
}

/// min / median / max of some values, or "-" when there are none.
struct Spread(Vec<f64>);

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut values = self.0.clone();
        if values.is_empty() {
            return f.write_str("-");
        }
        values.sort_by(f64::total_cmp);
        let median = values[values.len() / 2];
        let (min, max) = (values[0], values[values.len() - 1]);
        let precision = f.precision().unwrap_or(0);
        write!(
            f,
            "min {min:.precision$} / median {median:.precision$} / max {max:.precision$}"
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {}: {} nodes, {} links, {:.3} s virtual, anti-entropy every {} ms",
            self.seed,
            self.nodes,
            self.links,
            self.elapsed_ms as f64 / 1000.0,
            self.anti_entropy_interval_ms
        )?;
        let covered: Vec<&MessageReport> = self.fully_covered().collect();
        writeln!(
            f,
            "messages: {} published, {} reached every node",
            self.messages.len(),
            covered.len()
        )?;
        let coverage = Spread(
            covered
                .iter()
                .filter_map(|m| m.coverage_ms)
                .map(|ms| ms as f64)
                .collect(),
        );
        let rounds = Spread(
            covered
                .iter()
                .filter_map(|m| m.rounds)
                .map(|r| r as f64)
                .collect(),
        );
        let ratio = Spread(self.messages.iter().map(|m| m.duplicate_ratio).collect());
        writeln!(f, "  time to full coverage (ms): {coverage}")?;
        writeln!(f, "  anti-entropy rounds to full coverage: {rounds}")?;
        writeln!(f, "  duplicate ratio (message frames / (N-1)): {ratio:.2}")?;
        for m in &self.messages {
            let coverage = m
                .coverage_ms
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string());
            let rounds = m.rounds.map_or_else(|| "-".to_owned(), |r| r.to_string());
            writeln!(
                f,
                "  {} {:<14} from node {:>4} at {:>7} ms: reached {:>4}/{}, full in {:>6} ms \
                 ({:>2} rounds), {:>5} frames (ratio {:.2}), {} bytes",
                m.id.short(),
                m.kind.as_str(),
                m.publisher,
                m.published_at_ms,
                m.reached,
                self.nodes,
                coverage,
                rounds,
                m.frames_sent,
                m.duplicate_ratio,
                m.bytes_sent
            )?;
        }
        let net = &self.network;
        writeln!(
            f,
            "gossip frames: {} sent ({} message, {} digest, {} want), {} delivered, {} lost, \
             {} cut, {} without link; {} bytes",
            net.gossip.sent,
            net.gossip_messages,
            net.gossip_digests,
            net.gossip_wants,
            net.gossip.delivered,
            net.gossip.lost,
            net.gossip.cut,
            net.gossip.no_link,
            net.gossip.bytes
        )?;
        writeln!(
            f,
            "bundle frames: {} sent ({} bundle, {} ack), {} delivered, {} lost, {} cut, \
             {} without link; {} bytes",
            net.bundle.sent,
            net.bundles,
            net.acks,
            net.bundle.delivered,
            net.bundle.lost,
            net.bundle.cut,
            net.bundle.no_link,
            net.bundle.bytes
        )?;
        let b = &self.bundles;
        writeln!(
            f,
            "bundles: {} accepted, {} delivered once, {} duplicated, {} expired, {} pending",
            b.accepted, b.delivered, b.duplicated, b.expired, b.pending
        )?;
        write!(f, "violations: {}", self.violations)
    }
}
