//! The data lifecycle on SQLite, PostgreSQL and MariaDB alike: retention purges (with old device
//! timestamps, under concurrent ingest), charts of purged ranges from the rollups, export and
//! import between every pair of databases, sensor settings and deletion through the API with
//! its access rules, and the recipe that brings in the Django stack's `iot_sensor` table.

use crate::databases::{Backend, TestDb};
use crate::support::{add_user, dashboard_login, TestServer};
use roost::ingest::TopicTemplate;
use roost::lifecycle::{purge_once, RetentionPolicy, RetentionRule};
use roost::model::{Keep, Reading, SensorKey, TimestampMs};
use roost::store::{Batch, SensorChange, Series, Store};
use roost::transfer::{export, import, ExportOptions, Format, Progress};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const DAY: i64 = 86_400_000;

fn key(owner: &str, place: &str, category: &str) -> SensorKey {
    SensorKey::new(owner, place, category).unwrap()
}

fn days(n: u64) -> Keep {
    Keep::For(Duration::from_secs(n * 86_400))
}

fn policy(default: Keep, rules: Vec<RetentionRule>) -> RetentionPolicy {
    RetentionPolicy { default, rules, minute_rollups: days(365), hourly_rollups: Keep::Forever, templates: TopicTemplate::defaults() }
}

/// Readings of `sensor` every `step` ms in `[from, to)`, valued by their index.
fn series(sensor: &SensorKey, from: i64, to: i64, step: i64) -> Vec<Reading> {
    (0..)
        .map(|i| from + i * step)
        .take_while(|&ts| ts < to)
        .enumerate()
        .map(|(i, ts)| Reading { sensor: sensor.clone(), ts: TimestampMs(ts), value: i as f64 })
        .collect()
}

async fn count(store: &Store, sensor: &SensorKey) -> usize {
    let id = store.sensor_id(sensor).await.unwrap().unwrap();
    store.readings_by_id(id, TimestampMs(0), TimestampMs::MAX, i64::MAX).await.unwrap().len()
}

