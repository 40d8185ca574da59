//! The batch writer: one task that takes every queued record, writes them in one transaction
//! per batch (group commit: the batch is whatever arrived during the previous commit, so its
//! size follows the load), and only then tells the sessions to acknowledge.

use super::{Job, Record, Source};
use crate::broker::NotStored;
use crate::health::CommitHealth;
use crate::model::{LiveReading, Reading, RejectReason, UpstreamDelivery};
use crate::store::{Batch, Commit, Store};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Where committed readings are announced (the dashboard's live feed). Bounded: a listener
/// that falls behind misses batches and is told to reload.
pub type LiveFeed = tokio::sync::broadcast::Sender<std::sync::Arc<Vec<LiveReading>>>;

/// Every committed batch's readings, in order (the alert engine, Home Assistant discovery).
/// Bounded: a listener that falls behind is told so and catches up from the database.
pub type CommitFeed = tokio::sync::broadcast::Sender<std::sync::Arc<Committed>>;

/// The readings of one committed batch.
#[derive(Debug, Default)]
pub struct Committed {
    pub readings: Vec<Reading>,
    /// Per reading: whether it came alone on its sensor's own topic (a topic ending in its
    /// category), rather than in a JSON object of several categories.
    pub on_own_topic: Vec<bool>,
    /// Committed by another node on this database (heard through `cluster::feed`); such a
    /// batch holds only the newest reading of each sensor.
    pub remote: bool,
}

/// Where the writer announces what it committed.
#[derive(Debug, Clone)]
pub struct Feeds {
    pub live: LiveFeed,
    pub commits: CommitFeed,
}

impl Feeds {
    /// Feeds that keep `capacity` batches for a listener that falls behind.
    pub fn new(capacity: usize) -> Self {
        Self { live: tokio::sync::broadcast::channel(capacity).0, commits: tokio::sync::broadcast::channel(capacity).0 }
    }
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most records in one transaction.
    pub max_batch: usize,
    /// First retry delay after a failed commit; doubles up to `max_retry_delay`.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self { max_batch: 20_000, retry_delay: Duration::from_millis(100), max_retry_delay: Duration::from_secs(5) }
    }
}

