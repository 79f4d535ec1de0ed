//! The one accept loop of every HTTP server of ztmesh: the CA and the node API (axum over
//! TLS 1.3, [`serve`]) and the witness (plain HTTP, [`serve_plain`]), with the defences that
//! keep one slow or greedy client from taking a server down.
//!
//! Each request carries the client's socket address ([`ClientAddr`], for rate limits) and, over
//! TLS, the client certificate it presented, if any ([`PresentedCertificate`]), for routes to
//! judge. What this module decides is only *whether a connection gets served*:
//!
//! - every connection takes a slot of the sans-IO [`Admission`] core: a handshake slot during
//!   the TLS handshake, then one in the authenticated pool (the [`ClientClassifier`] recognised
//!   the client) or in the unauthenticated pool. Caps per address, per recognised client and
//!   per pool are [`LIMITS`]; a connection that finds no room is closed at once, nothing queues;
//! - a handshake must end within [`HANDSHAKE_TIMEOUT`], request headers within
//!   [`HEADER_READ_TIMEOUT`], and a request body within [`BODY_READ_DEADLINE`] of its headers,
//!   in total (a client sending one byte every few seconds does not keep a body alive);
//! - a connection on which no byte moved either way for [`IDLE_TIMEOUT`] is closed (the node's
//!   event stream sends a keep-alive every 15 s, so it lives on).
//!
//! A connection stopped by the body deadline or the idle timeout is closed without an answer.
//! This module must never let a client that proved nothing take a slot of the authenticated
//! pool, and must never hand a certificate to a route as trusted: the classifier's verdict only
//! chooses a pool, and routes still judge the certificate with `MeshTrust`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use ztmesh_pki::{NodeCertificate, RevocationSet};

use crate::admission::{Accepted, Admission, Refusal, Slot, SlotId};
pub use crate::admission::{AdmissionLimits, ClientClass};
use crate::tls::{MeshTrust, PresentedCertificate};

/// The caps of every ztmesh HTTP server. The stages add up to at most 512 sockets.
///
/// - 128 handshakes, 32 per address: a handshake takes milliseconds, so these only fill under
///   attack. A full stage evicts its oldest handshake once that one is half a second old, so
///   slow handshakes hold a slot for at most that long while others are waiting; pinning the
///   stage takes a flood of some 256 new connections per second from at least four addresses,
///   not a slow trickle;
/// - 128 unauthenticated connections, 8 per address: enrolment, `GET /v1/ca`, local
///   applications with an API token, the witness's first contact with a log;
/// - 256 authenticated connections, 16 per recognised client: room for every member of a mesh
///   to rotate, report and fetch at once, which no anonymous client can take.
pub const LIMITS: AdmissionLimits = AdmissionLimits {
    handshakes: 128,
    handshakes_per_address: 32,
    handshake_evictable_after: Duration::from_millis(500),
    unauthenticated: 128,
    unauthenticated_per_address: 8,
    authenticated: 256,
    authenticated_per_client: 16,
};

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a request body may take to arrive, counted from its headers and for the whole body:
/// the largest body any route takes arrives in well under a second on any working link.
pub const BODY_READ_DEADLINE: Duration = Duration::from_secs(30);

/// A connection on which no byte moved either way for this long is closed. Longer than the
/// 15 s keep-alive of the node's event stream.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a connection's deadlines are looked at; they fire at most this late.
const WATCH_TICK: Duration = Duration::from_millis(500);

/// The client's address, as seen by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Decides which pool a connection takes: [`ClientClass::Authenticated`] only for a client
/// that proved something the server can check (a certificate and, over TLS, possession of its
/// key), never on the client's say-so.
pub trait ClientClassifier: Send + Sync + 'static {
    /// The class of a client at `address` that presented `certificate` (DER of the leaf; always
    /// `None` over plain HTTP).
    fn classify(&self, address: SocketAddr, certificate: Option<&[u8]>) -> ClientClass;
}

/// The classifier of the CA and the node API: a client is authenticated when its certificate
/// is signed by this mesh's CA key for this trust domain and not revoked, **whatever its
/// validity dates** — a node whose certificate expired must still reach the CA to get a new one,
/// and its own API to read its status. The TLS handshake has already checked that the client
/// holds the certificate's key. The per-client cap is keyed by the certificate's NodeId.
#[derive(Debug, Clone)]
pub struct MeshMembers {
    trust: Arc<MeshTrust>,
}

