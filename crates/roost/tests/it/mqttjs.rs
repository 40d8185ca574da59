//! MQTT.js, the client library the dashboard uses in the browser, under Node.js over WebSocket.

use crate::support::{require_command, TestServer};
use tokio::process::Command;

#[tokio::test]
async fn mqttjs_over_websocket_at_every_qos() {
    require_command("node");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    assert!(dir.join("node_modules/mqtt").exists(), "run `npm ci` in tests/js (.ci/run does)");
    let server = TestServer::start().await;
    let url = format!("ws://{}/mqtt", server.ws);
    let out = Command::new("node").arg("mqttjs-peer.mjs").arg(&url).current_dir(&dir).output().await.unwrap();
    assert!(out.status.success(), "MQTT.js peer failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut got: Vec<(String, String, u8)> = serde_json::from_slice(&out.stdout).unwrap();
    got.sort();
    let topic = "iot/yanjo/sensor/livingroom/illuminate".to_string();
    assert_eq!(got, [(topic.clone(), "000".into(), 0), (topic.clone(), "100".into(), 1), (topic, "200".into(), 2)]);
}
