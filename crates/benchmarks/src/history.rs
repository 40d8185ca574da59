//! A history for a benchmark's sensors: readings stored before the clock starts, as in a fleet
//! that has been running (write-bench `--history`, broker-bench `--fleet-history`).

use roost::model::{Reading, SensorKey, TimestampMs};
use roost::store::{Batch, Store};
use std::time::Instant;

/// Stores `history` readings of each sensor, a second apart, ending a minute before `now` (older
/// than what the folds of rollups wait for: each batch writes its own rollups, and nothing is
/// left to fold when the clock starts). About 10,000 readings a batch, each sensor's in one.
pub async fn store_history(store: &Store, keys: &[SensorKey], history: usize, now: i64) -> anyhow::Result<()> {
    if history == 0 {
        return Ok(());
    }
    let first = now - now.rem_euclid(1000) - (history as i64 + 60) * 1000;
    let started = Instant::now();
    for sensors in keys.chunks((10_000 / history).max(1)) {
        let readings = sensors
            .iter()
            .flat_map(|key| {
                (0..history).map(move |i| Reading { sensor: key.clone(), ts: TimestampMs(first + i as i64 * 1000), value: i as f64 })
            })
            .collect();
        store.write_batch(&Batch { readings, ..Batch::default() }).await?;
    }
    eprintln!("    {} readings stored before the clock starts, in {:.0?}", keys.len() * history, started.elapsed());
    Ok(())
}
