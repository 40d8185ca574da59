//! Home Assistant MQTT discovery (`--ha-discovery`): each sensor announced as a retained
//! `<prefix>/sensor/<unique_id>/config`, so it appears in Home Assistant without YAML; again
//! when Home Assistant says `online` on `<prefix>/status`; an empty retained config when the
//! sensor is deleted. Roost's own availability is the retained `roost/status`.
//!
//! A sensor whose readings arrive alone on its own topic (`iot/o/sensor/p/temperature`, a
//! number or `{"value": …}`) is announced with that topic as its state topic. One whose
//! readings arrive in a JSON object of several categories gets a normalized state topic,
//! `roost/state/<owner>/<place>/<category>`, where Roost publishes each committed value as a
//! plain number.

use crate::broker::{Broker, Message};
use crate::ingest::{Committed, TopicTemplate};
use crate::model::SensorKey;
use crate::store::{SensorSettings, Store};
use bytes::Bytes;
use mqtt_codec::{QoS, TopicFilter, TopicName};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Roost's availability topic: retained `online` while it runs, `offline` after a clean stop.
pub const AVAILABILITY_TOPIC: &str = "roost/status";
/// Where Roost republishes values that arrived inside a JSON object.
pub const STATE_ROOT: &str = "roost/state";
/// Reads a plain number or the `value` of `{"value": …, "ts": …}`, Roost's two single-sensor
/// payloads.
pub const VALUE_TEMPLATE: &str = "{{ value_json.value if value_json is mapping else value }}";

#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Home Assistant's discovery prefix (`homeassistant`).
    pub prefix: String,
    /// A sensor not heard from for this long shows as unavailable (`--stale-after`).
    pub expire_after: Duration,
    pub templates: Vec<TopicTemplate>,
    /// Category → unit (`--unit`), when the sensor has no unit of its own.
    pub units: HashMap<String, String>,
}

/// Where a sensor's state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateSource {
    /// Its own topic under the first template with `{category}`.
    OwnTopic,
    /// `roost/state/...`, published by Roost.
    Normalized,
}

/// `roost_<owner>_<place>_<category>_<hash>`: the levels in the characters Home Assistant
/// allows in an object id (`[a-zA-Z0-9_-]`, others become `_`), and a hash of the exact key,
/// since `_` may be in a level too (`living_room` / `living`, `room`). Stable across runs and
/// versions: FNV-1a of `owner/place/category`, not the standard library's hasher.
pub fn unique_id(sensor: &SensorKey) -> String {
    let raw = format!("{}/{}/{}", sensor.owner, sensor.place, sensor.category);
    let clean: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let mut hash: u32 = 0x811c_9dc5;
    for byte in raw.as_bytes() {
        hash = (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193);
    }
    format!("roost_{clean}_{hash:08x}")
}

/// Home Assistant's device class for a category and unit, if the unit is one it accepts for
/// that class (it refuses a sensor whose unit does not fit its class).
pub fn device_class(category: &str, unit: Option<&str>) -> Option<&'static str> {
    let (class, units): (&str, &[&str]) = match category.to_ascii_lowercase().as_str() {
        "temperature" | "temp" => ("temperature", &["°C", "°F", "K"]),
        "humidity" | "humi" => ("humidity", &["%"]),
        "illuminance" | "illuminate" | "light" | "lux" => ("illuminance", &["lx"]),
        "pressure" => ("pressure", &["Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"]),
        "co2" | "carbon_dioxide" => ("carbon_dioxide", &["ppm"]),
        "voltage" => ("voltage", &["V", "mV"]),
        "battery" => ("battery", &["%"]),
        _ => return None,
    };
    units.contains(&unit?).then_some(class)
}

impl DiscoveryConfig {
    fn config_topic(&self, sensor: &SensorKey) -> Option<TopicName> {
        TopicName::parse(&format!("{}/sensor/{}/config", self.prefix, unique_id(sensor))).ok()
    }

    fn state_topic(&self, sensor: &SensorKey, source: StateSource) -> Option<String> {
        match source {
            StateSource::OwnTopic => self.templates.iter().find_map(|t| t.topic(sensor)),
            StateSource::Normalized => Some(format!("{STATE_ROOT}/{}/{}/{}", sensor.owner, sensor.place, sensor.category)),
        }
    }