/// Counters of ingest, for `$SYS`, the API and metrics.
#[derive(Debug, Default)]
pub struct IngestStats {
    readings_committed: AtomicU64,
    rejects_committed: AtomicU64,
    rejects_seen: AtomicU64,
    batches: AtomicU64,
    last_batch_size: AtomicU64,
    commit_micros_total: AtomicU64,
    failed_commits: AtomicU64,
    /// Records the database refused, stored as rejects instead.
    refused: AtomicU64,
    /// Whether commits are succeeding now.
    pub health: CommitHealth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestStatsSnapshot {
    pub readings_committed: u64,
    pub rejects_committed: u64,
    pub rejects_seen: u64,
    pub batches: u64,
    pub last_batch_size: u64,
    pub commit_micros_total: u64,
    pub failed_commits: u64,
    pub refused: u64,
}

impl IngestStats {
    pub(super) fn count_reject_seen(&self) {
        self.rejects_seen.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> IngestStatsSnapshot {
        IngestStatsSnapshot {
            readings_committed: self.readings_committed.load(Relaxed),
            rejects_committed: self.rejects_committed.load(Relaxed),
            rejects_seen: self.rejects_seen.load(Relaxed),
            batches: self.batches.load(Relaxed),
            last_batch_size: self.last_batch_size.load(Relaxed),
            commit_micros_total: self.commit_micros_total.load(Relaxed),
            failed_commits: self.failed_commits.load(Relaxed),
            refused: self.refused.load(Relaxed),
        }
    }
}

/// Writes batches until `stop` is cancelled, then drains what is still queued and returns.
/// A failed commit is retried with backoff, holding its batch: meanwhile the queue fills and
/// publishers are held back; nothing is dropped and nothing unwritten is acknowledged. A record
/// the database refuses is set apart as a reject, so that it cannot hold up the others.
pub async fn run_writer(
    store: std::sync::Arc<Store>,
    mut jobs: mpsc::Receiver<Job>,
    config: WriterConfig,
    stats: std::sync::Arc<IngestStats>,
    feeds: Feeds,
    stop: CancellationToken,
) {
    use futures_util::StreamExt;
    let writer = Writer { store: &store, config: &config, stats: &stats, feeds: &feeds, stop: &stop, tokens: Tokens::new() };
    // PostgreSQL commits one batch while the next is written on another connection
    // (`Store::concurrent_writes`): publishers acknowledged by one commit fill the next batch.
    let concurrency = store.concurrent_writes();
    let mut writing = futures_util::stream::FuturesUnordered::new();
    let mut stopped = false;
    loop {
        tokio::select! {
            biased;
            Some(finished) = writing.next(), if !writing.is_empty() => {
                let finished: bool = finished;
                if !finished {
                    stopped = true;
                    break;
                }
            }
            job = jobs.recv(), if writing.len() < concurrency => {
                let Some(first) = job else { break };
                let mut pending = Vec::with_capacity(1024);
                pending.push(first);
                take_queued(&mut jobs, &mut pending, config.max_batch);
                writing.push(writer.write(pending));
            }
            _ = stop.cancelled() => break,
        }
    }
    // Batches being written finish (or give up, if the database is failing at shutdown).
    while let Some(finished) = writing.next().await {
        stopped |= !finished;
    }
    // Shutting down: sessions are closed, so whatever is queued is all there will be.
    jobs.close();
    let mut pending = Vec::new();
    while let Some(job) = jobs.recv().await {
        pending.push(job);
        if pending.len() >= config.max_batch && !stopped {
            stopped = !writer.write(std::mem::take(&mut pending)).await;
        }
    }
    if !pending.is_empty() && !stopped {
        writer.write(pending).await;
    }
    info!("ingest writer stopped");
}

/// Takes what is queued into `pending`, up to `max` records. (Letting the sessions run a few
/// scheduler turns first, for a fuller batch, measured no better on a fleet of 1,000
/// one-in-flight boards: 43.9k vs 43.8k readings/s.)
fn take_queued(jobs: &mut mpsc::Receiver<Job>, pending: &mut Vec<Job>, max: usize) {
    while pending.len() < max {
        match jobs.try_recv() {
            Ok(job) => pending.push(job),
            Err(_) => break,
        }
    }
}

struct Writer<'a> {
    tokens: Tokens,
    store: &'a Store,
    config: &'a WriterConfig,
    stats: &'a IngestStats,
    feeds: &'a Feeds,
    stop: &'a CancellationToken,
}

/// Batch tokens: a random start from the OS, then counting up, so they differ across batches,
/// restarts and servers.
struct Tokens(std::sync::atomic::AtomicU64);

impl Tokens {
    fn new() -> Self {
        use rand::{RngCore, SeedableRng};
        Self(std::sync::atomic::AtomicU64::new(rand::rngs::SmallRng::from_os_rng().next_u64()))
    }

    fn next(&self) -> i64 {
        self.0.fetch_add(1, Relaxed) as i64
    }
}

/// A job whose record was moved into a [`Batch`]: which of the batch's rows are its own.
struct Waiter {
    readings: Range<usize>,
    rejects: Range<usize>,
    source: Source,
    committed: oneshot::Sender<Result<(), NotStored>>,
    delivery: Option<UpstreamDelivery>,
}

/// Rows to commit together, and whom to tell once they are.
struct Part {
    batch: Batch,
    waiters: Vec<Waiter>,
}

impl Part {
    fn gather(jobs: Vec<Job>) -> Self {
        let mut batch = Batch::default();
        let mut waiters = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (readings_start, rejects_start) = (batch.readings.len(), batch.rejects.len());
            match job.record {
                Record::Readings(readings) => batch.readings.extend(readings),
                Record::Reject(reject) => batch.rejects.push(reject),
            }
            waiters.push(Waiter {
                readings: readings_start..batch.readings.len(),
                rejects: rejects_start..batch.rejects.len(),
                source: job.source,
                committed: job.committed,
                delivery: job.delivery,
            });
        }
        batch.deliveries = deliveries_of(&waiters);
        Self { batch, waiters }
    }

