//! The listener: accepts connections and serves HTTP/1.1 on each, with the
//! limits `axum::serve` has no setting for.
//!
//! - a cap on open connections (`server.max_connections`, WebSockets
//!   included: the permit travels inside the socket through the upgrade);
//!   over it a new connection is closed at once and counted;
//! - a deadline for a request's head (`server.header_read_timeout_secs`),
//!   which also ends idle keep-alive connections, so a socket that sends
//!   nothing, or half a header, is closed (slowloris);
//! - a bound on the request head (`server.max_header_bytes`; hyper answers
//!   431 past it);
//! - the peer's address in every request (`ConnectInfo`), for per-client
//!   limits.
//!
//! On shutdown it stops accepting, asks every connection to finish its
//! request in flight, and resolves once they all have.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` until `shutdown`, then waits for the
/// connections' requests in flight (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(%error, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!(actors::metrics::HTTP_CONNECTIONS_REFUSED_TOTAL).increment(1);
            drop(tcp);
            continue;
        };
        // Small frames must not wait for Nagle and delayed ACKs (up to
        // 40 ms): fan-out latency is the product.
        let _ = tcp.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::extract::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.map(axum::body::Body::new)
                });
        connections.spawn(connection(
            Counted::new(tcp, permit),
            TowerToHyperService::new(service),
            limits.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn connection<S>(
    io: Counted,
    service: TowerToHyperService<S>,
    limits: Limits,
    shutdown: CancellationToken,
) where
    S: tower::Service<
            axum::extract::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "Connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A socket that holds one of the listener's connection permits until it
/// is dropped, also after an upgrade to a WebSocket.
struct Counted {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
    _open: OpenConnection,
}

impl Counted {
    fn new(tcp: TcpStream, permit: OwnedSemaphorePermit) -> Counted {
        Counted {
            tcp,
            _permit: permit,
            _open: OpenConnection::new(),
        }
    }
}

/// Keeps `dispatch_http_connections` right whichever way a socket ends.
struct OpenConnection;

impl OpenConnection {
    fn new() -> OpenConnection {
        metrics::gauge!(actors::metrics::HTTP_CONNECTIONS).increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(actors::metrics::HTTP_CONNECTIONS).decrement(1.0);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// The client's IP address, as `serve` puts it in every request. A router
/// served some other way has none, and its clients share `0.0.0.0`.
pub struct ClientAddr(pub std::net::IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |info| info.0.ip()),
        ))
    }
}
