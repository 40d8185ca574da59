//! broker-bench: starts Roost and Mosquitto side by side (each on a free port, fresh for every
//! run, runs alternating) and measures fan-in, fan-out, latency at a fixed rate and memory per
//! idle connection. Prints a Markdown table of medians and ratios.
//!
//! `cargo build --release --workspace && target/release/broker-bench --runs 5`

mod client;
mod cpu;
mod databases;
mod fleet;
mod history;
mod ingest;
mod launch;
mod stats;

use anyhow::{bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use client::{publish_packet, put, put_as, Client, Reader};
use mqtt_codec::{Ack, Packet, ProtocolVersion, QoS, TopicName};
use stats::median;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
struct Args {
    /// Runs per broker and scenario; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Messages per publisher in the throughput scenarios.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Idle connection counts for the memory scenario.
    #[arg(long, value_delimiter = ',', default_values_t = [5_000usize, 15_000])]
    idle: Vec<usize>,
    /// Which scenarios to run: fanin0, fanin1, persistent, fanout, latency, idle, v5 (fan-in,
    /// fan-out and a shared subscription with both brokers speaking MQTT 5.0), ingest, fleet,
    /// restore.
    #[arg(long, value_delimiter = ',', default_values_t = ["fanin0".to_string(), "fanin1".into(), "fanout".into(), "latency".into(), "idle".into(), "v5".into()])]
    only: Vec<String>,
    /// Databases for the ingest scenario (`--only ingest`): `sqlite` (a fresh temporary file),
    /// or a postgres:// / mysql:// URL whose database is dropped and re-created for each run.
    #[arg(long, value_delimiter = ',', default_values_t = ["sqlite".to_string(), "postgres://root@127.0.0.1:5432/roost_bench".into(), "mysql://root@127.0.0.1:3306/roost_bench".into()])]
    databases: Vec<String>,
    /// QoS 1 publishers in the ingest scenario.
    #[arg(long, default_value_t = 8)]
    ingest_publishers: usize,
    /// Distinct sensors in the ingest scenario, one row per count (shared out among the
    /// publishers, each cycling through its own).
    #[arg(long, value_delimiter = ',', default_values_t = [8usize, 10_000])]
    ingest_sensors: Vec<usize>,
    /// Device counts for the fleet scenario (`--only fleet`): each device its own sensor.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000])]
    devices: Vec<usize>,
    /// QoS 1 publishes each fleet device keeps unacknowledged.
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Sensors of each fleet device, published to in turn (10 × 10,000 devices: 100,000
    /// distinct sensors).
    #[arg(long, default_value_t = 1)]
    sensors_per_device: usize,
    /// Seconds measured per fleet run (after a warm-up of a third of that).
    #[arg(long, default_value_t = 10)]
    fleet_seconds: u64,
    /// Sensors stored in Roost's database before a fleet run starts (each with one reading),
    /// to show whether known sensors slow ingest down.
    #[arg(long, default_value_t = 0)]
    preload_sensors: usize,
    /// Readings of each fleet sensor stored in Roost's database before a fleet run starts (a
    /// second apart, in the past), as in a fleet that has been running: each sensor's newest
    /// page of the readings' index is then a page of its own.
    #[arg(long, default_value_t = 0)]
    fleet_history: usize,
    /// Retained messages stored before Roost starts, for `--only restore`.
    #[arg(long, default_value_t = 1_000_000)]
    restore_retained: usize,
    /// Persistent sessions stored before Roost starts, for `--only restore`.
    #[arg(long, default_value_t = 100_000)]
    restore_sessions: usize,
    /// The roost binary (default: next to this one).
    #[arg(long)]
    roost: Option<PathBuf>,
    /// A config file for Roost (`serve --config`), e.g. with `[[alert]]` rules.
    #[arg(long)]
    roost_config: Option<PathBuf>,
    /// Use an already running Roost at this address instead of starting one (for profiling it).
    #[arg(long)]
    attach: Option<SocketAddr>,
    /// The mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Roost,
    Mosquitto,
}

struct Broker {
    addr: SocketAddr,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Broker {
    async fn start(kind: Kind, args: &Args) -> anyhow::Result<Self> {
        Self::start_on(kind, args, None).await
    }

    async fn start_on(kind: Kind, args: &Args, database: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(kind, args, database, false).await
    }

    /// `persistent`: Mosquitto with `persistence true`; both keep up to `PERSISTENT_QUEUE`
    /// messages for an offline session (Roost's state is always in its database).
    async fn start_with(kind: Kind, args: &Args, database: Option<&str>, persistent: bool) -> anyhow::Result<Self> {
        if let (Kind::Roost, Some(addr)) = (kind, args.attach) {
            return Ok(Self { addr, child: None, _dir: tempfile::tempdir()? });
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let dir = tempfile::tempdir()?;
        let mut cmd = match kind {
            Kind::Roost => {
                let mut c = Command::new(launch::roost_binary(args.roost.as_deref())?);
                c.args([
                    "serve",
                    "--allow-anonymous",
                    "--max-connections-per-ip",
                    "0",
                    "--mqtt-listen",
                    &addr.to_string(),
                    "--mqtt-ws-listen",
                    "127.0.0.1:0",
                    "--http-listen",
                    "127.0.0.1:0",
                ]);
                let sqlite = format!("sqlite://{}", dir.path().join("roost.db").display());
                c.args(["--database", database.unwrap_or(&sqlite)]);
                // Its own data directory (roost-serve.json): a server still stopping must not
                // keep the next run's from starting.
                c.arg("--data-dir").arg(dir.path());
                if persistent {
                    c.args(["--max-queued", &PERSISTENT_QUEUE.to_string()]);
                }
                if let Some(config) = &args.roost_config {
                    c.arg("--config").arg(config);
                }
                // BENCH_ROOST_LOG (a RUST_LOG filter) with BENCH_BROKER_LOGS=1 shows more of Roost's log.
                c.env("RUST_LOG", std::env::var("BENCH_ROOST_LOG").unwrap_or_else(|_| "warn".to_owned()));
                c
            }
            Kind::Mosquitto => {
                let conf = dir.path().join("mosquitto.conf");
                let persistence = if persistent {
                    format!("persistence true\npersistence_location {}/\nmax_queued_messages {PERSISTENT_QUEUE}\n", dir.path().display())
                } else {
                    "persistence false\n".to_owned()
                };
                std::fs::write(
                    &conf,
                    format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n{persistence}log_dest none\n"),
                )?;
                let mut c = Command::new(&args.mosquitto);
                c.arg("-c").arg(&conf);
                c
            }
        };
        // BENCH_BROKER_LOGS=1 shows the brokers' own logs (for investigating a failed run).
        let logs = if std::env::var_os("BENCH_BROKER_LOGS").is_some() { std::process::Stdio::inherit } else { std::process::Stdio::null };
        cmd.stdout(std::process::Stdio::null()).stderr(logs()).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {kind:?}"))?;
        launch::wait_listening(addr, &format!("{kind:?}"), Duration::from_secs(10)).await?;
        Ok(Self { addr, child: Some(child), _dir: dir })
    }

    fn rss_bytes(&self) -> anyhow::Result<u64> {
        self.memory("VmRSS:")
    }

    /// The CPU time the broker has used so far; `None` for one we did not start (`--attach`).
    fn cpu_time(&self) -> Option<Duration> {
        self.child.as_ref().and_then(Child::id).and_then(|pid| cpu::cpu_time(pid).ok())
    }

    /// The most memory the broker has held at once (`VmHWM`).
    fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        self.memory("VmHWM:")
    }

    fn memory(&self, field: &str) -> anyhow::Result<u64> {
        let pid = self.child.as_ref().and_then(Child::id).context("broker exited or not started by us")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("{field} missing"))?;
        Ok(kb * 1024)
    }
}

fn payload(len: usize) -> Bytes {
    Bytes::from(vec![b'7'; len])
}

/// Messages an offline persistent session may have queued in the persistent scenarios.
const PERSISTENT_QUEUE: usize = 200_000;

/// N publishers → 1 subscriber at `qos`; returns messages delivered per second. `clean`:
/// false for a persistent subscriber (clean session 0).
async fn fan_in(
    addr: SocketAddr,
    publishers: usize,
    per_publisher: usize,
    qos: QoS,
    clean: bool,
    version: ProtocolVersion,
) -> anyhow::Result<(f64, f64)> {
    let mut sub = Client::connect_as(addr, None, "bench-sub", clean, version).await?;
    sub.subscribe("bench/#", qos).await?;
    let expected = publishers * per_publisher;
    let started = Instant::now();
    let counter = tokio::spawn(count_deliveries(sub, expected));
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let client = Client::connect_as(addr, None, &format!("bench-pub-{p}"), true, version).await?;
        let topic = TopicName::parse(&format!("bench/{p}")).unwrap();
        tasks.push(tokio::spawn(publish_flat_out(client, topic, per_publisher, qos)));
    }
    for t in tasks {
        t.await??;
    }
    let (received, last) = counter.await??;
    eprintln!("    fan-in QoS {}: {received} of {expected} delivered", qos as u8);
    Ok((received as f64 / (last - started).as_secs_f64(), 100.0 * received as f64 / expected as f64))
}

/// QoS 1 publishes to an offline persistent session (it subscribed, then left): returns how
/// fast N publishers are acknowledged (each message queued for it, durably in Roost) and how
/// fast the queue is delivered when it comes back.
async fn queue_for_offline(addr: SocketAddr, publishers: usize, per_publisher: usize) -> anyhow::Result<(f64, f64)> {
    let mut sub = Client::connect_session(addr, None, "bench-offline", false).await?;
    sub.subscribe("bench/#", QoS::AtLeastOnce).await?;
    sub.send(&Packet::Disconnect(Default::default())).await?;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let client = Client::connect(addr, None, &format!("bench-pub-{p}")).await?;
        let topic = TopicName::parse(&format!("bench/{p}")).unwrap();
        tasks.push(tokio::spawn(publish_flat_out(client, topic, per_publisher, QoS::AtLeastOnce)));
    }
    for t in tasks {
        t.await??;
    }
    let expected = publishers * per_publisher;
    let acked = expected as f64 / started.elapsed().as_secs_f64();
    let drain_started = Instant::now();
    let sub = Client::connect_session(addr, None, "bench-offline", false).await?;
    let (received, last) = count_deliveries(sub, expected).await?;
    eprintln!("    offline queue: {received} of {expected} delivered on reconnect");
    anyhow::ensure!(received >= expected, "only {received} of {expected} queued messages were delivered");
    Ok((acked, received as f64 / (last - drain_started).as_secs_f64()))
}

