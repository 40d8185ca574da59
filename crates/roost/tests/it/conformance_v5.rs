//! MQTT 5.0 conformance over raw TCP: each test sends exact 5.0 packets and checks the broker's
//! answer against the normative statement (or, where the standard numbers none, the section)
//! of the OASIS MQTT 5.0 standard it cites.

use crate::support::{connect_v5, eventually, pid, publish_message, Raw, TestServer};
use bytes::Bytes;
use mqtt_codec::*;
use std::time::Duration;

const SUCCESS: u8 = 0;

fn props(packet_properties: &Properties) -> &[Property] {
    &packet_properties.0
}

fn has(properties: &Properties, wanted: &Property) -> bool {
    properties.0.contains(wanted)
}

async fn v5(server: &TestServer, client_id: &str, properties: Vec<Property>) -> (Raw, ConnAck) {
    Raw::mqtt5(server.mqtt, connect_v5(client_id, true, properties)).await
}

/// Subscribes (5.0) with `options` and an optional subscription identifier; returns the codes.
async fn subscribe5(raw: &mut Raw, id: u16, filters: &[(&str, SubscriptionOptions)], subscription_id: Option<u32>) -> Vec<u8> {
    let properties = Properties(subscription_id.map(Property::SubscriptionIdentifier).into_iter().collect());
    let filters = filters.iter().map(|(f, o)| (f.to_string(), *o)).collect();
    raw.send(&Packet::Subscribe(Subscribe { packet_id: pid(id), filters, properties })).await;
    loop {
        match raw.recv().await {
            Some(Packet::SubAck(ack)) => return ack.codes,
            Some(Packet::Publish(_)) => continue,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

fn qos(q: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(q)
}

fn publish5(topic: &str, payload: &str, q: QoS, id: Option<u16>, properties: Vec<Property>) -> Packet {
    Packet::Publish(Publish { properties: Properties(properties), ..publish_message(topic, payload, q, id, false) })
}

async fn next_publish(raw: &mut Raw) -> Publish {
    loop {
        match raw.recv().await {
            Some(Packet::Publish(p)) => return p,
            Some(Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) | Packet::SubAck(_)) => continue,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// The DISCONNECT the server sends before closing, and that it closes.
async fn server_disconnect(raw: &mut Raw) -> Disconnect {
    let packets = raw.expect_closed().await;
    match packets.into_iter().rev().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d),
        _ => None,
    }) {
        Some(d) => d,
        None => panic!("the server closed without a DISCONNECT"),
    }
}

#[tokio::test]
async fn connack_announces_limits_and_capabilities() {
    // §3.2.2.3: receive maximum, maximum packet size, topic alias maximum, and what the server
    // supports (retain, wildcard, subscription identifier and shared subscriptions).
    let server = TestServer::start().await;
    let (_raw, ack) = v5(&server, "caps", vec![]).await;
    assert_eq!(ack.code, SUCCESS);
    for wanted in [
        Property::RetainAvailable(1),
        Property::WildcardSubscriptionAvailable(1),
        Property::SubscriptionIdentifierAvailable(1),
        Property::SharedSubscriptionAvailable(1),
        Property::TopicAliasMaximum(64),
        Property::ReceiveMaximum(1000),
    ] {
        assert!(has(&ack.properties, &wanted), "{wanted:?} missing from {:?}", ack.properties);
    }
    assert!(props(&ack.properties).iter().any(|p| matches!(p, Property::MaximumPacketSize(_))));
    assert!(!props(&ack.properties).iter().any(|p| matches!(p, Property::MaximumQoS(_))), "QoS 2 is supported: no Maximum QoS");
}

#[tokio::test]
async fn an_empty_client_id_is_assigned_one_even_without_clean_start() {
    // [MQTT-3.1.3-6, -7] a 5.0 client may send a zero-length id; [MQTT-3.2.2-16] the server
    // then returns the id it assigned.
    let server = TestServer::start().await;
    let (_raw, ack) = Raw::mqtt5(server.mqtt, connect_v5("", false, vec![])).await;
    assert_eq!(ack.code, SUCCESS);
    let assigned = props(&ack.properties).iter().find_map(|p| match p {
        Property::AssignedClientIdentifier(id) => Some(id.clone()),
        _ => None,
    });
    assert!(assigned.is_some_and(|id| !id.is_empty()), "{:?}", ack.properties);
}

#[tokio::test]
async fn unknown_authentication_methods_are_refused() {
    // §4.12: a server that does not support the authentication method refuses with 0x8C.
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.mqtt).await;
    raw.version = ProtocolVersion::V5;
    raw.send(&Packet::Connect(connect_v5("auth", true, vec![Property::AuthenticationMethod("SCRAM-SHA-256".into())]))).await;
    let packets = raw.expect_closed().await;
    assert!(matches!(&packets[..], [Packet::ConnAck(a)] if a.code == 0x8C), "{packets:?}");
}

#[tokio::test]
async fn a_long_keep_alive_is_shortened_by_server_keep_alive() {
    // §3.2.2.3.14 / [MQTT-3.2.2-21]: the server may tell the client the keep-alive to use.
    let server = TestServer::start().await;
    let mut c = connect_v5("keep", true, vec![]);
    c.keep_alive = Duration::from_secs(120);
    let (_raw, ack) = Raw::mqtt5(server.mqtt, c).await;
    assert!(has(&ack.properties, &Property::ServerKeepAlive(60)), "{:?}", ack.properties);
    let (_raw, ack) = v5(&server, "keep-short", vec![]).await;
    assert!(!props(&ack.properties).iter().any(|p| matches!(p, Property::ServerKeepAlive(_))), "60 s asked: kept");
}

#[tokio::test]
async fn session_expiry_interval_decides_how_long_a_session_outlives_its_connection() {
    // [MQTT-3.1.2-23] a session is kept for its session expiry interval; 0 (the default) ends
    // it with the connection. §3.1.2.11.2.
    let server = TestServer::start().await;
    let (mut raw, _) = Raw::mqtt5(server.mqtt, connect_v5("expiry", true, vec![])).await;
    raw.send(&Packet::Disconnect(Disconnect::default())).await;
    let (_raw, ack) = Raw::mqtt5(server.mqtt, connect_v5("expiry", false, vec![])).await;
    assert!(!ack.session_present, "expiry 0: no session kept");
    drop(_raw);

    // 600 s first: the session then goes within `WAIT` only if the next CONNECT's 2 s replaced it.
    let (mut raw, ack) = Raw::mqtt5(server.mqtt, connect_v5("expiry", true, vec![Property::SessionExpiryInterval(600)])).await;
    assert!(!ack.session_present);
    subscribe5(&mut raw, 1, &[("exp/t", qos(QoS::AtLeastOnce))], None).await;
    raw.send(&Packet::Disconnect(Disconnect::default())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut raw, ack) = Raw::mqtt5(server.mqtt, connect_v5("expiry", false, vec![Property::SessionExpiryInterval(2)])).await;
    assert!(ack.session_present, "within its interval the session is there");
    let disconnected = std::time::Instant::now();
    raw.send(&Packet::Disconnect(Disconnect::default())).await;
    let has_session = || server.broker.persistent_sessions().iter().any(|s| s.client_id == "expiry");
    crate::support::eventually("the session to expire", || !has_session()).await;
    assert!(disconnected.elapsed() >= Duration::from_millis(1_900), "kept its interval (2 s): {:?}", disconnected.elapsed());
    let (mut raw, ack) = Raw::mqtt5(server.mqtt, connect_v5("expiry", false, vec![Property::SessionExpiryInterval(2)])).await;
    assert!(!ack.session_present, "after its interval it is gone");

    // §3.14.2.2.2: DISCONNECT may set a new interval; setting 0 discards the session now.
    let disconnect =
        |seconds| Packet::Disconnect(Disconnect { reason: 0, properties: Properties(vec![Property::SessionExpiryInterval(seconds)]) });
    raw.send(&disconnect(0)).await;
    let (mut raw, ack) = Raw::mqtt5(server.mqtt, connect_v5("expiry", false, vec![])).await;
    assert!(!ack.session_present);
    // ... and a non-zero one after a CONNECT with 0 is a protocol error (0x82).
    raw.send(&disconnect(10)).await;
    assert_eq!(server_disconnect(&mut raw).await.reason, 0x82);
}

#[tokio::test]
async fn publish_properties_reach_5_0_subscribers_and_not_3_1_1_ones() {
    // [MQTT-3.3.2-4] payload format indicator, [MQTT-3.3.2-15] response topic, [MQTT-3.3.2-16]
    // correlation data, [MQTT-3.3.2-17, -18] user properties in order, [MQTT-3.3.2-20] content
    // type: forwarded unaltered. A 3.1.1 subscriber gets the message without them.
    let server = TestServer::start().await;
    let (mut sub5, _) = v5(&server, "sub5", vec![]).await;
    subscribe5(&mut sub5, 1, &[("props/#", qos(QoS::AtLeastOnce))], None).await;
    let (mut sub311, _) = Raw::mqtt(server.mqtt, "sub311", true).await;
    sub311.send(&crate::support::subscribe(1, &[("props/#", QoS::AtLeastOnce)])).await;
    assert!(matches!(sub311.recv().await, Some(Packet::SubAck(_))));
    let sent = vec![
        Property::PayloadFormatIndicator(1),
        Property::UserProperty("unit".into(), "C".into()),
        Property::ContentType("text/plain".into()),
        Property::ResponseTopic("props/reply".into()),
        Property::CorrelationData(Bytes::from_static(b"\x01\x02")),
        Property::UserProperty("unit".into(), "F".into()),
    ];
    let (mut publisher, _) = v5(&server, "pub5", vec![]).await;
    publisher.send(&publish5("props/a", "21.5", QoS::AtLeastOnce, Some(1), sent.clone())).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(a)) if a.reason == SUCCESS));
    let got = next_publish(&mut sub5).await;
    assert_eq!(got.properties.0, sent);
    let got = next_publish(&mut sub311).await;
    assert_eq!((got.payload.as_ref(), got.properties.is_empty()), (&b"21.5"[..], true));

    // And a 3.1.1 publisher's message reaches the 5.0 subscriber, without properties.
    let (mut publisher311, _) = Raw::mqtt(server.mqtt, "pub311", true).await;
    publisher311.send(&crate::support::publish("props/b", "7", QoS::AtMostOnce, None, false)).await;
    let got = next_publish(&mut sub5).await;
    assert_eq!((got.topic.unwrap().as_str(), got.properties.is_empty()), ("props/b", true));
}