    /// The discovery config of `sensor` (named `name`, in `unit`), per Home Assistant's MQTT
    /// sensor documentation.
    fn payload(&self, sensor: &SensorKey, name: Option<&str>, unit: Option<&str>, source: StateSource) -> Option<Value> {
        let unit = unit.or_else(|| self.units.get(sensor.category.as_str()).map(String::as_str));
        let mut config = json!({
            "name": name.unwrap_or(&sensor.category),
            "unique_id": unique_id(sensor),
            "state_topic": self.state_topic(sensor, source)?,
            "state_class": "measurement",
            "expire_after": self.expire_after.as_secs().max(1),
            "availability": [{"topic": AVAILABILITY_TOPIC, "payload_available": "online", "payload_not_available": "offline"}],
            "device": {
                // `/` cannot be in a topic level: one board, one identifier.
                "identifiers": [format!("roost:{}/{}", sensor.owner, sensor.place)],
                "name": format!("{} {}", sensor.owner, sensor.place),
                "manufacturer": "Roost",
                "model": "MQTT sensor board",
            },
            "origin": {"name": "Roost", "sw_version": env!("CARGO_PKG_VERSION")},
        });
        if source == StateSource::OwnTopic {
            config["value_template"] = VALUE_TEMPLATE.into();
        }
        if let Some(unit) = unit {
            config["unit_of_measurement"] = unit.into();
        }
        if let Some(class) = device_class(&sensor.category, unit) {
            config["device_class"] = class.into();
        }
        Some(config)
    }
}

/// With discovery off: empties the retained configs an earlier run announced, under any prefix
/// (a `…/sensor/roost_…/config` whose payload names Roost as its origin), so that Home
/// Assistant removes their entities instead of bringing them back at each of its restarts.
/// Others' retained configs stay. Returns how many it withdrew.
pub fn withdraw_earlier_announcements(broker: &Broker) -> usize {
    let Ok(everything) = TopicFilter::parse("#") else { return 0 };
    let mut withdrawn = 0;
    for message in broker.retained_matching(&everything) {
        if announced_by_roost(message.topic.as_str(), &message.payload) {
            broker.publish(Message::new(message.topic.clone(), Bytes::new(), QoS::AtLeastOnce, true));
            withdrawn += 1;
        }
    }
    withdrawn
}

/// Whether a retained message is a sensor config Roost announced (see [`DiscoveryConfig::payload`]).
fn announced_by_roost(topic: &str, payload: &[u8]) -> bool {
    let mut levels = topic.rsplit('/');
    let (config, object_id, component) = (levels.next(), levels.next(), levels.next());
    if config != Some("config") || component != Some("sensor") || !object_id.is_some_and(|id| id.starts_with("roost_")) {
        return false;
    }
    serde_json::from_slice::<Value>(payload).is_ok_and(|v| v["origin"]["name"] == "Roost" && v["unique_id"].as_str() == object_id)
}

/// Which stored sensors [`Announcer::announce_stored`] announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    All,
    Missing,
}

struct Announcer {
    config: DiscoveryConfig,
    broker: Arc<Broker>,
    store: Arc<Store>,
    /// Every sensor announced, with where its state comes from and its name and unit.
    announced: HashMap<SensorKey, (StateSource, SensorSettings)>,
}

