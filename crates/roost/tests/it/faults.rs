//! "Acknowledged means stored" under real faults: a disk that fills up (a size-limited tmpfs;
//! the tests run as root), records the database refuses, numbered readings to prove that
//! nothing acknowledged is lost and nothing is stored twice.

use crate::databases::{Backend, TestDb};
use crate::support::{publish, Raw, TestServer, WAIT};
use mqtt_codec::{Ack, Packet, QoS};
use roost::ingest::{run_writer, IngestStats, Job, Record, Source, WriterConfig};
use roost::model::{Reading, SensorKey, TimestampMs};
use roost::store::{DatabaseUrl, Store};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A filesystem of a few MiB, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
    /// The image file of a loop-mounted filesystem.
    _image: Option<tempfile::TempDir>,
}

impl SmallDisk {
    /// A size-limited tmpfs: writes fail with ENOSPC at once.
    fn tmpfs(bytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run("mount", &["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs", dir.path().to_str().unwrap()]);
        Self { dir, _image: None }
    }

    /// ext4 on a loop device, as on an SD card: writes may land in the page cache and the
    /// space runs out at allocation or at fsync.
    fn ext4(bytes: u64) -> Self {
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("disk.img");
        std::fs::File::create(&image).unwrap().set_len(bytes).unwrap();
        // 4 KiB blocks, as an SD card's file system has (mkfs picks 1 KiB for one this small):
        // SQLite extends its shared-memory file by writing the last byte of each 4 KiB page,
        // which allocates the whole page only when a block is a page. With 1 KiB blocks, the
        // rest of the page is a hole, and a store into it through the mapping on a full disk is
        // a SIGBUS (seen when a connection rebuilt the log's index after the disk filled).
        run("mkfs.ext4", &["-q", "-F", "-b", "4096", image.to_str().unwrap()]);
        let dir = tempfile::tempdir().unwrap();
        run("mount", &["-o", "loop", image.to_str().unwrap(), dir.path().to_str().unwrap()]);
        Self { dir, _image: Some(image_dir) }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: the server of a failed test may still hold files open.
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program).args(args).status().unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed (making a small filesystem needs root; the tests run as root in CI)");
}

