//! One client API over rumqttc's MQTT 3.1.1 and 5.0 clients, for what `roost simulate` and
//! `roost bench` do with them: connect, publish, and watch sends and acknowledgements.

use super::ClientSettings;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
use rumqttc::{Event, Incoming, Outgoing, QoS};

/// The MQTT version Roost's own clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Protocol {
    /// MQTT 3.1.1, as PubSubClient boards speak it.
    #[default]
    #[value(name = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[value(name = "5")]
    V5,
}

/// A connected client's handle (cheap to clone).
#[derive(Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The event loop that drives a [`Client`]'s connection (boxed: both are large).
pub enum EventLoop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// What the simulator and the bench watch of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    Connected,
    /// A PUBLISH left with this packet id (0 for QoS 0).
    Sent(u16),
    /// PUBACK (QoS 1) of this packet id; `refused` when a 5.0 server answered with a failure
    /// reason code (0x80 or more): the message was not taken.
    PubAck {
        packet_id: u16,
        refused: bool,
    },
    /// PUBCOMP (QoS 2) of this packet id.
    PubComp(u16),
    /// The client sent DISCONNECT: the connection ends.
    Disconnecting,
    Other,
}

fn qos5(qos: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

impl ClientSettings {
    /// A clean-start client called `client_id` speaking `self.protocol`, with at most
    /// `inflight` unacknowledged QoS 1/2 publishes, and its event loop (nothing is sent before
    /// the loop is polled).
    pub fn connect(&self, client_id: &str, inflight: u16) -> anyhow::Result<(Client, EventLoop)> {
        let capacity = usize::from(inflight.max(1));
        match self.protocol {
            Protocol::V311 => {
                let (client, events) = rumqttc::AsyncClient::new(self.mqtt_options(client_id, inflight)?, capacity);
                Ok((Client::V311(client), EventLoop::V311(Box::new(events))))
            }
            Protocol::V5 => {
                let (client, events) = rumqttc::v5::AsyncClient::new(self.mqtt5_options(client_id, inflight)?, capacity);
                Ok((Client::V5(client), EventLoop::V5(Box::new(events))))
            }
        }
    }
}

impl Client {
    pub async fn publish(&self, topic: impl Into<String>, qos: QoS, retain: bool, payload: impl Into<Bytes>) -> anyhow::Result<()> {
        match self {
            Client::V311(c) => c.publish(topic, qos, retain, payload.into()).await?,
            Client::V5(c) => c.publish(topic, qos5(qos), retain, payload.into()).await?,
        }
        Ok(())
    }

    pub async fn disconnect(&self) -> anyhow::Result<()> {
        match self {
            Client::V311(c) => c.disconnect().await?,
            Client::V5(c) => c.disconnect().await?,
        }
        Ok(())
    }
}

impl EventLoop {
    /// The next event; an error when the connection failed (polling again reconnects).
    pub async fn poll(&mut self) -> Result<ClientEvent, String> {
        match self {
            EventLoop::V311(events) => Ok(match events.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Incoming::ConnAck(_)) => ClientEvent::Connected,
                Event::Outgoing(Outgoing::Publish(id)) => ClientEvent::Sent(id),
                Event::Incoming(Incoming::PubAck(ack)) => ClientEvent::PubAck { packet_id: ack.pkid, refused: false },
                Event::Incoming(Incoming::PubComp(ack)) => ClientEvent::PubComp(ack.pkid),
                Event::Outgoing(Outgoing::Disconnect) => ClientEvent::Disconnecting,
                _ => ClientEvent::Other,
            }),
            EventLoop::V5(events) => {
                use rumqttc::v5::mqttbytes::v5::PubAckReason;
                use rumqttc::v5::Event as Event5;
                Ok(match events.poll().await.map_err(|e| e.to_string())? {
                    Event5::Incoming(Packet5::ConnAck(_)) => ClientEvent::Connected,
                    Event5::Outgoing(Outgoing::Publish(id)) => ClientEvent::Sent(id),
                    Event5::Incoming(Packet5::PubAck(ack)) => {
                        let refused = !matches!(ack.reason, PubAckReason::Success | PubAckReason::NoMatchingSubscribers);
                        ClientEvent::PubAck { packet_id: ack.pkid, refused }
                    }
                    Event5::Incoming(Packet5::PubComp(ack)) => ClientEvent::PubComp(ack.pkid),
                    Event5::Outgoing(Outgoing::Disconnect) => ClientEvent::Disconnecting,
                    _ => ClientEvent::Other,
                })
            }
        }
    }
}
