//! The MQTT broker: listeners, sessions, routing, retained messages, wills and `$SYS`.
//!
//! Architecture invariant: the broker never imports storage code. It asks an [`Authenticate`]
//! for who may connect and an [`IngestSink`] for when a publish may be acknowledged; `app`
//! plugs the real ones in.
//!
//! Running one: the listeners (`serve_tcp`, `serve_websocket`, `serve_websocket_session`) serve
//! connections, and `supervise_sessions` must run beside them: it enforces keep-alive and, at
//! shutdown, closes every session.

mod config;
mod connection;
mod hooks;
mod keep_alive;
mod limits;
mod listener;
mod mailbox;
mod message;
mod router;
mod sessions;
mod stats;
mod sys;
mod trie;
pub mod websocket;

pub use config::BrokerConfig;
pub use hooks::{AllowAll, AuthOutcome, Authenticate, BoxFuture, Credentials, IngestSink, NoIngest, Receipt};
pub use keep_alive::supervise_sessions;
pub use listener::{serve_tcp, serve_websocket, serve_websocket_session};
pub use message::Message;
pub use stats::{BrokerStats, StatsSnapshot};
pub use sys::publish_sys_tree;
pub use trie::SubscriptionTrie;
pub use websocket::choose_subprotocol;

use router::Router;
use sessions::Sessions;
use std::sync::Arc;
use std::time::Instant;

/// Everything the connections of one broker share. Cheap to clone behind an `Arc`.
pub struct Broker {
    config: BrokerConfig,
    router: Router,
    sessions: Sessions,
    stats: BrokerStats,
    auth: Arc<dyn Authenticate>,
    ingest: Arc<dyn IngestSink>,
    started: Instant,
    connections_per_ip: Arc<limits::ConnectionsPerIp>,
}

impl Broker {
    pub fn new(config: BrokerConfig, auth: Arc<dyn Authenticate>, ingest: Arc<dyn IngestSink>) -> Arc<Self> {
        Arc::new(Self {
            config,
            router: Router::default(),
            sessions: Sessions::default(),
            stats: BrokerStats::default(),
            auth,
            ingest,
            started: Instant::now(),
            connections_per_ip: Arc::default(),
        })
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
        self.router.route(Arc::new(message), &self.stats);
    }
}
