//! Codec properties: every packet round-trips, malformed input is refused with the spec's reason,
//! and no input makes the decoder panic (including the fuzz regression corpus).

use bytes::{Bytes, BytesMut};
use mqtt_codec::*;
use proptest::prelude::*;
use std::num::NonZeroU16;
use std::time::Duration;

const LIMIT: usize = 1 << 20;

fn roundtrip(packet: &Packet, version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("encode");
    assert_eq!(buf.len(), encoded_len(packet, version));
    let decoded = decode(&mut buf, version, LIMIT).expect("decode").expect("complete packet");
    assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
    decoded
}

fn arb_version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(ProtocolVersion::V311), Just(ProtocolVersion::V5)]
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

fn arb_pid() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|v| NonZeroU16::new(v).unwrap())
}

fn arb_topic() -> impl Strategy<Value = TopicName> {
    "[a-z0-9$ ]{1,8}(/[a-zA-Z0-9_é]{0,8}){0,5}".prop_map(|s| TopicName::parse(&s).unwrap())
}

fn arb_string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,20}"
}

fn arb_properties(version: ProtocolVersion) -> BoxedStrategy<Properties> {
    if !version.is_v5() {
        return Just(Properties::default()).boxed();
    }
    let prop = prop_oneof![
        any::<u32>().prop_map(Property::MessageExpiryInterval),
        arb_string().prop_map(Property::ContentType),
        (1u32..268_435_455).prop_map(Property::SubscriptionIdentifier),
        any::<u16>().prop_map(Property::TopicAlias),
        (arb_string(), arb_string()).prop_map(|(k, v)| Property::UserProperty(k, v)),
        prop::collection::vec(any::<u8>(), 0..10).prop_map(|b| Property::CorrelationData(Bytes::from(b))),
    ];
    prop::collection::vec(prop, 0..4).prop_map(Properties).boxed()
}

fn arb_publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (arb_qos(), any::<bool>(), any::<bool>(), arb_topic(), arb_pid(), prop::collection::vec(any::<u8>(), 0..64), arb_properties(version))
        .prop_map(|(qos, dup, retain, topic, pid, payload, properties)| {
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic: Some(topic),
                packet_id: (!qos0).then_some(pid),
                payload: Bytes::from(payload),
                properties,
            })
        })
}

