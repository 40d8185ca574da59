//! Limits against abuse, each on a server configured with a small limit: failed logins per
//! address (MQTT and dashboard), connections per address, subscriptions per client, request
//! body size, and slow HTTP clients (slowloris).

use crate::support::{connect, eventually_async, Raw, TestServer};
use mqtt_codec::*;
use std::num::NonZeroU16;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn server_with_alice(adjust: impl FnOnce(&mut roost::cli::ServeArgs)) -> TestServer {
    let server = TestServer::start_with(|a| {
        a.allow_anonymous = false;
        adjust(a);
    })
    .await;
    crate::support::add_user(&server.store, "alice", "alice-secret", false).await;
    server
}

/// Boards behind one home router share an address: one with a wrong password must not lock
/// out the others. Failures count per (address, user name); past the limit that name's logins
/// are slowed down, never refused, and other names are not touched (the delays and the
/// spraying cap are checked on a paused clock in `auth::limiter`).
#[tokio::test]
async fn failed_logins_slow_that_name_down_and_never_lock_out_another() {
    let server = server_with_alice(|a| a.max_login_failures = 3).await;
    crate::support::add_user(&server.store, "bob", "bob-secret", false).await;
    for _ in 0..4 {
        let (_, ack) = Raw::login(server.mqtt, "guess", "alice", "guess").await;
        assert_eq!(ack.code, connect_return::BAD_USERNAME_OR_PASSWORD);
    }
    let (_, ack) = Raw::login(server.mqtt, "bob", "bob", "bob-secret").await;
    assert_eq!(ack.code, connect_return::ACCEPTED, "another user from the same address gets in");
    // alice's right password still gets in, after her delay (1 s, doubled once per failure
    // over the limit).
    let started = std::time::Instant::now();
    let (_, ack) = Raw::login(server.mqtt, "right", "alice", "alice-secret").await;
    assert_eq!(ack.code, connect_return::ACCEPTED);
    assert!(started.elapsed() >= Duration::from_secs(2), "slowed down: {:?}", started.elapsed());
    // The dashboard's login shares the count: wrong passwords from alice slow her there too,
    // and the right one is accepted.
    let login = |password: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{}/api/login", server.http))
            .json(&serde_json::json!({ "username": "alice", "password": password }))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(login("guess").await.unwrap().status(), 401);
    }
    let started = std::time::Instant::now();
    assert_eq!(login("alice-secret").await.unwrap().status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(1), "slowed down: {:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn connections_per_address_are_limited_and_freed_when_they_close() {
    let server = TestServer::start_with(|a| a.max_connections_per_ip = 2).await;
    let (first, ack) = Raw::mqtt(server.mqtt, "one", true).await;
    assert_eq!(ack.code, 0);
    let (_second, ack) = Raw::mqtt(server.mqtt, "two", true).await;
    assert_eq!(ack.code, 0);
    let mut third = Raw::connect(server.mqtt).await;
    third.send(&Packet::Connect(connect("three", true))).await;
    assert!(third.expect_closed().await.is_empty(), "the third connection from one address is closed at once");
    assert_eq!(server.broker.stats().connections_over_limit, 1);
    drop(first);
    let addr = server.mqtt;
    eventually_async("a closed connection frees its slot", || async move {
        let mut raw = Raw::connect(addr).await;
        raw.send(&Packet::Connect(connect("four", true))).await;
        matches!(raw.recv().await, Some(Packet::ConnAck(_)))
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_per_client_are_limited() {
    let server = TestServer::start_with(|a| a.max_subscriptions = 2).await;
    let (mut raw, _) = Raw::mqtt(server.mqtt, "subscriber", true).await;
    let filters = ["a/#", "b/#", "c/#", "a/#"];
    raw.send(&Packet::Subscribe(Subscribe {
        packet_id: NonZeroU16::new(1).unwrap(),
        filters: filters.iter().map(|f| (f.to_string(), SubscriptionOptions::qos(QoS::AtMostOnce))).collect(),
        properties: Properties::default(),
    }))
    .await;
    let Some(Packet::SubAck(ack)) = raw.recv().await else { panic!("no SUBACK") };
    // [MQTT-3.9.3-1] one return code per filter, in order; renewing a held filter is fine.
    assert_eq!(ack.codes, [0, 0, SUBACK_FAILURE, 0]);
    server.stop().await;
}

#[tokio::test]
async fn oversized_request_bodies_are_refused() {
    let server = server_with_alice(|_| {}).await;
    let body = format!(r#"{{"username":"alice","password":"{}"}}"#, "x".repeat(100_000));
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/login", server.http))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_headers_is_disconnected() {
    let server = TestServer::start().await;
    let mut slow = tokio::net::TcpStream::connect(server.http).await.unwrap();
    slow.write_all(b"GET /api/sensors HTTP/1.1\r\nHost: roost\r\n").await.unwrap();
    // No blank line ever follows. The server gives up (after its header timeout) and closes.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection was still open after a minute");
    let answer = String::from_utf8_lossy(&rest);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.stop().await;
}
