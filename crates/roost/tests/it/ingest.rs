//! Durable ingest over the wire, on every database: acknowledged means committed, bad input is
//! quarantined, resends are not stored twice, a database outage holds publishers back.

use crate::databases::{Backend, TestDb};
use crate::proxy::Proxy;
use crate::support::{pid, publish_message, Raw, TestServer};
use mqtt_codec::*;
use roost::model::{SensorKey, TimestampMs};
use std::time::Duration;

/// A PUBLISH that is not retained.
fn publish(topic: &str, payload: &[u8], qos: QoS, id: Option<u16>) -> Publish {
    publish_message(topic, payload, qos, id, false)
}

fn key(owner: &str, place: &str, category: &str) -> SensorKey {
    SensorKey { owner: owner.into(), place: place.into(), category: category.into() }
}

async fn values_of(server: &TestServer, k: &SensorKey) -> Vec<f64> {
    server.store.readings(k, TimestampMs(0), TimestampMs(i64::MAX)).await.unwrap().into_iter().map(|(_, v)| v).collect()
}

async fn acknowledged_means_committed(backend: Backend) {
    // The durability contract: when PUBACK (QoS 1) or PUBREC (QoS 2) arrives, the reading is
    // already in the database.
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let (mut device, _) = Raw::mqtt(server.mqtt, "nodemcu", true).await;
    device.send(&Packet::Publish(publish("iot/yanjo/sensor/livingroom/illuminate", b"512", QoS::AtLeastOnce, Some(1)))).await;
    assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(1)))));
    assert_eq!(values_of(&server, &key("yanjo", "livingroom", "illuminate")).await, [512.0]);
    device.send(&Packet::Publish(publish("iot/yanjo/sensor/bedroom/temperature", b" 23.4 ", QoS::ExactlyOnce, Some(2)))).await;
    assert_eq!(device.recv().await, Some(Packet::PubRec(Ack::new(pid(2)))));
    assert_eq!(values_of(&server, &key("yanjo", "bedroom", "temperature")).await, [23.4]);
    // Resending the QoS 2 publish before PUBREL stores nothing new [MQTT-4.3.3-2].
    let mut again = publish("iot/yanjo/sensor/bedroom/temperature", b" 23.4 ", QoS::ExactlyOnce, Some(2));
    again.dup = true;
    device.send(&Packet::Publish(again)).await;
    assert_eq!(device.recv().await, Some(Packet::PubRec(Ack::new(pid(2)))));
    device.send(&Packet::PubRel(Ack::new(pid(2)))).await;
    assert_eq!(device.recv().await, Some(Packet::PubComp(Ack::new(pid(2)))));
    assert_eq!(values_of(&server, &key("yanjo", "bedroom", "temperature")).await, [23.4]);
    // The JSON forms of the contract.
    device
        .send(&Packet::Publish(publish(
            "iot/yanjo/sensor/kitchen",
            br#"{"humidity": 41, "temperature": 22.5, "ts": 1700000000000}"#,
            QoS::AtLeastOnce,
            Some(3),
        )))
        .await;
    assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(3)))));
    assert_eq!(values_of(&server, &key("yanjo", "kitchen", "humidity")).await, [41.0]);
    device
        .send(&Packet::Publish(publish(
            "iot/yanjo/sensor/kitchen/co2",
            br#"{"value": 612, "ts": "2023-11-14T22:13:20Z"}"#,
            QoS::AtLeastOnce,
            Some(4),
        )))
        .await;
    assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(4)))));
    let history = server.store.readings(&key("yanjo", "kitchen", "co2"), TimestampMs(0), TimestampMs(i64::MAX)).await.unwrap();
    assert_eq!(history, [(TimestampMs(1_700_000_000_000), 612.0)]);
}

