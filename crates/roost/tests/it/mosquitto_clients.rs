//! Mosquitto's own command-line clients (Debian `mosquitto-clients`) against the broker.

use crate::support::{require_command, TestServer, WAIT};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn mosquitto_pub(server: &TestServer, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt.port().to_string()])
        .args(args)
        .status()
        .await
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub {args:?} failed");
}

#[tokio::test]
async fn mosquitto_pub_and_sub_at_every_qos() {
    require_command("mosquitto_sub");
    let server = TestServer::start().await;
    // A retained probe first: mosquitto_sub prints it once its subscription exists (retained
    // messages are sent on subscribing, MQTT-3.3.1-6), however long it takes to start.
    mosquitto_pub(&server, &["-t", "iot/yanjo/sensor/probe/ready", "-m", "1", "-r", "-q", "1"]).await;
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt.port().to_string()])
        .args(["-t", "iot/+/sensor/#", "-q", "2", "-v", "-C", "4", "-i", "mosq-sub"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub runs");
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let mut next_line = async || tokio::time::timeout(WAIT, lines.next_line()).await.expect("mosquitto_sub prints a line").unwrap();
    assert_eq!(next_line().await.as_deref(), Some("iot/yanjo/sensor/probe/ready 1"));
    let mut received = Vec::new();
    for qos in 0..3 {
        mosquitto_pub(&server, &["-t", &format!("iot/yanjo/sensor/livingroom/q{qos}"), "-m", "23.4", "-q", &qos.to_string()]).await;
        received.extend(next_line().await);
    }
    assert_eq!(
        received,
        ["iot/yanjo/sensor/livingroom/q0 23.4", "iot/yanjo/sensor/livingroom/q1 23.4", "iot/yanjo/sensor/livingroom/q2 23.4"]
    );
    assert!(sub.wait().await.unwrap().success());
}

#[tokio::test]
async fn mosquitto_sub_sees_retained_messages() {
    require_command("mosquitto_sub");
    let server = TestServer::start().await;
    mosquitto_pub(&server, &["-t", "iot/yanjo/sensor/bedroom/temperature", "-m", "21.0", "-r", "-q", "1"]).await;
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt.port().to_string()])
        .args(["-t", "iot/#", "-v", "-C", "1", "-W", "5", "-F", "%r %t %p"])
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 iot/yanjo/sensor/bedroom/temperature 21.0");
}
