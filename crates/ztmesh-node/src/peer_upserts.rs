//! The one writer of peers' announced listen addresses to the node's store: every link hands it
//! the address a peer's Hello gave and moves on without waiting for the disk.
//!
//! Why one writer: a Hello used to start a blocking-pool task of its own, so a peer repeating
//! Hellos could grow the number of tasks without bound. Here the addresses wait in a map keyed
//! by peer, the latest one replacing an earlier one (only the latest matters), and a single
//! task writes what is waiting in one blocking call at a time. The map holds at most
//! [`MAX_PENDING_UPSERTS`] peers; past it a new peer's address is dropped and counted (a link
//! sends its Hello again when it comes back, and the peer table already has the address).
//! This module must never block a link nor let a peer's input grow a queue or a task count.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use ztmesh_core::{NodeId, Timestamp};

/// Most peers whose address may wait to be written.
pub(crate) const MAX_PENDING_UPSERTS: usize = 1024;

/// One peer's address to record: the peer, its `host:port`, when it was seen.
pub(crate) type PeerUpsert = (NodeId, String, Timestamp);

/// Addresses waiting for the writer, and what became of the ones handed in.
#[derive(Debug, Default)]
pub(crate) struct PeerUpserts {
    pending: Mutex<HashMap<NodeId, (String, Timestamp)>>,
    /// Signalled on every submission; holds a permit while the writer is busy, so nothing
    /// submitted meanwhile waits for the next submission.
    wake: Notify,
    /// Blocking writes started (one per batch): the number that must not grow with Hellos.
    writes_started: AtomicU64,
    /// Addresses replaced by a later one of the same peer before they were written.
    coalesced: AtomicU64,
    /// Addresses dropped because [`MAX_PENDING_UPSERTS`] peers were already waiting.
    dropped: AtomicU64,
}

impl PeerUpserts {
    /// Hands in `peer`'s address; never blocks on the disk.
    pub(crate) fn submit(&self, peer: NodeId, addr: String, at: Timestamp) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(waiting) = pending.get_mut(&peer) {
                *waiting = (addr, at);
                self.coalesced.fetch_add(1, Ordering::Relaxed);
            } else if pending.len() >= MAX_PENDING_UPSERTS {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped == 1 || dropped.is_multiple_of(100) {
                    tracing::warn!(%peer, dropped, "too many peers' addresses waiting for the store; dropped");
                }
                return;
            } else {
                pending.insert(peer, (addr, at));
            }
        }
        self.wake.notify_one();
    }

    /// Blocking writes started so far.
    #[cfg(test)]
    pub(crate) fn writes_started(&self) -> u64 {
        self.writes_started.load(Ordering::Relaxed)
    }

    /// Addresses replaced before they were written, so far.
    #[cfg(test)]
    pub(crate) fn coalesced(&self) -> u64 {
        self.coalesced.load(Ordering::Relaxed)
    }

    /// Addresses dropped over the bound, so far.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn take(&self) -> Vec<PeerUpsert> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending)
            .into_iter()
            .map(|(peer, (addr, at))| (peer, addr, at))
            .collect()
    }

    /// Writes what is waiting with `write` on the blocking pool, one batch at a time, until
    /// `stop` resolves; what is waiting then is written before returning.
    pub(crate) async fn run<W>(&self, write: W, stop: impl Future<Output = ()>)
    where
        W: Fn(Vec<PeerUpsert>) + Clone + Send + 'static,
    {
        tokio::pin!(stop);
        loop {
            let stopping = tokio::select! {
                _ = &mut stop => true,
                _ = self.wake.notified() => false,
            };
            let batch = self.take();
            if !batch.is_empty() {
                self.writes_started.fetch_add(1, Ordering::Relaxed);
                let write = write.clone();
                if let Err(error) = tokio::task::spawn_blocking(move || write(batch)).await {
                    tracing::warn!(%error, "recording peers' listen addresses failed");
                }
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn peer(n: u8) -> NodeId {
        NodeId::from_bytes([n; 20])
    }

    /// A running writer, what it wrote, and how to stop it.
    struct Writer {
        upserts: Arc<PeerUpserts>,
        written: Arc<Mutex<HashMap<NodeId, String>>>,
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    /// Runs the writer over a recording `write` that takes `delay` per batch.
    fn writer(delay: Duration) -> Writer {
        let upserts = Arc::new(PeerUpserts::default());
        let written = Arc::new(Mutex::new(HashMap::new()));
        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        let task = {
            let upserts = upserts.clone();
            let written = written.clone();
            tokio::spawn(async move {
                let write = move |batch: Vec<PeerUpsert>| {
                    std::thread::sleep(delay);
                    let mut written = written.lock().unwrap();
                    for (peer, addr, _) in batch {
                        written.insert(peer, addr);
                    }
                };
                upserts
                    .run(write, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            })
        };
        Writer {
            upserts,
            written,
            stop: stop_tx,
            task,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hello_flood_does_not_grow_the_number_of_tasks() {
        let Writer {
            upserts,
            written,
            stop,
            task,
        } = writer(Duration::from_millis(50));
        // 10,000 Hellos from 10 peers, in bursts while the writer is busy on the disk.
        for round in 0..10u64 {
            for i in 0..1_000u64 {
                let n = (i % 10) as u8;
                let at = Timestamp::from_unix_millis(round * 1_000 + i);
                upserts.submit(peer(n), format!("192.0.2.{n}:{}", 7000 + round), at);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop.send(true);
        task.await.unwrap();
        // One blocking write per wake-up of the single writer, not one per Hello: the flood
        // took 10 bursts and the writer at most one batch per 50 ms.
        let writes = upserts.writes_started();
        assert!((1..=11).contains(&writes), "{writes} blocking writes");
        // Each batch carried at most one address per peer; every other Hello was coalesced.
        assert!(upserts.coalesced() >= 10_000 - 10 * writes);
        assert_eq!(upserts.dropped(), 0);
        // The latest address of every peer was written.
        let written = written.lock().unwrap();
        assert_eq!(written.len(), 10);
        for n in 0..10u8 {
            assert_eq!(written[&peer(n)], format!("192.0.2.{n}:7009"));
        }
    }

    #[tokio::test]
    async fn new_peers_past_the_bound_are_dropped_and_counted() {
        let upserts = PeerUpserts::default();
        let total = MAX_PENDING_UPSERTS + 100;
        for i in 0..total {
            let mut bytes = [0u8; 20];
            bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
            upserts.submit(
                NodeId::from_bytes(bytes),
                "192.0.2.1:7000".into(),
                Timestamp::EPOCH,
            );
        }
        assert_eq!(upserts.take().len(), MAX_PENDING_UPSERTS);
        assert_eq!(upserts.dropped(), 100);
        assert_eq!(upserts.writes_started(), 0);
    }
}
