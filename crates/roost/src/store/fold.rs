//! Hourly rollups folded from the per-minute ones (schema migration 15). A batch writes each
//! reading, its minute's rollup and its sensor's latest value (on MariaDB/MySQL, see below);
//! the hours of the minutes that are complete are folded into `readings_1h` about once a minute
//! (`lifecycle::fold`), a few thousand rows in one statement, instead of an upsert of an hour
//! for every reading.
//!
//! `rollup_fold.folded_before` (a minute's start) splits the minutes: those before it are in
//! `readings_1h`, those from it on are not yet. A batch reads it first and upserts the hours of
//! its readings before it (late ones: a backfill, an import) itself. On PostgreSQL and MariaDB
//! it reads the row in share mode, and a fold begins by updating the row: so a fold waits for
//! the batches that read the old value to commit (and then sees their minutes), and the batches
//! after it wait for the fold and read the new value; several nodes on one database fold in
//! turn. On SQLite the write lock orders them. Reads of hourly rollups add the minutes not
//! folded yet, each in its hour, so a chart does not wait for the fold.
//!
//! On MariaDB/MySQL the per-minute rollups are folded too (schema migration 16), from the
//! readings, every two seconds (`fold_minutes`): a batch leaves the minutes of its readings
//! from `rollup_fold.minutes_before` on to the fold, and upserts those of older (late) ones
//! itself. The fold takes the readings inserted since the last one, a range of the table's key
//! (`id > minutes_through`; no batch is in progress once a fold has locked the row, so every id
//! up to the largest is committed), rolls up those from `minutes_before` on, and moves both
//! marks; it locks the row for a moment to find the range, rolls it up without the row, and
//! locks it again to upsert the minutes, fold what came meanwhile and move the marks
//! (`fold_into_minutes`).
//! Reads of minutes and hours add the readings not folded yet (`id > minutes_through AND ts >=
//! minutes_before`); a purge of raw readings keeps them. This needs ids that never go back:
//! MariaDB 10.2.4 and MySQL 8.0 on keep the table's counter across a server restart; older
//! servers restart it after the largest id left, which repeats ids already folded past once the
//! newest readings were deleted (a sensor's deletion), and those readings' minutes go missing.
//!
//! A fleet's batches (schema migration 17) append their readings to `readings_staged` instead,
//! which has no index: the same fold, once it has caught up on `readings`, rolls the staged
//! readings up the same way, a range of that table's key (`id > staged_through`, schema
//! migration 18), and reads add the staged readings after that mark. Then, after the fold, a
//! move takes the folded staged readings older than `minutes_before` into `readings` in
//! (sensor, time) order, locking the folds' row only for a moment after each span (to let
//! `minutes_through` jump past the moved ids); there they are older than the mark, so neither
//! a fold nor a read takes them for readings not folded yet, whatever their new ids. (Until
//! migration 18 the fold moved them in its own transaction, and batches waited
//! seconds for moves of 100,000 readings or more.)
//!
//! A staged batch does not update its sensors' latest values either (it checks its sensors
//! are there, in share mode): the fold sets them from the staged readings it takes, in its last
//! step, before the mark passes them, and reads of a sensor take the newer of its row's and its
//! newest staged reading after the mark ([`push_newest_staged`]). At 10,000 boards that is one
//! row update per sensor every two seconds instead of one per reading (BENCHMARKS.md part 13).

use super::batch::{insert_rollups, update_latest_sql, upsert_rollups, upsert_rollups_suffix, IdReading, Rollup};
use super::{query_err, schema, Dialect, Pool, Series, Store, StoreError};
use crate::model::TimestampMs;
use sqlx::{QueryBuilder, Row};

/// The most minutes one fold takes, so that catching up after a backfill of days is many short
/// transactions between batches rather than one long one.
const FOLD_SPAN_MS: i64 = 10 * 60_000;

/// The most readings one fold of minutes takes from each table (a span of this many ids: fewer
/// readings where ids have gaps), so that catching up after the database was away is many
/// short transactions between batches rather than one long one; the readings that came while
/// it rolled them up are another span of at most this many.
const FOLD_READINGS: i64 = 200_000;

/// The most staged readings one move takes (a span of this many ids). A staged batch does not
/// wait for a move, so it may be long; each sensor's page of the index is written
/// once per move, so fewer, larger moves write fewer pages (BENCHMARKS.md part 10: moves of
/// 100,000 readings inserted 63.6k/s into a table of 10 million, of 50,000 45.5k/s).
const MOVE_READINGS: i64 = 200_000;

/// A span of staged readings is moved once it is full ([`MOVE_READINGS`] ids), or once its
/// first reading is this much older than `minutes_before`. Moves of fewer readings per sensor
/// write each page of the index for fewer of them: a fleet of 10,000 boards with a history,
/// moving after every fold (about 77,000 readings), moved about 51,000 readings/s and
/// acknowledged 36k/s; spans of 200,000 moved about 90,000/s (BENCHMARKS.md part 11).
const MOVE_PARTIAL_AFTER_MS: i64 = 30_000;

/// How far before a fold of minutes `minutes_before` is set: a batch upserts the minutes of
/// its readings older than that itself (readings wait in the ingest queue for milliseconds).
const MINUTES_LAG_MS: i64 = 1_000;

/// What one fold did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// Minutes it folded, up to this one (exclusive); `None`: no complete minute was waiting.
    /// (A fold of readings into minutes: the new `minutes_before`; `None`: minutes are not
    /// folded on this database.)
    pub until: Option<TimestampMs>,
    /// Complete minutes may be left (a fold takes at most ten minutes' worth; of readings, at
    /// most [`FOLD_READINGS`] ids of each table, and as many more that came meanwhile).
    pub more: bool,
}