/// Raw readings past their sensor's retention go, by reading time (the device's timestamps, a
/// year old here); a sensor's own retention beats the rules, the first matching rule beats the
/// default; minutes go after a year, hours stay; old rejects go with the default.
async fn retention_purges_by_reading_time(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let now = TimestampMs::now().0;
    let (temp, light, kept) =
        (key("yanjo", "bedroom", "temperature"), key("yanjo", "livingroom", "illuminate"), key("kim", "cellar", "temperature"));
    let mut readings = Vec::new();
    for sensor in [&temp, &light, &kept] {
        // One reading a day for 400 days, and 10 in the last hour.
        readings.extend(series(sensor, now - 400 * DAY, now, DAY));
        readings.extend(series(sensor, now - 3_600_000, now, 360_000));
    }
    let old_reject = roost::model::Reject {
        received_at: TimestampMs(now - 40 * DAY),
        client_id: "c".into(),
        topic: "iot/x".into(),
        payload_prefix: b"?".to_vec(),
        reason: roost::model::RejectReason::NotANumber,
    };
    let new_reject = roost::model::Reject { received_at: TimestampMs(now), ..old_reject.clone() };
    store.write_batch(&Batch { readings, rejects: vec![old_reject, new_reject], ..Batch::default() }).await.unwrap();
    // Alert history: one event 40 days old, one now.
    let event = |at: i64| roost::model::AlertEvent {
        id: 0,
        at: TimestampMs(at),
        rule_id: 1,
        rule_owner: "admin".into(),
        rule_name: "hot".into(),
        sensor: temp.clone(),
        state: "firing".into(),
        severity: roost::model::Severity::Warning,
        value: Some(31.0),
        by: None,
    };
    let writes: Vec<_> = [now - 40 * DAY, now]
        .into_iter()
        .map(|at| roost::store::AlertWrite { rule: 1, sensor: temp.clone(), state: None, event: Some(event(at)) })
        .collect();
    store.write_alerts(&writes).await.unwrap();
    let kept_id = store.sensor_id(&kept).await.unwrap().unwrap();
    let change = SensorChange { retention: Some(Some(Keep::Forever)), ..SensorChange::default() };
    assert!(store.update_sensor(kept_id, &change).await.unwrap());

    let policy = policy(days(30), vec![RetentionRule::new("iot/+/sensor/+/illuminate", "7d").unwrap()]);
    let report = purge_once(&store, &policy, TimestampMs(now), &CancellationToken::new()).await.unwrap();
    // Day-old readings at now - k days for k = 400..1: 30 days keeps k < 30 (29, plus k = 30 if
    // exactly on the cutoff: not, the cutoff is now - 30 d and `ts < cutoff` goes).
    assert_eq!(count(&store, &temp).await, 30 + 10, "30 days of the default");
    assert_eq!(count(&store, &light).await, 7 + 10, "7 days of the rule");
    assert_eq!(count(&store, &kept).await, 400 + 10, "its own retention: forever");
    assert_eq!(report.readings, (400 - 30) + (400 - 7));
    assert_eq!(report.rejects, 1);
    assert_eq!(store.recent_rejects(10).await.unwrap().len(), 1);
    assert_eq!(report.alert_events, 1, "alert history goes with the rejects");
    assert_eq!(store.alert_events(None, 10).await.unwrap().iter().map(|e| e.at.0).collect::<Vec<_>>(), [now]);
    // Minutes older than 365 days went for every sensor; hours are kept forever.
    for sensor in [&temp, &light, &kept] {
        let id = store.sensor_id(sensor).await.unwrap().unwrap();
        let minute = store.oldest(Series::Minutes, id).await.unwrap().unwrap();
        assert!(minute.0 >= now - 365 * DAY - 60_000, "{sensor}: minutes from {minute:?}");
        let hour = store.oldest(Series::Hours, id).await.unwrap().unwrap();
        assert!(hour.0 <= now - 399 * DAY, "{sensor}: hours from {hour:?}");
    }
    assert_eq!(report.minutes, 3 * 35, "the minutes of days 400..366 of three sensors");
    let again = purge_once(&store, &policy, TimestampMs(now), &CancellationToken::new()).await.unwrap();
    assert_eq!(again.rows(), 0, "a second purge finds nothing");
    let size = store.size().await.unwrap();
    assert!(size.bytes > 0, "{size:?}");
    assert_eq!(size.rows.iter().find(|(t, _)| *t == "readings").unwrap().1, (40 + 17 + 410) as i64);
    assert_eq!(size.oldest_reading_ms, Some(now - 400 * DAY), "the sensor kept forever");
}

