//! Home Assistant MQTT discovery (`--ha-discovery`): the simulator's boards announced as
//! retained configs, read back with Mosquitto's client and checked field by field against Home
//! Assistant's documented MQTT sensor schema (https://www.home-assistant.io/integrations/sensor.mqtt/,
//! https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery, and the schema in
//! `homeassistant/components/mqtt/sensor.py`); announced again on Home Assistant's birth message;
//! removed (an empty retained config) when a sensor is deleted.

use crate::alerts::watch;
use crate::support::{require_command, roost_command, TestServer, WAIT};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::process::Command;
use tokio::time::Instant;

/// The retained messages under `filter`, `count` of them, read by `mosquitto_sub`.
async fn retained(server: &TestServer, filter: &str, count: usize) -> BTreeMap<String, String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt.port().to_string(), "-t", filter, "-v", "-W", "10"])
        .args(["-C", &count.to_string(), "--retained-only"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().map(|l| l.split_once(' ').map(|(t, p)| (t.to_owned(), p.to_owned())).unwrap_or((l.to_owned(), String::new()))).collect()
}

/// Keys of Home Assistant's MQTT sensor schema (and the entity schema it extends) that Roost
/// sends; anything else would be ignored by Home Assistant (`extra=vol.REMOVE_EXTRA`), so a
/// typo would go unnoticed there: it fails here.
const DOCUMENTED_KEYS: [&str; 12] = [
    "name",
    "unique_id",
    "state_topic",
    "value_template",
    "device_class",
    "unit_of_measurement",
    "state_class",
    "expire_after",
    "availability",
    "device",
    "origin",
    "qos",
];

/// One discovery config checked against the documented schema; returns its device's identifiers.
fn check_config(topic: &str, config: &Value, place: &str, category: &str) -> Value {
    let object = config.as_object().unwrap_or_else(|| panic!("{topic}: the payload must be a JSON dictionary"));
    for key in object.keys() {
        assert!(DOCUMENTED_KEYS.contains(&key.as_str()), "{topic}: `{key}` is not in the MQTT sensor schema");
    }
    // `<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`, object id in [a-zA-Z0-9_-],
    // "best practice: set <object_id> to unique_id" (MQTT discovery docs).
    let unique_id = config["unique_id"].as_str().expect("unique_id: a string");
    assert_eq!(topic, format!("homeassistant/sensor/{unique_id}/config"));
    assert!(unique_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{unique_id}");
    // state_topic: required; the board publishes a plain number on its own topic.
    assert_eq!(config["state_topic"], format!("iot/yanjo/sensor/{place}/{category}"), "{topic}");
    assert!(config["value_template"].as_str().unwrap().starts_with("{{"), "value_template: a template");
    assert!(config["name"].is_string(), "name: a string (or null)");
    // state_class: one of measurement, total, total_increasing (sensor/const.py).
    assert_eq!(config["state_class"], "measurement");
    // expire_after: cv.positive_int, seconds: --stale-after (15 min here).
    assert_eq!(config["expire_after"], 900);
    // A device class only with a unit Home Assistant accepts for it (DEVICE_CLASS_UNITS):
    // temperature °C/°F/K, humidity %; a CdS cell's raw reading has none.
    match category {
        "temperature" => assert_eq!((&config["device_class"], &config["unit_of_measurement"]), (&"temperature".into(), &"°C".into())),
        "humidity" => assert_eq!((&config["device_class"], &config["unit_of_measurement"]), (&"humidity".into(), &"%".into())),
        "illuminate" => {
            assert!(config.get("device_class").is_none(), "raw light levels are not lux");
            assert_eq!(config["unit_of_measurement"], "raw");
        }
        other => panic!("unexpected category {other}"),
    }
    // availability: a list of {topic, payload_available, payload_not_available}, Roost's own.
    let availability = config["availability"].as_array().expect("availability: a list");
    assert_eq!(availability.len(), 1);
    assert_eq!(availability[0]["topic"], "roost/status");
    assert_eq!((&availability[0]["payload_available"], &availability[0]["payload_not_available"]), (&"online".into(), &"offline".into()));
    // device: identifiers (or connections) required; name, manufacturer, model.
    let device = &config["device"];
    let identifiers = device["identifiers"].as_array().expect("device.identifiers: a list");
    assert!(!identifiers.is_empty() && identifiers.iter().all(Value::is_string));
    assert_eq!(device["name"], format!("yanjo {place}"));
    assert_eq!(device["manufacturer"], "Roost");
    assert!(device["model"].is_string());
    // origin: `name` required when given.
    assert_eq!(config["origin"]["name"], "Roost");
    device["identifiers"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_boards_appear_in_home_assistant() {
    require_command("mosquitto_sub");
    let server = TestServer::start_with(|args| {
        args.ha_discovery = true;
        args.stale_after = Duration::from_secs(900);
    })
    .await;
    let out = roost_command("warn")
        .args(["simulate", "--broker", &format!("mqtt://{}", server.mqtt), "--devices", "2", "--interval", "0.05"])
        .args(["--count", "30", "--seed", "7", "--owner", "yanjo"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Announced from the commit feed, a moment after the last acknowledgement.
    let all_configs = mqtt_codec::TopicFilter::parse("homeassistant/sensor/+/config").unwrap();
    let deadline = Instant::now() + WAIT;
    while server.broker.retained_matching(&all_configs).len() < 6 {
        assert!(Instant::now() < deadline, "configs: {}", server.broker.retained_matching(&all_configs).len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(retained(&server, "roost/status", 1).await.get("roost/status").map(String::as_str), Some("online"));
    let configs = retained(&server, "homeassistant/sensor/+/config", 6).await;
    assert_eq!(configs.len(), 6, "2 boards × 3 sensors: {configs:?}");
    let sensors = server.store.sensors().await.unwrap();
    let mut devices: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sensor in &sensors {
        let topic = format!("homeassistant/sensor/{}/config", roost::ha_discovery::unique_id(&sensor.key));
        let config: Value = serde_json::from_str(configs.get(&topic).unwrap_or_else(|| panic!("no config for {}", sensor.key))).unwrap();
        let identifiers = check_config(&topic, &config, &sensor.key.place, &sensor.key.category);
        devices.entry(sensor.key.place.to_string()).or_default().insert(identifiers.to_string());
    }
    assert_eq!(devices.len(), 2);
    assert!(devices.values().all(|ids| ids.len() == 1), "one device per board: {devices:?}");

    // A board sending a JSON object of categories: a normalized state topic, plain numbers.
    let (_states, states) = watch(server.mqtt, "roost/state/#").await;
    let publish = |topic: &'static str, payload: &'static str| {
        let port = server.mqtt.port().to_string();
        async move {
            let status = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic, "-m", payload])
                .status()
                .await
                .unwrap();
            assert!(status.success());
        }
    };
    publish("iot/yanjo/sensor/attic", r#"{"temperature": 21.5, "humidity": 40}"#).await;
    let attic = roost::model::SensorKey::new("yanjo", "attic", "temperature").unwrap();
    let attic_topic = format!("homeassistant/sensor/{}/config", roost::ha_discovery::unique_id(&attic));
    let attic_config = mqtt_codec::TopicName::parse(&attic_topic).unwrap();
    let deadline = Instant::now() + WAIT;
    while server.broker.retained(&attic_config).is_none_or(|m| !String::from_utf8_lossy(&m.payload).contains("roost/state/")) {
        assert!(Instant::now() < deadline, "the attic's config with its normalized state topic");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config: Value = serde_json::from_str(&retained(&server, &attic_topic, 1).await[&attic_topic]).unwrap();
    assert_eq!(config["state_topic"], "roost/state/yanjo/attic/temperature");
    assert!(config.get("value_template").is_none(), "the normalized topic carries a plain number");
    let deadline = Instant::now() + WAIT;
    while !states.lock().unwrap().iter().any(|(_, t, v)| t == "roost/state/yanjo/attic/temperature" && *v == 21.5) {
        assert!(Instant::now() < deadline, "no normalized state: {:?}", states.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Home Assistant restarts and says so: every sensor is announced again.
    let (_configs, announced) = watch(server.mqtt, "homeassistant/sensor/+/config").await;
    // The 8 retained configs come first, on subscribing.
    let deadline = Instant::now() + WAIT;
    while announced.lock().unwrap().len() < 8 {
        assert!(Instant::now() < deadline, "the retained configs: {}", announced.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = announced.lock().unwrap().len();
    assert_eq!(before, 8);
    publish("homeassistant/status", "online").await;
    let deadline = Instant::now() + WAIT;
    while announced.lock().unwrap().len() < before + 8 {
        assert!(Instant::now() < deadline, "announced again: {} of 8", announced.lock().unwrap().len() - before);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = announced.lock().unwrap().iter().rev().find(|(_, t, _)| *t == attic_topic).map(|(_, _, v)| v.clone()).unwrap();
    assert_eq!(again["state_topic"], "roost/state/yanjo/attic/temperature", "announced again with the state topic it had");

    // Renamed on the dashboard: announced again with its new name and unit.
    let http = reqwest::Client::new();
    let response = http
        .patch(format!("http://{}/api/sensors/yanjo/attic/temperature", server.http))
        .json(&serde_json::json!({ "display_name": "Attic", "unit": "°F" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + WAIT;
    while !announced.lock().unwrap().iter().any(|(_, t, v)| *t == attic_topic && v["name"] == "Attic") {
        assert!(Instant::now() < deadline, "not announced again after the rename");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let renamed = announced.lock().unwrap().iter().rev().find(|(_, t, _)| *t == attic_topic).map(|(_, _, v)| v.clone()).unwrap();
    assert_eq!((&renamed["unit_of_measurement"], &renamed["device_class"]), (&"°F".into(), &"temperature".into()));
    assert_eq!(renamed["state_topic"], "roost/state/yanjo/attic/temperature");

    // A deleted sensor: its config is emptied, which removes the entity in Home Assistant.
    let response = http.delete(format!("http://{}/api/sensors/yanjo/attic/temperature", server.http)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + WAIT;
    while !announced.lock().unwrap().iter().any(|(_, t, v)| *t == attic_topic && v.is_null()) {
        assert!(Instant::now() < deadline, "no empty config for the deleted sensor");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let topic = mqtt_codec::TopicName::parse(&attic_topic).unwrap();
    assert!(server.broker.retained(&topic).is_none(), "no retained config left for it");
    server.stop().await;
}

/// Turned off (a restart without `--ha-discovery`), discovery withdraws what the earlier run
/// announced: an empty retained config removes the entity in Home Assistant, where a config
/// left behind would bring it back at every restart of Home Assistant. A config announced by
/// another program stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_discovery_withdraws_what_an_earlier_run_announced() {
    let dir = tempfile::tempdir().unwrap();
    let url = roost::store::DatabaseUrl::new(format!("sqlite://{}", dir.path().join("roost.db").display()));
    let server = TestServer::start_on(url.clone(), |args| args.ha_discovery = true).await;
    require_command("mosquitto_pub");
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt.port().to_string(), "-q", "1", "-t", "iot/yanjo/sensor/den/temperature", "-m", "21.5"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let den = roost::model::SensorKey::new("yanjo", "den", "temperature").unwrap();
    let den_config =
        mqtt_codec::TopicName::parse(&format!("homeassistant/sensor/{}/config", roost::ha_discovery::unique_id(&den))).unwrap();
    crate::support::eventually("the den's config", || server.broker.retained(&den_config).is_some()).await;
    let others = mqtt_codec::TopicName::parse("homeassistant/sensor/zigbee_lamp_power/config").unwrap();
    let others_payload = br#"{"unique_id":"zigbee_lamp_power","state_topic":"zigbee2mqtt/lamp","origin":{"name":"Zigbee2MQTT"}}"#;
    server.broker.publish(roost::broker::Message::new(
        others.clone(),
        bytes::Bytes::from_static(others_payload),
        mqtt_codec::QoS::AtLeastOnce,
        true,
    ));
    crate::support::eventually("the other config", || server.broker.retained(&others).is_some()).await;
    server.stop().await;

    let server = TestServer::start_on(url, |args| args.ha_discovery = false).await;
    crate::support::eventually("the den's config withdrawn", || server.broker.retained(&den_config).is_none()).await;
    assert_eq!(server.broker.retained(&others).map(|m| m.payload.clone()), Some(bytes::Bytes::from_static(others_payload)));
    server.stop().await;
}
