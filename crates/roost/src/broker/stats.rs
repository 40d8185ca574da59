//! Broker counters: lock-free, read by `$SYS`, the API and metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct BrokerStats {
    pub(crate) clients_connected: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) dropped_qos0: AtomicU64,
    pub(crate) dropped_offline: AtomicU64,
    pub(crate) dropped_too_large: AtomicU64,
    pub(crate) overflow_disconnects: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) publishes_denied: AtomicU64,
    pub(crate) subscriptions_denied: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_over_limit: AtomicU64,
    pub(crate) retained_refused: AtomicU64,
    pub(crate) sessions_expired: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub clients_connected: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    /// QoS 0 messages dropped because a subscriber's queue was full.
    pub dropped_qos0: u64,
    /// QoS 1/2 messages dropped because an offline session's queue was full.
    pub dropped_offline: u64,
    /// Messages larger than a 5.0 subscriber's maximum packet size: dropped for it.
    pub dropped_too_large: u64,
    /// Clients disconnected because their QoS 1/2 queue overflowed.
    pub overflow_disconnects: u64,
    /// Connections closed for malformed packets or protocol violations.
    pub protocol_errors: u64,
    /// Publishes the ACL refused: acknowledged, neither stored nor delivered.
    pub publishes_denied: u64,
    /// Subscriptions the ACL refused (SUBACK 0x80).
    pub subscriptions_denied: u64,
    /// CONNECTs refused for missing or wrong credentials.
    pub connections_refused: u64,
    /// Connections closed at once because their address had too many open.
    pub connections_over_limit: u64,
    /// Retained messages refused by `--max-retained` / `--max-retained-bytes`.
    pub retained_refused: u64,
    /// Persistent sessions removed by `--session-expiry`.
    pub sessions_expired: u64,
}

impl BrokerStats {
    pub(crate) fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            clients_connected: self.clients_connected.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            messages_sent: self.messages_sent.load(Relaxed),
            dropped_qos0: self.dropped_qos0.load(Relaxed),
            dropped_offline: self.dropped_offline.load(Relaxed),
            dropped_too_large: self.dropped_too_large.load(Relaxed),
            overflow_disconnects: self.overflow_disconnects.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            publishes_denied: self.publishes_denied.load(Relaxed),
            subscriptions_denied: self.subscriptions_denied.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            connections_over_limit: self.connections_over_limit.load(Relaxed),
            retained_refused: self.retained_refused.load(Relaxed),
            sessions_expired: self.sessions_expired.load(Relaxed),
        }
    }
}

/// One broker counter or gauge, described once: its key in `/api/stats`, its Prometheus name
/// (several samples of one name differ in their labels), its help text and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub key: &'static str,
    pub name: &'static str,
    /// Prometheus labels, with their braces (`{reason="..."}`), or empty.
    pub labels: &'static str,
    pub gauge: bool,
    pub help: &'static str,
    pub value: u64,
}

impl Metric {
    const fn counter(key: &'static str, name: &'static str, labels: &'static str, help: &'static str, value: u64) -> Self {
        Self { key, name, labels, gauge: false, help, value }
    }

    const fn gauge(key: &'static str, name: &'static str, labels: &'static str, help: &'static str, value: u64) -> Self {
        Self { key, name, labels, gauge: true, help, value }
    }
}

/// The broker's state beside its counters: retained messages and persistent sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateGauges {
    pub retained: usize,
    pub retained_bytes: usize,
    pub sessions_online: usize,
    pub sessions_offline: usize,
    pub queued: usize,
}

