//! write-bench: what the store itself spends per reading when batches are fleet-shaped (every
//! sensor with one reading per batch, as when a thousand boards each have one publish in
//! flight), with no broker and no network in the way. The fleet scenario of broker-bench
//! measures the whole path, but its figures move with everything else on the machine; this one
//! writes the same stream of batches every run, so two builds compare on the store alone.
//!
//! `cargo run --release -p roost-benchmarks --bin write-bench -- --databases sqlite --runs 3`

mod cpu;
mod databases;
mod history;
mod stats;

use clap::Parser;
use roost::model::{Reading, SensorKey, TimestampMs};
use roost::store::{Batch, DatabaseUrl, Store};
use stats::median;
use std::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    /// `sqlite` (a temporary file) or postgres:// / mysql:// URLs whose database is re-created.
    #[arg(long, value_delimiter = ',', default_values_t = ["sqlite".to_string()])]
    databases: Vec<String>,
    /// Sensors, each with one reading in every batch.
    #[arg(long, default_value_t = 1_000)]
    sensors: usize,
    /// Batches written (one second of readings apart).
    #[arg(long, default_value_t = 300)]
    batches: usize,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Batches of different sizes, from half the sensors to all of them, as a fleet's batches
    /// are (each is whatever arrived while the last one was committed). Without it every batch
    /// has a reading of every sensor.
    #[arg(long)]
    varied: bool,
    /// Readings per sensor stored before the clock starts (a second apart, in the past), as in
    /// a fleet that has been running for a while: each sensor's newest page of the readings'
    /// index is then a page of its own, and those of thousands of sensors may be more than the
    /// database keeps in memory.
    #[arg(long, default_value_t = 0)]
    history: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("| database | sensors × batches | readings/s: median | min | max | CPU per reading: median |");
    println!("|---|---|---|---|---|---|");
    for db in &args.databases {
        let mut rates = Vec::new();
        let mut cpu = Vec::new();
        for run in 1..=args.runs {
            let dir = tempfile::tempdir()?;
            let url = databases::fresh_url(db, dir.path(), "write.db")?;
            let store = Store::open(&DatabaseUrl::new(url)).await?;
            let keys: Vec<SensorKey> = (0..args.sensors)
                .map(|i| SensorKey { owner: format!("d{i}").into(), place: "room".into(), category: "c0".into() })
                .collect();
            // Readings of the present, as a fleet's are (after the minute the schema's fold of
            // minutes into hours starts from): their hours are folded once a simulated minute,
            // and the folds count in the time.
            let now = TimestampMs::now().0;
            let start = now - now.rem_euclid(60_000) + 120_000;
            let batch_at = |second: usize| Batch {
                readings: keys[..sensors_in_batch(args.sensors, second, args.varied)]
                    .iter()
                    .map(|key| Reading { sensor: key.clone(), ts: TimestampMs(start + second as i64 * 1000), value: (second % 600) as f64 })
                    .collect(),
                ..Batch::default()
            };
            // The sensors exist before the clock starts, as in a fleet that has been running.
            history::store_history(&store, &keys, args.history, now).await?;
            store.write_batch(&batch_at(0)).await?;
            let batches: Vec<Batch> = (1..=args.batches).map(batch_at).collect();
            let (started, cpu_before) = (Instant::now(), cpu::cpu_time(std::process::id())?);
            for (second, batch) in (1..).zip(&batches) {
                store.write_batch(batch).await?;
                // MariaDB folds its readings into minutes every two seconds (the server's
                // pace), in the time too.
                if second % 2 == 0 {
                    store.fold_minutes(TimestampMs(start + second * 1000)).await?;
                }
                if second % 60 == 0 {
                    store.fold_hours(TimestampMs(start + second * 1000)).await?;
                }
            }
            let (elapsed, spent) = (started.elapsed(), cpu::cpu_time(std::process::id())? - cpu_before);
            let written = batches.iter().map(|b| b.readings.len()).sum::<usize>() as f64;
            rates.push(written / elapsed.as_secs_f64());
            cpu.push(spent.as_secs_f64() * 1e6 / written);
            eprintln!("{db} run {run}: {:.0} readings/s, {:.1} µs CPU each", rates[rates.len() - 1], cpu[cpu.len() - 1]);
            store.close().await;
        }
        let name = db.split("://").next().unwrap_or(db);
        let (min, max) = (rates.iter().copied().fold(f64::MAX, f64::min), rates.iter().copied().fold(0.0, f64::max));
        println!(
            "| {name} | {}{} × {}{} | {:.0} | {min:.0} | {max:.0} | {:.1} µs |",
            args.sensors,
            if args.varied { " (varied)" } else { "" },
            args.batches,
            if args.history > 0 { format!(", {} stored per sensor before", args.history) } else { String::new() },
            median(rates),
            median(cpu)
        );
    }
    Ok(())
}

/// How many sensors (the first ones) have a reading in the batch of `second`: all of them, or
/// with `varied`, from half to all, a different count from one batch to the next.
fn sensors_in_batch(sensors: usize, second: usize, varied: bool) -> usize {
    if varied {
        sensors - (second * 37) % (sensors / 2).max(1)
    } else {
        sensors
    }
}
