//! Limits and timeouts of the broker, each with its unit in its type and a documented default.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Largest packet accepted from a client, in bytes; larger ones close the connection.
    pub max_packet_size: usize,
    /// How long a new connection may take to send its CONNECT [MQTT-3.1.4] (and, on WebSocket,
    /// to finish the handshake).
    pub connect_timeout: Duration,
    /// Outgoing QoS 1/2 messages sent to one client and not yet acknowledged.
    pub max_inflight: usize,
    /// QoS 1/2 messages queued for one client beyond its in-flight window. Overflow policy: an
    /// online client is disconnected (it cannot keep up, and it must notice: messages are never
    /// acknowledged and silently thrown away); for an offline session the message is dropped and
    /// counted.
    pub max_queued_qos12: usize,
    /// QoS 0 messages queued for one client. Overflow policy: dropped and counted.
    pub max_queued_qos0: usize,
    /// Incoming QoS 1/2 publishes of one client waiting for their acknowledgement (e.g. for the
    /// database to commit them). Past this the broker stops reading from that client.
    pub max_pending_acks: usize,
    /// Longest time a session takeover waits for the old connection to hand its session over.
    pub takeover_timeout: Duration,
    /// Open MQTT connections from one IP address (TCP, TLS and WebSocket listeners together);
    /// further ones are closed at once. 0: no limit.
    pub max_connections_per_ip: usize,
    /// Subscriptions one client may hold; further filters get SUBACK 0x80.
    pub max_subscriptions: usize,
    /// A persistent session (clean session 0) offline for longer is removed with its queue.
    pub session_expiry: Duration,
    /// Retained messages kept: count and payload bytes.
    pub retained: super::RetainedLimits,
    /// MQTT 5.0: topic aliases a client may set on one connection (announced in CONNACK).
    pub topic_alias_maximum: u16,
    /// MQTT 5.0: the longest keep-alive the server lets a client choose; a client asking for
    /// more (or for none) is told this one in CONNACK (Server Keep Alive, §3.2.2.3.14). 3.1.1
    /// has no way to say so: its clients keep their own.
    pub max_keep_alive: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_inflight: 1000,
            max_queued_qos12: 10_000,
            max_queued_qos0: 1000,
            max_pending_acks: 1000,
            takeover_timeout: Duration::from_secs(5),
            max_connections_per_ip: 1000,
            max_subscriptions: 1000,
            session_expiry: Duration::from_secs(7 * 24 * 3600),
            retained: super::RetainedLimits::default(),
            topic_alias_maximum: 64,
            max_keep_alive: Duration::from_secs(60),
        }
    }
}
