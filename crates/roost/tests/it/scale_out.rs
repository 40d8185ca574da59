//! Scale-out (`serve --upstream`): Roost nodes taking readings from a real Mosquitto through a
//! shared subscription, on one database. Nothing Mosquitto acknowledged is lost when a node is
//! killed with SIGKILL under load; the node rejoins its session; the load is split; live
//! updates reach a browser on another node (PostgreSQL LISTEN/NOTIFY); jobs that must run once
//! run on one node, and move when it stops.

use crate::databases::{Backend, TestDb};
use crate::support::{eventually_async, free_port, roost_command, spawn_mosquitto, ANY_PORTS};
use roost::store::{DatabaseUrl, Store};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// Mosquitto's window of unacknowledged messages to one client, as configured here: the most a
/// node can have committed and not yet acknowledged when it dies, so the most that can be
/// stored twice per kill.
const UPSTREAM_WINDOW: usize = 100;

/// A Mosquitto of the test's own, with a WebSocket listener too.
struct Mosquitto {
    port: u16,
    ws_port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, ws_port) = (free_port(), free_port());
        // Queued messages of an offline node's session are kept (Mosquitto's default drops
        // past 1,000): see docs/scale-out.md.
        let config = format!(
            "allow_anonymous true\nuser root\nmax_inflight_messages {UPSTREAM_WINDOW}\nmax_queued_messages 1000000\n\
             listener {port} 127.0.0.1\nlistener {ws_port} 127.0.0.1\nprotocol websockets\n"
        );
        let child = spawn_mosquitto(dir.path(), &config, &[port, ws_port]).await;
        Self { port, ws_port, _child: child, _dir: dir }
    }
}

