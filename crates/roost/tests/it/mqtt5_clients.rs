//! Real MQTT 5.0 clients against the broker: Mosquitto's command-line clients (`-V mqttv5`,
//! properties with `-D`), Python paho-mqtt 2 (`protocol=MQTTv5`) and rumqttc's v5 client.
//! MQTT.js speaking 5.0 in Chromium is in `mqttjs`.

use crate::support::{require_command, TestServer, WAIT};
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PubAckReason, PublishProperties, RetainForwardRule, SubscribeProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::process::Command;

#[tokio::test]
async fn mosquitto_clients_speak_5_0_with_properties() {
    // A retained message published with user and content-type properties keeps them, and a
    // subscriber with a subscription identifier gets it back [MQTT-3.3.2-17, MQTT-3.3.4-3].
    require_command("mosquitto_pub");
    let server = TestServer::start().await;
    let port = server.mqtt.port().to_string();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1", "-r"])
        .args(["-t", "iot/yanjo/sensor/kitchen/temperature", "-m", "23.4"])
        .args(["-D", "publish", "user-property", "unit", "C", "-D", "publish", "content-type", "text/plain"])
        .status()
        .await
        .expect("mosquitto_pub runs");
    assert!(status.success());
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1", "-C", "1", "-W", "5"])
        .args(["-t", "iot/#", "-D", "subscribe", "subscription-identifier", "42", "-F", "%t %p %P %C %S %r"])
        .output()
        .await
        .expect("mosquitto_sub runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "iot/yanjo/sensor/kitchen/temperature 23.4 unit:C text/plain 42 1");
}

const PAHO_V5: &str = r#"
import sys, threading, time, paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions
port = int(sys.argv[1])
got, acks, subscribed = [], {}, threading.Event()
def on_message(c, u, m):
    got.append((m.topic, m.payload.decode(), getattr(m.properties, "UserProperty", None)))
def on_publish(c, u, mid, reason_code, properties):
    acks[mid] = (reason_code.value, getattr(properties, "ReasonString", None))
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho5", protocol=mqtt.MQTTv5)
c.on_message, c.on_publish = on_message, on_publish
c.on_subscribe = lambda *a: subscribed.set()
c.connect("127.0.0.1", port, clean_start=True)
c.loop_start()
# No local: our own publishes must not come back; another client's do.
c.subscribe("iot/+/sensor/#", options=SubscribeOptions(qos=1, noLocal=True))
assert subscribed.wait(10), "no SUBACK"
props = Properties(PacketTypes.PUBLISH)
props.UserProperty = [("unit", "C"), ("board", "nodemcu")]
ok = c.publish("iot/yanjo/sensor/kitchen/temperature", "23.4", qos=1, properties=props)
bad = c.publish("iot/yanjo/sensor/kitchen/temperature", "warm", qos=1)
ok.wait_for_publish(10); bad.wait_for_publish(10)
other = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho5-other", protocol=mqtt.MQTTv5)
other.connect("127.0.0.1", port)
other.loop_start()
other.publish("iot/yanjo/sensor/kitchen/humidity", "41", qos=1, properties=props).wait_for_publish(10)
deadline = time.time() + 10
while not got and time.time() < deadline: time.sleep(0.05)
time.sleep(0.3)
print(acks[ok.mid][0], acks[bad.mid][0], "rejects" in (acks[bad.mid][1] or ""))
print(got)
"#;

#[tokio::test]
async fn paho_speaks_5_0_reason_codes_no_local_and_user_properties() {
    require_command("python3");
    let server = TestServer::start().await;
    let out = Command::new("python3").args(["-c", PAHO_V5, &server.mqtt.port().to_string()]).output().await.expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "paho script failed (pip install paho-mqtt, see .ci/run): {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // A reading: 0x00; a payload that is no reading: 0x99 (153) with a reason string.
    assert_eq!(lines[0], "0 153 True");
    assert_eq!(lines[1], "[('iot/yanjo/sensor/kitchen/humidity', '41', [('unit', 'C'), ('board', 'nodemcu')])]");
}

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

#[tokio::test]
async fn rumqttc_v5_gets_properties_subscription_ids_and_reason_codes() {
    let server = TestServer::start().await;
    let (sub, mut sub_events) = AsyncClient::new(MqttOptions::new("rumqttc5-sub", "127.0.0.1", server.mqtt.port()), 100);
    let filter = Filter {
        path: "iot/+/sensor/#".into(),
        qos: QoS::AtLeastOnce,
        nolocal: false,
        preserve_retain: true,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    };
    sub.subscribe_many_with_properties([filter], SubscribeProperties { id: Some(9), user_properties: Vec::new() }).await.unwrap();
    next(&mut sub_events, |e| matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(())).await;

    let (publisher, mut pub_events) = AsyncClient::new(MqttOptions::new("rumqttc5-pub", "127.0.0.1", server.mqtt.port()), 100);
    let properties = PublishProperties {
        user_properties: vec![("unit".into(), "C".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    publisher.publish_with_properties("iot/yanjo/sensor/livingroom/temperature", QoS::AtLeastOnce, true, "21.5", properties).await.unwrap();
    let reason = next(&mut pub_events, |e| match e {
        Event::Incoming(Packet::PubAck(ack)) => Some(ack.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::Success);
    publisher.publish("iot/yanjo/sensor/livingroom/temperature", QoS::AtLeastOnce, false, "n/a").await.unwrap();
    let reason = next(&mut pub_events, |e| match e {
        Event::Incoming(Packet::PubAck(ack)) => Some(ack.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::PayloadFormatInvalid, "0x99: kept as a reject, not a reading");

    let got = next(&mut sub_events, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
        _ => None,
    })
    .await;
    let props = got.properties.expect("5.0 properties");
    assert_eq!((got.payload.as_ref(), got.retain), (&b"21.5"[..], true), "retain as published");
    assert_eq!(props.user_properties, [("unit".to_string(), "C".to_string())]);
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.subscription_identifiers, [9]);
}
