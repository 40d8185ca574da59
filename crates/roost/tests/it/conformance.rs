//! MQTT 3.1.1 conformance over raw TCP: each test sends exact packets (or bytes) and checks the
//! broker's answer against the normative statement it cites.

use crate::support::{connect, eventually, pid, publish, subscribe, Raw, TestServer};
use bytes::Bytes;
use mqtt_codec::*;
use std::time::Duration;

async fn subscribed(server: &TestServer, client_id: &str, filters: &[(&str, QoS)]) -> Raw {
    let (mut raw, _) = Raw::mqtt(server.mqtt, client_id, true).await;
    raw.send(&subscribe(1, filters)).await;
    let Some(Packet::SubAck(ack)) = raw.recv().await else { panic!("no SUBACK") };
    assert!(ack.codes.iter().all(|c| *c != SUBACK_FAILURE));
    raw
}

async fn recv_publish(raw: &mut Raw) -> Publish {
    match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

fn text(p: &Publish) -> &str {
    std::str::from_utf8(&p.payload).unwrap()
}

#[tokio::test]
async fn first_packet_must_be_connect() {
    // [MQTT-3.1.0-1] the first packet from the client MUST be a CONNECT.
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.mqtt).await;
    raw.send(&Packet::PingReq).await;
    assert!(raw.expect_closed().await.is_empty());
}

#[tokio::test]
async fn a_second_connect_is_a_protocol_violation() {
    // [MQTT-3.1.0-2] a second CONNECT MUST be treated as a protocol violation: disconnect.
    let server = TestServer::start().await;
    let (mut raw, ack) = Raw::mqtt(server.mqtt, "twice", true).await;
    assert_eq!(ack.code, connect_return::ACCEPTED);
    raw.send(&Packet::Connect(connect("twice", true))).await;
    assert!(raw.expect_closed().await.is_empty());
    eventually("protocol error counted", || server.broker.stats().protocol_errors == 1).await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01() {
    // [MQTT-3.1.2-2] unsupported level: CONNACK 0x01, then disconnect.
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.mqtt).await;
    raw.send_bytes(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 7, 0x02, 0, 60, 0, 0]).await;
    let packets = raw.expect_closed().await;
    assert!(matches!(&packets[..], [Packet::ConnAck(a)] if a.code == connect_return::UNACCEPTABLE_PROTOCOL_VERSION));
}

#[tokio::test]
async fn mqtt_3_1_clients_are_accepted() {
    // Protocol name "MQIsdp" level 3 (MQTT 3.1), as old clients send.
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.mqtt).await;
    raw.send_bytes(&[0x10, 16, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 2, b'i', b'd']).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(a)) if a.code == connect_return::ACCEPTED));
}

#[tokio::test]
async fn reserved_connect_flag_closes_the_connection() {
    // [MQTT-3.1.2-3] the reserved flag MUST be 0, else disconnect.
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.mqtt).await;
    raw.send_bytes(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 60, 0, 0]).await;
    assert!(raw.expect_closed().await.is_empty());
}

#[tokio::test]
async fn zero_length_client_id_needs_clean_session() {
    // [MQTT-3.1.3-8] empty id with CleanSession=0: CONNACK 0x02 and close.
    let server = TestServer::start().await;
    let mut raw = Raw::connect(server.mqtt).await;
    raw.send(&Packet::Connect(connect("", false))).await;
    let packets = raw.expect_closed().await;
    assert!(matches!(&packets[..], [Packet::ConnAck(a)] if a.code == connect_return::IDENTIFIER_REJECTED));
    // [MQTT-3.1.3-6] with CleanSession=1 the server assigns an id and accepts.
    let (_raw, ack) = Raw::mqtt(server.mqtt, "", true).await;
    assert_eq!(ack.code, connect_return::ACCEPTED);
    assert!(!ack.session_present);
}

#[tokio::test]
async fn connect_must_arrive_within_the_timeout() {
    // [MQTT-3.1.4] a server closes a connection that sends no CONNECT in reasonable time.
    let server = TestServer::start_with(|a| a.connect_timeout = Duration::from_millis(300)).await;
    let mut raw = Raw::connect(server.mqtt).await;
    assert!(raw.expect_closed().await.is_empty());
}