/// Announces sensors until `stop`.
pub async fn run(
    config: DiscoveryConfig,
    broker: Arc<Broker>,
    store: Arc<Store>,
    mut commits: broadcast::Receiver<Arc<Committed>>,
    mut deletions: broadcast::Receiver<SensorKey>,
    mut changes: broadcast::Receiver<SensorKey>,
    stop: CancellationToken,
) {
    let status_filter = TopicFilter::parse(&format!("{}/status", config.prefix));
    let mut birth = match status_filter {
        Ok(filter) => Some(broker.subscribe_internal(filter)),
        Err(e) => {
            tracing::warn!(prefix = %config.prefix, error = %e, "Home Assistant discovery: no birth messages (a bad prefix)");
            None
        }
    };
    let mut announcer = Announcer { config, broker, store, announced: HashMap::new() };
    announcer.publish(AVAILABILITY_TOPIC, Bytes::from_static(b"online"), true);
    announcer.announce_stored(Only::All).await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            committed = commits.recv() => match committed {
                Ok(batch) => announcer.on_committed(&batch),
                Err(broadcast::error::RecvError::Lagged(_)) => announcer.announce_stored(Only::Missing).await,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            changed = changes.recv() => match changed {
                Ok(sensor) => announcer.changed(&sensor).await,
                Err(broadcast::error::RecvError::Lagged(_)) => announcer.announce_stored(Only::All).await,
                Err(broadcast::error::RecvError::Closed) => {}
            },
            deleted = deletions.recv() => match deleted {
                Ok(sensor) => announcer.forget(&sensor),
                Err(broadcast::error::RecvError::Lagged(_)) => announcer.announce_stored(Only::All).await,
                Err(broadcast::error::RecvError::Closed) => {}
            },
            message = async { birth.as_mut()?.recv().await }, if birth.is_some() => match message {
                Some(message) if message.payload.as_ref() == b"online" => {
                    tracing::info!("Home Assistant is online: announcing every sensor again");
                    announcer.announce_stored(Only::All).await;
                }
                Some(_) => {}
                None => birth = None,
            },
        }
    }
    announcer.publish(AVAILABILITY_TOPIC, Bytes::from_static(b"offline"), true);
}

impl Announcer {
    fn publish(&self, topic: &str, payload: Bytes, retain: bool) {
        if let Ok(topic) = TopicName::parse(topic) {
            let qos = if retain { QoS::AtLeastOnce } else { QoS::AtMostOnce };
            self.broker.publish(Message::new(topic, payload, qos, retain));
        }
    }

    /// Announces the stored sensors (all: at start, when Home Assistant comes online; those not
    /// announced yet: after this task fell behind the feed), each with its state topic.
    async fn announce_stored(&mut self, only: Only) {
        let sensors = match self.store.sensors().await {
            Ok(sensors) => sensors,
            Err(e) => {
                tracing::warn!(error = %e, "Home Assistant discovery: could not list the sensors");
                return;
            }
        };
        let mut announced = 0;
        for sensor in &sensors {
            if only == Only::Missing && self.announced.contains_key(&sensor.key) {
                continue;
            }
            self.announce(&sensor.key, &sensor.settings, self.source_of(&sensor.key));
            announced += 1;
        }
        tracing::info!(sensors = announced, prefix = %self.config.prefix, "Home Assistant discovery: sensors announced");
    }

    /// The state topic a sensor was last announced with: this run's, else (after a restart) its
    /// retained config's.
    fn source_of(&self, sensor: &SensorKey) -> StateSource {
        self.announced.get(sensor).map_or_else(|| self.retained_source(sensor), |(source, _)| *source)
    }

