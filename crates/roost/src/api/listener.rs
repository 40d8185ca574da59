//! The HTTP listener: plain TCP, or TLS when configured. Connections are accepted (and their
//! TLS handshakes run, under a timeout) in tasks of their own, then handed to axum, so a slow
//! client never holds up the accept loop.

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Any byte stream a connection can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Connections ready for HTTP.
pub struct Incoming {
    ready: mpsc::Receiver<(Box<dyn Io>, SocketAddr)>,
    local: SocketAddr,
}

/// The client's address, for handlers (`ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, Incoming>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Incoming>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Listener for Incoming {
    type Io = Box<dyn Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Starts accepting on `listener`; with `tls`, each connection first completes its handshake
/// within `handshake_timeout`.
pub fn incoming(listener: TcpListener, tls: Option<TlsAcceptor>, handshake_timeout: Duration, shutdown: CancellationToken) -> std::io::Result<Incoming> {
    let local = listener.local_addr()?;
    let (ready_tx, ready) = mpsc::channel(64);
    tokio::spawn(async move {
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
                    tokio::spawn(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let _ = ready_tx.send((Box::new(stream) as Box<dyn Io>, peer)).await;
                            }
                            Ok(Err(e)) => info!(%peer, error = %e, "HTTPS handshake failed"),
                            Err(_) => info!(%peer, timeout = ?handshake_timeout, "HTTPS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    Ok(Incoming { ready, local })
}