/// The first minute not folded yet, as a statement or (in parentheses) a subquery.
macro_rules! select_folded_before {
    () => {
        "SELECT folded_before FROM rollup_fold"
    };
}

/// The last reading id folded into minutes, and the time from which readings are left to that
/// fold (where minutes are folded), as statements or (in parentheses) subqueries.
macro_rules! select_minutes_through {
    () => {
        "SELECT minutes_through FROM rollup_fold"
    };
}
macro_rules! select_minutes_before {
    () => {
        "SELECT minutes_before FROM rollup_fold"
    };
}

/// The condition on the staged table's key that picks the staged readings not folded into
/// minutes yet (after `staged_through`).
macro_rules! staged_not_folded {
    () => {
        "id > (SELECT staged_through FROM rollup_fold)"
    };
}
/// [`staged_not_folded!`], for the other modules.
pub(super) const STAGED_NOT_FOLDED: &str = staged_not_folded!();

/// A sensor's deletion's first read on the server databases (`Store::delete_sensor`): the
/// folds' row locked exclusively, so that batches and folds, which take it first, wait for the
/// deletion.
pub(super) const LOCK_FOLDS: &str = concat!(select_folded_before!(), " FOR UPDATE");

/// A batch's first read in its transaction: which minutes are folded already (see the module).
pub(super) fn select_folded_before(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => concat!(select_folded_before!(), " FOR SHARE"),
        Dialect::MySql => concat!(select_folded_before!(), " LOCK IN SHARE MODE"),
        Dialect::Sqlite => select_folded_before!(),
    }
}

/// Whether the per-minute rollups are folded from the readings (MariaDB/MySQL, schema migration
/// 16). PostgreSQL's batch writes its minutes in the same one statement as its readings, and
/// SQLite's writer thread with cached statements: there a fold would save less than it costs.
pub(super) fn folds_minutes(dialect: Dialect) -> bool {
    dialect == Dialect::MySql
}

/// Which rollups a batch writes itself, read first in its transaction (see the module).
#[derive(Debug, Clone, Copy)]
pub(super) struct Watermarks {
    /// The hours of readings before this time; those from it on are the hour fold's.
    pub hours_before: i64,
    /// The minutes of readings before this time; those from it on are the minute fold's.
    /// `None` where minutes are not folded: a batch upserts the minutes of all its readings.
    pub minutes_before: Option<i64>,
}

/// A batch's first read in its transaction: the columns of [`Watermarks`] (only the first where
/// minutes are not folded), in share mode on the server databases.
pub(super) fn select_watermarks(dialect: Dialect) -> &'static str {
    if folds_minutes(dialect) {
        "SELECT folded_before, minutes_before FROM rollup_fold LOCK IN SHARE MODE"
    } else {
        select_folded_before(dialect)
    }
}

/// The readings whose rollups a batch upserts itself: those before a fold's watermark.
pub(super) fn late_readings(readings: &[IdReading], before: i64) -> Vec<IdReading> {
    readings.iter().filter(|&&(_, ts, _)| ts < before).copied().collect()
}

/// Where the readings not folded into minutes yet begin (`None` where minutes are not folded):
/// `(minutes_through, minutes_before)` as a read's index range. Folds only move them forward, so
/// the read still checks both marks in its own statement (`push_unfolded_readings`).
pub(super) async fn unfolded_readings_from(store: &Store) -> Result<Option<(i64, i64)>, StoreError> {
    if !store.folds_minutes() {
        return Ok(None);
    }
    on_pool!(store, pool => sqlx::query("SELECT minutes_through, minutes_before FROM rollup_fold")
        .fetch_one(pool)
        .await
        .and_then(|row| Ok(Some((row.try_get(0)?, row.try_get(1)?))))
        .map_err(query_err("reading which readings are folded")))
}

/// The tables of the readings not folded into minutes yet, each with the condition that picks
/// them after the index range: in `readings` those after `minutes_through` (a batch that was
/// not staged), in the staged table those after `staged_through`; in both, only those from
/// `minutes_before` on (a batch upserted the minutes of older ones itself, and readings moved
/// from the staged table are all older).
pub(super) const UNFOLDED_READINGS: [(&str, &str); 2] = [
    ("readings", concat!(" AND id > (", select_minutes_through!(), ") AND ts >= (", select_minutes_before!(), ")")),
    (schema::MYSQL_STAGED_READINGS, concat!(" AND ", staged_not_folded!(), " AND ts >= (", select_minutes_before!(), ")")),
];

/// ` UNION ALL SELECT` of a sensor's readings not folded into minutes yet, from `from` (the
/// start of a period) to before `to`, each as a rollup row of `series` (minutes or hours):
/// `(start of its period, min, max, sum, count)`. `since` is `minutes_before` as read before
/// ([`unfolded_readings_from`]). For hours, only readings from `folded_before` on: a batch
/// upserted the hours of those before it.
pub(super) fn push_unfolded_readings<'a, DB: sqlx::Database>(
    query: &mut QueryBuilder<'a, DB>,
    series: Series,
    sensor_id: i64,
    since: i64,
    (from, to): (i64, i64),
) where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let period = series.period_ms();
    for (table, unfolded) in UNFOLDED_READINGS {
        query.push(format!(" UNION ALL SELECT ts - ts % {period}, value, value, value, 1 FROM {table} WHERE sensor_id = "));
        query.push_bind(sensor_id).push(" AND ts >= ").push_bind(from.max(since));
        query.push(format!(" AND ts - ts % {period} < ")).push_bind(to).push(unfolded);
        if series == Series::Hours {
            query.push(concat!(" AND ts >= (", select_folded_before!(), ")"));
        }
    }
}

