//! The storage contract, run against SQLite, PostgreSQL and MariaDB alike.

use crate::databases::{Backend, TestDb};
use crate::support::eventually;
use roost::model::{Reading, Reject, RejectReason, SensorKey, TimestampMs};
use roost::store::{Batch, Commit, Series, Store};

fn key(owner: &str, place: &str, category: &str) -> SensorKey {
    SensorKey { owner: owner.into(), place: place.into(), category: category.into() }
}

fn reading(k: &SensorKey, ts: i64, value: f64) -> Reading {
    Reading { sensor: k.clone(), ts: TimestampMs(ts), value }
}

async fn migrations_are_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let version = store.migrate().await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), version);
    assert_eq!(store.count_readings().await.unwrap(), 0);
}

/// A Roost older than the database's schema (a package rolled back after an upgrade, an old
/// node beside upgraded ones) refuses to start, naming both versions, and leaves the database
/// as it was; it used to run on a schema it did not know.
async fn an_older_roost_refuses_a_newer_schema(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let known = store.migrate().await.unwrap();
    let k = key("a", "b", "c");
    store.write_batch(&Batch { readings: vec![reading(&k, 1_000, 1.0)], ..Batch::default() }).await.unwrap();
    store.close().await;
    db.execute(&format!("INSERT INTO schema_version (version) VALUES ({})", known + 1)).await;
    let newer = |e: &roost::store::StoreError| matches!(e, roost::store::StoreError::NewerSchema { found, known: k } if *found == known + 1 && *k == known);
    // Refused by a store that stays open: its refusal gives the migration lock back (on the
    // server databases a pooled connection kept it, and the next start waited for ever).
    let first = Store::connect(&db.url).await.unwrap();
    let refused = first.migrate().await.expect_err("a newer schema is refused");
    assert!(newer(&refused), "{refused}");
    assert!(refused.to_string().contains(&format!("version {}", known + 1)), "{refused}");
    let second = tokio::time::timeout(std::time::Duration::from_secs(20), Store::open(&db.url)).await.expect("no wait for the lock");
    assert!(second.as_ref().is_err_and(newer), "{:?}", second.err());
    first.close().await;
    db.execute(&format!("DELETE FROM schema_version WHERE version = {}", known + 1)).await;
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 1, "nothing was changed");
    store.close().await;
}

/// Exports whose downloads stopped reading hold at most half the shared pool: logins, API
/// requests and the broker's state still get a connection (they waited 5 s and failed when four
/// stalled exports held all four).
async fn stalled_exports_leave_connections_for_the_rest(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = std::sync::Arc::new(Store::open(&db.url).await.unwrap());
    let sensor = key("yanjo", "attic", "temperature");
    store.write_batch(&Batch { readings: (0..10_000).map(|n| reading(&sensor, n, 1.0)).collect(), ..Batch::default() }).await.unwrap();
    let id = store.sensor_id(&sensor).await.unwrap().unwrap();
    let mut downloads = Vec::new();
    for _ in 0..4 {
        // Room for one chunk of 4,096 readings: the export then waits to send its second.
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move { store.stream_readings(id, TimestampMs(0), TimestampMs(i64::MAX), sender, None).await });
        downloads.push(receiver);
    }
    let started = |downloads: &[tokio::sync::mpsc::Receiver<_>]| downloads.iter().filter(|d| !d.is_empty()).count();
    let patience = std::time::Duration::from_secs(30);
    let settle = std::time::Duration::from_secs(1);
    eventually("two exports have started", || started(&downloads) >= 2).await;
    tokio::time::sleep(settle).await;
    assert_eq!(started(&downloads), 2, "two exports at once; the others wait their turn");
    // Longer than the pool's acquire timeout (5 s), after which a starved count fails.
    let counted = tokio::time::timeout(patience, store.count_readings()).await;
    assert_eq!(counted.expect("a connection is free").unwrap(), 10_000);
    // A download that reads gets everything, and a waiting export its turn.
    let reading = downloads.iter().position(|d| !d.is_empty()).expect("a running export");
    let mut first = downloads.remove(reading);
    let mut exported = 0;
    while let Some(chunk) = tokio::time::timeout(patience, first.recv()).await.expect("the export goes on") {
        exported += chunk.unwrap().len();
    }
    assert_eq!(exported, 10_000);
    eventually("a waiting export has started", || started(&downloads) == 2).await;
    drop(downloads);
    // With a stall limit, a download that takes nothing for that long is ended with an error it
    // sees when it reads again (not a short file that looks whole), and its turn is given back:
    // with the other turn held by an export nobody reads, a third export starts only then.
    let export = |limit| {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        let store = std::sync::Arc::clone(&store);
        let task = tokio::spawn(async move { store.stream_readings(id, TimestampMs(0), TimestampMs(i64::MAX), sender, limit).await });
        (task, receiver)
    };
    let (_, held) = export(None);
    eventually("the export nobody reads has its turn", || !held.is_empty()).await;
    let (stalling, mut stalled) = export(Some(std::time::Duration::from_millis(200)));
    eventually("the export that stalls has its turn", || !stalled.is_empty()).await;
    let (_, after) = export(None);
    eventually("the stalled export gave its turn back", || !after.is_empty()).await;
    let mut next = async || tokio::time::timeout(crate::support::WAIT, stalled.recv()).await.expect("the export answers");
    assert_eq!(next().await.unwrap().unwrap().len(), 4096, "the chunk sent before the stall");
    let ended = next().await.unwrap().unwrap_err();
    assert!(matches!(ended, roost::store::StoreError::ExportStalled(_)), "{ended}");
    assert!(next().await.is_none());
    stalling.await.unwrap();
}

async fn batches_store_readings_sensors_and_rejects(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let temp = key("yanjo", "bedroom", "temperature");
    let light = key("yanjo", "livingroom", "illuminate");
    let batch = Batch {
        readings: vec![reading(&temp, 2_000, 21.5), reading(&temp, 1_000, 20.0), reading(&light, 1_500, 512.0)],
        rejects: vec![Reject {
            received_at: TimestampMs(1_600),
            client_id: "nodemcu-1".into(),
            topic: "iot/livingroom/temp".into(),
            payload_prefix: vec![0xff, b'x'],
            reason: RejectReason::NoTemplate,
        }],
        deliveries: vec![],
    };
    store.write_batch(&batch).await.unwrap();
    // A second batch reuses the sensors (cached ids) and an older reading does not move
    // `last_value` backwards.
    store.write_batch(&Batch { readings: vec![reading(&temp, 500, -3.0)], ..Batch::default() }).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 4);
    let sensors = store.sensors().await.unwrap();
    assert_eq!(sensors.len(), 2);
    let t = sensors.iter().find(|s| s.key == temp).unwrap();
    assert_eq!((t.last_value, t.last_seen), (Some(21.5), Some(TimestampMs(2_000))));
    let history = store.readings(&temp, TimestampMs(0), TimestampMs(1_500)).await.unwrap();
    assert_eq!(history, [(TimestampMs(500), -3.0), (TimestampMs(1_000), 20.0)]);
    let rejects = store.recent_rejects(10).await.unwrap();
    assert_eq!(rejects.len(), 1);
    assert_eq!((rejects[0].reason.as_str(), rejects[0].payload.as_slice()), ("topic matches no template", &[0xff, b'x'][..]));
}

async fn a_fresh_store_finds_existing_sensors(backend: Backend) {
    let db = TestDb::new(backend).await;
    let k = key("a", "b", "c");
    Store::open(&db.url).await.unwrap().write_batch(&Batch { readings: vec![reading(&k, 1, 1.0)], ..Batch::default() }).await.unwrap();
    // A new process (empty id cache) must not create the sensor twice.
    let store = Store::open(&db.url).await.unwrap();
    store.write_batch(&Batch { readings: vec![reading(&k, 2, 2.0)], ..Batch::default() }).await.unwrap();
    assert_eq!(store.sensors().await.unwrap().len(), 1);
    assert_eq!(store.count_readings().await.unwrap(), 2);
}

async fn large_batches_are_split_into_chunks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let readings: Vec<_> = (0..5_000).map(|i| reading(&key("o", &format!("p{}", i % 7), "t"), i, i as f64)).collect();
    store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 5_000);
    assert_eq!(store.sensors().await.unwrap().len(), 7);
}

/// A batch retried with its token after its first COMMIT's answer was lost is not stored twice.
async fn a_batch_retried_with_its_token_is_stored_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let k = key("yanjo", "hall", "temperature");
    let batch = Batch { readings: vec![reading(&k, 1, 1.0), reading(&k, 2, 2.0)], ..Batch::default() };
    assert_eq!(store.write_batch_once(&batch, 42).await.unwrap(), Commit::Committed);
    assert_eq!(store.write_batch_once(&batch, 42).await.unwrap(), Commit::AlreadyCommitted);
    assert_eq!(store.count_readings().await.unwrap(), 2);
    assert_eq!(store.write_batch_once(&batch, 43).await.unwrap(), Commit::Committed, "another token is another batch");
    assert_eq!(store.count_readings().await.unwrap(), 4);
}