#[tokio::test]
async fn expired_messages_are_not_delivered_and_the_rest_carry_what_is_left() {
    // [MQTT-3.3.2-5] a message past its expiry interval is not delivered; [MQTT-3.3.2-6] the
    // interval sent on is what is left of it.
    let server = TestServer::start().await;
    let persistent = vec![Property::SessionExpiryInterval(60)];
    let (mut sub, _) = Raw::mqtt5(server.mqtt, connect_v5("expiring", true, persistent.clone())).await;
    subscribe5(&mut sub, 1, &[("exp/#", qos(QoS::AtLeastOnce))], None).await;
    sub.send(&Packet::Disconnect(Disconnect::default())).await;
    let (mut publisher, _) = v5(&server, "exp-pub", vec![]).await;
    let published = std::time::Instant::now();
    publisher.send(&publish5("exp/short", "1", QoS::AtLeastOnce, Some(1), vec![Property::MessageExpiryInterval(1)])).await;
    publisher.send(&publish5("exp/long", "2", QoS::AtLeastOnce, Some(2), vec![Property::MessageExpiryInterval(30)])).await;
    for _ in 0..2 {
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (mut sub, ack) = Raw::mqtt5(server.mqtt, connect_v5("expiring", false, persistent)).await;
    assert!(ack.session_present);
    let got = next_publish(&mut sub).await;
    assert_eq!(got.topic.unwrap().as_str(), "exp/long");
    let left = got.properties.0.iter().find_map(|p| match p {
        Property::MessageExpiryInterval(s) => Some(*s),
        _ => None,
    });
    // 30 s less what passed (at least 2.1 s; more on a busy machine), in whole seconds.
    let passed = published.elapsed().as_secs() as u32;
    assert!(left.is_some_and(|s| (29u32.saturating_sub(passed)..=28).contains(&s)), "{left:?} after {passed} s");
    sub.send(&Packet::PubAck(Ack::new(got.packet_id.unwrap()))).await;
    sub.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn an_expired_retained_message_is_discarded() {
    // §3.3.2.3.3: a retained message past its expiry interval is not sent to new subscribers,
    // and is gone: from the broker and from the store.
    let server = TestServer::start().await;
    let (mut publisher, _) = v5(&server, "retain-exp", vec![]).await;
    let mut short = publish_message("rexp/short", "1", QoS::AtLeastOnce, Some(1), true);
    short.properties = Properties(vec![Property::MessageExpiryInterval(1)]);
    let mut long = publish_message("rexp/long", "2", QoS::AtLeastOnce, Some(2), true);
    long.properties = Properties(vec![Property::MessageExpiryInterval(60)]);
    for p in [short, long] {
        publisher.send(&Packet::Publish(p)).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut sub, _) = v5(&server, "retain-exp-sub", vec![]).await;
    subscribe5(&mut sub, 1, &[("rexp/#", qos(QoS::AtLeastOnce))], None).await;
    let got = next_publish(&mut sub).await;
    assert_eq!((got.topic.unwrap().as_str(), got.retain), ("rexp/long", true));
    sub.expect_silence(Duration::from_millis(300)).await;
    assert!(server.broker.retained(&TopicName::parse("rexp/short").unwrap()).is_none(), "gone from the broker");
    assert!(server.broker.retained(&TopicName::parse("rexp/long").unwrap()).is_some());
    crate::support::eventually_async("the expired retained message leaves the store", || async {
        server.store.load_broker_state().await.unwrap().retained.iter().all(|m| m.topic != "rexp/short")
    })
    .await;
}

#[tokio::test]
async fn client_topic_aliases_are_set_used_and_checked() {
    // [MQTT-3.3.2-8]..[MQTT-3.3.2-12]: an alias is set by a PUBLISH with topic and alias, then
    // stands for that topic; 0 or over the maximum is a Topic Alias invalid (0x94).
    let server = TestServer::start().await;
    let (mut sub, _) = v5(&server, "alias-sub", vec![]).await;
    subscribe5(&mut sub, 1, &[("alias/#", qos(QoS::AtMostOnce))], None).await;
    let (mut publisher, _) = v5(&server, "alias-pub", vec![]).await;
    publisher.send(&publish5("alias/first", "1", QoS::AtMostOnce, None, vec![Property::TopicAlias(3)])).await;
    let mut by_alias = publish_message("alias/x", "2", QoS::AtMostOnce, None, false);
    by_alias.topic = None;
    by_alias.properties = Properties(vec![Property::TopicAlias(3)]);
    publisher.send(&Packet::Publish(by_alias.clone())).await;
    for payload in ["1", "2"] {
        let got = next_publish(&mut sub).await;
        assert_eq!((got.topic.unwrap().as_str(), got.payload.as_ref()), ("alias/first", payload.as_bytes()));
    }
    publisher.send(&publish5("alias/zero", "3", QoS::AtMostOnce, None, vec![Property::TopicAlias(0)])).await;
    assert_eq!(server_disconnect(&mut publisher).await.reason, 0x94);
    // Aliases belong to one connection: the next one does not know alias 3 (0x82).
    let (mut publisher, _) = v5(&server, "alias-pub", vec![]).await;
    publisher.send(&Packet::Publish(by_alias)).await;
    assert_eq!(server_disconnect(&mut publisher).await.reason, 0x82);
}

#[tokio::test]
async fn server_topic_aliases_stay_within_the_client_maximum() {
    // [MQTT-3.1.2-26] never an alias over the client's Topic Alias Maximum; [MQTT-3.1.2-27]
    // none at all without one.
    let server = TestServer::start().await;
    for maximum in [1u16, 0] {
        let (mut sub, _) = v5(&server, "aliased", vec![Property::TopicAliasMaximum(maximum)]).await;
        subscribe5(&mut sub, 1, &[("sa/#", qos(QoS::AtMostOnce))], None).await;
        let (mut publisher, _) = v5(&server, "sa-pub", vec![]).await;
        for topic in ["sa/one", "sa/one", "sa/two", "sa/one"] {
            publisher.send(&publish5(topic, "x", QoS::AtMostOnce, None, vec![])).await;
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            let got = next_publish(&mut sub).await;
            let alias = got.properties.0.iter().find_map(|p| match p {
                Property::TopicAlias(a) => Some(*a),
                _ => None,
            });
            seen.push((got.topic.map(|t| t.as_str().to_owned()), alias));
        }
        let one = Some("sa/one".to_owned());
        let two = Some("sa/two".to_owned());
        if maximum == 1 {
            assert_eq!(seen, [(one.clone(), Some(1)), (None, Some(1)), (two, None), (None, Some(1))]);
        } else {
            assert_eq!(seen, [(one.clone(), None), (one.clone(), None), (two, None), (one, None)]);
        }
    }
}

#[tokio::test]
async fn the_client_receive_maximum_limits_messages_in_flight() {
    // [MQTT-3.3.4-9] the server sends no more unacknowledged QoS 1/2 PUBLISH than the client's
    // Receive Maximum.
    let server = TestServer::start().await;
    let (mut sub, _) = v5(&server, "slow", vec![Property::ReceiveMaximum(2)]).await;
    subscribe5(&mut sub, 1, &[("flow/#", qos(QoS::AtLeastOnce))], None).await;
    let (mut publisher, _) = v5(&server, "flow-pub", vec![]).await;
    for i in 1..=3u16 {
        publisher.send(&publish5("flow/t", &i.to_string(), QoS::AtLeastOnce, Some(i), vec![])).await;
    }
    let first = next_publish(&mut sub).await;
    let second = next_publish(&mut sub).await;
    sub.expect_silence(Duration::from_millis(400)).await;
    sub.send(&Packet::PubAck(Ack::new(first.packet_id.unwrap()))).await;
    let third = next_publish(&mut sub).await;
    assert_eq!([first.payload, second.payload, third.payload].map(|p| String::from_utf8(p.to_vec()).unwrap()), ["1", "2", "3"]);
}

#[tokio::test]
async fn a_resumed_session_resends_within_the_new_receive_maximum() {
    // [MQTT-4.4.0-1] unacknowledged messages are sent again on resumption, and
    // [MQTT-3.3.4-9] no more of them at once than the Receive Maximum of the new connection.
    let server = TestServer::start().await;
    let session = |receive_maximum, clean_start| {
        connect_v5("resumer", clean_start, vec![Property::SessionExpiryInterval(60), Property::ReceiveMaximum(receive_maximum)])
    };
    let (mut sub, _) = Raw::mqtt5(server.mqtt, session(10, true)).await;
    subscribe5(&mut sub, 1, &[("resend/#", qos(QoS::AtLeastOnce))], None).await;
    let (mut publisher, _) = v5(&server, "resend-pub", vec![]).await;
    for i in 1..=3u16 {
        publisher.send(&publish5("resend/t", &i.to_string(), QoS::AtLeastOnce, Some(i), vec![])).await;
    }
    for _ in 0..3 {
        next_publish(&mut sub).await; // not acknowledged
    }
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut sub, ack) = Raw::mqtt5(server.mqtt, session(1, false)).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = next_publish(&mut sub).await;
        assert!(p.dup, "a resend has DUP set");
        sub.expect_silence(Duration::from_millis(300)).await;
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
        sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap()))).await;
    }
    assert_eq!(got, ["1", "2", "3"]);
}

