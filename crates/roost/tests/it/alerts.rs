//! Alerts on SQLite, PostgreSQL and MariaDB alike, over the wire: rules from the config file
//! fire after their hold time, resolve only past their clear level, go stale for a silent
//! board (also one that never came back after a restart), keep their state through SIGKILL,
//! and notify a webhook that fails its first attempts. Rules over the API keep to the sensors
//! their owner may see.

use crate::crash::spawn_roost_ready;
use crate::databases::{Backend, TestDb};
use crate::support::{add_user, api_call, dashboard_login, require_command, TestServer, WAIT};
use roost::store::Store;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Every message a subscriber received: when, topic, payload (JSON, or `null` when empty).
pub type Seen = Arc<Mutex<Vec<(Instant, String, Value)>>>;

/// A rumqttc subscriber to `filter` on `addr`, collecting what arrives.
pub async fn watch(addr: SocketAddr, filter: &str) -> (AsyncClient, Seen) {
    let mut options = MqttOptions::new(format!("watch-{}", rand_suffix()), addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 100);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let seen: Seen = Arc::default();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let value = if p.payload.is_empty() { Value::Null } else { serde_json::from_slice(&p.payload).unwrap_or(Value::Null) };
                    sink.lock().unwrap().push((Instant::now(), p.topic.clone(), value));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(WAIT, subscribed).await.expect("subscribed in time").unwrap();
    (client, seen)
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}

/// The first message on `topic` after `since` whose JSON has `"state": state`: when, and the JSON.
async fn notice(seen: &Seen, topic: &str, state: &str, since: Instant, limit: Duration) -> (Instant, Value) {
    let deadline = Instant::now() + limit;
    loop {
        let found = seen.lock().unwrap().iter().find(|(at, t, v)| *at >= since && t == topic && v["state"] == state).cloned();
        if let Some((at, _, value)) = found {
            return (at, value);
        }
        assert!(Instant::now() < deadline, "no {state} on {topic}; seen: {:?}", seen.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One QoS 1 reading, sent with Mosquitto's client (it exits once PUBACK came: committed).
async fn publish(addr: SocketAddr, topic: &str, value: &str) {
    publish_as(addr, topic, value, &[]).await
}

async fn publish_as(addr: SocketAddr, topic: &str, value: &str, login: &[&str]) {
    let status = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-q", "1", "-t", topic, "-m", value])
        .args(login)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "mosquitto_pub {topic} {value}");
}

/// A webhook receiver that answers 500 to its first `failures` requests, then 200; the bodies
/// of every request, in order, with whether it was answered 200.
async fn webhook_receiver(failures: usize) -> (SocketAddr, Arc<Mutex<Vec<(bool, Value)>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests: Arc<Mutex<Vec<(bool, Value)>>> = Arc::default();
    let log = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let body = loop {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                let Some(end) = text.find("\r\n\r\n") else { continue };
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    assert!(text.starts_with("POST /hook HTTP/1.1"), "{text}");
                    assert!(text.to_ascii_lowercase().contains("content-type: application/json"), "{text}");
                    break Some(serde_json::from_slice::<Value>(&buf[end + 4..end + 4 + length]).unwrap());
                }
            };
            let Some(body) = body else { continue };
            let ok = log.lock().unwrap().len() >= failures;
            log.lock().unwrap().push((ok, body));
            let status = if ok { "200 OK" } else { "500 Internal Server Error" };
            let _ = stream.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes()).await;
        }
    });
    (addr, requests)
}

const HOT: &str = "roost/alerts/admin/greenhouse-hot/yan/greenhouse/temperature";
const HOT_KIM: &str = "roost/alerts/admin/greenhouse-hot/kim/greenhouse/temperature";
const HOT_SUMMARY: &str = "roost/alerts/admin/greenhouse-hot";
const QUIET_SHED: &str = "roost/alerts/admin/shed-quiet/yan/shed/temperature";
const QUIET_SHED_HUMIDITY: &str = "roost/alerts/admin/shed-quiet/yan/shed/humidity";

