//! Errors of the codec, each naming the spec statement it enforces.

use thiserror::Error;

/// Why bytes could not be decoded into a packet. "Need more bytes" is not an error: see [`crate::decode`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("[MQTT-2.2.3] remaining length uses more than four bytes")]
    RemainingLengthTooLong,
    #[error("packet of {size} bytes exceeds the limit of {limit} bytes")]
    PacketTooLarge { size: usize, limit: usize },
    #[error("[MQTT-2.2.1] reserved packet type {0}")]
    ReservedPacketType(u8),
    #[error("[MQTT-2.2.2-2] invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidFlags { packet_type: u8, flags: u8 },
    #[error("[MQTT-3.3.1-4] PUBLISH with QoS 3")]
    InvalidQoS,
    #[error("[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    #[error("[MQTT-3.1.2-1] unknown protocol name")]
    InvalidProtocolName,
    /// The CONNECT names a protocol level this decoder does not know; the server answers
    /// CONNACK 0x01 [MQTT-3.1.2-2] before closing.
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    #[error("[MQTT-3.1.2-3] reserved CONNECT flag is set")]
    ReservedConnectFlag,
    #[error("[MQTT-3.1.2-11] will QoS or retain set without the will flag")]
    WillFlagsWithoutWill,
    #[error("[MQTT-3.1.2-22] password flag set without the user name flag")]
    PasswordWithoutUsername,
    #[error("[MQTT-1.5.3-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    #[error("[MQTT-1.5.3-2] string contains U+0000")]
    NullCharacter,
    #[error("[MQTT-2.3.1-1] packet identifier is zero")]
    ZeroPacketId,
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    WildcardInTopicName,
    #[error("[MQTT-4.7.3-1] topic name is empty")]
    EmptyTopicName,
    #[error("[MQTT-3.8.3-3] SUBSCRIBE or UNSUBSCRIBE without any topic filter")]
    NoTopicFilters,
    #[error("[MQTT-3.8.3-4] reserved bits set in subscription options")]
    ReservedSubscriptionBits,
    #[error("[MQTT-2.2.2] unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    #[error("[MQTT-1.5.5] malformed variable byte integer")]
    InvalidVarint,
    #[error("packet body ended early")]
    Truncated,
    #[error("packet body has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    #[error("[MQTT-3.14] packet type {0} does not exist in this protocol version")]
    NotInVersion(u8),
}

/// Why a packet could not be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    #[error("[MQTT-1.5.3] string or binary field of {0} bytes exceeds 65535")]
    FieldTooLong(usize),
    #[error("[MQTT-2.2.3] packet of {0} bytes exceeds the maximum remaining length")]
    PacketTooLarge(usize),
    #[error("a QoS {0} PUBLISH needs a packet identifier")]
    MissingPacketId(u8),
}
