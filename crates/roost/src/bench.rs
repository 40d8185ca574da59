//! `roost bench`: a check of a user's own installation. Clients publish numbered readings at
//! QoS 1 or 2, time each publish → acknowledgement, then read the database to prove that every
//! acknowledged reading was stored.

use crate::ingest::TopicTemplate;
use crate::model::{SensorKey, TimestampMs};
use crate::mqtt_client::ClientEvent;
use crate::mqtt_client::ClientSettings;
use crate::progress::Counters;
use crate::store::{DatabaseUrl, Store};
use anyhow::Context;
use rumqttc::QoS;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// How long the bench waits for outstanding acknowledgements after its last publish.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// The category of every bench reading.
pub const CATEGORY: &str = "bench";

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub client: ClientSettings,
    /// The database `roost serve` writes to, for verification.
    pub database: DatabaseUrl,
    pub template: TopicTemplate,
    pub owner: String,
    pub clients: usize,
    /// Readings in total, spread evenly over the clients.
    pub count: u64,
    /// Readings per second in total; `None` is flat out.
    pub rate: Option<f64>,
    pub qos: QoS,
    pub inflight: u16,
    /// Leave the bench's sensors and readings in the database afterwards.
    pub keep: bool,
}

/// What one client saw.
#[derive(Debug, Default)]
struct Tracking {
    /// Sequence numbers handed to the client library, not yet written.
    queued: VecDeque<u64>,
    /// Packet id → (sequence number, time written).
    in_flight: HashMap<u16, (u64, Instant)>,
    acked: Vec<u64>,
    latencies: Vec<Duration>,
    failure: Option<String>,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct BenchReport {
    pub published: u64,
    pub acked: u64,
    pub elapsed: Duration,
    /// Publish → acknowledgement, sorted.
    pub latencies: Vec<Duration>,
    pub verification: Verification,
    /// Connection failures, one per client that had one.
    pub failures: Vec<String>,
}

/// Acknowledged readings compared with the rows in the database.
#[derive(Debug, Default, PartialEq)]
pub struct Verification {
    pub acked: u64,
    pub stored: u64,
    /// Acknowledged but not in the database: (sensor, sequence number), at most 20 listed.
    pub missing: Vec<(SensorKey, u64)>,
    pub missing_count: u64,
    /// Rows stored more than once.
    pub duplicates: u64,
    /// The database holds none of the bench's sensors at all.
    pub no_sensors: bool,
}

impl BenchConfig {
    pub fn from_args(args: &crate::cli::BenchArgs) -> Self {
        Self {
            client: args.client.settings(),
            database: args.db.database.clone(),
            template: args.template.clone(),
            owner: args.owner.clone().or_else(|| args.client.username.clone()).unwrap_or_else(|| "roost-bench".to_owned()),
            clients: args.clients as usize,
            count: args.count,
            rate: args.rate,
            qos: args.qos,
            inflight: args.inflight,
            keep: args.keep,
        }
    }
}

impl BenchReport {
    /// True when every publish was acknowledged and every acknowledged reading is stored.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.acked == self.published && self.verification.missing_count == 0 && !self.verification.no_sensors
    }

    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let n = self.latencies.len();
        (n > 0).then(|| self.latencies[((n - 1) as f64 * q).round() as usize])
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::progress::group;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "published {}, acknowledged {} in {:.2} s: {} readings/s",
            group(self.published),
            group(self.acked),
            secs,
            group((self.acked as f64 / secs).round() as u64)
        )?;
        if let (Some(p50), Some(p90), Some(p99), Some(max)) =
            (self.percentile(0.5), self.percentile(0.9), self.percentile(0.99), self.latencies.last())
        {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            writeln!(
                f,
                "latency publish → ack: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                ms(p50),
                ms(p90),
                ms(p99),
                ms(*max)
            )?;
        }
        for failure in &self.failures {
            writeln!(f, "connection failure: {failure}")?;
        }
        let v = &self.verification;
        if v.no_sensors && v.acked > 0 {
            writeln!(
                f,
                "verification FAILED: the database has none of this run's sensors. Is --database the one `roost serve` writes to, \
                 and may this user publish under the owner's topics (its own name, or an admin)?"
            )?;
        } else if v.acked == 0 {
            writeln!(f, "nothing was acknowledged, so nothing could be verified")?;
        } else if v.missing_count == 0 {
            writeln!(f, "verified: all {} acknowledged readings are stored", group(v.acked))?;
        } else {
            writeln!(
                f,
                "verification FAILED: {} of {} acknowledged readings are missing from the database",
                group(v.missing_count),
                group(v.acked)
            )?;
            for (sensor, seq) in &v.missing {
                writeln!(f, "  missing: {sensor} reading #{seq}")?;
            }
        }
        if v.duplicates > 0 {
            writeln!(f, "note: {} readings are stored more than once", group(v.duplicates))?;
        }
        if self.failures.iter().any(|failure| crate::mqtt_client::refused_login(failure)) {
            writeln!(f, "hint: the server refused the login: give a user with --username and --password (ROOST_USERNAME, ROOST_PASSWORD)")?;
        }
        let unacknowledged = self.published.saturating_sub(self.acked);
        if self.passed() {
            writeln!(f, "bench passed")
        } else if unacknowledged > 0 {
            writeln!(f, "bench FAILED: {} of {} publishes unacknowledged", group(unacknowledged), group(self.published))
        } else if v.missing_count > 0 || v.no_sensors {
            writeln!(f, "bench FAILED: acknowledged readings are missing from the database")
        } else {
            writeln!(f, "bench FAILED: a connection failed")
        }
    }
}

