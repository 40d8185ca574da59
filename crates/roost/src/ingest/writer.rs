//! The batch writer: one task that takes every queued record, writes them in one transaction
//! per batch (group commit: the batch is whatever arrived during the previous commit, so its
//! size follows the load), and only then tells the sessions to acknowledge.

use super::{Job, LiveReading, Record};
use crate::store::{Batch, Store};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where committed readings are announced (the dashboard's live feed). Bounded: a listener
/// that falls behind misses batches and is told to reload.
pub type LiveFeed = tokio::sync::broadcast::Sender<std::sync::Arc<Vec<LiveReading>>>;

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
        }
    }
}

/// Writes batches until `stop` is cancelled, then drains what is still queued and returns.
/// A failed commit is retried with backoff, holding its batch: meanwhile the queue fills and
/// publishers are held back; nothing is dropped and nothing unwritten is acknowledged.
pub async fn run_writer(
    store: std::sync::Arc<Store>,
    mut jobs: mpsc::Receiver<Job>,
    config: WriterConfig,
    stats: std::sync::Arc<IngestStats>,
    live: LiveFeed,
    stop: CancellationToken,
) {
    let mut pending = Vec::with_capacity(1024);
    loop {
        let first = tokio::select! {
            job = jobs.recv() => job,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        pending.push(first);
        while pending.len() < config.max_batch {
            match jobs.try_recv() {
                Ok(job) => pending.push(job),
                Err(_) => break,
            }
        }
        if !commit(&store, &mut pending, &config, &stats, &live, &stop).await {
            break;
        }
    }
    // Shutting down: sessions are closed, so whatever is queued is all there will be.
    jobs.close();
    while let Some(job) = jobs.recv().await {
        pending.push(job);
        if pending.len() >= config.max_batch && !commit(&store, &mut pending, &config, &stats, &live, &stop).await {
            break;
        }
    }
    if !pending.is_empty() {
        commit(&store, &mut pending, &config, &stats, &live, &stop).await;
    }
    info!("ingest writer stopped");
}

/// Commits `pending` (retrying while not stopped), then releases its acknowledgements.
/// Returns false if it gave up because of shutdown.
async fn commit(
    store: &Store,
    pending: &mut Vec<Job>,
    config: &WriterConfig,
    stats: &IngestStats,
    live: &LiveFeed,
    stop: &CancellationToken,
) -> bool {
    let mut batch = Batch::default();
    let mut waiting = Vec::with_capacity(pending.len());
    for job in pending.drain(..) {
        match job.record {
            Record::Readings(readings) => batch.readings.extend(readings),
            Record::Reject(reject) => batch.rejects.push(reject),
        }
        waiting.push(job.committed);
    }
    let mut delay = config.retry_delay;
    loop {
        let started = Instant::now();
        match store.write_batch(&batch).await {
            Ok(()) => {
                stats.commit_micros_total.fetch_add(started.elapsed().as_micros() as u64, Relaxed);
                stats.readings_committed.fetch_add(batch.readings.len() as u64, Relaxed);
                stats.rejects_committed.fetch_add(batch.rejects.len() as u64, Relaxed);
                stats.batches.fetch_add(1, Relaxed);
                stats.last_batch_size.store(waiting.len() as u64, Relaxed);
                for committed in waiting {
                    let _ = committed.send(Ok(()));
                }
                if live.receiver_count() > 0 {
                    let _ = live.send(std::sync::Arc::new(newest_per_sensor(&batch)));
                }
                return true;
            }
            Err(e) => {
                stats.failed_commits.fetch_add(1, Relaxed);
                warn!(error = %e, records = waiting.len(), retry_in = ?delay, "commit failed; holding the batch and retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => {
                        // Stopping while the database is away: these were never acknowledged,
                        // so the clients still hold them and will send them again.
                        warn!(records = waiting.len(), "giving up on an uncommitted batch at shutdown; it was not acknowledged");
                        return false;
                    }
                }
                delay = (delay * 2).min(config.max_retry_delay);
            }
        }
    }
}

fn newest_per_sensor(batch: &Batch) -> Vec<LiveReading> {
    let mut newest: std::collections::HashMap<&crate::ingest::SensorKey, (i64, f64)> = std::collections::HashMap::new();
    for r in &batch.readings {
        let entry = newest.entry(&r.sensor).or_insert((r.ts.0, r.value));
        if r.ts.0 >= entry.0 {
            *entry = (r.ts.0, r.value);
        }
    }
    newest
        .into_iter()
        .map(|(k, (ts, value))| LiveReading { owner: k.owner.clone(), place: k.place.clone(), category: k.category.clone(), ts, value })
        .collect()
}
