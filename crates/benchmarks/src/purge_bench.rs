//! purge-bench: what a retention purge of millions of old readings costs ingest. Fills a fresh
//! SQLite database with `--rows` readings 40 days old, then runs `roost serve` on it twice with
//! the same load (`--devices` QoS 1 publishers, one reading in flight each, a sensor each):
//! once with `--retention forever` (no purge: the baseline), once with `--retention 30d` (the
//! purge at start deletes every old row while the load runs, until `/metrics` says it is done).
//! Prints publish → PUBACK latency (p50, p99, max) and acknowledgements per second for both.
//!
//! `cargo run --release -p roost-benchmarks --bin purge-bench -- --rows 10000000`

#[allow(dead_code)] // shared with broker-bench, which uses all of it
mod client;
mod launch;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use client::{publish_packet, Client};
use mqtt_codec::{Packet, QoS, TopicName};
use roost::model::{Reading, SensorKey, TimestampMs};
use roost::store::{Batch, DatabaseUrl, Store};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;

#[derive(Debug, Parser)]
struct Args {
    /// Old readings stored before the purge.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Sensors the old readings belong to.
    #[arg(long, default_value_t = 1000)]
    sensors: u64,
    /// Publishers, one QoS 1 reading in flight each.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Seconds the baseline load runs.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The roost binary (default: next to this one).
    #[arg(long)]
    roost: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("roost.db").display());
    fill(&url, &args).await?;
    println!("| phase | acks/s | p50 | p99 | max | purge |");
    println!("|---|---|---|---|---|---|");
    for retention in ["forever", "30d"] {
        let server = Server::start(&args, &url, retention).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn(load(server.mqtt, args.devices, Arc::clone(&stop)));
        let started = Instant::now();
        let mut purge = String::from("none");
        if retention == "forever" {
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        } else {
            // The purge is done when its rows are counted in /metrics.
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let purged = server.metric("roost_purged_rows_total").await?;
                if purged >= args.rows {
                    let secs = started.elapsed().as_secs_f64();
                    purge = format!("{} rows in {secs:.0} s ({:.0} rows/s)", purged, purged as f64 / secs);
                    break;
                }
                if started.elapsed() > Duration::from_secs(3600) {
                    bail!("the purge did not finish within an hour ({purged} rows)");
                }
            }
        }
        stop.store(true, Relaxed);
        let (acks, mut latencies) = load.await??;
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)] as f64 / 1000.0;
        let phase = if retention == "forever" { "ingest alone" } else { "ingest during the purge" };
        println!("| {phase} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {purge} |", acks as f64 / elapsed, at(0.5), at(0.99), at(1.0));
        drop(server);
    }
    Ok(())
}

/// `--rows` readings spread over `--sensors` sensors, 41 to 40 days old.
async fn fill(url: &str, args: &Args) -> anyhow::Result<()> {
    let store = Store::open(&DatabaseUrl::new(url.to_owned())).await?;
    let keys: Vec<SensorKey> =
        (0..args.sensors).map(|i| SensorKey::new("old", &format!("board{i}"), "temperature").expect("a valid key")).collect();
    let start = TimestampMs::now().0 - 41 * 86_400_000;
    let per_sensor = args.rows / args.sensors;
    let step = 86_400_000 / per_sensor as i64;
    let filled = Instant::now();
    let mut batch = Batch::default();
    for i in 0..per_sensor {
        for key in &keys {
            batch.readings.push(Reading { sensor: key.clone(), ts: TimestampMs(start + i as i64 * step), value: (i % 100) as f64 / 4.0 });
        }
        if batch.readings.len() >= 20_000 {
            store.write_batch(&batch).await?;
            batch.readings.clear();
        }
    }
    store.write_batch(&batch).await?;
    eprintln!("filled {} rows in {:.0} s", per_sensor * args.sensors, filled.elapsed().as_secs_f64());
    store.close().await;
    Ok(())
}

struct Server {
    mqtt: SocketAddr,
    http: SocketAddr,
    _child: tokio::process::Child,
    /// Its data directory (declared after the child: removed once the child is gone).
    _data_dir: tempfile::TempDir,
}

impl Server {
    async fn start(args: &Args, url: &str, retention: &str) -> anyhow::Result<Self> {
        let free = || -> anyhow::Result<SocketAddr> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?) };
        let (mqtt, http) = (free()?, free()?);
        let data_dir = tempfile::tempdir()?;
        let child = Command::new(launch::roost_binary(args.roost.as_deref())?)
            .args(["serve", "--allow-anonymous", "--max-connections-per-ip", "0", "--mqtt-ws-listen", "127.0.0.1:0"])
            .args(["--mqtt-listen", &mqtt.to_string(), "--http-listen", &http.to_string(), "--database", url, "--retention", retention])
            // Its own data directory (roost-serve.json), as in broker-bench.
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting roost")?;
        launch::wait_listening(mqtt, "roost", Duration::from_secs(30)).await?;
        Ok(Self { mqtt, http, _child: child, _data_dir: data_dir })
    }

    /// A value from `/metrics` (plain HTTP/1.0, no client library needed).
    async fn metric(&self, name: &str) -> anyhow::Result<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.http).await?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).with_context(|| format!("no {name} in /metrics"))?;
        Ok(line.rsplit(' ').next().unwrap_or("0").parse()?)
    }
}

/// `devices` publishers with one QoS 1 reading in flight each, until `stop`: acknowledgements
/// and each publish's latency to its PUBACK in microseconds.
async fn load(broker: SocketAddr, devices: usize, stop: Arc<AtomicBool>) -> anyhow::Result<(u64, Vec<u32>)> {
    let mut tasks = Vec::with_capacity(devices);
    for device in 0..devices {
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(broker, None, &format!("purge-bench-{device}")).await?;
            let topic = TopicName::parse(&format!("iot/new/sensor/board{device}/temperature")).expect("a valid topic");
            let mut latencies = Vec::new();
            let mut id = 0u16;
            while !stop.load(Relaxed) {
                id = id % 65_535 + 1;
                let sent = Instant::now();
                client.send(&publish_packet(&topic, Bytes::from_static(b"21.5"), QoS::AtLeastOnce, id)).await?;
                loop {
                    if let Packet::PubAck(_) = client.recv().await? {
                        break;
                    }
                }
                latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok((all.len() as u64, all))
}
