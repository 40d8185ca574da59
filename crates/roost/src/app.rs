//! Startup as a value: `App::build` binds every listener (so tests can use port 0 and read the
//! ports back), `App::run_until_stopped` serves until the shutdown token is cancelled. The only
//! place that wires parts together and spawns long-lived tasks.

use crate::broker::{self, AllowAll, Broker, BrokerConfig, NoIngest};
use crate::cli::ServeArgs;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How long shutdown waits for connections to close before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct App {
    broker: Arc<Broker>,
    mqtt: TcpListener,
    mqtt_ws: TcpListener,
    sys_interval: Duration,
}

impl App {
    pub async fn build(args: &ServeArgs) -> anyhow::Result<Self> {
        if args.allow_anonymous && !args.mqtt.ip().is_loopback() {
            warn!(addr = %args.mqtt, "anonymous access on a non-loopback address: anyone who can reach it may publish and subscribe");
        } else if !args.allow_anonymous {
            warn!("user accounts are not implemented yet: running with anonymous access as if --allow-anonymous were given");
        }
        let config = BrokerConfig {
            max_packet_size: args.max_packet_size as usize,
            connect_timeout: args.connect_timeout,
            max_inflight: args.max_inflight as usize,
            max_queued_qos12: args.max_queued as usize,
            max_queued_qos0: args.max_queued_qos0 as usize,
            ..BrokerConfig::default()
        };
        let broker = Broker::new(config, Arc::new(AllowAll), Arc::new(NoIngest));
        let mqtt = bind(args.mqtt, "MQTT").await?;
        let mqtt_ws = bind(args.mqtt_ws, "MQTT over WebSocket").await?;
        Ok(Self { broker, mqtt, mqtt_ws, sys_interval: args.sys_interval })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt.local_addr().expect("bound listener has an address")
    }

    pub fn mqtt_ws_addr(&self) -> SocketAddr {
        self.mqtt_ws.local_addr().expect("bound listener has an address")
    }

    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.broker)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, closes every session and
    /// returns once they are gone (or after a grace period).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        info!(addr = %self.mqtt_addr(), "MQTT listening");
        info!(addr = %self.mqtt_ws_addr(), path = "/mqtt", "MQTT over WebSocket listening");
        let tracker = TaskTracker::new();
        tracker.spawn(broker::serve_tcp(self.mqtt, Arc::clone(&self.broker), shutdown.clone(), tracker.clone()));
        tracker.spawn(broker::serve_websocket(self.mqtt_ws, Arc::clone(&self.broker), shutdown.clone(), tracker.clone()));
        tracker.spawn(broker::publish_sys_tree(Arc::clone(&self.broker), self.sys_interval, shutdown.clone()));
        shutdown.cancelled().await;
        info!("shutting down: no new connections, closing sessions");
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "some connections did not close in time");
        }
        info!("stopped");
        Ok(())
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding the {what} listener to {addr}"))
}