impl MeshMembers {
    /// Members of the mesh `trust` anchors.
    pub fn new(trust: Arc<MeshTrust>) -> Self {
        MeshMembers { trust }
    }

    /// The NodeId of a member certificate signed by the CA key, whatever its dates.
    fn member(&self, certificate: &[u8]) -> Option<String> {
        let parsed = NodeCertificate::parse(certificate).ok()?;
        // Checked at the start of its own validity: chain, signature, usages and profile are
        // verified, and only the dates are set aside.
        let verified = ztmesh_pki::verify_node_certificate(
            certificate,
            self.trust.ca_cert_der(),
            self.trust.trust_domain(),
            &RevocationSet::new(),
            parsed.not_before,
        )
        .ok()?;
        if self.trust.is_revoked(&verified.serial) {
            return None;
        }
        Some(verified.node_id.to_string())
    }
}

impl ClientClassifier for MeshMembers {
    fn classify(&self, _address: SocketAddr, certificate: Option<&[u8]>) -> ClientClass {
        match certificate.and_then(|der| self.member(der)) {
            Some(node_id) => ClientClass::Authenticated(node_id),
            None => ClientClass::Unauthenticated,
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    classifier: Arc<dyn ClientClassifier>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(
        listener,
        Some(TlsAcceptor::from(tls)),
        classifier,
        router,
        shutdown,
    )
    .await;
}

/// Serves `router` over plain HTTP on `listener` until `shutdown` completes; `classifier` sees
/// only the client's address.
pub async fn serve_plain(
    listener: TcpListener,
    classifier: Arc<dyn ClientClassifier>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, None, classifier, router, shutdown).await;
}

/// The address a cap is keyed by: an IPv4 client reached over an IPv6 socket counts as itself.
fn client_ip(address: SocketAddr) -> IpAddr {
    address.ip().to_canonical()
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    classifier: Arc<dyn ClientClassifier>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    // Shared with every connection task, which gives its slot back when it ends.
    let admission = Arc::new(Mutex::new(Admission::new(LIMITS)));
    // The handshake tasks, so an evicted handshake can be stopped; each task takes itself out
    // when its handshake ends, so this holds at most `LIMITS.handshakes` entries.
    let handshakes: Arc<Mutex<HashMap<SlotId, AbortHandle>>> = Arc::default();
    let started = Instant::now();
    tokio::pin!(shutdown);
    loop {
        // Always accept: a connection without room is closed at once rather than left in the
        // kernel backlog, where it would stand in front of clients that do have room.
        let (tcp, address) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        match &tls {
            Some(acceptor) => {
                let admitted =
                    lock(&admission).handle_accept(client_ip(address), started.elapsed());
                let Some(Accepted { slot, evicted }) = refused_or(admitted, address) else {
                    continue;
                };
                if let Some(evicted) = evicted {
                    if let Some(task) = lock(&handshakes).remove(&evicted) {
                        task.abort();
                    }
                    tracing::debug!(%address, "evicted the oldest TLS handshake to make room");
                }
                let id = slot.id();
                let slot = HeldSlot::new(admission.clone(), slot);
                let acceptor = acceptor.clone();
                let classifier = classifier.clone();
                let registry = handshakes.clone();
                // Held while spawning, so the task cannot take itself out before it is in.
                let mut tasks = lock(&handshakes);
                let task = tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let handshake = handshake.await;
                    lock(&registry).remove(&id);
                    let tls = match handshake {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%address, %error, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%address, "TLS handshake timed out");
                            return;
                        }
                    };
                    let presented = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| Arc::new(leaf.as_ref().to_vec()));
                    let class =
                        classifier.classify(address, presented.as_deref().map(Vec::as_slice));
                    let Some(slot) = slot.finish_handshake(class, address) else {
                        return;
                    };
                    serve_connection(
                        tls,
                        address,
                        Some(PresentedCertificate(presented)),
                        router,
                        slot,
                    )
                    .await;
                });
                tasks.insert(id, task.abort_handle());
            }
            None => {
                let class = classifier.classify(address, None);
                let admitted = lock(&admission).handle_plain_accept(client_ip(address), class);
                let Some(slot) = refused_or(admitted, address) else {
                    continue;
                };
                let slot = HeldSlot::new(admission.clone(), slot);
                tokio::spawn(serve_connection(tcp, address, None, router, slot));
            }
        }
    }
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // What these mutexes guard stays consistent across a panic elsewhere: every change is one
    // call.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The slot, or `None` after logging why the connection (dropped by the caller) was refused.
