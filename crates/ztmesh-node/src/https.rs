//! Serves an axum [`Router`] over TLS 1.3 (tokio-rustls + hyper HTTP/1.1).
//!
//! Each request carries two extensions set here: the client's socket address (for rate limits)
//! and the client certificate it presented, if any ([`PresentedCertificate`]), for routes to judge.
//! Connections are bounded by a semaphore and handshakes by a timeout, so a flood of idle
//! sockets cannot exhaust the process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::tls::PresentedCertificate;

/// Most concurrent connections one HTTPS server accepts; further ones wait in the kernel backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's address, as seen by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Accepts connections on `listener` until `shutdown` completes, serving `router` on each.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    // One permit per live connection: the bound on sockets, TLS state and hyper tasks.
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, addr) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%addr, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            let presented = PresentedCertificate(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| Arc::new(leaf.as_ref().to_vec())),
            );
            let service =
                router.map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(presented.clone());
                    request.extensions_mut().insert(ClientAddr(addr));
                    request
                });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .await;
            if let Err(error) = served {
                tracing::debug!(%addr, %error, "HTTP connection ended with an error");
            }
        });
    }
}