#[tokio::test]
async fn same_client_id_takes_the_session_over() {
    // [MQTT-3.1.4-2] a second connection with the same client id disconnects the first.
    let server = TestServer::start().await;
    let (mut first, _) = Raw::mqtt(server.mqtt, "dup-id", true).await;
    let (mut second, ack) = Raw::mqtt(server.mqtt, "dup-id", true).await;
    assert_eq!(ack.code, connect_return::ACCEPTED);
    assert!(first.expect_closed().await.is_empty());
    second.send(&Packet::PingReq).await;
    assert_eq!(second.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn ping_gets_pong() {
    // [MQTT-3.12.4-1]
    let server = TestServer::start().await;
    let (mut raw, _) = Raw::mqtt(server.mqtt, "pinger", true).await;
    raw.send(&Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn keep_alive_expiry_closes_and_publishes_the_will() {
    // [MQTT-3.1.2-24] nothing received for 1.5 x keep-alive: disconnect; [MQTT-3.1.2-8] the
    // will is published because no DISCONNECT was sent.
    let server = TestServer::start().await;
    let mut watcher = subscribed(&server, "watcher", &[("wills/#", QoS::AtLeastOnce)]).await;
    let mut c = connect("sleepy", true);
    c.keep_alive = Duration::from_secs(1);
    c.will = Some(LastWill {
        topic: TopicName::parse("wills/sleepy").unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    });
    let mut sleepy = Raw::connect(server.mqtt).await;
    sleepy.send(&Packet::Connect(c)).await;
    assert!(matches!(sleepy.recv().await, Some(Packet::ConnAck(_))));
    tokio::time::pause(); // the broker's clock is the runtime's: the wait below passes at once
    let started = tokio::time::Instant::now();
    assert!(sleepy.expect_closed().await.is_empty());
    let closed_after = started.elapsed();
    assert!(closed_after >= Duration::from_millis(1500), "closed after {closed_after:?}, before 1.5 x keep-alive");
    let will = recv_publish(&mut watcher).await;
    assert_eq!((will.topic.as_ref().unwrap().as_str(), text(&will).to_owned()), ("wills/sleepy", "gone".to_owned()));
}

#[tokio::test]
async fn keep_alive_counts_from_the_last_packet_received() {
    // [MQTT-3.1.2-24] the limit is 1.5 x keep-alive since the last control packet received:
    // a client that pings in time stays connected well past it, and is closed once it stops.
    let server = TestServer::start().await;
    let mut c = connect("pinging", true);
    c.keep_alive = Duration::from_secs(1);
    let mut client = Raw::connect(server.mqtt).await;
    client.send(&Packet::Connect(c)).await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    // The broker's clock is the runtime's: from here on time only moves when every task waits
    // for a timer, so the seconds below pass at once and exactly.
    tokio::time::pause();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.send(&Packet::PingReq).await;
        assert_eq!(client.recv().await, Some(Packet::PingResp), "still connected after a ping in time");
    }
    let silent_since = tokio::time::Instant::now();
    assert!(client.expect_closed().await.is_empty());
    let closed_after = silent_since.elapsed();
    assert!(closed_after >= Duration::from_millis(1500), "closed after {closed_after:?}, before 1.5 x keep-alive");
    assert!(closed_after <= Duration::from_millis(2500), "closed after {closed_after:?}: the sweep runs every second");
}

#[tokio::test]
async fn will_is_not_published_after_disconnect() {
    // [MQTT-3.14.4-3] on DISCONNECT the server MUST discard the will.
    let server = TestServer::start().await;
    let mut watcher = subscribed(&server, "watcher", &[("wills/#", QoS::AtMostOnce)]).await;
    let mut c = connect("polite", true);
    c.will = Some(LastWill {
        topic: TopicName::parse("wills/polite").unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    });
    let mut polite = Raw::connect(server.mqtt).await;
    polite.send(&Packet::Connect(c)).await;
    assert!(matches!(polite.recv().await, Some(Packet::ConnAck(_))));
    polite.send(&Packet::Disconnect(Disconnect::default())).await;
    assert!(polite.expect_closed().await.is_empty());
    watcher.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn will_retain_is_honoured() {
    // [MQTT-3.1.2-17] a will with retain set is published as a retained message.
    let server = TestServer::start().await;
    let mut c = connect("dying", true);
    c.will = Some(LastWill {
        topic: TopicName::parse("status/dying").unwrap(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    });
    let mut dying = Raw::connect(server.mqtt).await;
    dying.send(&Packet::Connect(c)).await;
    assert!(matches!(dying.recv().await, Some(Packet::ConnAck(_))));
    drop(dying); // no DISCONNECT
    let broker = server.broker.clone();
    let topic = TopicName::parse("status/dying").unwrap();
    eventually("the will is retained", || broker.retained(&topic).is_some()).await;
    let mut late = subscribed(&server, "late", &[("status/+", QoS::AtLeastOnce)]).await;
    let will = recv_publish(&mut late).await;
    assert!(will.retain);
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert_eq!(text(&will), "offline");
}

#[tokio::test]
async fn qos1_publish_is_acknowledged_and_delivered() {
    // [MQTT-4.3.2-2] PUBACK with the packet id; the subscriber gets it at min(QoS) [MQTT-3.8.4-6].
    let server = TestServer::start().await;
    let mut sub = subscribed(&server, "sub", &[("a/b", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "pub", true).await;
    publisher.send(&publish("a/b", "1", QoS::AtLeastOnce, Some(7), false)).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubAck(Ack::new(pid(7)))));
    let got = recv_publish(&mut sub).await;
    assert_eq!((got.qos, text(&got)), (QoS::AtLeastOnce, "1"));
    assert!(!got.retain, "[MQTT-3.3.1-9] live delivery has retain 0");
    sub.send(&Packet::PubAck(Ack::new(got.packet_id.unwrap()))).await;
}

#[tokio::test]
async fn qos2_inbound_is_routed_exactly_once() {
    // [MQTT-4.3.3-2] until PUBREL, a resent PUBLISH with the same id is not delivered again.
    let server = TestServer::start().await;
    let mut sub = subscribed(&server, "sub", &[("x", QoS::ExactlyOnce)]).await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "pub2", true).await;
    publisher.send(&publish("x", "once", QoS::ExactlyOnce, Some(9), false)).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubRec(Ack::new(pid(9)))));
    let Packet::Publish(mut again) = publish("x", "once", QoS::ExactlyOnce, Some(9), false) else { unreachable!() };
    again.dup = true;
    publisher.send(&Packet::Publish(again)).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubRec(Ack::new(pid(9)))));
    publisher.send(&Packet::PubRel(Ack::new(pid(9)))).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubComp(Ack::new(pid(9)))));
    // Outbound QoS 2 handshake to the subscriber [MQTT-4.3.3-1].
    let got = recv_publish(&mut sub).await;
    assert_eq!((got.qos, text(&got)), (QoS::ExactlyOnce, "once"));
    let id = got.packet_id.unwrap();
    sub.send(&Packet::PubRec(Ack::new(id))).await;
    assert_eq!(sub.recv().await, Some(Packet::PubRel(Ack::new(id))));
    sub.send(&Packet::PubComp(Ack::new(id))).await;
    sub.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_messages() {
    // [MQTT-3.1.2-4] CleanSession=0 resumes the session; [MQTT-3.1.2-5] QoS 1/2 messages are
    // stored while offline; [MQTT-3.2.2-2] CONNACK says the session is present.
    let server = TestServer::start().await;
    let (mut sub, ack) = Raw::mqtt(server.mqtt, "durable", false).await;
    assert!(!ack.session_present);
    sub.send(&subscribe(1, &[("d/#", QoS::AtLeastOnce)])).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(&Packet::Disconnect(Disconnect::default())).await;
    sub.expect_closed().await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    for i in 1..=3u16 {
        publisher.send(&publish("d/x", i.to_string(), QoS::AtLeastOnce, Some(i), false)).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    publisher.send(&publish("d/x", "qos0-may-be-dropped", QoS::AtMostOnce, None, false)).await;
    let (mut sub, ack) = Raw::mqtt(server.mqtt, "durable", false).await;
    assert!(ack.session_present);
    for expected in ["1", "2", "3"] {
        let got = recv_publish(&mut sub).await;
        assert_eq!(text(&got), expected, "in order [MQTT-4.6.0-6]");
        sub.send(&Packet::PubAck(Ack::new(got.packet_id.unwrap()))).await;
    }
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_on_reconnect() {
    // [MQTT-4.4.0-1] on reconnect with CleanSession=0, unacknowledged PUBLISH packets are resent
    // with the same packet id and DUP set [MQTT-3.3.1-1].
    let server = TestServer::start().await;
    let (mut sub, _) = Raw::mqtt(server.mqtt, "forgetful", false).await;
    sub.send(&subscribe(1, &[("r", QoS::AtLeastOnce)])).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    publisher.send(&publish("r", "hello", QoS::AtLeastOnce, Some(1), false)).await;
    let first = recv_publish(&mut sub).await;
    assert!(!first.dup);
    drop(sub); // no PUBACK, no DISCONNECT
    let broker = server.broker.clone();
    eventually("the session is offline", || broker.persistent_sessions().iter().any(|s| s.client_id == "forgetful" && !s.online)).await;
    let (mut sub, ack) = Raw::mqtt(server.mqtt, "forgetful", false).await;
    assert!(ack.session_present);
    let again = recv_publish(&mut sub).await;
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(text(&again), "hello");
}

#[tokio::test]
async fn clean_session_discards_the_stored_session() {
    // [MQTT-3.1.2-6] CleanSession=1 discards any previous session.
    let server = TestServer::start().await;
    let (mut sub, _) = Raw::mqtt(server.mqtt, "c", false).await;
    sub.send(&subscribe(1, &[("c/x", QoS::AtLeastOnce)])).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(&Packet::Disconnect(Disconnect::default())).await;
    sub.expect_closed().await;
    let (mut sub, ack) = Raw::mqtt(server.mqtt, "c", true).await;
    assert!(!ack.session_present);
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    publisher.send(&publish("c/x", "nobody", QoS::AtMostOnce, None, false)).await;
    sub.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn retained_messages_are_stored_replaced_and_cleared() {
    // [MQTT-3.3.1-5] stored; [MQTT-3.3.1-6] sent to new subscribers; [MQTT-3.3.1-8] with the
    // retain flag; [MQTT-3.3.1-10, -11] an empty retained publish clears it.
    let server = TestServer::start().await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    publisher.send(&publish("home/t", "20", QoS::AtMostOnce, None, true)).await;
    publisher.send(&publish("home/t", "21", QoS::AtMostOnce, None, true)).await;
    publisher.send(&publish("home/h", "50", QoS::AtMostOnce, None, true)).await;
    publisher.send(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    let mut sub = subscribed(&server, "s1", &[("home/t", QoS::AtLeastOnce)]).await;
    let got = recv_publish(&mut sub).await;
    assert!(got.retain);
    assert_eq!(text(&got), "21");
    assert_eq!(got.qos, QoS::AtMostOnce, "min(message QoS, subscription QoS)");
    publisher.send(&publish("home/t", "", QoS::AtMostOnce, None, true)).await;
    let cleared = recv_publish(&mut sub).await;
    assert!(cleared.payload.is_empty() && !cleared.retain);
    let mut sub2 = subscribed(&server, "s2", &[("home/#", QoS::AtLeastOnce)]).await;
    let got = recv_publish(&mut sub2).await;
    assert_eq!(text(&got), "50");
    sub2.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn invalid_filters_get_0x80_and_valid_ones_are_granted() {
    // [MQTT-3.8.4-5] one return code per filter, in order; 0x80 marks a failure.
    let server = TestServer::start().await;
    let (mut raw, _) = Raw::mqtt(server.mqtt, "f", true).await;
    raw.send(&subscribe(5, &[("ok/+", QoS::ExactlyOnce), ("bad#", QoS::AtMostOnce), ("a/#/b", QoS::AtLeastOnce), ("#", QoS::AtLeastOnce)]))
        .await;
    let Some(Packet::SubAck(ack)) = raw.recv().await else { panic!() };
    assert_eq!(ack.packet_id, pid(5));
    assert_eq!(ack.codes, [2, SUBACK_FAILURE, SUBACK_FAILURE, 1]);
}

#[tokio::test]
async fn wildcards_do_not_match_sys_topics() {
    // [MQTT-4.7.2-1] filters starting with a wildcard do not match topics starting with '$'.
    let server = TestServer::start_with(|a| a.sys_interval = Duration::from_millis(100)).await;
    let mut everything = subscribed(&server, "all", &[("#", QoS::AtMostOnce)]).await;
    let mut sys = subscribed(&server, "sys", &[("$SYS/broker/+", QoS::AtMostOnce)]).await;
    let got = recv_publish(&mut sys).await;
    assert!(got.topic.unwrap().as_str().starts_with("$SYS/broker/"));
    everything.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn sys_tree_reports_clients_and_messages() {
    let server = TestServer::start_with(|a| a.sys_interval = Duration::from_millis(100)).await;
    let mut sys = subscribed(&server, "sys", &[("$SYS/broker/clients/connected", QoS::AtMostOnce)]).await;
    // The retained value may predate this subscriber (it is refreshed every interval): the
    // first update after it connected counts it.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let got = recv_publish(&mut sys).await;
        let connected: u64 = text(&got).parse().unwrap();
        seen.push(connected);
        if connected >= 1 {
            return;
        }
    }
    panic!("$SYS/broker/clients/connected never counted the subscriber: {seen:?}");
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    // [MQTT-3.3.5-1] deliver respecting the maximum QoS of all matching subscriptions.
    let server = TestServer::start().await;
    let mut sub = subscribed(&server, "o", &[("o/+", QoS::AtMostOnce), ("o/#", QoS::AtLeastOnce), ("o/x", QoS::AtMostOnce)]).await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    publisher.send(&publish("o/x", "v", QoS::ExactlyOnce, Some(1), false)).await;
    let got = recv_publish(&mut sub).await;
    assert_eq!(got.qos, QoS::AtLeastOnce);
    sub.send(&Packet::PubAck(Ack::new(got.packet_id.unwrap()))).await;
    sub.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_is_always_acknowledged() {
    // [MQTT-3.10.4-4, -5] UNSUBACK even if no subscription matched.
    let server = TestServer::start().await;
    let mut sub = subscribed(&server, "u", &[("u/1", QoS::AtMostOnce)]).await;
    sub.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(3),
        filters: vec!["u/1".into(), "never/subscribed".into()],
        properties: Properties::default(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::UnsubAck(a)) if a.packet_id == pid(3)));
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    publisher.send(&publish("u/1", "x", QoS::AtMostOnce, None, false)).await;
    sub.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn malformed_packets_close_only_that_connection() {
    // [MQTT-4.8.0-1] malformed packets: close the connection. Everyone else carries on.
    let server = TestServer::start().await;
    let mut sub = subscribed(&server, "bystander", &[("b", QoS::AtMostOnce)]).await;
    for bytes in [
        &[0x30, 3, 0, 1, b'#'][..],             // wildcard in a topic name
        &[0x36, 5, 0, 1, b'a', 0, 1][..],       // QoS 3
        &[0x00, 0][..],                         // reserved packet type
        &[0x82, 2, 0, 1][..],                   // SUBSCRIBE with no filter
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 1][..], // remaining length of five bytes
    ] {
        let (mut bad, _) = Raw::mqtt(server.mqtt, "bad", true).await;
        bad.send_bytes(bytes).await;
        assert!(bad.expect_closed().await.is_empty(), "{bytes:?} must close the connection");
    }
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    publisher.send(&publish("b", "still here", QoS::AtMostOnce, None, false)).await;
    assert_eq!(text(&recv_publish(&mut sub).await), "still here");
}

#[tokio::test]
async fn oversized_packets_close_the_connection() {
    let server = TestServer::start_with(|a| a.max_packet_size = 1024).await;
    let (mut raw, _) = Raw::mqtt(server.mqtt, "big", true).await;
    raw.send(&publish("big", "x".repeat(2000), QoS::AtMostOnce, None, false)).await;
    assert!(raw.expect_closed().await.is_empty());
    let (mut ok, _) = Raw::mqtt(server.mqtt, "small", true).await;
    ok.send(&publish("big", "x".repeat(900), QoS::AtLeastOnce, Some(1), false)).await;
    assert!(matches!(ok.recv().await, Some(Packet::PubAck(_))));
}

#[tokio::test]
async fn a_stuck_subscriber_is_disconnected_and_stalls_nobody() {
    // Overflow policy: a client that never acknowledges fills its in-flight window, then its
    // queue; it is disconnected (never silently dropped), while the publisher and a healthy
    // subscriber carry on unaffected.
    let server = TestServer::start_with(|a| {
        a.max_inflight = 2;
        a.max_queued = 20;
    })
    .await;
    let mut stuck = subscribed(&server, "stuck", &[("s", QoS::AtLeastOnce)]).await;
    let mut healthy = subscribed(&server, "healthy", &[("s", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    for i in 1..=100u16 {
        publisher.send(&publish("s", i.to_string(), QoS::AtLeastOnce, Some(i), false)).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(a)) if a.packet_id == pid(i)));
        let got = recv_publish(&mut healthy).await;
        assert_eq!(text(&got), i.to_string());
        healthy.send(&Packet::PubAck(Ack::new(got.packet_id.unwrap()))).await;
    }
    let seen = stuck.expect_closed().await;
    assert_eq!(seen.len(), 2, "the stuck client got its in-flight window, then was closed");
    eventually("overflow counted", || server.broker.stats().overflow_disconnects == 1).await;
}

#[tokio::test]
async fn qos0_overflow_is_dropped_and_counted() {
    let server = TestServer::start_with(|a| a.max_queued_qos0 = 5).await;
    // A subscriber that never reads: its socket buffer fills, then its queue.
    let _deaf = subscribed(&server, "deaf", &[("flood", QoS::AtMostOnce)]).await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    let payload = "y".repeat(60_000);
    // 24 MB: more than loopback socket buffers hold, so the queue must overflow.
    for _ in 0..400 {
        publisher.send(&publish("flood", &payload, QoS::AtMostOnce, None, false)).await;
    }
    publisher.send(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp), "the publisher is never stalled");
    eventually("QoS 0 drops counted", || server.broker.stats().dropped_qos0 > 0).await;
}

#[tokio::test]
async fn messages_from_one_publisher_arrive_in_order() {
    // [MQTT-4.6.0-6] ordered topic: messages are delivered in the order they were published.
    let server = TestServer::start().await;
    let mut sub = subscribed(&server, "order", &[("seq", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "p", true).await;
    for i in 1..=50u16 {
        let qos = if i % 2 == 0 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
        publisher.send(&publish("seq", i.to_string(), qos, (qos != QoS::AtMostOnce).then_some(i), false)).await;
    }
    for i in 1..=50u16 {
        let got = recv_publish(&mut sub).await;
        assert_eq!(text(&got), i.to_string());
        if let Some(id) = got.packet_id {
            sub.send(&Packet::PubAck(Ack::new(id))).await;
        }
    }
}

#[tokio::test]
async fn shutdown_closes_every_session() {
    // Ctrl-C / SIGTERM path: stop accepting, close sessions, return.
    let server = TestServer::start().await;
    let (mut client, _) = Raw::mqtt(server.mqtt, "bye", true).await;
    let mqtt = server.mqtt;
    server.stop().await;
    assert!(client.expect_closed().await.is_empty());
    assert!(tokio::net::TcpStream::connect(mqtt).await.is_err(), "listener closed");
}
