//! The storage contract, run against SQLite, PostgreSQL and MariaDB alike.

use crate::databases::{Backend, TestDb};
use roost::ingest::{Reading, Reject, RejectReason, SensorKey, TimestampMs};
use roost::store::{Batch, Store};

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
    };
    store.write_batch(&batch).await.unwrap();
    // A second batch reuses the sensors (cached ids) and an older reading does not move
    // `last_value` backwards.
    store.write_batch(&Batch { readings: vec![reading(&temp, 500, -3.0)], rejects: vec![] }).await.unwrap();
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
    Store::open(&db.url).await.unwrap().write_batch(&Batch { readings: vec![reading(&k, 1, 1.0)], rejects: vec![] }).await.unwrap();
    // A new process (empty id cache) must not create the sensor twice.
    let store = Store::open(&db.url).await.unwrap();
    store.write_batch(&Batch { readings: vec![reading(&k, 2, 2.0)], rejects: vec![] }).await.unwrap();
    assert_eq!(store.sensors().await.unwrap().len(), 1);
    assert_eq!(store.count_readings().await.unwrap(), 2);
}

async fn large_batches_are_split_into_chunks(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::open(&db.url).await.unwrap();
    let readings: Vec<_> = (0..5_000).map(|i| reading(&key("o", &format!("p{}", i % 7), "t"), i, i as f64)).collect();
    store.write_batch(&Batch { readings, rejects: vec![] }).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 5_000);
    assert_eq!(store.sensors().await.unwrap().len(), 7);
}

crate::on_every_database!(
    migrations_are_idempotent,
    batches_store_readings_sensors_and_rejects,
    a_fresh_store_finds_existing_sensors,
    large_batches_are_split_into_chunks,
);
