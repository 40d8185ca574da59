//! scale-bench: Roost nodes taking readings from one Mosquitto (`serve --upstream`, a shared
//! subscription) into one PostgreSQL database; 1, 2, 3 … nodes side by side in one run. For each
//! count: readings stored per second (publish start to the last reading committed), and CPU
//! time per reading of the Roost nodes together, of PostgreSQL (all its processes) and of
//! Mosquitto. Then a run with one node killed with SIGKILL mid-run and started again: every
//! reading Mosquitto acknowledged must be stored; duplicates are counted.
//!
//! `cargo build --release --workspace && target/release/scale-bench --runs 3`

#[path = "client.rs"]
#[allow(dead_code)]
mod client;
#[path = "cpu.rs"]
mod cpu;
#[path = "databases.rs"]
#[allow(dead_code)] // `fresh_url`: scale-out runs on PostgreSQL only, re-created as given
mod databases;
mod launch;
#[path = "stats.rs"]
mod stats;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use client::{publish_packet, put, Client};
use mqtt_codec::{Packet, QoS, TopicName};
use stats::median;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
struct Args {
    /// Runs per node count; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Node counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 3])]
    nodes: Vec<usize>,
    /// Readings published per run.
    #[arg(long, default_value_t = 200_000)]
    readings: usize,
    /// Publishers (each keeps 100 QoS 1 publishes in flight to Mosquitto).
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// Distinct sensors the readings go to, in turn.
    #[arg(long, default_value_t = 1000)]
    sensors: usize,
    /// The PostgreSQL database, dropped and re-created for each run.
    #[arg(long, default_value = "postgres://root@127.0.0.1:5432/roost_bench")]
    database: String,
    /// Mosquitto's `max_inflight_messages`: the window of unacknowledged messages to each node.
    #[arg(long, default_value_t = 1000)]
    upstream_window: usize,
    /// The roost binary (default: next to this one).
    #[arg(long)]
    roost: Option<PathBuf>,
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How long a server may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(20);

struct Mosquitto {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    async fn start(args: &Args) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest none\n\
                 max_inflight_messages {}\nmax_queued_messages 0\n",
                args.upstream_window
            ),
        )?;
        let child = Command::new(&args.mosquitto).arg("-c").arg(&conf).kill_on_drop(true).spawn().context("starting mosquitto")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        launch::wait_listening(addr, "mosquitto", START_LIMIT).await?;
        Ok(Self { addr, child, _dir: dir })
    }
}

struct Node {
    child: Child,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(args: &Args, name: &str, upstream: SocketAddr) -> anyhow::Result<Self> {
        let bin = launch::roost_binary(args.roost.as_deref())?;
        let dir = tempfile::tempdir()?;
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let child = Command::new(bin)
            .args(["serve", "--allow-anonymous", "--mqtt-listeners", "off", "--node-id", name])
            .args(["--upstream", &format!("mqtt://{upstream}"), "--database", &args.database])
            .args(["--http-listen", &http.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            // sqlx logs a slow statement whole (thousands of placeholders): errors only.
            .env("RUST_LOG", "warn,sqlx=error")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting roost")?;
        let node = Self { child, http, _dir: dir };
        launch::wait_listening(http, "roost", START_LIMIT).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while node.metric("roost_upstream_connected").await? < 1.0 {
            if Instant::now() > deadline {
                bail!("node {name} did not connect upstream");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(node)
    }

    /// One sample of this node's `/metrics`.
    async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let mut stream = tokio::net::TcpStream::connect(self.http).await?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: roost\r\n\r\n").await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        let line = body.lines().find(|l| l.split_whitespace().next() == Some(name)).with_context(|| format!("{name} not in /metrics"))?;
        Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }
}

/// CPU time (user + system) of a process so far; zero once it is gone.
fn cpu_time(pid: u32) -> Duration {
    cpu::cpu_time(pid).unwrap_or_default()
}

/// CPU time of every process whose command is `name` (PostgreSQL's server and backends).
fn cpu_time_of_all(name: &str) -> Duration {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name) {
            total += cpu_time(pid);
        }
    }
    total
}

/// Publishes `count` numbered readings (the payload is the number) over `sensors` topics, at
/// QoS 1 with 100 in flight, as fast as Mosquitto takes them.
async fn publish(addr: SocketAddr, id: usize, first: usize, count: usize, sensors: usize, acked: Arc<AtomicUsize>) -> anyhow::Result<()> {
    const WINDOW: u32 = 100;
    let client = Client::connect(addr, None, &format!("scale-pub-{id}")).await?;
    let (mut reader, mut writer) = client.split();
    let window = Arc::new(Semaphore::new(WINDOW as usize));
    let permits = Arc::clone(&window);
    let reading = tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut done = 0;
        while done < count {
            reader.recv_batch(&mut batch).await?;
            let n = batch.drain(..).filter(|p| matches!(p, Packet::PubAck(_))).count();
            done += n;
            acked.fetch_add(n, Relaxed);
            permits.add_permits(n);
        }
        anyhow::Ok(())
    });
    let topics: Vec<TopicName> =
        (0..sensors).map(|s| TopicName::parse(&format!("iot/scale/sensor/s{s}/t")).expect("a valid topic")).collect();
    let mut out = BytesMut::new();
    let mut next_id: u16 = 0;
    for n in first..first + count {
        window.acquire().await?.forget();
        next_id = next_id.checked_add(1).unwrap_or(1);
        put(&publish_packet(&topics[n % sensors], Bytes::from(n.to_string()), QoS::AtLeastOnce, next_id), &mut out);
        if out.len() > 16 * 1024 || window.available_permits() == 0 || n + 1 == first + count {
            writer.write_all(&out).await?;
            out.clear();
        }
    }
    reading.await??;
    Ok(())
}