/// N publishers → the members of one shared subscription (`$share/bench/bench/#`, QoS 1):
/// each message goes to one member. Returns messages delivered per second (all members).
async fn shared_fan_in(
    addr: SocketAddr,
    publishers: usize,
    members: usize,
    per_publisher: usize,
    version: ProtocolVersion,
) -> anyhow::Result<(f64, f64)> {
    let expected = publishers * per_publisher;
    let mut subs = Vec::new();
    for m in 0..members {
        let mut sub = Client::connect_as(addr, None, &format!("bench-member-{m}"), true, version).await?;
        sub.subscribe("$share/bench/bench/#", QoS::AtLeastOnce).await?;
        subs.push(sub);
    }
    let started = Instant::now();
    // Each member counts until the whole expected total arrived among them, or a second of silence.
    let counters: Vec<_> = subs.into_iter().map(|s| tokio::spawn(count_deliveries(s, expected))).collect();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let client = Client::connect_as(addr, None, &format!("bench-pub-{p}"), true, version).await?;
        let topic = TopicName::parse(&format!("bench/{p}")).unwrap();
        tasks.push(tokio::spawn(publish_flat_out(client, topic, per_publisher, QoS::AtLeastOnce)));
    }
    for t in tasks {
        t.await??;
    }
    let (mut total, mut last) = (0, started);
    for c in counters {
        let (n, t) = c.await??;
        total += n;
        if n > 0 {
            last = last.max(t);
        }
    }
    eprintln!("    shared fan-in: {total} of {expected} delivered");
    Ok((total as f64 / (last - started).as_secs_f64(), 100.0 * total as f64 / expected as f64))
}

