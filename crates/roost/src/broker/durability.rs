//! The seam through which broker state outlives the process: retained messages, persistent
//! sessions (clean session 0) with their subscriptions and queued QoS 1/2 messages, the QoS 2
//! packet ids in flight, and the wills of connected clients.
//!
//! The broker describes every change as a [`StateChange`], in the order it made it, with
//! [`Persistence::record`] (never waits). Before an acknowledgement that promises something
//! (a PUBACK/PUBREC of a publish queued for a persistent session, a SUBACK of a persistent
//! subscription, a QoS 2 PUBLISH or PUBREL to a persistent subscriber) it asks for
//! [`Persistence::committed`]: a receipt that resolves once everything recorded before is
//! committed. `app` plugs in the database-backed implementation (`crate::broker_store`).

use super::hooks::Receipt;
use super::subscription::Subscription;
use super::Message;
use mqtt_codec::{PacketId, QoS, TopicFilter};
use std::num::NonZeroU64;
use std::sync::Arc;

/// The number of a message queued for a persistent session: unique per broker, increasing,
/// and kept across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageSeq(pub NonZeroU64);

/// One change to the broker's durable state.
#[derive(Debug, Clone)]
pub enum StateChange {
    /// A retained message stored (a non-empty payload) or cleared (an empty one).
    Retain(Arc<Message>),
    /// A persistent session was opened (created or resumed) by a connection.
    SessionOpened {
        client_id: Arc<str>,
        username: Option<Arc<str>>,
        /// Its own expiry interval (MQTT 5.0; zero: it ends with this connection); `None`: the
        /// server's.
        expiry: Option<std::time::Duration>,
    },
    /// A persistent session's connection ended at `at_ms` (Unix milliseconds).
    SessionClosed {
        client_id: Arc<str>,
        at_ms: i64,
        /// Its own expiry interval (MQTT 5.0); `None`: the server's.
        expiry: Option<std::time::Duration>,
    },
    /// A session is gone with everything it had: clean start, expiry, or dropped by an admin.
    SessionDropped {
        client_id: Arc<str>,
    },
    Subscribed {
        client_id: Arc<str>,
        filter: TopicFilter,
        subscription: Subscription,
    },
    Unsubscribed {
        client_id: Arc<str>,
        filter: TopicFilter,
    },
    /// A QoS 1/2 message queued for a persistent session.
    Queued {
        client_id: Arc<str>,
        seq: MessageSeq,
        message: Arc<Message>,
        qos: QoS,
    },
    /// A queued QoS 2 message was sent with this packet id (a resend must use it again).
    Sent {
        seq: MessageSeq,
        packet_id: PacketId,
    },
    /// The subscriber answered a QoS 2 message with PUBREC: from now on only PUBREL is resent.
    Released {
        seq: MessageSeq,
    },
    /// The subscriber acknowledged the message (PUBACK, PUBCOMP), or it was dropped.
    Delivered {
        seq: MessageSeq,
    },
    /// A persistent session received a QoS 2 publish with this id; a resend is not routed twice.
    InboundQos2 {
        client_id: Arc<str>,
        packet_id: PacketId,
    },
    /// The publisher released that id (PUBREL).
    InboundReleased {
        client_id: Arc<str>,
        packet_id: PacketId,
    },
    /// A connected client's will, published after a restart if the server died with it.
    WillSet {
        client_id: Arc<str>,
        username: Option<Arc<str>>,
        will: Arc<Message>,
    },
    /// The will was published or discarded.
    WillCleared {
        client_id: Arc<str>,
    },
}

/// Where the broker's durable state goes.
pub trait Persistence: Send + Sync + 'static {
    /// Records a change, in order. Never waits.
    fn record(&self, change: StateChange);

    /// A receipt that resolves once every change recorded before this call is committed;
    /// `None` when nothing is ever stored (acknowledge at once).
    fn committed(&self) -> Option<Receipt>;
}

/// Nothing survives a restart: the broker alone, and tests of it.
#[derive(Debug, Default)]
pub struct NoPersistence;

impl Persistence for NoPersistence {
    fn record(&self, _: StateChange) {}

    fn committed(&self) -> Option<Receipt> {
        None
    }
}

/// A message queued for a session when the server stopped.
#[derive(Debug, Clone)]
pub struct RestoredMessage {
    pub seq: MessageSeq,
    pub message: Arc<Message>,
    /// The QoS it is delivered with (the subscription's, at most the message's).
    pub qos: QoS,
    /// QoS 2 sent before the restart: resent with the same id.
    pub packet_id: Option<PacketId>,
    /// QoS 2 whose PUBREC had come: only PUBREL is resent.
    pub released: bool,
}

/// A persistent session as the server left it.
#[derive(Debug, Clone)]
pub struct RestoredSession {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    /// When its last connection ended (Unix milliseconds); `None` if it was connected when the
    /// server stopped (it counts as offline from the restart).
    pub offline_since_ms: Option<i64>,
    pub subscriptions: Vec<(TopicFilter, Subscription)>,
    /// Its own expiry interval (MQTT 5.0); `None`: the server's.
    pub expiry: Option<std::time::Duration>,
    /// In queue order.
    pub messages: Vec<RestoredMessage>,
    pub inbound_qos2: Vec<PacketId>,
}

/// A will of a client that was connected when the server stopped.
#[derive(Debug, Clone)]
pub struct RestoredWill {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    pub will: Message,
}

/// Everything the broker had when it stopped.
#[derive(Debug, Clone, Default)]
pub struct RestoredState {
    pub retained: Vec<Message>,
    pub sessions: Vec<RestoredSession>,
    pub wills: Vec<RestoredWill>,
    /// The highest [`MessageSeq`] ever handed out (0: none).
    pub last_seq: u64,
}

/// The broker's side of persistence: the [`Persistence`] it records to and the message
/// numbers it hands out.
pub(crate) struct Durable {
    persistence: Arc<dyn Persistence>,
    last_seq: std::sync::atomic::AtomicU64,
}

impl Durable {
    pub fn new(persistence: Arc<dyn Persistence>, last_seq: u64) -> Self {
        Self { persistence, last_seq: last_seq.into() }
    }

    pub fn record(&self, change: StateChange) {
        self.persistence.record(change);
    }

    pub fn committed(&self) -> Option<Receipt> {
        self.persistence.committed()
    }

    pub fn next_seq(&self) -> MessageSeq {
        let seq = self.last_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        MessageSeq(NonZeroU64::new(seq).expect("a sequence number after another is not zero"))
    }
}

/// Longest client id accepted, in characters: sessions and wills are stored under it (a key
/// column on every database; MariaDB's keys are bounded).
pub const MAX_STORED_CLIENT_ID: usize = 191;
/// Longest topic filter accepted in a SUBSCRIBE, in characters (stored for persistent sessions).
pub const MAX_STORED_FILTER: usize = 500;
/// Longest topic a retained message may have, in characters (the key of stored retained messages).
pub const MAX_RETAINED_TOPIC: usize = 768;

/// Server-generated retained messages (`$SYS/...`) are refreshed at every start: not stored.
pub(crate) fn is_stored_topic(topic: &str) -> bool {
    !topic.starts_with('$')
}
