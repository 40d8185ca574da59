//! Hourly rollups folded from the per-minute ones (schema migration 15). A batch writes each
//! reading, its minute's rollup and its sensor's latest value; the hours of the minutes that
//! are complete are folded into `readings_1h` about once a minute (`lifecycle::fold`), a few
//! thousand rows in one statement, instead of an upsert of an hour for every reading.
//!
//! `rollup_fold.folded_before` (a minute's start) splits the minutes: those before it are in
//! `readings_1h`, those from it on are not yet. A batch reads it first and upserts the hours of
//! its readings before it (late ones: a backfill, an import) itself. On PostgreSQL and MariaDB
//! it reads the row in share mode, and a fold begins by updating the row: so a fold waits for
//! the batches that read the old value to commit (and then sees their minutes), and the batches
//! after it wait for the fold and read the new value; several nodes on one database fold in
//! turn. On SQLite the write lock orders them. Reads of hourly rollups add the minutes not
//! folded yet, each in its hour, so a chart does not wait for the fold.

use super::batch::{insert_rollups, upsert_rollups_suffix, IdReading};
use super::{query_err, Dialect, Pool, Series, Store, StoreError};
use crate::model::TimestampMs;
use sqlx::{QueryBuilder, Row};

/// The most minutes one fold takes, so that catching up after a backfill of days is many short
/// transactions between batches rather than one long one.
const FOLD_SPAN_MS: i64 = 10 * 60_000;

/// What one fold did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// Minutes it folded, up to this one (exclusive); `None`: no complete minute was waiting.
    pub until: Option<TimestampMs>,
    /// Complete minutes may be left (a fold takes at most ten minutes' worth).
    pub more: bool,
}

/// The first minute not folded yet, as a statement or (in parentheses) a subquery.
macro_rules! select_folded_before {
    () => {
        "SELECT folded_before FROM rollup_fold"
    };
}

/// A batch's first read in its transaction: which minutes are folded already (see the module).
pub(super) fn select_folded_before(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => concat!(select_folded_before!(), " FOR SHARE"),
        Dialect::MySql => concat!(select_folded_before!(), " LOCK IN SHARE MODE"),
        Dialect::Sqlite => select_folded_before!(),
    }
}

/// The readings whose hours a batch upserts itself: those of minutes folded already.
pub(super) fn late_readings(readings: &[IdReading], folded_before: i64) -> Vec<IdReading> {
    readings.iter().filter(|&&(_, ts, _)| ts < folded_before).copied().collect()
}

/// The minutes not folded yet, as rows of hours: `(hour, min, max, sum, count)`.
const UNFOLDED_MINUTES_AS_HOURS: &str = concat!(
    "SELECT minute - minute % 3600000, min, max, sum, count FROM readings_1m WHERE minute >= (",
    select_folded_before!(),
    ") AND sensor_id = "
);

/// `(SELECT hour, min, max, sum, count FROM ...) AS hours`: a sensor's hourly rollups from
/// `lower` (the start of an hour) to before `to`, with the minutes not folded yet.
pub(super) fn push_hours_of_sensor<'a, DB: sqlx::Database>(query: &mut QueryBuilder<'a, DB>, sensor_id: i64, lower: i64, to: i64)
where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push("(SELECT hour, min, max, sum, count FROM readings_1h WHERE sensor_id = ").push_bind(sensor_id);
    query.push(" AND hour >= ").push_bind(lower).push(" AND hour < ").push_bind(to);
    query.push(" UNION ALL ").push(UNFOLDED_MINUTES_AS_HOURS).push_bind(sensor_id);
    query.push(" AND minute >= ").push_bind(lower).push(" AND minute - minute % 3600000 < ").push_bind(to);
    query.push(") AS hours");
}

/// `SELECT` of the start of a sensor's oldest hour, folded or not.
pub(super) fn push_oldest_hour<'a, DB: sqlx::Database>(query: &mut QueryBuilder<'a, DB>, sensor_id: i64)
where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push("SELECT MIN(hour) FROM (SELECT MIN(hour) AS hour FROM readings_1h WHERE sensor_id = ").push_bind(sensor_id);
    query.push(concat!(
        " UNION ALL SELECT MIN(minute) - MIN(minute) % 3600000 FROM readings_1m WHERE minute >= (",
        select_folded_before!(),
        ") AND sensor_id = "
    ));
    query.push_bind(sensor_id).push(") AS oldest");
}

/// The condition a purge of minutes adds: minutes not folded yet are kept.
pub(super) const FOLDED_MINUTES_ONLY: &str = concat!(" AND minute < (", select_folded_before!(), ")");

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
