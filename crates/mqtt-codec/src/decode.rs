//! Bytes to packets. Never panics: every read is bounds-checked, every length validated.

use crate::error::DecodeError;
use crate::packet::*;
use crate::properties::Properties;
use crate::topic::TopicName;
use bytes::{Buf, Bytes, BytesMut};
use std::time::Duration;

/// Decodes one packet from the front of `buf`, removing its bytes.
///
/// Returns `Ok(None)` when `buf` holds only part of a packet (read more and call again), and an
/// error when the bytes can never become a valid packet, including a packet larger than
/// `max_packet_size` (checked from the fixed header alone, before the body is buffered).
/// `version` is the connection's protocol; a CONNECT carries its own and ignores it.
pub fn decode(buf: &mut BytesMut, version: ProtocolVersion, max_packet_size: usize) -> Result<Option<Packet>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let Some((remaining, varint_len)) = decode_varint(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + varint_len + remaining as usize;
    if total > max_packet_size {
        return Err(DecodeError::PacketTooLarge { size: total, limit: max_packet_size });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let header = buf[0];
    let mut frame = buf.split_to(total).freeze();
    frame.advance(1 + varint_len);
    decode_body(header, frame, version).map(Some)
}

/// Reads a variable byte integer from the front of `bytes`: `Ok(None)` if it is cut short,
/// else its value and how many bytes it took (MQTT 3.1.1 §2.2.3).
pub fn decode_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
        if i == 3 {
            return Err(DecodeError::RemainingLengthTooLong);
        }
    }
    Ok(None)
}

pub(crate) fn decode_varint_from(buf: &mut &[u8]) -> Result<u32, DecodeError> {
    match decode_varint(buf) {
        Ok(Some((v, n))) => {
            *buf = &buf[n..];
            Ok(v)
        }
        Ok(None) => Err(DecodeError::Truncated),
        Err(_) => Err(DecodeError::InvalidVarint),
    }
}

pub(crate) fn read_u8(buf: &mut &[u8]) -> Result<u8, DecodeError> {
    let (&b, rest) = buf.split_first().ok_or(DecodeError::Truncated)?;
    *buf = rest;
    Ok(b)
}

pub(crate) fn read_u16(buf: &mut &[u8]) -> Result<u16, DecodeError> {
    let bytes = take(buf, 2)?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

pub(crate) fn read_u32(buf: &mut &[u8]) -> Result<u32, DecodeError> {
    let bytes = take(buf, 4)?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::Truncated);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

pub(crate) fn read_binary<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = read_u16(buf)? as usize;
    take(buf, len)
}

fn read_str<'a>(buf: &mut &'a [u8]) -> Result<&'a str, DecodeError> {
    let s = std::str::from_utf8(read_binary(buf)?).map_err(|_| DecodeError::InvalidUtf8)?;
    if s.contains('\0') {
        return Err(DecodeError::NullCharacter);
    }
    Ok(s)
}

pub(crate) fn read_string(buf: &mut &[u8]) -> Result<String, DecodeError> {
    read_str(buf).map(str::to_owned)
}

fn read_packet_id(buf: &mut &[u8]) -> Result<PacketId, DecodeError> {
    PacketId::new(read_u16(buf)?).ok_or(DecodeError::ZeroPacketId)
}

fn read_topic_name(buf: &mut &[u8]) -> Result<TopicName, DecodeError> {
    let s = read_str(buf)?;
    if s.is_empty() {
        return Err(DecodeError::EmptyTopicName);
    }
    if s.contains(['+', '#']) {
        return Err(DecodeError::WildcardInTopicName);
    }
    TopicName::parse(s).map_err(|_| DecodeError::EmptyTopicName)
}

fn properties_if_v5(buf: &mut &[u8], version: ProtocolVersion) -> Result<Properties, DecodeError> {
    if version.is_v5() {
        Properties::decode(buf)
    } else {
        Ok(Properties::default())
    }
}

