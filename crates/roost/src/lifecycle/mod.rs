//! The data lifecycle of a running server: the hourly rollups folded from the minutes once a
//! minute (`fold`), the purge of data past its retention (at start, then every hour), SQLite's
//! incremental vacuum after it, the database's size and the free
//! space on its disk, for `/metrics`, `/api/stats` and the dashboard.

mod disk;
mod fold;
mod purge;
mod retention;

pub use disk::{space_at, DiskSpace};
pub use fold::{run_folds, run_minute_folds};
pub use purge::{purge_once, PurgeReport};
pub use retention::{KeepSource, RetentionPolicy, RetentionRule};

use crate::model::TimestampMs;
use crate::store::{DatabaseSize, Store};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the purge runs after the one at start.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// How often the free disk space is checked.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(60);
/// How often the database is measured (its size, rows per table, oldest reading), besides
/// after each purge: the measure after the purge at start saw the database before the readings
/// of this run, and `/metrics` showed that for an hour.
const MEASURE_EVERY: Duration = Duration::from_secs(600);

/// What the lifecycle task last saw, for `/metrics` and the dashboard.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LifecycleStatus {
    pub size: Option<DatabaseSize>,
    pub size_measured_ms: Option<i64>,
    pub disk: Option<DiskSpace>,
    /// Free space is below `--low-disk-percent`.
    pub disk_low: bool,
    pub low_disk_percent: u8,
    pub last_purge: Option<PurgeReport>,
    /// Rows the purges deleted since start.
    pub purged_rows: u64,
}

/// The lifecycle task's settings.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub policy: RetentionPolicy,
    /// Where the database's disk is: the SQLite file, else the data directory.
    pub disk_path: PathBuf,
    pub low_disk_percent: u8,
    /// This node (`--node-id`): of several nodes on one database, the one holding the `purge`
    /// lease purges.
    pub node_id: Arc<str>,
}

pub type SharedStatus = Arc<Mutex<LifecycleStatus>>;

/// Runs until `stop`: a purge at start and every [`PURGE_EVERY`], the database measured after
/// each, a minute after the start and every [`MEASURE_EVERY`], the disk checked every minute.
/// Failures are logged and tried again next time; nothing here ever holds ingest up for longer
/// than one small transaction.
pub async fn run(store: Arc<Store>, config: LifecycleConfig, status: SharedStatus, stop: CancellationToken) {
    status.lock().unwrap_or_else(|e| e.into_inner()).low_disk_percent = config.low_disk_percent;
    let started = tokio::time::Instant::now();
    let (mut next_purge, mut next_measure) = (started, started);
    loop {
        check_disk(&config, &status).await;
        let purge_due = tokio::time::Instant::now() >= next_purge;
        if purge_due {
            next_purge += PURGE_EVERY;
            // Kept a little longer than the time between purges: the node that purged keeps the
            // turn while it lives, another takes it over an hour after it stopped.
            let turn = PURGE_EVERY + Duration::from_secs(600);
            let purged = match crate::cluster::lease::take_turn(&store, "purge", &config.node_id, turn).await {
                true => purge_once(&store, &config.policy, TimestampMs::now(), &stop).await.map(Some),
                false => Ok(None),
            };
            match purged {
                Ok(None) => tracing::debug!("another node on this database purges"),
                Ok(Some(report)) => {
                    if report.rows() > 0 {
                        tracing::info!(
                            readings = report.readings,
                            minutes = report.minutes,
                            hours = report.hours,
                            rejects = report.rejects,
                            alert_events = report.alert_events,
                            "purged data past its retention"
                        );
                    }
                    let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
                    status.purged_rows += report.rows();
                    status.last_purge = Some(report);
                }
                Err(e) => tracing::warn!(error = %e, "purging old data failed; trying again in an hour"),
            }
            if stop.is_cancelled() {
                return;
            }
        }
        if purge_due || tokio::time::Instant::now() >= next_measure {
            // The first time again a minute after the start, with this run's first readings.
            let first = next_measure == started;
            next_measure = tokio::time::Instant::now() + if first { DISK_CHECK_EVERY } else { MEASURE_EVERY };
            match store.size().await {
                Ok(size) => {
                    let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
                    status.size = Some(size);
                    status.size_measured_ms = Some(TimestampMs::now().0);
                }
                Err(e) => tracing::warn!(error = %e, "measuring the database failed"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(DISK_CHECK_EVERY) => {}
        }
    }
}

async fn check_disk(config: &LifecycleConfig, status: &SharedStatus) {
    let path = config.disk_path.clone();
    let space = match tokio::task::spawn_blocking(move || space_at(&path)).await {
        Ok(Ok(space)) => space,
        Ok(Err(e)) => {
            tracing::debug!(path = %config.disk_path.display(), error = %e, "cannot read the free disk space");
            return;
        }
        Err(_) => return,
    };
    let low = space.is_low(config.low_disk_percent);
    let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
    if low && !status.disk_low {
        tracing::warn!(
            path = %config.disk_path.display(),
            free_mib = space.free_bytes >> 20,
            total_mib = space.total_bytes >> 20,
            "the database's disk is almost full (below {}% free): shorten --retention, delete sensors, or add space",
            config.low_disk_percent
        );
    }
    status.disk = Some(space);
    status.disk_low = low;
}
