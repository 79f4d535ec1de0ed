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
//!   per pool are [`LIMITS`]; a connection that finds no room is closed at once, nothing queues,
//!   and the server warns (at most once a minute, with a count) that it is refusing connections;
//! - a handshake must end within [`HANDSHAKE_TIMEOUT`], request headers within
//!   [`HEADER_READ_TIMEOUT`], and a request body within [`BODY_READ_DEADLINE`] of its headers
//!   (plus its announced length at [`BODY_BYTES_PER_SECOND`]), in total: a client sending one
//!   byte every few seconds does not keep a body alive;
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
/// - 128 unauthenticated connections, 32 per address: enrolment, `GET /v1/ca`, local
///   applications with an API token (all from one loopback address, several requests at once),
///   the witness's first contact with a log; one address takes at most a quarter of the pool;
/// - 256 authenticated connections, 16 per recognised client: room for every member of a mesh
///   to rotate, report and fetch at once, which no anonymous client can take.
pub const LIMITS: AdmissionLimits = AdmissionLimits {
    handshakes: 128,
    handshakes_per_address: 32,
    handshake_evictable_after: Duration::from_millis(500),
    unauthenticated: 128,
    unauthenticated_per_address: 32,
    authenticated: 256,
    authenticated_per_client: 16,
};

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a request body may take to arrive, counted from its headers and for the whole body,
/// plus [`BODY_BYTES_PER_SECOND`] of the length the headers announce: the bodies of the CA and
/// the witness (at most 64 KiB) get about 31 s, a 16 MiB bundle about 5 minutes.
pub const BODY_READ_DEADLINE: Duration = Duration::from_secs(30);

/// The slowest transfer rate a large body is allowed (64 KiB/s): it extends the body deadline by
/// the announced length at this rate. A client that announces a large body and trickles it holds
/// its slot longer, but only a slot of its own pool, within its per-address cap.
pub const BODY_BYTES_PER_SECOND: u64 = 64 * 1024;

/// The most the announced length may add to [`BODY_READ_DEADLINE`] (a length no route accepts
/// buys no more time).
const MAX_BODY_ALLOWANCE: Duration = Duration::from_secs(10 * 60);

/// A connection on which no byte moved either way for this long is closed. Longer than the
/// 15 s keep-alive of the node's event stream.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a connection's deadlines are looked at; they fire at most this late.
const WATCH_TICK: Duration = Duration::from_millis(250);

/// The time limits of one server; every server runs with [`TIMEOUTS`], tests with shorter ones.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    handshake: Duration,
    header: Duration,
    body: Duration,
    idle: Duration,
}

