//! Runs the sans-IO bundle router on its own thread, over the node's SQLite bundle store.
//!
//! Every store call is a synchronous, fsynced SQLite transaction, so the router lives on one
//! dedicated OS thread rather than on the async runtime: API handlers and link tasks send it
//! [`Command`]s over a bounded channel and, where they need an answer (accepting a bundle,
//! listing, reading), wait on a oneshot reply. `POST /v1/bundles` therefore answers 201 only
//! after the router's `accept_local` has committed the bundle.

use std::str::FromStr;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use ztmesh_core::link::LinkMessage;
use ztmesh_core::{NodeId, Timestamp};
use ztmesh_dtn::{
    BundleId, BundleStore, DeliveredBundle, DtnConfig, DtnError, DtnEvent, Eid, HeldBundle, Router,
};

use crate::daemon::Node;
use crate::events::{BundleEvent, NodeEvent};
use crate::store::SqliteBundleStore;
use crate::timefmt::now;

/// Commands waiting for the router thread; bounded so a flood of frames cannot hoard memory
/// (a frame dropped on a full queue is resent by its sender's retry).
const COMMAND_QUEUE: usize = 1024;

/// How long a delivery receipt travels in gossip.
const RECEIPT_TTL: Duration = Duration::from_secs(24 * 3600);

type Reply<T> = oneshot::Sender<Result<T, DtnError>>;

/// What the router thread is asked to do.
pub(crate) enum Command {
    LinkUp(NodeId),
    LinkDown(NodeId),
    Frame(NodeId, Vec<u8>),
    /// A verified delivery receipt signed by `from`.
    Receipt {
        from: NodeId,
        bundle_id: String,
    },
    Accept {
        destination: Eid,
        source_service: String,
        payload: Vec<u8>,
        ttl: Duration,
        reply: Reply<(BundleId, Timestamp)>,
    },
    ListDelivered(Reply<Vec<DeliveredBundle>>),
    ListHeld(Reply<Vec<HeldBundle>>),
    Payload(BundleId, Reply<Option<(DeliveredBundle, Vec<u8>)>>),
    Delete(BundleId, Reply<bool>),
}

/// Why the router thread could not take a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DtnUnavailable {
    #[error("the bundle router is busy; retry")]
    Busy,
    #[error("the bundle router has stopped")]
    Stopped,
}

/// The handle the rest of the node holds.
pub(crate) struct DtnHandle {
    commands: SyncSender<Command>,
}

impl DtnHandle {
    /// Queues a command that needs no answer; a full queue drops it (links retry).
    pub(crate) fn send(&self, command: Command) {
        if let Err(TrySendError::Full(_)) = self.commands.try_send(command) {
            tracing::debug!("bundle router queue full; command dropped");
        }
    }