fn expect_end(buf: &[u8]) -> Result<(), DecodeError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes(buf.len()))
    }
}

fn check_flags(packet_type: u8, flags: u8, expected: u8) -> Result<(), DecodeError> {
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::InvalidFlags { packet_type, flags })
    }
}

fn decode_body(header: u8, body: Bytes, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let packet_type = header >> 4;
    let flags = header & 0x0F;
    let mut buf: &[u8] = &body;
    let packet = match packet_type {
        1 => {
            check_flags(packet_type, flags, 0)?;
            Packet::Connect(decode_connect(&mut buf)?)
        }
        2 => {
            check_flags(packet_type, flags, 0)?;
            let ack_flags = read_u8(&mut buf)?;
            let code = read_u8(&mut buf)?;
            let properties = properties_if_v5(&mut buf, version)?;
            Packet::ConnAck(ConnAck { session_present: ack_flags & 1 == 1, code, properties })
        }
        3 => return decode_publish(flags, &body, version),
        4 | 5 | 7 => {
            check_flags(packet_type, flags, 0)?;
            let ack = decode_ack(&mut buf, version)?;
            match packet_type {
                4 => Packet::PubAck(ack),
                5 => Packet::PubRec(ack),
                _ => Packet::PubComp(ack),
            }
        }
        6 => {
            // [MQTT-3.6.1-1]
            check_flags(packet_type, flags, 0b0010)?;
            Packet::PubRel(decode_ack(&mut buf, version)?)
        }
        8 => {
            // [MQTT-3.8.1-1]
            check_flags(packet_type, flags, 0b0010)?;
            Packet::Subscribe(decode_subscribe(&mut buf, version)?)
        }
        9 => {
            check_flags(packet_type, flags, 0)?;
            let packet_id = read_packet_id(&mut buf)?;
            let properties = properties_if_v5(&mut buf, version)?;
            let codes = std::mem::take(&mut buf).to_vec();
            Packet::SubAck(SubAck { packet_id, codes, properties })
        }
        10 => {
            // [MQTT-3.10.1-1]
            check_flags(packet_type, flags, 0b0010)?;
            let packet_id = read_packet_id(&mut buf)?;
            let properties = properties_if_v5(&mut buf, version)?;
            let mut filters = Vec::new();
            while !buf.is_empty() {
                filters.push(read_string(&mut buf)?);
            }
            if filters.is_empty() {
                // [MQTT-3.10.3-2]
                return Err(DecodeError::NoTopicFilters);
            }
            Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties })
        }
        11 => {
            check_flags(packet_type, flags, 0)?;
            let packet_id = read_packet_id(&mut buf)?;
            let properties = properties_if_v5(&mut buf, version)?;
            let codes = if version.is_v5() { std::mem::take(&mut buf).to_vec() } else { Vec::new() };
            Packet::UnsubAck(UnsubAck { packet_id, codes, properties })
        }
        12 => {
            check_flags(packet_type, flags, 0)?;
            Packet::PingReq
        }
        13 => {
            check_flags(packet_type, flags, 0)?;
            Packet::PingResp
        }
        14 => {
            check_flags(packet_type, flags, 0)?;
            let (reason, properties) = decode_reason_and_properties(&mut buf, version)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        15 if version.is_v5() => {
            check_flags(packet_type, flags, 0)?;
            let (reason, properties) = decode_reason_and_properties(&mut buf, version)?;
            Packet::Auth(Auth { reason, properties })
        }
        15 => return Err(DecodeError::NotInVersion(15)),
        other => return Err(DecodeError::ReservedPacketType(other)),
    };
    expect_end(buf)?;
    Ok(packet)
}

fn decode_reason_and_properties(buf: &mut &[u8], version: ProtocolVersion) -> Result<(u8, Properties), DecodeError> {
    if !version.is_v5() || buf.is_empty() {
        return Ok((0, Properties::default()));
    }
    let reason = read_u8(buf)?;
    let properties = if buf.is_empty() { Properties::default() } else { Properties::decode(buf)? };
    Ok((reason, properties))
}

