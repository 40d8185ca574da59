//! The HTTP API over the wire, on every database: sensors, readings raw and downsampled, CSV,
//! rejects, stats, health, metrics, OpenAPI, and MQTT over WebSocket on the HTTP port.

use crate::databases::{Backend, TestDb};
use crate::support::{Raw, TestServer};
use bytes::Bytes;
use mqtt_codec::*;
use serde_json::Value;
use std::num::NonZeroU16;

const BASE: i64 = 1_700_000_000_000;

async fn publish_qos1(device: &mut Raw, id: u16, topic: &str, payload: String) {
    device
        .send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: Some(TopicName::parse(topic).unwrap()),
            packet_id: NonZeroU16::new(id),
            payload: Bytes::from(payload),
            properties: Properties::default(),
        }))
        .await;
    assert!(matches!(device.recv().await, Some(Packet::PubAck(_))));
}

async fn get(server: &TestServer, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", server.http)).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn get_json(server: &TestServer, path: &str) -> (u16, Value) {
    let (status, body) = get(server, path).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

async fn api_serves_what_was_stored(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let (mut device, _) = Raw::mqtt(server.mqtt, "api-board", true).await;
    let topic = "iot/yanjo/sensor/livingroom/temperature";
    for i in 0..100u16 {
        publish_qos1(&mut device, i + 1, topic, format!(r#"{{"value": {i}, "ts": {}}}"#, BASE + i64::from(i) * 1000)).await;
    }
    publish_qos1(&mut device, 200, topic, "<img src=x onerror=alert(1)>".into()).await;

    let (status, sensors) = get_json(&server, "/api/sensors").await;
    assert_eq!(status, 200);
    assert_eq!(sensors.as_array().unwrap().len(), 1);
    assert_eq!(sensors[0]["owner"], "yanjo");
    assert_eq!(sensors[0]["last_value"], 99.0);
    assert_eq!(sensors[0]["last_seen_ms"], BASE + 99_000);
    assert_eq!(sensors[0]["last_seen"], "2023-11-14T22:14:59Z");
    let (status, error) = get_json(&server, "/api/sensors/yanjo/%FF/temperature").await;
    assert_eq!(status, 400, "a sensor's name that is not UTF-8: a JSON error like the others");
    assert!(error["error"].as_str().unwrap().contains("UTF-8"), "{error}");

    let range = format!("from={BASE}&to={}", BASE + 100_000);
    let (status, raw) = get_json(&server, &format!("/api/sensors/yanjo/livingroom/temperature/readings?{range}")).await;
    assert_eq!(status, 200);
    let readings = raw["readings"].as_array().unwrap();
    assert_eq!(readings.len(), 100);
    assert_eq!(readings[0], serde_json::json!([BASE, 0.0]));
    assert_eq!(readings[99], serde_json::json!([BASE + 99_000, 99.0]));

    let (status, bucketed) = get_json(&server, &format!("/api/sensors/yanjo/livingroom/temperature/readings?{range}&buckets=10")).await;
    assert_eq!(status, 200);
    assert_eq!(bucketed["bucket_ms"], 10_000);
    let buckets = bucketed["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 10);
    assert_eq!(buckets[0], serde_json::json!({ "start": BASE, "min": 0.0, "avg": 4.5, "max": 9.0, "count": 10 }));
    assert_eq!(buckets[9]["max"], 99.0);

    // RFC 3339 works as well as epoch milliseconds.
    let (status, csv) =
        get(&server, "/api/sensors/yanjo/livingroom/temperature/readings.csv?from=2023-11-14T22:13:20Z&to=2023-11-14T22:15:00Z").await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 101);
    assert_eq!(lines[0], "ts_ms,time_utc,value");
    assert_eq!(lines[1], format!("{BASE},2023-11-14T22:13:20Z,0"));

    let (status, rejects) = get_json(&server, "/api/rejects").await;
    assert_eq!(status, 200);
    assert_eq!(rejects[0]["reason"], "payload is not a number");
    assert_eq!(rejects[0]["payload"], "<img src=x onerror=alert(1)>", "payloads come back as JSON text");
    assert_eq!(rejects[0]["client_id"], "api-board");

    let (status, stats) = get_json(&server, "/api/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["database"]["readings"], 100);
    assert_eq!(stats["ingest"]["readings_committed"], 100);

    let (status, health) = get_json(&server, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, metrics) = get(&server, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("\nroost_readings_committed_total 100\n"), "{metrics}");
    assert!(metrics.contains("# TYPE roost_clients_connected gauge"));
}

async fn bad_parameters_get_400_and_unknown_things_404(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let (mut device, _) = Raw::mqtt(server.mqtt, "b", true).await;
    publish_qos1(&mut device, 1, "iot/o/sensor/p/c", "1".into()).await;
    for (path, message) in [
        ("/api/sensors/o/p/c/readings?from=yesterday", "`from` must be epoch milliseconds or an RFC 3339 time, not \"yesterday\""),
        ("/api/sensors/o/p/c/readings?from=2000&to=1000", "`from` must be before `to`"),
        ("/api/sensors/o/p/c/readings?buckets=0", "`buckets` must be a whole number from 1 to 10000, not \"0\""),
        ("/api/sensors/o/p/c/readings?buckets=many", "`buckets` must be a whole number from 1 to 10000, not \"many\""),
        ("/api/rejects?limit=5000", "`limit` must be a whole number from 1 to 1000, not \"5000\""),
    ] {
        let (status, body) = get_json(&server, path).await;
        assert_eq!((status, body["error"].as_str().unwrap()), (400, message), "{path}");
    }
    let (status, body) = get_json(&server, "/api/sensors/o/p/nothing/readings").await;
    assert_eq!((status, body["error"].as_str().unwrap()), (404, "no sensor o/p/nothing"));
    let (status, _) = get_json(&server, "/no/such/page").await;
    assert_eq!(status, 404);
    // A method an address does not take: 405 with a JSON error, and `Allow` says what it takes.
    let response = reqwest::Client::new().get(format!("http://{}/api/login", server.http)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers().get("allow").and_then(|v| v.to_str().ok()), Some("POST"));
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("does not take this method"), "{body}");
}

crate::on_every_database!(api_serves_what_was_stored, bad_parameters_get_400_and_unknown_things_404);

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let server = TestServer::start().await;
    let (status, doc) = get_json(&server, "/api/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for path in [
        "/api/login",
        "/api/logout",
        "/api/me",
        "/api/config",
        "/api/sensors",
        "/api/sensors/{owner}/{place}/{category}",
        "/api/sensors/{owner}/{place}/{category}/readings",
        "/api/sensors/{owner}/{place}/{category}/readings.csv",
        "/api/rejects",
        "/api/alerts",
        "/api/alerts/events",
        "/api/alerts/rules",
        "/api/alerts/rules/{id}",
        "/api/alerts/rules/{id}/silence",
        "/api/alerts/rules/{id}/sensors/{owner}/{place}/{category}/acknowledge",
        "/api/stats",
        "/healthz",
        "/metrics",
    ] {
        assert!(paths.contains(&path), "{path} missing from the OpenAPI document");
    }
}

#[tokio::test]
async fn mqtt_over_websocket_is_served_on_the_http_port_too() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start().await;
    let mut request = format!("ws://{}/mqtt", server.http).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "mqtt");
    let mut out = bytes::BytesMut::new();
    encode(&Packet::Connect(crate::support::connect("console", true)), ProtocolVersion::V311, &mut out).unwrap();
    ws.send(Message::Binary(out.freeze())).await.unwrap();
    let Some(Ok(Message::Binary(frame))) = ws.next().await else { panic!("no CONNACK frame") };
    let mut buf = bytes::BytesMut::from(&frame[..]);
    assert!(matches!(decode(&mut buf, ProtocolVersion::V311, 1024).unwrap(), Some(Packet::ConnAck(a)) if a.code == 0));
    // A plain GET is told what this URL is for.
    let (status, _) = get(&server, "/mqtt").await;
    assert_eq!(status, 400);
}