/// Where a purge of `series` stops, to keep what a fold has not taken yet: minutes from
/// `folded_before` on (not in the hours yet) and, where minutes are folded, readings from
/// `minutes_before` on (every reading before it is in the minutes: its batch upserted its
/// minute, or the fold that moved the mark past it, only one that has caught up does, folded
/// it). `None`: nothing to keep. Read on its own before the purge's DELETE, not as a subquery
/// in it: a DELETE's subquery reads `rollup_fold` with a shared lock, which a server may take
/// after the DELETE's own row locks, the other way round from batches and folds (a deadlock).
/// The marks only move forward, so a value read a moment early keeps more, never less.
pub(super) async fn purge_keeps_from(store: &Store, series: Series) -> Result<Option<i64>, StoreError> {
    let mark = match series {
        Series::Minutes => select_folded_before!(),
        Series::Raw if store.folds_minutes() => select_minutes_before!(),
        _ => return Ok(None),
    };
    on_pool!(store, pool => sqlx::query(mark)
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get(0))
        .map(Some)
        .map_err(query_err("reading which rollups are folded")))
}

/// The minutes not folded yet, as rows of hours: `(hour, min, max, sum, count)`.
const UNFOLDED_MINUTES_AS_HOURS: &str = concat!(
    "SELECT minute - minute % 3600000, min, max, sum, count FROM readings_1m WHERE minute >= (",
    select_folded_before!(),
    ") AND sensor_id = "
);

/// `(SELECT hour, min, max, sum, count FROM ...) AS hours`: a sensor's hourly rollups from
/// `lower` (the start of an hour) to before `to`, with the minutes not folded yet.
/// `unfolded` is where the readings not folded into minutes begin (`unfolded_readings_from`).
pub(super) fn push_hours_of_sensor<'a, DB: sqlx::Database>(
    query: &mut QueryBuilder<'a, DB>,
    sensor_id: i64,
    (lower, to): (i64, i64),
    unfolded: Option<(i64, i64)>,
) where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push("(SELECT hour, min, max, sum, count FROM readings_1h WHERE sensor_id = ").push_bind(sensor_id);
    query.push(" AND hour >= ").push_bind(lower).push(" AND hour < ").push_bind(to);
    query.push(" UNION ALL ").push(UNFOLDED_MINUTES_AS_HOURS).push_bind(sensor_id);
    query.push(" AND minute >= ").push_bind(lower).push(" AND minute - minute % 3600000 < ").push_bind(to);
    if let Some((_, since)) = unfolded {
        push_unfolded_readings(query, Series::Hours, sensor_id, since, (lower, to));
    }
    query.push(") AS hours");
}

/// ` UNION ALL SELECT` of the start of the `series` period (minute, hour) of a sensor's oldest
/// reading not folded into minutes yet, for `SELECT MIN(...)` of the oldest row a purge can
/// reach: not the staged readings, which a purge leaves to the fold (and which a query per
/// sensor would scan in full: that table has no index).
pub(super) fn push_oldest_unfolded<'a, DB: sqlx::Database>(query: &mut QueryBuilder<'a, DB>, series: Series, sensor_id: i64, since: i64)
where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let period = series.period_ms();
    for (table, unfolded) in UNFOLDED_READINGS.into_iter().filter(|(table, _)| *table != schema::MYSQL_STAGED_READINGS) {
        query.push(format!(" UNION ALL SELECT MIN(ts) - MIN(ts) % {period} FROM {table} WHERE sensor_id = "));
        query.push_bind(sensor_id).push(" AND ts >= ").push_bind(since).push(unfolded);
    }
}

/// `SELECT` of the start of a sensor's oldest hour, folded or not (with the readings not folded
/// into minutes yet, from `unfolded`: [`unfolded_readings_from`]).
pub(super) fn push_oldest_hour<'a, DB: sqlx::Database>(query: &mut QueryBuilder<'a, DB>, sensor_id: i64, unfolded: Option<(i64, i64)>)
where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push("SELECT MIN(hour) FROM (SELECT MIN(hour) AS hour FROM readings_1h WHERE sensor_id = ").push_bind(sensor_id);
    query.push(concat!(
        " UNION ALL SELECT MIN(minute) - MIN(minute) % 3600000 FROM readings_1m WHERE minute >= (",
        select_folded_before!(),
        ") AND sensor_id = "
    ));
    query.push_bind(sensor_id);
    if let Some((_, since)) = unfolded {
        push_oldest_unfolded(query, Series::Hours, sensor_id, since);
    }
    query.push(") AS oldest");
}

impl Store {
    /// Folds the complete minutes (those before `now`'s) not folded yet into `readings_1h`, at
    /// most ten minutes' worth, in one transaction. Safe to run on several nodes at once.
    pub async fn fold_hours(&self, now: TimestampMs) -> Result<Folded, StoreError> {
        match self.fold_hours_once(now).await {
            // A sensor was deleted while its minutes were folded: on PostgreSQL the fold read
            // them before the deletion committed, and its hour's insert then failed its foreign
            // key. The fold rolled back; again, it finds the minutes gone.
            Err(e) if e.names_a_deleted_sensor() => {
                tracing::debug!("a sensor was deleted during a fold; folding again");
                self.fold_hours_once(now).await
            }
            other => other,
        }
    }

