//! SQLite's ingest writer: a thread of its own that owns one connection and writes each batch
//! with cached single-row statements, start to commit, in one hand-off.
//!
//! Through sqlx every statement of a batch was a round trip between the async writer and
//! sqlx's SQLite worker thread, and each multi-row statement (a different text for every batch
//! size) was parsed and planned again. Profiled in the fleet shape (1,000 boards, one reading
//! in flight each), the worker waited between statements for a tokio worker busy with the
//! boards' sockets, and the machine stood 28 % idle while the boards waited for their
//! acknowledgements. Here the batch's rows go to the thread once, the thread writes them with
//! statements prepared once per connection, and the answer comes back once.
//!
//! What is written, and in which order, is the same as `batch.rs` writes on the server
//! databases; the conflict clauses of the upserts are taken from there. One difference: the
//! readings are appended to `readings_staged`, and moved into `readings_indexed` in (sensor,
//! time) order about once a second, in a transaction of their own between two batches (schema
//! migration 12 says why).

use super::batch::{self, IdReading};
use super::schema::{SQLITE_INDEXED_READINGS, SQLITE_STAGED_READINGS};
use super::{query_err, Dialect, Series, StoreError};
use crate::model::{Reject, SensorKey, UpstreamDelivery};
use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a batch writes, worked out before it reaches the thread (sensor ids from the cache,
/// unknown sensors numbered).
pub(super) struct Rows {
    /// The batch's token and the time it is recorded with, if it may be a retry.
    pub token: Option<(i64, i64)>,
    /// Delete tokens recorded before this time (now and then).
    pub prune_before: Option<i64>,
    /// Sensors the id cache does not know, each once.
    pub unknown: Vec<SensorKey>,
    /// Each reading: its sensor (an id, or an index in `unknown`), time and value.
    pub readings: Vec<(Result<i64, usize>, i64, f64)>,
    pub rejects: Vec<Reject>,
    pub deliveries: Vec<UpstreamDelivery>,
}

/// `Ok(None)`: an earlier attempt with the same token had committed. `Ok(Some(ids))`: the ids
/// of `Rows::unknown`, in order.
type Written = Result<Option<Vec<i64>>, StoreError>;

enum Request {
    Write(Rows, oneshot::Sender<Written>),
    Close(oneshot::Sender<()>),
}

/// The handle the store keeps: hands batches to the thread.
pub(super) struct SqliteWriter {
    requests: mpsc::Sender<Request>,
}

impl SqliteWriter {
    /// Starts the thread, which opens the writer's connection to `file` (which exists: the
    /// pool created it); returns once it is open.
    pub async fn start(file: &Path) -> Result<Self, StoreError> {
        let (requests, incoming) = mpsc::channel();
        let (opened, open_result) = oneshot::channel();
        let file = file.to_owned();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || match open(&file) {
                Ok(conn) => {
                    let _ = opened.send(Ok(()));
                    serve(conn, &file, incoming)
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            })
            .map_err(|e| query_err("starting the SQLite writer thread")(sqlx::Error::Io(e)))?;
        let gone = || query_err("starting the SQLite writer thread")(sqlx::Error::WorkerCrashed);
        open_result.await.map_err(|_| gone())?.map_err(sqlite_err("opening the ingest writer's connection"))?;
        Ok(Self { requests })
    }

    /// Writes `rows` in one transaction on the writer's thread. Dropping the future does not
    /// stop the thread's transaction: it may still commit (the ingest writer never drops it;
    /// a batch with a token is found by its retry either way).
    pub async fn write(&self, rows: Rows) -> Written {
        let (reply, answer) = oneshot::channel();
        let gone = || query_err("handing a batch to the SQLite writer")(sqlx::Error::WorkerCrashed);
        self.requests.send(Request::Write(rows, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Closes the connection (SQLite checkpoints the log when its last connection closes).
    pub async fn close(&self) {
        let (reply, closed) = oneshot::channel();
        if self.requests.send(Request::Close(reply)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// Staged readings are moved into the indexed table after the first batch once the last move
/// is this old...
const MERGE_EVERY: Duration = Duration::from_secs(1);
/// ...or once this many are staged (readers scan the staged table: it has no index).
const MERGE_ROWS: usize = 50_000;

/// When the staged readings are next moved.
struct Staging {
    /// Readings staged since the last move (an estimate: deletions do not count).
    rows: usize,
    /// The next move: the first comes after the first batch (an earlier run may have left
    /// readings staged).
    next: Instant,
    /// Whether the last move failed (said once in the log, not every second).
    failing: bool,
}

impl Staging {
    fn merge_due(&self) -> bool {
        self.rows >= MERGE_ROWS || Instant::now() >= self.next
    }

    /// After a move, whether or not it succeeded: a failed one (disk full) is tried again a
    /// period later, not after every batch.
    fn tried(&mut self, moved: &Result<usize, StoreError>) {
        (self.rows, self.next) = (0, Instant::now() + MERGE_EVERY);
        match moved {
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!("staged readings are moved into the indexed table again");
            }
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, "moving staged readings into the indexed table failed; trying again every second");
            }
            _ => {}
        }
    }
}

/// Moves every staged reading into the indexed table, in index order, so that each page of the
/// (sensor_id, ts) index is written once for all of its sensor's staged readings. Its own
/// transaction, after a batch's: a batch that fits on a nearly full disk does not fail because
/// the move does not. Returns how many readings moved.
fn merge_staged(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err("starting a transaction"))?;
    let moved = tx
        .prepare_cached(&format!(
            "INSERT INTO {SQLITE_INDEXED_READINGS} (sensor_id, ts, value) \
             SELECT sensor_id, ts, value FROM {SQLITE_STAGED_READINGS} ORDER BY sensor_id, ts"
        ))
        .and_then(|mut insert| insert.execute([]))
        .map_err(sqlite_err("moving staged readings into the indexed table"))?;
    tx.prepare_cached(&format!("DELETE FROM {SQLITE_STAGED_READINGS}"))
        .and_then(|mut delete| delete.execute([]))
        .map_err(sqlite_err("deleting moved readings from the staged table"))?;
    tx.commit().map_err(sqlite_err("committing the move of staged readings"))?;
    Ok(moved)
}

/// The same settings as the pool's connections (`Store::connect`); `synchronous`, the cache
/// and the checkpoint interval are per connection.
fn open(file: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 10000;",
    )?;
    // Statements of every batch, and a few more for the rollup series.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn serve(conn: Connection, file: &Path, requests: mpsc::Receiver<Request>) {
    let mut conn = Some(conn);
    let mut closed = false;
    let mut staging = Staging { rows: 0, next: Instant::now(), failing: false };
    while let Ok(request) = requests.recv() {
        match request {
            Request::Write(rows, reply) => {
                if closed {
                    let _ = reply.send(Err(query_err("writing a batch after the store closed")(sqlx::Error::PoolClosed)));
                    continue;
                }
                let written = guarded(&mut conn, file, "writing a batch (the SQLite writer panicked)", |c| write(c, &rows));
                if let Ok(Some(_)) = written {
                    staging.rows += rows.readings.len();
                }
                let _ = reply.send(written);
                // The batch's acknowledgements leave while the next batch gathers.
                if staging.merge_due() {
                    let moved = guarded(&mut conn, file, "moving staged readings (the SQLite writer panicked)", merge_staged);
                    staging.tried(&moved);
                }
            }
            Request::Close(reply) => {
                closed = true;
                // What is staged stays there (the view shows it) until the next run's first
                // batch moves it: a shutdown on a nearly full disk writes nothing more.
                if let Some(conn) = conn.take() {
                    if let Err((_, e)) = conn.close() {
                        tracing::warn!(error = %e, "closing the SQLite writer's connection");
                    }
                }
                let _ = reply.send(());
            }
        }
    }
}

/// Runs `work` on the writer's connection, opening it again if an earlier failure left none. A
/// panic (a bug) fails this work, not every later one: its transaction is rolled back as it
/// unwinds, and the connection is opened anew. So is it when the work failed with its
/// transaction still open: a failed COMMIT (disk full) can leave it so, and its rollback fail
/// too, and the next batch would nest inside it.
fn guarded<T>(
    conn: &mut Option<Connection>,
    file: &Path,
    panicked: &'static str,
    work: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if conn.is_none() {
        *conn = reopen(None, file);
    }
    let Some(c) = conn.as_mut() else {
        return Err(query_err("opening the SQLite writer's connection")(sqlx::Error::PoolClosed));
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(c))) {
        Ok(done) => {
            if !c.is_autocommit() {
                *conn = reopen(conn.take(), file);
            }
            done
        }
        Err(_) => {
            *conn = reopen(conn.take(), file);
            Err(query_err(panicked)(sqlx::Error::WorkerCrashed))
        }
    }
}

/// A fresh connection in place of `stuck` (`None` while the file cannot be opened: the batch
/// fails and is retried, and the next attempt opens it again).
fn reopen(stuck: Option<Connection>, file: &Path) -> Option<Connection> {
    drop(stuck);
    match open(file) {
        Ok(conn) => Some(conn),
        Err(e) => {
            tracing::warn!(error = %e, "opening the SQLite writer's connection");
            None
        }
    }
}

fn sqlite_err(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |cause| StoreError::Sqlite { doing, cause }
}

/// One transaction: the token, new sensors, readings (staged), rollups, latest values, rejects,
/// upstream deliveries. A failure rolls all of it back (the transaction is dropped).
fn write(conn: &mut Connection, rows: &Rows) -> Written {
    // IMMEDIATE: take the write lock at BEGIN, so a lock held by another connection is waited
    // for (busy timeout) rather than failing the transaction halfway.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err("starting a transaction"))?;
    if let Some((token, now)) = rows.token {
        let recorded = tx
            .prepare_cached("INSERT INTO ingest_commits (token, committed_at) VALUES (?1, ?2)")
            .and_then(|mut insert| insert.execute(params![token, now]));
        match recorded {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE) =>
            {
                return Ok(None);
            }
            other => other.map_err(sqlite_err("recording the commit"))?,
        };
        if let Some(before) = rows.prune_before {
            tx.prepare_cached("DELETE FROM ingest_commits WHERE committed_at < ?1")
                .and_then(|mut delete| delete.execute([before]))
                .map_err(sqlite_err("forgetting old commits"))?;
        }
    }

    let mut unknown_ids = Vec::with_capacity(rows.unknown.len());
    if !rows.unknown.is_empty() {
        let insert_sql = format!("{}VALUES (?1, ?2, ?3){}", batch::INSERT_SENSORS, batch::insert_sensors_suffix(Dialect::Sqlite));
        let mut insert = tx.prepare_cached(&insert_sql).map_err(sqlite_err("creating sensors"))?;
        let mut select = tx
            .prepare_cached("SELECT id FROM sensors WHERE owner = ?1 AND place = ?2 AND category = ?3")
            .map_err(sqlite_err("looking up new sensors"))?;
        for key in &rows.unknown {
            let key = params![key.owner, key.place, key.category];
            insert.execute(key).map_err(sqlite_err("creating sensors"))?;
            unknown_ids.push(select.query_row(key, |row| row.get(0)).map_err(sqlite_err("looking up new sensors"))?);
        }
    }
    let readings: Vec<IdReading> =
        rows.readings.iter().map(|&(sensor, ts, value)| (sensor.unwrap_or_else(|i| unknown_ids[i]), ts, value)).collect();

    {
        let mut insert = tx
            .prepare_cached(&format!("{}VALUES (?1, ?2, ?3)", batch::insert_readings(SQLITE_STAGED_READINGS)))
            .map_err(sqlite_err("inserting readings"))?;
        for (id, ts, value) in &readings {
            insert.execute(params![id, ts, value]).map_err(sqlite_err("inserting readings"))?;
        }
    }

    for series in [Series::Minutes, Series::Hours] {
        let sql = format!(
            "{}VALUES (?1, ?2, ?3, ?4, ?5, ?6){}",
            batch::insert_rollups(series),
            batch::upsert_rollups_suffix(Dialect::Sqlite, series)
        );
        let mut upsert = tx.prepare_cached(&sql).map_err(sqlite_err("updating rollups"))?;
        for ((id, start), m) in batch::rollups(&readings, series.period_ms()) {
            upsert.execute(params![id, start, m.min, m.max, m.sum, m.count]).map_err(sqlite_err("updating rollups"))?;
        }
    }

    {
        let mut update = tx.prepare_cached(batch::UPDATE_LATEST_SQLITE).map_err(sqlite_err("updating the sensors' latest values"))?;
        for (id, ts, value) in batch::newest_per_sensor(&readings) {
            update.execute(params![id, ts, value]).map_err(sqlite_err("updating the sensors' latest values"))?;
        }
    }

    if !rows.rejects.is_empty() {
        let mut insert =
            tx.prepare_cached(&format!("{}VALUES (?1, ?2, ?3, ?4, ?5)", batch::INSERT_REJECTS)).map_err(sqlite_err("inserting rejects"))?;
        for r in &rows.rejects {
            insert
                .execute(params![r.received_at.0, r.client_id, r.topic, r.payload_prefix, r.reason.as_str()])
                .map_err(sqlite_err("inserting rejects"))?;
        }
    }

    if !rows.deliveries.is_empty() {
        let mut upsert = tx
            .prepare_cached(&format!(
                "{}VALUES (?1, ?2, ?3, ?4){}",
                batch::INSERT_DELIVERIES,
                batch::upsert_deliveries_suffix(Dialect::Sqlite)
            ))
            .map_err(sqlite_err("recording upstream deliveries"))?;
        for d in batch::latest_deliveries(&rows.deliveries) {
            upsert.execute(params![&*d.node, d.packet_id, d.hash, d.seq]).map_err(sqlite_err("recording upstream deliveries"))?;
        }
    }

    tx.commit().map_err(sqlite_err("committing"))?;
    Ok(Some(unknown_ids))
}
