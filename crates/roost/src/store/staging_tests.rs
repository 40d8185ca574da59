//! The SQLite writer's staged readings (`sqlite_writer`), through the store: which table a
//! batch's readings go to, moves in chunks, and readers and deletions that see each reading
//! once wherever it is. Moves here come only where a test makes one (the first batch after
//! opening, after a full chunk, once `MERGE_ROWS` are staged), never by the clock: a loaded
//! machine that takes seconds over a batch sees the same moves. When moves are due by the clock
//! is `sqlite_writer`'s own unit test.

use super::sqlite_writer::StagingPeriods;
use super::{Batch, DatabaseUrl, Series, Store};
use crate::model::{Reading, SensorKey, TimestampMs};
use std::path::Path;
use std::time::Duration;

/// Periods no test reaches: the clock never makes a move.
const NOT_BY_THE_CLOCK: StagingPeriods =
    StagingPeriods { move_every: Duration::from_secs(3_600), write_direct_for: Duration::from_secs(3_600) };

fn key(owner: &str) -> SensorKey {
    SensorKey { owner: owner.into(), place: "room".into(), category: "t".into() }
}

fn reading(k: &SensorKey, ts: i64, value: f64) -> Reading {
    Reading { sensor: k.clone(), ts: TimestampMs(ts), value }
}

async fn open(file: &Path) -> Store {
    Store::open_staging(&DatabaseUrl::new(format!("sqlite://{}", file.display())), NOT_BY_THE_CLOCK).await.unwrap()
}

async fn write(store: &Store, readings: Vec<Reading>) {
    store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
}

async fn rows(file: &Path, table: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display())).await.unwrap();
    let count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    count
}

/// The rows of the file's two reading tables: (`readings_indexed`, `readings_staged`).
async fn indexed_and_staged(file: &Path) -> (i64, i64) {
    (rows(file, "readings_indexed").await, rows(file, "readings_staged").await)
}

/// Waits (a minute at most) until the two tables hold `expected` rows: a move comes after its
/// batch's answer, on the writer's thread.
async fn wait_for(file: &Path, expected: (i64, i64)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = indexed_and_staged(file).await;
        if now == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "expected {expected:?} (indexed, staged), have {now:?}: no move");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Readers see each reading once in either table, purges and deletions reach both, and what
/// a shutdown leaves staged is read after the next start and moved by its first batch (schema
/// migration 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_are_read_and_deleted_in_both_tables() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roost.db");
    let mut store = open(&file).await;
    let k = key("a");
    let one = |ts: i64| vec![reading(&k, ts, ts as f64)];

    // The first batch after opening is followed by a move; the next one's reading stays staged.
    write(&store, one(2_000)).await;
    wait_for(&file, (1, 0)).await;
    write(&store, one(1_000)).await;
    assert_eq!(indexed_and_staged(&file).await, (1, 1), "one reading in each table");
    let id = store.sensor(&k).await.unwrap().unwrap().id;
    let all = (TimestampMs(0), TimestampMs(10_000));
    assert_eq!(store.readings(&k, all.0, all.1).await.unwrap(), [(TimestampMs(1_000), 1_000.0), (TimestampMs(2_000), 2_000.0)]);
    assert_eq!(store.readings_by_id(id, all.0, all.1, 10).await.unwrap(), [(1_000, 1_000.0), (2_000, 2_000.0)]);
    assert_eq!(store.count_readings().await.unwrap(), 2);
    assert_eq!(store.oldest(Series::Raw, id).await.unwrap(), Some(TimestampMs(1_000)));
    assert_eq!(store.size().await.unwrap().oldest_reading_ms, Some(1_000), "the oldest reading is the staged one");
    let buckets = store.buckets(Series::Raw, id, all.0, all.1, 10_000).await.unwrap();
    assert_eq!((buckets.len(), buckets[0].count, buckets[0].min, buckets[0].max), (1, 2, 1_000.0, 2_000.0));

    // What a shutdown left staged is read after the next start, and moved after its first
    // batch with that batch's reading; each is still read once.
    store.close().await;
    store = open(&file).await;
    assert_eq!(store.count_readings().await.unwrap(), 2);
    write(&store, one(3_000)).await;
    wait_for(&file, (3, 0)).await;
    assert_eq!(store.readings_by_id(id, all.0, all.1, 10).await.unwrap(), [(1_000, 1_000.0), (2_000, 2_000.0), (3_000, 3_000.0)]);

    // Purging reaches the staged readings as well as the indexed ones, within its limit.
    write(&store, one(500)).await;
    assert_eq!(indexed_and_staged(&file).await, (3, 1));
    assert_eq!(store.purge_chunk(Series::Raw, id, TimestampMs(2_500), 2).await.unwrap(), 2, "the limit holds across both tables");
    assert_eq!(store.purge_chunk(Series::Raw, id, TimestampMs(2_500), 2).await.unwrap(), 1);
    assert_eq!(store.readings_by_id(id, all.0, all.1, 10).await.unwrap(), [(3_000, 3_000.0)]);

    // Deleting the sensor deletes its staged readings too (their foreign key would refuse it).
    write(&store, one(4_000)).await;
    assert_eq!(indexed_and_staged(&file).await, (1, 1));
    store.delete_sensor(&k, id).await.unwrap();
    assert_eq!(indexed_and_staged(&file).await, (0, 0));
    store.close().await;
}

/// A batch of many readings per sensor goes straight to `readings_indexed`; a fleet's batch
/// (a reading per sensor) is staged; moves take at most `MERGE_CHUNK` (20,000) readings, the
/// rest after the next batch, none lost or moved twice; a move that found a reading per sensor
/// turns staging off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_few_sensors_skip_staging_and_moves_come_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roost.db");
    let store = open(&file).await;
    let few = key("few");
    let one_more = |ts: i64| write(&store, vec![reading(&few, ts, 1.0)]);

    write(&store, (0..100).map(|i| reading(&few, 1_000 + i, i as f64)).collect()).await;
    assert_eq!(indexed_and_staged(&file).await, (100, 0), "a hundred readings of one sensor are written to the indexed table");

    // A fleet's batch is staged; with the next one 50,000 are staged, and the oldest 20,000
    // are moved.
    let fleet = |ts: i64| (0..25_000).map(|d| reading(&key(&format!("d{d}")), ts, d as f64 + (ts - 5_000) as f64 / 1_000.0)).collect();
    write(&store, fleet(5_000)).await;
    assert_eq!(indexed_and_staged(&file).await, (100, 25_000), "a reading per sensor is staged");
    write(&store, fleet(6_000)).await;
    wait_for(&file, (20_100, 30_000)).await;
    // That move found a reading per sensor: this batch is written to the indexed table, and
    // a chunk is moved after it, and the rest after the next one.
    one_more(9_000).await;
    wait_for(&file, (40_101, 10_000)).await;
    one_more(9_001).await;
    wait_for(&file, (50_102, 0)).await;
    one_more(9_002).await;
    assert_eq!(indexed_and_staged(&file).await, (50_103, 0), "staging is off after a move of a reading per sensor");
    assert_eq!(store.count_readings().await.unwrap(), 50_103);
    let d7 = store.sensor(&key("d7")).await.unwrap().unwrap().id;
    assert_eq!(store.readings_by_id(d7, TimestampMs(0), TimestampMs(10_000), 10).await.unwrap(), [(5_000, 7.0), (6_000, 8.0)]);
    store.close().await;
}