impl StatsSnapshot {
    /// Every broker metric, for `/api/stats` and `/metrics` alike (`$SYS` has its own,
    /// Mosquitto's, names).
    pub fn metrics(&self, state: StateGauges) -> Vec<Metric> {
        const DROPPED: &str = "Messages a subscriber did not get: its queue was full, or (MQTT 5.0) it takes no packet that large.";
        vec![
            Metric::gauge("clients_connected", "roost_clients_connected", "", "MQTT clients connected now.", self.clients_connected),
            Metric::counter(
                "messages_received",
                "roost_messages_received_total",
                "",
                "PUBLISH packets received from clients.",
                self.messages_received,
            ),
            Metric::counter("messages_sent", "roost_messages_sent_total", "", "PUBLISH packets sent to clients.", self.messages_sent),
            Metric::counter("dropped_qos0", "roost_messages_dropped_total", "{reason=\"qos0_queue_full\"}", DROPPED, self.dropped_qos0),
            Metric::counter(
                "dropped_offline",
                "roost_messages_dropped_total",
                "{reason=\"offline_queue_full\"}",
                DROPPED,
                self.dropped_offline,
            ),
            Metric::counter(
                "dropped_too_large",
                "roost_messages_dropped_total",
                "{reason=\"too_large_for_client\"}",
                DROPPED,
                self.dropped_too_large,
            ),
            Metric::counter(
                "overflow_disconnects",
                "roost_overflow_disconnects_total",
                "",
                "Clients disconnected because their QoS 1/2 queue overflowed.",
                self.overflow_disconnects,
            ),
            Metric::counter(
                "protocol_errors",
                "roost_protocol_errors_total",
                "",
                "Connections closed for malformed packets or protocol violations.",
                self.protocol_errors,
            ),
            Metric::counter(
                "publishes_denied",
                "roost_publishes_denied_total",
                "",
                "Publishes refused by the ACL: acknowledged, neither stored nor delivered.",
                self.publishes_denied,
            ),
            Metric::counter(
                "subscriptions_denied",
                "roost_subscriptions_denied_total",
                "",
                "Subscriptions refused by the ACL (SUBACK 0x80).",
                self.subscriptions_denied,
            ),
            Metric::counter(
                "connections_refused",
                "roost_connections_refused_total",
                "",
                "CONNECTs refused for missing or wrong credentials.",
                self.connections_refused,
            ),
            Metric::counter(
                "connections_over_limit",
                "roost_connections_over_limit_total",
                "",
                "Connections closed because their address had too many open.",
                self.connections_over_limit,
            ),
            Metric::gauge(
                "retained_messages",
                "roost_retained_messages",
                "",
                "Retained messages kept (and stored).",
                state.retained as u64,
            ),
            Metric::gauge(
                "retained_bytes",
                "roost_retained_bytes",
                "",
                "Payload bytes of the retained messages.",
                state.retained_bytes as u64,
            ),
            Metric::counter(
                "retained_refused",
                "roost_retained_refused_total",
                "",
                "Retained publishes refused by --max-retained / --max-retained-bytes (delivered, not retained).",
                self.retained_refused,
            ),
            Metric::gauge(
                "persistent_sessions_online",
                "roost_persistent_sessions",
                "{state=\"online\"}",
                "Persistent sessions (clean session 0), by state.",
                state.sessions_online as u64,
            ),
            Metric::gauge(
                "persistent_sessions_offline",
                "roost_persistent_sessions",
                "{state=\"offline\"}",
                "Persistent sessions (clean session 0), by state.",
                state.sessions_offline as u64,
            ),
            Metric::gauge(
                "persistent_queued",
                "roost_persistent_queued_messages",
                "",
                "QoS 1/2 messages waiting for persistent sessions.",
                state.queued as u64,
            ),
            Metric::counter(
                "sessions_expired",
                "roost_sessions_expired_total",
                "",
                "Persistent sessions removed by --session-expiry.",
                self.sessions_expired,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one list makes valid Prometheus text: counters end in `_total`, the samples of one
    /// name are together and agree on help and type, and every `/api/stats` key is unique.
    #[test]
    fn the_metric_list_is_consistent() {
        let metrics = BrokerStats::default().snapshot().metrics(StateGauges::default());
        let mut keys = std::collections::HashSet::new();
        for (i, m) in metrics.iter().enumerate() {
            assert!(keys.insert(m.key), "key {} twice", m.key);
            assert!(m.name.starts_with("roost_") && m.gauge != m.name.ends_with("_total"), "{m:?}");
            if let Some(earlier) = metrics[..i].iter().rev().find(|e| e.name == m.name) {
                assert_eq!(metrics[i - 1].name, m.name, "samples of {} are not together", m.name);
                assert_eq!((earlier.help, earlier.gauge), (m.help, m.gauge));
                assert_ne!(earlier.labels, m.labels);
            }
        }
    }
}
