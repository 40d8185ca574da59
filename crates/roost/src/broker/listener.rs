//! Accept loops for MQTT over TCP and over WebSocket, each optionally over TLS. Each
//! connection, including its TLS and WebSocket handshakes, runs in its own task, so a slow
//! handshake never holds up the accept loop.

use super::limits::Permit;
use super::{connection, websocket, Broker};
use crate::tls;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Serves MQTT over TCP (over TLS with `tls`) on `listener` until `shutdown` is cancelled.
pub async fn serve_tcp(listener: TcpListener, broker: Arc<Broker>, tls: Option<TlsAcceptor>, shutdown: CancellationToken, tracker: TaskTracker) {
    accept_loop(listener, shutdown.clone(), |stream, peer| {
        let Some(permit) = broker.admit(peer) else { return };
        let broker = Arc::clone(&broker);
        match tls.clone() {
            // Spawned as it is: no wrapping future that would keep copies of its arguments.
            None => tracker.spawn(connection::serve(broker, stream, peer, permit)),
            Some(acceptor) => tracker.spawn(async move {
                let deadline = tokio::time::Instant::now() + broker.config.connect_timeout;
                if let Some(stream) = tls::handshake(&acceptor, stream, peer, deadline, "MQTT").await {
                    connection::serve(broker, stream, peer, permit).await;
                }
            }),
        };
    })
    .await;
}

/// Serves MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`) until `shutdown` is cancelled.
/// With `tls`, WebSocket over TLS (wss://); the connect timeout covers both handshakes.
pub async fn serve_websocket(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    accept_loop(listener, shutdown.clone(), |stream, peer| {
        let Some(permit) = broker.admit(peer) else { return };
        let broker = Arc::clone(&broker);
        let tls = tls.clone();
        tracker.spawn(async move {
            let deadline = tokio::time::Instant::now() + broker.config.connect_timeout;
            match tls {
                None => websocket_session(stream, broker, peer, permit, deadline).await,
                Some(acceptor) => {
                    if let Some(stream) = tls::handshake(&acceptor, stream, peer, deadline, "MQTT over WebSocket").await {
                        websocket_session(stream, broker, peer, permit, deadline).await;
                    }
                }
            }
        });
    })
    .await;
}

async fn websocket_session<S>(stream: S, broker: Arc<Broker>, peer: SocketAddr, permit: Permit, deadline: tokio::time::Instant)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let handshake = tokio_tungstenite::accept_hdr_async(stream, websocket::negotiate);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(socket)) => connection::serve(broker, websocket::WsBytes::new(socket), peer, permit).await,
        Ok(Err(e)) => info!(%peer, error = %e, "WebSocket handshake failed"),
        Err(_) => info!(%peer, "WebSocket handshake timed out"),
    }
}

async fn accept_loop(listener: TcpListener, shutdown: CancellationToken, mut spawn: impl FnMut(TcpStream, SocketAddr)) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                spawn(stream, peer);
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                warn!(error = %e, "accept failed; retrying shortly");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs an MQTT session over an already-upgraded WebSocket (the HTTP server's `/mqtt`), holding
/// the connection's `permit` (from `Broker::admit`).
pub async fn serve_websocket_session<W>(broker: Arc<Broker>, socket: W, peer: SocketAddr, permit: Permit)
where
    W: futures_util::Stream<Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>
        + futures_util::Sink<tokio_tungstenite::tungstenite::Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin
        + Send,
{
    connection::serve(broker, websocket::WsBytes::new(socket), peer, permit).await;
}
