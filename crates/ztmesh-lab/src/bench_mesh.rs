//! `ztmesh bench mesh`: how fast the mesh spreads things, over real node processes on
//! loopback. An anomaly signature to every node (gossip), a revocation to every node (the CA
//! pushes the signed record to one node, gossip carries it on), and bundles carried by one
//! relay to a node that was offline (DTN); each printed as p50/p99 and against a one-hop
//! baseline measured in the same run.
//!
//! Arrival times come from each node's event stream (`GET /v1/events`), stamped by this process
//! the moment an event is parsed, so every latency is read off one monotonic clock. The bench
//! must never leave a process behind: every child dies with the run, also on an error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::Digest;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use ztmesh_node::events::NodeEvent;
use ztmesh_node::local_api::{PublishAnomalyRequest, SendBundleRequest};
use ztmesh_node::node_client::LocalApiClient;
use ztmesh_node::node_dir::BoundAddrs;

use crate::local_mesh::{connected_links, is_connected_to, EnrolledNode, LocalMesh, NodeClients};

/// Options of `ztmesh bench mesh` (the CLI gives the bounds and the defaults).
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Node processes (4..=64). Nodes keep up to 64 links, so every pair is linked.
    pub nodes: u32,
    /// Anomaly signatures published one after another, each on a random node.
    pub messages: u32,
    /// Nodes revoked one after another (at most nodes − 3: three stay for the bundle phase).
    pub revocations: u32,
    /// 1 KiB bundles sent directly (baseline) and again through the relay.
    pub bundles: u32,
}

/// Longest wait for one anomaly signature or one revocation to reach every node.
const SPREAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for a restarted node to answer and for the relay to hand everything over.
const RETURN_TIMEOUT: Duration = Duration::from_secs(90);

/// How often each node's peer list is read while a revocation spreads and the node has not
/// applied it yet (the event stream gives the exact moment it does).
const PEER_POLL: Duration = Duration::from_millis(50);

/// How often a node's peer list is read once its revocation event is in: the resolution of the
/// "link closed" figure.
const PEER_POLL_AFTER_EVENT: Duration = Duration::from_millis(5);

/// Payload size of every bundle.
const BUNDLE_LEN: usize = 1024;

/// Most distinct things the recorder tracks; the bench creates a few hundred, so reaching this
/// means something else is flooding the streams and further topics are ignored.
const MAX_TOPICS: usize = 10_000;

/// What an event on a node's stream is about, as far as the bench is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Topic {
    /// An anomaly signature, by gossip message id.
    Anomaly(String),
    /// A revocation naming this NodeId.
    Revoked(String),
    /// A bundle delivered, by bundle id.
    Bundle(String),
}

/// When each node's stream first showed each topic. Filled by the stream watchers; the bench
/// waits on `changed` instead of polling.
#[derive(Default)]
struct Arrivals {
    first_seen: Mutex<HashMap<Topic, HashMap<usize, Instant>>>,
    changed: Notify,
    /// `lagged` events: a stream fell behind and skipped events (their arrivals are missing).
    lagged: AtomicU64,
}

impl Arrivals {
    fn record(&self, node: usize, topic: Topic, at: Instant) {
        {
            let mut seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
            if !seen.contains_key(&topic) && seen.len() >= MAX_TOPICS {
                return;
            }
            seen.entry(topic).or_default().entry(node).or_insert(at);
        }
        self.changed.notify_waiters();
    }

    fn first_seen(&self, topic: &Topic) -> HashMap<usize, Instant> {
        let seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(topic).cloned().unwrap_or_default()
    }

    fn seen_by_all(&self, topics: &[Topic], nodes: &[usize]) -> bool {
        let seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
        topics.iter().all(|topic| {
            seen.get(topic)
                .is_some_and(|by| nodes.iter().all(|n| by.contains_key(n)))
        })
    }

    /// Waits until every node in `nodes` has seen every topic; false if `timeout` passed first.
    async fn wait(&self, topics: &[Topic], nodes: &[usize], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a record landing in between still wakes us.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.seen_by_all(topics, nodes) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.seen_by_all(topics, nodes);
            }
        }
    }
}

/// The event-stream tasks; aborted when dropped, so no watcher outlives the run.
#[derive(Default)]
struct Watchers(Vec<JoinHandle<()>>);