/// The set-based latest-value update: within a batch and across batches, a sensor's
/// `last_value` is its newest reading by reading time, whatever order the readings came in.
/// More sensors than one statement's chunk (1,000), so the chunks are covered too. On
/// MariaDB the batches of one reading per sensor are staged and leave the latest values to the
/// minute fold: they hold before the fold (read from the staged readings), after it (from the
/// sensors' rows), and after a staged batch of older readings on either side of a fold.
async fn the_latest_value_is_the_newest_by_reading_time(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let sensors: Vec<_> = (0..2_500).map(|i| key("fleet", &format!("d{i}"), "temperature")).collect();
    // Each sensor: three readings out of order; the newest (ts 3_000 + i) is in the middle.
    let first: Vec<_> = sensors
        .iter()
        .enumerate()
        .flat_map(|(i, k)| {
            let i = i as i64;
            [reading(k, 1_000 + i, 1.0), reading(k, 3_000 + i, i as f64), reading(k, 2_000 + i, 2.0)]
        })
        .collect();
    store.write_batch(&Batch { readings: first, ..Batch::default() }).await.unwrap();
    // A second batch: even sensors get an older reading (ignored), odd ones a newer one.
    let second: Vec<_> =
        sensors.iter().enumerate().map(|(i, k)| if i % 2 == 0 { reading(k, 10, -1.0) } else { reading(k, 9_000, -(i as f64)) }).collect();
    store.write_batch(&Batch { readings: second, ..Batch::default() }).await.unwrap();
    async fn expect_newest(store: &Store, sensors: usize, expected: impl Fn(i64) -> (f64, i64), when: &str) {
        let stored = store.sensors().await.unwrap();
        assert_eq!(stored.len(), sensors);
        for row in stored {
            let i: i64 = row.key.place[1..].parse().unwrap();
            let (value, ts) = expected(i);
            assert_eq!((row.last_value, row.last_seen), (Some(value), Some(TimestampMs(ts))), "sensor {} {when}", row.key);
            if i % 100 == 0 {
                let one = store.sensor(&row.key).await.unwrap().unwrap();
                assert_eq!((one.last_value, one.last_seen), (row.last_value, row.last_seen), "sensor {} alone {when}", row.key);
            }
        }
    }
    let first_two = |i: i64| if i % 2 == 0 { (i as f64, 3_000 + i) } else { (-(i as f64), 9_000) };
    expect_newest(&store, sensors.len(), first_two, "after the batches").await;
    store.fold_minutes(TimestampMs(10_000)).await.unwrap();
    expect_newest(&store, sensors.len(), first_two, "after a fold").await;
    // Older readings of every sensor, one batch on either side of a fold: nothing changes.
    for fold in [true, false] {
        let older: Vec<_> = sensors.iter().map(|k| reading(k, 500, -7.0)).collect();
        store.write_batch(&Batch { readings: older, ..Batch::default() }).await.unwrap();
        expect_newest(&store, sensors.len(), first_two, "after older readings").await;
        if fold {
            store.fold_minutes(TimestampMs(10_000)).await.unwrap();
            expect_newest(&store, sensors.len(), first_two, "after older readings folded").await;
        }
    }
    // Then newer readings of every sensor: newest before the fold and after it.
    let newer: Vec<_> = sensors.iter().enumerate().map(|(i, k)| reading(k, 20_000 + i as i64, 1_000.0 + i as f64)).collect();
    store.write_batch(&Batch { readings: newer, ..Batch::default() }).await.unwrap();
    let newer = |i: i64| (1_000.0 + i as f64, 20_000 + i);
    expect_newest(&store, sensors.len(), newer, "after newer readings").await;
    store.fold_minutes(TimestampMs(30_000)).await.unwrap();
    expect_newest(&store, sensors.len(), newer, "after newer readings folded").await;
    assert_eq!(store.count_readings().await.unwrap(), 7 * 2_500);
}