/// The whole life of two rules from a config file, through a SIGKILL.
async fn rules_fire_hold_resolve_go_stale_and_survive_sigkill(backend: Backend) {
    require_command("mosquitto_pub");
    let db = TestDb::new(backend).await;
    let (hook, hook_requests) = webhook_receiver(2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roost.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[alert]]
name = "greenhouse-hot"
topic = "iot/+/sensor/greenhouse/temperature"
above = 30.0
clear = 29.0
for = "3s"
severity = "critical"
webhook = "http://{hook}/hook"

[[alert]]
name = "shed-quiet"
topic = "iot/+/sensor/shed/#"
stale = "2s"
"#
        ),
    )
    .unwrap();
    let flags = ["--config", config.to_str().unwrap()];
    // Readings committed before the engine runs count only by the last one per sensor: wait.
    let (mut roost, addr) = spawn_roost_ready(&db.url, &flags, "alerts: evaluating").await;
    let (_watcher, seen) = watch(addr, "roost/alerts/#").await;

    // The shed's board reports once and falls silent: stale 2 s after its reading.
    let start = Instant::now();
    publish(addr, "iot/yan/sensor/shed/temperature", "10").await;
    // Above the threshold: pending, then firing once it has held for 3 s.
    let hot_from = Instant::now();
    publish(addr, "iot/yan/sensor/greenhouse/temperature", "31").await;
    publish(addr, "iot/yan/sensor/greenhouse/temperature", "31.5").await;
    let (fired_at, fired) = notice(&seen, HOT, "firing", start, WAIT).await;
    assert!(fired_at - hot_from >= Duration::from_secs(3), "fired after {:?}, before its hold time", fired_at - hot_from);
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["rule"], "greenhouse-hot");
    assert_eq!(fired["sensor"], json!({ "owner": "yan", "place": "greenhouse", "category": "temperature" }));
    assert_eq!(fired["value"], 31.0, "the value that started it");
    let (_, summary) = notice(&seen, HOT_SUMMARY, "firing", start, WAIT).await;
    assert_eq!(summary["firing"], 1);
    let (_, stale) = notice(&seen, QUIET_SHED, "firing", start, WAIT).await;
    assert_eq!((stale["severity"].as_str(), &stale["value"]), (Some("warning"), &Value::Null));

    // The admin's rule watches every owner's greenhouse: each sensor has its own notice.
    publish(addr, "iot/kim/sensor/greenhouse/temperature", "40").await;
    let (_, kims) = notice(&seen, HOT_KIM, "firing", start, WAIT).await;
    assert_eq!(kims["sensor"]["owner"], "kim");
    let (_, summary) = notice(&seen, HOT_SUMMARY, "firing", hot_from + Duration::from_secs(3), WAIT).await;
    publish(addr, "iot/kim/sensor/greenhouse/temperature", "20").await;
    notice(&seen, HOT_KIM, "resolved", start, WAIT).await;
    assert!(summary["firing"].as_u64().unwrap() >= 1);

    // Hysteresis: below the threshold but above `clear` keeps firing; `clear` resolves.
    let dip = Instant::now();
    publish(addr, "iot/yan/sensor/greenhouse/temperature", "29.5").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !seen.lock().unwrap().iter().any(|(at, t, v)| *at >= dip && t == HOT && v["state"] == "resolved"),
        "29.5 is above clear = 29: still firing"
    );
    publish(addr, "iot/yan/sensor/greenhouse/temperature", "29").await;
    let (_, resolved) = notice(&seen, HOT, "resolved", dip, WAIT).await;
    assert_eq!(resolved["value"], 29.0);
    notice(&seen, HOT_SUMMARY, "resolved", dip, WAIT).await;

    // The webhook failed twice (500) and was retried with backoff until it took the notice.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hook_requests.lock().unwrap().iter().any(|(ok, body)| *ok && body["state"] == "firing" && body["rule"] == "greenhouse-hot") {
        assert!(Instant::now() < deadline, "webhook never delivered: {:?}", hook_requests.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let requests = hook_requests.lock().unwrap();
        assert!(!requests[0].0 && !requests[1].0, "the first two attempts failed");
        assert_eq!(requests[0].1, requests[2].1, "the same notice was retried: {requests:?}");
    }

    // Pending at the moment of a SIGKILL; another shed sensor reports once just before it.
    publish(addr, "iot/yan/sensor/shed/humidity", "50").await;
    let pending_from = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    publish(addr, "iot/yan/sensor/greenhouse/temperature", "35").await;
    roost.start_kill().unwrap();
    roost.wait().await.unwrap();

    // Readings committed before the engine runs count only by the last one per sensor: wait.
    let (mut roost, addr) = spawn_roost_ready(&db.url, &flags, "alerts: evaluating").await;
    let restarted = Instant::now();
    let (_watcher, seen) = watch(addr, "roost/alerts/#").await;
    // The hold time ran from the reading, across the crash.
    let (_, fired) = notice(&seen, HOT, "firing", restarted, WAIT).await;
    assert_eq!(fired["value"], 35.0);
    assert!(
        fired["since"].as_i64().unwrap() >= pending_from + 3000,
        "fired at {} before its hold time from {pending_from}",
        fired["since"]
    );
    // The board that never came back goes stale after the restart, from its last reading.
    notice(&seen, QUIET_SHED_HUMIDITY, "firing", restarted, WAIT).await;
    // The shed's temperature still fires: its retained notice (and state) survived.
    notice(&seen, QUIET_SHED, "firing", restarted, WAIT).await;

    // History: each state change once, in order (the crash repeated nothing).
    let store = Store::open(&db.url).await.unwrap();
    let events = store.alert_events(None, 100).await.unwrap();
    let of = |events: &[roost::model::AlertEvent], category: &str, rule: &str| -> Vec<String> {
        events.iter().rev().filter(|e| e.sensor.category == category && e.rule_name == rule).map(|e| e.state.clone()).collect()
    };
    let yan = |events: &[roost::model::AlertEvent], category: &str, rule: &str| -> Vec<String> {
        events
            .iter()
            .rev()
            .filter(|e| e.sensor.owner == "yan" && e.sensor.category == category && e.rule_name == rule)
            .map(|e| e.state.clone())
            .collect()
    };
    assert_eq!(yan(&events, "temperature", "greenhouse-hot"), ["firing", "resolved", "firing"]);
    assert_eq!(of(&events, "temperature", "greenhouse-hot").len(), 5, "and kim's firing and resolved");
    assert_eq!(of(&events, "temperature", "shed-quiet"), ["firing"], "a firing state restored is not fired again");
    assert_eq!(of(&events, "humidity", "shed-quiet"), ["firing"]);
    let states = store.alert_states().await.unwrap();
    assert_eq!(states.len(), 3, "{states:?}");
    roost.start_kill().unwrap();
    roost.wait().await.unwrap();

    // Between two starts the config file changes one rule and drops the other: their firing
    // alerts are resolved (history, webhook, notices), as a change over the API resolves them.
    // They used to be dropped without a word (found by a new user's trial).
    std::fs::write(
        &config,
        format!(
            "[[alert]]\nname = \"greenhouse-hot\"\ntopic = \"iot/+/sensor/greenhouse/temperature\"\nabove = 50.0\nwebhook = \"http://{hook}/hook\"\n"
        ),
    )
    .unwrap();
    let (mut roost, addr) = spawn_roost_ready(&db.url, &flags, "alerts: evaluating").await;
    let events = store.alert_events(None, 100).await.unwrap();
    assert_eq!(yan(&events, "temperature", "greenhouse-hot"), ["firing", "resolved", "firing", "resolved"], "changed");
    assert_eq!(of(&events, "temperature", "shed-quiet"), ["firing", "resolved"], "removed");
    assert_eq!(of(&events, "humidity", "shed-quiet"), ["firing", "resolved"], "removed");
    assert!(events.iter().filter(|e| e.state == "resolved").take(3).all(|e| e.value.is_none()), "{events:?}");
    assert!(store.alert_states().await.unwrap().is_empty());
    let (_watcher, seen) = watch(addr, "roost/alerts/#").await;
    // The changed rule's summary says resolved; its sensors' notices start over (cleared).
    let (_, summary) = notice(&seen, HOT_SUMMARY, "resolved", restarted, WAIT).await;
    assert_eq!(summary["value"], Value::Null);
    assert!(!seen.lock().unwrap().iter().any(|(_, t, v)| t == HOT && v["state"] == "firing"), "{:?}", seen.lock().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let resolved_hook = || {
        hook_requests
            .lock()
            .unwrap()
            .iter()
            .any(|(ok, b)| *ok && b["state"] == "resolved" && b["sensor"]["owner"] == "yan" && b["value"].is_null())
    };
    while !resolved_hook() {
        assert!(Instant::now() < deadline, "no webhook for the resolved alert: {:?}", hook_requests.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.close().await;
    roost.start_kill().unwrap();
    roost.wait().await.unwrap();
}

/// Rules through the API: a user's own over their own sensors only; admins any; rules of the
/// config file read-only; acknowledging, silencing and the history; deleting the sensor.
async fn rules_over_the_api_keep_to_their_owners_sensors(backend: Backend) {
    require_command("mosquitto_pub");
    let db = TestDb::new(backend).await;
    let config_rule =
        roost::alerts::rule::RuleSpec { name: "everything-hot".into(), topic: "iot/#".into(), above: Some(100.0), ..Default::default() }
            .check("admin", true)
            .unwrap();
    let server = TestServer::start_on(db.url.clone(), |args| {
        args.allow_anonymous = false;
        args.alerts = vec![config_rule];
    })
    .await;
    add_user(&server.store, "alice", "alice-secret-1", false).await;
    add_user(&server.store, "bob", "bob-secret-22", false).await;
    add_user(&server.store, "root", "root-secret-333", true).await;
    let http = reqwest::Client::new();
    let alice = dashboard_login(&http, &server, "alice", "alice-secret-1").await;
    let bob = dashboard_login(&http, &server, "bob", "bob-secret-22").await;
    let root = dashboard_login(&http, &server, "root", "root-secret-333").await;
    let call =
        |method: reqwest::Method, path: &str, cookie: &str, body: Option<Value>| api_call(&http, &server, method, path, cookie, body);
    use reqwest::Method;

    let mine = json!({ "name": "cellar-cold", "topic": "iot/alice/sensor/cellar/temperature", "below": 5.0, "clear": 6.0 });
    let (status, rule) = call(Method::POST, "/api/alerts/rules", &alice, Some(mine.clone())).await;
    assert_eq!(status, 201, "{rule}");
    assert_eq!((rule["owner"].as_str(), rule["from_config"].as_bool()), (Some("alice"), Some(false)));
    let (status, body) = call(Method::POST, "/api/alerts/rules", &alice, Some(mine)).await;
    assert_eq!(status, 409, "a second rule of the same name: {body}");
    for (why, spec) in [
        ("every owner's sensors", json!({ "name": "spy", "topic": "iot/+/sensor/#", "above": 1.0 })),
        ("bob's sensors", json!({ "name": "spy", "topic": "iot/bob/sensor/+/temperature", "above": 1.0 })),
        ("a rule in bob's name", json!({ "name": "spy", "topic": "iot/alice/#", "above": 1.0, "owner": "bob" })),
    ] {
        let (status, body) = call(Method::POST, "/api/alerts/rules", &alice, Some(spec)).await;
        assert_eq!(status, 403, "alice may not make a rule over {why}: {body}");
    }
    for hook in ["http://127.0.0.1:9/x", "http://localhost:9/x", "http://169.254.169.254/latest"] {
        let spec = json!({ "name": "ssrf", "topic": "iot/alice/#", "above": 1.0, "webhook": hook });
        let (status, body) = call(Method::POST, "/api/alerts/rules", &alice, Some(spec)).await;
        assert_eq!(status, 400, "{hook}: {body}");
        assert!(body["error"].as_str().unwrap().contains("may not call this machine"), "{body}");
    }
    // The engine judges a webhook by the rule's owner, not by who made the rule.
    let for_alice = json!({ "name": "ssrf", "topic": "iot/alice/#", "above": 1.0, "owner": "alice", "webhook": "http://127.0.0.1:9/x" });
    let (status, body) = call(Method::POST, "/api/alerts/rules", &root, Some(for_alice)).await;
    assert_eq!(status, 400, "an admin making alice's rule: {body}");
    let own = json!({ "name": "local-hook", "topic": "iot/#", "above": 1e9, "webhook": "http://127.0.0.1:9/x" });
    let (status, body) = call(Method::POST, "/api/alerts/rules", &root, Some(own)).await;
    assert_eq!(status, 201, "an admin's own rule may call this machine: {body}");
    let id = body["id"].as_i64().unwrap();
    let deleted = http.delete(format!("http://{}/api/alerts/rules/{id}", server.http)).header("cookie", &root).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, body) = call(Method::POST, "/api/alerts/rules", &alice, Some(json!({ "name": "x", "topic": "iot/alice/#" }))).await;
    assert_eq!(status, 400, "no condition: {body}");
    assert!(body["error"].as_str().unwrap().contains("exactly one"), "{body}");
    let (status, _) = call(
        Method::POST,
        "/api/alerts/rules",
        &root,
        Some(json!({ "name": "all-hot", "topic": "iot/+/sensor/+/temperature", "above": 40.0 })),
    )
    .await;
    assert_eq!(status, 201, "admins may watch every sensor");

    let names =
        |rules: &Value| -> Vec<String> { rules.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect() };
    let (_, rules) = call(Method::GET, "/api/alerts/rules", &alice, None).await;
    assert_eq!(names(&rules), ["cellar-cold"]);
    let (_, rules) = call(Method::GET, "/api/alerts/rules", &bob, None).await;
    assert_eq!(names(&rules), Vec::<String>::new(), "bob sees no one else's rules");
    let (_, rules) = call(Method::GET, "/api/alerts/rules", &root, None).await;
    assert_eq!(names(&rules), ["everything-hot", "cellar-cold", "all-hot"], "by owner (admin, alice, root), then name");
    let config_id = rules[0]["id"].as_i64().unwrap();
    let (status, _) = call(Method::DELETE, &format!("/api/alerts/rules/{config_id}"), &root, None).await;
    assert_eq!(status, 409, "a config file's rule is changed there");
    let alice_rule = rules[1]["id"].as_i64().unwrap();
    let (status, _) = call(Method::DELETE, &format!("/api/alerts/rules/{alice_rule}"), &bob, None).await;
    assert_eq!(status, 404, "another user's rule is not there for bob");

    // Alice's cellar gets cold: her rule fires at once (no hold time).
    publish_as(server.mqtt, "iot/alice/sensor/cellar/temperature", "3", &["-u", "alice", "-P", "alice-secret-1"]).await;
    let mut active = Value::Null;
    let deadline = Instant::now() + WAIT;
    while active.as_array().is_none_or(|a| a.is_empty()) {
        assert!(Instant::now() < deadline, "the cellar alert never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
        active = call(Method::GET, "/api/alerts", &alice, None).await.1;
    }
    assert_eq!(active[0]["rule"], "cellar-cold");
    assert_eq!(active[0]["state"], "firing");
    let (_, bobs) = call(Method::GET, "/api/alerts", &bob, None).await;
    assert_eq!(bobs, json!([]), "bob does not see alice's alerts");
    let ack = format!("/api/alerts/rules/{alice_rule}/sensors/alice/cellar/temperature/acknowledge");
    let (status, _) = call(Method::POST, &ack, &bob, None).await;
    assert_eq!(status, 404, "bob cannot acknowledge alice's alert");
    let response = http.post(format!("http://{}{ack}", server.http)).header("cookie", &alice).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let (_, active) = call(Method::GET, "/api/alerts", &alice, None).await;
    assert_eq!(active[0]["acknowledged_by"], "alice");
    let (status, rule) = call(Method::POST, &format!("/api/alerts/rules/{alice_rule}/silence"), &alice, Some(json!({ "for": "1h" }))).await;
    assert_eq!(status, 200);
    assert!(rule["silenced_until"].as_i64().unwrap() > roost::model::TimestampMs::now().0);
    let (_, events) = call(Method::GET, "/api/alerts/events", &alice, None).await;
    let states: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["acknowledged", "firing"], "newest first");
    let (_, events) = call(Method::GET, "/api/alerts/events", &bob, None).await;
    assert_eq!(events, json!([]));

    // Deleting the sensor ends its alerts: no state, and its retained notice is cleared.
    // Changing a rule (not only silencing it) starts its states over: the cellar fires again,
    // now as critical, and the database and the engine agree on it.
    // Sent back as GET shows it (with its read-only fields), as a script would.
    let (_, rules) = call(Method::GET, "/api/alerts/rules", &alice, None).await;
    let mut changed = rules[0].clone();
    changed["severity"] = "critical".into();
    let (status, _) = call(Method::PUT, &format!("/api/alerts/rules/{alice_rule}"), &alice, Some(changed)).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, active) = call(Method::GET, "/api/alerts", &alice, None).await;
        // A new alert: not acknowledged (the engine deletes the old state, then fires anew).
        if active[0]["severity"] == "critical" && active[0]["state"] == "firing" && active[0]["acknowledged_by"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "not fired again after the change: {active}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (_, events) = call(Method::GET, "/api/alerts/events", &alice, None).await;
    assert_eq!(events[0]["state"], "firing", "fired again: {events}");
    assert_eq!(events[0]["severity"], "critical");

    let notice = mqtt_codec::TopicName::parse("roost/alerts/alice/cellar-cold/alice/cellar/temperature").unwrap();
    let deadline = Instant::now() + WAIT;
    while server.broker.retained(&notice).is_none_or(|m| !String::from_utf8_lossy(&m.payload).contains("firing")) {
        assert!(Instant::now() < deadline, "the firing notice is retained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = call(Method::DELETE, "/api/sensors/alice/cellar/temperature", &alice, None).await;
    assert_eq!(status, 200);
    let (_, active) = call(Method::GET, "/api/alerts", &alice, None).await;
    assert_eq!(active, json!([]));
    let deadline = Instant::now() + WAIT;
    while server.broker.retained(&notice).is_some() {
        assert!(Instant::now() < deadline, "the deleted sensor's retained notice stays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// A rule made while sensors report, on a server that had none (the engine then keeps no
/// sensor's time): it catches up from the database, so the reading from before it fires it, and
/// the readings after it are evaluated as they are committed.
async fn a_rule_made_later_sees_the_readings_from_before_it(backend: Backend) {
    require_command("mosquitto_pub");
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let topic = "iot/yanjo/sensor/attic/temperature";
    publish(server.mqtt, topic, "45").await;
    let attic = roost::model::SensorKey::new("yanjo", "attic", "temperature").unwrap();
    crate::support::eventually_async("the reading is committed", || async {
        server.store.sensor(&attic).await.unwrap().is_some_and(|s| s.last_value == Some(45.0))
    })
    .await;
    let http = reqwest::Client::new();
    let rule = json!({ "name": "attic-hot", "topic": topic, "above": 40.0 });
    let (status, body) = api_call(&http, &server, reqwest::Method::POST, "/api/alerts/rules", "", Some(rule)).await;
    assert_eq!(status, 201, "{body}");
    let states = || async {
        let events = server.store.alert_events(None, 100).await.unwrap();
        events.iter().rev().filter(|e| e.rule_name == "attic-hot").map(|e| e.state.clone()).collect::<Vec<_>>()
    };
    crate::support::eventually_async("the reading from before the rule fires it", || async { states().await == ["firing"] }).await;
    publish(server.mqtt, topic, "20").await;
    crate::support::eventually_async("a reading after it resolves it", || async { states().await == ["firing", "resolved"] }).await;
    server.stop().await;
}

crate::on_every_database!(
    rules_fire_hold_resolve_go_stale_and_survive_sigkill,
    rules_over_the_api_keep_to_their_owners_sensors,
    a_rule_made_later_sees_the_readings_from_before_it
);
