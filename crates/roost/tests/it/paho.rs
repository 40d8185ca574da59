//! Python paho-mqtt (the client of the stack Roost replaces) against the broker.

use crate::support::{require_command, TestServer};
use tokio::process::Command;

const SCRIPT: &str = r#"
import sys, threading, paho.mqtt.client as mqtt
port = int(sys.argv[1])
got, subscribed = [], threading.Event()
done = threading.Event()
def on_message(c, u, m):
    got.append((m.topic, m.payload.decode(), m.qos))
    if len(got) == 3: done.set()
api = getattr(mqtt, "CallbackAPIVersion", None)
sub = mqtt.Client(api.VERSION2, client_id="paho-sub") if api else mqtt.Client(client_id="paho-sub")
sub.on_message = on_message
sub.on_subscribe = lambda *a: subscribed.set()
sub.connect("127.0.0.1", port)
sub.subscribe("iot/+/sensor/+/+", qos=2)
sub.loop_start()
assert subscribed.wait(10), "no SUBACK"
pub = mqtt.Client(api.VERSION2, client_id="paho-pub") if api else mqtt.Client(client_id="paho-pub")
pub.connect("127.0.0.1", port)
pub.loop_start()
for qos in (0, 1, 2):
    pub.publish(f"iot/yanjo/sensor/kitchen/humidity", f"4{qos}", qos=qos).wait_for_publish(10)
assert done.wait(10), f"only got {got}"
print(sorted(got))
"#;

#[tokio::test]
async fn paho_publishes_and_subscribes_at_every_qos() {
    require_command("python3");
    let server = TestServer::start().await;
    let out = Command::new("python3").args(["-c", SCRIPT, &server.mqtt.port().to_string()]).output().await.expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "paho script failed (pip install paho-mqtt, see .ci/run): {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[('iot/yanjo/sensor/kitchen/humidity', '40', 0), ('iot/yanjo/sensor/kitchen/humidity', '41', 1), ('iot/yanjo/sensor/kitchen/humidity', '42', 2)]"
    );
}