/// The time limits every server runs with.
const TIMEOUTS: Timeouts = Timeouts {
    handshake: HANDSHAKE_TIMEOUT,
    header: HEADER_READ_TIMEOUT,
    body: BODY_READ_DEADLINE,
    idle: IDLE_TIMEOUT,
};

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
        TIMEOUTS,
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
    accept_loop(listener, None, classifier, router, TIMEOUTS, shutdown).await;
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
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    // Shared with every connection task, which gives its slot back when it ends.
    let admission = Arc::new(Mutex::new(Admission::new(LIMITS)));
    // The handshake tasks, so an evicted handshake can be stopped; each task takes itself out
    // when its handshake ends, so this holds at most `LIMITS.handshakes` entries.
    let handshakes: Arc<Mutex<HashMap<SlotId, AbortHandle>>> = Arc::default();
    let refusals = Arc::new(Refusals::default());
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
                let Some(Accepted { slot, evicted }) = refusals.or_record(admitted, address) else {
                    continue;
                };
                if let Some(evicted) = evicted {
                    if let Some(task) = lock(&handshakes).remove(&evicted) {
                        task.abort();
                    }
                    tracing::debug!(%address, "evicted the oldest TLS handshake to make room");
                }
                let id = slot.id();
                let slot = HeldSlot::new(admission.clone(), refusals.clone(), slot);
                let acceptor = acceptor.clone();
                let classifier = classifier.clone();
                let registry = handshakes.clone();
                // Held while spawning, so the task cannot take itself out before it is in.
                let mut tasks = lock(&handshakes);
                let task = tokio::spawn(async move {
                    let handshake = tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp));
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
                        timeouts,
                    )
                    .await;
                });
                tasks.insert(id, task.abort_handle());
            }
            None => {
                let class = classifier.classify(address, None);
                let admitted = lock(&admission).handle_plain_accept(client_ip(address), class);
                let Some(slot) = refusals.or_record(admitted, address) else {
                    continue;
                };
                let slot = HeldSlot::new(admission.clone(), refusals.clone(), slot);
                tokio::spawn(serve_connection(tcp, address, None, router, slot, timeouts));
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

/// Least time between two warnings about refused connections: under attack every connection
/// may be refused, and the log must not become the next thing the attacker fills.
const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Refused connections of one server, for the operator: each at debug level, and a count at
/// most once per [`REFUSAL_WARNING_INTERVAL`] at warn level.
#[derive(Debug, Default)]
struct Refusals {
    since_warning: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl Refusals {
    fn record(&self, address: SocketAddr, refusal: Refusal) {
        tracing::debug!(%address, %refusal, "connection refused");
        self.since_warning.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = lock(&self.last_warning);
        if last.is_none_or(|at| now.duration_since(at) >= REFUSAL_WARNING_INTERVAL) {
            *last = Some(now);
            let refused = self.since_warning.swap(0, Ordering::Relaxed);
            tracing::warn!(
                refused,
                latest = %refusal,
                "connections refused because a pool is full: slow or greedy clients hold it"
            );
        }
    }

    /// The slot, or `None` after recording why the connection (dropped by the caller) was
    /// refused.
    fn or_record<T>(&self, admitted: Result<T, Refusal>, address: SocketAddr) -> Option<T> {
        match admitted {
            Ok(slot) => Some(slot),
            Err(refusal) => {
                self.record(address, refusal);
                None
            }
        }
    }
}

/// A slot that goes back to the admission core when dropped, however the connection ends
/// (closed, timed out, refused later, or its task cancelled).
struct HeldSlot {
    admission: Arc<Mutex<Admission>>,
    /// Where a refusal when moving to a pool is recorded.
    refusals: Arc<Refusals>,
    slot: Option<Slot>,
}

impl HeldSlot {
    fn new(admission: Arc<Mutex<Admission>>, refusals: Arc<Refusals>, slot: Slot) -> Self {
        HeldSlot {
            admission,
            refusals,
            slot: Some(slot),
        }
    }

    /// Moves a handshake slot into the pool of `class`; `None` (and nothing held) if refused.
    fn finish_handshake(mut self, class: ClientClass, address: SocketAddr) -> Option<HeldSlot> {
        let slot = self.slot.take()?;
        let pooled = lock(&self.admission).handle_handshake_done(slot, class);
        self.refusals
            .or_record(pooled, address)
            .map(|slot| HeldSlot::new(self.admission.clone(), self.refusals.clone(), slot))
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
    async fn expired(&self, idle: Duration) -> &'static str {
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
            } else if now.duration_since(quiet_since) >= idle {
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
    timeouts: Timeouts,
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
            let body = DeadlineBody::start(body, watch.clone(), timeouts.body);
            http::Request::from_parts(parts, axum::body::Body::new(body))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::select! {
        served = connection => {
            if let Err(error) = served {
                tracing::debug!(%address, %error, "HTTP connection ended with an error");
            }
        }
        reason = watch.expired(timeouts.idle) => {
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
    fn start(inner: Incoming, watch: Arc<ConnectionWatch>, limit: Duration) -> Self {
        let announced = inner.size_hint().exact().unwrap_or(0);
        let allowance =
            Duration::from_millis(announced.saturating_mul(1000) / BODY_BYTES_PER_SECOND)
                .min(MAX_BODY_ALLOWANCE);
        let deadline = (!inner.is_end_stream()).then(|| Instant::now() + limit + allowance);
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Short limits, so the tests run in seconds of real time.
    const TEST_TIMEOUTS: Timeouts = Timeouts {
        handshake: Duration::from_secs(2),
        header: Duration::from_secs(2),
        body: Duration::from_secs(2),
        idle: Duration::from_secs(3),
    };
    /// The event stream's keep-alive, scaled like the limits.
    const STREAM_TICK: Duration = Duration::from_millis(1000);

    /// Recognises one address, as the witness recognises a log's.
    struct TrustedAddress(IpAddr);

    impl ClientClassifier for TrustedAddress {
        fn classify(&self, address: SocketAddr, _certificate: Option<&[u8]>) -> ClientClass {
            if address.ip() == self.0 {
                ClientClass::Authenticated("trusted".into())
            } else {
                ClientClass::Unauthenticated
            }
        }
    }

    /// A plain-HTTP server on loopback: `POST /echo` reads its whole body, `GET /wedge` never
    /// answers, `GET /stream` sends a chunk every [`STREAM_TICK`] like the node's event stream.
    async fn server(trusted: IpAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route(
                "/echo",
                post(|body: axum::body::Bytes| async move { format!("{}", body.len()) }),
            )
            .route("/wedge", get(std::future::pending::<String>))
            .route(
                "/stream",
                get(|| async {
                    let ticks = futures::stream::unfold((), |()| async {
                        tokio::time::sleep(STREAM_TICK).await;
                        Some((
                            Ok::<_, Infallible>(Bytes::from_static(b": keep-alive\n\n")),
                            (),
                        ))
                    });
                    Body::from_stream(ticks)
                }),
            );
        tokio::spawn(accept_loop(
            listener,
            None,
            Arc::new(TrustedAddress(trusted)),
            router,
            TEST_TIMEOUTS,
            std::future::pending(),
        ));
        addr
    }

    async fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        socket.connect(server).await.unwrap()
    }

    /// Reads until the server closes the connection; what it sent.
    async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    }

    /// Whether the server closed the connection without a word within `wait`.
    async fn closed_at_once(stream: &mut TcpStream, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(wait, stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Sends one byte every half second until the server closes the connection; how long that
    /// took. Each byte comes well within any per-read or idle timeout: only a total deadline
    /// stops this.
    async fn trickle_until_cut(stream: &mut TcpStream) -> Duration {
        let started = Instant::now();
        let trickle = async {
            loop {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                let mut byte = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await
                {
                    Err(_) => continue,
                    Ok(_) => break,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), trickle)
            .await
            .expect("the slow body was never cut");
        started.elapsed()
    }

    #[tokio::test]
    async fn a_body_trickled_one_byte_at_a_time_is_cut_at_the_deadline() {
        let server = server(IpAddr::from([127, 0, 0, 9])).await;
        let mut stream = connect_from([127, 0, 0, 1], server).await;
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
            .await
            .unwrap();
        let lasted = trickle_until_cut(&mut stream).await;
        assert!(
            lasted >= TEST_TIMEOUTS.body && lasted <= TEST_TIMEOUTS.body + Duration::from_secs(2),
            "cut after {lasted:?}"
        );
    }

    #[tokio::test]
    async fn a_large_announced_body_gets_time_for_its_length_and_no_more() {
        let server = server(IpAddr::from([127, 0, 0, 9])).await;
        let mut stream = connect_from([127, 0, 0, 1], server).await;
        // 128 KiB at the minimum rate: two seconds on top of the test's base deadline.
        let length = 2 * BODY_BYTES_PER_SECOND;
        stream
            .write_all(
                format!("POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let lasted = trickle_until_cut(&mut stream).await;
        let deadline = TEST_TIMEOUTS.body + Duration::from_secs(2);
        assert!(
            lasted >= deadline && lasted <= deadline + Duration::from_secs(2),
            "cut after {lasted:?}, deadline {deadline:?}"
        );
    }

    #[tokio::test]
    async fn a_body_sent_in_time_is_served_and_the_connection_kept() {
        let server = server(IpAddr::from([127, 0, 0, 9])).await;
        let mut stream = connect_from([127, 0, 0, 1], server).await;
        for _ in 0..2 {
            stream
                .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
                .await
                .unwrap();
            let mut answer = vec![0u8; 4096];
            let n = stream.read(&mut answer).await.unwrap();
            let text = String::from_utf8_lossy(&answer[..n]);
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            assert!(text.ends_with("\r\n\r\n5"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_a_streaming_one_is_not() {
        let server = server(IpAddr::from([127, 0, 0, 9])).await;
        let mut wedged = connect_from([127, 0, 0, 1], server).await;
        wedged
            .write_all(b"GET /wedge HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut stream = connect_from([127, 0, 0, 1], server).await;
        stream
            .write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        assert!(read_until_closed(&mut wedged).await.is_empty());
        let lasted = started.elapsed();
        assert!(
            lasted >= TEST_TIMEOUTS.idle && lasted <= TEST_TIMEOUTS.idle + Duration::from_secs(2),
            "closed after {lasted:?}"
        );
        // The stream, quiet for 15 s at a time, lives on well past the idle timeout.
        let mut received = 0;
        let mut buffer = [0u8; 4096];
        while started.elapsed() < TEST_TIMEOUTS.idle * 3 {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the stream was closed after {:?}", started.elapsed());
            received += n;
        }
        assert!(received > 0);
    }

    #[tokio::test]
    async fn a_full_pool_closes_newcomers_at_once_but_not_the_recognised_client() {
        let trusted = IpAddr::from([127, 0, 0, 9]);
        let server = server(trusted).await;
        // The per-address cap, then the pool, from as many addresses as it takes.
        let mut held = Vec::new();
        let per_address = LIMITS.unauthenticated_per_address;
        for n in 0..LIMITS.unauthenticated / per_address {
            for _ in 0..per_address {
                let mut stream = connect_from([127, 0, 1, n as u8], server).await;
                stream
                    .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\n\r\n")
                    .await
                    .unwrap();
                held.push(stream);
            }
            let mut over = connect_from([127, 0, 1, n as u8], server).await;
            assert!(
                closed_at_once(&mut over, Duration::from_secs(1)).await,
                "an address got more than its share"
            );
        }
        let mut stranger = connect_from([127, 0, 2, 1], server).await;
        assert!(
            closed_at_once(&mut stranger, Duration::from_secs(1)).await,
            "the pool took more than its size"
        );
        // The recognised client is served from its reserve.
        let mut known = connect_from([127, 0, 0, 9], server).await;
        known
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok")
            .await
            .unwrap();
        let mut answer = vec![0u8; 4096];
        let n = known.read(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
        // A held connection that ends gives its slot back.
        drop(held.pop());
        let mut next = None;
        for _ in 0..50 {
            let mut stream = connect_from([127, 0, 2, 1], server).await;
            if !closed_at_once(&mut stream, Duration::from_millis(200)).await {
                next = Some(stream);
                break;
            }
        }
        assert!(next.is_some(), "the freed slot was never given back");
    }
}