/// Publishes, waits for the acknowledgements, verifies, cleans up (unless `keep`).
pub async fn run(config: BenchConfig, counters: Arc<Counters>, stop: CancellationToken) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(config.template.has_category(), "the template {} has no {{category}} level", config.template);
    anyhow::ensure!(config.qos != QoS::AtMostOnce, "QoS 0 is never acknowledged, so it cannot be verified: use --qos 1 or 2");
    anyhow::ensure!(config.clients > 0 && config.count > 0, "--clients and --count must be at least 1");
    let store = Store::open_existing(&config.database).await.context("opening the database for verification")?;
    let run_id = format!("run{}", TimestampMs::now().0);
    let sensors: Vec<SensorKey> = (0..config.clients)
        .map(|i| SensorKey { owner: config.owner.as_str().into(), place: format!("{run_id}-c{i}").into(), category: CATEGORY.into() })
        .collect();

    let started_ms = TimestampMs::now().0;
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for (i, sensor) in sensors.iter().enumerate() {
        let share = config.count / config.clients as u64 + u64::from((i as u64) < config.count % config.clients as u64);
        let topic = config.template.topic(sensor).expect("checked: the template has {category}");
        let client_id = format!("roost-bench-{run_id}-{i}");
        clients.spawn(run_client(config.clone(), client_id, topic, share, Arc::clone(&counters), stop.clone()));
    }
    let mut tracked = Vec::new();
    while let Some(result) = clients.join_next().await {
        tracked.push(result.context("a bench client task failed")??);
    }
    let elapsed = started.elapsed();

    let mut latencies: Vec<Duration> = tracked.iter().flat_map(|(_, t)| t.latencies.iter().copied()).collect();
    latencies.sort_unstable();
    let published = tracked.iter().map(|(sent, _)| *sent).sum();
    let failures = tracked.iter().filter_map(|(_, t)| t.failure.clone()).collect();
    let window = (TimestampMs(started_ms - 60_000), TimestampMs(TimestampMs::now().0 + 60_000));
    let mut acked_by_sensor = Vec::new();
    for (sensor, (_, tracking)) in sensors.iter().zip(&tracked) {
        acked_by_sensor.push((sensor.clone(), tracking.acked.clone()));
    }
    let verification = verify(&store, &acked_by_sensor, window).await?;
    if !config.keep {
        store.delete_sensors(&sensors).await.context("removing the bench's readings (use --keep to leave them)")?;
    }
    store.close().await;
    Ok(BenchReport { published, acked: verification.acked, elapsed, latencies, verification, failures })
}

