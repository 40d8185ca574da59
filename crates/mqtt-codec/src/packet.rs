//! The packet types of MQTT 3.1.1 and 5.0. Version-specific fields (properties, reason codes)
//! are present in both and simply empty/zero for 3.1.1.

use crate::properties::Properties;
use crate::topic::TopicName;
use bytes::Bytes;
use std::fmt;
use std::num::NonZeroU16;
use std::time::Duration;

/// Packet identifiers are never zero [MQTT-2.3.1-1].
pub type PacketId = NonZeroU16;

/// The protocol spoken on a connection, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name "MQIsdp", level 3.
    V31,
    /// MQTT 3.1.1, level 4.
    V311,
    /// MQTT 5.0, level 5.
    V5,
}

impl ProtocolVersion {
    pub fn level(self) -> u8 {
        match self {
            Self::V31 => 3,
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::V31 => "MQIsdp",
            _ => "MQTT",
        }
    }

    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// Quality of service levels; 3 is malformed [MQTT-3.3.1-4].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// MQTT 5.0 only.
    Auth(Auth),
}

impl Packet {
    /// The packet type number of the fixed header (MQTT 3.1.1 §2.2.1).
    pub fn type_number(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// "Clean session" in 3.1.1, "clean start" in 5.0.
    pub clean_start: bool,
    /// Zero disables keep-alive [MQTT-3.1.2-10].
    pub keep_alive: Duration,
    pub client_id: String,
    pub will: Option<LastWill>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("protocol", &self.protocol)
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("properties", &self.properties)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: TopicName,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Properties,
}

impl fmt::Debug for LastWill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LastWill")
            .field("topic", &self.topic)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .finish()
    }
}

/// CONNACK return codes of MQTT 3.1.1 (§3.2.2.3).
pub mod connect_return {
    pub const ACCEPTED: u8 = 0x00;
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
    pub const IDENTIFIER_REJECTED: u8 = 0x02;
    pub const SERVER_UNAVAILABLE: u8 = 0x03;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x04;
    pub const NOT_AUTHORIZED: u8 = 0x05;
}

/// Why a server refuses a CONNECT, whatever the protocol version: [`ConnectRefusal::code`]
/// gives the 3.1.1 return code (§3.2.2.3) or the 5.0 reason code (§3.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    UnacceptableProtocolVersion,
    IdentifierRejected,
    ServerUnavailable,
    BadUsernameOrPassword,
    NotAuthorized,
}

impl ConnectRefusal {
    /// The CONNACK code for a client speaking `version`.
    pub fn code(self, version: ProtocolVersion) -> u8 {
        use ConnectRefusal::*;
        match (self, version.is_v5()) {
            (UnacceptableProtocolVersion, false) => connect_return::UNACCEPTABLE_PROTOCOL_VERSION,
            (IdentifierRejected, false) => connect_return::IDENTIFIER_REJECTED,
            (ServerUnavailable, false) => connect_return::SERVER_UNAVAILABLE,
            (BadUsernameOrPassword, false) => connect_return::BAD_USERNAME_OR_PASSWORD,
            (NotAuthorized, false) => connect_return::NOT_AUTHORIZED,
            (UnacceptableProtocolVersion, true) => 0x84,
            (IdentifierRejected, true) => 0x85,
            (BadUsernameOrPassword, true) => 0x86,
            (NotAuthorized, true) => 0x87,
            (ServerUnavailable, true) => 0x88,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// A 3.1.1 return code ([`connect_return`]) or a 5.0 reason code.
    pub code: u8,
    pub properties: Properties,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// In 5.0 an empty topic may stand with a topic alias; `None` then.
    pub topic: Option<TopicName>,
    /// Present exactly when `qos > 0` [MQTT-2.3.1-5].
    pub packet_id: Option<PacketId>,
    pub payload: Bytes,
    pub properties: Properties,
}

impl fmt::Debug for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Payloads are the users' data: never in logs.
        f.debug_struct("Publish")
            .field("dup", &self.dup)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("topic", &self.topic)
            .field("packet_id", &self.packet_id)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .field("properties", &self.properties)
            .finish()
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share this shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub packet_id: PacketId,
    /// 5.0 reason code; always 0 (success) in 3.1.1.
    pub reason: u8,
    pub properties: Properties,
}

impl Ack {
    pub fn new(packet_id: PacketId) -> Self {
        Self { packet_id, reason: 0, properties: Properties::default() }
    }
}

/// Options of one subscription; only `qos` exists in 3.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    pub fn qos(qos: QoS) -> Self {
        Self { qos, no_local: false, retain_as_published: false, retain_handling: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: PacketId,
    /// Filters as sent: the server validates each one and refuses invalid ones in its SUBACK.
    pub filters: Vec<(String, SubscriptionOptions)>,
    pub properties: Properties,
}

/// SUBACK return code for a refused subscription (3.1.1 §3.9.3).
pub const SUBACK_FAILURE: u8 = 0x80;

/// What a server answers for one filter of a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// Subscribed at this maximum QoS.
    Granted(QoS),
    /// Refused for another reason (5.0: 0x80, "Unspecified error").
    Refused,
    /// The ACL does not allow it (5.0: 0x87).
    NotAuthorized,
    /// Not a valid topic filter (5.0: 0x8F).
    TopicFilterInvalid,
    /// Over the server's subscription limit (5.0: 0x97).
    QuotaExceeded,
}