/// 1 publisher → N subscribers (QoS 0); returns deliveries per second (all subscribers).
async fn fan_out(addr: SocketAddr, subscribers: usize, messages: usize, version: ProtocolVersion) -> anyhow::Result<(f64, f64)> {
    let mut counters = Vec::new();
    for s in 0..subscribers {
        let mut sub = Client::connect_as(addr, None, &format!("bench-sub-{s}"), true, version).await?;
        sub.subscribe("fan/out", QoS::AtMostOnce).await?;
        counters.push(sub);
    }
    let started = Instant::now();
    let counters: Vec<_> = counters.into_iter().map(|c| tokio::spawn(count_deliveries(c, messages))).collect();
    let client = Client::connect_as(addr, None, "bench-pub", true, version).await?;
    publish_flat_out(client, TopicName::parse("fan/out").unwrap(), messages, QoS::AtMostOnce).await?;
    let mut total = 0;
    let mut last = started;
    for c in counters {
        let (n, t) = c.await??;
        total += n;
        last = last.max(t);
    }
    let expected = messages * subscribers;
    eprintln!("    fan-out: {total} of {expected} delivered");
    Ok((total as f64 / (last - started).as_secs_f64(), 100.0 * total as f64 / expected as f64))
}

/// Counts publishes until `expected` arrived or nothing came for a second (QoS 0 may drop).
/// Acknowledges QoS 1. Returns the count and the time of the last delivery.
async fn count_deliveries(client: Client, expected: usize) -> anyhow::Result<(usize, Instant)> {
    let (mut reader, mut writer) = client.split();
    let version = reader.version;
    let mut received = 0;
    let mut last = Instant::now();
    let mut batch = Vec::new();
    let mut acks = BytesMut::new();
    while received < expected {
        match tokio::time::timeout(Duration::from_secs(1), reader.recv_batch(&mut batch)).await {
            Err(_) => break,
            Ok(Err(e)) => {
                // Roost disconnects a subscriber whose QoS 1/2 queue overflows: count what
                // it got until then.
                eprintln!("    subscriber lost its connection after {received}: {e}");
                break;
            }
            Ok(Ok(())) => {}
        }
        for p in batch.drain(..) {
            if let Packet::Publish(p) = p {
                received += 1;
                if let Some(id) = p.packet_id {
                    put_as(&Packet::PubAck(Ack::new(id)), version, &mut acks);
                }
            }
        }
        last = Instant::now();
        if !acks.is_empty() {
            if let Err(e) = writer.write_all(&acks).await {
                // The same disconnect, noticed while acknowledging.
                eprintln!("    subscriber lost its connection after {received}: {e}");
                break;
            }
            acks.clear();
        }
    }
    Ok((received, last))
}

