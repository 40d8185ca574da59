//! Broker counters: lock-free, read by `$SYS`, the API and metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct BrokerStats {
    pub(crate) clients_connected: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) dropped_qos0: AtomicU64,
    pub(crate) dropped_offline: AtomicU64,
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
