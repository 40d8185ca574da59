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
//! databases; the conflict clauses of the upserts are taken from there. One difference: a
//! batch of many sensors with a reading or two each (a fleet of boards) appends its readings
//! to `readings_staged` (while the moves find several readings per sensor: see
//! `JUDGE_FROM_READINGS`), and they are moved into `readings_indexed` in (sensor, time) order
//! about once a second, at most `MERGE_CHUNK` at a time, in transactions of their own between
//! two batches (schema migration 12 says why); a batch of a few sensors with many readings each
//! writes them into `readings_indexed` straight away, where they dirty few index pages anyway.

use super::batch::{self, IdReading};
use super::fold;
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

/// What a committed batch did, as the thread sees it.
struct Committed {
    /// The ids of `Rows::unknown`, in order.
    unknown_ids: Vec<i64>,
    /// Readings it appended to the staged table (0 when it wrote them to the indexed one).
    staged: usize,
}

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
    pub async fn start(file: &Path, periods: StagingPeriods) -> Result<Self, StoreError> {
        let (requests, incoming) = mpsc::channel();
        let (opened, open_result) = oneshot::channel();
        let file = file.to_owned();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || match open(&file) {
                Ok(conn) => {
                    let _ = opened.send(Ok(()));
                    serve(conn, &file, periods, incoming)
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

/// Staged readings are moved into the indexed table after a batch once the last move is
/// `StagingPeriods::move_every` old, or once this many are staged (readers scan the staged
/// table: it has no index).
const MERGE_ROWS: usize = 50_000;
/// The most readings one move takes, oldest first, so that the batches waiting behind it wait
/// about as long as for a batch of the ingest writer's largest size; what is left is moved
/// after the next batch.
const MERGE_CHUNK: usize = 20_000;
/// A move of at least this many readings that finds fewer than
/// `batch::STAGE_BELOW_READINGS_PER_SENSOR` per sensor shows that staging does not pay (each sensor's
/// index page is written once per move instead of once per batch, and a move of 20,000
/// readings of 10,000 sensors writes as many pages as the batches would have, in one stall:
/// 8 publishers on 10,000 sensors had p99 53 → 171–208 ms): batches are then written to the
/// indexed table for a while, and staged again after it.
/// (Not less: the move after the first batch of a starting fleet holds a reading per sensor,
/// and would turn staging off for a fleet it pays for.)
const JUDGE_FROM_READINGS: usize = 10_000;

/// How often staged readings are moved, and how long batches skip staging after a move showed
/// it does not pay: a second and ten seconds (tests set their own, to decide when moves come
/// rather than race the clock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StagingPeriods {
    /// Staged readings are moved after a batch once the last move is this old.
    pub move_every: Duration,
    /// Batches are written to the indexed table this long after a move that showed staging
    /// does not pay (`JUDGE_FROM_READINGS`).
    pub write_direct_for: Duration,
}

impl Default for StagingPeriods {
    fn default() -> Self {
        Self { move_every: Duration::from_secs(1), write_direct_for: Duration::from_secs(10) }
    }
}

/// When the staged readings are next moved.
struct Staging {
    periods: StagingPeriods,
    /// Readings staged and not yet moved (an estimate: deletions do not count).
    rows: usize,
    /// The next move.
    next: Instant,
    /// Whether the last move failed (said once in the log, not every second).
    failing: bool,
    /// Until when batches are written to the indexed table whatever their shape.
    direct_until: Option<Instant>,
}

/// What one move did.
struct Moved {
    readings: usize,
    /// Distinct sensors among them.
    sensors: usize,
}

impl Staging {
    /// At start what is staged is unknown (an earlier run may have left readings there): the
    /// move after the first batch finds out, and moves them.
    fn new(periods: StagingPeriods, now: Instant) -> Self {
        Self { periods, rows: 1, next: now, failing: false, direct_until: None }
    }

    /// Whether batches of a reading or two per sensor are staged now.
    fn staging_pays(&self, now: Instant) -> bool {
        self.direct_until.is_none_or(|until| now >= until)
    }

    fn merge_due(&self, now: Instant) -> bool {
        self.rows > 0 && (now >= self.next || (self.rows >= MERGE_ROWS && !self.failing))
    }

    /// After a move, whether or not it succeeded: a full chunk is followed by the next one
    /// after the next batch; a failed move (disk full) is tried again a period later, not after
    /// every batch; a move of a reading or two per sensor turns staging off for a while.
    fn tried(&mut self, moved: &Result<Moved, StoreError>, now: Instant) {
        let later = now + self.periods.move_every;
        (self.rows, self.next) = match moved {
            // Perhaps more left: the next chunk after the next batch (a chunk short of a full
            // one took everything).
            Ok(m) if m.readings >= MERGE_CHUNK => (self.rows.saturating_sub(m.readings).max(1), now),
            Ok(_) => (0, later),
            Err(_) => (self.rows, later),
        };
        if let Ok(m) = moved {
            if m.readings >= JUDGE_FROM_READINGS && batch::stages(m.readings, m.sensors) {
                tracing::debug!(readings = m.readings, sensors = m.sensors, "staging does not pay: writing readings indexed for a while");
                self.direct_until = Some(now + self.periods.write_direct_for);
            }
        }
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

/// Moves the oldest `MERGE_CHUNK` staged readings (by rowid, the order they were appended in)
/// into the indexed table, in index order, so that each page of the (sensor_id, ts) index is
/// written once for all of its sensor's readings in the chunk. Its own transaction, after a
/// batch's: a batch that fits on a nearly full disk does not fail because the move does not.
/// Returns how many readings moved, of how many sensors.
fn merge_staged(conn: &mut Connection) -> Result<Moved, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite_err("starting a transaction"))?;
    let last: Option<i64> = tx
        // The chunk's last rowid (deletions leave gaps), or the last of all when fewer are left.
        .prepare_cached(&format!(
            "SELECT COALESCE((SELECT rowid FROM {SQLITE_STAGED_READINGS} ORDER BY rowid LIMIT 1 OFFSET ?1 - 1), \
             (SELECT MAX(rowid) FROM {SQLITE_STAGED_READINGS}))"
        ))
        .and_then(|mut last| last.query_row([MERGE_CHUNK as i64], |row| row.get(0)))
        .map_err(sqlite_err("finding the staged readings to move"))?;
    let Some(last) = last else {
        return Ok(Moved { readings: 0, sensors: 0 });
    };
    let sensors: i64 = tx
        .prepare_cached(&format!("SELECT COUNT(DISTINCT sensor_id) FROM {SQLITE_STAGED_READINGS} WHERE rowid <= ?1"))
        .and_then(|mut count| count.query_row([last], |row| row.get(0)))
        .map_err(sqlite_err("counting the sensors of the staged readings"))?;
    let moved = tx
        .prepare_cached(&format!(
            "INSERT INTO {SQLITE_INDEXED_READINGS} (sensor_id, ts, value) \
             SELECT sensor_id, ts, value FROM {SQLITE_STAGED_READINGS} WHERE rowid <= ?1 ORDER BY sensor_id, ts"
        ))
        .and_then(|mut insert| insert.execute([last]))
        .map_err(sqlite_err("moving staged readings into the indexed table"))?;
    tx.prepare_cached(&format!("DELETE FROM {SQLITE_STAGED_READINGS} WHERE rowid <= ?1"))
        .and_then(|mut delete| delete.execute([last]))
        .map_err(sqlite_err("deleting moved readings from the staged table"))?;
    tx.commit().map_err(sqlite_err("committing the move of staged readings"))?;
    Ok(Moved { readings: moved, sensors: sensors as usize })
}

/// How much write-ahead log the writer's commits let grow before one of them copies it back
/// into the database (a passive checkpoint), in bytes: 50,000 pages of a new file's 1 KiB.
/// With the pool's 10,000 pages, a fleet of 10,000 boards (a batch dirtying about a thousand
/// pages of `sensors` and the current minute's rollups) had the writer checkpoint every ten
/// commits or so, each copy in the way of the next batch: 49.7k/51.1k → 55.4k/56.7k
/// acknowledged/s with 50,000 pages, and the few-publisher p99 6–12 → 5 ms (BENCHMARKS part 6).
/// The pool's connections, which commit now and then, still checkpoint at 10,000 pages, off the
/// ingest writer's thread.
const CHECKPOINT_AFTER_WAL_BYTES: i64 = 50_000 * 1024;

/// The same settings as the pool's connections (`Store::connect`), but for the checkpoint
/// interval; `synchronous`, the cache and the checkpoint interval are per connection.
fn open(file: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;",
    )?;
    // Files from before 1 KiB pages have larger ones: the same bytes are fewer pages.
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_AFTER_WAL_BYTES / page_size.max(512))?;
    // Statements of every batch, and a few more for the rollup series.
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn serve(conn: Connection, file: &Path, periods: StagingPeriods, requests: mpsc::Receiver<Request>) {
    let mut closed = false;
    let mut staging = Staging::new(periods, Instant::now());
    let mut conn = Some(conn);
    while let Ok(request) = requests.recv() {
        match request {
            Request::Write(rows, reply) => {
                if closed {
                    let _ = reply.send(Err(query_err("writing a batch after the store closed")(sqlx::Error::PoolClosed)));
                    continue;
                }
                let written = guarded(&mut conn, file, "writing a batch (the SQLite writer panicked)", |c| {
                    write(c, &rows, staging.staging_pays(Instant::now()))
                });
                let written = written.map(|done| {
                    done.map(|committed| {
                        staging.rows += committed.staged;
                        committed.unknown_ids
                    })
                });
                let _ = reply.send(written);
                // The batch's acknowledgements leave while the next batch gathers.
                if staging.merge_due(Instant::now()) {
                    let moved = guarded(&mut conn, file, "moving staged readings (the SQLite writer panicked)", merge_staged);
                    staging.tried(&moved, Instant::now());
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

/// One transaction: the token, new sensors, readings (staged, or indexed when there are many
/// per sensor, or when `may_stage` is false), rollups, latest values, rejects, upstream
/// deliveries. A failure rolls all of it back (the transaction is dropped). `Ok(None)`: an
/// earlier attempt with the same token had committed.
fn write(conn: &mut Connection, rows: &Rows, may_stage: bool) -> Result<Option<Committed>, StoreError> {
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

    let folded_before: i64 = tx
        .prepare_cached(fold::select_folded_before(Dialect::Sqlite))
        .and_then(|mut select| select.query_row([], |row| row.get(0)))
        .map_err(sqlite_err("reading which minutes are folded"))?;

    let mut unknown_ids = Vec::with_capacity(rows.unknown.len());
    if !rows.unknown.is_empty() {
        let insert_sql = format!("{}VALUES (?1, ?2, ?3){}", batch::INSERT_SENSORS, batch::insert_sensors_suffix(Dialect::Sqlite));
        let mut insert = tx.prepare_cached(&insert_sql).map_err(sqlite_err("creating sensors"))?;
        // The store's lookup of one sensor, its binds `?` in the order of `key` below.
        let select_sql = super::queries::select_sensor_id::<sqlx::Sqlite>(&rows.unknown[0]).into_sql();
        let mut select = tx.prepare_cached(&select_sql).map_err(sqlite_err("looking up new sensors"))?;
        for key in &rows.unknown {
            let key = params![key.owner.as_str(), key.place.as_str(), key.category.as_str()];
            insert.execute(key).map_err(sqlite_err("creating sensors"))?;
            unknown_ids.push(select.query_row(key, |row| row.get(0)).map_err(sqlite_err("looking up new sensors"))?);
        }
    }
    let readings: Vec<IdReading> =
        rows.readings.iter().map(|&(sensor, ts, value)| (sensor.unwrap_or_else(|i| unknown_ids[i]), ts, value)).collect();
    let newest = batch::newest_per_sensor(&readings);

    let staged = may_stage && batch::stages(readings.len(), newest.len());
    {
        let table = if staged { SQLITE_STAGED_READINGS } else { SQLITE_INDEXED_READINGS };
        let mut insert = tx
            .prepare_cached(&format!("{}VALUES (?1, ?2, ?3)", batch::insert_readings(table)))
            .map_err(sqlite_err("inserting readings"))?;
        for (id, ts, value) in &readings {
            insert.execute(params![id, ts, value]).map_err(sqlite_err("inserting readings"))?;
        }
    }

    // The hours of the minutes not folded yet are the fold's to write.
    let late = fold::late_readings(&readings, folded_before);
    for (series, readings) in [(Series::Minutes, &readings), (Series::Hours, &late)] {
        let sql = format!(
            "{}VALUES (?1, ?2, ?3, ?4, ?5, ?6){}",
            batch::insert_rollups(series),
            batch::upsert_rollups_suffix(Dialect::Sqlite, series)
        );
        let mut upsert = tx.prepare_cached(&sql).map_err(sqlite_err("updating rollups"))?;
        for ((id, start), m) in batch::rollups(readings, series.period_ms()) {
            upsert.execute(params![id, start, m.min, m.max, m.sum, m.count]).map_err(sqlite_err("updating rollups"))?;
        }
    }

    {
        let mut update = tx.prepare_cached(batch::UPDATE_LATEST_SQLITE).map_err(sqlite_err("updating the sensors' latest values"))?;
        for (id, ts, value) in newest {
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
    Ok(Some(Committed { unknown_ids, staged: if staged { readings.len() } else { 0 } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(readings: usize, sensors: usize) -> Result<Moved, StoreError> {
        Ok(Moved { readings, sensors })
    }

    /// When the writer moves staged readings, on its clock: after the first batch, then a
    /// period after the last move, at once after a full chunk or with `MERGE_ROWS` staged (but
    /// a period after a failed move, not after every batch); and how long batches skip staging
    /// after a move of a reading per sensor.
    #[test]
    fn staged_readings_are_moved_on_the_period_after_a_full_chunk_and_when_many_wait() {
        let periods = StagingPeriods::default();
        let start = Instant::now();
        let after = |ms: u64| start + Duration::from_millis(ms);
        let second = periods.move_every.as_millis() as u64;
        let mut staging = Staging::new(periods, start);
        assert!(staging.merge_due(start), "what an earlier run staged is moved after the first batch");
        staging.tried(&moved(1, 1), start);
        assert!(!staging.merge_due(after(second)), "nothing is staged");
        staging.rows += 1;
        assert!(!staging.merge_due(after(second - 1)), "within the period");
        assert!(staging.merge_due(after(second)), "a period after the last move");

        staging.rows = 30_000;
        staging.tried(&moved(MERGE_CHUNK, 100), after(second));
        assert_eq!(staging.rows, 30_000 - MERGE_CHUNK);
        assert!(staging.merge_due(after(second)), "the rest of a full chunk after the next batch");
        assert!(staging.staging_pays(after(second)), "200 readings per sensor: staging pays");
        staging.tried(&moved(30_000 - MERGE_CHUNK, 10), after(second));
        assert_eq!(staging.rows, 0, "a chunk short of a full one took everything");

        staging.rows = MERGE_ROWS - 1;
        assert!(!staging.merge_due(after(second + 1)));
        staging.rows = MERGE_ROWS;
        assert!(staging.merge_due(after(second + 1)), "many staged: moved before the period");
        staging.tried(&Err(query_err("moving")(sqlx::Error::PoolClosed)), after(second + 1));
        assert!(!staging.merge_due(after(2 * second)), "after a failed move, not after every batch");
        assert!(staging.merge_due(after(2 * second + 1)), "a failed move is tried again a period later");

        staging.tried(&moved(JUDGE_FROM_READINGS - 1, JUDGE_FROM_READINGS - 1), after(2 * second + 1));
        assert!(staging.staging_pays(after(2 * second + 1)), "too few moved to judge");
        staging.tried(&moved(JUDGE_FROM_READINGS, JUDGE_FROM_READINGS), after(2 * second + 1));
        let direct_for = periods.write_direct_for.as_millis() as u64;
        assert!(!staging.staging_pays(after(2 * second + 1)), "a reading per sensor: staging does not pay");
        assert!(!staging.staging_pays(after(2 * second + direct_for)));
        assert!(staging.staging_pays(after(2 * second + 1 + direct_for)), "staged again after a while");
    }

    /// The workspace's `.cargo/config.toml` compiles SQLite without the process-wide page cache
    /// mutex and the allocation statistics (`LIBSQLITE3_FLAGS`): about 6 % of Roost's CPU in a
    /// fleet on SQLite (BENCHMARKS.md, part 17). A build that lost the setting fails here.
    #[test]
    fn sqlite_is_compiled_without_the_shared_page_cache_and_memory_statistics() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut statement = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = statement.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
        assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
        assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
    }
}