/// Several writers (as from several Roost processes on one database) create the same new
/// sensors at once, each listing them in its own order: every sensor exists once and every
/// reading belongs to the sensor it was written for.
async fn new_sensors_are_created_once_under_concurrency(backend: Backend) {
    let db = TestDb::new(backend).await;
    Store::open(&db.url).await.unwrap();
    let sensors: Vec<_> = (0..1_500).map(|i| key("shared", &format!("s{i}"), "t")).collect();
    let writers = (0..4).map(|w| {
        let url = db.url.clone();
        let mut order = sensors.clone();
        order.rotate_left(w * 400);
        if w % 2 == 1 {
            order.reverse();
        }
        tokio::spawn(async move {
            let store = Store::connect(&url).await.unwrap();
            // The value names the sensor, so a reading stored under the wrong id shows.
            let batch =
                Batch { readings: order.iter().map(|k| reading(k, w as i64, k.place[1..].parse().unwrap())).collect(), ..Batch::default() };
            // MariaDB may pick one writer as a deadlock victim: its transaction is rolled
            // back whole, and it tries again, as the ingest writer does.
            loop {
                match store.write_batch(&batch).await {
                    Ok(()) => break,
                    Err(e) if e.failure().is_transient() => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                    Err(e) => panic!("writer {w}: {e}"),
                }
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(store.sensors().await.unwrap().len(), 1_500);
    let values = store.all_values().await.unwrap();
    assert_eq!(values.len(), 4 * 1_500);
    for (sensor, value) in values {
        assert_eq!(sensor.place, format!("s{value}"), "a reading is stored under another sensor");
    }
}

/// Per-minute rollups stay exact with many sensors per batch, merged across batches.
async fn rollups_are_exact_for_many_sensors(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let base = 1_700_000_040_000; // on a minute boundary
    let sensors: Vec<_> = (0..1_200).map(|i| key("roll", &format!("s{i}"), "t")).collect();
    // Ten minutes, one reading per sensor every 20 s, in batches that each hold every sensor.
    for step in 0..30 {
        let readings =
            sensors.iter().enumerate().map(|(i, k)| reading(k, base + step * 20_000, (step * 1_000 + i as i64) as f64)).collect();
        store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    }
    let wide = 10 * 60_000; // 10 minutes: from the rollups
    for i in [0, 1, 999, 1_000, 1_199] {
        let id = store.sensor_id(&sensors[i]).await.unwrap().unwrap();
        let buckets = store.buckets(Series::Minutes, id, TimestampMs(base), TimestampMs(base + wide), wide).await.unwrap();
        let i = i as f64;
        assert_eq!(buckets.len(), 1, "sensor {i}");
        assert_eq!((buckets[0].count, buckets[0].min, buckets[0].max), (30, i, 29_000.0 + i), "sensor {i}");
        assert!((buckets[0].avg - (14_500.0 + i)).abs() < 1e-9, "sensor {i}: avg {}", buckets[0].avg);
    }
}

/// Values come back as the same floats: the readings, the latest value and the rollups. Tiny,
/// huge and many-digit values, in a batch of 9 sensors and in one of 1,000 (a full chunk of
/// the multi-row statements).
async fn values_are_stored_exactly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let values = [0.1, -1e-7, 1e300, 5e-324, f64::MAX, f64::MIN, 0.30000000000000004, 23.4, 123_456_789.123_456_79];
    for sensors in [values.len(), 1_000] {
        let keys: Vec<_> = (0..sensors).map(|i| key("exact", &format!("n{sensors}"), &format!("s{i}"))).collect();
        let value = |i: usize| values[i % values.len()] / if i < values.len() { 1.0 } else { 3.0 };
        let readings = keys.iter().enumerate().map(|(i, k)| reading(k, 60_000 + i as i64, value(i))).collect();
        store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
        for (i, k) in keys.iter().enumerate().filter(|(i, _)| *i < values.len() || i % 97 == 0) {
            let sensor = store.sensor(k).await.unwrap().unwrap();
            assert_eq!(sensor.last_value, Some(value(i)), "latest value of {k:?}");
            let stored = store.readings_by_id(sensor.id, TimestampMs(0), TimestampMs::MAX, 10).await.unwrap();
            assert_eq!(stored, [(60_000 + i as i64, value(i))], "reading of {k:?}");
            let minute = store.buckets(Series::Minutes, sensor.id, TimestampMs(60_000), TimestampMs(120_000), 60_000).await.unwrap();
            assert_eq!((minute[0].min, minute[0].max, minute[0].avg), (value(i), value(i), value(i)), "rollup of {k:?}");
        }
    }
}

/// Two keys the database may consider equal (MariaDB's default collation ignores case) in one
/// batch: the batch commits. SQLite and PostgreSQL keep two sensors; MariaDB stores both
/// readings under one.
async fn keys_that_differ_only_in_case_commit(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let (upper, lower) = (key("yanjo", "Kitchen", "t"), key("yanjo", "kitchen", "t"));
    let batch = Batch { readings: vec![reading(&upper, 1, 1.0), reading(&lower, 2, 2.0)], ..Batch::default() };
    tokio::time::timeout(std::time::Duration::from_secs(30), store.write_batch(&batch)).await.expect("the write finishes").unwrap();
    let sensors = if backend == Backend::MariaDb { 1 } else { 2 };
    assert_eq!(store.sensors().await.unwrap().len(), sensors);
    assert_eq!(store.count_readings().await.unwrap(), 2);
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

/// A sensor's hourly buckets from `from` for three hours, as (start, count, min, max, sum).
async fn hours(store: &Store, id: i64, from: i64) -> Vec<(i64, i64, f64, f64, f64)> {
    hours_from(store, Series::Hours, id, from).await
}

/// The same, drawn from `series`.
async fn hours_from(store: &Store, series: Series, id: i64, from: i64) -> Vec<(i64, i64, f64, f64, f64)> {
    let buckets = store.buckets(series, id, TimestampMs(from), TimestampMs(from + 3 * HOUR), HOUR).await.unwrap();
    buckets.iter().map(|b| (b.start, b.count, b.min, b.max, (b.avg * b.count as f64).round())).collect()
}

/// The start of an hour tomorrow: after the minute the schema's fold started from, so readings
/// then are folded, not late.
fn an_hour_tomorrow() -> i64 {
    let now = TimestampMs::now().0;
    now - now.rem_euclid(HOUR) + 24 * HOUR
}

/// Folds every reading into its minute (where minutes are folded), then every complete minute
/// before `now` into its hour, ten minutes at a time.
async fn fold_all(store: &Store, now: i64) {
    assert!(!store.fold_minutes(TimestampMs(now)).await.unwrap().more, "one fold takes every reading of a test");
    for _ in 0..1_000 {
        if !store.fold_hours(TimestampMs(now)).await.unwrap().more {
            return;
        }
    }
    panic!("the fold never caught up");
}

/// Hourly rollups are folded from the minutes (schema migration 15): before the fold, charts
/// of hours read the minutes; after it, the same figures come from `readings_1h` (the folded
/// minutes can be purged and nothing changes); a reading of a minute folded already updates its
/// hour itself; minutes not folded yet are never purged; nothing is counted twice.
async fn hours_are_folded_from_the_minutes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let t0 = an_hour_tomorrow();
    let k = key("fold", "room", "t");
    // 90 minutes, a reading each (value = its minute), in three batches.
    for part in 0..3 {
        let readings = (part * 30..part * 30 + 30).map(|m| reading(&k, t0 + m * MINUTE + 7_000, m as f64)).collect();
        store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    }
    let id = store.sensor_id(&k).await.unwrap().unwrap();
    let expected = vec![(t0, 60, 0.0, 59.0, 1_770.0), (t0 + HOUR, 30, 60.0, 89.0, 2_235.0)];
    assert_eq!(hours(&store, id, t0).await, expected, "from the minutes, before any fold");
    assert_eq!(store.oldest(Series::Hours, id).await.unwrap(), Some(TimestampMs(t0)));

    // 45 complete minutes: folded ten at a time (once the readings are in their minutes).
    store.fold_minutes(TimestampMs(t0 + 45 * MINUTE + 30_000)).await.unwrap();
    let first = store.fold_hours(TimestampMs(t0 + 45 * MINUTE + 30_000)).await.unwrap();
    assert_eq!((first.until, first.more), (Some(TimestampMs(t0 + 10 * MINUTE)), true));
    fold_all(&store, t0 + 45 * MINUTE + 30_000).await;
    assert_eq!(hours(&store, id, t0).await, expected, "folded in part: nothing counted twice");
    let purged = store.purge_chunk(Series::Minutes, id, TimestampMs(t0 + 3 * HOUR), 1_000).await.unwrap();
    assert_eq!(purged, 45, "only folded minutes are purged");
    assert_eq!(hours(&store, id, t0).await, expected, "the folded minutes are in the hours");

    // A reading of a folded minute updates its hour itself; one of a minute not folded, its minute.
    let late = vec![reading(&k, t0 + 5 * MINUTE, 1_000.0), reading(&k, t0 + 50 * MINUTE, -1.0)];
    store.write_batch(&Batch { readings: late, ..Batch::default() }).await.unwrap();
    let expected = vec![(t0, 62, -1.0, 1_000.0, 2_769.0), (t0 + HOUR, 30, 60.0, 89.0, 2_235.0)];
    assert_eq!(hours(&store, id, t0).await, expected, "late readings");

    fold_all(&store, t0 + 3 * HOUR).await;
    assert_eq!(store.fold_hours(TimestampMs(t0 + 3 * HOUR)).await.unwrap(), roost::store::Folded { until: None, more: false });
    let purged = store.purge_chunk(Series::Minutes, id, TimestampMs(t0 + 3 * HOUR), 1_000).await.unwrap();
    assert_eq!(purged, 46, "every minute is folded now (the late one's minute was written again)");
    assert_eq!(hours(&store, id, t0).await, expected, "all from readings_1h");
    assert_eq!(store.oldest(Series::Hours, id).await.unwrap(), Some(TimestampMs(t0)));
}

/// A sensor's minutes from `from` for three minutes, as (start, count, min, max, sum).
async fn minutes(store: &Store, id: i64, from: i64) -> Vec<(i64, i64, f64, f64, f64)> {
    let buckets = store.buckets(Series::Minutes, id, TimestampMs(from), TimestampMs(from + 3 * MINUTE), MINUTE).await.unwrap();
    buckets.iter().map(|b| (b.start, b.count, b.min, b.max, b.avg * b.count as f64)).collect()
}

/// Per-minute rollups folded from the readings (MariaDB/MySQL, schema migration 16; elsewhere
/// every batch upserts its minutes and the fold does nothing): before a fold, charts of minutes
/// and hours and the trend lines read the readings; a reading older than the fold's mark
/// updates its minute itself and one newer is left to the next fold, so a minute can be half
/// folded; a purge of raw readings keeps those not folded; nothing is counted twice.
async fn minutes_are_folded_from_the_readings(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let folds = backend == Backend::MariaDb;
    assert_eq!(store.folds_minutes(), folds);
    let t0 = an_hour_tomorrow();
    let k = key("minutes", "room", "t");
    let readings = vec![reading(&k, t0 + 10_000, 1.0), reading(&k, t0 + 70_000, 2.0)];
    store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    let id = store.sensor_id(&k).await.unwrap().unwrap();
    let expected = vec![(t0, 1, 1.0, 1.0, 1.0), (t0 + MINUTE, 1, 2.0, 2.0, 2.0)];
    assert_eq!(minutes(&store, id, t0).await, expected, "before a fold");
    assert_eq!(hours(&store, id, t0).await, [(t0, 2, 1.0, 2.0, 3.0)], "hours before a fold");
    // The oldest row a purge can reach: on MariaDB the batch (two readings of one sensor) is
    // staged, and purges leave staged readings to the fold (schema migration 17).
    let reachable = (!folds).then_some(TimestampMs(t0));
    assert_eq!(store.oldest(Series::Minutes, id).await.unwrap(), reachable, "the oldest minute before a fold");
    assert_eq!(store.oldest(Series::Hours, id).await.unwrap(), reachable, "the oldest hour before a fold");

    let folded = store.fold_minutes(TimestampMs(t0 + 65_000)).await.unwrap();
    assert_eq!(folded.until, folds.then_some(TimestampMs(t0 + 64_000)), "the mark: a second before the fold");
    assert!(!folded.more);
    assert_eq!(minutes(&store, id, t0).await, expected, "folded");

    // One reading before the mark (its batch upserts its minute), one after it, in the minute
    // the fold has already written to.
    let readings = vec![reading(&k, t0 + 20_000, 4.0), reading(&k, t0 + 90_000, 8.0)];
    store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    let expected = vec![(t0, 2, 1.0, 4.0, 5.0), (t0 + MINUTE, 2, 2.0, 8.0, 10.0)];
    assert_eq!(minutes(&store, id, t0).await, expected, "a minute half folded");
    assert_eq!(hours(&store, id, t0).await, [(t0, 4, 1.0, 8.0, 15.0)], "hours with a minute half folded");
    let trends: Vec<f64> =
        store.minute_averages(TimestampMs(t0)).await.unwrap().into_iter().filter(|&(s, _)| s == id).map(|(_, avg)| avg).collect();
    assert_eq!(trends, [2.5, 5.0], "trend lines: one average per minute");

    // Where minutes are folded, readings from the mark on are kept (one of them is folded), and
    // the staged ones (this batch's: two readings of one sensor) are left until the fold moves
    // them (schema migration 17).
    let purged = store.purge_chunk(Series::Raw, id, TimestampMs(t0 + HOUR), 1_000).await.unwrap();
    assert_eq!(purged, if folds { 1 } else { 4 }, "the readings not folded yet are kept");
    assert_eq!(minutes(&store, id, t0).await, expected, "the purged readings are in their minutes");
    store.fold_minutes(TimestampMs(t0 + 2 * MINUTE)).await.unwrap();
    assert_eq!(minutes(&store, id, t0).await, expected, "all folded");
    let purged = store.purge_chunk(Series::Raw, id, TimestampMs(t0 + HOUR), 1_000).await.unwrap();
    assert_eq!(purged, if folds { 3 } else { 0 }, "folded and moved, the last readings can go");
    assert_eq!(minutes(&store, id, t0).await, expected, "every figure from readings_1m");
    fold_all(&store, t0 + HOUR).await;
    assert_eq!(hours(&store, id, t0).await, [(t0, 4, 1.0, 8.0, 15.0)], "hours folded from the minutes");
}

/// Folds while batches are written into the minutes being folded: every reading counts once in
/// its hour, whether the fold took its minute or its batch came after the fold and updated the
/// hour itself (PostgreSQL and MariaDB: two batches at once, the fold waiting for them). Two
/// folders, as two nodes on one database: on MariaDB a fold of minutes rolls the readings up
/// without the folds' row, and one overtaken by the other's must not add them again.
async fn folds_and_batches_at_once_count_every_reading_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = std::sync::Arc::new(Store::open(&db.url).await.unwrap());
    let t0 = an_hour_tomorrow();
    let keys: Vec<_> = (0..5).map(|i| key("race", &format!("s{i}"), "t")).collect();
    // 150 minutes, a reading of each sensor every 10 s (values 1, 2, 4 in turn), a batch each,
    // written by two tasks, while two others fold up to a minute ahead of the writers. The
    // writers keep within five minutes of the hours folded, so that the folds run among the
    // batches however the tasks are scheduled (a loaded machine ran the writers to the end
    // before the folds had started).
    let written = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(t0));
    let folded = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(t0));
    let folder_stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for half in 0..2 {
        let (store, keys, written) = (store.clone(), keys.clone(), written.clone());
        let (folded, folder_stopped) = (folded.clone(), folder_stopped.clone());
        writers.push(tokio::spawn(async move {
            for step in (half..150 * 6).step_by(2) {
                let ts = t0 + step * 10_000;
                while ts > folded.load(std::sync::atomic::Ordering::Relaxed) + 5 * MINUTE
                    && !folder_stopped.load(std::sync::atomic::Ordering::Relaxed)
                {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                let readings = keys.iter().map(|k| reading(k, ts + 3_000, [1.0, 2.0, 4.0][(step % 3) as usize])).collect();
                store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
                written.fetch_max(ts, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    /// Lets the writers go on when a folder stops, a failed assertion included.
    struct StoppedOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StoppedOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let folder = || {
        let (store, written, folded) = (store.clone(), written.clone(), folded.clone());
        let stopped = StoppedOnDrop(folder_stopped.clone());
        tokio::spawn(async move {
            let _stopped = stopped;
            let mut folds = 0;
            while written.load(std::sync::atomic::Ordering::Relaxed) < t0 + 150 * MINUTE - 10_000 {
                let ahead = written.load(std::sync::atomic::Ordering::Relaxed) + MINUTE;
                store.fold_minutes(TimestampMs(ahead)).await.unwrap();
                // Every sensor's latest value is at least as new as the newest batch written
                // (on MariaDB, staged batches leave it to the fold, readings staged while a fold
                // runs included).
                let newest = written.load(std::sync::atomic::Ordering::Relaxed) + 3_000;
                for sensor in store.sensors().await.unwrap() {
                    assert!(
                        sensor.last_seen >= Some(TimestampMs(newest)),
                        "{:?} after a fold: {:?} < {newest}",
                        sensor.key,
                        sensor.last_seen
                    );
                }
                if let Some(until) = store.fold_hours(TimestampMs(ahead)).await.unwrap().until {
                    folded.fetch_max(until.0, std::sync::atomic::Ordering::Relaxed);
                    folds += 1;
                }
                tokio::task::yield_now().await;
            }
            folds
        })
    };
    let folders = [folder(), folder()];
    for writer in writers {
        writer.await.unwrap();
    }
    let mut folds = 0;
    for folder in folders {
        folds += folder.await.unwrap();
    }
    assert!(folds > 10, "the folds ran while the batches were written");
    // 360 readings an hour, summing to 840; half an hour at the end.
    let expected = vec![(t0, 360, 1.0, 4.0, 840.0), (t0 + HOUR, 360, 1.0, 4.0, 840.0), (t0 + 2 * HOUR, 180, 1.0, 4.0, 420.0)];
    for k in &keys {
        let id = store.sensor_id(k).await.unwrap().unwrap();
        assert_eq!(hours_from(&store, Series::Minutes, id, t0).await, expected, "{k:?}'s minutes, as the folds left them");
    }
    fold_all(&store, t0 + 4 * HOUR).await;
    for k in &keys {
        let id = store.sensor_id(k).await.unwrap().unwrap();
        assert_eq!(hours_from(&store, Series::Minutes, id, t0).await, expected, "{k:?}'s minutes, all folded");
        store.purge_chunk(Series::Minutes, id, TimestampMs(t0 + 4 * HOUR), 10_000).await.unwrap();
        assert_eq!(hours(&store, id, t0).await, expected, "{k:?}");
    }
}

crate::on_every_database!(
    minutes_are_folded_from_the_readings,
    hours_are_folded_from_the_minutes,
    folds_and_batches_at_once_count_every_reading_once,
    the_latest_value_is_the_newest_by_reading_time,
    new_sensors_are_created_once_under_concurrency,
    rollups_are_exact_for_many_sensors,
    values_are_stored_exactly,
    keys_that_differ_only_in_case_commit,
    a_batch_retried_with_its_token_is_stored_once,
    migrations_are_idempotent,
    an_older_roost_refuses_a_newer_schema,
    batches_store_readings_sensors_and_rejects,
    a_fresh_store_finds_existing_sensors,
    large_batches_are_split_into_chunks,
    rollups_give_the_same_buckets_as_the_readings,
    a_lease_has_one_holder_until_it_expires,
    upstream_deliveries_keep_the_latest_per_packet_id,
    stalled_exports_leave_connections_for_the_rest,
);

/// `leases`: one holder at a time; the holder renews; an expired or given-up lease is taken over.
async fn a_lease_has_one_holder_until_it_expires(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    assert!(store.acquire_lease("job", "a", 1_000, 100).await.unwrap(), "a free lease is taken");
    assert!(!store.acquire_lease("job", "b", 1_050, 100).await.unwrap(), "held by a until 1100");
    assert!(store.acquire_lease("job", "a", 1_090, 100).await.unwrap(), "a renews until 1190");
    assert!(!store.acquire_lease("job", "b", 1_150, 100).await.unwrap(), "renewed: still a's");
    assert!(store.acquire_lease("job", "b", 1_200, 100).await.unwrap(), "expired: b takes it over");
    assert!(!store.acquire_lease("job", "a", 1_210, 100).await.unwrap());
    store.release_lease("job", "a").await.unwrap();
    assert!(!store.acquire_lease("job", "a", 1_220, 100).await.unwrap(), "only the holder gives a lease up");
    store.release_lease("job", "b").await.unwrap();
    assert!(store.acquire_lease("job", "a", 1_230, 100).await.unwrap(), "given up: taken at once");
    assert!(store.acquire_lease("other", "b", 1_230, 100).await.unwrap(), "leases are independent");
}

/// A batch records its upstream deliveries; the same packet id again keeps the latest message.
async fn upstream_deliveries_keep_the_latest_per_packet_id(backend: Backend) {
    use roost::model::UpstreamDelivery;
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let k = key("u", "p", "t");
    let delivery = |node: &str, packet_id, hash, seq| UpstreamDelivery { node: node.into(), packet_id, hash, seq };
    let batch = |deliveries| Batch { readings: vec![reading(&k, 1, 1.0)], deliveries, ..Batch::default() };
    store.write_batch(&batch(vec![delivery("a", 7, 70, 1), delivery("a", 65_535, 80, 2), delivery("b", 7, 90, 1)])).await.unwrap();
    // Packet id 7 again in one batch (twice) and in a later one: the latest seq wins.
    store.write_batch(&batch(vec![delivery("a", 7, 71, 3), delivery("a", 7, 72, 4)])).await.unwrap();
    let rows = store.recent_deliveries("a", 10).await.unwrap();
    let rows: Vec<(u16, i64, i64)> = rows.iter().map(|d| (d.packet_id, d.hash, d.seq)).collect();
    assert_eq!(rows, [(7, 72, 4), (65_535, 80, 2)], "newest first");
    assert_eq!(store.recent_deliveries("a", 1).await.unwrap().len(), 1);
    assert_eq!(store.recent_deliveries("b", 10).await.unwrap()[0].hash, 90);
}

/// Several nodes starting at once on a fresh server database: the schema is made once, no
/// error (a lock held while migrating). Not SQLite: one file is not shared by several nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once_on_postgres() {
    nodes_starting_together_migrate_once(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once_on_mariadb() {
    nodes_starting_together_migrate_once(Backend::MariaDb).await;
}

async fn nodes_starting_together_migrate_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let opening: Vec<_> = (0..3)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    for store in opening {
        let store = store.await.unwrap().unwrap();
        assert_eq!(store.count_readings().await.unwrap(), 0);
        store.close().await;
    }
}

/// Wide buckets come from the per-minute rollups, narrow ones from the readings: both agree.
async fn rollups_give_the_same_buckets_as_the_readings(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let k = key("r", "p", "c");
    let base = 1_700_000_040_000; // on a minute boundary
                                  // One hour at one reading per second, written in uneven batches (rollups merge across them).
    let all: Vec<_> = (0..3600).map(|i| reading(&k, base + i * 1000, i as f64)).collect();
    for chunk in all.chunks(777) {
        store.write_batch(&Batch { readings: chunk.to_vec(), ..Batch::default() }).await.unwrap();
    }
    let id = store.sensor_id(&k).await.unwrap().unwrap();
    let wide = 10 * 60_000; // 10 minutes: from the rollups
    let buckets = store.buckets(Series::Minutes, id, TimestampMs(base), TimestampMs(base + 3_600_000), wide).await.unwrap();
    assert_eq!(buckets.len(), 6);
    for (n, b) in buckets.iter().enumerate() {
        let first = (n * 600) as f64;
        assert_eq!((b.start, b.count, b.min, b.max), (base + n as i64 * wide, 600, first, first + 599.0));
        assert!((b.avg - (first + 299.5)).abs() < 1e-9, "bucket {n}: avg {}", b.avg);
    }
    let narrow = store.buckets(Series::Raw, id, TimestampMs(base), TimestampMs(base + 600_000), 60_000).await.unwrap();
    assert_eq!(narrow.len(), 10);
    assert_eq!((narrow[0].count, narrow[0].min, narrow[0].max), (60, 0.0, 59.0));
}

/// SQLite's ingest writer has a connection of its own: it writes to the file the URL names as
/// sqlx reads it (a percent-escaped space in the name), and an in-memory URL keeps the
/// readings where its reads find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_batches_are_written_where_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let escaped = roost::store::DatabaseUrl::new(format!("sqlite://{}/my%20roost.db", dir.path().display()));
    let memory = roost::store::DatabaseUrl::new("sqlite::memory:".to_owned());
    for url in [escaped, memory] {
        let store = Store::open(&url).await.unwrap();
        let k = key("a", "b", "c");
        store.write_batch(&Batch { readings: vec![reading(&k, 1_000, 1.5)], ..Batch::default() }).await.unwrap();
        assert_eq!(store.all_values().await.unwrap(), [(k, 1.5)], "{url}");
        store.close().await;
    }
    assert!(dir.path().join("my roost.db").exists());
    assert!(!dir.path().join("my%20roost.db").exists());
}

/// Rows in `table` of a SQLite file, read behind the store's back.
async fn sqlite_rows(file: &std::path::Path, table: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display())).await.unwrap();
    let count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    count
}

/// A SQLite file from before migration 12 (its readings in the `readings` table) keeps them:
/// the table becomes `readings_indexed` behind the `readings` view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_readings_survive_the_staging_migration() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roost.db");
    let url = roost::store::DatabaseUrl::new(format!("sqlite://{}", file.display()));
    let store = Store::open(&url).await.unwrap();
    let k = key("a", "b", "c");
    store.write_batch(&Batch { readings: vec![reading(&k, 1_000, 1.0), reading(&k, 2_000, 2.0)], ..Batch::default() }).await.unwrap();
    store.close().await;
    // Back to the schema of version 11.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display())).await.unwrap();
    for undo in [
        "DROP VIEW readings",
        "DROP TABLE readings_staged",
        "ALTER TABLE readings_indexed RENAME TO readings",
        "DROP TABLE rollup_fold",
        "DROP INDEX readings_1m_minute",
        "DELETE FROM schema_version WHERE version >= 12",
    ] {
        sqlx::query(undo).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.all_values().await.unwrap(), [(k.clone(), 1.0), (k.clone(), 2.0)]);
    store.write_batch(&Batch { readings: vec![reading(&k, 3_000, 3.0)], ..Batch::default() }).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 3);
    store.close().await;
    assert_eq!(sqlite_rows(&file, "readings_indexed").await, 3);
}

/// A database from before migration 15 has hours that every batch upserted: the migration
/// starts folding after its last minute, so none is folded into its hour a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hours_from_before_the_fold_migration_are_not_counted_twice() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roost.db");
    let url = roost::store::DatabaseUrl::new(format!("sqlite://{}", file.display()));
    let store = Store::open(&url).await.unwrap();
    let k = key("a", "b", "c");
    let t0 = an_hour_tomorrow();
    let readings = vec![reading(&k, t0 + MINUTE, 1.0), reading(&k, t0 + 2 * MINUTE, 2.0)];
    store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    fold_all(&store, t0 + 3 * HOUR).await;
    store.close().await;
    // Back to version 14: the same minutes and hours, no record of a fold.
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display())).await.unwrap();
    for undo in ["DROP TABLE rollup_fold", "DROP INDEX readings_1m_minute", "DELETE FROM schema_version WHERE version >= 15"] {
        sqlx::query(undo).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let store = Store::open(&url).await.unwrap();
    let id = store.sensor_id(&k).await.unwrap().unwrap();
    assert_eq!(hours(&store, id, t0).await, [(t0, 2, 1.0, 2.0, 3.0)]);
    assert_eq!(store.fold_hours(TimestampMs(t0 + 3 * HOUR)).await.unwrap().until, None, "nothing left to fold");
    assert_eq!(hours(&store, id, t0).await, [(t0, 2, 1.0, 2.0, 3.0)]);
    store.close().await;
}

/// A MariaDB database from before migration 16, whose batches upserted every reading's minute:
/// the migration counts every reading stored as folded, so none is folded a second time, and
/// the readings after it get ids above the old ones' and are folded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_minutes_from_before_the_minute_fold_migration_are_not_counted_twice() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::MariaDb).await;
    let store = Store::open(&db.url).await.unwrap();
    let k = key("a", "b", "c");
    let t0 = an_hour_tomorrow();
    let readings = vec![reading(&k, t0 + MINUTE, 1.0), reading(&k, t0 + 2 * MINUTE, 2.0)];
    store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    // The readings in their minutes, as a batch of version 15 left them.
    fold_all(&store, t0 + 3 * MINUTE).await;
    store.close().await;
    // Back to version 15: the same readings and minutes, without ids and marks.
    let mut conn = sqlx::MySqlConnection::connect(db.url.expose_secret()).await.unwrap();
    for undo in [
        "ALTER TABLE readings DROP COLUMN id",
        "ALTER TABLE rollup_fold DROP COLUMN minutes_through, DROP COLUMN minutes_before, DROP COLUMN staged_through",
        "DELETE FROM schema_version WHERE version >= 16",
    ] {
        sqlx::query(undo).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let store = Store::open(&db.url).await.unwrap();
    let id = store.sensor_id(&k).await.unwrap().unwrap();
    let expected = vec![(t0 + MINUTE, 1, 1.0, 1.0, 1.0), (t0 + 2 * MINUTE, 1, 2.0, 2.0, 2.0)];
    assert_eq!(minutes(&store, id, t0).await, expected, "after the migration");
    store.fold_minutes(TimestampMs(t0)).await.unwrap();
    assert_eq!(minutes(&store, id, t0).await, expected, "nothing folded twice");
    store.write_batch(&Batch { readings: vec![reading(&k, t0 + 2 * MINUTE + 30_000, 4.0)], ..Batch::default() }).await.unwrap();
    let expected = vec![(t0 + MINUTE, 1, 1.0, 1.0, 1.0), (t0 + 2 * MINUTE, 2, 2.0, 4.0, 6.0)];
    assert_eq!(minutes(&store, id, t0).await, expected, "a new reading, not folded yet");
    store.fold_minutes(TimestampMs(t0 + 3 * MINUTE)).await.unwrap();
    assert_eq!(minutes(&store, id, t0).await, expected, "the new reading folded");
    store.close().await;
}

/// MariaDB commits each schema change on its own, so a start stopped in the middle of a
/// migration leaves some of its statements done and its version unrecorded; the next start
/// finishes it. Here migration 15 was stopped while it built its index (its row of
/// `rollup_fold` committed), then migration 16 after its first `ALTER` (the readings' ids), and
/// then once more after all its statements, before its version was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_migration_stopped_between_its_statements_is_finished_on_the_next_start() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::MariaDb).await;
    let store = Store::open(&db.url).await.unwrap();
    let k = key("a", "b", "c");
    let t0 = an_hour_tomorrow();
    store.write_batch(&Batch { readings: vec![reading(&k, t0 + MINUTE, 1.0)], ..Batch::default() }).await.unwrap();
    // Folded, as version 15 left every reading (the migration counts those as folded).
    fold_all(&store, t0 + 2 * MINUTE).await;
    store.close().await;
    for (round, undo) in [
        &[
            "ALTER TABLE readings DROP COLUMN id",
            "ALTER TABLE rollup_fold DROP COLUMN minutes_through, DROP COLUMN minutes_before, DROP COLUMN staged_through",
            "DROP INDEX readings_1m_minute ON readings_1m",
            "DELETE FROM schema_version WHERE version >= 15",
        ][..],
        &[
            "ALTER TABLE rollup_fold DROP COLUMN minutes_through, DROP COLUMN minutes_before, DROP COLUMN staged_through",
            "DELETE FROM schema_version WHERE version >= 16",
        ][..],
        // (Migration 18, which came after, undone too.)
        &["ALTER TABLE rollup_fold DROP COLUMN staged_through", "DELETE FROM schema_version WHERE version >= 16"][..],
    ]
    .into_iter()
    .enumerate()
    {
        let mut conn = sqlx::MySqlConnection::connect(db.url.expose_secret()).await.unwrap();
        for statement in undo {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        let store = Store::open(&db.url).await.unwrap_or_else(|e| panic!("after {undo:?}: {e}"));
        let id = store.sensor_id(&k).await.unwrap().unwrap();
        store.write_batch(&Batch { readings: vec![reading(&k, t0 + MINUTE + 1_000, 3.0)], ..Batch::default() }).await.unwrap();
        store.fold_minutes(TimestampMs(t0 + 2 * MINUTE)).await.unwrap();
        store.close().await;
        // The reading from before and one 3.0 of each round, each counted once.
        let threes = round as i64 + 1;
        let expected = vec![(t0 + MINUTE, 1 + threes, 1.0, 3.0, 1.0 + 3.0 * threes as f64)];
        assert_eq!(minutes(&Store::open(&db.url).await.unwrap(), id, t0).await, expected, "after {undo:?}");
    }
}

/// A fold of readings into minutes that has fallen behind (the database was away, or an import
/// came between two folds) takes 200,000 readings at a time and leaves `minutes_before` where it
/// was until it has caught up: charts are exact between the steps, and a reading written between
/// them is folded too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_minute_fold_behind_catches_up_in_steps() {
    let db = TestDb::new(Backend::MariaDb).await;
    let store = Store::open(&db.url).await.unwrap();
    let k = key("behind", "room", "t");
    let t0 = an_hour_tomorrow();
    // 210,000 readings 10 ms apart (35 minutes), each worth 1.
    for part in 0..21 {
        let readings = (part * 10_000..(part + 1) * 10_000).map(|i| reading(&k, t0 + i * 10, 1.0)).collect();
        store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    }
    let id = store.sensor_id(&k).await.unwrap().unwrap();
    assert_eq!(hours_from(&store, Series::Minutes, id, t0).await, [(t0, 210_000, 1.0, 1.0, 210_000.0)], "before a fold");

    let first = store.fold_minutes(TimestampMs(t0 + HOUR)).await.unwrap();
    assert!(first.more, "200,000 readings in one fold, 10,000 left");
    assert!(first.until.unwrap() < TimestampMs(t0), "the mark stays until the fold has caught up");
    assert_eq!(hours_from(&store, Series::Minutes, id, t0).await, [(t0, 210_000, 1.0, 1.0, 210_000.0)], "between the steps");
    store.write_batch(&Batch { readings: vec![reading(&k, t0 + 50 * MINUTE, 1.0)], ..Batch::default() }).await.unwrap();
    assert_eq!(hours_from(&store, Series::Minutes, id, t0).await, [(t0, 210_001, 1.0, 1.0, 210_001.0)], "a reading between the steps");

    let second = store.fold_minutes(TimestampMs(t0 + HOUR)).await.unwrap();
    assert_eq!((second.until, second.more), (Some(TimestampMs(t0 + HOUR - 1_000)), false), "caught up: the mark moves");
    assert_eq!(hours_from(&store, Series::Minutes, id, t0).await, [(t0, 210_001, 1.0, 1.0, 210_001.0)], "all folded");
    let purged = store.purge_chunk(Series::Raw, id, TimestampMs(t0 + HOUR), 300_000).await.unwrap();
    assert_eq!(purged, 210_001, "every reading is in its minute");
    assert_eq!(hours_from(&store, Series::Minutes, id, t0).await, [(t0, 210_001, 1.0, 1.0, 210_001.0)], "from readings_1m alone");
    store.close().await;
}