/// A `roost serve` process and what it logged.
struct Node {
    child: Child,
    http: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Node {
    /// Starts a node on `db`; with `upstream`, taking readings from that Mosquitto as `name`.
    async fn spawn(db: &DatabaseUrl, name: &str, upstream: Option<u16>) -> Self {
        // Removed when the log task below ends (the node exited, or the test is over).
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = roost_command("info");
        command
            .args(["serve", "--allow-anonymous", "--node-id", name])
            .args(ANY_PORTS)
            .args(["--database", db.expose_secret()])
            .arg("--data-dir")
            .arg(data_dir.path())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(port) = upstream {
            command.args(["--upstream", &format!("mqtt://127.0.0.1:{port}")]);
        }
        let mut child = command.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (kept, name_shown) = (Arc::clone(&log), name.to_owned());
        tokio::spawn(async move {
            let _data_dir = data_dir;
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("roost {name_shown}: {line}");
                if line.contains("HTTP listening") {
                    let addr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let http = tokio::time::timeout(Duration::from_secs(30), rx).await.expect("roost started").expect("address logged");
        let node = Self { child, http, log };
        if upstream.is_some() {
            // Subscribed, not only connected: a reading published before the subscription
            // exists is acknowledged by the upstream broker and goes to nobody.
            node.wait_for_log("upstream ingest: subscribed").await;
        }
        node
    }

    fn logged(&self, text: &str) -> usize {
        self.log.lock().unwrap().matches(text).count()
    }

    async fn wait_for_log(&self, text: &str) {
        let log = Arc::clone(&self.log);
        let text = text.to_owned();
        eventually_async(&format!("the node logs {text:?}"), || {
            let (log, text) = (Arc::clone(&log), text.clone());
            async move { log.lock().unwrap().contains(&text) }
        })
        .await;
    }

    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    async fn stop(mut self) {
        let pid = self.child.id().unwrap() as i32;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("node stopped").unwrap();
    }
}

/// Publishes readings `0..count` (the value is the number) at QoS 1 to Mosquitto, `rate` a
/// second, on ten sensors; returns once Mosquitto acknowledged every one.
async fn publish_numbered(port: u16, count: usize, rate: u32) {
    let mut options = MqttOptions::new(format!("numbered-{}", free_port()), "127.0.0.1", port);
    options.set_inflight(50).set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(options, 1000);
    let publisher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        for i in 0..count {
            tick.tick().await;
            client.publish(format!("iot/fleet/sensor/p{}/t", i % 10), QoS::AtLeastOnce, false, i.to_string()).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < count {
        match tokio::time::timeout(Duration::from_secs(60), events.poll()).await.expect("Mosquitto answers") {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher to Mosquitto failed: {e}"),
        }
    }
    let _client = publisher.await.unwrap();
}

/// How many times each number was stored.
async fn stored_numbers(store: &Store) -> HashMap<u64, usize> {
    let mut seen = HashMap::new();
    for (key, value) in store.all_values().await.unwrap() {
        if key.owner == "fleet" {
            *seen.entry(value as u64).or_insert(0) += 1;
        }
    }
    seen
}

/// Two nodes (one on SQLite: several processes on one file is not a deployment we offer) take
/// numbered readings through a shared subscription; one is killed with SIGKILL mid-stream and
/// started again. Every reading Mosquitto acknowledged to the publisher is stored; at most
/// [`UPSTREAM_WINDOW`] of them twice (those committed and not yet acknowledged upstream).
async fn nothing_acknowledged_upstream_is_lost(backend: Backend) {
    const COUNT: usize = 6000;
    let mosquitto = Mosquitto::start().await;
    let db = TestDb::new(backend).await;
    let a = Node::spawn(&db.url, "a", Some(mosquitto.port)).await;
    let b = match backend {
        Backend::Sqlite => None,
        _ => Some(Node::spawn(&db.url, "b", Some(mosquitto.port)).await),
    };
    let publishing = tokio::spawn(publish_numbered(mosquitto.port, COUNT, 2000));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    a.kill().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let a = Node::spawn(&db.url, "a", Some(mosquitto.port)).await;
    assert!(a.logged("session_present=true") >= 1, "the restarted node resumes its upstream session");
    publishing.await.unwrap();
    let store = Store::open(&db.url).await.unwrap();
    // A restarted node drains its queued share on a debug build beside other tests.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = stored_numbers(&store).await;
        if stored.len() >= COUNT {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            // What is missing says where it stalled (a range: one window never acknowledged
            // upstream; scattered: lost ones).
            let missing: Vec<u64> = (0..COUNT as u64).filter(|n| !stored.contains_key(n)).collect();
            let sample = &missing[..missing.len().min(20)];
            panic!("timed out waiting for every reading Mosquitto acknowledged to be stored: {} of {COUNT} stored, missing {} (first: {sample:?})", stored.len(), missing.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = stored_numbers(&store).await;
    assert!((0..COUNT as u64).all(|n| stored.contains_key(&n)));
    let twice = stored.values().filter(|n| **n > 1).count();
    eprintln!("{backend:?}: {COUNT} readings, {twice} stored twice after the kill");
    // Mosquitto sends a member's unacknowledged messages again to that member (same packet id,
    // DUP), which recognises those it had committed: none is stored twice. (The bound for
    // brokers that hand them to another member is one window per crash.)
    assert_eq!(twice, 0, "readings stored twice (at most {UPSTREAM_WINDOW} could be)");
    let taken_by_a = store.recent_deliveries("a", 100_000).await.unwrap().len();
    assert!(taken_by_a > 0, "a took readings");
    if let Some(b) = b {
        let taken_by_b = store.recent_deliveries("b", 100_000).await.unwrap().len();
        eprintln!("{backend:?}: deliveries recorded: a {taken_by_a}, b {taken_by_b}");
        assert!(taken_by_b > COUNT / 5, "the load is split: b took {taken_by_b} of {COUNT}");
        b.stop().await;
    }
    store.close().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_on_postgres_loses_nothing_acknowledged_when_a_node_is_killed() {
    nothing_acknowledged_upstream_is_lost(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_on_mariadb_loses_nothing_acknowledged_when_a_node_is_killed() {
    nothing_acknowledged_upstream_is_lost(Backend::MariaDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_on_sqlite_loses_nothing_acknowledged_when_the_node_is_killed() {
    nothing_acknowledged_upstream_is_lost(Backend::Sqlite).await;
}

/// A node that takes no readings (dashboard only) shows, live, in Chromium, readings another
/// node stored; the alert engine and the purge run on one node, and the engine moves to the
/// other when its node stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_and_jobs_that_run_once_across_nodes() {
    let mosquitto = Mosquitto::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let ingesting = Node::spawn(&db.url, "ingest", Some(mosquitto.port)).await;
    // The first node has taken both jobs before the second starts (started together, either
    // may win the race).
    let taken = "running this job here (lease taken) lease=\"alerts\"";
    ingesting.wait_for_log(taken).await;
    crate::support::eventually_async("the first node takes the purge's turn", || async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(db.url.expose_secret()).await.unwrap();
        let holder: Option<String> =
            sqlx::query_scalar("SELECT holder FROM leases WHERE name = 'purge'").fetch_optional(&mut conn).await.unwrap();
        holder.as_deref() == Some("ingest")
    })
    .await;
    let dashboard = Node::spawn(&db.url, "dashboard", None).await;
    crate::dashboard::run_browser_script_at(
        "cluster-live-e2e.mjs",
        &format!("http://{}", dashboard.http),
        &[&format!("ws://127.0.0.1:{}/", mosquitto.ws_port)],
    )
    .await;

    // One alert engine; one purge (the first node to start purged, the second skipped its turn).
    assert_eq!((ingesting.logged(taken), dashboard.logged(taken)), (1, 0));
    assert_eq!(dashboard.logged("another node runs this job; standing by lease=\"alerts\""), 1);
    let store = Store::open(&db.url).await.unwrap();
    assert!(
        store.acquire_lease("purge", "ingest", roost::model::TimestampMs::now().0, 1000).await.unwrap(),
        "the first node holds the purge's turn"
    );
    assert!(!store.acquire_lease("purge", "dashboard", roost::model::TimestampMs::now().0, 1000).await.unwrap());
    store.close().await;

    // The engine's node stops: it gives the lease up, and the other node takes the job over.
    ingesting.stop().await;
    dashboard.wait_for_log(taken).await;
    dashboard.stop().await;
}

/// Logins are rows in the database: a session cookie from one node works on another, and ends
/// on both when it is logged out on one (no sticky sessions needed behind a load balancer).
#[tokio::test]
async fn a_dashboard_session_works_on_every_node() {
    let db = TestDb::new(Backend::Postgres).await;
    let one = crate::support::TestServer::start_on(db.url.clone(), |a| {
        a.allow_anonymous = false;
        a.node_id = "one".into();
    })
    .await;
    let two = crate::support::TestServer::start_on(db.url.clone(), |a| {
        a.allow_anonymous = false;
        a.node_id = "two".into();
    })
    .await;
    crate::support::add_user(&one.store, "carol", "carol-secret", true).await;
    let http = reqwest::Client::new();
    let cookie = crate::support::dashboard_login(&http, &one, "carol", "carol-secret").await;
    let (status, me) = crate::support::api_call(&http, &two, reqwest::Method::GET, "/api/me", &cookie, None).await;
    assert_eq!((status, me["username"].as_str()), (200, Some("carol")), "{me}");
    let out = http.post(format!("http://{}/api/logout", two.http)).header("cookie", &cookie).send().await.unwrap();
    assert!(out.status().is_success());
    let status = http.get(format!("http://{}/api/me", one.http)).header("cookie", &cookie).send().await.unwrap().status();
    assert_eq!(status, 401, "logged out on one node, logged out on all");
    two.stop().await;
    one.stop().await;
}