fn refused_or<T>(admitted: Result<T, Refusal>, address: SocketAddr) -> Option<T> {
    match admitted {
        Ok(slot) => Some(slot),
        Err(refusal) => {
            tracing::debug!(%address, %refusal, "connection refused");
            None
        }
    }
}

/// A slot that goes back to the admission core when dropped, however the connection ends
/// (closed, timed out, refused later, or its task cancelled).
struct HeldSlot {
    admission: Arc<Mutex<Admission>>,
    slot: Option<Slot>,
}

impl HeldSlot {
    fn new(admission: Arc<Mutex<Admission>>, slot: Slot) -> Self {
        HeldSlot {
            admission,
            slot: Some(slot),
        }
    }

    /// Moves a handshake slot into the pool of `class`; `None` (and nothing held) if refused.
    fn finish_handshake(mut self, class: ClientClass, address: SocketAddr) -> Option<HeldSlot> {
        let slot = self.slot.take()?;
        let pooled = lock(&self.admission).handle_handshake_done(slot, class);
        refused_or(pooled, address).map(|slot| HeldSlot::new(self.admission.clone(), slot))
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            lock(&self.admission).handle_close(slot);
        }
    }
}

/// What the watch of one connection looks at: bytes moved either way, and the deadline of the
/// request body being read, if any.
#[derive(Debug, Default)]
struct ConnectionWatch {
    moved: AtomicU64,
    body_deadline: Mutex<Option<Instant>>,
}

impl ConnectionWatch {
    fn set_body_deadline(&self, deadline: Option<Instant>) {
        *self
            .body_deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = deadline;
    }

    fn body_deadline(&self) -> Option<Instant> {
        *self
            .body_deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Completes when the connection must be closed, with the reason.
    async fn expired(&self) -> &'static str {
        let mut last_moved = self.moved.load(Ordering::Relaxed);
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(WATCH_TICK).await;
            let now = Instant::now();
            if self.body_deadline().is_some_and(|deadline| now >= deadline) {
                return "request body not complete by its deadline";
            }
            let moved = self.moved.load(Ordering::Relaxed);
            if moved != last_moved {
                last_moved = moved;
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= IDLE_TIMEOUT {
                return "idle";
            }
        }
    }
}

/// Serves HTTP/1.1 on one admitted connection until it ends or its watch expires.
async fn serve_connection<I>(
    io: I,
    address: SocketAddr,
    presented: Option<PresentedCertificate>,
    router: Router,
    slot: HeldSlot,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _slot = slot;
    let watch = Arc::new(ConnectionWatch::default());
    let io = Metered {
        inner: io,
        watch: watch.clone(),
    };
    let service = router.map_request({
        let watch = watch.clone();
        move |request: http::Request<Incoming>| {
            let (mut parts, body) = request.into_parts();
            if let Some(presented) = &presented {
                parts.extensions.insert(presented.clone());
            }
            parts.extensions.insert(ClientAddr(address));
            let body = DeadlineBody::start(body, watch.clone());
            http::Request::from_parts(parts, axum::body::Body::new(body))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::select! {
        served = connection => {
            if let Err(error) = served {
                tracing::debug!(%address, %error, "HTTP connection ended with an error");
            }
        }
        reason = watch.expired() => {
            // Dropping the connection closes the socket; the handler waiting on the body sees
            // it end with an error.
            tracing::debug!(%address, reason, "HTTP connection closed");
        }
    }
}

/// The connection's IO, counting the bytes that move for the idle timeout.
struct Metered<I> {
    inner: I,
    watch: Arc<ConnectionWatch>,
}

impl<I> Metered<I> {
    fn count(&self, bytes: usize) {
        if bytes > 0 {
            self.watch.moved.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Metered<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.count(read);
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Metered<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            self.count(*written);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = &polled {
            self.count(*written);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body under [`BODY_READ_DEADLINE`]: the deadline is armed on the connection's
/// watch when the headers arrive and disarmed when the body has been read to its end. A body a
/// handler leaves unread keeps the deadline armed, so a client cannot trickle it forever.
struct DeadlineBody {
    inner: Incoming,
    watch: Arc<ConnectionWatch>,
}

impl DeadlineBody {
    fn start(inner: Incoming, watch: Arc<ConnectionWatch>) -> Self {
        let deadline = (!inner.is_end_stream()).then(|| Instant::now() + BODY_READ_DEADLINE);
        watch.set_body_deadline(deadline);
        DeadlineBody { inner, watch }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            self.watch.set_body_deadline(None);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