/// Rows in `table` of a MariaDB database, read behind the store's back.
async fn mariadb_rows(db: &TestDb, table: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::MySqlConnection::connect(db.url.expose_secret()).await.unwrap();
    let count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    count
}

/// MariaDB stages a fleet's batches (a reading or two per sensor) in `readings_staged` and the
/// minute fold moves them into `readings` (schema migration 17): readers see each reading once
/// wherever it is, before and after the move, in raw readings, counts, the oldest reading,
/// minutes, hours and trend lines; a reading older than the fold's mark (whose batch upserted
/// its minute) is not counted twice when it is moved; a purge takes staged readings once they
/// are moved, a sensor's deletion at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_fleets_readings_are_staged_read_once_and_moved_by_the_minute_fold() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::MariaDb).await;
    let store = Store::open(&db.url).await.unwrap();
    let tables = || async { (mariadb_rows(&db, "readings").await, mariadb_rows(&db, "readings_staged").await) };
    let t0 = an_hour_tomorrow();
    let few = key("few", "room", "t");
    let many_each: Vec<_> = (0..100).map(|i| reading(&few, t0 + i, i as f64)).collect();
    store.write_batch(&Batch { readings: many_each, ..Batch::default() }).await.unwrap();
    assert_eq!(tables().await, (100, 0), "a hundred readings of one sensor are written to `readings`");
    let d7 = key("d7", "room", "t");
    let mut fleet: Vec<_> = (0..50).map(|d| reading(&key(&format!("d{d}"), "room", "t"), t0 + MINUTE + 1_000, d as f64)).collect();
    fleet.push(reading(&d7, t0 + MINUTE + 2_000, 9.0));
    store.write_batch(&Batch { readings: fleet, ..Batch::default() }).await.unwrap();
    assert_eq!(tables().await, (100, 51), "a fleet's batch is staged");

    let id = store.sensor_id(&d7).await.unwrap().unwrap();
    let all = (TimestampMs(t0), TimestampMs(t0 + HOUR));
    let d7_minute = vec![(t0 + MINUTE, 2, 7.0, 9.0, 16.0)];
    let reads_once = |when: &'static str| {
        let (store, d7, d7_minute) = (&store, &d7, &d7_minute);
        async move {
            let raw = [(t0 + MINUTE + 1_000, 7.0), (t0 + MINUTE + 2_000, 9.0)];
            assert_eq!(store.readings_by_id(id, all.0, all.1, 10).await.unwrap(), raw, "{when}");
            let by_key: Vec<_> = store.readings(d7, all.0, all.1).await.unwrap().into_iter().map(|(ts, v)| (ts.0, v)).collect();
            assert_eq!(by_key, raw, "{when}");
            assert_eq!(store.count_readings().await.unwrap(), 151, "{when}");
            assert_eq!(store.counts().await.unwrap().1, 151, "{when}");
            let size = store.size().await.unwrap();
            assert_eq!(size.rows.iter().find(|(table, _)| *table == "readings").map(|r| r.1), Some(151), "{when}");
            assert_eq!(size.oldest_reading_ms, Some(t0), "{when}");
            let buckets = store.buckets(Series::Raw, id, all.0, all.1, HOUR).await.unwrap();
            assert_eq!((buckets.len(), buckets[0].count, buckets[0].min, buckets[0].max), (1, 2, 7.0, 9.0), "{when}");
            assert_eq!(minutes(store, id, t0).await, *d7_minute, "{when}");
            assert_eq!(hours(store, id, t0).await, [(t0, 2, 7.0, 9.0, 16.0)], "{when}");
            let trends = store.minute_averages(all.0).await.unwrap();
            assert!(trends.contains(&(id, 8.0)), "{when}: {trends:?}");
        }
    };
    reads_once("staged").await;
    // The oldest row a purge can reach (purges leave staged readings to the fold).
    let oldest = || async {
        let store = &store;
        let mut oldest = Vec::new();
        for series in [Series::Raw, Series::Minutes, Series::Hours] {
            oldest.push(store.oldest(series, id).await.unwrap().map(|ts| ts.0));
        }
        oldest
    };
    assert_eq!(oldest().await, [None, None, None], "staged");
    let folded = store.fold_minutes(TimestampMs(t0 + 3 * MINUTE)).await.unwrap();
    assert!(!folded.more, "one fold moves them all");
    assert_eq!(tables().await, (151, 0), "the fold moved the staged readings");
    reads_once("moved").await;
    assert_eq!(oldest().await, [Some(t0 + MINUTE + 1_000), Some(t0 + MINUTE), Some(t0)], "moved");

    // A reading older than the fold's mark: its batch upserts its minute, and its move adds
    // nothing to it.
    store.write_batch(&Batch { readings: vec![reading(&d7, t0 + 30_000, 1.0)], ..Batch::default() }).await.unwrap();
    assert_eq!(tables().await, (151, 1));
    let with_late = vec![(t0, 1, 1.0, 1.0, 1.0), (t0 + MINUTE, 2, 7.0, 9.0, 16.0)];
    assert_eq!(minutes(&store, id, t0).await, with_late, "late, staged");
    // An export merges the staged reading in by time.
    let (sender, mut chunks) = tokio::sync::mpsc::channel(4);
    store.stream_readings(id, all.0, all.1, sender, None).await;
    let mut exported = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        exported.extend(chunk.unwrap());
    }
    assert_eq!(exported, [(t0 + 30_000, 1.0), (t0 + MINUTE + 1_000, 7.0), (t0 + MINUTE + 2_000, 9.0)]);
    assert_eq!(store.readings_by_id(id, all.0, all.1, 2).await.unwrap(), exported[..2], "the limit over both tables");
    store.fold_minutes(TimestampMs(t0 + 3 * MINUTE)).await.unwrap();
    assert_eq!(tables().await, (152, 0));
    assert_eq!(minutes(&store, id, t0).await, with_late, "late, moved");

    // A purge (per sensor) leaves the staged readings to the fold, and takes them once they are
    // moved; a sensor's deletion takes them at once.
    store.write_batch(&Batch { readings: vec![reading(&d7, t0 + 40_000, 1.0)], ..Batch::default() }).await.unwrap();
    assert_eq!(tables().await, (152, 1));
    assert_eq!(store.purge_chunk(Series::Raw, id, TimestampMs(t0 + MINUTE), 10).await.unwrap(), 1, "the moved one");
    assert_eq!(tables().await, (151, 1));
    store.fold_minutes(TimestampMs(t0 + 3 * MINUTE)).await.unwrap();
    assert_eq!(store.purge_chunk(Series::Raw, id, TimestampMs(t0 + MINUTE), 10).await.unwrap(), 1, "moved since");
    assert_eq!(tables().await, (151, 0));
    store.write_batch(&Batch { readings: vec![reading(&d7, t0 + 3 * MINUTE, 1.0)], ..Batch::default() }).await.unwrap();
    assert_eq!(tables().await, (151, 1));
    store.delete_sensor(&d7, id).await.unwrap();
    assert_eq!(tables().await, (149, 0), "the sensor's readings in both tables are gone");

    // A batch planned with the id of a sensor deleted elsewhere (staged readings have no
    // foreign key to fail on): its latest-value update does not find the sensor, and the batch
    // is planned again and creates it anew; the fold then moves its reading.
    let d1 = key("d1", "room", "t");
    let other = Store::open(&db.url).await.unwrap();
    let old_id = other.sensor_id(&d1).await.unwrap().unwrap();
    other.delete_sensor(&d1, old_id).await.unwrap();
    store.write_batch(&Batch { readings: vec![reading(&d1, t0 + 4 * MINUTE, 5.0)], ..Batch::default() }).await.unwrap();
    let new_id = store.sensor_id(&d1).await.unwrap().expect("created anew");
    assert_ne!(new_id, old_id);
    assert_eq!(tables().await, (148, 1));
    assert!(!store.fold_minutes(TimestampMs(t0 + 5 * MINUTE)).await.unwrap().more);
    assert_eq!(tables().await, (149, 0), "moved");
    assert_eq!(store.readings_by_id(new_id, all.0, all.1, 10).await.unwrap(), [(t0 + 4 * MINUTE, 5.0)]);

    // A sensor deleted by hand without its staged readings: the fold drops them and goes on.
    store.write_batch(&Batch { readings: vec![reading(&d1, t0 + 5 * MINUTE, 6.0)], ..Batch::default() }).await.unwrap();
    let mut conn = sqlx::MySqlConnection::connect(db.url.expose_secret()).await.unwrap();
    for table in ["readings", "readings_1m", "readings_1h"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE sensor_id = {new_id}")).execute(&mut conn).await.unwrap();
    }
    sqlx::query(&format!("DELETE FROM sensors WHERE id = {new_id}")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    assert_eq!(tables().await, (148, 1));
    store.fold_minutes(TimestampMs(t0 + 6 * MINUTE)).await.expect("the fold goes on");
    assert_eq!(tables().await, (148, 0), "the reading without its sensor is dropped");
    other.close().await;
    store.close().await;
}

