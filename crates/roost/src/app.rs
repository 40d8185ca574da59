//! Startup as a value: `App::build` binds every listener (so tests can use port 0 and read the
//! ports back), `App::run_until_stopped` serves until the shutdown token is cancelled. The only
//! place that wires parts together and spawns long-lived tasks.

use crate::api::{self, ApiState};
use crate::auth::limiter::{LimiterConfig, LoginLimiter};
use crate::auth::UserAuth;
use crate::broker::{self, AllowAll, Authenticate, Broker, BrokerConfig};
use crate::broker_store::{BrokerStore, StateQueue};
use crate::ingest::{self, Ingest, IngestConfig, IngestStats, TopicTemplate, WriterConfig};
use crate::lifecycle::{LifecycleConfig, RetentionPolicy, SharedStatus};
use crate::mqtt_client::{BrokerUrl, ClientSettings};
use crate::settings::Settings;
use crate::sim::FleetConfig;
use crate::store::Store;
use crate::tls::CertFiles;
use anyhow::Context;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tracing::{info, warn};

/// How long shutdown waits for connections to close before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long the demo boards get to finish at shutdown.
const DEMO_STOP_GRACE: Duration = Duration::from_secs(1);
/// The owner the `--demo` boards publish as.
pub const DEMO_OWNER: &str = "demo";

/// Committed batches a listener of the live or commit feed may fall behind before it is told
/// to reload (dashboards) or catches up from the database (alerts, discovery).
const FEED_BATCHES: usize = 256;
/// Sensor deletions (and changes) queued for the alert engine and discovery before they reload.
const DELETIONS: usize = 64;

pub struct App {
    broker: Arc<Broker>,
    store: Arc<Store>,
    /// Retention, the purge, the database's disk.
    lifecycle: LifecycleConfig,
    lifecycle_status: SharedStatus,
    ingest_stats: Arc<IngestStats>,
    jobs: tokio::sync::mpsc::Receiver<ingest::Job>,
    state_queue: StateQueue,
    /// Whether the broker state's commits succeed.
    state_health: Arc<crate::health::CommitHealth>,
    /// Where `roost-serve.json` goes (`--data-dir`), and what it says.
    running: (std::path::PathBuf, crate::running::RunningServer),
    /// Held while this server runs (see `DataDirLock`).
    _data_dir_lock: crate::running::DataDirLock,
    /// Roost's own MQTT listeners; `None` with `--mqtt-listeners off`.
    mqtt: Option<TcpListener>,
    mqtt_ws: Option<TcpListener>,
    http: TcpListener,
    /// `--upstream`: readings taken from another broker too.
    upstream: Option<crate::upstream::UpstreamConfig>,
    upstream_stats: Arc<crate::upstream::UpstreamStats>,
    ingest: Arc<Ingest>,
    /// `--node-id`: who holds this node's leases, and whose commits the other nodes hear.
    node_id: Arc<str>,
    sys_interval: Duration,
    dashboard: crate::api::DashboardConfig,
    /// The live feed (dashboards) and the commit feed (alerts, Home Assistant discovery).
    feeds: crate::ingest::Feeds,
    /// The config file's alert rules, stored when the alert engine starts.
    alert_rules: Vec<crate::model::AlertRule>,
    templates: Vec<crate::ingest::TopicTemplate>,
    /// `--ha-discovery`.
    ha_discovery: Option<crate::ha_discovery::DiscoveryConfig>,
    demo: Option<DemoMode>,
    utc_offset_secs: i32,
    /// `--allow-anonymous`: no logins anywhere.
    anonymous: bool,
    tls: Option<Tls>,
    login_limiter: Arc<LoginLimiter>,
    max_request_body: usize,
}

/// `--tls-cert`/`--tls-key`: the certificate and the MQTT-over-TLS listener.
struct Tls {
    files: Arc<CertFiles>,
    /// `None` with `--mqtt-listeners off`.
    mqtts: Option<TcpListener>,
    /// How often the certificate files are checked for changes.
    check_interval: Duration,
}

/// `--demo`, and whether its boards need an account.
#[derive(Debug, Clone, Copy)]
struct DemoMode {
    anonymous: bool,
}

