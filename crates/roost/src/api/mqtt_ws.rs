//! MQTT over WebSocket on the HTTP port (`/mqtt`, subprotocol `mqtt`), so one port and one
//! reverse-proxy rule serve the dashboard and its MQTT console.

use super::ApiState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

pub async fn upgrade(
    State(state): State<ApiState>,
    ConnectInfo(super::listener::Peer(peer)): ConnectInfo<super::listener::Peer>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let is_upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let (Some(key), true, true) = (headers.get(header::SEC_WEBSOCKET_KEY), is_upgrade, version_ok) else {
        return (StatusCode::BAD_REQUEST, "MQTT over WebSocket: send a WebSocket (version 13) upgrade request\n").into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let protocol = crate::broker::choose_subprotocol(headers);
    let Some(permit) = state.broker.admit(peer) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections from this address\n").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let timeout = state.broker.config().connect_timeout;
    // Only the broker goes into the task: an async block keeps whatever it captures.
    let broker = std::sync::Arc::clone(&state.broker);
    state.tracker.spawn(async move {
        // Boxed, and finished with `let … else`, as in `broker::listener`: a task keeps the
        // space of its largest state, and an `if let`/`match` its scrutinee, for its whole life.
        let upgrade = async {
            match tokio::time::timeout(timeout, on_upgrade).await {
                Ok(Ok(upgraded)) => {
                    let config = Some(crate::broker::websocket::config(broker.config().max_packet_size));
                    Some(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, config).await)
                }
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "WebSocket upgrade failed");
                    None
                }
                Err(_) => {
                    tracing::info!(%peer, "WebSocket upgrade timed out");
                    None
                }
            }
        };
        let Some(socket) = Box::pin(upgrade).await else { return };
        crate::broker::serve_websocket_session(broker, socket, peer, permit).await;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(protocol) = protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    response.body(Body::empty()).unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