async fn healthz(server: &TestServer) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("http://{}/healthz", server.http)).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls `/healthz` until it answers `status`; returns how long that took and the body.
async fn wait_for_health(server: &TestServer, status: u16, within: Duration, what: &str) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    loop {
        let (now, body) = healthz(server).await;
        if now == status {
            return (started.elapsed(), body);
        }
        assert!(started.elapsed() < within, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the numbered publishers; each must have had every publish acknowledged.
async fn all_acknowledged(publishers: Vec<tokio::task::JoinHandle<(Vec<u64>, Vec<u64>)>>) -> Vec<u64> {
    let mut acked = Vec::new();
    for publisher in publishers {
        let (sent, mut done) = publisher.await.unwrap();
        assert_eq!(sent, done, "every publish is acknowledged once the fault is over");
        acked.append(&mut done);
    }
    acked
}

/// How often each (place, value) is stored in the database at `url`.
async fn stored_counts(url: &DatabaseUrl) -> HashMap<(String, u64), usize> {
    let store = Store::connect(url).await.unwrap();
    let mut stored: HashMap<(String, u64), usize> = HashMap::new();
    for (key, value) in store.all_values().await.unwrap() {
        *stored.entry((key.place.into(), value as u64)).or_default() += 1;
    }
    store.close().await;
    stored
}

/// Every acknowledged number of `publish_numbered` (board `n` sends from `n * 10_000_000`) is
/// stored exactly once.
fn assert_each_stored_once(stored: &HashMap<(String, u64), usize>, acked: &[u64]) {
    for value in acked {
        let board = format!("board{}", value / 10_000_000);
        assert_eq!(stored.get(&(board, *value)), Some(&1), "acknowledged reading {value} is stored exactly once");
    }
}

/// Publishes numbered QoS 1 readings (`first`, `first + 1`, …) with up to `window`
/// unacknowledged until `stop`, then waits for the outstanding acknowledgements. Returns what
/// was sent and what was acknowledged.
async fn publish_numbered(addr: std::net::SocketAddr, client: String, first: u64, stop: CancellationToken) -> (Vec<u64>, Vec<u64>) {
    const WINDOW: usize = 32;
    let (mut raw, _) = Raw::mqtt(addr, &client, true).await;
    let topic = format!("iot/faults/sensor/{client}/count");
    let (mut sent, mut acked) = (Vec::new(), Vec::new());
    let mut in_flight: VecDeque<(u16, u64)> = VecDeque::new();
    let mut next = first;
    let mut id: u16 = 0;
    let give_up = Instant::now() + Duration::from_secs(240);
    loop {
        while !stop.is_cancelled() && in_flight.len() < WINDOW {
            id = id % 60_000 + 1;
            raw.send(&publish(&topic, next.to_string(), QoS::AtLeastOnce, Some(id), false)).await;
            in_flight.push_back((id, next));
            sent.push(next);
            next += 1;
        }
        if in_flight.is_empty() {
            return (sent, acked);
        }
        assert!(Instant::now() < give_up, "{client}: {} publishes never acknowledged", in_flight.len());
        match raw.recv_within(Duration::from_millis(200)).await {
            Err(()) => continue, // nothing yet: the disk may be full
            Ok(Some(Packet::PubAck(ack))) => {
                let (expected, value) = in_flight.pop_front().expect("an ack for something sent");
                assert_eq!(ack, Ack::new(crate::support::pid(expected)), "acks in order [MQTT-4.6.0-2]");
                acked.push(value);
            }
            other => panic!("{client}: unexpected {other:?}"),
        }
    }
}

/// SQLite on a disk that fills up: acknowledgements stop (nothing unstored is acknowledged),
/// `/healthz` says "disk full", and once space is freed ingest resumes by itself: every
/// acknowledged reading is stored exactly once, and so is one sent after the recovery.
/// Well before the disk is full: with less than `--low-disk-percent` free on the SQLite file's
/// disk, `/metrics` and `/api/stats` say so (the dashboard shows it to admins), while readings are
/// still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_almost_full_is_reported_while_readings_are_still_stored() {
    let disk = SmallDisk::tmpfs(16 << 20);
    // 15 of 16 MiB taken by something else: about 6% free.
    std::fs::write(disk.path().join("other-data"), vec![0u8; 15 << 20]).unwrap();
    let url = DatabaseUrl::new(format!("sqlite://{}", disk.path().join("roost.db").display()));
    let server = TestServer::start_on(url, |a| a.low_disk_percent = 10).await;
    let metrics = format!("http://{}/metrics", server.http);
    crate::support::eventually_async("the low disk in /metrics", || async {
        reqwest::get(&metrics).await.unwrap().text().await.unwrap().contains("\nroost_disk_low 1\n")
    })
    .await;
    let stats: serde_json::Value = reqwest::get(format!("http://{}/api/stats", server.http)).await.unwrap().json().await.unwrap();
    assert_eq!(stats["lifecycle"]["disk_low"], true, "{stats}");
    assert!(stats["lifecycle"]["disk"]["free_bytes"].as_u64().unwrap() < (16 << 20) / 10, "{stats}");
    let (mut board, _) = Raw::mqtt(server.mqtt, "board", true).await;
    board.send(&publish("iot/yanjo/sensor/attic/temperature", "21.5", QoS::AtLeastOnce, Some(1), false)).await;
    assert!(matches!(board.recv().await, Some(Packet::PubAck(_))), "still stored");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_tmpfs_holds_acks_and_recovers_without_restart() {
    sqlite_disk_full_holds_acks_and_recovers_without_restart(SmallDisk::tmpfs(3 << 20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_ext4_holds_acks_and_recovers_without_restart() {
    sqlite_disk_full_holds_acks_and_recovers_without_restart(SmallDisk::ext4(8 << 20)).await;
}

async fn sqlite_disk_full_holds_acks_and_recovers_without_restart(disk: SmallDisk) {
    let url = DatabaseUrl::new(format!("sqlite://{}", disk.path().join("roost.db").display()));
    disk_full_holds_acks_and_recovers_without_restart(&disk, url).await;
}

// PostgreSQL and MariaDB are not filled for real. PostgreSQL can be (a tablespace on a small
// tmpfs: it worked, SQLSTATE 53100, recovered), but a run that fails before dropping the
// tablespace leaves the shared server with buffers it can never write: its checkpoints fail
// and it PANICs at the next fsync. MariaDB puts a table elsewhere only with `DATA DIRECTORY` at
// CREATE TABLE, which the migrations do not use. Their disk-full codes (53100; 1021, 1114) are
// classified in `store::failure`'s unit test, and their outages by `outage_under_load`.

/// Fills `disk` (which holds `url`'s data) under numbered QoS 1 load, frees 1 MiB of ballast,
/// and checks that ingest recovered and stored every acknowledged reading exactly once.
async fn disk_full_holds_acks_and_recovers_without_restart(disk: &SmallDisk, url: DatabaseUrl) {
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 1 << 20]).unwrap();
    let server = TestServer::start_on(url.clone(), |_| {}).await;
    let stop = CancellationToken::new();
    let publishers: Vec<_> =
        (0..4u64).map(|c| tokio::spawn(publish_numbered(server.mqtt, format!("board{c}"), c * 10_000_000, stop.clone()))).collect();

    // Fill the disk: the writer's commits fail, and health says so, in words. The publishers
    // go on until the writer's own failure shows: another check can fail first on a full disk
    // (the database's ping, the broker state's commit), and stopping then could leave the
    // writer with nothing more to fail on.
    let started = Instant::now();
    let degraded = loop {
        let (status, body) = healthz(&server).await;
        if status == 503 && body["ingest"].is_string() {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the disk never filled for the writer: health {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    assert_eq!(degraded["status"], "degraded");
    let problem = degraded["ingest"].as_str().unwrap();
    assert!(problem.contains("disk full"), "{problem}");
    // (Whether it is still full a moment later depends on the database: PostgreSQL can reuse
    // the pages a failed insert allocated. What matters is checked below: every publish
    // acknowledged at any time is stored, once.)

    // Free space: ingest resumes by itself, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let (recovery, _) = wait_for_health(&server, 200, Duration::from_secs(30), "ingest did not recover after space was freed").await;
    println!("disk full: recovered {recovery:?} after space was freed");
    let acked = all_acknowledged(publishers).await;
    let (mut late, _) = Raw::mqtt(server.mqtt, "late", true).await;
    late.send(&publish("iot/faults/sensor/late/count", "42", QoS::AtLeastOnce, Some(7), false)).await;
    assert_eq!(late.recv().await, Some(Packet::PubAck(Ack::new(crate::support::pid(7)))));
    server.stop().await;

    let stored = stored_counts(&url).await;
    assert_eq!(stored.get(&("late".to_owned(), 42)), Some(&1), "the publish after recovery is stored");
    assert_each_stored_once(&stored, &acked);
    assert_eq!(stored.values().sum::<usize>(), acked.len() + 1, "nothing stored that was not acknowledged");
    println!("disk full: {} readings acknowledged, all stored once", acked.len());
}

/// One device's publish that the database can never store (a place longer than the key
/// columns) is acknowledged as a reject with its reason; another device's readings keep being
/// acknowledged and stored.
async fn a_poison_publish_does_not_hold_up_other_devices(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let (mut poison, _) = Raw::mqtt(server.mqtt, "poison", true).await;
    let (mut healthy, _) = Raw::mqtt(server.mqtt, "healthy", true).await;
    let long = "p".repeat(300);
    poison.send(&publish(&format!("iot/yanjo/sensor/{long}/temperature"), "21.5", QoS::AtLeastOnce, Some(1), false)).await;
    for id in 1..=20u16 {
        healthy.send(&publish("iot/yanjo/sensor/kitchen/temperature", id.to_string(), QoS::AtLeastOnce, Some(id), false)).await;
    }
    assert_eq!(poison.recv().await, Some(Packet::PubAck(Ack::new(crate::support::pid(1)))));
    for id in 1..=20u16 {
        assert_eq!(healthy.recv().await, Some(Packet::PubAck(Ack::new(crate::support::pid(id)))));
    }
    let kitchen = SensorKey { owner: "yanjo".into(), place: "kitchen".into(), category: "temperature".into() };
    let stored = server.store.readings(&kitchen, TimestampMs(0), TimestampMs(i64::MAX)).await.unwrap();
    assert_eq!(stored.len(), 20);
    let rejects = server.store.recent_rejects(10).await.unwrap();
    assert_eq!(rejects.len(), 1);
    assert_eq!((rejects[0].client_id.as_str(), rejects[0].reason.as_str()), ("poison", "topic level longer than 191 characters"));
    server.stop().await;
}

/// Past the edge checks, the writer itself: a record the database refuses (here a key longer
/// than every schema allows, made without `SensorKey::new`) is split out of its batch and
/// stored as a reject; the records around it commit, and everyone gets an answer.
async fn the_writer_sets_apart_a_record_the_database_refuses(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Arc::new(Store::open(&db.url).await.unwrap());
    let (jobs, queue) = tokio::sync::mpsc::channel(16);
    let mut receipts = Vec::new();
    for (place, value) in [("kitchen", 1.0), (&*"p".repeat(300), 2.0), ("kitchen", 3.0), ("bedroom", 4.0)] {
        let sensor = SensorKey { owner: "yanjo".into(), place: place.into(), category: "temperature".into() };
        let topic = format!("iot/yanjo/sensor/{place}/temperature");
        let source = Source {
            client_id: format!("device-{value}").into(),
            topic: mqtt_codec::TopicName::parse(&topic).unwrap(),
            payload: bytes::Bytes::from(value.to_string()),
            received_at: TimestampMs(1_000),
        };
        let record = Record::Readings([Reading { sensor, ts: TimestampMs(1_000), value }].into());
        let (committed, receipt) = tokio::sync::oneshot::channel();
        jobs.send(Job { record, source, committed, queued_at: tokio::time::Instant::now(), delivery: None }).await.unwrap();
        receipts.push(receipt);
    }
    // All four are queued before the writer starts, so they are one batch.
    let stats = Arc::new(IngestStats::default());
    let stop = CancellationToken::new();
    let writer = tokio::spawn(run_writer(
        Arc::clone(&store),
        queue,
        WriterConfig::default(),
        Arc::clone(&stats),
        roost::ingest::Feeds::new(4),
        stop.clone(),
    ));
    for receipt in receipts {
        let answer = tokio::time::timeout(WAIT, receipt).await.expect("every record is answered").expect("not dropped");
        assert_eq!(answer, Ok(()), "committed, as a reading or as a reject");
    }
    let kitchen = SensorKey { owner: "yanjo".into(), place: "kitchen".into(), category: "temperature".into() };
    let mut values: Vec<f64> =
        store.readings(&kitchen, TimestampMs(0), TimestampMs(i64::MAX)).await.unwrap().into_iter().map(|r| r.1).collect();
    // Both at one millisecond: readings of one time come in no set order (on MariaDB one may be
    // staged and the other not).
    values.sort_by(f64::total_cmp);
    assert_eq!(values, [1.0, 3.0]);
    assert_eq!(store.count_readings().await.unwrap(), 3);
    let rejects = store.recent_rejects(10).await.unwrap();
    assert_eq!(rejects.len(), 1);
    assert_eq!((rejects[0].client_id.as_str(), rejects[0].reason.as_str()), ("device-2", "refused by the database"));
    assert_eq!(rejects[0].payload, b"2");
    assert_eq!(stats.snapshot().refused, 1);
    assert_eq!(stats.health.report().problem(), None, "a refused record is not a failing database");
    stop.cancel();
    writer.await.unwrap();
    store.close().await;
}

crate::on_every_database!(a_poison_publish_does_not_hold_up_other_devices, the_writer_sets_apart_a_record_the_database_refuses);

/// A server database cut off under load (every connection severed, new ones refused, for 3 s):
/// acknowledgements stop, `/healthz` says so, and once the database is back ingest resumes by
/// itself; every acknowledged numbered reading is stored exactly once.
async fn a_database_outage_under_load_loses_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_, upstream) = db.server.clone().expect("a server database");
    let proxy = crate::proxy::Proxy::start(upstream.parse().unwrap()).await;
    let server = TestServer::start_on(db.via(proxy.addr), |_| {}).await;
    let stop = CancellationToken::new();
    let publishers: Vec<_> =
        (0..4u64).map(|c| tokio::spawn(publish_numbered(server.mqtt, format!("board{c}"), c * 10_000_000, stop.clone()))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.cut();
    wait_for_health(&server, 503, Duration::from_secs(30), "/healthz never noticed the outage").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    proxy.restore();
    let (recovery, _) = wait_for_health(&server, 200, Duration::from_secs(30), "ingest did not recover after the database came back").await;
    println!("{backend:?} outage: recovered {recovery:?} after the database came back");
    let acked = all_acknowledged(publishers).await;
    server.stop().await;
    let stored = stored_counts(&db.url).await;
    assert_each_stored_once(&stored, &acked);
    assert_eq!(stored.values().sum::<usize>(), acked.len(), "nothing stored that was not acknowledged");
    println!("{backend:?} outage: {} readings acknowledged, all stored once", acked.len());
}

mod outage_under_load {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_database_outage_under_load_loses_nothing(crate::databases::Backend::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb() {
        super::a_database_outage_under_load_loses_nothing(crate::databases::Backend::MariaDb).await
    }
}
