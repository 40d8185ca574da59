//! Accept loops for MQTT over TCP and over WebSocket, each optionally over TLS. Each
//! connection, including its TLS and WebSocket handshakes, runs in its own task, so a slow
//! handshake never holds up the accept loop. Handshake futures are boxed: a task keeps the
//! space of its largest state for its whole life, and tungstenite's handshake alone made an
//! idle WebSocket connection's task 12.9 kB (BENCHMARKS.md).

use super::limits::Permit;
use super::{connection, websocket, Broker};
use crate::tls;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Serves MQTT over TCP (over TLS with `tls`) on `listener` until `shutdown` is cancelled.
pub async fn serve_tcp(
    listener: TcpListener,
    broker: Arc<Broker>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    accept_loop(listener, shutdown.clone(), |stream, peer| {
        let Some(permit) = broker.admit(peer) else { return };
        let broker = Arc::clone(&broker);
        match tls.clone() {
            // Spawned as it is: no wrapping future that would keep copies of its arguments.
            None => tracker.spawn(connection::serve(broker, stream, peer, permit)),
            Some(acceptor) => tracker.spawn(async move {
                let deadline = tokio::time::Instant::now() + broker.config.connect_timeout;
                // `let … else`, not `if let`: the handshake's result is then not kept, as a
                // temporary, for the whole session.
                let Some(stream) = Box::pin(tls::handshake(&acceptor, stream, peer, deadline, "MQTT")).await else { return };
                connection::serve(broker, stream, peer, permit).await;
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
                None => {
                    let Some(socket) = Box::pin(accept_websocket(stream, &broker, peer, deadline)).await else { return };
                    connection::serve(broker, websocket::WsBytes::new(socket), peer, permit).await;
                }
                Some(acceptor) => {
                    let handshakes = async {
                        let stream = tls::handshake(&acceptor, stream, peer, deadline, "MQTT over WebSocket").await?;
                        accept_websocket(stream, &broker, peer, deadline).await
                    };
                    let Some(socket) = Box::pin(handshakes).await else { return };
                    connection::serve(broker, websocket::WsBytes::new(socket), peer, permit).await;
                }
            }
        });
    })
    .await;
}

/// The WebSocket handshake (path `/mqtt`, subprotocol `mqtt`), by `deadline`; `None` (logged)
/// if it failed.
async fn accept_websocket<S>(stream: S, broker: &Broker, peer: SocketAddr, deadline: tokio::time::Instant) -> Option<WebSocketStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let config = websocket::config(broker.config.max_packet_size);
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, websocket::negotiate, Some(config));
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(socket)) => Some(socket),
        Ok(Err(e)) => {
            info!(%peer, error = %e, "WebSocket handshake failed");
            None
        }
        Err(_) => {
            info!(%peer, "WebSocket handshake timed out");
            None
        }
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
/// the connection's `permit` (from `Broker::admit`). A plain function, like
/// `connection::serve`: an async one would keep a copy of `socket` for the whole session.
pub fn serve_websocket_session<W>(
    broker: Arc<Broker>,
    socket: W,
    peer: SocketAddr,
    permit: Permit,
) -> impl std::future::Future<Output = ()> + Send
where
    W: futures_util::Stream<Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>
        + futures_util::Sink<tokio_tungstenite::tungstenite::Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin
        + Send,
{
    connection::serve(broker, websocket::WsBytes::new(socket), peer, permit)
}