async fn bad_input_is_quarantined_and_the_client_stays(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |a| a.max_payload = 64).await;
    let (mut device, _) = Raw::mqtt(server.mqtt, "flaky-board", true).await;
    let bad: [(&str, &[u8], &str); 7] = [
        ("iot/yanjo/sensor/livingroom/temperature", b"abc", "payload is not a number"),
        ("iot/yanjo/sensor/livingroom/temperature", b"nan", "value is not finite"),
        ("iot/yanjo/sensor/livingroom/temperature", b"", "empty payload"),
        ("iot/yanjo/sensor/livingroom/temperature", &[0xff, 0xfe, 0x00], "payload is not UTF-8"),
        ("iot/livingroom/temp", b"23.4", "topic matches no template"),
        ("iot/yanjo/sensor/livingroom/temperature", &[b'1'; 100], "payload too large"),
        ("iot/yanjo/sensor/livingroom", b"[1,2]", "JSON payload has the wrong shape"),
    ];
    for (i, (topic, payload, _)) in bad.iter().enumerate() {
        let id = i as u16 + 1;
        device.send(&Packet::Publish(publish(topic, payload, QoS::AtLeastOnce, Some(id)))).await;
        // Acknowledged only once the reject row is committed.
        assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(id)))));
        assert_eq!(server.store.recent_rejects(100).await.unwrap().len(), i + 1);
    }
    let rejects = server.store.recent_rejects(100).await.unwrap();
    let mut reasons: Vec<_> = rejects.iter().map(|r| r.reason.as_str()).collect();
    let mut expected: Vec<_> = bad.iter().map(|b| b.2).collect();
    reasons.sort_unstable();
    expected.sort_unstable();
    assert_eq!(reasons, expected);
    assert!(rejects.iter().all(|r| r.client_id == "flaky-board"));
    // Still connected, and good readings are stored as usual.
    device.send(&Packet::Publish(publish("iot/yanjo/sensor/livingroom/temperature", b"21", QoS::AtLeastOnce, Some(50)))).await;
    assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(50)))));
    assert_eq!(values_of(&server, &key("yanjo", "livingroom", "temperature")).await, [21.0]);
    assert_eq!(server.store.count_readings().await.unwrap(), 1);
}

async fn a_qos1_resend_after_reconnect_is_not_stored_twice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let topic = "iot/yanjo/sensor/bedroom/humidity";
    let (mut device, _) = Raw::mqtt(server.mqtt, "resender", false).await;
    device.send(&Packet::Publish(publish(topic, b"40", QoS::AtLeastOnce, Some(7)))).await;
    assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(7)))));
    drop(device); // as if the PUBACK was lost with the connection
    let broker = server.broker.clone();
    crate::support::eventually("the session is offline", || {
        broker.persistent_sessions().iter().any(|s| s.client_id == "resender" && !s.online)
    })
    .await;
    let (mut device, ack) = Raw::mqtt(server.mqtt, "resender", false).await;
    assert!(ack.session_present);
    // [MQTT-4.4.0-1] the client resends with DUP set.
    let mut resend = publish(topic, b"40", QoS::AtLeastOnce, Some(7));
    resend.dup = true;
    device.send(&Packet::Publish(resend)).await;
    assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(7)))));
    assert_eq!(values_of(&server, &key("yanjo", "bedroom", "humidity")).await, [40.0]);
    // The id may be reused for a new message (DUP clear): that one is stored.
    device.send(&Packet::Publish(publish(topic, b"40", QoS::AtLeastOnce, Some(7)))).await;
    assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(7)))));
    assert_eq!(values_of(&server, &key("yanjo", "bedroom", "humidity")).await, [40.0, 40.0]);
}

async fn readings_are_still_delivered_to_subscribers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let (mut sub, _) = Raw::mqtt(server.mqtt, "dashboard", true).await;
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        filters: vec![("iot/#".into(), SubscriptionOptions::qos(QoS::AtMostOnce))],
        properties: Properties::default(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let (mut device, _) = Raw::mqtt(server.mqtt, "board", true).await;
    device.send(&Packet::Publish(publish("iot/yanjo/sensor/kitchen/humidity", b"55", QoS::AtMostOnce, None))).await;
    device.send(&Packet::Publish(publish("iot/yanjo/sensor/kitchen/humidity", b"oops", QoS::AtMostOnce, None))).await;
    for expected in ["55", "oops"] {
        assert!(matches!(sub.recv().await, Some(Packet::Publish(p)) if p.payload == expected.as_bytes()));
    }
    // QoS 0 readings are stored too (nothing to acknowledge, so poll).
    crate::support::eventually_async("QoS 0 reading stored", || async { server.store.count_readings().await.unwrap() == 1 }).await;
}

