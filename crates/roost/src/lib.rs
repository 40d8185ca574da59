//! Roost: a self-hosted IoT sensor hub. One binary: MQTT broker, durable ingest, dashboard.
//!
//! `app` wires the parts together; `broker` is the MQTT server; `cli` parses the command line.

// The OpenAPI document is one large `serde_json::json!`, past the default macro depth.
#![recursion_limit = "256"]

pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod broker;
pub mod broker_store;
pub mod cli;
pub mod cluster;
pub mod config_file;
pub mod ha_discovery;
pub mod health;
pub mod ingest;
pub mod lifecycle;
pub mod log_once;
pub mod model;
pub mod mqtt_client;
pub mod progress;
pub mod running;
pub mod settings;
pub mod sim;
pub mod store;
pub mod tls;
pub mod transfer;
pub mod upstream;