fn arb_packet(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v = version;
    let ack = (arb_pid(), arb_properties(v), 0u8..3)
        .prop_map(move |(packet_id, properties, r)| {
            // 3.1.1 acks carry no reason code; 5.0 ones carry one of a few.
            let reason = if v.is_v5() { [0u8, 0x10, 0x80][r as usize] } else { 0 };
            Ack { packet_id, reason, properties: if v.is_v5() { properties } else { Properties::default() } }
        })
        .boxed();
    let connect = (
        any::<bool>(),
        any::<u16>(),
        arb_string(),
        prop::option::of((arb_topic(), prop::collection::vec(any::<u8>(), 0..16), arb_qos(), any::<bool>())),
        prop::option::of(arb_string()),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
        arb_properties(v),
    )
        .prop_map(move |(clean, ka, client_id, will, username, password, properties)| {
            // 3.1.1 needs a user name wherever a password is sent [MQTT-3.1.2-22].
            let password = if v.is_v5() || username.is_some() { password.map(Bytes::from) } else { None };
            Packet::Connect(Connect {
                protocol: v,
                clean_start: clean,
                keep_alive: Duration::from_secs(u64::from(ka)),
                client_id,
                will: will.map(|(topic, payload, qos, retain)| LastWill {
                    topic,
                    payload: Bytes::from(payload),
                    qos,
                    retain,
                    properties: Properties::default(),
                }),
                username,
                password,
                properties,
            })
        });
    let options = (arb_qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
        if v.is_v5() {
            SubscriptionOptions { qos, no_local: nl, retain_as_published: rap, retain_handling: rh }
        } else {
            SubscriptionOptions::qos(qos)
        }
    });
    prop_oneof![
        connect,
        (any::<bool>(), any::<u8>(), arb_properties(v)).prop_map(|(session_present, code, properties)| Packet::ConnAck(ConnAck {
            session_present,
            code,
            properties
        })),
        arb_publish(v),
        ack.clone().prop_map(Packet::PubAck),
        ack.clone().prop_map(Packet::PubRec),
        ack.clone().prop_map(Packet::PubRel),
        ack.prop_map(Packet::PubComp),
        (arb_pid(), prop::collection::vec((arb_string(), options), 1..4), arb_properties(v))
            .prop_map(|(packet_id, filters, properties)| Packet::Subscribe(Subscribe { packet_id, filters, properties })),
        (arb_pid(), prop::collection::vec(any::<u8>(), 1..4), arb_properties(v))
            .prop_map(|(packet_id, codes, properties)| Packet::SubAck(SubAck { packet_id, codes, properties })),
        (arb_pid(), prop::collection::vec(arb_string(), 1..4), arb_properties(v))
            .prop_map(|(packet_id, filters, properties)| Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties })),
        (arb_pid(), prop::collection::vec(any::<u8>(), 0..4), arb_properties(v)).prop_map(move |(packet_id, codes, properties)| {
            let (codes, properties) = if v.is_v5() { (codes, properties) } else { (Vec::new(), Properties::default()) };
            Packet::UnsubAck(UnsubAck { packet_id, codes, properties })
        }),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        (0u8..2, arb_properties(v)).prop_map(move |(r, properties)| {
            let reason = if v.is_v5() { [0u8, 0x04][r as usize] } else { 0 };
            Packet::Disconnect(Disconnect { reason, properties })
        }),
    ]
}

fn arb_versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    arb_version().prop_flat_map(|v| arb_packet(v).prop_map(move |p| (v, p)))
}

proptest! {
    #[test]
    fn every_packet_round_trips((version, packet) in arb_versioned_packet()) {
        prop_assert_eq!(roundtrip(&packet, version), packet);
    }

    #[test]
    fn a_packet_split_anywhere_decodes_once_complete((version, packet) in arb_versioned_packet(), cut in any::<prop::sample::Index>()) {
        let mut whole = BytesMut::new();
        encode(&packet, version, &mut whole).unwrap();
        let cut = cut.index(whole.len());
        let mut buf = BytesMut::from(&whole[..cut]);
        prop_assert_eq!(decode(&mut buf, version, LIMIT).unwrap(), None);
        buf.extend_from_slice(&whole[cut..]);
        prop_assert_eq!(decode(&mut buf, version, LIMIT).unwrap(), Some(packet));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), version in arb_version()) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode(&mut buf, version, LIMIT) {}
    }
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    decode(&mut BytesMut::from(bytes), ProtocolVersion::V311, LIMIT).expect_err("must be refused")
}

#[test]
fn pubrel_subscribe_unsubscribe_need_flags_0010() {
    // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]
    assert!(matches!(decode_err(&[0x60, 2, 0, 1]), DecodeError::InvalidFlags { .. }));
    assert!(matches!(decode_err(&[0x80, 6, 0, 1, 0, 1, b'a', 0]), DecodeError::InvalidFlags { .. }));
    assert!(matches!(decode_err(&[0xA0, 5, 0, 1, 0, 1, b'a']), DecodeError::InvalidFlags { .. }));
}

#[test]
fn publish_with_qos_3_is_malformed() {
    // [MQTT-3.3.1-4]
    assert_eq!(decode_err(&[0x36, 5, 0, 1, b'a', 0, 1]), DecodeError::InvalidQoS);
}

#[test]
fn publish_topic_with_wildcard_is_malformed() {
    // [MQTT-3.3.2-2]
    assert_eq!(decode_err(&[0x30, 3, 0, 1, b'#']), DecodeError::WildcardInTopicName);
}

