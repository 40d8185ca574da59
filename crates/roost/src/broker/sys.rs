//! The `$SYS/broker/...` tree, like Mosquitto's: retained messages refreshed periodically.

use super::{Broker, Message};
use bytes::Bytes;
use mqtt_codec::{QoS, TopicName};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Publishes the `$SYS` tree every `interval` until `shutdown` is cancelled.
pub async fn publish_sys_tree(broker: Arc<Broker>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => publish_once(&broker),
        }
    }
}

fn publish_once(broker: &Broker) {
    let stats = broker.stats();
    let uptime = broker.started.elapsed().as_secs();
    let (retained, _) = broker.retained_count();
    let sessions = broker.persistent_counts();
    let entries: [(&str, String); 12] = [
        ("$SYS/broker/version", format!("roost {}", env!("CARGO_PKG_VERSION"))),
        ("$SYS/broker/uptime", format!("{uptime} seconds")),
        ("$SYS/broker/clients/connected", stats.clients_connected.to_string()),
        ("$SYS/broker/messages/received", stats.messages_received.to_string()),
        ("$SYS/broker/messages/sent", stats.messages_sent.to_string()),
        ("$SYS/broker/messages/dropped", (stats.dropped_qos0 + stats.dropped_offline).to_string()),
        ("$SYS/broker/messages/denied", stats.publishes_denied.to_string()),
        ("$SYS/broker/subscriptions/count", broker.router.subscription_count().to_string()),
        ("$SYS/broker/retained messages/count", retained.to_string()),
        // Persistent sessions offline, and the messages waiting for persistent sessions.
        ("$SYS/broker/clients/disconnected", sessions.offline.to_string()),
        ("$SYS/broker/store/messages/count", sessions.queued.to_string()),
        // Persistent sessions removed by --session-expiry since the start.
        ("$SYS/broker/clients/expired", stats.sessions_expired.to_string()),
    ];
    for (topic, value) in entries {
        let topic = TopicName::parse(topic).expect("static $SYS topics are valid");
        broker.publish(Message::new(topic, Bytes::from(value), QoS::AtMostOnce, true));
    }
}