struct Measured {
    rate: f64,
    roost_us: f64,
    postgres_us: f64,
    mosquitto_us: f64,
    per_node: Vec<f64>,
}

/// One run with `n` nodes; with `kill`, the first node is killed with SIGKILL after a third of
/// the readings were acknowledged by Mosquitto and started again a second later.
async fn run_once(args: &Args, n: usize, kill: bool) -> anyhow::Result<(Measured, usize, usize)> {
    databases::recreate(&args.database)?;
    let mosquitto = Mosquitto::start(args).await?;
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node::start(args, &format!("n{i}"), mosquitto.addr).await?);
    }
    let cpu_before: Vec<Duration> = nodes.iter().map(|node| cpu_time(node.pid())).collect();
    let (pg_before, mosq_before) = (cpu_time_of_all("postgres"), cpu_time(mosquitto.child.id().expect("running")));
    let started = Instant::now();
    let acked = Arc::new(AtomicUsize::new(0));
    let per = args.readings / args.publishers;
    let total = per * args.publishers;
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        publishers.push(tokio::spawn(publish(mosquitto.addr, p, p * per, per, args.sensors, Arc::clone(&acked))));
    }
    let mut killed_cpu = Duration::ZERO;
    if kill {
        while acked.load(Relaxed) < total / 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        killed_cpu = cpu_time(nodes[0].pid()) - cpu_before[0];
        nodes[0].child.start_kill()?;
        nodes[0].child.wait().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        nodes[0] = Node::start(args, "n0", mosquitto.addr).await?;
    }
    for p in publishers {
        p.await??;
    }
    let store = roost::store::Store::open(&roost::store::DatabaseUrl::new(args.database.clone())).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut committed, mut per_node) = (0.0, vec![0.0; n]);
    while committed < total as f64 {
        if Instant::now() > deadline {
            bail!("only {committed} of {total} readings committed after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (i, node) in nodes.iter().enumerate() {
            per_node[i] = node.metric("roost_readings_committed_total").await?;
        }
        committed = per_node.iter().sum();
        if kill {
            // The killed node's counter started again: count what is in the database instead.
            committed = store.count_readings().await? as f64;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut roost_cpu = killed_cpu;
    for (i, node) in nodes.iter().enumerate() {
        roost_cpu += cpu_time(node.pid()).saturating_sub(if kill && i == 0 { Duration::ZERO } else { cpu_before[i] });
    }
    let per_reading = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
    let measured = Measured {
        rate: total as f64 / elapsed,
        roost_us: per_reading(roost_cpu),
        postgres_us: per_reading(cpu_time_of_all("postgres").saturating_sub(pg_before)),
        mosquitto_us: per_reading(cpu_time(mosquitto.child.id().expect("running")).saturating_sub(mosq_before)),
        per_node: per_node.iter().map(|c| c / elapsed).collect(),
    };
    // Every reading Mosquitto acknowledged is stored; how many twice.
    let mut seen = std::collections::HashMap::<u64, usize>::new();
    for (_, value) in store.all_values().await? {
        *seen.entry(value as u64).or_insert(0) += 1;
    }
    let missing = (0..total as u64).filter(|v| !seen.contains_key(v)).count();
    let twice = seen.values().filter(|c| **c > 1).count();
    store.close().await;
    for mut node in nodes {
        let _ = node.child.start_kill();
        let _ = node.child.wait().await;
    }
    Ok((measured, missing, twice))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "{} readings from {} QoS 1 publishers over {} sensors → Mosquitto (max_inflight_messages {}) → N nodes → PostgreSQL; medians of {} runs\n",
        args.readings, args.publishers, args.sensors, args.upstream_window, args.runs
    );
    println!("| nodes | stored readings/s | per node | Roost CPU µs/reading (all nodes) | PostgreSQL CPU µs/reading | Mosquitto CPU µs/reading |");
    println!("|---|---|---|---|---|---|");
    for &n in &args.nodes {
        let mut runs = Vec::new();
        for run in 0..args.runs {
            eprintln!("{n} node(s), run {} of {}", run + 1, args.runs);
            let (measured, missing, _) = run_once(&args, n, false).await?;
            anyhow::ensure!(missing == 0, "{missing} acknowledged readings missing");
            runs.push(measured);
        }
        let per_node: Vec<String> = (0..n).map(|i| format!("{:.0}", median(runs.iter().map(|m| m.per_node[i]).collect()))).collect();
        println!(
            "| {n} | {:.0} | {} | {:.1} | {:.1} | {:.1} |",
            median(runs.iter().map(|m| m.rate).collect()),
            per_node.join(" / "),
            median(runs.iter().map(|m| m.roost_us).collect()),
            median(runs.iter().map(|m| m.postgres_us).collect()),
            median(runs.iter().map(|m| m.mosquitto_us).collect()),
        );
    }
    let n = args.nodes.iter().copied().max().unwrap_or(2).max(2);
    eprintln!("{n} nodes, one killed with SIGKILL and started again");
    let (measured, missing, twice) = run_once(&args, n, true).await?;
    println!(
        "\n{n} nodes, the first killed with SIGKILL after a third of the readings and started again a second later: \
         {:.0} readings/s; of {} readings Mosquitto acknowledged, {missing} missing, {twice} stored twice",
        measured.rate,
        (args.readings / args.publishers) * args.publishers
    );
    anyhow::ensure!(missing == 0, "{missing} acknowledged readings missing after the kill");
    Ok(())
}