#[tokio::test]
async fn a_client_over_the_server_receive_maximum_is_disconnected() {
    // [MQTT-3.3.4-7] a client must not exceed the server's Receive Maximum; §3.3.4: the server
    // disconnects it with 0x93. QoS 2 publishes count until their PUBREL.
    let server = TestServer::start().await;
    let (mut raw, ack) = v5(&server, "greedy", vec![]).await;
    let maximum = props(&ack.properties)
        .iter()
        .find_map(|p| match p {
            Property::ReceiveMaximum(n) => Some(*n),
            _ => None,
        })
        .unwrap();
    for id in 1..=maximum + 1 {
        if !raw.try_send(&publish5("greedy/t", "x", QoS::ExactlyOnce, Some(id), vec![])).await {
            break;
        }
    }
    assert_eq!(server_disconnect(&mut raw).await.reason, 0x93);
}

#[tokio::test]
async fn packets_over_the_client_maximum_size_are_not_sent() {
    // [MQTT-3.1.2-24] the server sends no packet over the client's Maximum Packet Size;
    // [MQTT-3.1.2-25] it drops it as if it had sent it.
    let server = TestServer::start().await;
    let (mut sub, _) = v5(&server, "small", vec![Property::MaximumPacketSize(64)]).await;
    subscribe5(&mut sub, 1, &[("size/#", qos(QoS::AtLeastOnce))], None).await;
    let (mut publisher, _) = v5(&server, "size-pub", vec![]).await;
    publisher.send(&publish5("size/t", &"x".repeat(100), QoS::AtLeastOnce, Some(1), vec![])).await;
    publisher.send(&publish5("size/t", "small", QoS::AtLeastOnce, Some(2), vec![])).await;
    let got = next_publish(&mut sub).await;
    assert_eq!(got.payload.as_ref(), b"small");
    eventually("the drop is counted", || server.broker.stats().dropped_too_large == 1).await;
}