fn decode_ack(buf: &mut &[u8], version: ProtocolVersion) -> Result<Ack, DecodeError> {
    let packet_id = read_packet_id(buf)?;
    let (reason, properties) = decode_reason_and_properties(buf, version)?;
    Ok(Ack { packet_id, reason, properties })
}

fn decode_connect(buf: &mut &[u8]) -> Result<Connect, DecodeError> {
    let name = read_str(buf).map_err(|_| DecodeError::InvalidProtocolName)?;
    let level = read_u8(buf)?;
    let protocol = match (name, level) {
        ("MQTT", 4) => ProtocolVersion::V311,
        ("MQTT", 5) => ProtocolVersion::V5,
        ("MQIsdp", 3) => ProtocolVersion::V31,
        ("MQTT" | "MQIsdp", other) => return Err(DecodeError::UnsupportedProtocolLevel(other)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let flags = read_u8(buf)?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ReservedConnectFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    // [MQTT-3.1.2-14]
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQoS)?;
    if password_flag && !username_flag && !protocol.is_v5() {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = Duration::from_secs(u64::from(read_u16(buf)?));
    let properties = properties_if_v5(buf, protocol)?;
    // [MQTT-3.1.3-4] the client id is a UTF-8 string; its content rules are the server's.
    let client_id = read_string(buf)?;
    let will = if will_flag {
        let will_properties = properties_if_v5(buf, protocol)?;
        let topic = read_topic_name(buf)?;
        let payload = Bytes::copy_from_slice(read_binary(buf)?);
        Some(LastWill { topic, payload, qos: will_qos, retain: will_retain, properties: will_properties })
    } else {
        None
    };
    let username = if username_flag { Some(read_string(buf)?) } else { None };
    let password = if password_flag { Some(Bytes::copy_from_slice(read_binary(buf)?)) } else { None };
    Ok(Connect { protocol, clean_start, keep_alive, client_id, will, username, password, properties })
}

fn decode_publish(flags: u8, body: &Bytes, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS)?;
    let retain = flags & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupOnQoS0);
    }
    let mut buf: &[u8] = body;
    let topic_str = read_str(&mut buf)?;
    let topic = if topic_str.is_empty() && version.is_v5() {
        None // a topic alias must stand in for it; the session checks that
    } else if topic_str.is_empty() {
        return Err(DecodeError::EmptyTopicName);
    } else {
        Some(TopicName::parse(topic_str).map_err(|_| DecodeError::WildcardInTopicName)?)
    };
    let packet_id = if qos == QoS::AtMostOnce { None } else { Some(read_packet_id(&mut buf)?) };
    let properties = properties_if_v5(&mut buf, version)?;
    let payload = body.slice(body.len() - buf.len()..);
    Ok(Packet::Publish(Publish { dup, qos, retain, topic, packet_id, payload, properties }))
}

fn decode_subscribe(buf: &mut &[u8], version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = read_packet_id(buf)?;
    let properties = properties_if_v5(buf, version)?;
    let mut filters = Vec::new();
    while !buf.is_empty() {
        let filter = read_string(buf)?;
        let options = read_u8(buf)?;
        let reserved = if version.is_v5() { options & 0xC0 } else { options & 0xFC };
        let retain_handling = (options >> 4) & 0x03;
        if reserved != 0 || retain_handling == 3 {
            return Err(DecodeError::ReservedSubscriptionBits);
        }
        let qos = QoS::from_u8(options & 0x03).ok_or(DecodeError::InvalidQoS)?;
        filters.push((
            filter,
            SubscriptionOptions { qos, no_local: options & 0x04 != 0, retain_as_published: options & 0x08 != 0, retain_handling },
        ));
    }
    if filters.is_empty() {
        return Err(DecodeError::NoTopicFilters);
    }
    Ok(Subscribe { packet_id, filters, properties })
}