    async fn fold_hours_once(&self, now: TimestampMs) -> Result<Folded, StoreError> {
        let complete = now.0 - now.0.rem_euclid(60_000);
        let dialect = self.dialect();
        let _turn = self.sqlite_write_turn().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_err("starting a fold of minutes into hours"))?;
            // An update first: it waits for the batches that read the row in share mode, and
            // the batches after it wait for this transaction (on SQLite it takes the write lock).
            sqlx::query("UPDATE rollup_fold SET folded_before = folded_before")
                .execute(&mut *tx)
                .await
                .map_err(query_err("locking the fold of minutes into hours"))?;
            let folded_before: i64 = sqlx::query(select_folded_before!())
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(query_err("reading which minutes are folded"))?;
            // The first minute not folded yet: minutes are often missing (nothing was stored
            // while the server was stopped), and the span starts at the next one there is.
            let first: Option<i64> = QueryBuilder::new("SELECT MIN(minute) FROM readings_1m WHERE minute >= ")
                .push_bind(folded_before)
                .build()
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(query_err("finding the minutes to fold"))?;
            // Where minutes are folded from the readings, those from `minutes_before`'s on are
            // not complete in `readings_1m` yet.
            let complete = if folds_minutes(dialect) {
                let minutes_before: i64 = sqlx::query(select_minutes_before!())
                    .fetch_one(&mut *tx)
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(query_err("reading which readings are folded"))?;
                complete.min(minutes_before - minutes_before.rem_euclid(60_000))
            } else {
                complete
            };
            let Some(first) = first.filter(|&first| first < complete) else {
                tx.rollback().await.map_err(query_err("ending a fold with nothing to fold"))?;
                return Ok(Folded { until: None, more: false });
            };
            let until = complete.min(first + FOLD_SPAN_MS);
            // Column names of their own, so that MariaDB's VALUES(min) and SQLite's `min` in
            // the conflict clause name the hour's columns; `WHERE true` keeps SQLite from
            // reading ON CONFLICT as a join's ON.
            let mut fold = QueryBuilder::new(insert_rollups(Series::Hours));
            fold.push(
                "SELECT * FROM (SELECT sensor_id AS folded_sensor, minute - minute % 3600000 AS folded_hour, \
                 MIN(min) AS folded_min, MAX(max) AS folded_max, SUM(sum) AS folded_sum, SUM(count) AS folded_count \
                 FROM readings_1m WHERE minute >= ",
            )
            .push_bind(folded_before)
            .push(" AND minute < ")
            .push_bind(until)
            .push(" GROUP BY folded_sensor, folded_hour) AS folded WHERE true")
            .push(upsert_rollups_suffix(dialect, Series::Hours));
            fold.build().execute(&mut *tx).await.map_err(query_err("folding minutes into hours"))?;
            QueryBuilder::new("UPDATE rollup_fold SET folded_before = ")
                .push_bind(until)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("recording which minutes are folded"))?;
            tx.commit().await.map_err(query_err("committing a fold of minutes into hours"))?;
            Ok(Folded { until: Some(TimestampMs(until)), more: until < complete })
        })
    }
}

impl Store {
    /// Whether this database's per-minute rollups are folded from the readings
    /// ([`Store::fold_minutes`]).
    pub fn folds_minutes(&self) -> bool {
        folds_minutes(self.dialect())
    }

    /// Folds the readings stored since the last fold into `readings_1m`, at most
    /// [`FOLD_READINGS`] of them in `readings` and, once those are all folded, as many staged
    /// ones, where minutes are folded (MariaDB/MySQL; elsewhere it does nothing), holding the
    /// folds' row only to find them and to record them ([`fold_into_minutes`]); once it has
    /// caught up it moves `minutes_before` to a second before `now`. Then, in transactions of
    /// their own, it moves the staged readings that are folded into `readings`,
    /// [`MOVE_READINGS`] at a time
    /// ([`move_folded_staged`]); a move that fails is logged and tried again after the next
    /// fold (the fold is done, and what is not moved counts where it is). Safe to run on
    /// several nodes at once.
    pub async fn fold_minutes(&self, now: TimestampMs) -> Result<Folded, StoreError> {
        // Only MariaDB/MySQL fold their minutes (`folds_minutes`).
        let Pool::MySql(pool) = &self.pool else {
            return Ok(Folded { until: None, more: false });
        };
        let folded = fold_into_minutes(pool, self.dialect(), now).await?;
        if let Err(e) = move_folded_staged(pool).await {
            tracing::warn!(error = %e, "moving staged readings into the indexed table failed; trying again after the next fold");
        }
        Ok(folded)
    }
}

/// The marks of the fold of readings into minutes, as the folds' row holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MinuteMarks {
    /// `minutes_through`: the last id of `readings` folded (or skipped, after a move).
    through: i64,
    /// `staged_through`: the last id of the staged table folded.
    staged_through: i64,
    /// `minutes_before`: readings older than this have their minutes upserted by their batch.
    before: i64,
}

/// What one fold takes: the ids `(after, until]` of `readings` and of the staged table, and
/// whether that is every committed reading after the marks.
#[derive(Debug, Clone, Copy)]
struct FoldSpans {
    readings: (i64, i64),
    staged: (i64, i64),
    caught_up: bool,
}

impl FoldSpans {
    fn is_empty(&self) -> bool {
        self.readings.0 == self.readings.1 && self.staged.0 == self.staged.1
    }