impl App {
    pub async fn build(args: &Settings) -> anyhow::Result<Self> {
        let mut listening = vec![args.http_listen];
        if args.mqtt_listeners {
            listening.extend([args.mqtt_listen, args.mqtt_ws_listen]);
        }
        let everywhere_local = listening.iter().all(|a| a.ip().is_loopback());
        if args.allow_anonymous && !everywhere_local {
            // Every address it listens on, so the one that is not loopback (often the MQTT over
            // WebSocket listener's default) shows.
            warn!(
                mqtt = %args.mqtt_listen,
                mqtt_ws = %args.mqtt_ws_listen,
                http = %args.http_listen,
                "--allow-anonymous on a non-loopback address: anyone who can reach it may publish, subscribe and read every reading"
            );
        }
        let config = BrokerConfig {
            max_packet_size: args.max_packet_size as usize,
            connect_timeout: args.connect_timeout,
            max_inflight: args.max_inflight as usize,
            max_queued_qos12: args.max_queued as usize,
            max_queued_qos0: args.max_queued_qos0 as usize,
            max_connections_per_ip: args.max_connections_per_ip as usize,
            max_subscriptions: args.max_subscriptions as usize,
            session_expiry: args.session_expiry,
            retained: broker::RetainedLimits { max_count: args.max_retained as usize, max_bytes: args.max_retained_bytes as usize },
            ..BrokerConfig::default()
        };
        // Listeners first: a taken port is said before anything is created on disk.
        let (mqtt, mqtt_ws) = if args.mqtt_listeners {
            (
                Some(bind(args.mqtt_listen, "MQTT", "--mqtt-listen").await?),
                Some(bind(args.mqtt_ws_listen, "MQTT over WebSocket", "--mqtt-ws-listen").await?),
            )
        } else {
            (None, None)
        };
        let http = bind(args.http_listen, "HTTP", "--http-listen").await?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                let files = CertFiles::load(cert, key).context("loading the TLS certificate")?;
                let mqtts = match args.mqtt_listeners {
                    true => Some(bind(args.mqtts_listen, "MQTT over TLS", "--mqtts-listen").await?),
                    false => None,
                };
                Some(Tls { files, mqtts, check_interval: args.tls_check_interval })
            }
            _ => None,
        };
        args.db.create_directories().await?;
        let data_dir_lock = crate::running::DataDirLock::take(&args.db.dir.data_dir).await?;
        let store = Store::open(&args.db.database).await.context("opening the database")?;
        info!(database = %store.url(), "database ready");
        let store = Arc::new(store);
        let templates = if args.templates.is_empty() { TopicTemplate::defaults() } else { args.templates.clone() };
        let (jobs_tx, jobs) = tokio::sync::mpsc::channel(args.ingest_queue as usize);
        let ingest_stats = Arc::new(IngestStats::default());
        let retention = RetentionPolicy {
            default: args.retention,
            rules: args.retention_rules.clone(),
            minute_rollups: args.minute_rollup_retention,
            hourly_rollups: args.hourly_rollup_retention,
            templates: templates.clone(),
        };
        info!(
            raw = %retention.default,
            rules = retention.rules.len(),
            minutes = %retention.minute_rollups,
            hours = %retention.hourly_rollups,
            "retention: raw readings and rejects older than `raw` are deleted (--retention; `forever` keeps them)"
        );
        for (setting, keep) in retention.suspiciously_short() {
            warn!(%setting, keeps = %keep, "keeps data less than an hour (the flag, its ROOST_ variable or config key): a number without a unit is seconds (7d is a week)");
        }
        let lifecycle = LifecycleConfig {
            policy: retention,
            disk_path: store.url().sqlite_file().unwrap_or_else(|| args.db.dir.data_dir.clone()),
            low_disk_percent: args.low_disk_percent,
            node_id: args.node_id.as_str().into(),
        };
        let ingest = Arc::new(Ingest::new(
            IngestConfig { templates: templates.clone(), max_payload: args.max_payload },
            jobs_tx,
            Arc::clone(&ingest_stats),
        ));
        let node_id: Arc<str> = args.node_id.as_str().into();
        let upstream = args.upstream.clone().map(|url| crate::upstream::UpstreamConfig {
            client: ClientSettings {
                username: args.upstream_username.clone(),
                password: args.upstream_password.as_ref().map(|p| p.expose().to_owned()),
                ca_file: args.upstream_ca_file.clone(),
                ..ClientSettings::new(url)
            },
            node_id: Arc::clone(&node_id),
            share_group: args.share_group.clone(),
            filters: templates.iter().map(TopicTemplate::filter).collect(),
            max_packet_size: args.max_packet_size as usize,
        });
        if let Some(upstream) = &upstream {
            // A CA file that cannot be read is said now, not in a retry loop later.
            upstream.client.mqtt_options(&upstream.client_id(), 1).context("the --upstream connection settings")?;
        }
        let login_limiter = Arc::new(LoginLimiter::new(LimiterConfig {
            per_name: args.max_login_failures,
            total: args.max_login_failures_total,
            window: args.login_failure_window,
            concurrent_checks: std::thread::available_parallelism().map_or(2, |n| n.get()),
            check_wait: crate::auth::limiter::CHECK_WAIT,
        }));
        let started = std::time::Instant::now();
        let restored = crate::broker_store::restore(&store).await.context("loading the broker's state")?;
        info!(
            retained = restored.retained.len(),
            sessions = restored.sessions.len(),
            queued = restored.sessions.iter().map(|s| s.messages.len()).sum::<usize>(),
            wills = restored.wills.len(),
            took = ?started.elapsed(),
            "broker state restored"
        );
        let auth: Arc<dyn Authenticate> = if args.allow_anonymous {
            Arc::new(AllowAll)
        } else {
            crate::auth::bootstrap::ensure_admin(&store, &args.db.dir.data_dir).await.context("creating the first admin")?;
            let auth = UserAuth::new(Arc::clone(&store), Arc::clone(&login_limiter));
            let will_users: std::collections::BTreeSet<&str> = restored.wills.iter().filter_map(|w| w.username.as_deref()).collect();
            auth.load_acls(will_users).await.context("reading the ACLs of the users whose wills are due")?;
            Arc::new(auth)
        };
        let (broker_store, state_queue) = BrokerStore::new();
        let hooks = broker::Hooks { auth, ingest: Arc::clone(&ingest) as _, persistence: Arc::new(broker_store) };
        let broker = Broker::new(config, hooks, restored);
        release_freed_memory();
        let units = if args.units.is_empty() { crate::cli::default_units() } else { args.units.clone() };
        let normal_ranges = if args.normal_ranges.is_empty() { crate::cli::default_normal_ranges() } else { args.normal_ranges.clone() };
        let dashboard = crate::api::DashboardConfig {
            stale_after_ms: args.stale_after.as_millis() as u64,
            units: units.into_iter().collect(),
            normal_ranges: normal_ranges.into_iter().collect(),
        };
        let ha_discovery = args.ha_discovery.then(|| crate::ha_discovery::DiscoveryConfig {
            prefix: args.ha_discovery_prefix.clone(),
            expire_after: args.stale_after,
            templates: templates.clone(),
            units: dashboard.units.clone().into_iter().collect(),
        });
        let demo = args.demo.then_some(DemoMode { anonymous: args.allow_anonymous });
        Ok(Self {
            broker,
            store,
            lifecycle,
            lifecycle_status: SharedStatus::default(),
            ingest_stats,
            jobs,
            state_queue,
            state_health: Arc::default(),
            _data_dir_lock: data_dir_lock,
            running: (
                args.db.dir.data_dir.clone(),
                crate::running::RunningServer::new(
                    match (&mqtt, &upstream) {
                        (Some(mqtt), _) => crate::running::RunningServer::local_broker(mqtt.local_addr()?),
                        (None, Some(upstream)) => upstream.client.url.to_string(),
                        (None, None) => unreachable!("settings refuse --mqtt-listeners off without --upstream"),
                    },
                    http.local_addr()?,
                    tls.is_some(),
                    args.db.database.with_absolute_file().expose_secret(),
                ),
            ),
            mqtt,
            mqtt_ws,
            http,
            upstream,
            upstream_stats: Arc::default(),
            ingest,
            node_id,
            tls,
            sys_interval: args.sys_interval,
            dashboard,
            feeds: crate::ingest::Feeds::new(FEED_BATCHES),
            alert_rules: args.alerts.clone(),
            templates,
            ha_discovery,
            demo,
            utc_offset_secs: 0,
            anonymous: args.allow_anonymous,
            login_limiter,
            max_request_body: args.max_request_body as usize,
        })
    }

    /// The local time's offset from UTC, for the demo boards' day/night cycle.
    pub fn with_utc_offset(mut self, secs: i32) -> Self {
        self.utc_offset_secs = secs;
        self
    }

    /// Roost's own MQTT listener (`None` with `--mqtt-listeners off`).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt.as_ref().map(|l| l.local_addr().expect("bound listener has an address"))
    }

    pub fn mqtt_ws_addr(&self) -> Option<SocketAddr> {
        self.mqtt_ws.as_ref().map(|l| l.local_addr().expect("bound listener has an address"))
    }

    /// The MQTT-over-TLS address, when TLS is configured.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|t| t.mqtts.as_ref()).map(|l| l.local_addr().expect("bound listener has an address"))
    }

    /// The upstream ingest's counters (`--upstream`).
    pub fn upstream_stats(&self) -> Arc<crate::upstream::UpstreamStats> {
        Arc::clone(&self.upstream_stats)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener has an address")
    }

    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.broker)
    }

    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    pub fn ingest_stats(&self) -> Arc<IngestStats> {
        Arc::clone(&self.ingest_stats)
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, closes every session and
    /// returns once they are gone (or after a grace period).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tls = self.tls.is_some();
        match (self.mqtt_addr(), self.mqtt_ws_addr()) {
            (Some(mqtt), Some(ws)) => {
                info!(addr = %mqtt, "MQTT listening");
                info!(addr = %ws, path = "/mqtt", tls, "MQTT over WebSocket listening");
            }
            _ => info!("MQTT listeners off (--mqtt-listeners off): readings come from the upstream broker"),
        }
        info!(addr = %self.http_addr(), tls, "HTTP listening (dashboard, API, /healthz, /metrics, MQTT over WebSocket at /mqtt)");
        let (running_dir, running) = &self.running;
        match running.write(running_dir) {
            Ok(path) => info!(file = %path.display(), "wrote the addresses and database for `roost simulate`, `bench`, `user`, `token`"),
            Err(e) => {
                warn!(dir = %running_dir.display(), error = %e, "could not write roost-serve.json; other commands need --broker and --database")
            }
        }
        let tracker = TaskTracker::new();
        // Listening to the commit feed before the writer starts: no batch goes unseen.
        let alerts = crate::alerts::AlertsHandle::default();
        let (deletions, _) = tokio::sync::broadcast::channel::<crate::model::SensorKey>(DELETIONS);
        let (sensor_changes, _) = tokio::sync::broadcast::channel::<crate::model::SensorKey>(DELETIONS);
        let webhooks = Arc::new(crate::alerts::webhook::Webhooks::new(shutdown.clone()));
        // Other nodes on this database: their commits into this node's feeds, and ours to them.
        tracker.spawn(crate::cluster::feed::run(Arc::clone(&self.store), Arc::clone(&self.node_id), self.feeds.clone(), shutdown.clone()));
        // The alert engine and discovery run on one node at a time: the holder of their lease.
        // (The engine catches up from the database when it starts.)
        let alerts_config =
            crate::alerts::AlertsConfig { config_rules: self.alert_rules, templates: self.templates.clone(), anonymous: self.anonymous };
        let (store, broker, hooks, feeds, deleted) =
            (Arc::clone(&self.store), Arc::clone(&self.broker), Arc::clone(&webhooks), self.feeds.clone(), deletions.clone());
        let commands = alerts.clone();
        tracker.spawn(crate::cluster::lease::run_while_held(
            Arc::clone(&self.store),
            "alerts",
            Arc::clone(&self.node_id),
            shutdown.clone(),
            move |stop| {
                let inputs = crate::alerts::AlertInputs {
                    commits: feeds.commits.subscribe(),
                    deletions: deleted.subscribe(),
                    commands: commands.subscribe(),
                };
                crate::alerts::run(Arc::clone(&store), Arc::clone(&broker), Arc::clone(&hooks), alerts_config.clone(), inputs, stop)
            },
        ));
        if let Some(config) = self.ha_discovery {
            info!(prefix = %config.prefix, "Home Assistant discovery: announcing sensors (on the node holding its lease)");
            let (store, broker, feeds, deleted, changed) =
                (Arc::clone(&self.store), Arc::clone(&self.broker), self.feeds.clone(), deletions.clone(), sensor_changes.clone());
            tracker.spawn(crate::cluster::lease::run_while_held(
                Arc::clone(&self.store),
                "ha_discovery",
                Arc::clone(&self.node_id),
                shutdown.clone(),
                move |stop| {
                    crate::ha_discovery::run(
                        config.clone(),
                        Arc::clone(&broker),
                        Arc::clone(&store),
                        feeds.commits.subscribe(),
                        deleted.subscribe(),
                        changed.subscribe(),
                        stop,
                    )
                },
            ));
        } else {
            let withdrawn = crate::ha_discovery::withdraw_earlier_announcements(&self.broker);
            if withdrawn > 0 {
                info!(configs = withdrawn, "Home Assistant discovery is off: withdrew the sensor configs an earlier run announced");
            }
        }
        let writer_stop = CancellationToken::new();
        let writer = tokio::spawn(ingest::run_writer(
            Arc::clone(&self.store),
            self.jobs,
            WriterConfig::default(),
            Arc::clone(&self.ingest_stats),
            self.feeds.clone(),
            writer_stop.clone(),
        ));
        let state_writer_stop = CancellationToken::new();
        let state_writer = tokio::spawn(crate::broker_store::run_state_writer(
            Arc::clone(&self.store),
            self.state_queue,
            Arc::clone(&self.state_health),
            state_writer_stop.clone(),
        ));
        let demo = match (self.demo, &self.mqtt) {
            (Some(mode), Some(mqtt)) => {
                Some(start_demo(&self.store, mode, mqtt.local_addr()?, self.utc_offset_secs, shutdown.clone()).await?)
            }
            (Some(_), None) => {
                warn!("--demo needs Roost's own MQTT listener (--mqtt-listeners on); no demo boards");
                None
            }
            (None, _) => None,
        };
        if let Some(upstream) = self.upstream {
            tracker.spawn(crate::upstream::run(
                upstream,
                Arc::clone(&self.ingest),
                Arc::clone(&self.store),
                Arc::clone(&self.upstream_stats),
                shutdown.clone(),
            ));
        }
        if let Some(mqtt) = self.mqtt {
            tracker.spawn(broker::serve_tcp(mqtt, Arc::clone(&self.broker), None, shutdown.clone(), tracker.clone()));
        }
        let (ws_tls, http_tls) = match self.tls {
            Some(Tls { files, mqtts, check_interval }) => {
                if let Some(mqtts) = mqtts {
                    info!(addr = %mqtts.local_addr()?, "MQTT over TLS listening");
                    tracker.spawn(broker::serve_tcp(
                        mqtts,
                        Arc::clone(&self.broker),
                        Some(files.acceptor(false)),
                        shutdown.clone(),
                        tracker.clone(),
                    ));
                }
                tracker.spawn(Arc::clone(&files).watch(check_interval, shutdown.clone()));
                (Some(files.acceptor(false)), Some(files.acceptor(true)))
            }
            None => (None, None),
        };
        if let Some(mqtt_ws) = self.mqtt_ws {
            tracker.spawn(broker::serve_websocket(mqtt_ws, Arc::clone(&self.broker), ws_tls, shutdown.clone(), tracker.clone()));
        }
        tracker.spawn(crate::lifecycle::run_folds(Arc::clone(&self.store), shutdown.clone()));
        tracker.spawn(crate::lifecycle::run_minute_folds(Arc::clone(&self.store), shutdown.clone()));
        tracker.spawn(crate::lifecycle::run(
            Arc::clone(&self.store),
            self.lifecycle.clone(),
            Arc::clone(&self.lifecycle_status),
            shutdown.clone(),
        ));
        let api_state = ApiState {
            logins_ended: Arc::new(tokio::sync::watch::channel(0).0),
            store: Arc::clone(&self.store),
            retention: Arc::new(self.lifecycle.policy.clone()),
            lifecycle: Arc::clone(&self.lifecycle_status),
            broker: Arc::clone(&self.broker),
            ingest: Arc::clone(&self.ingest_stats),
            broker_state: Arc::clone(&self.state_health),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            assets: crate::api::Assets::load(),
            live: self.feeds.live.clone(),
            dashboard: self.dashboard.clone(),
            open: self.anonymous,
            tls,
            login_limiter: Arc::clone(&self.login_limiter),
            max_request_body: self.max_request_body,
            alerts,
            upstream: Arc::clone(&self.upstream_stats),
            webhooks: Arc::clone(&webhooks.stats),
            deletions,
            sensor_changes,
            templates: Arc::new(self.templates),
        };
        let http_shutdown = shutdown.clone();
        let http = self.http;
        tracker.spawn(async move {
            if let Err(e) = api::serve(http, http_tls, api_state, http_shutdown).await {
                warn!(error = %e, "HTTP server failed");
            }
        });
        tracker.spawn(broker::publish_sys_tree(Arc::clone(&self.broker), self.sys_interval, shutdown.clone()));
        tracker.spawn(broker::supervise_sessions(Arc::clone(&self.broker), shutdown.clone()));
        shutdown.cancelled().await;
        info!("shutting down: no new connections, closing sessions");
        if let Some(demo) = demo {
            // The boards stop on `shutdown`; what has not finished by then is aborted.
            let _ = tokio::time::timeout(DEMO_STOP_GRACE, demo).await;
        }
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "some connections did not close in time");
        }
        webhooks.stopped().await;
        // Sessions are closed: let the writers commit what is queued, then stop.
        writer_stop.cancel();
        state_writer_stop.cancel();
        if let Err(e) = writer.await {
            warn!(error = %e, "ingest writer failed");
        }
        if let Err(e) = state_writer.await {
            warn!(error = %e, "broker state writer failed");
        }
        // A request still running past the grace period may hold a database connection, and
        // closing the pool waits for every connection to come back: do not wait forever.
        if tokio::time::timeout(SHUTDOWN_GRACE, self.store.close()).await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "database connections still in use; exiting without them");
        }
        crate::running::RunningServer::remove(&self.running.0);
        info!("stopped");
        Ok(())
    }
}