/// A database outage (every connection cut, new ones refused): Roost stops acknowledging and
/// holds the publish; once the database is back it commits and acknowledges, nothing lost.
async fn a_database_outage_holds_acks_until_it_is_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_, upstream) = db.server.clone().expect("a server database");
    let proxy = Proxy::start(upstream.parse().unwrap()).await;
    let server = TestServer::start_on(db.via(proxy.addr), |_| {}).await;
    let (mut device, _) = Raw::mqtt(server.mqtt, "patient", true).await;
    let topic = "iot/yanjo/sensor/garage/temperature";
    device.send(&Packet::Publish(publish(topic, b"1", QoS::AtLeastOnce, Some(1)))).await;
    assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(1)))));
    proxy.cut();
    for id in 2..=4u16 {
        device.send(&Packet::Publish(publish(topic, id.to_string().as_bytes(), QoS::AtLeastOnce, Some(id)))).await;
    }
    device.expect_silence(Duration::from_secs(2)).await;
    proxy.restore();
    for id in 2..=4u16 {
        assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(id)))), "acknowledged in order once committed");
    }
    let direct = roost::store::Store::connect(&db.url).await.unwrap();
    let stored = direct.readings(&key("yanjo", "garage", "temperature"), TimestampMs(0), TimestampMs(i64::MAX)).await.unwrap();
    assert_eq!(stored.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), [1.0, 2.0, 3.0, 4.0]);
}

/// Backpressure: with the database away and the ingest queue full, the publisher's session stops
/// reading. A later publish on a topic that is not a reading is therefore not routed either, until
/// the database is back; then everything flows, in order, nothing lost.
async fn a_full_ingest_queue_stops_reading_from_the_publisher(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_, upstream) = db.server.clone().expect("a server database");
    let proxy = Proxy::start(upstream.parse().unwrap()).await;
    let server = TestServer::start_on(db.via(proxy.addr), |a| a.ingest_queue = 1).await;
    let (mut watcher, _) = Raw::mqtt(server.mqtt, "watcher", true).await;
    watcher
        .send(&Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: vec![("chat/#".into(), SubscriptionOptions::qos(QoS::AtMostOnce))],
            properties: Properties::default(),
        }))
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));
    let (mut device, _) = Raw::mqtt(server.mqtt, "pusher", true).await;
    proxy.cut();
    let topic = "iot/yanjo/sensor/attic/temperature";
    // The writer holds one batch per concurrent write (each a single reading here), the queue
    // one more, and the session waits to queue the last: it reads nothing after it.
    let readings = db.url.dialect().unwrap().concurrent_writes() as u16 + 2;
    for id in 1..=readings {
        device.send(&Packet::Publish(publish(topic, id.to_string().as_bytes(), QoS::AtLeastOnce, Some(id)))).await;
    }
    device.send(&Packet::Publish(publish("chat/hello", b"behind the readings", QoS::AtMostOnce, None))).await;
    watcher.expect_silence(Duration::from_secs(2)).await;
    device.expect_silence(Duration::from_millis(100)).await;
    proxy.restore();
    for id in 1..=readings {
        assert_eq!(device.recv().await, Some(Packet::PubAck(Ack::new(pid(id)))));
    }
    assert!(matches!(watcher.recv().await, Some(Packet::Publish(p)) if &p.payload[..] == b"behind the readings"));
    let direct = roost::store::Store::connect(&db.url).await.unwrap();
    let stored = direct.readings(&key("yanjo", "attic", "temperature"), TimestampMs(0), TimestampMs(i64::MAX)).await.unwrap();
    // Each once (two batches written at once may commit in either order, within one millisecond).
    let mut values: Vec<f64> = stored.into_iter().map(|(_, v)| v).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, (1..=readings).map(f64::from).collect::<Vec<_>>());
}

crate::on_every_database!(
    acknowledged_means_committed,
    bad_input_is_quarantined_and_the_client_stays,
    a_qos1_resend_after_reconnect_is_not_stored_twice,
    readings_are_still_delivered_to_subscribers,
);

mod outage {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_database_outage_holds_acks_until_it_is_back(crate::databases::Backend::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb() {
        super::a_database_outage_holds_acks_until_it_is_back(crate::databases::Backend::MariaDb).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_full_queue() {
        super::a_full_ingest_queue_stops_reading_from_the_publisher(crate::databases::Backend::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb_full_queue() {
        super::a_full_ingest_queue_stops_reading_from_the_publisher(crate::databases::Backend::MariaDb).await
    }
}
