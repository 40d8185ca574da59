//! chart-bench: how long the dashboard's 7-day chart query takes for one sensor among 10
//! million readings, on each database. Fills a fresh database (10 sensors × 1 million readings,
//! one per second), then times `Store::buckets` for 7 days in 1,000 buckets (what the API runs
//! for a chart 1,000 pixels wide).
//!
//! `cargo run --release -p roost-benchmarks --bin chart-bench -- --runs 5`

mod databases;

use clap::Parser;
use roost::model::{Reading, SensorKey, TimestampMs};
use roost::store::{Batch, DatabaseUrl, Store};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    /// `sqlite` (a temporary file) or postgres:// / mysql:// URLs whose database is re-created.
    #[arg(long, value_delimiter = ',', default_values_t = ["sqlite".to_string(), "postgres://root@127.0.0.1:5432/roost_chart_bench".into(), "mysql://root@127.0.0.1:3306/roost_chart_bench".into()])]
    databases: Vec<String>,
    #[arg(long, default_value_t = 10)]
    sensors: usize,
    #[arg(long, default_value_t = 1_000_000)]
    per_sensor: i64,
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    println!("| database | fill (rows/s) | 7-day chart, 1,000 buckets: median | min | max |");
    println!("|---|---|---|---|---|");
    for db in &args.databases {
        let url = databases::fresh_url(db, dir.path(), "chart.db")?;
        let store = Store::open(&DatabaseUrl::new(url)).await?;
        let start = 1_700_000_000_000i64;
        let filled = Instant::now();
        let keys: Vec<SensorKey> = (0..args.sensors)
            .map(|i| SensorKey { owner: "bench".into(), place: format!("room{i}").into(), category: "temperature".into() })
            .collect();
        // Interleaved in time, as devices publish; 20,000 readings per transaction.
        let mut batch = Batch::default();
        let mut written = 0u64;
        for second in 0..args.per_sensor {
            for key in &keys {
                batch.readings.push(Reading {
                    sensor: key.clone(),
                    ts: TimestampMs(start + second * 1000),
                    value: 20.0 + (second % 600) as f64 / 100.0,
                });
            }
            if batch.readings.len() >= 20_000 {
                store.write_batch(&batch).await?;
                written += batch.readings.len() as u64;
                batch.readings.clear();
                if written % 1_000_000 < 20_000 {
                    eprintln!("{db}: {written} rows, {:.0} rows/s", written as f64 / filled.elapsed().as_secs_f64());
                }
            }
        }
        written += batch.readings.len() as u64;
        store.write_batch(&batch).await?;
        let fill_rate = written as f64 / filled.elapsed().as_secs_f64();
        let sensor_id = store.sensor_id(&keys[args.sensors / 2]).await?.expect("sensor exists");
        let from = TimestampMs(start + 2 * 86_400_000);
        let to = TimestampMs(from.0 + 7 * 86_400_000);
        let width = (to.0 - from.0) / 1000;
        let mut times = Vec::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            let buckets = store.buckets(roost::store::Series::Minutes, sensor_id, from, to, width).await?;
            times.push(t.elapsed());
            anyhow::ensure!(buckets.len() == 1000, "expected 1000 buckets, got {}", buckets.len());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let name = db.split("://").next().unwrap_or(db);
        println!(
            "| {name} | {fill_rate:.0} | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1])
        );
        store.close().await;
    }
    Ok(())
}
