//! The fleet shape: many devices, each with its own sensor and one QoS 1 reading in flight (a
//! PubSubClient board waits for the PUBACK before it publishes again). Every PUBACK from Roost
//! means a committed row; Mosquitto, in the same run, acknowledges without storing anything.

use crate::client::{publish_packet, put, Client};
use bytes::{Bytes, BytesMut};
use mqtt_codec::{Packet, QoS, TopicName};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// What one fleet run measured.
pub struct FleetResult {
    /// Acknowledged publishes per second over the measured window.
    pub acked_per_sec: f64,
    /// Acknowledged publishes in the whole run (warm-up included), to check against the rows.
    pub acked_total: u64,
}

/// How a fleet run is shaped.
#[derive(Clone, Copy)]
pub struct Shape {
    pub devices: usize,
    /// Publishes each device keeps unacknowledged (1: a PubSubClient board).
    pub in_flight: usize,
    /// Sensors of each device, published to in turn (`iot/d<N>/sensor/room/c<K>`).
    pub sensors_per_device: usize,
    pub warm_up: Duration,
    pub measure: Duration,
}

/// Connects `shape.devices` devices (spread over loopback source addresses), lets them publish
/// for the warm-up and the measured window, and stops them. `on_window` runs at the start and
/// end of the measured window (for sampling the broker's CPU time).
pub async fn run(addr: SocketAddr, shape: Shape, mut on_window: impl FnMut()) -> anyhow::Result<FleetResult> {
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let connecting = Arc::new(Semaphore::new(256));
    let mut connects = Vec::with_capacity(shape.devices);
    for device in 0..shape.devices {
        let permit = Arc::clone(&connecting).acquire_owned().await?;
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 2, (device % 200) as u8 + 1));
        connects.push(tokio::spawn(async move {
            let client = Client::connect(addr, Some(source), &format!("fleet-{device}")).await;
            drop(permit);
            client
        }));
    }
    let mut clients = Vec::with_capacity(shape.devices);
    for connect in connects {
        clients.push(connect.await??);
    }
    eprintln!("    {} devices connected", clients.len());
    let devices: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(device, client)| {
            let topics = (0..shape.sensors_per_device.max(1))
                .map(|k| {
                    let key = sensor_key(device, k);
                    TopicName::parse(&format!("iot/{}/sensor/{}/{}", key.owner, key.place, key.category)).expect("valid topic")
                })
                .collect();
            tokio::spawn(publish_until_stopped(client, topics, shape.in_flight, Arc::clone(&acked), Arc::clone(&stop)))
        })
        .collect();
    tokio::time::sleep(shape.warm_up).await;
    on_window();
    let (start_count, started) = (acked.load(Relaxed), Instant::now());
    tokio::time::sleep(shape.measure).await;
    let (end_count, elapsed) = (acked.load(Relaxed), started.elapsed());
    on_window();
    stop.store(true, Relaxed);
    for device in devices {
        device.await??;
    }
    Ok(FleetResult { acked_per_sec: (end_count - start_count) as f64 / elapsed.as_secs_f64(), acked_total: acked.load(Relaxed) })
}

/// One device: publishes numbered readings to its topics in turn, keeping `in_flight`
/// unacknowledged, until `stop`; then waits for the acknowledgements of what it sent.
async fn publish_until_stopped(
    client: Client,
    topics: Vec<TopicName>,
    in_flight: usize,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (mut reader, mut writer) = client.split();
    let mut out = BytesMut::with_capacity(64);
    let mut packets = Vec::new();
    let (mut sent, mut unacked) = (0u64, 0usize);
    loop {
        while unacked < in_flight && !stop.load(Relaxed) {
            sent += 1;
            let id = (sent % 65_535) as u16 + 1;
            let topic = &topics[sent as usize % topics.len()];
            put(&publish_packet(topic, Bytes::from(format!("{}.5", sent % 1000)), QoS::AtLeastOnce, id), &mut out);
            unacked += 1;
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
            out.clear();
        }
        if unacked == 0 {
            return Ok(());
        }
        reader.recv_batch(&mut packets).await?;
        let n = packets.drain(..).filter(|p| matches!(p, Packet::PubAck(_))).count();
        unacked -= n;
        acked.fetch_add(n as u64, Relaxed);
    }
}

/// The sensor a fleet device publishes to as its `k`th (`iot/d<N>/sensor/room/c<K>`).
pub fn sensor_key(device: usize, k: usize) -> roost::model::SensorKey {
    roost::model::SensorKey { owner: format!("d{device}").into(), place: "room".into(), category: format!("c{k}").into() }
}