/// A move of folded staged readings into `readings` (schema migration 18) holds up no batch.
/// Here one is stopped half-way: a session holds the place in the `(sensor_id, ts)` index where
/// the second sensor's reading goes, after the move inserted the first's. A batch naming both
/// sensors commits meanwhile. (Until migration 18 the fold moved them holding the folds' row,
/// which every batch reads first; and with foreign key checks a move holds each moved sensor's
/// row in share mode until it commits, which a batch's latest-value update waits for.) A staged
/// reading from `minutes_before` on is folded but stays staged until a later move, and counts
/// once in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_batches_do_not_wait_for_a_move_of_staged_readings() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::MariaDb).await;
    let store = std::sync::Arc::new(Store::open(&db.url).await.unwrap());
    let tables = || async { (mariadb_rows(&db, "readings").await, mariadb_rows(&db, "readings_staged").await) };
    let t0 = an_hour_tomorrow();
    let (a, b, c) = (key("a", "room", "t"), key("b", "room", "t"), key("c", "room", "t"));
    // Four readings of each in one batch: not staged.
    let straight: Vec<_> = (0..12).map(|i| reading([&a, &b, &c][i as usize / 4], t0 + i, 1.0)).collect();
    store.write_batch(&Batch { readings: straight, ..Batch::default() }).await.unwrap();
    let (a_id, b_id) = (store.sensor_id(&a).await.unwrap().unwrap(), store.sensor_id(&b).await.unwrap().unwrap());
    let c_id = store.sensor_id(&c).await.unwrap().unwrap();
    assert!(a_id < b_id && b_id < c_id, "the move inserts a's reading first; c's readings follow b's in the index");
    // Folded: the fold below has no readings of `readings` to take (which the held gap below
    // would hold up).
    store.fold_minutes(TimestampMs(t0)).await.unwrap();
    let fleet = |ts: i64| Batch { readings: vec![reading(&a, ts, 2.0), reading(&b, ts, 2.0)], ..Batch::default() };
    store.write_batch(&fleet(t0 + MINUTE)).await.unwrap();
    assert_eq!(tables().await, (12, 2), "a fleet's batch is staged");

    // The gap after b's readings in the index, held: b's moved reading waits for it.
    let mut holder = sqlx::MySqlConnection::connect(db.url.expose_secret()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query(&format!("SELECT COUNT(*) FROM readings WHERE sensor_id = {b_id} AND ts >= {} FOR UPDATE", t0 + MINUTE))
        .execute(&mut holder)
        .await
        .unwrap();
    let folding = tokio::spawn({
        let store = std::sync::Arc::clone(&store);
        async move { store.fold_minutes(TimestampMs(t0 + 3 * MINUTE)).await }
    });
    let waited = db.until_a_session_waits_on_a_lock(|| folding.is_finished()).await;
    assert!(waited, "the move, having inserted a's reading, waits to insert b's");
    // Not a timing: a batch that waited for the move would wait for the holder, for ever.
    let batch = tokio::time::timeout(std::time::Duration::from_secs(30), store.write_batch(&fleet(t0 + 2 * MINUTE))).await;
    batch.expect("the batch does not wait for the move").unwrap();
    assert!(!folding.is_finished(), "the move still waits");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    folding.await.unwrap().unwrap();
    assert_eq!(tables().await, (14, 2), "the first batch moved, the second staged");

    // A staged reading less than a second before the fold's time: folded, not moved yet.
    store.write_batch(&fleet(t0 + 3 * MINUTE - 500)).await.unwrap();
    store.fold_minutes(TimestampMs(t0 + 3 * MINUTE)).await.unwrap();
    assert_eq!(tables().await, (16, 2), "the second batch moved, the third folded and staged");
    let expected = vec![(t0, 4, 1.0, 1.0, 4.0), (t0 + MINUTE, 1, 2.0, 2.0, 2.0), (t0 + 2 * MINUTE, 2, 2.0, 2.0, 4.0)];
    for id in [a_id, b_id] {
        assert_eq!(minutes(&store, id, t0).await, expected, "folded and staged: counted once");
        let hours = store.buckets(Series::Hours, id, TimestampMs(t0), TimestampMs(t0 + HOUR), HOUR).await.unwrap();
        assert_eq!(hours.iter().map(|h| h.count).collect::<Vec<_>>(), [7], "folded and staged: counted once in the hour");
    }
    assert!(!store.fold_minutes(TimestampMs(t0 + 4 * MINUTE)).await.unwrap().more);
    assert_eq!(tables().await, (18, 0), "moved by a later fold");
    for id in [a_id, b_id] {
        assert_eq!(minutes(&store, id, t0).await, expected, "moved: counted once");
    }

    // A reading stamped ahead of the clock (a board's own `ts`) stays staged, folded, until its
    // time comes; the readings after it move.
    store.write_batch(&fleet(t0 + HOUR)).await.unwrap();
    store.write_batch(&fleet(t0 + 4 * MINUTE)).await.unwrap();
    let hours = |id| {
        let store = std::sync::Arc::clone(&store);
        async move {
            let hours = store.buckets(Series::Hours, id, TimestampMs(t0), TimestampMs(t0 + 2 * HOUR), HOUR).await.unwrap();
            hours.iter().map(|h| h.count).collect::<Vec<_>>()
        }
    };
    assert!(!store.fold_minutes(TimestampMs(t0 + 5 * MINUTE)).await.unwrap().more);
    assert_eq!(tables().await, (20, 2), "the later readings moved, those ahead of the clock wait");
    assert_eq!(hours(a_id).await, [8, 1], "waiting: counted once");
    assert!(!store.fold_minutes(TimestampMs(t0 + HOUR + MINUTE)).await.unwrap().more);
    assert_eq!(tables().await, (22, 0), "moved once their time came");
    assert_eq!(hours(a_id).await, [8, 1], "moved: counted once");
    store.close().await;
}