#[tokio::test]
async fn a_packet_over_the_server_maximum_size_gets_0x95() {
    // §3.1.2.11.4 / §4.13: a packet over the server's Maximum Packet Size: DISCONNECT 0x95.
    let server = TestServer::start_with(|a| a.max_packet_size = 128).await;
    let (mut raw, ack) = v5(&server, "big", vec![]).await;
    assert!(has(&ack.properties, &Property::MaximumPacketSize(128)));
    raw.send(&publish5("big/t", &"x".repeat(200), QoS::AtMostOnce, None, vec![])).await;
    assert_eq!(server_disconnect(&mut raw).await.reason, 0x95);
}

#[tokio::test]
async fn no_local_and_retain_as_published() {
    // [MQTT-3.8.3-3] no local: the session's own publishes are not sent back to it.
    // [MQTT-3.3.1-12, -13] retain as published keeps the retain flag; otherwise it is 0.
    let server = TestServer::start().await;
    let (mut raw, _) = v5(&server, "self", vec![]).await;
    let no_local = SubscriptionOptions { no_local: true, ..qos(QoS::AtMostOnce) };
    let as_published = SubscriptionOptions { retain_as_published: true, ..qos(QoS::AtMostOnce) };
    subscribe5(&mut raw, 1, &[("nl/t", no_local), ("rap/t", as_published), ("plain/t", qos(QoS::AtMostOnce))], None).await;
    raw.send(&publish5("nl/t", "mine", QoS::AtMostOnce, None, vec![])).await;
    let (mut other, _) = v5(&server, "other", vec![]).await;
    other.send(&publish5("nl/t", "theirs", QoS::AtMostOnce, None, vec![])).await;
    let got = next_publish(&mut raw).await;
    assert_eq!(got.payload.as_ref(), b"theirs", "its own publish was not sent back");
    for topic in ["rap/t", "plain/t"] {
        other.send(&Packet::Publish(publish_message(topic, "r", QoS::AtMostOnce, None, true))).await;
        let got = next_publish(&mut raw).await;
        assert_eq!(got.retain, topic == "rap/t", "{topic}");
    }
}

