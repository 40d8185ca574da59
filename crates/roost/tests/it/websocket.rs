//! MQTT over WebSocket (MQTT 3.1.1 §6) with a real WebSocket client: subprotocol negotiation,
//! packets split across frames and several packets in one frame.

use crate::support::{connect, Raw, TestServer, WAIT};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use mqtt_codec::*;
use std::num::NonZeroU16;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws_connect(server: &TestServer, path: &str) -> Result<(Ws, Option<String>), tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{}{path}", server.ws).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (ws, response) = tokio_tungstenite::connect_async(request).await?;
    let protocol = response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_owned());
    Ok((ws, protocol))
}

fn bytes_of(packet: &Packet) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, ProtocolVersion::V311, &mut out).unwrap();
    out
}

/// Reads frames until `n` packets decoded.
async fn recv_packets(ws: &mut Ws, buf: &mut BytesMut, n: usize) -> Vec<Packet> {
    let mut packets = Vec::new();
    tokio::time::timeout(WAIT, async {
        while packets.len() < n {
            while let Some(p) = decode(buf, ProtocolVersion::V311, usize::MAX).unwrap() {
                packets.push(p);
            }
            if packets.len() >= n {
                break;
            }
            match ws.next().await.expect("socket open").unwrap() {
                WsMessage::Binary(data) => buf.extend_from_slice(&data),
                other => panic!("[MQTT-6.0.0-1] expected a binary frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("packets in time");
    packets
}

#[tokio::test]
async fn subprotocol_is_mqtt_and_packets_may_span_or_share_frames() {
    let server = TestServer::start().await;
    let (mut ws, protocol) = ws_connect(&server, "/mqtt").await.unwrap();
    // [MQTT-6.0.0-4] the server selects the "mqtt" subprotocol.
    assert_eq!(protocol.as_deref(), Some("mqtt"));
    // [MQTT-6.0.0-2] a packet may span frames: CONNECT in three pieces.
    let connect_bytes = bytes_of(&Packet::Connect(connect("ws-client", true)));
    for piece in connect_bytes.chunks(5) {
        ws.send(WsMessage::Binary(Bytes::copy_from_slice(piece))).await.unwrap();
    }
    let mut buf = BytesMut::new();
    assert!(matches!(&recv_packets(&mut ws, &mut buf, 1).await[..], [Packet::ConnAck(a)] if a.code == 0));
    // Several packets in one frame: SUBSCRIBE + PUBLISH + PINGREQ.
    let mut frame = bytes_of(&Packet::Subscribe(Subscribe {
        packet_id: NonZeroU16::new(1).unwrap(),
        filters: vec![("ws/echo".into(), SubscriptionOptions::qos(QoS::AtLeastOnce))],
        properties: Properties::default(),
    }));
    frame.extend_from_slice(&bytes_of(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Some(TopicName::parse("ws/echo").unwrap()),
        packet_id: NonZeroU16::new(2),
        payload: Bytes::from_static(b"over websocket"),
        properties: Properties::default(),
    })));
    frame.extend_from_slice(&bytes_of(&Packet::PingReq));
    ws.send(WsMessage::Binary(frame.freeze())).await.unwrap();
    let packets = recv_packets(&mut ws, &mut buf, 4).await;
    assert!(matches!(packets[0], Packet::SubAck(_)));
    assert!(packets.iter().any(|p| matches!(p, Packet::PubAck(_))));
    assert!(packets.iter().any(|p| matches!(p, Packet::PingResp)));
    assert!(packets.iter().any(|p| matches!(p, Packet::Publish(m) if &m.payload[..] == b"over websocket")));
}

#[tokio::test]
async fn websocket_and_tcp_clients_share_one_broker() {
    let server = TestServer::start().await;
    let (mut tcp_sub, _) = Raw::mqtt(server.mqtt, "tcp-sub", true).await;
    tcp_sub
        .send(&Packet::Subscribe(Subscribe {
            packet_id: NonZeroU16::new(1).unwrap(),
            filters: vec![("mixed".into(), SubscriptionOptions::qos(QoS::AtMostOnce))],
            properties: Properties::default(),
        }))
        .await;
    assert!(matches!(tcp_sub.recv().await, Some(Packet::SubAck(_))));
    let (mut ws, _) = ws_connect(&server, "/mqtt").await.unwrap();
    ws.send(WsMessage::Binary(bytes_of(&Packet::Connect(connect("ws-pub", true))).freeze())).await.unwrap();
    let mut buf = BytesMut::new();
    recv_packets(&mut ws, &mut buf, 1).await;
    ws.send(WsMessage::Binary(
        bytes_of(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: Some(TopicName::parse("mixed").unwrap()),
            packet_id: None,
            payload: Bytes::from_static(b"hi"),
            properties: Properties::default(),
        }))
        .freeze(),
    ))
    .await
    .unwrap();
    assert!(matches!(tcp_sub.recv().await, Some(Packet::Publish(p)) if &p.payload[..] == b"hi"));
}

#[tokio::test]
async fn other_paths_are_refused() {
    let server = TestServer::start().await;
    let err = ws_connect(&server, "/elsewhere").await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn text_frames_close_the_connection() {
    // [MQTT-6.0.0-1] a non-binary data frame: close the connection.
    let server = TestServer::start().await;
    let (mut ws, _) = ws_connect(&server, "/mqtt").await.unwrap();
    ws.send(WsMessage::Text("hello".into())).await.unwrap();
    assert!(closed_by_server(&mut ws).await, "connection stayed open after a text frame");
}

/// Reads until the server closes the connection; false if it stayed open for `WAIT`.
async fn closed_by_server(ws: &mut Ws) -> bool {
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    end.is_ok()
}

#[tokio::test]
async fn a_websocket_message_over_twice_the_packet_limit_closes_the_connection() {
    // The MQTT packet limit (1 MiB by default) must hold over WebSocket too: one message of
    // 3 MiB of well-formed PINGREQs is refused as a whole instead of being buffered.
    let server = TestServer::start().await;
    let (mut ws, _) = ws_connect(&server, "/mqtt").await.unwrap();
    ws.send(WsMessage::Binary(bytes_of(&Packet::Connect(connect("ws-big", true))).freeze())).await.unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(&recv_packets(&mut ws, &mut buf, 1).await[..], [Packet::ConnAck(a)] if a.code == 0));
    let pings = bytes_of(&Packet::PingReq).repeat(3 * 1024 * 1024 / 2);
    // The server may close while this is still being written.
    let _ = ws.send(WsMessage::Binary(Bytes::from(pings))).await;
    assert!(closed_by_server(&mut ws).await, "a 3 MiB WebSocket message was accepted");
    // One message within the limit (several packets in it) is still fine on a new connection.
    let (mut ws, _) = ws_connect(&server, "/mqtt").await.unwrap();
    let mut frame = bytes_of(&Packet::Connect(connect("ws-fine", true)));
    frame.extend_from_slice(&bytes_of(&Packet::PingReq).repeat(1000));
    ws.send(WsMessage::Binary(frame.freeze())).await.unwrap();
    let packets = recv_packets(&mut ws, &mut buf, 1001).await;
    assert!(matches!(packets[0], Packet::ConnAck(_)) && packets[1..].iter().all(|p| *p == Packet::PingResp));
}

#[tokio::test]
async fn a_stalled_handshake_does_not_block_others() {
    let server = TestServer::start().await;
    // Opens TCP and never speaks: its handshake runs in its own task.
    let _stalled = TcpStream::connect(server.ws).await.unwrap();
    let (mut ws, _) = tokio::time::timeout(WAIT, ws_connect(&server, "/mqtt")).await.unwrap().unwrap();
    ws.send(WsMessage::Binary(bytes_of(&Packet::Connect(connect("after-stall", true))).freeze())).await.unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(&recv_packets(&mut ws, &mut buf, 1).await[..], [Packet::ConnAck(_)]));
}
