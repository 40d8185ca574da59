//! Runs a fleet of virtual boards against a broker: one MQTT client per board, publishing what
//! its sensors read every interval (or at a fixed total rate), reconnecting with backoff.

use super::board::Board;
use crate::ingest::TopicTemplate;
use crate::model::{SensorKey, TimestampMs};
use crate::mqtt_client::{ClientEvent, ClientSettings, EventLoop};
use crate::progress::Counters;
use anyhow::Context;
use rumqttc::QoS;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

/// Unacknowledged publishes per board.
const INFLIGHT: u16 = 100;
/// How long a board that sent its `--count` waits for its outstanding acknowledgements.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The same when stopped (Ctrl-C, `--duration`): a person is waiting.
const DRAIN_TIMEOUT_ON_STOP: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Spacing of backfilled history.
const BACKFILL_STEP_MS: i64 = 5 * 60_000;

#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub client: ClientSettings,
    /// Where readings go; must contain `{category}`.
    pub template: TopicTemplate,
    pub owner: String,
    pub boards: usize,
    /// Time between two reads of a board's sensors (three readings).
    pub interval: Duration,
    /// Load mode: readings per second over the whole fleet, instead of `interval`.
    pub rate: Option<f64>,
    pub qos: QoS,
    /// Stop after this many readings in total.
    pub count: Option<u64>,
    /// Share of sensor reads that fail (published as a DHT11 or CdS fault would be).
    pub glitches: f64,
    pub seed: u64,
    /// Offset of the boards' local time from UTC, for the day/night cycle.
    pub utc_offset_secs: i32,
    /// Before going live, publish this much history with explicit timestamps.
    pub backfill: Option<Duration>,
    pub client_id_prefix: String,
}

impl FleetConfig {
    /// The settings of `roost simulate`.
    pub fn from_args(args: &crate::cli::SimulateArgs, utc_offset_secs: i32) -> Self {
        let seed = args.seed.unwrap_or_else(|| TimestampMs::now().0 as u64 ^ u64::from(std::process::id()).rotate_left(32));
        Self {
            client: args.client.settings(),
            template: args.template.clone(),
            owner: args.owner.clone().or_else(|| args.client.username.clone()).unwrap_or_else(|| "demo".to_owned()),
            boards: args.devices as usize,
            interval: args.interval,
            rate: args.rate,
            qos: args.qos,
            count: args.count,
            glitches: args.glitches,
            seed,
            utc_offset_secs,
            backfill: args.backfill,
            client_id_prefix: "roost-sim".to_owned(),
        }
    }

    /// The topic a board publishes `category` on.
    pub fn topic(&self, place: &str, category: &str) -> String {
        let key = SensorKey { owner: self.owner.as_str().into(), place: place.into(), category: category.into() };
        self.template.topic(&key).expect("a simulator template has {category}")
    }
}