#[tokio::test]
async fn retain_handling_sends_retained_messages_always_once_or_never() {
    // [MQTT-3.3.1-9] 0: on every subscribe; [MQTT-3.3.1-10] 1: only if the subscription did not
    // exist; [MQTT-3.3.1-11] 2: never.
    let server = TestServer::start().await;
    let (mut raw, _) = v5(&server, "rh", vec![]).await;
    raw.send(&Packet::Publish(publish_message("rh/t", "kept", QoS::AtMostOnce, None, true))).await;
    for (handling, expected) in [(0u8, [true, true]), (1, [true, false]), (2, [false, false])] {
        let (mut sub, _) = v5(&server, &format!("rh-sub-{handling}"), vec![]).await;
        for (round, retained_expected) in expected.into_iter().enumerate() {
            let options = SubscriptionOptions { retain_handling: handling, ..qos(QoS::AtMostOnce) };
            subscribe5(&mut sub, round as u16 + 1, &[("rh/#", options)], None).await;
            // Sent right after the SUBACK when it is; waited for as long as it takes.
            let within = if retained_expected { crate::support::WAIT } else { Duration::from_millis(300) };
            match sub.recv_within(within).await {
                Ok(Some(Packet::Publish(p))) => assert!(retained_expected && p.retain, "handling {handling} round {round}: {p:?}"),
                Err(()) => assert!(!retained_expected, "handling {handling} round {round}: nothing sent"),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn subscription_identifiers_come_back_with_each_match() {
    // [MQTT-3.3.4-3] every subscription identifier of the matching subscriptions is sent with
    // the message; §3.8.2.1.2: identifier 0 is a protocol error.
    let server = TestServer::start().await;
    let (mut raw, _) = v5(&server, "ids", vec![]).await;
    subscribe5(&mut raw, 1, &[("ids/a", qos(QoS::AtMostOnce))], Some(7)).await;
    subscribe5(&mut raw, 2, &[("ids/#", qos(QoS::AtMostOnce))], Some(268_435_455)).await;
    subscribe5(&mut raw, 3, &[("ids/+", qos(QoS::AtMostOnce))], None).await;
    raw.send(&publish5("ids/a", "x", QoS::AtMostOnce, None, vec![])).await;
    let got = next_publish(&mut raw).await;
    let mut ids: Vec<u32> = got
        .properties
        .0
        .iter()
        .filter_map(|p| match p {
            Property::SubscriptionIdentifier(id) => Some(*id),
            _ => None,
        })
        .collect();
    ids.sort();
    assert_eq!(ids, [7, 268_435_455]);
    let properties = Properties(vec![Property::SubscriptionIdentifier(0)]);
    raw.send(&Packet::Subscribe(Subscribe { packet_id: pid(4), filters: vec![("ids/z".into(), qos(QoS::AtMostOnce))], properties })).await;
    assert_eq!(server_disconnect(&mut raw).await.reason, 0x82);
}

#[tokio::test]
async fn suback_and_unsuback_carry_5_0_reason_codes() {
    // §3.9.3: 0x8F topic filter invalid, 0x97 quota exceeded; §3.11.3: UNSUBACK 0x00 / 0x11 no
    // subscription existed, one per filter [MQTT-3.11.3-1].
    let server = TestServer::start_with(|a| a.max_subscriptions = 1).await;
    let (mut raw, _) = v5(&server, "codes", vec![]).await;
    let codes = subscribe5(
        &mut raw,
        1,
        &[("ok/t", qos(QoS::AtLeastOnce)), ("bad/#/x", qos(QoS::AtMostOnce)), ("more/t", qos(QoS::AtMostOnce))],
        None,
    )
    .await;
    assert_eq!(codes, [1, 0x8F, 0x97]);
    raw.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(2),
        filters: vec!["ok/t".into(), "never/t".into()],
        properties: Default::default(),
    }))
    .await;
    assert!(matches!(raw.recv().await, Some(Packet::UnsubAck(a)) if a.codes == [0x00, 0x11]));
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]
    let server = TestServer::start().await;
    let (mut raw, _) = v5(&server, "share-nl", vec![]).await;
    let options = SubscriptionOptions { no_local: true, ..qos(QoS::AtMostOnce) };
    raw.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        filters: vec![("$share/g/t".into(), options)],
        properties: Default::default(),
    }))
    .await;
    assert_eq!(server_disconnect(&mut raw).await.reason, 0x82);
}