    /// Each table with whether its readings are joined to their sensors ([`FOLDED_OF_SENSORS`])
    /// and its span.
    fn tables(&self) -> [(&'static str, bool, (i64, i64)); 2] {
        [("readings", false, self.readings), (schema::MYSQL_STAGED_READINGS, true, self.staged)]
    }
}

/// The fold of [`Store::fold_minutes`], in three steps, so that batches wait only for the
/// last. (1) A moment's lock of the folds' row: once the lock is taken, every batch before it
/// has committed, so the readings up to the largest ids are all there; the spans after the
/// marks are noted. (2) Those spans rolled up per sensor and minute, without the row: batches
/// go on. (3) The row locked again: if the marks are still those of step 1 (another node's fold
/// would have moved them, its minutes holding the same readings, or another node's move, see
/// [`skip_moved_readings`]), the rollups are upserted, the readings committed since step 1
/// (their batches read the same `minutes_before`) are folded in place, and the marks move, in
/// one transaction. At 10,000 boards (BENCHMARKS.md part 12, 1 GiB buffer pool), folds done in
/// one transaction held the row 0.23–0.24 s on average (up to 0.47 s), in three steps
/// 0.19–0.27 s (up to 0.55 s): the upsert of the minutes is most of a fold. What the steps buy
/// is that a slow roll-up (one took 21 s once, in one transaction) does not hold the batches.
async fn fold_into_minutes(pool: &sqlx::MySqlPool, dialect: Dialect, now: TimestampMs) -> Result<Folded, StoreError> {
    match fold_into_minutes_once(pool, dialect, now).await {
        // A sensor was deleted after step 2 read its readings: its minutes fail their foreign
        // key. Again: step 2 finds its readings gone.
        Err(e) if e.names_a_deleted_sensor() => {
            tracing::debug!("a sensor was deleted during a fold of readings; folding again");
            fold_into_minutes_once(pool, dialect, now).await
        }
        other => other,
    }
}

async fn fold_into_minutes_once(pool: &sqlx::MySqlPool, dialect: Dialect, now: TimestampMs) -> Result<Folded, StoreError> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await.map_err(query_err("starting a fold of readings into minutes"))?;
    let marks = lock_minute_marks(&mut tx).await?;
    let spans = spans_after(&mut tx, (marks.through, marks.staged_through)).await?;
    // Where step 1 found readings to fold: steps 2 and 3, and then the readings committed since
    // (their batches read this `minutes_before`, and none is in progress now) folded in place.
    let mut held_since = started;
    let (mut tx, meanwhile) = if spans.is_empty() {
        (tx, spans)
    } else {
        tx.commit().await.map_err(query_err("ending the first look at the readings to fold"))?;
        let rolled_up = roll_up_spans(pool, &spans, marks.before).await?;
        held_since = std::time::Instant::now();
        let mut tx = pool.begin().await.map_err(query_err("starting a fold of readings into minutes"))?;
        let marks_now = lock_minute_marks(&mut tx).await?;
        if marks_now != marks {
            tx.rollback().await.map_err(query_err("ending a fold another one overtook"))?;
            return Ok(Folded { until: Some(TimestampMs(marks_now.before)), more: true });
        }
        for chunk in rolled_up.chunks(super::batch::CHUNK) {
            upsert_rollups(dialect, Series::Minutes, chunk)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("upserting folded minutes"))?;
        }
        let from = (spans.readings.1, spans.staged.1);
        let meanwhile = match spans.caught_up {
            true => spans_after(&mut tx, from).await?,
            false => FoldSpans { readings: (from.0, from.0), staged: (from.1, from.1), caught_up: false },
        };
        for (table, of_sensors, span) in meanwhile.tables() {
            if span.1 > span.0 {
                let mut fold = QueryBuilder::new(insert_rollups(Series::Minutes));
                push_rollup_of_span(&mut fold, table, of_sensors, span, marks.before);
                fold.push(upsert_rollups_suffix(dialect, Series::Minutes));
                fold.build().execute(&mut *tx).await.map_err(query_err("folding readings into minutes"))?;
            }
        }
        // The sensors' latest values from the staged readings this fold takes, before the mark
        // passes them (a fleet's batches leave them to the fold).
        let staged = (marks.staged_through, meanwhile.staged.1);
        if staged.1 > staged.0 {
            let (head, tail) = update_latest_sql(dialect);
            let mut update = QueryBuilder::new(head);
            push_newest_staged(&mut update, |query| {
                query.push("id > ").push_bind(staged.0).push(" AND id <= ").push_bind(staged.1);
            });
            update.push(tail);
            update.build().execute(&mut *tx).await.map_err(query_err("setting the sensors' latest values from staged readings"))?;
        }
        (tx, meanwhile)
    };
    // `minutes_before` moves only once every reading is folded: those left would count neither
    // in the minutes nor as readings not folded.
    let caught_up = spans.caught_up && meanwhile.caught_up;
    let moved_before = if caught_up { marks.before.max(now.0 - MINUTES_LAG_MS) } else { marks.before };
    QueryBuilder::new("UPDATE rollup_fold SET minutes_through = ")
        .push_bind(meanwhile.readings.1)
        .push(", staged_through = ")
        .push_bind(meanwhile.staged.1)
        .push(", minutes_before = ")
        .push_bind(moved_before)
        .build()
        .execute(&mut *tx)
        .await
        .map_err(query_err("recording which readings are folded"))?;
    tx.commit().await.map_err(query_err("committing a fold of readings into minutes"))?;
    tracing::debug!(
        readings_ids = meanwhile.readings.1 - marks.through,
        staged_ids = meanwhile.staged.1 - marks.staged_through,
        took_ms = started.elapsed().as_millis() as u64,
        held_ms = held_since.elapsed().as_millis() as u64,
        "folded readings into minutes (held_ms: the last step, from the wait for the folds' row to the commit)"
    );
    Ok(Folded { until: Some(TimestampMs(moved_before)), more: !caught_up })
}

