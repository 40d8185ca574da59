//! Folding the per-minute rollups into hourly ones (`Store::fold_hours`): a few seconds after
//! each minute begins, the minutes before it; after a backfill, ten minutes' worth at a time with a
//! pause as long as each fold took, so batches go on between folds. Several nodes on one
//! database may all fold: they take turns on the same row, and a fold finds what another left.
//! On MariaDB/MySQL the readings are folded into the per-minute rollups too, every two seconds
//! (`Store::fold_minutes`).

use crate::model::TimestampMs;
use crate::store::{Folded, Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long after a minute begins its predecessor is folded: on MariaDB/MySQL after a fold of
/// the readings into minutes (every [`MINUTES_EVERY`], up to a second before it ran) has
/// completed that minute.
const AFTER_THE_MINUTE: Duration = Duration::from_secs(4);
/// The shortest pause between two folds while catching up.
const CATCH_UP_PAUSE: Duration = Duration::from_millis(20);
/// How often the readings are folded into minutes, where they are.
const MINUTES_EVERY: Duration = Duration::from_secs(2);
/// The pause after a failed fold (the database away).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Runs until `stop`. A failed fold is logged once and tried again every [`RETRY_AFTER`];
/// until one succeeds, hourly charts read the minutes instead (nothing is lost or counted
/// twice).
pub async fn run_folds(store: Arc<Store>, stop: CancellationToken) {
    let fold = |store: Arc<Store>| async move { store.fold_hours(TimestampMs::now()).await };
    let next = |_took| until_next_minute(TimestampMs::now()) + AFTER_THE_MINUTE;
    run(store, stop, "minutes into hourly rollups", fold, next).await
}

/// Runs until `stop` where the per-minute rollups are folded from the readings (MariaDB/MySQL,
/// `Store::fold_minutes`), every [`MINUTES_EVERY`]; returns at once elsewhere. Until a fold
/// succeeds, charts read the readings not folded yet.
pub async fn run_minute_folds(store: Arc<Store>, stop: CancellationToken) {
    if !store.folds_minutes() {
        return;
    }
    let fold = |store: Arc<Store>| async move { store.fold_minutes(TimestampMs::now()).await };
    // Every 2 s from the start of one to the start of the next, and at once after one that took
    // longer: its moves of staged readings, which a fleet's batches do not wait for, go on
    // without a pause while a fleet stages faster than they move.
    let next = |took: Duration| MINUTES_EVERY.saturating_sub(took).max(CATCH_UP_PAUSE);
    run(store, stop, "readings into per-minute rollups", fold, next).await
}

/// Folds with `fold` until `stop`: again after `next(how long it took)` once it has caught up,
/// after a pause as long as the fold took while catching up, and every [`RETRY_AFTER`] while
/// it fails (logged once).
async fn run<F, Fut>(store: Arc<Store>, stop: CancellationToken, what: &str, fold: F, next: impl Fn(Duration) -> Duration)
where
    F: Fn(Arc<Store>) -> Fut,
    Fut: std::future::Future<Output = Result<Folded, StoreError>>,
{
    let mut failing = false;
    loop {
        let started = Instant::now();
        let folded = fold(Arc::clone(&store)).await;
        let pause = match &folded {
            Ok(folded) if folded.more => started.elapsed().max(CATCH_UP_PAUSE),
            Ok(_) => next(started.elapsed()),
            Err(_) => RETRY_AFTER,
        };
        match folded {
            Ok(folded) => {
                if failing {
                    failing = false;
                    tracing::info!("folding {what} works again");
                }
                tracing::trace!(?folded, "folded {what}");
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "folding {what} failed; trying again every 10 s");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

fn until_next_minute(now: TimestampMs) -> Duration {
    Duration::from_millis((60_000 - now.0.rem_euclid(60_000)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_minute_is_never_now() {
        assert_eq!(until_next_minute(TimestampMs(120_000)), Duration::from_secs(60));
        assert_eq!(until_next_minute(TimestampMs(179_999)), Duration::from_millis(1));
        assert_eq!(until_next_minute(TimestampMs(-1)), Duration::from_millis(1));
    }
}