/// Publishes `count` messages as fast as the broker takes them; QoS 1 keeps 100 in flight.
async fn publish_flat_out(client: Client, topic: TopicName, count: usize, qos: QoS) -> anyhow::Result<()> {
    const WINDOW: usize = 100;
    const BATCH: usize = 64;
    let (reader, mut writer) = client.split();
    let version = reader.version;
    let window = Arc::new(Semaphore::new(WINDOW));
    let acker = (qos != QoS::AtMostOnce).then(|| tokio::spawn(read_acks(reader, Arc::clone(&window), count)));
    let body = payload(32);
    let mut out = BytesMut::with_capacity(BATCH * 64);
    let mut sent = 0;
    let mut next_id: u16 = 0;
    while sent < count {
        let n = BATCH.min(count - sent);
        if qos != QoS::AtMostOnce {
            window.acquire_many(n as u32).await?.forget();
        }
        for _ in 0..n {
            next_id = next_id.checked_add(1).unwrap_or(1);
            put_as(&publish_packet(&topic, body.clone(), qos, next_id), version, &mut out);
        }
        writer.write_all(&out).await?;
        out.clear();
        sent += n;
    }
    if let Some(acker) = acker {
        acker.await??;
    }
    Ok(())
}

async fn read_acks(mut reader: Reader, window: Arc<Semaphore>, expected: usize) -> anyhow::Result<()> {
    let mut acked = 0;
    let mut batch = Vec::new();
    while acked < expected {
        reader.recv_batch(&mut batch).await?;
        let n = batch.drain(..).filter(|p| matches!(p, Packet::PubAck(_))).count();
        acked += n;
        window.add_permits(n);
    }
    Ok(())
}

/// QoS 0 at a fixed rate for `duration`; returns (p50, p99) publish→deliver latency in µs.
async fn latency(addr: SocketAddr, rate: u32, duration: Duration) -> anyhow::Result<(f64, f64)> {
    let epoch = Instant::now();
    let mut sub = Client::connect(addr, None, "lat-sub").await?;
    sub.subscribe("lat/t", QoS::AtMostOnce).await?;
    let publisher = Client::connect(addr, None, "lat-pub").await?;
    let total = (rate as f64 * duration.as_secs_f64()) as usize;
    let receiver = tokio::spawn(async move {
        let (mut reader, _w) = sub.split();
        let mut samples = Vec::with_capacity(total);
        let mut batch = Vec::new();
        while samples.len() < total {
            match tokio::time::timeout(Duration::from_secs(2), reader.recv_batch(&mut batch)).await {
                Err(_) => break,
                Ok(r) => r?,
            }
            let now = epoch.elapsed().as_nanos() as u64;
            for p in batch.drain(..) {
                if let Packet::Publish(p) = p {
                    let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                    samples.push(now.saturating_sub(sent));
                }
            }
        }
        anyhow::Ok(samples)
    });
    let (_r, mut writer) = publisher.split();
    let topic = TopicName::parse("lat/t").unwrap();
    let per_tick = (rate / 1000).max(1) as usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0;
    let mut out = BytesMut::new();
    while sent < total {
        ticker.tick().await;
        for _ in 0..per_tick {
            let mut body = BytesMut::with_capacity(32);
            body.put_u64(epoch.elapsed().as_nanos() as u64);
            body.put_bytes(b'7', 24);
            put(&publish_packet(&topic, body.freeze(), QoS::AtMostOnce, 0), &mut out);
            // One write per message, as a device would send it.
            writer.write_all(&out).await?;
            out.clear();
        }
        sent += per_tick;
    }
    let mut samples = receiver.await??;
    // Drop the first 10% as warm-up.
    let warm = samples.len() / 10;
    samples.drain(..warm);
    samples.sort_unstable();
    if samples.is_empty() {
        bail!("no latency samples");
    }
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    Ok((pick(0.50), pick(0.99)))
}