    /// Sends a request and waits for the answer.
    pub(crate) async fn request<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<Result<T, DtnError>, DtnUnavailable> {
        let (tx, rx) = oneshot::channel();
        match self.commands.try_send(make(tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(DtnUnavailable::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(DtnUnavailable::Stopped),
        }
        rx.await.map_err(|_| DtnUnavailable::Stopped)
    }
}

/// Opens the store and builds the router; the thread starts with [`start`].
pub(crate) fn prepare(
    local: NodeId,
    store_path: &std::path::Path,
) -> Result<(DtnHandle, Receiver<Command>, Router<SqliteBundleStore>), crate::daemon::NodeError> {
    let store = SqliteBundleStore::open(store_path)?;
    let router = Router::new(local, DtnConfig::default(), store)
        .map_err(|e| crate::daemon::NodeError::Inconsistent(format!("bundle router: {e}")))?;
    let (tx, rx) = sync_channel(COMMAND_QUEUE);
    Ok((DtnHandle { commands: tx }, rx, router))
}

/// Starts the router thread. It stops when the node is dropped (every sender gone).
pub(crate) fn start(
    node: Weak<Node>,
    commands: Receiver<Command>,
    router: Router<SqliteBundleStore>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Publishing a receipt goes through the gossip driver, which may spawn async work: the
    // thread enters the runtime that started it.
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("ztmesh-dtn".into())
        .spawn(move || {
            let _entered = runtime.enter();
            run(node, commands, router)
        })
}

fn run(node: Weak<Node>, commands: Receiver<Command>, mut router: Router<SqliteBundleStore>) {
    loop {
        let wait = router
            .poll_timeout()
            .map(|at| {
                Duration::from_millis(at.as_unix_millis().saturating_sub(now().as_unix_millis()))
            })
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        match commands.recv_timeout(wait) {
            Ok(command) => handle(&mut router, command),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Err(error) = router.handle_timeout(now()) {
            tracing::warn!(%error, "bundle router timeout handling failed");
        }
        let Some(node) = node.upgrade() else {
            return;
        };
        drain(&node, &mut router);
    }
}

fn handle(router: &mut Router<SqliteBundleStore>, command: Command) {
    let t = now();
    match command {
        Command::LinkUp(peer) => router.handle_link_up(peer, t),
        Command::LinkDown(peer) => router.handle_link_down(&peer),
        Command::Frame(from, frame) => {
            if let Err(error) = router.handle_frame(from, &frame, t) {
                tracing::debug!(%from, %error, "bundle frame refused");
            }
        }
        Command::Receipt { from, bundle_id } => {
            let Ok(id) = BundleId::from_str(&bundle_id) else {
                tracing::debug!(%from, %bundle_id, "receipt for a malformed bundle id");
                return;
            };
            // The router checks that `from` is the bundle's destination: only its word may
            // free copies, or anyone could make relays drop bundles they should still carry.
            if let Err(error) = router.handle_receipt(from, &id, t) {
                tracing::warn!(%error, %id, "applying a receipt failed");
            }
        }
        Command::Accept {
            destination,
            source_service,
            payload,
            ttl,
            reply,
        } => {
            let result = router
                .accept_local(destination, &source_service, payload, ttl, t)
                .map(|id| (id, t.saturating_add(ttl)));
            let _ = reply.send(result);
        }
        Command::ListDelivered(reply) => {
            let _ = reply.send(router.store().list_delivered().map_err(DtnError::store));
        }
        Command::ListHeld(reply) => {
            let _ = reply.send(Ok(router.held().cloned().collect()));
        }
        Command::Payload(id, reply) => {
            let result = (|| {
                let Some(record) = router
                    .store()
                    .list_delivered()
                    .map_err(DtnError::store)?
                    .into_iter()
                    .find(|d| d.id == id)
                else {
                    return Ok(None);
                };
                let payload = router
                    .store()
                    .delivered_payload(&id)
                    .map_err(DtnError::store)?;
                Ok(payload.map(|p| (record, p)))
            })();
            let _ = reply.send(result);
        }
        Command::Delete(id, reply) => {
            let _ = reply.send(
                router
                    .store_mut()
                    .delete_delivered(&id)
                    .map_err(DtnError::store),
            );
        }
    }
}

fn drain(node: &Arc<Node>, router: &mut Router<SqliteBundleStore>) {
    while let Some(transmit) = router.poll_transmit() {
        node.send_to(
            &transmit.to,
            LinkMessage::Bundle {
                frame: transmit.frame,
            },
        );
    }
    while let Some(event) = router.poll_event() {
        match event {
            DtnEvent::Delivered {
                id,
                source,
                destination,
                payload_len,
            } => {
                tracing::info!(%id, %source, len = payload_len, "bundle delivered");
                node.events.emit(NodeEvent::Bundle(BundleEvent {
                    bundle_id: id.to_string(),
                    source: source.to_string(),
                    destination: destination.to_string(),
                    len: payload_len,
                }));
            }
            DtnEvent::ReceiptNeeded { id } => {
                let body = ztmesh_gossip::kinds::BundleReceipt {
                    bundle_id: id.to_string(),
                }
                .encode();
                let published = body.map_err(|e| e.to_string()).and_then(|body| {
                    node.publish_own(ztmesh_gossip::MessageKind::BundleReceipt, body, RECEIPT_TTL)
                        .map_err(|e| e.to_string())
                });
                if let Err(error) = published {
                    tracing::warn!(%id, %error, "could not publish a delivery receipt");
                }
            }
            DtnEvent::Expired { id } => tracing::info!(%id, "bundle expired"),
            DtnEvent::Refused { from, id, reason } => {
                tracing::debug!(%from, %id, ?reason, "bundle refused");
            }
            _ => {}
        }
    }
}
