//! The HTTP listener: plain TCP, or TLS when configured. Connections are accepted (and their
//! TLS handshakes run, under a timeout) in tasks of their own, then served by hyper with a
//! deadline for request headers, so slow clients (slowloris) neither hold up the accept loop
//! nor keep connections open for free.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// Any byte stream a connection can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// How long open requests (say, a live feed) may go on after shutdown began.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections ready for HTTP.
pub struct Incoming {
    ready: mpsc::Receiver<(Box<dyn Io>, SocketAddr)>,
}

/// The client's address, for handlers (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Serves `router` on every connection from `incoming` until `shutdown`; a client has
/// `header_timeout` to send each request's headers. Connections are served on `tasks` (the
/// tracker [`incoming`] accepts on); returns once they have all ended, or after
/// [`DRAIN_TIMEOUT`].
pub async fn serve(mut incoming: Incoming, router: Router, header_timeout: Duration, shutdown: CancellationToken, tasks: TaskTracker) {
    let connections = tasks;
    loop {
        let (io, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = incoming.ready.recv() => match next {
                Some(connection) => connection,
                None => break,
            },
        };
        let service = tower::ServiceExt::map_request(router.clone(), move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(Peer(peer)));
            request
        });
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_util::service::TowerToHyperService::new(service));
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, connection).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, connections.wait()).await;
}

/// Starts accepting on `listener`, on `tasks` (which [`serve`] waits for); with `tls`, each
/// connection first completes its handshake within `handshake_timeout`. The accept loop ends at
/// `shutdown`.
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Incoming {
    let (ready_tx, ready) = mpsc::channel(64);
    let handshakes = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(error = %e, "HTTP accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let ready_tx = ready_tx.clone();
            match tls.clone() {
                None => {
                    let _ = ready_tx.send((Box::new(stream) as Box<dyn Io>, peer)).await;
                }
                Some(acceptor) => {
                    handshakes.spawn(async move {
                        let deadline = tokio::time::Instant::now() + handshake_timeout;
                        if let Some(stream) = crate::tls::handshake(&acceptor, stream, peer, deadline, "HTTP").await {
                            let _ = ready_tx.send((Box::new(stream) as Box<dyn Io>, peer)).await;
                        }
                    });
                }
            }
        }
    });
    Incoming { ready }
}