/// `SELECT` of the newest staged reading of each sensor among those `push_condition` selects
/// (a `WHERE` condition on `readings_staged`), by time and then by arrival, as rows `(id, ts,
/// value)` (`id` the sensor's). A fleet's staged batches do not set their sensors' latest
/// values: the minute fold sets them from the readings it folds, and readers take the newest of
/// those not folded yet (`queries::select_sensors`).
pub(super) fn push_newest_staged<'a, DB: sqlx::Database>(
    query: &mut QueryBuilder<'a, DB>,
    push_condition: impl FnOnce(&mut QueryBuilder<'a, DB>),
) {
    query.push(
        "SELECT sensor_id AS id, ts, value FROM (SELECT sensor_id, ts, value, \
         ROW_NUMBER() OVER (PARTITION BY sensor_id ORDER BY ts DESC, id DESC) AS newness FROM readings_staged WHERE ",
    );
    push_condition(query);
    query.push(") AS staged WHERE newness = 1");
}

/// Locks the folds' row and reads the fold's marks. An update first: it waits for the batches
/// that read the row in share mode (so every reading id up to the largest is committed), and
/// the batches after it wait for this transaction.
async fn lock_minute_marks(tx: &mut sqlx::Transaction<'_, sqlx::MySql>) -> Result<MinuteMarks, StoreError> {
    sqlx::query("UPDATE rollup_fold SET minutes_through = minutes_through")
        .execute(&mut **tx)
        .await
        .map_err(query_err("locking the fold of readings into minutes"))?;
    sqlx::query("SELECT minutes_through, staged_through, minutes_before FROM rollup_fold")
        .fetch_one(&mut **tx)
        .await
        .and_then(|row| Ok(MinuteMarks { through: row.try_get(0)?, staged_through: row.try_get(1)?, before: row.try_get(2)? }))
        .map_err(query_err("finding the readings to fold"))
}

/// The spans of committed readings after `(through, staged_through)`, with the folds' row
/// locked: at most [`FOLD_READINGS`] ids of `readings`, then, once those are all taken, as many
/// staged ones from the first after the mark (the staged table's ids go on from readings moved
/// long ago: after schema migration 18 the mark starts at 0).
async fn spans_after(tx: &mut sqlx::Transaction<'_, sqlx::MySql>, (through, staged_through): (i64, i64)) -> Result<FoldSpans, StoreError> {
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(id) FROM readings").fetch_one(&mut **tx).await.map_err(query_err("finding the readings to fold"))?;
    let newest = newest.unwrap_or(through).max(through);
    let until = newest.min(through.saturating_add(FOLD_READINGS));
    let mut spans = FoldSpans { readings: (through, until), staged: (staged_through, staged_through), caught_up: until == newest };
    if spans.caught_up {
        let (first, last): (Option<i64>, Option<i64>) =
            QueryBuilder::new(format!("SELECT MIN(id), MAX(id) FROM {} WHERE id > ", schema::MYSQL_STAGED_READINGS))
                .push_bind(staged_through)
                .build()
                .fetch_one(&mut **tx)
                .await
                .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .map_err(query_err("finding the staged readings"))?;
        if let (Some(first), Some(last)) = (first, last) {
            let staged_until = last.min((first - 1).saturating_add(FOLD_READINGS));
            spans.staged = (staged_through, staged_until);
            spans.caught_up = staged_until == last;
        }
    }
    Ok(spans)
}

/// Step 2 of a fold: the readings of `spans` from `before` on, rolled up per sensor and minute
/// (plain reads, each of what is committed when it starts).
async fn roll_up_spans(pool: &sqlx::MySqlPool, spans: &FoldSpans, before: i64) -> Result<Vec<((i64, i64), Rollup)>, StoreError> {
    let mut rolled_up = Vec::new();
    for (table, of_sensors, span) in spans.tables() {
        if span.1 > span.0 {
            let mut query = QueryBuilder::new("");
            push_rollup_of_span(&mut query, table, of_sensors, span, before);
            let rows = query.build().fetch_all(pool).await.map_err(query_err("rolling up readings to fold"))?;
            for row in rows {
                let minute = (|| {
                    let rollup = Rollup { min: row.try_get(2)?, max: row.try_get(3)?, sum: row.try_get(4)?, count: row.try_get(5)? };
                    Ok(((row.try_get(0)?, row.try_get(1)?), rollup))
                })();
                rolled_up.push(minute.map_err(query_err("reading rolled up readings"))?);
            }
        }
    }
    Ok(rolled_up)
}

/// `SELECT` of the rollups per sensor and minute of the readings of `table` with ids in
/// `(after, until]` and times from `before` on, only those of sensors there are if
/// `of_sensors` ([`FOLDED_OF_SENSORS`]). Its columns have names of their own, so that MariaDB's
/// `VALUES(min)` in an upsert from it names the minute's columns.
fn push_rollup_of_span(query: &mut QueryBuilder<'_, sqlx::MySql>, table: &str, of_sensors: bool, (after, until): (i64, i64), before: i64) {
    query
        .push(format!(
            "SELECT folded.* FROM (SELECT sensor_id AS folded_sensor, ts - ts % 60000 AS folded_minute, \
             MIN(value) AS folded_min, MAX(value) AS folded_max, SUM(value) AS folded_sum, COUNT(*) AS folded_count \
             FROM {table} WHERE id > "
        ))
        .push_bind(after)
        .push(" AND id <= ")
        .push_bind(until)
        .push(" AND ts >= ")
        .push_bind(before)
        .push(" GROUP BY folded_sensor, folded_minute) AS folded");
    if of_sensors {
        query.push(FOLDED_OF_SENSORS);
    }
}