    /// Where a sensor's state came from when it was last announced (before a restart): what its
    /// retained config says.
    fn retained_source(&self, sensor: &SensorKey) -> StateSource {
        let config = self.config.config_topic(sensor).and_then(|topic| self.broker.retained(&topic));
        let normalized = config.is_some_and(|m| {
            serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| v["state_topic"].as_str().is_some_and(|t| t.starts_with(STATE_ROOT)))
        });
        if normalized {
            StateSource::Normalized
        } else {
            StateSource::OwnTopic
        }
    }

    fn announce(&mut self, sensor: &SensorKey, settings: &SensorSettings, source: StateSource) {
        let Some(payload) = self.config.payload(sensor, settings.display_name.as_deref(), settings.unit.as_deref(), source) else {
            return;
        };
        if self.publish_config(sensor, Bytes::from(payload.to_string())) {
            self.announced.insert(sensor.clone(), (source, settings.clone()));
        }
    }

    /// The retained discovery config of `sensor` (empty: removed); false for a sensor whose
    /// config topic is not a topic.
    fn publish_config(&self, sensor: &SensorKey, payload: Bytes) -> bool {
        let Some(topic) = self.config.config_topic(sensor) else { return false };
        self.broker.publish(Message::new(topic, payload, QoS::AtLeastOnce, true));
        true
    }

    /// New sensors are announced; values that came in a JSON object are republished plain.
    fn on_committed(&mut self, batch: &Committed) {
        for (reading, &own) in batch.readings.iter().zip(&batch.on_own_topic) {
            let source = if own { StateSource::OwnTopic } else { StateSource::Normalized };
            let known = self.announced.get(&reading.sensor);
            if known.map(|(s, _)| *s) != Some(source) {
                // A new sensor, or one whose readings now come another way: its name and unit
                // stay what they were.
                let settings = known.map(|(_, settings)| settings.clone()).unwrap_or_default();
                self.announce(&reading.sensor, &settings, source);
            }
            if source == StateSource::Normalized {
                if let Some(topic) = self.config.state_topic(&reading.sensor, source) {
                    self.publish(&topic, Bytes::from(reading.value.to_string()), false);
                }
            }
        }
    }

    /// A sensor's name or unit changed: announced again.
    async fn changed(&mut self, sensor: &SensorKey) {
        match self.store.sensor(sensor).await {
            Ok(Some(row)) => self.announce(sensor, &row.settings, self.source_of(sensor)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, %sensor, "Home Assistant discovery: could not read a changed sensor"),
        }
    }

    /// A deleted sensor: its config is emptied, so Home Assistant removes the entity.
    fn forget(&mut self, sensor: &SensorKey) {
        self.announced.remove(sensor);
        self.publish_config(sensor, Bytes::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(o: &str, p: &str, c: &str) -> SensorKey {
        SensorKey { owner: o.into(), place: p.into(), category: c.into() }
    }

    #[test]
    fn only_roosts_own_configs_are_taken_for_its_announcements() {
        let sensor = key("yanjo", "den", "temperature");
        let id = unique_id(&sensor);
        let config =
            DiscoveryConfig { prefix: "ha".into(), expire_after: Duration::from_secs(600), templates: Vec::new(), units: HashMap::new() };
        let ours = config.payload(&sensor, None, None, StateSource::Normalized).unwrap().to_string();
        assert!(announced_by_roost(&format!("ha/sensor/{id}/config"), ours.as_bytes()));
        assert!(announced_by_roost(&format!("home/assistant/sensor/{id}/config"), ours.as_bytes()), "any prefix");
        assert!(!announced_by_roost(&format!("ha/binary_sensor/{id}/config"), ours.as_bytes()));
        assert!(!announced_by_roost("ha/sensor/roost_other_1/config", ours.as_bytes()), "the topic and the payload must agree");
        let someone_elses = ours.replace("\"Roost\"", "\"Zigbee2MQTT\"");
        assert!(!announced_by_roost(&format!("ha/sensor/{id}/config"), someone_elses.as_bytes()));
        assert!(!announced_by_roost(&format!("ha/sensor/{id}/config"), b""), "an empty config withdraws nothing more");
    }

    #[test]
    fn unique_ids_use_only_allowed_characters_and_stay_apart() {
        assert_eq!(unique_id(&key("demo", "livingroom", "temperature")), "roost_demo_livingroom_temperature_11fdc7d8");
        let odd = unique_id(&key("a.b", "x y", "t"));
        assert!(odd.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{odd}");
        assert_ne!(odd, unique_id(&key("a_b", "x_y", "t")), "a replaced character must not collide with an underscore");
        assert_ne!(unique_id(&key("demo", "living_room", "t")), unique_id(&key("demo_living", "room", "t")), "nor levels with `_`");
        assert_eq!(odd, unique_id(&key("a.b", "x y", "t")), "stable");
    }

    #[test]
    fn device_classes_only_with_units_home_assistant_accepts() {
        assert_eq!(device_class("temperature", Some("°C")), Some("temperature"));
        assert_eq!(device_class("humidity", Some("%")), Some("humidity"));
        assert_eq!(device_class("illuminate", Some("raw")), None, "a CdS cell's raw ADC value is not lux");
        assert_eq!(device_class("illuminate", Some("lx")), Some("illuminance"));
        assert_eq!(device_class("temperature", None), None);
        assert_eq!(device_class("soil", Some("%")), None);
    }
}
