//! Durable ingest end to end: N QoS 1 publishers → Roost → database. Every PUBACK means a
//! committed row, so acknowledged publishes per second is committed rows per second; the
//! latency is publish → PUBACK.

use crate::client::{publish_packet, put, Client, Reader};
use bytes::{Bytes, BytesMut};
use mqtt_codec::{Packet, QoS, TopicName};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

pub struct IngestResult {
    pub rows_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `publishers` clients each publish `per_publisher` readings with `window` in flight, cycling
/// through their share of `sensors` distinct sensors.
pub async fn run(addr: SocketAddr, publishers: usize, sensors: usize, per_publisher: usize, window: usize) -> anyhow::Result<IngestResult> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let client = Client::connect(addr, None, &format!("ingest-bench-{p}")).await?;
        let topics = (p..sensors.max(publishers))
            .step_by(publishers)
            .map(|s| TopicName::parse(&format!("iot/bench/sensor/s{s}/value")))
            .collect::<Result<Vec<_>, _>>()?;
        tasks.push(tokio::spawn(publish_and_time(client, topics, per_publisher, window)));
    }
    let mut latencies = Vec::with_capacity(publishers * per_publisher);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    Ok(IngestResult { rows_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(), p50_ms: pick(0.5), p99_ms: pick(0.99) })
}

async fn publish_and_time(client: Client, topics: Vec<TopicName>, count: usize, window: usize) -> anyhow::Result<Vec<Duration>> {
    let (reader, mut writer) = client.split();
    let sent_at: Arc<Mutex<HashMap<u16, Instant>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(window));
    let acks = tokio::spawn(read_acks(reader, Arc::clone(&sent_at), Arc::clone(&permits), count));
    let mut out = BytesMut::new();
    let mut id: u16 = 0;
    let mut sent = 0;
    while sent < count {
        let n = permits.acquire_many(1).await?;
        n.forget();
        let mut batch = 1;
        while batch < 64 && sent + batch < count && permits.try_acquire().map(|p| p.forget()).is_ok() {
            batch += 1;
        }
        {
            let now = Instant::now();
            let mut times = sent_at.lock().unwrap();
            for _ in 0..batch {
                id = id % 60_000 + 1;
                times.insert(id, now);
                let value = Bytes::from(format!("{}.5", sent % 1000));
                put(&publish_packet(&topics[sent % topics.len()], value, QoS::AtLeastOnce, id), &mut out);
                sent += 1;
            }
        }
        writer.write_all(&out).await?;
        out.clear();
    }
    acks.await?
}

async fn read_acks(
    mut reader: Reader,
    sent_at: Arc<Mutex<HashMap<u16, Instant>>>,
    permits: Arc<Semaphore>,
    expected: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(expected);
    let mut batch = Vec::new();
    while latencies.len() < expected {
        reader.recv_batch(&mut batch).await?;
        let now = Instant::now();
        let mut times = sent_at.lock().unwrap();
        for p in batch.drain(..) {
            if let Packet::PubAck(ack) = p {
                if let Some(t) = times.remove(&ack.packet_id.get()) {
                    latencies.push(now - t);
                    permits.add_permits(1);
                }
            }
        }
        drop(times);
    }
    Ok(latencies)
}