#[tokio::test]
async fn shared_subscriptions_give_each_message_to_one_member() {
    // §4.8.2: each message matching a shared subscription goes to one of its members; a 3.1.1
    // client may be a member too (as with Mosquitto). Malformed share names get 0x8F.
    let server = TestServer::start().await;
    let (mut a, _) = v5(&server, "member-a", vec![]).await;
    assert_eq!(subscribe5(&mut a, 1, &[("$share/workers/jobs/#", qos(QoS::AtLeastOnce))], None).await, [1]);
    assert_eq!(
        subscribe5(&mut a, 2, &[("$share/+/jobs", qos(QoS::AtLeastOnce)), ("$share/g", qos(QoS::AtLeastOnce))], None).await,
        [0x8F, 0x8F]
    );
    let (mut b, _) = Raw::mqtt(server.mqtt, "member-b", true).await;
    b.send(&crate::support::subscribe(1, &[("$share/workers/jobs/#", QoS::AtLeastOnce)])).await;
    assert!(matches!(b.recv().await, Some(Packet::SubAck(s)) if s.codes == [1]));
    let (mut publisher, _) = v5(&server, "jobs-pub", vec![]).await;
    for i in 1..=10u16 {
        publisher.send(&publish5("jobs/x", &i.to_string(), QoS::AtLeastOnce, Some(i), vec![])).await;
    }
    // Both members in turn until ten came, then neither gets another.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    while got.len() < 10 {
        assert!(tokio::time::Instant::now() < deadline, "ten messages between the members: {got:?}");
        for raw in [&mut a, &mut b] {
            while let Ok(Some(Packet::Publish(p))) = raw.recv_within(Duration::from_millis(100)).await {
                raw.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap()))).await;
                got.push(String::from_utf8(p.payload.to_vec()).unwrap().parse::<u16>().unwrap());
            }
        }
    }
    for raw in [&mut a, &mut b] {
        raw.expect_silence(Duration::from_millis(300)).await;
    }
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, (1..=10).collect::<Vec<_>>(), "each message exactly once: {got:?}");
}