/// Runs every board until `count` readings were published and acknowledged, or `stop`, or the
/// broker refuses their login (which stops the boards, never whoever handed over `stop`: the
/// server, for `serve --demo`).
pub async fn run(config: FleetConfig, counters: Arc<Counters>, stop: CancellationToken) -> anyhow::Result<()> {
    let stop = stop.child_token();
    anyhow::ensure!(config.template.has_category(), "the template {} has no {{category}} level", config.template);
    anyhow::ensure!(config.boards > 0, "at least one board is needed");
    let config = Arc::new(config);
    let issued = Arc::new(AtomicU64::new(0));
    let mut boards = tokio::task::JoinSet::new();
    for index in 0..config.boards {
        boards.spawn(run_board(index, Arc::clone(&config), Arc::clone(&counters), Arc::clone(&issued), stop.clone()));
    }
    let mut first_error = None;
    while let Some(result) = boards.join_next().await {
        if let Err(e) = result.context("a board task failed").and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One board: its MQTT client, its sensors, its schedule.
async fn run_board(
    index: usize,
    config: Arc<FleetConfig>,
    counters: Arc<Counters>,
    issued: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut board = Board::new(index, config.seed, config.glitches);
    // Unique per process: two simulators with the same owner must not take over each other's sessions.
    let client_id = format!("{}-{}-{}-{}", config.client_id_prefix, std::process::id(), config.owner, board.place);
    let (client, eventloop) = config.client.connect(&client_id, INFLIGHT)?;
    let acked = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let finished = CancellationToken::new();
    let driver = AbortOnDropHandle::new(tokio::spawn(drive(
        eventloop,
        client_id.clone(),
        Arc::clone(&counters),
        Arc::clone(&sent),
        Arc::clone(&acked),
        finished.clone(),
        stop.clone(),
    )));
    // Publishes the client library accepted; a publish interrupted by `stop` is not counted.
    let mut requested = 0u64;
    let publish = |topic: String, payload: String| {
        let client = client.clone();
        let qos = config.qos;
        async move { client.publish(topic, qos, false, payload).await }
    };

    if let Some(span) = config.backfill {
        let now = TimestampMs::now().0;
        let mut ts = now - span.as_millis() as i64;
        'backfill: while ts < now {
            for sample in board.read(ts, config.utc_offset_secs).into_iter().filter(|s| !s.glitch) {
                let payload = format!(r#"{{"value":{},"ts":{ts}}}"#, sample.payload);
                let sent = tokio::select! {
                    sent = publish(config.topic(&board.place, sample.category), payload) => sent,
                    _ = stop.cancelled() => break 'backfill,
                };
                sent.context("the MQTT client stopped")?;
                requested += 1;
            }
            ts += BACKFILL_STEP_MS;
        }
    }

    // Load mode spreads the rate over the boards; each tick reads all three sensors.
    let period = match config.rate {
        Some(rate) => Duration::from_secs_f64((3.0 * config.boards as f64 / rate).max(1e-6)),
        None => config.interval,
    };
    // Boards start spread over one period, as real ones never power up in the same millisecond.
    let offset = period.mul_f64(index as f64 / config.boards as f64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    'ticks: loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        for sample in board.read(TimestampMs::now().0, config.utc_offset_secs) {
            if config.count.is_some_and(|count| issued.fetch_add(1, Ordering::Relaxed) >= count) {
                break 'ticks;
            }
            if sample.glitch {
                Counters::add(&counters.glitches, 1);
            }
            let sent = tokio::select! {
                sent = publish(config.topic(&board.place, sample.category), sample.payload) => sent,
                _ = stop.cancelled() => break 'ticks,
            };
            sent.context("the MQTT client stopped")?;
            requested += 1;
        }
    }

    // Wait for outstanding acknowledgements (QoS 0: until everything is written), then leave.
    let delivered = if config.qos == QoS::AtMostOnce { &sent } else { &acked };
    let patience = if stop.is_cancelled() { DRAIN_TIMEOUT_ON_STOP } else { DRAIN_TIMEOUT };
    let drained = tokio::time::timeout(patience, async {
        while delivered.load(Ordering::Relaxed) < requested {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if drained.is_err() {
        warn!(client_id, requested, acknowledged = acked.load(Ordering::Relaxed), "stopping with publishes unacknowledged");
    }
    finished.cancel();
    let _ = client.disconnect().await;
    // Past the timeout the driver is aborted when dropped.
    let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
    Ok(())
}

/// Polls a board's event loop: counts sends and acknowledgements, reconnects with backoff.
async fn drive(
    mut eventloop: EventLoop,
    client_id: String,
    counters: Arc<Counters>,
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    finished: CancellationToken,
    stop: CancellationToken,
) {
    let mut backoff = BACKOFF_MIN;
    let mut connected = false;
    let set_connected = |now: bool, connected: &mut bool| {
        if now != *connected {
            *connected = now;
            if now {
                counters.connected.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
    };
    loop {
        let event = eventloop.poll().await;
        match event {
            Ok(ClientEvent::Connected) => {
                if backoff > BACKOFF_MIN {
                    info!(client_id, "reconnected");
                }
                backoff = BACKOFF_MIN;
                set_connected(true, &mut connected);
            }
            Ok(ClientEvent::Sent(_)) => {
                sent.fetch_add(1, Ordering::Relaxed);
                Counters::add(&counters.sent, 1);
            }
            Ok(ClientEvent::PubAck { refused: true, .. }) => {
                // A 5.0 server refused it (not authorized, not a reading): answered, so the
                // board does not wait for it, but counted as an error, not as acknowledged.
                acked.fetch_add(1, Ordering::Relaxed);
                Counters::add(&counters.errors, 1);
            }
            Ok(ClientEvent::PubAck { .. } | ClientEvent::PubComp(_)) => {
                acked.fetch_add(1, Ordering::Relaxed);
                Counters::add(&counters.acked, 1);
            }
            Ok(ClientEvent::Disconnecting) => break,
            Ok(_) => {}
            Err(e) => {
                set_connected(false, &mut connected);
                if finished.is_cancelled() {
                    break;
                }
                Counters::add(&counters.errors, 1);
                if crate::mqtt_client::refused_login(&e) {
                    // Trying again cannot help; every board logs in alike.
                    tracing::error!(client_id, error = %e,
                        "the broker refused the login: check --username and --password (ROOST_USERNAME, ROOST_PASSWORD); stopping");
                    stop.cancel();
                    break;
                }
                warn!(client_id, error = %e, retry_in = ?backoff, "connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = finished.cancelled() => break,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    set_connected(false, &mut connected);
}