/// Gives memory freed after loading the broker's state (the rows read, a large transient
/// peak with many retained messages or sessions) back to the operating system. glibc keeps
/// freed memory in its arenas otherwise.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own arenas to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `--demo`: simulated boards publishing to this server's own MQTT listener, with a day of
/// history the first time.
async fn start_demo(
    store: &Store,
    mode: DemoMode,
    listener: SocketAddr,
    utc_offset_secs: i32,
    stop: CancellationToken,
) -> anyhow::Result<AbortOnDropHandle<()>> {
    let host = match listener.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let url = BrokerUrl::from_str(&SocketAddr::new(host, listener.port()).to_string()).map_err(anyhow::Error::msg)?;
    let sensors = store.sensors().await.context("looking for earlier demo data")?;
    let first_run = !sensors.iter().any(|s| s.key.owner == DEMO_OWNER);
    let mut client = ClientSettings::new(url);
    if !mode.anonymous {
        // The boards log in as the device user `demo`, with a password made afresh at each start.
        client.username = Some(DEMO_OWNER.to_owned());
        client.password = Some(crate::auth::bootstrap::demo_user(store, DEMO_OWNER).await.context("creating the demo user")?);
    }
    let config = FleetConfig {
        client,
        template: TopicTemplate::defaults().swap_remove(0),
        owner: DEMO_OWNER.to_owned(),
        boards: 3,
        interval: Duration::from_secs(5),
        rate: None,
        qos: rumqttc::QoS::AtLeastOnce,
        count: None,
        glitches: 0.002,
        seed: crate::model::TimestampMs::now().0 as u64,
        utc_offset_secs,
        backfill: first_run.then_some(Duration::from_secs(24 * 3600)),
        client_id_prefix: "roost-demo".to_owned(),
    };
    info!(owner = DEMO_OWNER, boards = config.boards, backfill = first_run, "demo: simulated boards publishing to this server");
    let counters = Arc::new(crate::progress::Counters::default());
    Ok(AbortOnDropHandle::new(tokio::spawn(async move {
        if let Err(e) = crate::sim::run(config, counters, stop).await {
            warn!(error = %e, "demo boards stopped");
        }
    })))
}

/// Binds a listener; a taken address says which listener, and how to choose another.
async fn bind(addr: SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            let env = format!("ROOST_{}", flag.trim_start_matches("--").replace('-', "_").to_uppercase());
            let who = if what.starts_with("MQTT") { "another program, perhaps another MQTT broker," } else { "another program" };
            format!(" ({who} listens there: choose another address with {flag} or {env}, e.g. {flag} {}:0 for any free port)", addr.ip())
        } else {
            String::new()
        };
        anyhow::anyhow!("binding the {what} listener to {addr}: {e}{hint}")
    })
}