#[test]
fn zero_packet_id_is_malformed() {
    // [MQTT-2.3.1-1]
    assert_eq!(decode_err(&[0x40, 2, 0, 0]), DecodeError::ZeroPacketId);
}

#[test]
fn subscribe_without_filters_is_malformed() {
    // [MQTT-3.8.3-3]
    assert_eq!(decode_err(&[0x82, 2, 0, 1]), DecodeError::NoTopicFilters);
}

#[test]
fn subscribe_reserved_option_bits_are_malformed() {
    // [MQTT-3-8.3-4] in 3.1.1 the upper six bits of the requested QoS byte are reserved.
    assert_eq!(decode_err(&[0x82, 6, 0, 1, 0, 1, b'a', 0x04]), DecodeError::ReservedSubscriptionBits);
}

#[test]
fn connect_reserved_flag_is_malformed() {
    // [MQTT-3.1.2-3]
    let bytes = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 60, 0, 0];
    assert_eq!(decode_err(&bytes), DecodeError::ReservedConnectFlag);
}

#[test]
fn connect_with_unknown_level_is_reported_for_connack_0x01() {
    // [MQTT-3.1.2-2]
    let bytes = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 9, 0x02, 0, 60, 0, 0];
    assert_eq!(decode_err(&bytes), DecodeError::UnsupportedProtocolLevel(9));
}

#[test]
fn mqisdp_level_3_is_accepted() {
    let mut bytes = BytesMut::from(&[0x10, 16, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 2, b'i', b'd'][..]);
    let Some(Packet::Connect(c)) = decode(&mut bytes, ProtocolVersion::V311, LIMIT).unwrap() else { panic!() };
    assert_eq!(c.protocol, ProtocolVersion::V31);
    assert_eq!(c.client_id, "id");
}

#[test]
fn invalid_utf8_and_null_characters_are_malformed() {
    // [MQTT-1.5.3-1], [MQTT-1.5.3-2]
    assert_eq!(decode_err(&[0x30, 4, 0, 2, 0xC3, 0x28]), DecodeError::InvalidUtf8);
    assert_eq!(decode_err(&[0x30, 4, 0, 2, b'a', 0]), DecodeError::NullCharacter);
}

#[test]
fn a_fifth_remaining_length_byte_is_malformed() {
    assert_eq!(decode_err(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), DecodeError::RemainingLengthTooLong);
}

#[test]
fn oversized_packets_are_refused_from_the_header_alone() {
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x40][..]); // 1 MiB body, none of it sent yet
    assert_eq!(decode(&mut buf, ProtocolVersion::V311, LIMIT), Err(DecodeError::PacketTooLarge { size: 1 + 3 + (1 << 20), limit: LIMIT }));
}

#[test]
fn will_flags_without_will_are_malformed() {
    // [MQTT-3.1.2-11]
    let bytes = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x22, 0, 60, 0, 0];
    assert_eq!(decode_err(&bytes), DecodeError::WillFlagsWithoutWill);
}

#[test]
fn password_without_username_is_malformed_in_311() {
    // [MQTT-3.1.2-22]
    let bytes = [0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 60, 0, 0, 0, 2, b'p', b'w'];
    assert_eq!(decode_err(&bytes), DecodeError::PasswordWithoutUsername);
}

#[test]
fn debug_output_hides_payloads_and_passwords() {
    let connect = Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: Duration::from_secs(5),
        client_id: "c".into(),
        will: None,
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"hunter2")),
        properties: Properties::default(),
    };
    assert!(!format!("{connect:?}").contains("hunter2"));
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: Some(TopicName::parse("t").unwrap()),
        packet_id: None,
        payload: Bytes::from_static(b"secret-reading"),
        properties: Properties::default(),
    };
    assert!(!format!("{publish:?}").contains("secret-reading"));
}

/// Replays every input the fuzzer ever kept (fuzz/corpus/decode, committed) on stable Rust.
#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf, version, LIMIT) {}
        }
        count += 1;
    }
    assert!(count > 0, "the corpus in {} is empty", dir.display());
}
