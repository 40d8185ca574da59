//! Integration tests: the broker on port 0, driven over the wire by real clients (rumqttc,
//! mosquitto_pub/sub, Python paho-mqtt, a WebSocket client) and by raw bytes. Each test cites
//! the normative statement of MQTT 3.1.1 or 5.0 it checks.

mod alerts;
mod api;
mod broker_state;
mod cli;
mod conformance;
mod conformance_v5;
mod crash;
mod dashboard;
mod databases;
mod faults;
mod home_assistant;
mod ingest;
mod lifecycle;
mod limits;
mod mosquitto_clients;
mod mqtt5_clients;
mod mqttjs;
mod packaging;
mod paho;
mod proxy;
mod rumqttc_clients;
mod scale_out;
mod security;
mod simulator;
mod storage;
mod support;
mod tls;
mod websocket;
