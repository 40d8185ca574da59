//! rumqttc, an independent Rust client, against the broker: QoS 0/1/2 both ways, retained
//! messages, wills and persistent sessions.

use crate::support::{TestServer, WAIT};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use std::time::Duration;

fn options(server: &TestServer, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", server.mqtt.port());
    o.set_keep_alive(Duration::from_secs(5));
    o
}

/// Polls the event loop until `pick` returns something.
async fn next<T>(events: &mut EventLoop, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.poll().await.expect("event loop");
            if let Some(t) = pick(&event) {
                return t;
            }
        }
    })
    .await
    .expect("event in time")
}

fn incoming_publish(e: &Event) -> Option<rumqttc::Publish> {
    match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    }
}

fn suback(e: &Event) -> Option<()> {
    matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(())
}

/// Drives a publisher's event loop in the background, reporting its acknowledgements.
fn drive(mut events: EventLoop) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(e) = events.poll().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test]
async fn all_qos_levels_round_trip() {
    let server = TestServer::start().await;
    let (sub, mut sub_events) = AsyncClient::new(options(&server, "rumqttc-sub"), 100);
    sub.subscribe("iot/+/sensor/#", QoS::ExactlyOnce).await.unwrap();
    next(&mut sub_events, suback).await;
    let (publisher, pub_events) = AsyncClient::new(options(&server, "rumqttc-pub"), 100);
    let mut acks = drive(pub_events);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().enumerate() {
        publisher.publish(format!("iot/yanjo/sensor/livingroom/q{i}"), qos, false, format!("{i}.5")).await.unwrap();
        let got = next(&mut sub_events, incoming_publish).await;
        assert_eq!(got.topic, format!("iot/yanjo/sensor/livingroom/q{i}"));
        assert_eq!(got.qos, qos);
        assert_eq!(&got.payload[..], format!("{i}.5").as_bytes());
    }
    // The publisher saw its PUBACK and PUBCOMP.
    let mut seen = (false, false);
    while seen != (true, true) {
        match tokio::time::timeout(WAIT, acks.recv()).await.unwrap().unwrap() {
            Event::Incoming(Packet::PubAck(_)) => seen.0 = true,
            Event::Incoming(Packet::PubComp(_)) => seen.1 = true,
            _ => {}
        }
    }
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    let server = TestServer::start().await;
    let (publisher, pub_events) = AsyncClient::new(options(&server, "r-pub"), 10);
    let mut acks = drive(pub_events);
    publisher.publish("iot/yanjo/sensor/kitchen/humidity", QoS::AtLeastOnce, true, "41").await.unwrap();
    while !matches!(tokio::time::timeout(WAIT, acks.recv()).await.unwrap().unwrap(), Event::Incoming(Packet::PubAck(_))) {}
    let (sub, mut sub_events) = AsyncClient::new(options(&server, "r-sub"), 10);
    sub.subscribe("iot/yanjo/sensor/#", QoS::AtLeastOnce).await.unwrap();
    let got = next(&mut sub_events, incoming_publish).await;
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"41");
}

#[tokio::test]
async fn last_will_is_published_when_the_connection_drops() {
    let server = TestServer::start().await;
    let (sub, mut sub_events) = AsyncClient::new(options(&server, "will-watcher"), 10);
    sub.subscribe("devices/+/status", QoS::AtLeastOnce).await.unwrap();
    next(&mut sub_events, suback).await;
    let mut o = options(&server, "doomed");
    o.set_last_will(LastWill::new("devices/doomed/status", "offline", QoS::AtLeastOnce, false));
    let (_doomed, mut doomed_events) = AsyncClient::new(o, 10);
    next(&mut doomed_events, |e| matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())).await;
    drop(doomed_events); // the socket closes without DISCONNECT
    let will = next(&mut sub_events, incoming_publish).await;
    assert_eq!(will.topic, "devices/doomed/status");
    assert_eq!(&will.payload[..], b"offline");
}

#[tokio::test]
async fn persistent_session_receives_what_was_published_while_offline() {
    let server = TestServer::start().await;
    let mut o = options(&server, "sleeper");
    o.set_clean_session(false);
    {
        let (sub, mut events) = AsyncClient::new(o.clone(), 10);
        sub.subscribe("night/#", QoS::AtLeastOnce).await.unwrap();
        next(&mut events, suback).await;
        sub.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(2), async { while events.poll().await.is_ok() {} }).await;
    }
    let (publisher, pub_events) = AsyncClient::new(options(&server, "night-pub"), 10);
    let mut acks = drive(pub_events);
    for i in 0..5 {
        publisher.publish("night/reading", QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
    }
    let mut acked = 0;
    while acked < 5 {
        if let Event::Incoming(Packet::PubAck(_)) = tokio::time::timeout(WAIT, acks.recv()).await.unwrap().unwrap() {
            acked += 1;
        }
    }
    let (_sub, mut events) = AsyncClient::new(o, 10);
    let session_present = next(&mut events, |e| match e {
        Event::Incoming(Packet::ConnAck(c)) => Some(c.session_present),
        _ => None,
    })
    .await;
    assert!(session_present);
    for i in 0..5 {
        let got = next(&mut events, incoming_publish).await;
        assert_eq!(&got.payload[..], i.to_string().as_bytes());
    }
}