impl SubscribeOutcome {
    /// The SUBACK code for a client speaking `version`: the granted QoS, or a refusal, which
    /// 3.1.1 knows only as 0x80 [MQTT-3.9.3-2] and 5.0 tells apart (§3.9.3).
    pub fn code(self, version: ProtocolVersion) -> u8 {
        match (self, version.is_v5()) {
            (SubscribeOutcome::Granted(qos), _) => qos as u8,
            (_, false) | (SubscribeOutcome::Refused, true) => SUBACK_FAILURE,
            (SubscribeOutcome::NotAuthorized, true) => 0x87,
            (SubscribeOutcome::TopicFilterInvalid, true) => 0x8F,
            (SubscribeOutcome::QuotaExceeded, true) => 0x97,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub codes: Vec<u8>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: PacketId,
    pub filters: Vec<String>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: PacketId,
    /// 5.0 reason codes, one per filter; empty in 3.1.1.
    pub codes: Vec<u8>,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// 5.0 reason code; 0 in 3.1.1.
    pub reason: u8,
    pub properties: Properties,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub reason: u8,
    pub properties: Properties,
}

#[cfg(test)]
mod code_tests {
    use super::*;

    /// 3.1.1 §3.2.2.3 return codes 1–5; 5.0 §3.2.2.2 reason codes 0x84–0x88.
    #[test]
    fn refusals_have_each_version_s_code() {
        let all = [
            ConnectRefusal::UnacceptableProtocolVersion,
            ConnectRefusal::IdentifierRejected,
            ConnectRefusal::ServerUnavailable,
            ConnectRefusal::BadUsernameOrPassword,
            ConnectRefusal::NotAuthorized,
        ];
        assert_eq!(all.map(|r| r.code(ProtocolVersion::V311)), [1, 2, 3, 4, 5]);
        assert_eq!(all.map(|r| r.code(ProtocolVersion::V5)), [0x84, 0x85, 0x88, 0x86, 0x87]);
    }

    /// [MQTT-3.9.3-2] SUBACK codes: the granted QoS, or 0x80; 5.0 tells refusals apart.
    #[test]
    fn subscribe_outcomes_are_suback_codes() {
        let v311 = ProtocolVersion::V311;
        assert_eq!(SubscribeOutcome::Granted(QoS::ExactlyOnce).code(v311), 2);
        let refusals = [
            SubscribeOutcome::Refused,
            SubscribeOutcome::NotAuthorized,
            SubscribeOutcome::TopicFilterInvalid,
            SubscribeOutcome::QuotaExceeded,
        ];
        assert_eq!(refusals.map(|r| r.code(v311)), [0x80; 4]);
        assert_eq!(refusals.map(|r| r.code(ProtocolVersion::V5)), [0x80, 0x87, 0x8F, 0x97]);
    }
}
