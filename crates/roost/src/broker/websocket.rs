//! MQTT over WebSocket (MQTT 3.1.1 §6): the handshake with subprotocol `mqtt`, and an adapter
//! that turns binary frames into the byte stream the connection reads, whatever the framing
//! (a packet split across frames, several packets in one frame).

use bytes::Bytes;
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

/// Subprotocols we answer, best first: "mqtt" [MQTT-6.0.0-3]; "mqttv3.1" for older clients.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The path MQTT over WebSocket is served at.
pub const PATH: &str = "/mqtt";

/// Bytes tungstenite reads from the socket at once. Its default, 128 KiB, is zero-filled and
/// kept for the life of every connection: an idle MQTT-over-WebSocket connection then cost
/// about 150 kB (BENCHMARKS.md). MQTT packets from sensors and browsers are small.
const READ_BUFFER: usize = 4 * 1024;

/// The WebSocket settings of every MQTT-over-WebSocket connection, on either port.
///
/// A WebSocket message (and frame) is limited to twice the broker's MQTT packet size limit, and
/// at least 64 KiB: one message may carry several MQTT packets. Past it the connection is
/// closed, as for an oversized MQTT packet. tungstenite's own limit, 64 MiB, let a client make
/// the broker buffer that much before the MQTT limit applied.
pub fn config(max_packet_size: usize) -> WebSocketConfig {
    let limit = max_packet_size.saturating_mul(2).max(64 * 1024);
    WebSocketConfig::default().read_buffer_size(READ_BUFFER).max_message_size(Some(limit)).max_frame_size(Some(limit))
}

/// Handshake callback: refuses other paths, picks the MQTT subprotocol [MQTT-6.0.0-4].
#[allow(clippy::result_large_err)] // the signature is tungstenite's
pub fn negotiate(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() != PATH {
        let mut refusal = ErrorResponse::new(Some(format!("MQTT over WebSocket is served at {PATH}")));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        return Err(refusal);
    }
    if let Some(chosen) = choose_subprotocol(request.headers()) {
        response.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
    }
    Ok(response)
}

/// The MQTT subprotocol to answer, from the client's `Sec-WebSocket-Protocol` offers.
pub fn choose_subprotocol(headers: &tokio_tungstenite::tungstenite::http::HeaderMap) -> Option<&'static str> {
    let offered = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    SUBPROTOCOLS.iter().find(|p| offered.contains(p)).copied()
}

/// A byte stream over a WebSocket: reads concatenate binary frames, each write is one frame.
pub struct WsBytes<W> {
    socket: W,
    pending: Bytes,
}

impl<W> WsBytes<W> {
    pub fn new(socket: W) -> Self {
        Self { socket, pending: Bytes::new() }
    }
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<W> AsyncRead for WsBytes<W>
where
    W: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin,
{
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                Some(Ok(WsMessage::Binary(data))) => self.pending = data,
                // Control frames are answered by tungstenite itself.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Close(_))) | None => return Poll::Ready(Ok(())),
                // [MQTT-6.0.0-1] anything but binary data frames closes the connection.
                Some(Ok(WsMessage::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "[MQTT-6.0.0-1] text frame received; MQTT needs binary frames",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<W> AsyncWrite for WsBytes<W>
where
    W: Stream<Item = Result<WsMessage, WsError>> + Sink<WsMessage, Error = WsError> + Unpin,
{
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.socket).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut self.socket).start_send(WsMessage::Binary(Bytes::copy_from_slice(data))).map_err(to_io)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_close(cx).map_err(to_io)
    }
}
