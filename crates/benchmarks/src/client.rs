//! A minimal, fast MQTT 3.1.1 (or 5.0) load client on the project's codec: pipelined publishes, a
//! counting subscriber. Built for measuring brokers, not for general use.

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use mqtt_codec::*;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

pub struct Client {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

/// A CONNECT in `version`; a 5.0 persistent session (`clean` false) never expires.
pub fn connect_packet_as(client_id: &str, clean: bool, version: ProtocolVersion) -> Packet {
    let persistent = version.is_v5() && !clean;
    Packet::Connect(Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: Duration::ZERO,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties(if persistent { vec![Property::SessionExpiryInterval(u32::MAX)] } else { Vec::new() }),
    })
}

pub fn publish_packet(topic: &TopicName, payload: Bytes, qos: QoS, id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: Some(topic.clone()),
        packet_id: if qos == QoS::AtMostOnce { None } else { NonZeroU16::new(id) },
        payload,
        properties: Properties::default(),
    })
}

pub fn put(packet: &Packet, out: &mut BytesMut) {
    put_as(packet, ProtocolVersion::V311, out);
}

pub fn put_as(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    encode(packet, version, out).expect("benchmark packets encode");
}

impl Client {
    /// Connects from `source` (any loopback address) to `broker` and completes CONNECT.
    pub async fn connect(broker: SocketAddr, source: Option<std::net::IpAddr>, client_id: &str) -> anyhow::Result<Self> {
        Self::connect_session(broker, source, client_id, true).await
    }

    /// Connects with clean session `clean` (false: a persistent session).
    pub async fn connect_session(
        broker: SocketAddr,
        source: Option<std::net::IpAddr>,
        client_id: &str,
        clean: bool,
    ) -> anyhow::Result<Self> {
        Self::connect_as(broker, source, client_id, clean, ProtocolVersion::V311).await
    }

    /// Connects speaking `version`.
    pub async fn connect_as(
        broker: SocketAddr,
        source: Option<std::net::IpAddr>,
        client_id: &str,
        clean: bool,
        version: ProtocolVersion,
    ) -> anyhow::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(broker).await.with_context(|| format!("connecting to {broker}"))?;
        stream.set_nodelay(true)?;
        let mut client = Self { stream, buf: BytesMut::with_capacity(64 * 1024), version };
        client.send(&connect_packet_as(client_id, clean, version)).await?;
        match client.recv().await? {
            Packet::ConnAck(a) if a.code == 0 => Ok(client),
            other => bail!("unexpected answer to CONNECT: {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        put_as(packet, self.version, &mut out);
        self.stream.write_all(&out).await?;
        Ok(())
    }

    pub async fn recv(&mut self) -> anyhow::Result<Packet> {
        read_packet(&mut self.stream, &mut self.buf, self.version).await
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: NonZeroU16::new(1).unwrap(),
            filters: vec![(filter.into(), SubscriptionOptions::qos(qos))],
            properties: Properties::default(),
        }))
        .await?;
        match self.recv().await? {
            Packet::SubAck(a) if a.codes == [qos as u8] => Ok(()),
            // A persistent session's retained messages, or messages queued before.
            Packet::Publish(_) => bail!("a PUBLISH before the SUBACK"),
            other => bail!("unexpected answer to SUBSCRIBE: {other:?}"),
        }
    }

    pub fn split(self) -> (Reader, OwnedWriteHalf) {
        let (r, w) = self.stream.into_split();
        (Reader { half: r, buf: self.buf, version: self.version }, w)
    }
}

pub struct Reader {
    pub half: OwnedReadHalf,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Reader {
    /// Reads and decodes whatever arrives next: at least one packet.
    pub async fn recv_batch(&mut self, out: &mut Vec<Packet>) -> anyhow::Result<()> {
        loop {
            while let Some(p) = decode(&mut self.buf, self.version, usize::MAX)? {
                out.push(p);
            }
            if !out.is_empty() {
                return Ok(());
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                bail!("broker closed the connection");
            }
        }
    }
}

async fn read_packet<R: AsyncReadExt + Unpin>(r: &mut R, buf: &mut BytesMut, version: ProtocolVersion) -> anyhow::Result<Packet> {
    loop {
        if let Some(p) = decode(buf, version, usize::MAX)? {
            return Ok(p);
        }
        if r.read_buf(buf).await? == 0 {
            bail!("broker closed the connection");
        }
    }
}