#[tokio::test]
async fn a_shared_member_that_leaves_hands_its_unacknowledged_messages_on() {
    // §4.8.2: a message a member did not acknowledge before its connection ended goes to
    // another member of the shared subscription.
    let server = TestServer::start().await;
    let (mut quitter, _) = v5(&server, "quitter", vec![]).await;
    subscribe5(&mut quitter, 1, &[("$share/g/work/#", qos(QoS::AtLeastOnce))], None).await;
    let (mut publisher, _) = v5(&server, "work-pub", vec![]).await;
    publisher.send(&publish5("work/1", "job", QoS::AtLeastOnce, Some(1), vec![])).await;
    let first = next_publish(&mut quitter).await;
    assert_eq!(first.payload.as_ref(), b"job");
    let (mut stayer, _) = v5(&server, "stayer", vec![]).await;
    subscribe5(&mut stayer, 1, &[("$share/g/work/#", qos(QoS::AtLeastOnce))], None).await;
    drop(quitter); // gone without acknowledging
    let got = next_publish(&mut stayer).await;
    assert_eq!((got.topic.unwrap().as_str(), got.payload.as_ref()), ("work/1", &b"job"[..]));
}

#[tokio::test]
async fn denied_publishes_get_0x87_and_quarantined_readings_0x99() {
    // §3.4.2.1: PUBACK 0x87 (not authorized) for a publish the ACL denies, 0x99 (payload format
    // invalid) with a reason string for a reading that is kept as a reject.
    let server = TestServer::start_with(|a| a.allow_anonymous = false).await;
    crate::support::add_user(&server.store, "alice", "alice-secret", false).await;
    let mut c = connect_v5("alice-5", true, vec![]);
    c.username = Some("alice".into());
    c.password = Some(Bytes::from_static(b"alice-secret"));
    let (mut alice, ack) = Raw::mqtt5(server.mqtt, c).await;
    assert_eq!(ack.code, SUCCESS);
    alice.send(&publish5("iot/bob/sensor/kitchen/temperature", "20", QoS::AtLeastOnce, Some(1), vec![])).await;
    assert!(matches!(alice.recv().await, Some(Packet::PubAck(a)) if a.packet_id == pid(1) && a.reason == 0x87));
    alice.send(&publish5("iot/alice/sensor/kitchen/temperature", "warm", QoS::AtLeastOnce, Some(2), vec![])).await;
    match alice.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!((a.packet_id, a.reason), (pid(2), 0x99));
            assert!(a.properties.0.iter().any(|p| matches!(p, Property::ReasonString(s) if s.contains("rejects"))), "{a:?}");
        }
        other => panic!("{other:?}"),
    }
    let rejects = server.store.recent_rejects(10).await.unwrap();
    assert!(rejects.iter().any(|r| r.topic == "iot/alice/sensor/kitchen/temperature"), "still recorded in rejects");
    alice.send(&publish5("iot/alice/sensor/kitchen/temperature", "21.5", QoS::ExactlyOnce, Some(3), vec![])).await;
    assert!(matches!(alice.recv().await, Some(Packet::PubRec(a)) if a.reason == SUCCESS));
    // [MQTT-3.1.2-29] with request problem information 0, no reason string.
    let mut c = connect_v5("alice-quiet", true, vec![Property::RequestProblemInformation(0)]);
    c.username = Some("alice".into());
    c.password = Some(Bytes::from_static(b"alice-secret"));
    let (mut quiet, _) = Raw::mqtt5(server.mqtt, c).await;
    quiet.send(&publish5("iot/alice/sensor/kitchen/temperature", "hot", QoS::AtLeastOnce, Some(1), vec![])).await;
    assert!(matches!(quiet.recv().await, Some(Packet::PubAck(a)) if a.reason == 0x99 && a.properties.is_empty()));
}

#[tokio::test]
async fn the_server_says_why_it_disconnects() {
    // §3.14.2.1: session taken over 0x8E, keep alive timeout 0x8D, server shutting down 0x8B.
    let server = TestServer::start().await;
    let (mut first, _) = v5(&server, "twin", vec![]).await;
    let (_second, _) = v5(&server, "twin", vec![]).await;
    assert_eq!(server_disconnect(&mut first).await.reason, 0x8E);
    let mut c = connect_v5("sleepy5", true, vec![]);
    c.keep_alive = Duration::from_secs(1);
    let (mut sleepy, _) = Raw::mqtt5(server.mqtt, c).await;
    assert_eq!(server_disconnect(&mut sleepy).await.reason, 0x8D);
    let (mut last, _) = v5(&server, "last", vec![]).await;
    server.broker.stats(); // still up
    let stop = tokio::spawn(server.stop());
    assert_eq!(server_disconnect(&mut last).await.reason, 0x8B);
    stop.await.unwrap();
}

