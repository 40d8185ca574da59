//! MQTT 5.0 properties (§2.2.2): a list of identified values carried by most packets.

use crate::decode::{decode_varint_from, read_binary, read_string, read_u16, read_u32, read_u8};
use crate::encode::{put_binary, put_string, put_varint, varint_len};
use crate::error::{DecodeError, EncodeError};
use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(String),
    ResponseTopic(String),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(String),
    ServerKeepAlive(u16),
    AuthenticationMethod(String),
    AuthenticationData(Bytes),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(String),
    ServerReference(String),
    ReasonString(String),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(u8),
    RetainAvailable(u8),
    UserProperty(String, String),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// The properties of one packet, in the order they were sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties(pub Vec<Property>);

impl Properties {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The properties as a packet carries them (length prefix included): a compact form to
    /// store them in.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out.to_vec())
    }

    /// Reads back what [`Properties::to_bytes`] wrote; the whole slice must be used.
    pub fn from_bytes(mut bytes: &[u8]) -> Result<Self, DecodeError> {
        let properties = Self::decode(&mut bytes)?;
        match bytes.len() {
            0 => Ok(properties),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }

    pub(crate) fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let len = decode_varint_from(buf)? as usize;
        if buf.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (mut body, rest) = buf.split_at(len);
        *buf = rest;
        let mut props = Vec::new();
        while !body.is_empty() {
            props.push(Property::decode(&mut body)?);
        }
        Ok(Self(props))
    }

    fn body_len(&self) -> usize {
        self.0.iter().map(Property::len).sum()
    }

    /// Encoded size including the length prefix.
    pub(crate) fn encoded_len(&self) -> usize {
        let body = self.body_len();
        varint_len(body) + body
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        put_varint(out, self.body_len())?;
        for p in &self.0 {
            p.encode(out)?;
        }
        Ok(())
    }
}