/// Compares what each sensor had acknowledged with what the database holds for it.
pub async fn verify(store: &Store, acked: &[(SensorKey, Vec<u64>)], window: (TimestampMs, TimestampMs)) -> anyhow::Result<Verification> {
    let mut result = Verification { no_sensors: true, ..Verification::default() };
    for (sensor, seqs) in acked {
        result.acked += seqs.len() as u64;
        if store.sensor_id(sensor).await?.is_some() {
            result.no_sensors = false;
        }
        let rows = store.readings(sensor, window.0, window.1).await.with_context(|| format!("reading back {sensor}"))?;
        result.stored += rows.len() as u64;
        let mut stored: HashMap<u64, u32> = HashMap::with_capacity(rows.len());
        for (_, value) in rows {
            *stored.entry(value as u64).or_default() += 1;
        }
        result.duplicates += stored.values().map(|&n| u64::from(n.saturating_sub(1))).sum::<u64>();
        for seq in seqs {
            if !stored.contains_key(seq) {
                result.missing_count += 1;
                if result.missing.len() < 20 {
                    result.missing.push((sensor.clone(), *seq));
                }
            }
        }
    }
    Ok(result)
}

/// One client: publishes `count` numbered readings and records what was acknowledged. Returns
/// how many it published and its tracking.
async fn run_client(
    config: BenchConfig,
    client_id: String,
    topic: String,
    count: u64,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> anyhow::Result<(u64, Tracking)> {
    let (client, mut eventloop) = config.client.connect(&client_id, config.inflight)?;
    let tracking = Arc::new(Mutex::new(Tracking::default()));
    let qos = config.qos;
    let driver = {
        let tracking = Arc::clone(&tracking);
        let counters = Arc::clone(&counters);
        let client_id = client_id.clone();
        AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                let mut t = tracking.lock().unwrap_or_else(|e| e.into_inner());
                match event {
                    Ok(ClientEvent::Connected) => Counters::add(&counters.connected, 1),
                    Ok(ClientEvent::Sent(pkid)) => {
                        if let Some(seq) = t.queued.pop_front() {
                            t.in_flight.insert(pkid, (seq, Instant::now()));
                        }
                        Counters::add(&counters.sent, 1);
                    }
                    Ok(ClientEvent::PubAck { packet_id, refused: true }) => {
                        // A 5.0 server refused it: not stored, so not acknowledged here.
                        Counters::add(&counters.errors, 1);
                        t.failure.get_or_insert_with(|| format!("{client_id}: publish {packet_id} refused by the server"));
                    }
                    Ok(ClientEvent::PubAck { packet_id, .. }) if qos == QoS::AtLeastOnce => acknowledge(&mut t, packet_id, &counters),
                    Ok(ClientEvent::PubComp(packet_id)) if qos == QoS::ExactlyOnce => acknowledge(&mut t, packet_id, &counters),
                    Ok(ClientEvent::Disconnecting) => break,
                    Ok(_) => {}
                    Err(e) => {
                        // No reconnects: a bench that loses its connection reports it.
                        Counters::add(&counters.errors, 1);
                        t.failure = Some(format!("{client_id}: {e}"));
                        break;
                    }
                }
            }
            counters
                .connected
                .fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |n| n.checked_sub(1))
                .ok();
        }))
    };

    let mut pace = config.rate.map(|rate| {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64((config.clients as f64 / rate).max(1e-6)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        ticker
    });
    let mut published = 0;
    for seq in 0..count {
        if let Some(ticker) = pace.as_mut() {
            ticker.tick().await;
        }
        tracking.lock().unwrap_or_else(|e| e.into_inner()).queued.push_back(seq);
        let sent = tokio::select! {
            sent = client.publish(topic.as_str(), qos, false, seq.to_string()) => sent,
            _ = stop.cancelled() => break,
        };
        if sent.is_err() {
            break; // the event loop ended; its failure is recorded
        }
        published += 1;
    }
    let all_acked = tokio::time::timeout(ACK_TIMEOUT, async {
        loop {
            {
                let t = tracking.lock().unwrap_or_else(|e| e.into_inner());
                if t.acked.len() as u64 >= published || t.failure.is_some() || stop.is_cancelled() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let _ = client.disconnect().await;
    // Past the timeout the driver is aborted when dropped.
    let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
    let mut tracking = std::mem::take(&mut *tracking.lock().unwrap_or_else(|e| e.into_inner()));
    if all_acked.is_err() && tracking.failure.is_none() {
        tracking.failure =
            Some(format!("{client_id}: {} publishes unacknowledged after {ACK_TIMEOUT:?}", published - tracking.acked.len() as u64));
    }
    Ok((published, tracking))
}

fn acknowledge(t: &mut Tracking, pkid: u16, counters: &Counters) {
    if let Some((seq, at)) = t.in_flight.remove(&pkid) {
        t.acked.push(seq);
        t.latencies.push(at.elapsed());
        Counters::add(&counters.acked, 1);
    }
}