#[tokio::test]
async fn a_will_waits_for_its_delay_and_is_dropped_if_the_client_returns() {
    // §3.1.3.2.2: the will is published after the will delay interval; [MQTT-3.1.3-9] not at
    // all if the client connects again first, unless with Clean Start 1, which ends the old
    // session and publishes it at once. Will properties travel with it.
    let server = TestServer::start().await;
    let (mut watcher, _) = v5(&server, "watcher5", vec![]).await;
    subscribe5(&mut watcher, 1, &[("wills5/#", qos(QoS::AtLeastOnce))], None).await;
    // (A delayed will waits for the session's end at most: the session lasts as long.)
    let with_will = |payload: &'static str, clean_start, delay: u32| {
        let mut c = connect_v5("board5", clean_start, vec![Property::SessionExpiryInterval(delay.max(30))]);
        c.will = Some(LastWill {
            topic: TopicName::parse("wills5/board").unwrap(),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties(vec![Property::WillDelayInterval(delay), Property::UserProperty("why".into(), "gone".into())]),
        });
        c
    };
    // Back within the delay (3 s): no will, also once the delay is over.
    let (board, _) = Raw::mqtt5(server.mqtt, with_will("first", true, 3)).await;
    drop(board);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (board, ack) = Raw::mqtt5(server.mqtt, with_will("second", false, 1)).await;
    assert!(ack.session_present);
    watcher.expect_silence(Duration::from_millis(3500)).await;
    // Gone for good: the will comes after the delay (1 s), with its user property.
    drop(board);
    let started = std::time::Instant::now();
    let got = next_publish(&mut watcher).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "published only after the delay: {:?}", started.elapsed());
    assert_eq!(got.payload.as_ref(), b"second");
    assert!(got.properties.0.contains(&Property::UserProperty("why".into(), "gone".into())));
    // Back within the delay (300 s) with Clean Start 1: the old session ends, its will is
    // published at once.
    let (board, _) = Raw::mqtt5(server.mqtt, with_will("third", false, 300)).await;
    drop(board);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let (_board, _) = Raw::mqtt5(server.mqtt, connect_v5("board5", true, vec![])).await;
    assert_eq!(next_publish(&mut watcher).await.payload.as_ref(), b"third");
    assert!(started.elapsed() < Duration::from_secs(20), "at once, not after the delay: {:?}", started.elapsed());
    // DISCONNECT with 0x04 (with will) or an error code publishes the will at once (session
    // expiry 0 ends the session, and with it the delay); only 0x00 discards it [MQTT-3.14.4-3].
    for (reason, payload) in [(0x04, "asked"), (0x80, "failed"), (0x00, "")] {
        let mut c = connect_v5("board5b", true, vec![]);
        c.will = with_will(payload, true, 1).will;
        let (mut board, _) = Raw::mqtt5(server.mqtt, c).await;
        board.send(&Packet::Disconnect(Disconnect { reason, properties: Default::default() })).await;
        if reason == 0 {
            watcher.expect_silence(Duration::from_millis(500)).await;
        } else {
            assert_eq!(next_publish(&mut watcher).await.payload.as_ref(), payload.as_bytes());
        }
    }
}

#[tokio::test]
async fn a_will_s_message_expiry_counts_from_its_publication() {
    // §3.1.3.2.4: the will's message expiry interval applies from when it is published, not
    // from the CONNECT.
    let server = TestServer::start().await;
    let (mut watcher, _) = v5(&server, "expiry-watcher", vec![]).await;
    subscribe5(&mut watcher, 1, &[("wills6/#", qos(QoS::AtLeastOnce))], None).await;
    let mut c = connect_v5("board6", true, vec![]);
    c.will = Some(LastWill {
        topic: TopicName::parse("wills6/board").unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties(vec![Property::MessageExpiryInterval(30)]),
    });
    let (board, _) = Raw::mqtt5(server.mqtt, c).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(board);
    let dropped = std::time::Instant::now();
    let got = next_publish(&mut watcher).await;
    assert_eq!(got.payload.as_ref(), b"gone");
    // 30 s from the publication, less the (whole) seconds since: counted from the CONNECT, 2.5 s
    // more would have gone.
    let passed = dropped.elapsed().as_secs() as u32;
    let left = got.properties.0.iter().find_map(|p| match p {
        Property::MessageExpiryInterval(s) => Some(*s),
        _ => None,
    });
    assert!(left.is_some_and(|s| (29u32.saturating_sub(passed)..=30).contains(&s)), "{left:?} after {passed} s: {:?}", got.properties);
}

#[tokio::test]
async fn an_auth_packet_without_enhanced_authentication_is_a_protocol_error() {
    // §4.12: AUTH is only part of an enhanced authentication the client started.
    let server = TestServer::start().await;
    let (mut raw, _) = v5(&server, "auth-late", vec![]).await;
    raw.send(&Packet::Auth(Auth { reason: 0x18, properties: Default::default() })).await;
    assert_eq!(server_disconnect(&mut raw).await.reason, 0x82);
}