/// Only readings of sensors there are: a batch makes sure of its sensors (its latest-value
/// update, or a staged batch's check in share mode, finds them all), but a sensor deleted by
/// hand with its `readings` and not its staged ones would fail the foreign keys of
/// `readings_1m`, and every fold after it; a move (which does not check `readings`' foreign
/// key) would leave readings of no sensor. A join in this order, the staged readings' span
/// first and each one's sensor by its key: as `sensor_id IN (SELECT id FROM sensors)`, MariaDB
/// planned it sensors first when its statistics still held the staged table empty, and read
/// the whole span again for every sensor (a fold of 20,000 staged readings of 10,000 sensors
/// took 56 s, holding the folds' row, and batches failed their lock wait).
const OF_SENSORS: &str = " STRAIGHT_JOIN sensors ON sensors.id = readings_staged.sensor_id";

/// [`OF_SENSORS`] for a fold: the sensors of its minutes, looked up once per sensor and minute
/// rather than once per reading (on an idle server, 44,703 staged readings of 10,000 sensors
/// grouped in 48 ms this way, 87 ms with a lookup per reading).
const FOLDED_OF_SENSORS: &str = " STRAIGHT_JOIN sensors ON sensors.id = folded.folded_sensor";

/// Moves the staged readings that are folded into minutes (ids up to `staged_through`) and
/// older than `minutes_before` into `readings`, at most [`MOVE_READINGS`] ids in each
/// transaction ([`move_staged_span`]); those from `minutes_before` on stay for a later move:
/// in `readings` they would count as readings not folded yet unless their ids were below
/// `minutes_through`.
///
/// Staged batches do not wait for it but for a moment after each span. (Batches of several
/// readings per sensor, which insert into `readings` themselves, wait for each of its
/// `INSERT … SELECT`s where InnoDB's `innodb_autoinc_lock_mode` is 0 or 1 (MariaDB's default):
/// such a statement holds the table's AUTO-INC lock to its end. So does a sensor's deletion,
/// which holds the folds' row while it waits for the readings the move holds, and the batches
/// after it wait for it.) It reads the folds' row without locking it (the marks only move
/// forward, so values read a moment early move fewer readings, never wrong ones), and locks it
/// for a moment after each span ([`skip_moved_readings`]). It runs on a connection of its own,
/// closed after it, in READ COMMITTED (no gap locks on the staged table,
/// which batches append to) and without foreign key checks (they would hold every moved
/// sensor's row in share mode until the commit, and each batch's latest-value update, or a
/// staged batch's check of its sensors, would wait for the move); the readings it moves are of
/// sensors there are ([`OF_SENSORS`]), and a sensor's deletion deletes the staged readings
/// before the indexed ones, so that it waits for a move holding its staged readings and then
/// deletes what that moved.
async fn move_folded_staged(pool: &sqlx::MySqlPool) -> Result<(), StoreError> {
    let (before, staged_through): (i64, i64) = sqlx::query("SELECT minutes_before, staged_through FROM rollup_fold")
        .fetch_one(pool)
        .await
        .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .map_err(query_err("reading which staged readings are folded"))?;
    // Most folds find no span due: the connection of its own only for a move.
    let Some(mut span) = staged_span_due(pool, staged_through, before).await? else { return Ok(()) };
    let mut conn = pool.acquire().await.map_err(query_err("taking a connection to move staged readings"))?.detach();
    for setting in ["SET SESSION foreign_key_checks = 0", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"] {
        sqlx::query(setting).execute(&mut conn).await.map_err(query_err("setting up a move of staged readings"))?;
    }
    // The jump past moved readings saves the next fold reading them; it is not needed for
    // anything to be right, so a failure of it is logged and the moves go on.
    let ids_step = consecutive_ids_step(&mut conn).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "moved readings will be read by the next fold");
        None
    });
    loop {
        let moved = move_staged_span(&mut conn, span, before).await?;
        if let (Some(step), Some((first, count))) = (ids_step, moved) {
            if let Err(e) = skip_moved_readings(&mut conn, (first, first + (count - 1) * step)).await {
                tracing::warn!(error = %e, "moved readings will be read by the next fold");
            }
        }
        if span.1 >= staged_through {
            break;
        }
        match staged_span_due(&mut conn, staged_through, before).await? {
            Some(next) => span = next,
            None => break,
        }
    }
    sqlx::Connection::close(conn).await.map_err(query_err("closing the connection of a move of staged readings"))
}

/// The next span of staged readings due to move, `(first id, last id)`: from the first one
/// with an id up to `staged_through` and a time before `before`, at most [`MOVE_READINGS`] ids,
/// once it is full or its first reading is [`MOVE_PARTIAL_AFTER_MS`] old. (From the first that
/// can move: readings stamped ahead of the clock, a board's own `ts`, may wait in the staged
/// table for long, and the span starts after them.)
async fn staged_span_due<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::MySql>,
    staged_through: i64,
    before: i64,
) -> Result<Option<(i64, i64)>, StoreError> {
    let first: Option<(i64, i64)> = QueryBuilder::new(format!("SELECT id, ts FROM {} WHERE id <= ", schema::MYSQL_STAGED_READINGS))
        .push_bind(staged_through)
        .push(" AND ts < ")
        .push_bind(before)
        .push(" ORDER BY id LIMIT 1")
        .build()
        .fetch_optional(executor)
        .await
        .and_then(|row| row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).transpose())
        .map_err(query_err("finding the staged readings to move"))?;
    let Some((first, first_ts)) = first else { return Ok(None) };
    let until = staged_through.min((first - 1).saturating_add(MOVE_READINGS));
    // Not a full span yet, and not old: a later move takes more readings per sensor.
    let due = until - first + 1 >= MOVE_READINGS || first_ts < before - MOVE_PARTIAL_AFTER_MS;
    Ok(due.then_some((first, until)))
}