/// Opens `n` idle connections; returns the broker's RSS growth per connection in bytes.
async fn idle_memory(broker: &Broker, n: usize) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = broker.rss_bytes()?;
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let permit = Arc::clone(&limit).acquire_owned().await?;
        // Spread over source addresses so ephemeral ports never run out.
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (i % 200) as u8 + 1));
        let addr = broker.addr;
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(addr, Some(source), &format!("idle-{i}")).await;
            drop(permit);
            c
        }));
    }
    let mut clients = Vec::with_capacity(n);
    for t in tasks {
        clients.push(t.await??);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = broker.rss_bytes()?;
    drop(clients);
    Ok((after.saturating_sub(before)) as f64 / n as f64)
}

fn raise_fd_limit() {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

struct Row {
    name: String,
    unit: &'static str,
    roost: Vec<f64>,
    mosquitto: Vec<f64>,
    higher_is_better: bool,
}

impl Row {
    fn print(&self) {
        let (r, m) = (median(self.roost.clone()), median(self.mosquitto.clone()));
        let ratio = if self.higher_is_better { r / m } else { m / r };
        println!(
            "| {} | {:.1} {} | {:.1} {} | {:.2}× {} |",
            self.name,
            r,
            self.unit,
            m,
            self.unit,
            ratio,
            if ratio >= 1.0 { "(Roost better)" } else { "(Mosquitto better)" }
        );
        eprintln!("  {}: roost {:?} mosquitto {:?}", self.name, self.roost, self.mosquitto);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    let want = |s: &str| args.only.iter().any(|o| o == s);
    let mut rows = Vec::new();
    let mut measure = |name: String, unit: &'static str, higher: bool| {
        rows.push(Row { name, unit, roost: Vec::new(), mosquitto: Vec::new(), higher_is_better: higher });
        rows.len() - 1
    };
    let fanin0 = measure("fan-in QoS 0, 4 → 1: delivered".into(), "msg/s", true);
    let fanin0_share = measure("fan-in QoS 0: share delivered".into(), "%", true);
    let fanin1 = measure("fan-in QoS 1, 4 → 1: delivered".into(), "msg/s", true);
    let fanin1_share = measure("fan-in QoS 1: share delivered".into(), "%", true);
    let persistent_online = measure("fan-in QoS 1, 4 → 1 persistent subscriber (online): delivered".into(), "msg/s", true);
    let persistent_online_share = measure("fan-in QoS 1 persistent: share delivered".into(), "%", true);
    let persistent_acked = measure("QoS 1, 4 publishers → offline persistent session: acknowledged".into(), "msg/s", true);
    let persistent_drained = measure("… its queue delivered on reconnect".into(), "msg/s", true);
    let fanout = measure("fan-out QoS 0, 1 → 8: delivered".into(), "msg/s", true);
    let fanout_share = measure("fan-out QoS 0: share delivered".into(), "%", true);
    let p50 = measure("latency p50 at 10k msg/s".into(), "µs", false);
    let p99 = measure("latency p99 at 10k msg/s".into(), "µs", false);
    let v5_fanin1 = measure("5.0: fan-in QoS 1, 4 → 1: delivered".into(), "msg/s", true);
    let v5_fanin1_share = measure("5.0: fan-in QoS 1: share delivered".into(), "%", true);
    let v5_fanout = measure("5.0: fan-out QoS 0, 1 → 8: delivered".into(), "msg/s", true);
    let v5_fanout_share = measure("5.0: fan-out QoS 0: share delivered".into(), "%", true);
    let v5_shared = measure("5.0: shared subscription QoS 1, 4 → 4 members: delivered".into(), "msg/s", true);
    let v5_shared_share = measure("5.0: shared subscription: share delivered".into(), "%", true);
    let idle: Vec<usize> = args.idle.iter().map(|n| measure(format!("memory per idle connection ({n})"), "bytes", false)).collect();
    for run in 0..args.runs {
        for kind in [Kind::Roost, Kind::Mosquitto] {
            eprintln!("run {} of {}: {kind:?}", run + 1, args.runs);
            let record = |rows: &mut Vec<Row>, i: usize, v: f64| match kind {
                Kind::Roost => rows[i].roost.push(v),
                Kind::Mosquitto => rows[i].mosquitto.push(v),
            };
            if want("fanin0") {
                let b = Broker::start(kind, &args).await?;
                let (rate, share) = fan_in(b.addr, 4, args.messages, QoS::AtMostOnce, true, ProtocolVersion::V311).await?;
                record(&mut rows, fanin0, rate);
                record(&mut rows, fanin0_share, share);
            }
            if want("fanin1") {
                let b = Broker::start(kind, &args).await?;
                let (rate, share) = fan_in(b.addr, 4, args.messages / 2, QoS::AtLeastOnce, true, ProtocolVersion::V311).await?;
                record(&mut rows, fanin1, rate);
                record(&mut rows, fanin1_share, share);
            }
            if want("persistent") {
                let b = Broker::start_with(kind, &args, None, true).await?;
                let (rate, share) = fan_in(b.addr, 4, args.messages / 2, QoS::AtLeastOnce, false, ProtocolVersion::V311).await?;
                record(&mut rows, persistent_online, rate);
                record(&mut rows, persistent_online_share, share);
                let b = Broker::start_with(kind, &args, None, true).await?;
                let per_publisher = (args.messages / 4).min(PERSISTENT_QUEUE / 4);
                let (acked, drained) = queue_for_offline(b.addr, 4, per_publisher).await?;
                record(&mut rows, persistent_acked, acked);
                record(&mut rows, persistent_drained, drained);
            }
            if want("fanout") {
                let b = Broker::start(kind, &args).await?;
                let (rate, share) = fan_out(b.addr, 8, args.messages / 2, ProtocolVersion::V311).await?;
                record(&mut rows, fanout, rate);
                record(&mut rows, fanout_share, share);
            }
            if want("v5") {
                let b = Broker::start(kind, &args).await?;
                let (rate, share) = fan_in(b.addr, 4, args.messages / 2, QoS::AtLeastOnce, true, ProtocolVersion::V5).await?;
                record(&mut rows, v5_fanin1, rate);
                record(&mut rows, v5_fanin1_share, share);
                let b = Broker::start(kind, &args).await?;
                let (rate, share) = fan_out(b.addr, 8, args.messages / 2, ProtocolVersion::V5).await?;
                record(&mut rows, v5_fanout, rate);
                record(&mut rows, v5_fanout_share, share);
                let b = Broker::start(kind, &args).await?;
                let (rate, share) = shared_fan_in(b.addr, 4, 4, args.messages / 2, ProtocolVersion::V5).await?;
                record(&mut rows, v5_shared, rate);
                record(&mut rows, v5_shared_share, share);
            }
            if want("latency") {
                let b = Broker::start(kind, &args).await?;
                let (a, z) = latency(b.addr, 10_000, Duration::from_secs(5)).await?;
                record(&mut rows, p50, a);
                record(&mut rows, p99, z);
            }
            if want("idle") {
                for (i, n) in args.idle.iter().enumerate() {
                    let b = Broker::start(kind, &args).await?;
                    record(&mut rows, idle[i], idle_memory(&b, *n).await?);
                }
            }
        }
    }
    if want("ingest") {
        ingest_table(&args).await?;
    }
    if want("fleet") {
        fleet_table(&args).await?;
    }
    if want("restore") {
        restore_table(&args).await?;
    }
    if rows.iter().all(|r| r.roost.is_empty()) {
        return Ok(());
    }
    println!("| scenario | Roost | Mosquitto | ratio |");
    println!("|---|---|---|---|");
    for row in rows.iter().filter(|r| !r.roost.is_empty()) {
        row.print();
    }
    Ok(())
}

async fn ingest_table(args: &Args) -> anyhow::Result<()> {
    const PER_PUBLISHER: usize = 50_000;
    println!("| database | sensors | committed readings/s | publish→PUBACK p50 | p99 | Roost's CPU per reading |");
    println!("|---|---|---|---|---|---|");
    for db in &args.databases {
        for &sensors in &args.ingest_sensors {
            let (mut rates, mut p50, mut p99, mut cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for run in 0..args.runs {
                eprintln!("ingest run {} of {} on {db}, {sensors} sensors", run + 1, args.runs);
                let database = BenchDatabase::fresh(db, 0).await?;
                let broker = Broker::start_on(Kind::Roost, args, Some(&database.url)).await?;
                let before = broker.cpu_time();
                let r = ingest::run(broker.addr, args.ingest_publishers, sensors, PER_PUBLISHER, 100).await?;
                let readings = (args.ingest_publishers * PER_PUBLISHER) as f64;
                cpu.push(match (before, broker.cpu_time()) {
                    (Some(before), Some(after)) => (after - before).as_secs_f64() * 1e6 / readings,
                    _ => f64::NAN,
                });
                rates.push(r.rows_per_sec);
                p50.push(r.p50_ms);
                p99.push(r.p99_ms);
            }
            eprintln!("  {db}, {sensors} sensors: rates {rates:?} p99 {p99:?} cpu {cpu:?}");
            let name = db.split("://").next().unwrap_or(db);
            println!(
                "| {name} | {sensors} | {:.0} | {:.1} ms | {:.1} ms | {:.1} µs |",
                median(rates),
                median(p50),
                median(p99),
                median(cpu)
            );
        }
    }
    Ok(())
}

/// A database for one Roost run: a fresh SQLite file, or a server database dropped and
/// re-created; optionally with `preload` sensors already stored.
struct BenchDatabase {
    url: String,
    _dir: tempfile::TempDir,
}

impl BenchDatabase {
    async fn fresh(db: &str, preload: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = databases::fresh_url(db, dir.path(), "roost.db")?;
        if preload > 0 {
            preload_sensors(&url, preload).await?;
        }
        Ok(Self { url, _dir: dir })
    }
}

/// Stores `count` sensors (`iot/pre<N>/sensor/room/temperature`, one reading each) in the
/// database at `url`, creating its schema.
pub async fn preload_sensors(url: &str, count: usize) -> anyhow::Result<()> {
    use roost::model::{Reading, SensorKey, TimestampMs};
    use roost::store::{Batch, DatabaseUrl, Store};
    let store = Store::open(&DatabaseUrl::new(url)).await?;
    let sensors: Vec<usize> = (0..count).collect();
    for chunk in sensors.chunks(10_000) {
        let readings = chunk
            .iter()
            .map(|i| {
                Ok(Reading {
                    sensor: SensorKey::new(&format!("pre{i}"), "room", "temperature").map_err(|r| anyhow::anyhow!("{r}"))?,
                    ts: TimestampMs::now(),
                    value: 1.0,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        store.write_batch(&Batch { readings, ..Batch::default() }).await?;
    }
    store.close().await;
    eprintln!("    {count} sensors preloaded");
    Ok(())
}

/// Fleet runs: per device count, Mosquitto then Roost on each database, alternating runs.
async fn fleet_table(args: &Args) -> anyhow::Result<()> {
    let shape = |devices| fleet::Shape {
        devices,
        in_flight: args.inflight,
        sensors_per_device: args.sensors_per_device,
        warm_up: Duration::from_secs(args.fleet_seconds.div_ceil(3)),
        measure: Duration::from_secs(args.fleet_seconds),
    };
    // (rates, CPU µs per acknowledged publish) per broker, per device count.
    type Samples = (Vec<f64>, Vec<f64>);
    let targets: Vec<Option<&str>> = std::iter::once(None).chain(args.databases.iter().map(|d| Some(d.as_str()))).collect();
    let mut samples: Vec<Vec<Samples>> = vec![vec![(Vec::new(), Vec::new()); targets.len()]; args.devices.len()];
    for run in 0..args.runs {
        for (d, &devices) in args.devices.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                eprintln!(
                    "fleet run {} of {}: {devices} devices × {} in flight × {} sensors on {}",
                    run + 1,
                    args.runs,
                    args.inflight,
                    args.sensors_per_device,
                    target.unwrap_or("mosquitto")
                );
                let database = match target {
                    Some(db) => Some(BenchDatabase::fresh(db, args.preload_sensors).await?),
                    None => None,
                };
                let history = devices * args.sensors_per_device.max(1) * args.fleet_history;
                if let (Some(database), true) = (&database, history > 0) {
                    let store = roost::store::Store::open(&roost::store::DatabaseUrl::new(database.url.clone())).await?;
                    let keys: Vec<roost::model::SensorKey> =
                        (0..devices).flat_map(|d| (0..args.sensors_per_device.max(1)).map(move |k| fleet::sensor_key(d, k))).collect();
                    history::store_history(&store, &keys, args.fleet_history, roost::model::TimestampMs::now().0).await?;
                    store.close().await;
                }
                let kind = if target.is_some() { Kind::Roost } else { Kind::Mosquitto };
                let broker = Broker::start_on(kind, args, database.as_ref().map(|d| d.url.as_str())).await?;
                let mut cpu = Vec::new();
                let result = fleet::run(broker.addr, shape(devices), || cpu.extend(broker.cpu_time())).await?;
                let cpu_per_publish = match cpu[..] {
                    [start, end] => (end - start).as_secs_f64() * 1e6 / (result.acked_per_sec * args.fleet_seconds as f64),
                    _ => f64::NAN,
                };
                eprintln!("    {:.0} acknowledged/s, {cpu_per_publish:.1} µs CPU each", result.acked_per_sec);
                if let (Some(database), false) = (&database, args.attach.is_some()) {
                    // Every acknowledged publish must be a committed row, once.
                    let store = roost::store::Store::connect(&roost::store::DatabaseUrl::new(database.url.clone())).await?;
                    let stored = store.count_readings().await? as u64 - args.preload_sensors as u64 - history as u64;
                    store.close().await;
                    anyhow::ensure!(stored == result.acked_total, "{} acknowledged but {stored} stored", result.acked_total);
                }
                samples[d][t].0.push(result.acked_per_sec);
                samples[d][t].1.push(cpu_per_publish);
            }
        }
    }
    println!("| devices × in flight | distinct sensors | broker | acknowledged/s | vs Mosquitto | broker CPU per publish |");
    println!("|---|---|---|---|---|---|");
    for (d, devices) in args.devices.iter().enumerate() {
        let mosquitto = median(samples[d][0].0.clone());
        for (t, target) in targets.iter().enumerate() {
            let (rates, cpu) = &samples[d][t];
            let rate = median(rates.clone());
            let name = match target {
                None => "Mosquitto (stores nothing)".to_owned(),
                Some(db) => format!("Roost, {}", db.split("://").next().unwrap_or(db)),
            };
            eprintln!("  {devices} devices, {name}: rates {rates:?} cpu {cpu:?}");
            let sensors = devices * args.sensors_per_device.max(1) + args.preload_sensors;
            let history =
                if args.fleet_history > 0 { format!(" ({} readings each stored before)", args.fleet_history) } else { String::new() };
            println!(
                "| {devices} × {} | {sensors}{history} | {name} | {rate:.0} | {:.2}× | {:.1} µs |",
                args.inflight,
                rate / mosquitto,
                median(cpu.clone())
            );
        }
    }
    Ok(())
}

/// `--only restore`: Roost's start-up with a large stored broker state: time from start until
/// it listens, and its memory then, per database.
async fn restore_table(args: &Args) -> anyhow::Result<()> {
    println!(
        "| database | retained | persistent sessions (1 subscription, 1 queued message each) | start → listening | RSS after start | peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for db in &args.databases {
        let (mut startup, mut rss, mut peak) = (Vec::new(), Vec::new(), Vec::new());
        let database = BenchDatabase::fresh(db, 0).await?;
        let filled = Instant::now();
        preload_broker_state(&database.url, args.restore_retained, args.restore_sessions).await?;
        eprintln!("restore: {db} filled in {:?}", filled.elapsed());
        for run in 0..args.runs {
            let started = Instant::now();
            let broker = Broker::start_on(Kind::Roost, args, Some(&database.url)).await?;
            startup.push(started.elapsed().as_secs_f64());
            rss.push(broker.rss_bytes()? as f64 / (1024.0 * 1024.0));
            peak.push(broker.peak_rss_bytes()? as f64 / (1024.0 * 1024.0));
            eprintln!("restore run {} of {} on {db}: {:?}, {:.0} MiB", run + 1, args.runs, started.elapsed(), rss.last().unwrap());
        }
        let name = db.split("://").next().unwrap_or(db);
        println!(
            "| {name} | {} | {} | {:.1} s | {:.0} MiB | {:.0} MiB |",
            args.restore_retained,
            args.restore_sessions,
            median(startup),
            median(rss),
            median(peak)
        );
    }
    Ok(())
}

/// Stores `retained` retained messages (`state/<N>/status`, 16 bytes each) and `sessions`
/// persistent sessions (`dev-<N>`, subscribed to `cmd/<N>/#`, one queued 16-byte message each).
async fn preload_broker_state(url: &str, retained: usize, sessions: usize) -> anyhow::Result<()> {
    use roost::store::{DatabaseUrl, QueueRow, SessionRow, StateBatch, Store, StoredMessage, SubscriptionRow};
    const CHUNK: usize = 20_000;
    let store = Store::open(&DatabaseUrl::new(url)).await?;
    let message = |topic: String, retain| StoredMessage { topic, payload: b"0123456789abcdef".to_vec(), qos: 1, retain, properties: None };
    for start in (0..retained).step_by(CHUNK) {
        let batch = StateBatch {
            retained: (start..(start + CHUNK).min(retained)).map(|i| message(format!("state/{i}/status"), true)).collect(),
            ..StateBatch::default()
        };
        store.write_broker_state(&batch).await?;
    }
    for start in (0..sessions).step_by(CHUNK) {
        let range = start..(start + CHUNK).min(sessions);
        let batch = StateBatch {
            sessions: range
                .clone()
                .map(|i| SessionRow { client_id: format!("dev-{i}"), username: None, offline_since: Some(0), expiry_secs: None })
                .collect(),
            subscribed: range
                .clone()
                .map(|i| SubscriptionRow { client_id: format!("dev-{i}"), filter: format!("cmd/{i}/#"), qos: 1, options: 0 })
                .collect(),
            queued: range
                .map(|i| QueueRow {
                    seq: i as i64 + 1,
                    client_id: format!("dev-{i}"),
                    message: message(format!("cmd/{i}/set"), false),
                    packet_id: None,
                    released: false,
                })
                .collect(),
            ..StateBatch::default()
        };
        store.write_broker_state(&batch).await?;
    }
    store.close().await;
    Ok(())
}
