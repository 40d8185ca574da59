//! The MQTT broker: listeners, sessions, routing, retained messages, wills and `$SYS`.
//!
//! Architecture invariant: the broker never imports storage code. It asks an [`Authenticate`]
//! for who may connect and an [`IngestSink`] for when a publish may be acknowledged; `app`
//! plugs the real ones in.
//!
//! Running one: the listeners (`serve_tcp`, `serve_websocket`, `serve_websocket_session`) serve
//! connections, and `supervise_sessions` must run beside them: it enforces keep-alive and, at
//! shutdown, closes every session.

mod acks;
mod config;
mod connection;
mod durability;
mod hooks;
mod internal;
mod keep_alive;
mod limits;
mod listener;
mod mailbox;
mod message;
mod resends;
mod router;
mod sessions;
mod stats;
mod subscription;
mod sys;
mod trie;
pub mod websocket;
mod wills;

pub use config::BrokerConfig;
pub use durability::{MessageSeq, NoPersistence, Persistence, RestoredMessage, RestoredSession, RestoredState, RestoredWill, StateChange};
pub use hooks::{AllowAll, AuthOutcome, Authenticate, BoxFuture, Credentials, IngestSink, NoIngest, NotStored, Offered, Receipt};
pub use internal::InternalSubscription;
pub use keep_alive::supervise_sessions;
pub use listener::{serve_tcp, serve_websocket, serve_websocket_session};
pub use message::{Message, MessageProperties};
pub use router::RetainedLimits;
pub use sessions::{PersistentCounts, SessionInfo};
pub use stats::{BrokerStats, Metric, StateGauges, StatsSnapshot};
pub use subscription::Subscription;
pub use sys::publish_sys_tree;
pub use trie::SubscriptionTrie;
pub use websocket::choose_subprotocol;

use durability::Durable;
use router::Router;
use sessions::Sessions;
use std::sync::Arc;
// The runtime's clock, not the OS's: tests run keep-alive on a paused clock.
use tokio::time::Instant;

/// Everything the connections of one broker share. Cheap to clone behind an `Arc`.
pub struct Broker {
    config: BrokerConfig,
    router: Router,
    sessions: Sessions,
    stats: BrokerStats,
    auth: Arc<dyn Authenticate>,
    ingest: Arc<dyn IngestSink>,
    durable: Durable,
    started: Instant,
    connections_per_ip: Arc<limits::ConnectionsPerIp>,
    delayed_wills: wills::DelayedWills,
    /// Users (or, without one, clients) whose publishes the ACL denied, named in the log once
    /// each.
    denials_logged: crate::log_once::LogOnce<Arc<str>>,
}

/// What the broker plugs into: who may do what, where readings go, where its state is kept.
pub struct Hooks {
    pub auth: Arc<dyn Authenticate>,
    pub ingest: Arc<dyn IngestSink>,
    pub persistence: Arc<dyn Persistence>,
}

impl Hooks {
    /// Everything allowed, nothing stored: the broker alone.
    pub fn none() -> Self {
        Self { auth: Arc::new(AllowAll), ingest: Arc::new(NoIngest), persistence: Arc::new(NoPersistence) }
    }
}

impl Broker {
    /// A broker that resumes from `restored`: its retained messages and persistent sessions
    /// are back, and the wills of clients that were connected when it stopped are published
    /// now (their connections ended with the server, not with a DISCONNECT [MQTT-3.1.2-8]).
    pub fn new(config: BrokerConfig, hooks: Hooks, restored: RestoredState) -> Arc<Self> {
        let broker = Arc::new(Self {
            router: Router::new(config.retained),
            config,
            sessions: Sessions::default(),
            stats: BrokerStats::default(),
            auth: hooks.auth,
            ingest: hooks.ingest,
            durable: Durable::new(hooks.persistence, restored.last_seq),
            started: Instant::now(),
            connections_per_ip: Arc::default(),
            delayed_wills: wills::DelayedWills::default(),
            denials_logged: crate::log_once::LogOnce::new(10_000),
        });
        broker.router.restore_retained(restored.retained);
        broker.sessions.restore(restored.sessions, &broker.router, &broker.config, &broker.durable);
        for RestoredWill { client_id, username, will } in restored.wills {
            let topic = will.topic.clone();
            if broker.publish_will(&Arc::new(will), username.as_deref()) {
                tracing::info!(%client_id, %topic, "published the will of a client connected when the server stopped");
            } else {
                tracing::warn!(%client_id, ?username, %topic,
                    "not publishing the will of a client connected when the server stopped: its user may not publish there (or no longer exists)");
            }
            broker.durable.record(StateChange::WillCleared { client_id });
        }
        broker
    }

    /// A slot for one more connection from `ip`, or `None` (counted, logged) past the limit.
    pub(crate) fn admit(&self, peer: std::net::SocketAddr) -> Option<limits::Permit> {
        let permit = self.connections_per_ip.acquire(peer.ip(), self.config.max_connections_per_ip);
        if permit.is_none() {
            BrokerStats::incr(&self.stats.connections_over_limit);
            tracing::debug!(%peer, limit = self.config.max_connections_per_ip, "too many connections from this address; closed");
        }
        permit
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Every broker metric now: the counters, retained messages and persistent sessions.
    pub fn metrics(&self) -> Vec<Metric> {
        let (retained, retained_bytes) = self.retained_count();
        let sessions = self.persistent_counts();
        let state = StateGauges {
            retained,
            retained_bytes,
            sessions_online: sessions.online,
            sessions_offline: sessions.offline,
            queued: sessions.queued,
        };
        self.stats().metrics(state)
    }

    /// Milliseconds since the broker started: the clock of keep-alive deadlines.
    fn clock_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Publishes a message from inside the server (the `$SYS` tree, a dashboard, a demo device)
    /// to subscribers, as if a client had sent it.
    pub fn publish(&self, message: Message) {
        self.router.route(Arc::new(message), None, &self.stats, &self.durable);
    }

    /// The persistent sessions, online and offline (the dashboard's admin view).
    pub fn persistent_sessions(&self) -> Vec<SessionInfo> {
        self.sessions.persistent_sessions()
    }

    /// Drops a persistent session and its queue (an online one is disconnected first).
    /// False if there is none with that client id.
    pub fn drop_session(&self, client_id: &str) -> bool {
        let dropped = self.sessions.drop_session(client_id, &self.router, &self.durable);
        if dropped {
            tracing::info!(%client_id, "persistent session dropped by an admin");
        }
        dropped
    }

    pub fn persistent_counts(&self) -> PersistentCounts {
        self.sessions.persistent_counts()
    }

    /// Retained messages kept, and their payload bytes.
    pub fn retained_count(&self) -> (usize, usize) {
        self.router.retained_count()
    }

    /// The retained messages whose topic matches `filter`.
    pub fn retained_matching(&self, filter: &mqtt_codec::TopicFilter) -> Vec<Arc<Message>> {
        self.router.retained_matching(filter, &self.durable)
    }

    /// The retained message of `topic`, if there is one.
    pub fn retained(&self, topic: &mqtt_codec::TopicName) -> Option<Arc<Message>> {
        self.router.retained(topic)
    }
}