/// The step between the ids of the readings one `INSERT … SELECT` inserts, where they are
/// consecutive (`innodb_autoinc_lock_mode` 0 or 1: the statement holds the table's AUTO-INC
/// lock to its end, so no batch's reading takes an id among them); `None` where they may
/// interleave with a batch's (mode 2, MySQL 8's default).
async fn consecutive_ids_step(conn: &mut sqlx::MySqlConnection) -> Result<Option<i64>, StoreError> {
    let (mode, step): (i64, i64) =
        sqlx::query("SELECT CAST(@@innodb_autoinc_lock_mode AS SIGNED), CAST(@@auto_increment_increment AS SIGNED)")
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .map_err(query_err("reading how the server numbers inserted rows"))?;
    Ok((mode <= 1).then_some(step))
}

/// After a move whose readings took the ids `first..=last` of `readings`: where the fold has
/// folded every reading before them, `minutes_through` jumps past them, so that the next fold
/// does not read them again (they are all older than `minutes_before`, and a fold would take
/// none of them: at 10,000 boards its scan of a move's 200,000 readings took 60–235 ms, holding
/// the folds' row). Where it has not, the fold reads them as before. "Before them" is the last
/// reading below `first` there is (ids an insert reserved and did not use are never taken), read
/// once the folds' row is locked: every batch that took an id below `first` has committed by
/// then, and this session reads what is committed (READ COMMITTED). The lock waits for the
/// batch in progress, and the next batch for it (milliseconds).
async fn skip_moved_readings(conn: &mut sqlx::MySqlConnection, (first, last): (i64, i64)) -> Result<(), StoreError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(query_err("starting to skip moved readings"))?;
    let through = lock_minute_marks(&mut tx).await?.through;
    let before_them: Option<i64> = QueryBuilder::new("SELECT MAX(id) FROM readings WHERE id < ")
        .push_bind(first)
        .build_query_scalar()
        .fetch_one(&mut *tx)
        .await
        .map_err(query_err("finding the reading before the moved ones"))?;
    if through >= before_them.unwrap_or(0) && through < last {
        QueryBuilder::new("UPDATE rollup_fold SET minutes_through = ")
            .push_bind(last)
            .build()
            .execute(&mut *tx)
            .await
            .map_err(query_err("recording that moved readings need no fold"))?;
    }
    tx.commit().await.map_err(query_err("committing that moved readings need no fold"))
}

/// One transaction of [`move_folded_staged`]: the staged readings of the span `(first, until)`
/// (ids) with times before `before`, moved into `readings` in (sensor, time) order, so that
/// each sensor's page of the `(sensor_id, ts)` index is written once for all of them, and
/// deleted from the staged table. Its first statement locks the readings it moves, so that
/// moves on two nodes do not move the same ones twice. Returns the first id the moved readings
/// took in `readings` and how many moved, if any did.
async fn move_staged_span(
    conn: &mut sqlx::MySqlConnection,
    (first, until): (i64, i64),
    before: i64,
) -> Result<Option<(i64, i64)>, StoreError> {
    let staged = schema::MYSQL_STAGED_READINGS;
    let movable = |query: &str| {
        let mut query = QueryBuilder::<sqlx::MySql>::new(query);
        query.push(format!(" WHERE {staged}.id >= ")).push_bind(first).push(format!(" AND {staged}.id <= ")).push_bind(until);
        query.push(" AND ts < ").push_bind(before);
        query
    };
    let started = std::time::Instant::now();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(query_err("starting a move of staged readings"))?;
    movable(&format!("SELECT COUNT(*) FROM {staged}"))
        .push(" FOR UPDATE")
        .build()
        .fetch_one(&mut *tx)
        .await
        .map_err(query_err("locking the staged readings to move"))?;
    // In key order; readings of one sensor and one millisecond in the order they came.
    let inserted = movable(&format!("INSERT INTO readings (sensor_id, ts, value) SELECT sensor_id, ts, value FROM {staged}{OF_SENSORS}"))
        .push(format!(" ORDER BY sensor_id, ts, {staged}.id"))
        .build()
        .execute(&mut *tx)
        .await
        .map_err(query_err("moving staged readings into the indexed table"))?;
    // The id of the first row a multi-row insert inserted.
    let (moved, first_moved_id) = (inserted.rows_affected(), inserted.last_insert_id() as i64);
    let deleted = movable(&format!("DELETE FROM {staged}"))
        .build()
        .execute(&mut *tx)
        .await
        .map_err(query_err("deleting moved readings from the staged table"))?
        .rows_affected();
    tx.commit().await.map_err(query_err("committing a move of staged readings"))?;
    tracing::debug!(moved, took_ms = started.elapsed().as_millis() as u64, "moved staged readings into the indexed table");
    if deleted > moved {
        tracing::warn!(dropped = deleted - moved, "staged readings of sensors that are gone (deleted by hand?) were dropped");
    }
    Ok((moved > 0).then_some((first_moved_id, moved as i64)))
}
