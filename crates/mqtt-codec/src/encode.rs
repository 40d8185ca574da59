//! Packets to bytes. Lengths are computed first so each packet is written once, in place.

use crate::error::EncodeError;
use crate::packet::*;
use crate::properties::Properties;
use crate::MAX_REMAINING_LENGTH;
use bytes::{BufMut, BytesMut};

/// Appends the encoding of `packet` for a connection speaking `version` to `out`.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    let remaining = body_len(packet, version);
    if remaining > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(remaining));
    }
    out.reserve(1 + varint_len(remaining) + remaining);
    out.put_u8(header_byte(packet));
    put_varint(out, remaining)?;
    encode_body(packet, version, out)
}

/// The number of bytes [`encode`] writes for `packet`.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let remaining = body_len(packet, version);
    1 + varint_len(remaining) + remaining
}

fn header_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    (packet.type_number() << 4) | flags
}

pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(out: &mut BytesMut, mut value: usize) -> Result<(), EncodeError> {
    if value > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(value));
    }
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if value == 0 {
            return Ok(());
        }
    }
}

pub(crate) fn put_binary(out: &mut BytesMut, bytes: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong(bytes.len()))?;
    out.put_u16(len);
    out.put_slice(bytes);
    Ok(())
}

pub(crate) fn put_string(out: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    put_binary(out, s.as_bytes())
}

fn props_len(props: &Properties, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        props.encoded_len()
    } else {
        0
    }
}

fn put_props(out: &mut BytesMut, props: &Properties, version: ProtocolVersion) -> Result<(), EncodeError> {
    if version.is_v5() {
        props.encode(out)?;
    }
    Ok(())
}

/// 5.0 acks and DISCONNECT/AUTH may omit a success reason code and empty properties.
fn reason_len(reason: u8, props: &Properties, version: ProtocolVersion) -> usize {
    match (version.is_v5(), reason, props.is_empty()) {
        (false, _, _) | (true, 0, true) => 0,
        (true, _, true) => 1,
        (true, _, false) => 1 + props.encoded_len(),
    }
}

fn put_reason(out: &mut BytesMut, reason: u8, props: &Properties, version: ProtocolVersion) -> Result<(), EncodeError> {
    match reason_len(reason, props, version) {
        0 => {}
        1 => out.put_u8(reason),
        _ => {
            out.put_u8(reason);
            props.encode(out)?;
        }
    }
    Ok(())
}

fn body_len(packet: &Packet, v: ProtocolVersion) -> usize {
    match packet {
        Packet::Connect(c) => {
            let mut n = 2 + c.protocol.name().len() + 1 + 1 + 2 + props_len(&c.properties, c.protocol);
            n += 2 + c.client_id.len();
            if let Some(w) = &c.will {
                n += props_len(&w.properties, c.protocol) + 2 + w.topic.as_str().len() + 2 + w.payload.len();
            }
            n += c.username.as_ref().map_or(0, |u| 2 + u.len());
            n += c.password.as_ref().map_or(0, |p| 2 + p.len());
            n
        }
        Packet::ConnAck(c) => 2 + props_len(&c.properties, v),
        Packet::Publish(p) => {
            2 + p.topic.as_ref().map_or(0, |t| t.as_str().len())
                + if p.qos == QoS::AtMostOnce { 0 } else { 2 }
                + props_len(&p.properties, v)
                + p.payload.len()
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => 2 + reason_len(a.reason, &a.properties, v),
        Packet::Subscribe(s) => 2 + props_len(&s.properties, v) + s.filters.iter().map(|(f, _)| 2 + f.len() + 1).sum::<usize>(),
        Packet::SubAck(s) => 2 + props_len(&s.properties, v) + s.codes.len(),
        Packet::Unsubscribe(u) => 2 + props_len(&u.properties, v) + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>(),
        Packet::UnsubAck(u) => 2 + if v.is_v5() { u.properties.encoded_len() + u.codes.len() } else { 0 },
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => reason_len(d.reason, &d.properties, v),
        Packet::Auth(a) => reason_len(a.reason, &a.properties, v),
    }
}

fn put_packet_id(out: &mut BytesMut, id: PacketId) {
    out.put_u16(id.get());
}

fn encode_body(packet: &Packet, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => {
            put_string(out, c.protocol.name())?;
            out.put_u8(c.protocol.level());
            let mut flags = u8::from(c.clean_start) << 1;
            if let Some(w) = &c.will {
                flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
            }
            flags |= u8::from(c.password.is_some()) << 6;
            flags |= u8::from(c.username.is_some()) << 7;
            out.put_u8(flags);
            let keep_alive = u16::try_from(c.keep_alive.as_secs()).unwrap_or(u16::MAX);
            out.put_u16(keep_alive);
            put_props(out, &c.properties, c.protocol)?;
            put_string(out, &c.client_id)?;
            if let Some(w) = &c.will {
                put_props(out, &w.properties, c.protocol)?;
                put_string(out, w.topic.as_str())?;
                put_binary(out, &w.payload)?;
            }
            if let Some(u) = &c.username {
                put_string(out, u)?;
            }
            if let Some(p) = &c.password {
                put_binary(out, p)?;
            }
        }
        Packet::ConnAck(c) => {
            out.put_u8(u8::from(c.session_present));
            out.put_u8(c.code);
            put_props(out, &c.properties, v)?;
        }
        Packet::Publish(p) => {
            put_string(out, p.topic.as_ref().map_or("", |t| t.as_str()))?;
            if p.qos != QoS::AtMostOnce {
                let id = p.packet_id.ok_or(EncodeError::MissingPacketId(p.qos as u8))?;
                put_packet_id(out, id);
            }
            put_props(out, &p.properties, v)?;
            out.put_slice(&p.payload);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            put_packet_id(out, a.packet_id);
            put_reason(out, a.reason, &a.properties, v)?;
        }
        Packet::Subscribe(s) => {
            put_packet_id(out, s.packet_id);
            put_props(out, &s.properties, v)?;
            for (filter, o) in &s.filters {
                put_string(out, filter)?;
                let mut options = o.qos as u8;
                if v.is_v5() {
                    options |= (u8::from(o.no_local) << 2) | (u8::from(o.retain_as_published) << 3) | ((o.retain_handling & 0x03) << 4);
                }
                out.put_u8(options);
            }
        }
        Packet::SubAck(s) => {
            put_packet_id(out, s.packet_id);
            put_props(out, &s.properties, v)?;
            out.put_slice(&s.codes);
        }
        Packet::Unsubscribe(u) => {
            put_packet_id(out, u.packet_id);
            put_props(out, &u.properties, v)?;
            for f in &u.filters {
                put_string(out, f)?;
            }
        }
        Packet::UnsubAck(u) => {
            put_packet_id(out, u.packet_id);
            if v.is_v5() {
                u.properties.encode(out)?;
                out.put_slice(&u.codes);
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => put_reason(out, d.reason, &d.properties, v)?,
        Packet::Auth(a) => put_reason(out, a.reason, &a.properties, v)?,
    }
    Ok(())
}