/// A purge of many old readings while ingest commits numbered ones: every reading within the
/// retention is there afterwards, every old one is gone.
async fn the_purge_under_concurrent_ingest_loses_nothing_within_retention(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = std::sync::Arc::new(Store::open(&db.url).await.unwrap());
    let now = TimestampMs::now().0;
    let sensors: Vec<SensorKey> = (0..20).map(|i| key("fleet", &format!("board{i}"), "temperature")).collect();
    // 30,000 readings 40 days old (several chunks per sensor).
    for sensor in &sensors {
        store.write_batch(&Batch { readings: series(sensor, now - 41 * DAY, now - 40 * DAY, 57_600), ..Batch::default() }).await.unwrap();
    }
    let old = store.count_readings().await.unwrap();
    assert_eq!(old, 20 * 1500);
    let writer = {
        let (store, sensors) = (std::sync::Arc::clone(&store), sensors.clone());
        tokio::spawn(async move {
            let mut written = 0usize;
            for round in 0..60 {
                let readings = sensors
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Reading {
                        sensor: s.clone(),
                        ts: TimestampMs(now - 1000 + round),
                        value: (round * 100 + i as i64) as f64,
                    })
                    .collect::<Vec<_>>();
                written += readings.len();
                store.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };
    let report = purge_once(&store, &policy(days(30), vec![]), TimestampMs(now), &CancellationToken::new()).await.unwrap();
    let written = writer.await.unwrap();
    assert_eq!(report.readings, old as u64);
    if backend == Backend::Sqlite {
        // A new SQLite file gives the freed pages back to the file system.
        assert!(report.vacuumed_bytes > 100_000, "{report:?}");
        assert_eq!(store.size().await.unwrap().free_bytes, Some(0));
    }
    assert_eq!(store.count_readings().await.unwrap() as usize, written, "every new reading, no old one");
    for (i, sensor) in sensors.iter().enumerate() {
        let id = store.sensor_id(sensor).await.unwrap().unwrap();
        let values: Vec<f64> =
            store.readings_by_id(id, TimestampMs(now - DAY), TimestampMs::MAX, i64::MAX).await.unwrap().into_iter().map(|r| r.1).collect();
        let expected: Vec<f64> = (0..60).map(|round| (round * 100 + i as i64) as f64).collect();
        assert_eq!(values, expected, "{sensor}");
    }
}

/// After the raw readings (and then the minutes) are gone, charts of that range come from the
/// rollups, with exact min, max, mean and count.
async fn charts_of_purged_ranges_come_from_rollups_exactly(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let sensor = key("yanjo", "greenhouse", "temperature");
    let now = TimestampMs::now().0;
    // Two days, 40 days ago, on an hour boundary: one reading every 10 s with a known pattern.
    let start = (now - 40 * DAY) - (now - 40 * DAY).rem_euclid(3_600_000);
    let readings: Vec<Reading> = (0..2 * 8640)
        .map(|i| Reading { sensor: sensor.clone(), ts: TimestampMs(start + i * 10_000), value: ((i * 7) % 101) as f64 / 4.0 })
        .collect();
    for chunk in readings.chunks(3000) {
        store.write_batch(&Batch { readings: chunk.to_vec(), ..Batch::default() }).await.unwrap();
    }
    let id = store.sensor_id(&sensor).await.unwrap().unwrap();
    let expect = |from: i64, to: i64| {
        let inside: Vec<f64> = readings.iter().filter(|r| r.ts.0 >= from && r.ts.0 < to).map(|r| r.value).collect();
        let sum: f64 = inside.iter().sum();
        (
            inside.len() as i64,
            inside.iter().cloned().fold(f64::MAX, f64::min),
            inside.iter().cloned().fold(f64::MIN, f64::max),
            sum / inside.len() as f64,
        )
    };
    let check = |buckets: Vec<roost::store::Bucket>, width: i64, what: &str| {
        assert_eq!(buckets.len() as i64, 2 * DAY / width, "{what}");
        for b in buckets {
            let (count, min, max, avg) = expect(b.start, b.start + width);
            assert_eq!((b.count, b.min, b.max), (count, min, max), "{what}: bucket at {}", b.start);
            assert!((b.avg - avg).abs() < 1e-9, "{what}: avg {} vs {avg}", b.avg);
        }
    };
    let raw_keep = days(30);
    let policy = policy(raw_keep, vec![]);
    purge_once(&store, &policy, TimestampMs(now), &CancellationToken::new()).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 0, "the raw readings are gone");
    // A two-day chart in 15-minute buckets: minutes (raw no longer reaches back).
    let (series, width) = policy.chart_series(raw_keep, TimestampMs(now), TimestampMs(start), 15 * 60_000);
    assert_eq!((series, width), (Series::Minutes, 15 * 60_000));
    check(store.buckets(series, id, TimestampMs(start), TimestampMs(start + 2 * DAY), width).await.unwrap(), width, "minutes");
    // Minutes kept 30 days too: the same chart comes from the hours, an hour a bucket at least.
    let short = RetentionPolicy { minute_rollups: days(30), ..policy };
    purge_once(&store, &short, TimestampMs(now), &CancellationToken::new()).await.unwrap();
    assert_eq!(store.oldest(Series::Minutes, id).await.unwrap(), None, "the minutes are gone");
    let (series, width) = short.chart_series(raw_keep, TimestampMs(now), TimestampMs(start), 15 * 60_000);
    assert_eq!((series, width), (Series::Hours, 3_600_000));
    check(store.buckets(series, id, TimestampMs(start), TimestampMs(start + 2 * DAY), width).await.unwrap(), width, "hours");
}

/// A sensor deleted by another process (`roost serve` and an admin tool) while this store has
/// its id cached: the next batch naming it is planned again and creates it anew.
async fn a_batch_for_a_sensor_deleted_elsewhere_creates_it_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (writer, other) = (Store::open(&db.url).await.unwrap(), Store::open(&db.url).await.unwrap());
    let sensor = key("yanjo", "attic", "humidity");
    writer.write_batch(&Batch { readings: series(&sensor, 0, 10_000, 1000), ..Batch::default() }).await.unwrap();
    let id = other.sensor_id(&sensor).await.unwrap().unwrap();
    assert_eq!(other.delete_sensor(&sensor, id).await.unwrap(), 10 + 1 + 1, "readings, a minute, an hour");
    assert!(other.sensor(&sensor).await.unwrap().is_none());
    writer.write_batch(&Batch { readings: series(&sensor, 20_000, 23_000, 1000), ..Batch::default() }).await.unwrap();
    let again = writer.sensor(&sensor).await.unwrap().expect("created again");
    assert_ne!(again.id, id);
    assert_eq!((count(&writer, &sensor).await, again.last_value), (3, Some(2.0)));
}

