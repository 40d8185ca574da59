//! Folding the per-minute rollups into hourly ones (`Store::fold_hours`): a second after each
//! minute begins, the minutes before it; after a backfill, ten minutes' worth at a time with a
//! pause as long as each fold took, so batches go on between folds. Several nodes on one
//! database may all fold: they take turns on the same row, and a fold finds what another left.

use crate::model::TimestampMs;
use crate::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long after a minute begins its predecessor is folded.
const AFTER_THE_MINUTE: Duration = Duration::from_secs(1);
/// The shortest pause between two folds while catching up.
const CATCH_UP_PAUSE: Duration = Duration::from_millis(20);
/// The pause after a failed fold (the database away).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Runs until `stop`. A failed fold is logged once and tried again every [`RETRY_AFTER`];
/// until one succeeds, hourly charts read the minutes instead (nothing is lost or counted
/// twice).
pub async fn run_folds(store: Arc<Store>, stop: CancellationToken) {
    let mut failing = false;
    loop {
        let started = Instant::now();
        let folded = store.fold_hours(TimestampMs::now()).await;
        let pause = match &folded {
            Ok(folded) if folded.more => started.elapsed().max(CATCH_UP_PAUSE),
            Ok(_) => until_next_minute(TimestampMs::now()) + AFTER_THE_MINUTE,
            Err(_) => RETRY_AFTER,
        };
        match folded {
            Ok(folded) => {
                if failing {
                    failing = false;
                    tracing::info!("folding minutes into hourly rollups works again");
                }
                tracing::trace!(?folded, "folded minutes into hours");
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "folding minutes into hourly rollups failed; trying again every 10 s");
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
