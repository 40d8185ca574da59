//! The crash test: QoS 1 publishers run flat out, the Roost process is killed with SIGKILL at a
//! random moment; after it, every publish that had been acknowledged is in `readings`.
//! Repeated several times per database.

use crate::databases::{Backend, TestDb};
use bytes::{Bytes, BytesMut};
use mqtt_codec::*;
use roost::store::{DatabaseUrl, Store};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Child;

const ROUNDS: u64 = 4;
const PUBLISHERS: u64 = 3;
const WINDOW: usize = 20;

/// Starts the `roost` binary on `database` and returns it with its MQTT address.
pub async fn spawn_roost(database: &DatabaseUrl) -> (Child, SocketAddr) {
    spawn_roost_with(database, &[]).await
}

/// [`spawn_roost`] with more `serve` flags.
pub async fn spawn_roost_with(database: &DatabaseUrl, flags: &[&str]) -> (Child, SocketAddr) {
    spawn_roost_ready(database, flags, "MQTT listening").await
}

/// [`spawn_roost_with`], returning once the server also logged `ready` (e.g. that a task it
/// starts is running).
pub async fn spawn_roost_ready(database: &DatabaseUrl, flags: &[&str], ready: &str) -> (Child, SocketAddr) {
    spawn(database, &[&["--allow-anonymous"], flags].concat(), ready).await
}

/// [`spawn_roost`] with authentication on (the default: clients log in as users of `database`).
pub async fn spawn_roost_with_logins(database: &DatabaseUrl) -> (Child, SocketAddr) {
    spawn(database, &[], "MQTT listening").await
}

async fn spawn(database: &DatabaseUrl, flags: &[&str], ready: &str) -> (Child, SocketAddr) {
    // A data directory of its own (it holds only roost-serve.json here): servers started by
    // tests at once must not share the working directory's, and one server of a test may be
    // killed while the next starts. Removed when the log task below ends: at the server's
    // exit, or when the test's runtime drops the task.
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = crate::support::roost_command("info")
        .arg("serve")
        .args(crate::support::ANY_PORTS)
        .args(["--database", database.expose_secret()])
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(flags)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let ready = ready.to_owned();
    tokio::spawn(async move {
        let _data_dir = data_dir;
        let (mut tx, mut ready_tx) = (Some(tx), Some(ready_tx));
        // Keep draining so the child never blocks on a full pipe.
        while let Ok(Some(line)) = lines.next_line().await {
            // Shown when a test fails (the harness keeps a passing test's output to itself).
            eprintln!("roost: {line}");
            if line.contains("MQTT listening") {
                let addr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap().parse::<SocketAddr>().unwrap();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr);
                }
            }
            if line.contains(&ready) {
                if let Some(ready_tx) = ready_tx.take() {
                    let _ = ready_tx.send(());
                }
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(20), rx).await.expect("roost started").expect("address logged");
    tokio::time::timeout(Duration::from_secs(20), ready_rx).await.expect("roost ready").expect("ready logged");
    (child, addr)
}

/// Publishes unique values with up to WINDOW in flight until the connection dies; returns the
/// values whose PUBACK arrived.
async fn publish_until_killed(addr: SocketAddr, topic: String, first_value: u64, progress: Arc<AtomicUsize>) -> Vec<f64> {
    let mut acked = Vec::new();
    let Ok(mut stream) = TcpStream::connect(addr).await else { return acked };
    let mut out = BytesMut::new();
    let connect = crate::support::connect(&format!("crash-{topic}"), true);
    encode(&Packet::Connect(connect), ProtocolVersion::V311, &mut out).unwrap();
    if stream.write_all(&out).await.is_err() {
        return acked;
    }
    let topic = TopicName::parse(&topic).unwrap();
    let mut buf = BytesMut::new();
    let mut inflight: HashMap<u16, f64> = HashMap::new();
    let mut next = first_value;
    let mut id: u16 = 0;
    let mut connected = false;
    loop {
        out.clear();
        while connected && inflight.len() < WINDOW {
            id = id % 60_000 + 1;
            let value = next as f64;
            next += 1;
            inflight.insert(id, value);
            let publish = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: Some(topic.clone()),
                packet_id: NonZeroU16::new(id),
                payload: Bytes::from(value.to_string()),
                properties: Properties::default(),
            };
            encode(&Packet::Publish(publish), ProtocolVersion::V311, &mut out).unwrap();
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return acked;
        }
        match decode(&mut buf, ProtocolVersion::V311, usize::MAX) {
            Ok(Some(Packet::ConnAck(_))) => connected = true,
            Ok(Some(Packet::PubAck(ack))) => {
                acked.extend(inflight.remove(&ack.packet_id.get()));
                progress.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return acked,
                Ok(_) => {}
            },
            Err(e) => panic!("bad packet from roost: {e}"),
        }
    }
}

async fn acknowledged_readings_survive_sigkill(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut acked_total = 0;
    for round in 0..ROUNDS {
        let (mut roost, addr) = spawn_roost(&db.url).await;
        let progress = Arc::new(AtomicUsize::new(0));
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let topic = format!("iot/crash/sensor/p{p}/value");
                tokio::spawn(publish_until_killed(addr, topic, round * 10_000_000 + p * 1_000_000, Arc::clone(&progress)))
            })
            .collect();
        // Kill at a different moment each round, once publishing is in full flow (however slow
        // the machine is): after the first acknowledgements, plus a random delay.
        let started = tokio::time::Instant::now();
        while progress.load(Ordering::Relaxed) < 100 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let jitter = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis() % 400;
        tokio::time::sleep(Duration::from_millis(100 + u64::from(jitter))).await;
        roost.start_kill().unwrap(); // SIGKILL
        roost.wait().await.unwrap();
        let mut acked = Vec::new();
        for (p, publisher) in publishers.into_iter().enumerate() {
            acked.extend(publisher.await.unwrap().into_iter().map(|v| (format!("p{p}"), v)));
        }
        assert!(!acked.is_empty(), "round {round}: nothing was acknowledged before the kill");
        acked_total += acked.len();
        // A new process opens the same database (recovering SQLite's WAL) and checks.
        let store = Store::open(&db.url).await.unwrap();
        let stored: HashSet<(String, u64)> =
            store.all_values().await.unwrap().into_iter().map(|(k, v)| (k.place.into(), v.to_bits())).collect();
        let missing: Vec<_> = acked.iter().filter(|(p, v)| !stored.contains(&(p.clone(), v.to_bits()))).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged readings lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        store.close().await;
    }
    eprintln!("{backend:?}: {acked_total} acknowledged readings over {ROUNDS} SIGKILLs, none lost");
}

crate::on_every_database!(acknowledged_readings_survive_sigkill);