/// A batch naming a sensor whose deletion by hand (an admin's SQL, which takes no lock on the
/// folds' row as `Store::delete_sensor` does) is under way waits for it on the sensor's row, then
/// is planned again and creates the sensor anew; no reading is left behind under the deleted id.
/// On PostgreSQL, whose readings have no foreign key (schema migration 13), the wait is the
/// batch's latest-value update: the batch's reading is older than the sensor's latest, which
/// that update leaves as it is, and it must lock the row all the same. On MariaDB the batch of
/// one reading is staged, with no foreign key either, and the wait is its check of its sensors
/// in share mode. The deletion locks the sensor's row and deletes its readings, then (once the
/// batch waits) its rollups and row; or it locks the row, and deletes the readings too only once
/// the batch waits.
async fn a_batch_during_a_sensors_deletion_waits_and_creates_it_again(backend: Backend) {
    for readings_deleted_first in [true, false] {
        a_batch_during_a_sensors_deletion(backend, readings_deleted_first).await;
    }
}

async fn a_batch_during_a_sensors_deletion(backend: Backend, readings_deleted_first: bool) {
    use sqlx::{Connection, Row};
    let db = TestDb::new(backend).await;
    let store = std::sync::Arc::new(Store::open(&db.url).await.unwrap());
    let sensor = key("yanjo", "attic", "humidity");
    store.write_batch(&Batch { readings: series(&sensor, 60_000, 70_000, 1000), ..Batch::default() }).await.unwrap();
    let id = store.sensor_id(&sensor).await.unwrap().unwrap();
    let url = db.url.expose_secret().replacen("mariadb:", "mysql:", 1);
    // Where raw readings are, and what reads them all: MariaDB stages a fleet's readings (the
    // batch below, of one reading) in a table of their own (schema migration 17).
    let (all, raw_tables): (&str, &[&str]) =
        if backend == Backend::MariaDb { ("readings_all", &["readings_staged", "readings"]) } else { ("readings", &["readings"]) };
    macro_rules! with {
        ($conn:ty) => {{
            let mut deleter = <$conn>::connect(&url).await.unwrap();
            let mut deletion = deleter.begin().await.unwrap();
            let delete_readings: Vec<_> = raw_tables.iter().map(|table| format!("DELETE FROM {table} WHERE sensor_id = {id}")).collect();
            sqlx::query(&format!("SELECT id FROM sensors WHERE id = {id} FOR UPDATE")).execute(&mut *deletion).await.unwrap();
            for step in delete_readings.iter().filter(|_| readings_deleted_first) {
                sqlx::query(step).execute(&mut *deletion).await.unwrap();
            }
            let batch = tokio::spawn({
                let store = store.clone();
                let older = vec![Reading { sensor: sensor.clone(), ts: TimestampMs(61_500), value: 7.0 }];
                async move { store.write_batch(&Batch { readings: older, ..Batch::default() }).await }
            });
            // Until the batch waits on a lock (or, wrongly, has committed).
            assert!(db.until_a_session_waits_on_a_lock(|| batch.is_finished()).await, "the batch waits for the deletion");
            for step in delete_readings.iter().filter(|_| !readings_deleted_first) {
                sqlx::query(step).execute(&mut *deletion).await.unwrap();
            }
            for (table, column) in [("readings_1m", "sensor_id"), ("readings_1h", "sensor_id"), ("sensors", "id")] {
                sqlx::query(&format!("DELETE FROM {table} WHERE {column} = {id}")).execute(&mut *deletion).await.unwrap();
            }
            deletion.commit().await.unwrap();
            batch.await.unwrap().expect("the batch is planned again and commits");
            let mut watcher = <$conn>::connect(&url).await.unwrap();
            let orphans = format!("SELECT COUNT(*) FROM {all} WHERE sensor_id NOT IN (SELECT id FROM sensors)");
            assert_eq!(sqlx::query(&orphans).fetch_one(&mut watcher).await.unwrap().get::<i64, _>(0), 0, "no reading without its sensor");
        }};
    }
    match backend {
        Backend::Postgres => with!(sqlx::PgConnection),
        Backend::MariaDb => with!(sqlx::MySqlConnection),
        Backend::Sqlite => unreachable!("SQLite's writes take turns on the database's write lock"),
    }
    let again = store.sensor(&sensor).await.unwrap().expect("created again");
    assert_ne!(again.id, id);
    assert_eq!((count(&store, &sensor).await, again.last_value), (1, Some(7.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_batch_during_a_sensors_deletion_waits_and_creates_it_again() {
    a_batch_during_a_sensors_deletion_waits_and_creates_it_again(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_a_batch_during_a_sensors_deletion_waits_and_creates_it_again() {
    a_batch_during_a_sensors_deletion_waits_and_creates_it_again(Backend::MariaDb).await;
}

/// Sensors deleted over and over while batches naming them are written (an admin cleaning up
/// while a fleet publishes): every batch and every deletion succeeds at its first call, and no
/// reading is left without its sensor. On MariaDB batches and deletions deadlocked before a
/// deletion locked the folds' row exclusively (`Store::delete_sensor`).
async fn sensors_deleted_while_batches_name_them_all_succeed(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (writer, deleter) = (std::sync::Arc::new(Store::open(&db.url).await.unwrap()), Store::open(&db.url).await.unwrap());
    let sensors: Vec<_> = (0..20).map(|n| key("fleet", &format!("room{n}"), "temperature")).collect();
    const BATCHES: i64 = 150;
    // Every ten batches the writer waits for a deletion since its last wait, so that the two
    // interleave however the tasks are scheduled.
    let deletions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writing = tokio::spawn({
        let (writer, sensors, deletions) = (writer.clone(), sensors.clone(), deletions.clone());
        async move {
            let mut seen = 0;
            for b in 0..BATCHES {
                if b % 10 == 9 {
                    while deletions.load(std::sync::atomic::Ordering::Relaxed) == seen {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                    seen = deletions.load(std::sync::atomic::Ordering::Relaxed);
                }
                let readings =
                    sensors.iter().map(|s| Reading { sensor: s.clone(), ts: TimestampMs(1_000 * b + 1), value: b as f64 }).collect();
                writer.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap_or_else(|e| panic!("batch {b}: {e}"));
            }
        }
    });
    let (deleted, kept) = sensors.split_at(5);
    while !writing.is_finished() {
        for sensor in deleted {
            if let Some(id) = deleter.sensor_id(sensor).await.unwrap() {
                deleter.delete_sensor(sensor, id).await.unwrap_or_else(|e| panic!("deleting {sensor:?}: {e}"));
                deletions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        tokio::task::yield_now().await;
    }
    writing.await.unwrap();
    let deletions = deletions.load(std::sync::atomic::Ordering::Relaxed);
    assert!(deletions >= 15, "{deletions} deletions among the batches");
    let mut stored = 0;
    for sensor in &sensors {
        if let Some(id) = writer.sensor_id(sensor).await.unwrap() {
            stored += writer.readings_by_id(id, TimestampMs(0), TimestampMs::MAX, i64::MAX).await.unwrap().len();
        }
    }
    for sensor in kept {
        assert_eq!(count(&writer, sensor).await, BATCHES as usize, "{sensor:?}");
    }
    assert_eq!(writer.count_readings().await.unwrap() as usize, stored, "every reading stored belongs to a sensor ({deletions} deletions)");
}

/// `export` from each database, `import` into each of the three: the same readings, rollups and
/// latest values; a second import adds nothing.
async fn export_then_import_into_every_database(backend: Backend) {
    let source_db = TestDb::new(backend).await;
    let source = Store::open(&source_db.url).await.unwrap();
    let sensors = [key("yanjo", "living room, east", "temperature"), key("yanjo", "kitchen", "humidity"), key("kim", "shed", "illuminate")];
    for (n, sensor) in sensors.iter().enumerate() {
        let readings = series(sensor, 1_700_000_000_000 + n as i64, 1_700_000_000_000 + 3 * 3_600_000, 7_000)
            .into_iter()
            .map(|r| Reading { value: r.value * 0.1 + 1e-7, ..r })
            .collect();
        source.write_batch(&Batch { readings, ..Batch::default() }).await.unwrap();
    }
    let snapshot = |store: &'static Store| async move {
        let mut all = Vec::new();
        for s in store.sensors().await.unwrap() {
            let rows = store.readings_by_id(s.id, TimestampMs(0), TimestampMs::MAX, i64::MAX).await.unwrap();
            let hours = store.buckets(Series::Hours, s.id, TimestampMs(0), TimestampMs(2_000_000_000_000), 3_600_000).await.unwrap();
            all.push((s.key, s.last_value, s.last_seen, rows, hours));
        }
        all
    };
    let source: &'static Store = Box::leak(Box::new(source));
    let expected = snapshot(source).await;
    for format in [Format::Csv, Format::Jsonl] {
        let file = tempfile::NamedTempFile::new().unwrap();
        let out = Box::new(file.reopen().unwrap());
        let options =
            ExportOptions { from: TimestampMs(0), to: TimestampMs::MAX, filter: None, templates: TopicTemplate::defaults(), format };
        let summary = export(source, &options, out, Progress::silent()).await.unwrap();
        assert_eq!(summary.sensors, 3);
        for target in [Backend::Sqlite, Backend::Postgres, Backend::MariaDb] {
            let target_db = TestDb::new(target).await;
            let store: &'static Store = Box::leak(Box::new(Store::open(&target_db.url).await.unwrap()));
            let input = || Box::new(std::io::BufReader::new(file.reopen().unwrap()));
            let first = import(store, input(), format, None, Progress::silent()).await.unwrap();
            assert_eq!((first.imported, first.present, first.new_sensors), (summary.readings, 0, 3), "{backend:?} → {target:?}");
            let second = import(store, input(), format, None, Progress::silent()).await.unwrap();
            assert_eq!((second.imported, second.present), (0, summary.readings), "{backend:?} → {target:?}: nothing twice");
            assert_eq!(snapshot(store).await, expected, "{backend:?} → {target:?} ({format:?})");
            store.close().await;
        }
    }
    // A filter picks sensors by topic.
    let file = tempfile::NamedTempFile::new().unwrap();
    let filter = Some(mqtt_codec::TopicFilter::parse("iot/yanjo/#").unwrap());
    let options =
        ExportOptions { from: TimestampMs(0), to: TimestampMs::MAX, filter, templates: TopicTemplate::defaults(), format: Format::Csv };
    let summary = export(source, &options, Box::new(file.reopen().unwrap()), Progress::silent()).await.unwrap();
    assert_eq!(summary.sensors, 2);
    let text = std::fs::read_to_string(file.path()).unwrap();
    assert!(
        text.starts_with("time,owner,place,category,value\n2023-11-14T22:13:20.001Z,yanjo,kitchen,humidity,0.0000001\n"),
        "{}",
        &text[..120]
    );
    assert!(text.contains("\"living room, east\""), "quoted as CSV");
}

/// Renaming, hiding, a unit, a sensor's own retention and deletion through the API: admins for
/// any sensor, a user for their own; another owner's sensor is "not found".
async fn sensors_are_managed_over_the_api_by_their_owner_or_an_admin(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |a| {
        a.allow_anonymous = false;
        a.retention = days(30);
    })
    .await;
    add_user(&server.store, "alice", "alice-secret", false).await;
    add_user(&server.store, "bob", "bob-secret", false).await;
    add_user(&server.store, "root", "root-secret", true).await;
    let (alice_light, bob_temp) = (key("alice", "desk", "illuminate"), key("bob", "garage", "temperature"));
    // A minute from an hour ago, across a minute's end: older than the folds' marks, so a
    // batch writes its minutes and hour itself and the rows deleted below do not depend on
    // whether a fold has run yet (readings of the last minute would be in no hour until then).
    let now = TimestampMs::now().0;
    let start = now - now.rem_euclid(3_600_000) - 3_600_000 + 30 * 60_000 - 30_000;
    for sensor in [&alice_light, &bob_temp] {
        server.store.write_batch(&Batch { readings: series(sensor, start, start + 60_000, 1000), ..Batch::default() }).await.unwrap();
    }
    let http = reqwest::Client::new();
    let alice = dashboard_login(&http, &server, "alice", "alice-secret").await;
    let root = dashboard_login(&http, &server, "root", "root-secret").await;
    let call = |method: reqwest::Method, path: &str, cookie: &str, body: Option<serde_json::Value>| {
        crate::support::api_call(&http, &server, method, path, cookie, body)
    };
    use reqwest::Method;
    let (alice_path, bob_path) = ("/api/sensors/alice/desk/illuminate", "/api/sensors/bob/garage/temperature");
    let patch = serde_json::json!({ "display_name": "Desk lamp", "unit": "lx", "hidden": true, "retention": "7d" });
    let (status, body) = call(Method::PATCH, alice_path, &alice, Some(patch.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["display_name"], &body["unit"], &body["hidden"], &body["retention"], &body["retention_from"]),
        (
            &serde_json::json!("Desk lamp"),
            &serde_json::json!("lx"),
            &serde_json::json!(true),
            &serde_json::json!("7d"),
            &serde_json::json!("sensor")
        )
    );
    let (status, body) = call(Method::PATCH, alice_path, &alice, Some(serde_json::json!({ "retention": null, "unit": null }))).await;
    assert_eq!(
        (status, &body["retention"], &body["retention_from"], &body["unit"], &body["display_name"]),
        (200, &serde_json::json!("30d"), &serde_json::json!("default"), &serde_json::Value::Null, &serde_json::json!("Desk lamp")),
        "null clears, absent stays: {body}"
    );
    // One sensor read back, as the list gives it.
    let (status, one) = call(Method::GET, alice_path, &alice, None).await;
    assert_eq!(
        (status, &one["display_name"], &one["retention"]),
        (200, &serde_json::json!("Desk lamp"), &serde_json::json!("30d")),
        "{one}"
    );
    let (_, list) = call(Method::GET, "/api/sensors", &alice, None).await;
    let listed = list.as_array().and_then(|all| all.iter().find(|s| s["display_name"] == "Desk lamp")).cloned();
    assert_eq!(listed.as_ref(), Some(&one), "{list}");
    assert_eq!(call(Method::GET, bob_path, &alice, None).await.0, 404, "another owner's sensor is not shown");
    assert_eq!(call(Method::PATCH, bob_path, &alice, Some(patch.clone())).await.0, 404, "another owner's sensor is not found");
    assert_eq!(call(Method::DELETE, bob_path, &alice, None).await.0, 404, "nor deleted");
    for bad in [
        serde_json::json!({ "retention": "soon" }),
        serde_json::json!({ "display_name": "x".repeat(101) }),
        serde_json::json!({ "colour": "red" }),
        serde_json::json!({ "hidden": "yes" }),
    ] {
        let (status, body) = call(Method::PATCH, alice_path, &alice, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let (status, list) = call(Method::GET, "/api/sensors", &root, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().iter().filter(|s| s["hidden"] == true).count(), 1, "{list}");

    // 60 readings, and the minutes and hours they fall in.
    let periods = |size: i64| {
        series(&bob_temp, start, start + 60_000, 1000).iter().map(|r| r.ts.0 / size).collect::<std::collections::BTreeSet<_>>().len()
    };
    let rows = 60 + periods(60_000) + periods(3_600_000);
    let (status, body) = call(Method::DELETE, bob_path, &root, None).await;
    assert_eq!((status, &body["rows"]), (200, &serde_json::json!(rows)), "an admin deletes any sensor: {body}");
    assert!(server.store.sensor(&bob_temp).await.unwrap().is_none());
    let (status, _) = call(Method::DELETE, alice_path, &alice, None).await;
    assert_eq!(status, 200, "an owner deletes their own");
    assert_eq!(call(Method::DELETE, alice_path, &alice, None).await.0, 404, "gone");
    assert_eq!(server.store.count_readings().await.unwrap(), 0);
    server.stop().await;
}

crate::on_every_database!(
    retention_purges_by_reading_time,
    the_purge_under_concurrent_ingest_loses_nothing_within_retention,
    charts_of_purged_ranges_come_from_rollups_exactly,
    a_batch_for_a_sensor_deleted_elsewhere_creates_it_again,
    sensors_deleted_while_batches_name_them_all_succeed,
    export_then_import_into_every_database,
    sensors_are_managed_over_the_api_by_their_owner_or_an_admin,
);

/// `roost serve --retention 1d` purges at start; `/metrics` then shows the database's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_purges_at_start_and_reports_the_database_size() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = Store::open(&db.url).await.unwrap();
    let sensor = key("yanjo", "bedroom", "temperature");
    let now = TimestampMs::now().0;
    // Hourly for five days, half an hour off the hour: 24 within the last day.
    store.write_batch(&Batch { readings: series(&sensor, now - 5 * DAY + 1_800_000, now, 3_600_000), ..Batch::default() }).await.unwrap();
    store.close().await;
    let server = TestServer::start_on(db.url.clone(), |a| a.retention = days(1)).await;
    let url = format!("http://{}/metrics", server.http);
    let metrics = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    // The database is measured once the purge is done.
    crate::support::eventually_async("the purge at start", || async {
        metrics().await.contains("roost_database_rows{table=\"readings\"} 24\n")
    })
    .await;
    assert_eq!(server.store.count_readings().await.unwrap(), 24);
    let metrics = metrics().await;
    let value = |name: &str| metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{metrics}")).to_owned();
    assert!(value("roost_database_bytes ").split(' ').nth(1).unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(value("roost_database_rows{table=\"readings\"}"), "roost_database_rows{table=\"readings\"} 24");
    assert_eq!(value("roost_purged_rows_total"), format!("roost_purged_rows_total {}", 5 * 24 - 24));
    assert!(value("roost_disk_free_bytes ").split(' ').nth(1).unwrap().parse::<u64>().unwrap() > 0);
    server.stop().await;
}

/// The README's recipe for the stack Roost replaces: the Django `iot_sensor` table (place and
/// category from the topic, a value, a timestamp) read with the `mariadb` client as JSON Lines
/// and piped into `roost import`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_django_iot_sensor_table_comes_in_with_the_documented_recipe() {
    crate::support::require_command("mariadb");
    let django = TestDb::new(Backend::MariaDb).await;
    let url = django.url.expose_secret().to_owned();
    let mut conn = <sqlx::MySqlConnection as sqlx::Connection>::connect(&url).await.unwrap();
    for statement in [
        "CREATE TABLE iot_sensor (id INT AUTO_INCREMENT PRIMARY KEY, place VARCHAR(20) NOT NULL, category VARCHAR(20) NOT NULL,
            value VARCHAR(20) NOT NULL, created_at DATETIME(6) NOT NULL)",
        "INSERT INTO iot_sensor (place, category, value, created_at) VALUES
            ('livingroom', 'illuminate', '512', '2021-05-01 12:00:00.250000'),
            ('bedroom', 'temperature', '23.4', '2021-05-01 12:00:01'),
            ('kitchen', 'humidity', '41', '2021-05-01 12:00:02')",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    // The recipe, as README.md gives it (database name and server from the test's URL).
    let recipe = readme_recipe();
    let rest = url.split_once("://").unwrap().1;
    let (user, rest) = rest.split_once('@').unwrap();
    let (host, name) = rest.split_once('/').unwrap();
    let (host, port) = host.split_once(':').unwrap();
    let target = tempfile::tempdir().unwrap();
    let script = recipe
        .replace("-h DJANGO_HOST", &format!("-h {host} -P {port}"))
        .replace("-u DJANGO_USER -p", &format!("-u {user}"))
        .replace("sensor_db", name)
        .replace("roost import", &format!("{} import --data-dir {}", env!("CARGO_BIN_EXE_roost"), target.path().display()));
    let out = std::process::Command::new("bash").arg("-o").arg("pipefail").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("imported 3 readings (3 new sensors)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&roost::store::DatabaseUrl::new(format!("sqlite://{}/roost.db", target.path().display()))).await.unwrap();
    let light = store.sensor(&key("yanjo", "livingroom", "illuminate")).await.unwrap().unwrap();
    assert_eq!((light.last_value, light.last_seen), (Some(512.0), Some(TimestampMs(1_619_870_400_250))));
}

/// The shell lines of the README's Django recipe (between its markers).
fn readme_recipe() -> String {
    let readme = include_str!("../../../../README.md");
    let start = readme.find("<!-- django-recipe -->").expect("the recipe's start marker in README.md");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").unwrap() + 6..];
    block[..block.find("```").unwrap()].to_owned()
}