/// After schema migration 18 `staged_through` starts at 0, while the staged table's ids go on
/// from the readings moved before it (a fleet at 40,000 readings/s counts a billion in under
/// a year): the fold starts at the first staged reading after its mark, rather than walk the
/// ids 200,000 at a time with `minutes_before` held back until it is through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_fold_starts_at_the_first_staged_reading_after_its_mark() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::MariaDb).await;
    let store = Store::open(&db.url).await.unwrap();
    let mut conn = sqlx::MySqlConnection::connect(db.url.expose_secret()).await.unwrap();
    sqlx::query("ALTER TABLE readings_staged AUTO_INCREMENT = 1000000000").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let t0 = an_hour_tomorrow();
    let (a, b) = (key("a", "room", "t"), key("b", "room", "t"));
    let fleet = Batch { readings: vec![reading(&a, t0 + MINUTE, 2.0), reading(&b, t0 + MINUTE, 3.0)], ..Batch::default() };
    store.write_batch(&fleet).await.unwrap();
    assert_eq!(mariadb_rows(&db, "readings_staged").await, 2);
    let folded = store.fold_minutes(TimestampMs(t0 + 3 * MINUTE)).await.unwrap();
    assert_eq!(folded, roost::store::Folded { until: Some(TimestampMs(t0 + 3 * MINUTE - 1_000)), more: false }, "one fold");
    assert_eq!((mariadb_rows(&db, "readings").await, mariadb_rows(&db, "readings_staged").await), (2, 0), "moved");
    let id = store.sensor_id(&a).await.unwrap().unwrap();
    assert_eq!(minutes(&store, id, t0).await, [(t0 + MINUTE, 1, 2.0, 2.0, 2.0)]);
    store.close().await;
}