impl Property {
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        use Property::*;
        let id = read_u8(buf)?;
        Ok(match id {
            0x01 => PayloadFormatIndicator(read_u8(buf)?),
            0x02 => MessageExpiryInterval(read_u32(buf)?),
            0x03 => ContentType(read_string(buf)?),
            0x08 => ResponseTopic(read_string(buf)?),
            0x09 => CorrelationData(Bytes::copy_from_slice(read_binary(buf)?)),
            0x0B => SubscriptionIdentifier(decode_varint_from(buf)?),
            0x11 => SessionExpiryInterval(read_u32(buf)?),
            0x12 => AssignedClientIdentifier(read_string(buf)?),
            0x13 => ServerKeepAlive(read_u16(buf)?),
            0x15 => AuthenticationMethod(read_string(buf)?),
            0x16 => AuthenticationData(Bytes::copy_from_slice(read_binary(buf)?)),
            0x17 => RequestProblemInformation(read_u8(buf)?),
            0x18 => WillDelayInterval(read_u32(buf)?),
            0x19 => RequestResponseInformation(read_u8(buf)?),
            0x1A => ResponseInformation(read_string(buf)?),
            0x1C => ServerReference(read_string(buf)?),
            0x1F => ReasonString(read_string(buf)?),
            0x21 => ReceiveMaximum(read_u16(buf)?),
            0x22 => TopicAliasMaximum(read_u16(buf)?),
            0x23 => TopicAlias(read_u16(buf)?),
            0x24 => MaximumQoS(read_u8(buf)?),
            0x25 => RetainAvailable(read_u8(buf)?),
            0x26 => UserProperty(read_string(buf)?, read_string(buf)?),
            0x27 => MaximumPacketSize(read_u32(buf)?),
            0x28 => WildcardSubscriptionAvailable(read_u8(buf)?),
            0x29 => SubscriptionIdentifierAvailable(read_u8(buf)?),
            0x2A => SharedSubscriptionAvailable(read_u8(buf)?),
            other => return Err(DecodeError::UnknownProperty(other)),
        })
    }

    fn id(&self) -> u8 {
        use Property::*;
        match self {
            PayloadFormatIndicator(_) => 0x01,
            MessageExpiryInterval(_) => 0x02,
            ContentType(_) => 0x03,
            ResponseTopic(_) => 0x08,
            CorrelationData(_) => 0x09,
            SubscriptionIdentifier(_) => 0x0B,
            SessionExpiryInterval(_) => 0x11,
            AssignedClientIdentifier(_) => 0x12,
            ServerKeepAlive(_) => 0x13,
            AuthenticationMethod(_) => 0x15,
            AuthenticationData(_) => 0x16,
            RequestProblemInformation(_) => 0x17,
            WillDelayInterval(_) => 0x18,
            RequestResponseInformation(_) => 0x19,
            ResponseInformation(_) => 0x1A,
            ServerReference(_) => 0x1C,
            ReasonString(_) => 0x1F,
            ReceiveMaximum(_) => 0x21,
            TopicAliasMaximum(_) => 0x22,
            TopicAlias(_) => 0x23,
            MaximumQoS(_) => 0x24,
            RetainAvailable(_) => 0x25,
            UserProperty(..) => 0x26,
            MaximumPacketSize(_) => 0x27,
            WildcardSubscriptionAvailable(_) => 0x28,
            SubscriptionIdentifierAvailable(_) => 0x29,
            SharedSubscriptionAvailable(_) => 0x2A,
        }
    }

    fn len(&self) -> usize {
        use Property::*;
        1 + match self {
            PayloadFormatIndicator(_)
            | RequestProblemInformation(_)
            | RequestResponseInformation(_)
            | MaximumQoS(_)
            | RetainAvailable(_)
            | WildcardSubscriptionAvailable(_)
            | SubscriptionIdentifierAvailable(_)
            | SharedSubscriptionAvailable(_) => 1,
            ServerKeepAlive(_) | ReceiveMaximum(_) | TopicAliasMaximum(_) | TopicAlias(_) => 2,
            MessageExpiryInterval(_) | SessionExpiryInterval(_) | WillDelayInterval(_) | MaximumPacketSize(_) => 4,
            SubscriptionIdentifier(v) => varint_len(*v as usize),
            ContentType(s)
            | ResponseTopic(s)
            | AssignedClientIdentifier(s)
            | AuthenticationMethod(s)
            | ResponseInformation(s)
            | ServerReference(s)
            | ReasonString(s) => 2 + s.len(),
            CorrelationData(b) | AuthenticationData(b) => 2 + b.len(),
            UserProperty(k, v) => 4 + k.len() + v.len(),
        }
    }

    fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        use Property::*;
        out.put_u8(self.id());
        match self {
            PayloadFormatIndicator(v)
            | RequestProblemInformation(v)
            | RequestResponseInformation(v)
            | MaximumQoS(v)
            | RetainAvailable(v)
            | WildcardSubscriptionAvailable(v)
            | SubscriptionIdentifierAvailable(v)
            | SharedSubscriptionAvailable(v) => out.put_u8(*v),
            ServerKeepAlive(v) | ReceiveMaximum(v) | TopicAliasMaximum(v) | TopicAlias(v) => out.put_u16(*v),
            MessageExpiryInterval(v) | SessionExpiryInterval(v) | WillDelayInterval(v) | MaximumPacketSize(v) => out.put_u32(*v),
            SubscriptionIdentifier(v) => put_varint(out, *v as usize)?,
            ContentType(s)
            | ResponseTopic(s)
            | AssignedClientIdentifier(s)
            | AuthenticationMethod(s)
            | ResponseInformation(s)
            | ServerReference(s)
            | ReasonString(s) => put_string(out, s)?,
            CorrelationData(b) | AuthenticationData(b) => put_binary(out, b)?,
            UserProperty(k, v) => {
                put_string(out, k)?;
                put_string(out, v)?;
            }
        }
        Ok(())
    }
}
