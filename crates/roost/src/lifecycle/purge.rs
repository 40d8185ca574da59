//! One purge: every sensor's raw readings past its retention, the rollups past theirs, old
//! rejects and alert history (both by `--retention`); then SQLite's free pages go back to the file system. Small transactions with a
//! pause between them, so ingest, which shares the database's write lock, waits at most one.

use super::RetentionPolicy;
use crate::model::TimestampMs;
use crate::store::{in_chunks, Series, Store, StoreError, PURGE_CHUNK};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The least pause between two chunks: ingest's batches get the write turn in between. A chunk
/// that took longer is followed by a pause as long as it took, so the purge never has more than
/// half of the database's write time.
const PAUSE: Duration = Duration::from_millis(20);
/// Pages freed per vacuum step (2 MiB of new databases' 1 KiB pages).
const VACUUM_PAGES: i64 = 2048;

/// What one purge deleted.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PurgeReport {
    pub started_ms: i64,
    pub finished_ms: i64,
    pub readings: u64,
    pub minutes: u64,
    pub hours: u64,
    pub rejects: u64,
    pub alert_events: u64,
    /// Bytes given back to the file system (SQLite).
    pub vacuumed_bytes: u64,
}

impl PurgeReport {
    pub fn rows(&self) -> u64 {
        self.readings + self.minutes + self.hours + self.rejects + self.alert_events
    }
}

/// Deletes what `policy` no longer keeps at `now`. Stops early (with what it did) when `stop` is
/// cancelled.
pub async fn purge_once(
    store: &Store,
    policy: &RetentionPolicy,
    now: TimestampMs,
    stop: &CancellationToken,
) -> Result<PurgeReport, StoreError> {
    let mut report = PurgeReport { started_ms: TimestampMs::now().0, ..PurgeReport::default() };
    for sensor in store.sensors().await? {
        let (id, (raw, _)) = (sensor.id, policy.raw(&sensor.key, sensor.settings.retention));
        for (series, cutoff) in Series::ALL.into_iter().zip(policy.cutoffs(raw, now)) {
            let Some(cutoff) = cutoff else { continue };
            // Only sensors with something to delete pay more than one index lookup.
            if store.oldest(series, id).await?.is_none_or(|oldest| oldest.0 + series.period_ms() > cutoff.0) {
                continue;
            }
            let deleted = in_chunks(PAUSE, stop, || store.purge_chunk(series, id, cutoff, PURGE_CHUNK)).await?;
            *match series {
                Series::Raw => &mut report.readings,
                Series::Minutes => &mut report.minutes,
                Series::Hours => &mut report.hours,
            } += deleted;
            if stop.is_cancelled() {
                return Ok(report);
            }
        }
    }
    if let Some(cutoff) = policy.default.cutoff(now) {
        report.rejects = in_chunks(PAUSE, stop, || store.purge_rejects_chunk(cutoff, PURGE_CHUNK)).await?;
        report.alert_events = in_chunks(PAUSE, stop, || store.purge_alert_events_chunk(cutoff, PURGE_CHUNK)).await?;
    }
    if report.rows() > 0 {
        loop {
            let freed = store.vacuum_step(VACUUM_PAGES).await?;
            report.vacuumed_bytes += freed;
            if freed == 0 || stop.is_cancelled() {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    report.finished_ms = TimestampMs::now().0;
    Ok(report)
}