    /// Two parts of about half the records each, in order. Only for a refused commit (the
    /// rows are copied); needs at least two waiters.
    fn split(self) -> (Self, Self) {
        let mut first = self.waiters;
        let second = first.split_off(first.len() / 2);
        let part = |waiters: Vec<Waiter>| {
            let (readings, rejects) = (waiters[0].readings.start, waiters[0].rejects.start);
            let last = waiters.last().expect("parts are not empty");
            let batch = Batch {
                readings: self.batch.readings[readings..last.readings.end].to_vec(),
                rejects: self.batch.rejects[rejects..last.rejects.end].to_vec(),
                deliveries: deliveries_of(&waiters),
            };
            let waiters = waiters
                .into_iter()
                .map(|w| Waiter {
                    readings: w.readings.start - readings..w.readings.end - readings,
                    rejects: w.rejects.start - rejects..w.rejects.end - rejects,
                    ..w
                })
                .collect();
            Self { batch, waiters }
        };
        (part(first), part(second))
    }
}

/// How a commit attempt ended.
enum Outcome {
    Committed,
    /// The database refused something in the batch; retrying it whole cannot succeed.
    Refused(crate::store::StoreError),
    /// Shutdown came while the database was failing: nothing was acknowledged.
    Stopped,
}

impl Writer<'_> {
    /// Commits `jobs` and releases their acknowledgements; a batch the database refuses is
    /// split until the refused record is alone, and that one is stored as a reject instead.
    /// Returns false if it gave up because of shutdown.
    async fn write(&self, jobs: Vec<Job>) -> bool {
        let health = &self.stats.health;
        let oldest = jobs.iter().map(|j| j.queued_at).min().unwrap_or_else(tokio::time::Instant::now);
        health.writing(oldest);
        let mut parts = vec![Part::gather(jobs)];
        while let Some(part) = parts.pop() {
            match self.commit(&part.batch, part.waiters.len()).await {
                Outcome::Committed => self.settle(part),
                Outcome::Refused(e) if part.waiters.len() > 1 => {
                    debug!(error = %e, records = part.waiters.len(), "the database refused a batch; splitting it to find the record");
                    let (first, second) = part.split();
                    parts.push(second);
                    parts.push(first);
                }
                Outcome::Refused(e) => {
                    let waiter = part.waiters.into_iter().next().expect("one waiter");
                    if part.batch.readings.is_empty() {
                        // Even the reject row was refused: never acknowledged, so the client
                        // keeps it and sends it again; the others are not held up.
                        error!(error = %e, client_id = %waiter.source.client_id, topic = %waiter.source.topic,
                            "the database refused a reject row; the publish is not acknowledged");
                        let _ = waiter.committed.send(Err(NotStored::Refused(e.to_string())));
                        continue;
                    }
                    warn!(error = %e, client_id = %waiter.source.client_id, topic = %waiter.source.topic,
                        "the database refused a reading; it is stored in `rejects` instead");
                    self.stats.refused.fetch_add(1, Relaxed);
                    let reject = waiter.source.reject(RejectReason::RefusedByDatabase);
                    let batch = Batch { readings: Vec::new(), rejects: vec![reject], deliveries: deliveries_of(&[&waiter]) };
                    parts.push(Part { batch, waiters: vec![Waiter { readings: 0..0, rejects: 0..1, ..waiter }] });
                }
                Outcome::Stopped => {
                    health.settled(oldest);
                    return false;
                }
            }
        }
        health.settled(oldest);
        true
    }

    /// Tries to commit `batch`, retrying transient failures with backoff until it commits, the
    /// database refuses it, or shutdown comes.
    async fn commit(&self, batch: &Batch, records: usize) -> Outcome {
        let health = &self.stats.health;
        let mut delay = self.config.retry_delay;
        // One token for every attempt of this batch: a retry after a lost COMMIT answer finds it.
        let token = self.tokens.next();
        loop {
            let started = Instant::now();
            let error = match self.store.write_batch_once(batch, token).await {
                Ok(commit) => {
                    if commit == Commit::AlreadyCommitted {
                        info!(records, "an earlier attempt of this batch had committed (its answer was lost); not written twice");
                    }
                    let stats = self.stats;
                    stats.commit_micros_total.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
                    stats.readings_committed.fetch_add(batch.readings.len() as u64, Relaxed);
                    stats.rejects_committed.fetch_add(batch.rejects.len() as u64, Relaxed);
                    stats.batches.fetch_add(1, Relaxed);
                    stats.last_batch_size.store(records as u64, Relaxed);
                    if let Some(failing_for) = health.committed() {
                        info!(after = ?failing_for, "ingest recovered: commits succeed again");
                    }
                    return Outcome::Committed;
                }
                Err(e) => e,
            };
            self.stats.failed_commits.fetch_add(1, Relaxed);
            let failure = error.failure();
            if !failure.is_transient() {
                return Outcome::Refused(error);
            }
            if health.commit_failed(failure, error.to_string()) {
                // Once per episode, in words; the retries log at debug level.
                error!(problem = %failure, error = %error, records,
                    "ingest: commits are failing; holding the records unacknowledged and retrying until they commit");
            } else {
                debug!(problem = %failure, error = %error, records, retry_in = ?delay, "commit failed again");
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => {
                    // Stopping while the database is away: these were never acknowledged,
                    // so the clients still hold them and will send them again.
                    warn!(records, "giving up on an uncommitted batch at shutdown; it was not acknowledged");
                    return Outcome::Stopped;
                }
            }
            delay = (delay * 2).min(self.config.max_retry_delay);
        }
    }

    /// After a commit: acknowledgements may leave, and live dashboards and the alert engine
    /// hear of it.
    fn settle(&self, part: Part) {
        let Part { batch, waiters } = part;
        let mut on_own_topic = Vec::new();
        if self.feeds.commits.receiver_count() > 0 && !batch.readings.is_empty() {
            on_own_topic = vec![false; batch.readings.len()];
            for waiter in waiters.iter().filter(|w| w.readings.len() == 1) {
                let category = batch.readings[waiter.readings.start].sensor.category.as_str();
                on_own_topic[waiter.readings.start] = waiter.source.topic.as_str().rsplit('/').next() == Some(category);
            }
        }
        for waiter in waiters {
            let _ = waiter.committed.send(Ok(()));
        }
        if batch.readings.is_empty() {
            return;
        }
        if self.feeds.live.receiver_count() > 0 {
            let _ = self.feeds.live.send(std::sync::Arc::new(newest_per_sensor(&batch)));
        }
        if !on_own_topic.is_empty() {
            let _ = self.feeds.commits.send(std::sync::Arc::new(Committed { readings: batch.readings, on_own_topic, remote: false }));
        }
    }
}

/// The upstream messages of `waiters`, recorded with their rows.
fn deliveries_of<W: std::borrow::Borrow<Waiter>>(waiters: &[W]) -> Vec<UpstreamDelivery> {
    waiters.iter().filter_map(|w| w.borrow().delivery.clone()).collect()
}

fn newest_per_sensor(batch: &Batch) -> Vec<LiveReading> {
    crate::model::newest_per_key(batch.readings.iter().map(|r| (&r.sensor, r.ts, r.value)))
        .into_iter()
        .map(|(k, (ts, value))| LiveReading {
            owner: k.owner.clone(),
            place: k.place.clone(),
            category: k.category.clone(),
            ts: ts.0,
            value,
        })
        .collect()
}