/// A move's readings are older than `minutes_before`, so a fold would take none of them:
/// `minutes_through` jumps past their ids once the fold has folded every reading before them,
/// and not while a reading before them is not folded yet (here a batch of several readings per
/// sensor, straight into `readings`, committed while the move waited for a held staged row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_the_fold_skips_moved_readings_once_those_before_them_are_folded() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::MariaDb).await;
    let store = std::sync::Arc::new(Store::open(&db.url).await.unwrap());
    let mut watcher = sqlx::MySqlConnection::connect(db.url.expose_secret()).await.unwrap();
    let mut marks = async || -> (i64, i64) {
        let through = sqlx::query_scalar("SELECT minutes_through FROM rollup_fold").fetch_one(&mut watcher).await.unwrap();
        let newest: i64 = sqlx::query_scalar("SELECT MAX(id) FROM readings").fetch_one(&mut watcher).await.unwrap();
        (through, newest)
    };
    let t0 = an_hour_tomorrow();
    let (a, b) = (key("a", "room", "t"), key("b", "room", "t"));
    let fleet = |ts: i64| Batch { readings: vec![reading(&a, ts, 2.0), reading(&b, ts, 2.0)], ..Batch::default() };
    store.write_batch(&fleet(t0 + MINUTE)).await.unwrap();
    // Folded, not moved: the span is neither full nor old yet.
    store.fold_minutes(TimestampMs(t0 + MINUTE + 2_000)).await.unwrap();
    assert_eq!(mariadb_rows(&db, "readings_staged").await, 2);

    // The staged readings held: the next move waits for them, after its fold.
    let mut holder = sqlx::MySqlConnection::connect(db.url.expose_secret()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT COUNT(*) FROM readings_staged FOR UPDATE").execute(&mut holder).await.unwrap();
    let folding = tokio::spawn({
        let store = std::sync::Arc::clone(&store);
        async move { store.fold_minutes(TimestampMs(t0 + 2 * MINUTE)).await }
    });
    assert!(db.until_a_session_waits_on_a_lock(|| folding.is_finished()).await, "the move waits for the held readings");
    let straight: Vec<_> = (0..4).map(|i| reading(&a, t0 + 2 * MINUTE + i, 5.0)).collect();
    store.write_batch(&Batch { readings: straight, ..Batch::default() }).await.unwrap();
    let (_, straight_last) = marks().await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    folding.await.unwrap().unwrap();
    assert_eq!(mariadb_rows(&db, "readings_staged").await, 0, "moved");
    let (through, newest) = marks().await;
    assert!(through < straight_last, "not past the batch's readings, which no fold has read: {through} vs {straight_last}");
    assert_eq!(newest, straight_last + 2, "moved after the batch");

    // The next fold takes the batch's readings (and reads the moved ones); the move after the
    // one after it is skipped.
    store.fold_minutes(TimestampMs(t0 + 2 * MINUTE + 2_000)).await.unwrap();
    assert_eq!(marks().await, (newest, newest));
    store.write_batch(&fleet(t0 + 3 * MINUTE)).await.unwrap();
    store.fold_minutes(TimestampMs(t0 + 4 * MINUTE)).await.unwrap();
    assert_eq!(mariadb_rows(&db, "readings_staged").await, 0, "moved");
    let (through, newest) = marks().await;
    // Where a move's ids may interleave with a batch's (`innodb_autoinc_lock_mode = 2`), never.
    let mut conn = sqlx::MySqlConnection::connect(db.url.expose_secret()).await.unwrap();
    let mode: i64 = sqlx::query_scalar("SELECT CAST(@@innodb_autoinc_lock_mode AS SIGNED)").fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    assert_eq!(through == newest, mode < 2, "the moved readings are skipped where their ids are consecutive");
    let a_id = store.sensor_id(&a).await.unwrap().unwrap();
    let expected = vec![(t0 + MINUTE, 1, 2.0, 2.0, 2.0), (t0 + 2 * MINUTE, 4, 5.0, 5.0, 20.0), (t0 + 3 * MINUTE, 1, 2.0, 2.0, 2.0)];
    assert_eq!(minutes(&store, a_id, t0 + MINUTE).await, expected, "each reading counted once");
    store.close().await;
}