impl Drop for Watchers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Watchers {
    /// Subscribes to `app`'s event stream and records what arrives as `node`. Until the first
    /// `ready` event the connection is retried every 5 ms up to `connect_deadline` (a node that
    /// is starting refuses connections); the returned receiver gets the `ready` arrival time.
    fn watch(
        &mut self,
        node: usize,
        app: Arc<LocalApiClient>,
        arrivals: Arc<Arrivals>,
        connect_deadline: Instant,
    ) -> oneshot::Receiver<Instant> {
        let (ready_tx, ready_rx) = oneshot::channel();
        self.0.push(tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                let _ = app
                    .watch(|event| {
                        let at = Instant::now();
                        match event {
                            NodeEvent::Ready { .. } => {
                                if let Some(tx) = ready.take() {
                                    let _ = tx.send(at);
                                }
                            }
                            NodeEvent::Anomaly(anomaly) => {
                                arrivals.record(node, Topic::Anomaly(anomaly.id), at);
                            }
                            NodeEvent::Bundle(bundle) => {
                                arrivals.record(node, Topic::Bundle(bundle.bundle_id), at);
                            }
                            NodeEvent::Revocation { nodes, .. } => {
                                for revoked in nodes {
                                    arrivals.record(node, Topic::Revoked(revoked), at);
                                }
                            }
                            NodeEvent::Lagged { .. } => {
                                arrivals.lagged.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                        true
                    })
                    .await;
                // Once subscribed, the stream only ends with the node: nothing left to watch.
                if ready.is_none() || Instant::now() > connect_deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
        ready_rx
    }
}

/// p50 and p99 (nearest rank) of a set of durations.
#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: Duration,
    p99: Duration,
    count: usize,
}

impl Percentiles {
    fn of(samples: &[Duration]) -> Result<Self> {
        if samples.is_empty() {
            bail!("no samples");
        }
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = |p: f64| {
            let index = (p / 100.0 * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Ok(Percentiles {
            p50: rank(50.0),
            p99: rank(99.0),
            count: sorted.len(),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One aligned report line: label, sample count, p50 and p99 in milliseconds.
fn latency_line(label: &str, p: &Percentiles) {
    out!(
        "  {:<52} p50 {:>8.1} ms   p99 {:>8.1} ms",
        format!("{label} ({})", p.count),
        ms(p.p50),
        ms(p.p99)
    );
}

fn ratio_line(label: &str, value: Duration, baseline: Duration) {
    out!(
        "  {label:<52} {:>8.2}",
        value.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
    );
}

/// The running mesh and what the phases share.
struct Bench {
    mesh: LocalMesh,
    nodes: Vec<EnrolledNode>,
    /// Where each node listened when first started (a restarted node takes the same ports).
    addrs: Vec<BoundAddrs>,
    clients: Vec<NodeClients>,
    live: Vec<bool>,
    arrivals: Arc<Arrivals>,
    watchers: Watchers,
}

impl Bench {
    fn live_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.live[i]).collect()
    }

    async fn kill(&mut self, node: usize) {
        self.mesh.kill(&self.nodes[node].name).await;
        self.live[node] = false;
    }
}

/// Results of the gossip phase.
struct GossipResult {
    messages: u32,
    own_node: Percentiles,
    each_node: Percentiles,
    last_node: Percentiles,
}

/// Results of the revocation phase.
struct RevocationResult {
    count: usize,
    event: Percentiles,
    link_closed: Percentiles,
    last_event: Percentiles,
    last_closed: Percentiles,
}

/// Results of the bundle phase.
struct BundleResult {
    stopped: usize,
    direct: Percentiles,
    relayed: Percentiles,
    /// The same arrivals counted from when the restarted node's API answered: without the
    /// start-up (key decryption, database, listeners).
    relayed_after_start: Percentiles,
    api_back: Duration,
    handover: Duration,
    untimed: usize,
}

/// `ztmesh bench mesh`.
pub async fn run(args: MeshOptions) -> Result<()> {
    crate::check_bounds("nodes", args.nodes, 4..=64)?;
    crate::check_bounds("messages", args.messages, 1..=1000)?;
    crate::check_bounds("revocations", args.revocations, 0..=61)?;
    crate::check_bounds("bundles", args.bundles, 1..=1000)?;
    let n = args.nodes as usize;
    let revocations = args.revocations as usize;
    if revocations + 3 > n {
        bail!(
            "--revocations {revocations} leaves fewer than 3 of {n} nodes for the bundle phase; use at most {}",
            n - 3
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |p| p.get());
    out!("ztmesh bench mesh: a CA and {n} node processes on loopback, {cpus} CPUs");
    let mesh = LocalMesh::start_ca(
        "ztmesh-bench-mesh-",
        "bench.ztmesh.test",
        &[
            // One node hears of a revocation from the CA; gossip tells the others.
            "--revocation-push",
            "1",
            // Every node enrolls within seconds from one address.
            "--rate-limit-rpm",
            "100000",
            "--rate-limit-burst",
            "10000",
        ],
    )
    .await?;
    mesh.step("CA serving");
    let names: Vec<String> = (1..=n).map(|i| format!("node-{i}")).collect();
    let nodes = mesh.enroll(&names, cpus).await?;
    mesh.step(&format!("{n} nodes enrolled"));
    let mut bench = start_nodes(mesh, nodes).await?;
    let formed = wait_full_mesh(&mut bench).await?;
    subscribe_all(&mut bench).await?;

    // Roles are drawn once: the bundle trio must survive the revocations.
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::thread_rng());
    let trio = [order[0], order[1], order[2]];
    let victims = order[3..3 + revocations].to_vec();

    let gossip = gossip_phase(&mut bench, args.messages).await?;
    let revocation = revocation_phase(&mut bench, &victims).await?;
    let bundles = bundle_phase(&mut bench, trio, args.bundles as usize).await?;
    let report = Report {
        nodes: n,
        bundle_count: args.bundles as usize,
        formed,
        gossip,
        revocation,
        bundles,
        lagged: bench.arrivals.lagged.load(Ordering::Relaxed),
        elapsed: bench.mesh.elapsed(),
    };
    // Every child is killed before the report is printed.
    drop(bench);
    report.print();
    Ok(())
}

/// Everything the bench prints at the end.
struct Report {
    nodes: usize,
    bundle_count: usize,
    formed: Duration,
    gossip: GossipResult,
    revocation: Option<RevocationResult>,
    bundles: BundleResult,
    lagged: u64,
    elapsed: Duration,
}

impl Report {
    fn print(&self) {
        let (n, gossip, bundles) = (self.nodes, &self.gossip, &self.bundles);
        out!();
        out!(
            "mesh: {n} node processes, full mesh of {} links (each node linked to {} others), formed {:.1} s after start",
            n * (n - 1) / 2,
            n - 1,
            self.formed.as_secs_f64()
        );
        out!();
        out!(
            "gossip dissemination: {} anomaly signatures, each published on a random node (fan-out 3)",
            gossip.messages
        );
        latency_line(
            "baseline: publish → event on its own node",
            &gossip.own_node,
        );
        latency_line("publish → event on each other node", &gossip.each_node);
        latency_line("publish → event on the last node", &gossip.last_node);
        ratio_line(
            "ratio each-node p50 / baseline p50",
            gossip.each_node.p50,
            gossip.own_node.p50,
        );
        ratio_line(
            "ratio each-node p99 / baseline p50",
            gossip.each_node.p99,
            gossip.own_node.p50,
        );
        ratio_line(
            "ratio last-node p50 / baseline p50",
            gossip.last_node.p50,
            gossip.own_node.p50,
        );
        if let Some(r) = &self.revocation {
            out!();
            out!(
                "revocation propagation: {} {} revoked one after another; the CA pushes each record to 1 node, gossip carries it on",
                r.count,
                if r.count == 1 { "node" } else { "nodes" }
            );
            latency_line("revoke call → revocation event on each node", &r.event);
            latency_line(
                "revoke call → peer list shows the link closed",
                &r.link_closed,
            );
            latency_line("revoke call → event on the last node", &r.last_event);
            latency_line("revoke call → last link closed", &r.last_closed);
            ratio_line(
                "ratio each-node event p50 / gossip baseline p50",
                r.event.p50,
                gossip.own_node.p50,
            );
            ratio_line(
                "ratio each-node event p50 / gossip each-node p50",
                r.event.p50,
                gossip.each_node.p50,
            );
        }
        out!();
        out!(
            "bundles through one relay: {} × {} KiB, sender → relay → destination (the other {} live nodes stopped first)",
            self.bundle_count,
            BUNDLE_LEN / 1024,
            bundles.stopped
        );
        latency_line(
            "baseline: direct send → destination's event",
            &bundles.direct,
        );
        latency_line(
            "destination restarted → event, via the relay",
            &bundles.relayed,
        );
        out!(
            "  {:<52} {:>8.1} ms",
            "destination restarted → its API answering",
            ms(bundles.api_back)
        );
        latency_line(
            "its API answering → event, via the relay",
            &bundles.relayed_after_start,
        );
        let timed = bundles.relayed.count - bundles.untimed;
        if timed > 1 {
            out!(
                "  {:<52} {:>8.1} bundles/s",
                "relay handover, first to last delivery",
                (timed - 1) as f64 / bundles.handover.as_secs_f64().max(1e-9)
            );
        }
        if bundles.untimed > 0 {
            out!(
                "  {:<52} {:>8}",
                "delivered before the event stream attached (counted at its first answer)",
                bundles.untimed
            );
        }
        ratio_line(
            "ratio relayed p50 / direct p50",
            bundles.relayed.p50,
            bundles.direct.p50,
        );
        ratio_line(
            "ratio relayed p99 / direct p50",
            bundles.relayed.p99,
            bundles.direct.p50,
        );
        out!();
        if self.lagged > 0 {
            out!(
                "warning: event streams fell behind {} time(s); some arrivals are missing",
                self.lagged
            );
        }
        out!("elapsed {:.1} s", self.elapsed.as_secs_f64());
    }
}

/// Starts every node process and opens clients to each once it listens.
async fn start_nodes(mut mesh: LocalMesh, nodes: Vec<EnrolledNode>) -> Result<Bench> {
    for node in &nodes {
        mesh.start_node(node, &[], "run.log")?;
    }
    let mut addrs = Vec::with_capacity(nodes.len());
    for node in &nodes {
        addrs.push(mesh.wait_listening(node).await?);
    }
    mesh.step(&format!("{} node processes listening", nodes.len()));
    // Each mesh API client decrypts a TLS key; they run side by side on the blocking pool.
    let clients =
        futures::future::try_join_all(nodes.iter().map(|node| mesh.clients(node))).await?;
    let live = vec![true; nodes.len()];
    Ok(Bench {
        mesh,
        nodes,
        addrs,
        clients,
        live,
        arrivals: Arc::default(),
        watchers: Watchers::default(),
    })
}

/// Waits until every node reports a link to every other node; returns the time since start.
async fn wait_full_mesh(bench: &mut Bench) -> Result<Duration> {
    let n = bench.nodes.len();
    let timeout = Duration::from_secs(60 + 4 * n as u64);
    let deadline = Instant::now() + timeout;
    let mut last_total = usize::MAX;
    let mut last_print: Option<Instant> = None;
    loop {
        bench.mesh.check_children()?;
        let counts = futures::future::join_all(bench.clients.iter().map(|c| async {
            c.api
                .peers()
                .await
                .map(|p| connected_links(&p))
                .unwrap_or(0)
        }))
        .await;
        let total: usize = counts.iter().sum();
        let complete = counts.iter().filter(|&&c| c >= n - 1).count();
        if complete == n {
            bench.mesh.step(&format!(
                "full mesh: {total}/{} link ends up, every node linked to all {} others",
                n * (n - 1),
                n - 1
            ));
            return Ok(bench.mesh.elapsed());
        }
        if total != last_total && last_print.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
            bench.mesh.step(&format!(
                "links up: {total}/{} link ends, {complete}/{n} nodes fully linked",
                n * (n - 1)
            ));
            last_total = total;
            last_print = Some(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "the mesh did not form within {}s ({total}/{} link ends up)",
                timeout.as_secs(),
                n * (n - 1)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Opens every node's event stream and waits for each `ready`, so nothing published later can
/// slip past a stream that is not listening yet.
async fn subscribe_all(bench: &mut Bench) -> Result<()> {
    let deadline = Instant::now() + SPREAD_TIMEOUT;
    let mut ready = Vec::new();
    for (i, clients) in bench.clients.iter().enumerate() {
        ready.push(
            bench
                .watchers
                .watch(i, clients.app.clone(), bench.arrivals.clone(), deadline),
        );
    }
    for (i, rx) in ready.into_iter().enumerate() {
        tokio::time::timeout(SPREAD_TIMEOUT, rx)
            .await
            .ok()
            .and_then(|r| r.ok())
            .ok_or_else(|| anyhow!("no event stream from {}", bench.nodes[i].name))?;
    }
    bench.mesh.step(&format!(
        "subscribed to all {} event streams",
        bench.nodes.len()
    ));
    Ok(())
}

async fn gossip_phase(bench: &mut Bench, messages: u32) -> Result<GossipResult> {
    let everyone = bench.live_nodes();
    let mut rng = rand::rngs::StdRng::from_entropy();
    let run_tag: u64 = rng.gen();
    let (mut own_node, mut each_node, mut last_node) = (Vec::new(), Vec::new(), Vec::new());
    for m in 0..messages {
        let publisher = everyone[rng.gen_range(0..everyone.len())];
        let request = PublishAnomalyRequest {
            event_sha256: hex::encode(sha2::Sha256::digest(
                format!("bench mesh {run_tag:016x} message {m}").as_bytes(),
            )),
            indicator: "bench_probe".into(),
            risk_score: 50,
            rule_id: None,
            metadata: BTreeMap::new(),
            ttl_sec: Some(600),
        };
        let start = Instant::now();
        let id = bench.clients[publisher]
            .app
            .publish_anomaly(&request)
            .await
            .with_context(|| format!("publishing on {}", bench.nodes[publisher].name))?
            .id;
        let topic = Topic::Anomaly(id.clone());
        if !bench
            .arrivals
            .wait(std::slice::from_ref(&topic), &everyone, SPREAD_TIMEOUT)
            .await
        {
            bench.mesh.check_children()?;
            bail!(
                "anomaly signature {id} reached {} of {} nodes within {}s",
                bench.arrivals.first_seen(&topic).len(),
                everyone.len(),
                SPREAD_TIMEOUT.as_secs()
            );
        }
        let seen = bench.arrivals.first_seen(&topic);
        let mut latest = Duration::ZERO;
        for (&node, &at) in &seen {
            let latency = at.saturating_duration_since(start);
            if node == publisher {
                own_node.push(latency);
            } else {
                each_node.push(latency);
                latest = latest.max(latency);
            }
        }
        last_node.push(latest);
    }
    bench.mesh.step(&format!(
        "gossip: {messages} anomaly signatures each reached all {} nodes",
        everyone.len()
    ));
    Ok(GossipResult {
        messages,
        own_node: Percentiles::of(&own_node)?,
        each_node: Percentiles::of(&each_node)?,
        last_node: Percentiles::of(&last_node)?,
    })
}

/// Polls a node's peer list until it no longer shows a link to `victim`; returns when the
/// first answer that did arrived, or `None` after [`SPREAD_TIMEOUT`]. Polls every
/// [`PEER_POLL`] until the node's revocation event is in, then every [`PEER_POLL_AFTER_EVENT`]:
/// the figure stays an upper bound on the closing, with fine resolution where it matters and
/// without a storm of requests to every node at once.
async fn poll_link_closed(
    clients: &NodeClients,
    node: usize,
    arrivals: &Arrivals,
    victim: &str,
    start: Instant,
) -> Option<Instant> {
    let topic = Topic::Revoked(victim.to_owned());
    while start.elapsed() < SPREAD_TIMEOUT {
        if let Ok(peers) = clients.api.peers().await {
            if !is_connected_to(&peers, victim) {
                return Some(Instant::now());
            }
        }
        if arrivals.first_seen(&topic).contains_key(&node) {
            tokio::time::sleep(PEER_POLL_AFTER_EVENT).await;
        } else {
            let _ = arrivals
                .wait(std::slice::from_ref(&topic), &[node], PEER_POLL)
                .await;
        }
    }
    None
}

async fn revocation_phase(
    bench: &mut Bench,
    victims: &[usize],
) -> Result<Option<RevocationResult>> {
    if victims.is_empty() {
        return Ok(None);
    }
    let (mut event, mut link_closed, mut last_event, mut last_closed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for &victim in victims {
        let others: Vec<usize> = bench
            .live_nodes()
            .into_iter()
            .filter(|&i| i != victim)
            .collect();
        let victim_id = bench.nodes[victim].node_id.clone();
        let start = Instant::now();
        let pollers =
            futures::future::join_all(others.iter().map(|&i| {
                poll_link_closed(&bench.clients[i], i, &bench.arrivals, &victim_id, start)
            }));
        let (revoked, closed) = tokio::join!(bench.mesh.revoke(&victim_id), pollers);
        revoked.with_context(|| format!("revoking {}", bench.nodes[victim].name))?;
        let topic = Topic::Revoked(victim_id.clone());
        if !bench
            .arrivals
            .wait(std::slice::from_ref(&topic), &others, SPREAD_TIMEOUT)
            .await
        {
            bench.mesh.check_children()?;
            bail!(
                "the revocation of {} reached {} of {} nodes within {}s",
                bench.nodes[victim].name,
                others
                    .iter()
                    .filter(|i| bench.arrivals.first_seen(&topic).contains_key(i))
                    .count(),
                others.len(),
                SPREAD_TIMEOUT.as_secs()
            );
        }
        let seen = bench.arrivals.first_seen(&topic);
        let mut latest = Duration::ZERO;
        for node in &others {
            let latency = seen[node].saturating_duration_since(start);
            event.push(latency);
            latest = latest.max(latency);
        }
        last_event.push(latest);
        let mut latest = Duration::ZERO;
        for (k, at) in closed.iter().enumerate() {
            let at = at.ok_or_else(|| {
                anyhow!(
                    "{} still shows a link to revoked {} after {}s",
                    bench.nodes[others[k]].name,
                    bench.nodes[victim].name,
                    SPREAD_TIMEOUT.as_secs()
                )
            })?;
            let latency = at.saturating_duration_since(start);
            link_closed.push(latency);
            latest = latest.max(latency);
        }
        last_closed.push(latest);
        // A revoked node is refused by everyone and only adds load from here on.
        bench.kill(victim).await;
        bench.mesh.step(&format!(
            "revoked {}: all {} other nodes applied it and closed their links",
            bench.nodes[victim].name,
            others.len()
        ));
    }
    Ok(Some(RevocationResult {
        count: victims.len(),
        event: Percentiles::of(&event)?,
        link_closed: Percentiles::of(&link_closed)?,
        last_event: Percentiles::of(&last_event)?,
        last_closed: Percentiles::of(&last_closed)?,
    }))
}

fn bundle_request(destination: &str) -> SendBundleRequest {
    let mut payload = vec![0u8; BUNDLE_LEN];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut payload);
    SendBundleRequest {
        destination: destination.to_owned(),
        ttl_sec: 600,
        payload: base64::engine::general_purpose::STANDARD.encode(&payload),
        service: Some("bench".into()),
    }
}

/// Bundles from sender to destination: directly with all three up (baseline), then through the
/// relay while the destination is offline and the sender is gone by the time it returns. Every other node is stopped first: routing is epidemic when
/// the destination is unreachable, so with more nodes up the copies would take many relays.
async fn bundle_phase(bench: &mut Bench, trio: [usize; 3], count: usize) -> Result<BundleResult> {
    let [sender, relay, destination] = trio;
    let mut stopped = 0;
    for node in bench.live_nodes() {
        if !trio.contains(&node) {
            bench.kill(node).await;
            stopped += 1;
        }
    }
    let names = trio.map(|i| bench.nodes[i].name.clone());
    bench.mesh.step(&format!(
        "bundle phase: sender {}, relay {}, destination {}; stopped the {stopped} other nodes",
        names[0], names[1], names[2]
    ));
    let destination_id = bench.nodes[destination].node_id.clone();

    let mut direct = Vec::new();
    for _ in 0..count {
        let request = bundle_request(&destination_id);
        let start = Instant::now();
        let id = bench.clients[sender]
            .app
            .send_bundle(&request)
            .await?
            .bundle_id;
        if !bench
            .arrivals
            .wait(&[Topic::Bundle(id.clone())], &[destination], SPREAD_TIMEOUT)
            .await
        {
            bench.mesh.check_children()?;
            bail!(
                "bundle {id} sent directly was not delivered within {}s",
                SPREAD_TIMEOUT.as_secs()
            );
        }
        let at = bench.arrivals.first_seen(&Topic::Bundle(id))[&destination];
        direct.push(at.saturating_duration_since(start));
    }

    // The destination goes offline; the sender must see its link drop before sending, or it
    // would hand the bundles to a dead link instead of to the relay.
    bench.kill(destination).await;
    let destination_name = &names[2];
    crate::local_mesh::wait_for(
        &format!("the sender to see {destination_name} gone"),
        SPREAD_TIMEOUT,
        || async {
            let peers = bench.clients[sender].api.peers().await.ok()?;
            (!is_connected_to(&peers, &destination_id)).then_some(())
        },
    )
    .await?;
    let mut sent = Vec::new();
    for _ in 0..count {
        let request = bundle_request(&destination_id);
        sent.push(
            bench.clients[sender]
                .app
                .send_bundle(&request)
                .await?
                .bundle_id,
        );
    }
    let relay_app = bench.clients[relay].app.clone();
    crate::local_mesh::wait_for(
        &format!("the relay {} to hold every bundle", names[1]),
        SPREAD_TIMEOUT,
        || async {
            let queued = relay_app
                .bundles(true)
                .await
                .ok()?
                .queued
                .unwrap_or_default();
            // A fragment is listed as `<bundle id>+<offset>`.
            let held = |id: &String| {
                queued.iter().any(|q| {
                    q.bundle_id == *id
                        || q.bundle_id
                            .strip_prefix(id.as_str())
                            .is_some_and(|rest| rest.starts_with('+'))
                })
            };
            sent.iter().all(held).then_some(())
        },
    )
    .await?;
    bench.kill(sender).await;
    bench.mesh.step(&format!(
        "{} holds all {count} bundles for {destination_name}; sender stopped",
        names[1]
    ));

    // The destination returns at its old addresses, so the client built from its old address
    // file reaches the new process, and the relay's redials to it can succeed too.
    let old_addrs = &bench.addrs[destination];
    let app = Arc::new(LocalApiClient::from_dir(&bench.nodes[destination].dir)?);
    let (mesh_addr, api_addr) = (old_addrs.mesh.to_string(), old_addrs.api.to_string());
    let restart = Instant::now();
    bench.mesh.start_node(
        &bench.nodes[destination],
        &["--listen", &mesh_addr, "--api-listen", &api_addr],
        "run-2.log",
    )?;
    bench.live[destination] = true;
    // Connecting in a tight loop from the moment of the restart: the API listener is bound
    // before the node dials anyone, so the stream is normally live before the first bundle.
    let ready = bench.watchers.watch(
        destination,
        app.clone(),
        bench.arrivals.clone(),
        restart + RETURN_TIMEOUT,
    );
    let ready_at = match tokio::time::timeout(RETURN_TIMEOUT, ready).await {
        Ok(Ok(at)) => at,
        _ => {
            bench.mesh.check_children()?;
            bail!(
                "{destination_name} did not answer within {}s of its restart",
                RETURN_TIMEOUT.as_secs()
            );
        }
    };
    let topics: Vec<Topic> = sent.iter().map(|id| Topic::Bundle(id.clone())).collect();
    let complete = bench
        .arrivals
        .wait(&topics, &[destination], RETURN_TIMEOUT)
        .await;
    let mut relayed = Vec::new();
    let mut relayed_after_start = Vec::new();
    let mut arrival_times = Vec::new();
    let mut untimed = 0;
    let delivered: HashSet<String> = if complete {
        HashSet::new()
    } else {
        app.bundles(false)
            .await?
            .delivered
            .into_iter()
            .map(|b| b.bundle_id)
            .collect()
    };
    for topic in &topics {
        match bench.arrivals.first_seen(topic).get(&destination) {
            Some(at) => {
                relayed.push(at.saturating_duration_since(restart));
                relayed_after_start.push(at.saturating_duration_since(ready_at));
                arrival_times.push(*at);
            }
            None => {
                let Topic::Bundle(id) = topic else { continue };
                if !delivered.contains(id) {
                    bench.mesh.check_children()?;
                    bail!(
                        "bundle {id} was not delivered to {destination_name} within {}s of its restart",
                        RETURN_TIMEOUT.as_secs()
                    );
                }
                untimed += 1;
                // Delivered before the restarted node's event stream attached (the relay can
                // hand over in the same millisecond the API first answers): it arrived no
                // later than that answer, so it is counted there, an upper bound.
                relayed.push(ready_at.saturating_duration_since(restart));
                relayed_after_start.push(Duration::ZERO);
            }
        }
    }
    let handover = match (arrival_times.iter().min(), arrival_times.iter().max()) {
        (Some(first), Some(last)) => last.saturating_duration_since(*first),
        _ => Duration::ZERO,
    };
    bench.mesh.step(&format!(
        "{destination_name} restarted and received all {count} bundles through {}",
        names[1]
    ));
    Ok(BundleResult {
        stopped,
        direct: Percentiles::of(&direct)?,
        relayed: Percentiles::of(&relayed).context("no relayed bundle was timed")?,
        relayed_after_start: Percentiles::of(&relayed_after_start)?,
        api_back: ready_at.saturating_duration_since(restart),
        handover,
        untimed,
    })
}