/// A sensor deleted while its minutes are folded: on PostgreSQL the fold reads them before the
/// deletion commits, and its hour's insert then waits on the sensor's row and fails its foreign
/// key once the deletion commits. The fold folds again and succeeds, with the other sensor's
/// hour and none of the deleted one's. The deletion is made by hand (an admin's SQL), held
/// open: `Store::delete_sensor` locks the folds' row first, and a fold waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_fold_during_a_sensors_deletion_folds_again() {
    use sqlx::{Connection, Row};
    let db = TestDb::new(Backend::Postgres).await;
    let store = std::sync::Arc::new(Store::open(&db.url).await.unwrap());
    let t0 = an_hour_tomorrow();
    let (deleted, kept) = (key("fold", "deleted", "t"), key("fold", "kept", "t"));
    let readings = vec![reading(&deleted, t0 + MINUTE, 1.0), reading(&kept, t0 + MINUTE, 2.0)];
    store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    let (deleted_id, kept_id) = (store.sensor_id(&deleted).await.unwrap().unwrap(), store.sensor_id(&kept).await.unwrap().unwrap());

    let mut deleter = sqlx::PgConnection::connect(db.url.expose_secret()).await.unwrap();
    let mut deletion = deleter.begin().await.unwrap();
    sqlx::query("SELECT id FROM sensors WHERE id = $1 FOR UPDATE").bind(deleted_id).execute(&mut *deletion).await.unwrap();
    for table in ["readings", "readings_1m", "readings_1h"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE sensor_id = $1")).bind(deleted_id).execute(&mut *deletion).await.unwrap();
    }
    sqlx::query("DELETE FROM sensors WHERE id = $1").bind(deleted_id).execute(&mut *deletion).await.unwrap();
    let fold = tokio::spawn({
        let store = store.clone();
        async move { store.fold_hours(TimestampMs(t0 + HOUR)).await }
    });
    // Until the fold waits on the sensor's row (or has finished, wrongly, without waiting).
    assert!(db.until_a_session_waits_on_a_lock(|| fold.is_finished()).await, "the fold waits for the deletion");
    deletion.commit().await.unwrap();

    let mut watcher = sqlx::PgConnection::connect(db.url.expose_secret()).await.unwrap();

    let folded = fold.await.unwrap().expect("the fold folds again");
    assert_eq!(folded.until, Some(TimestampMs(t0 + 11 * MINUTE)), "ten minutes' worth from the first");
    let hours_of = |id: i64| sqlx::query("SELECT COUNT(*) FROM readings_1h WHERE sensor_id = $1").bind(id);
    assert_eq!(hours_of(kept_id).fetch_one(&mut watcher).await.unwrap().get::<i64, _>(0), 1, "the kept sensor's hour");
    assert_eq!(hours_of(deleted_id).fetch_one(&mut watcher).await.unwrap().get::<i64, _>(0), 0, "none of the deleted one");
    assert_eq!(hours(&store, kept_id, t0).await, [(t0, 1, 2.0, 2.0, 2.0)]);
}
