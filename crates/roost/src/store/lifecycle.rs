//! The data lifecycle's SQL: a sensor's own settings (name, unit, hidden, retention), deleting a
//! sensor with its data, purging old rows in small chunks, the oldest row kept, the database's
//! size, and SQLite's incremental vacuum.

use super::{query_err, schema, Dialect, Pool, Store, StoreError};
use crate::model::{Keep, SensorKey, TimestampMs};
use sqlx::{QueryBuilder, Row};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The tables of a sensor's history, finest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// Every reading (`readings`).
    Raw,
    /// Per-minute min/max/sum/count (`readings_1m`).
    Minutes,
    /// Hourly min/max/sum/count (`readings_1h`).
    Hours,
}

impl Series {
    pub const ALL: [Self; 3] = [Self::Raw, Self::Minutes, Self::Hours];

    pub(super) fn table(self) -> &'static str {
        match self {
            Self::Raw => "readings",
            Self::Minutes => "readings_1m",
            Self::Hours => "readings_1h",
        }
    }

    /// What reads the series' rows: on MariaDB/MySQL, raw readings through `readings_all`, the
    /// view of `readings` and the staged ones (schema migration 17).
    pub(super) fn source(self, dialect: Dialect) -> &'static str {
        match (self, dialect) {
            (Self::Raw, Dialect::MySql) => schema::MYSQL_ALL_READINGS,
            _ => self.table(),
        }
    }

    /// The tables that hold the series' rows, for deleting them: on SQLite, raw readings are
    /// in two tables behind the `readings` view (schema migration 12); on MariaDB/MySQL, in
    /// `readings` and the staged ones (schema migration 17).
    pub(super) fn tables(self, dialect: Dialect) -> &'static [&'static str] {
        match (self, dialect) {
            (Self::Raw, Dialect::Sqlite) => &[schema::SQLITE_STAGED_READINGS, schema::SQLITE_INDEXED_READINGS],
            (Self::Raw, Dialect::MySql) => &[schema::MYSQL_STAGED_READINGS, "readings"],
            (Self::Raw, Dialect::Postgres) => &["readings"],
            (Self::Minutes, _) => &["readings_1m"],
            (Self::Hours, _) => &["readings_1h"],
        }
    }

    /// The time column: a reading's time, or the start of the rollup's period.
    pub(super) fn period_column(self) -> &'static str {
        match self {
            Self::Raw => "ts",
            Self::Minutes => "minute",
            Self::Hours => "hour",
        }
    }

    /// How long one row covers, in ms (a raw reading: its millisecond).
    pub fn period_ms(self) -> i64 {
        match self {
            Self::Raw => 1,
            Self::Minutes => 60_000,
            Self::Hours => 3_600_000,
        }
    }
}

/// What people choose about a sensor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SensorSettings {
    /// The dashboard's name for it (its key otherwise).
    pub display_name: Option<String>,
    /// Its unit (the category's otherwise).
    pub unit: Option<String>,
    /// Left out of the dashboard's overview (still stored).
    pub hidden: bool,
    /// Its own retention of raw readings (the rules otherwise).
    pub retention: Option<Keep>,
}

/// A change to [`SensorSettings`]: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SensorChange {
    pub display_name: Option<Option<String>>,
    pub unit: Option<Option<String>>,
    pub hidden: Option<bool>,
    pub retention: Option<Option<Keep>>,
}

impl SensorChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The database's size and contents, as `/metrics` and the dashboard show them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatabaseSize {
    /// Bytes the database takes (SQLite: the file and its write-ahead log; PostgreSQL: the
    /// database; MariaDB: the tables' data and indexes).
    pub bytes: u64,
    /// Of which free pages waiting for reuse or vacuum (SQLite only).
    pub free_bytes: Option<u64>,
    /// Rows per table.
    pub rows: Vec<(&'static str, i64)>,
    /// The oldest raw reading kept.
    pub oldest_reading_ms: Option<i64>,
}

/// The tables whose rows are counted.
const COUNTED: [&str; 5] = ["sensors", "readings", "readings_1m", "readings_1h", "rejects"];

impl Store {
    /// Changes a sensor's settings; false if there is no such sensor.
    pub async fn update_sensor(&self, sensor_id: i64, change: &SensorChange) -> Result<bool, StoreError> {
        if change.is_empty() {
            return self.row_exists("sensors", sensor_id, "looking up a sensor").await;
        }
        on_pool!(self, pool => {
            let mut update = QueryBuilder::new("UPDATE sensors SET ");
            let mut set = update.separated(", ");
            if let Some(name) = &change.display_name {
                set.push("display_name = ").push_bind_unseparated(name.clone());
            }
            if let Some(unit) = &change.unit {
                set.push("unit = ").push_bind_unseparated(unit.clone());
            }
            if let Some(hidden) = change.hidden {
                set.push("hidden = ").push_bind_unseparated(i16::from(hidden));
            }
            if let Some(retention) = change.retention {
                set.push("retention_ms = ").push_bind_unseparated(retention.map(Keep::as_ms));
            }
            update.push(" WHERE id = ").push_bind(sensor_id);
            let done = update.build().execute(pool).await.map_err(query_err("changing a sensor"))?;
            // MariaDB counts changed rows, not matched ones: a change to the same values is 0.
            if done.rows_affected() > 0 {
                return Ok(true);
            }
        });
        self.row_exists("sensors", sensor_id, "looking up a sensor").await
    }

    /// Whether `table` (one of ours, never user input) has a row of `id`: after an UPDATE that
    /// MariaDB counts as 0 rows when nothing changed.
    pub(super) async fn row_exists(&self, table: &'static str, id: i64, doing: &'static str) -> Result<bool, StoreError> {
        on_pool!(self, pool => QueryBuilder::new(format!("SELECT 1 FROM {table} WHERE id = "))
            .push_bind(id)
            .build()
            .fetch_optional(pool)
            .await
            .map(|row| row.is_some())
            .map_err(query_err(doing)))
    }

    /// Deletes a sensor with all its readings and rollups. Its readings go first in chunks (a
    /// sensor of years holds millions: one transaction would hold the write lock that long),
    /// then what is left and the sensor itself in one transaction. Readings that arrive for it
    /// afterwards create it anew (the ingest writer's id cache forgets it here, and a batch
    /// planned before that is planned again).
    pub async fn delete_sensor(&self, sensor: &SensorKey, sensor_id: i64) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let never = CancellationToken::new();
        for series in Series::ALL {
            deleted += in_chunks(Duration::ZERO, &never, || self.purge_chunk(series, sensor_id, TimestampMs::MAX, PURGE_CHUNK)).await?;
        }
        let turn = self.sqlite_write_turn().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_err("starting a transaction"))?;
            // The folds' row locked first, exclusively (SQLite: the write turn does that): every
            // batch reads it in share mode first in its transaction, and a fold updates it
            // first, so batches and folds wait for this deletion and it for them. A batch
            // planned before it then finds the sensor gone (a foreign key fails; PostgreSQL's
            // readings have none, and its update of the sensor's latest value finds no row, as
            // a MariaDB staged batch's share-mode check of its sensors does) and
            // is planned again (`Store::write`); one that committed first has its readings
            // deleted here with the rest. With the row only in share mode, a batch and this
            // deletion interleaved on MariaDB and deadlocked: this held the sensor's row, the
            // batch's foreign key check waited for it, and this then waited for the batch's
            // readings (or, in the batch's second attempt, for its lock on the sensor's key).
            // And a fold could read the sensor's readings with shared locks (MariaDB's
            // INSERT … SELECT) and then wait for the sensor's row for its rollup's foreign key.
            if self.dialect() != Dialect::Sqlite {
                sqlx::query(super::fold::LOCK_FOLDS)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_err("waiting for batches and folds in progress"))?;
                QueryBuilder::new("SELECT id FROM sensors WHERE id = ")
                    .push_bind(sensor_id)
                    .push(" FOR UPDATE")
                    .build()
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_err("locking a sensor"))?;
            }
            for table in Series::ALL.iter().flat_map(|series| series.tables(self.dialect())) {
                let done = QueryBuilder::new(format!("DELETE FROM {table} WHERE sensor_id = "))
                    .push_bind(sensor_id)
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("deleting a sensor's readings"))?;
                deleted += done.rows_affected();
            }
            // Its alerts are over (their history stays).
            QueryBuilder::new("DELETE FROM alert_states WHERE owner = ")
                .push_bind(sensor.owner.as_str())
                .push(" AND place = ")
                .push_bind(sensor.place.as_str())
                .push(" AND category = ")
                .push_bind(sensor.category.as_str())
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("deleting a sensor's alerts"))?;
            QueryBuilder::new("DELETE FROM sensors WHERE id = ")
                .push_bind(sensor_id)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("deleting a sensor"))?;
            tx.commit().await.map_err(query_err("committing the deletion"))?;
        });
        drop(turn);
        self.sensor_ids.lock().unwrap_or_else(|e| e.into_inner()).remove(sensor);
        Ok(deleted)
    }

    /// Deletes at most `limit` rows of a sensor's `series` that end at or before `before` (a
    /// rollup row only once its whole period is older); returns how many. Small chunks keep
    /// each transaction short, so ingest never waits long for the write lock.
    pub async fn purge_chunk(&self, series: Series, sensor_id: i64, before: TimestampMs, limit: i64) -> Result<u64, StoreError> {
        let column = series.period_column();
        // A row starting at `start` covers [start, start + period).
        let bound = before.0.saturating_sub(series.period_ms() - 1);
        // What a fold has not taken yet is kept for it (`store::fold`).
        let bound = match super::fold::purge_keeps_from(self, series).await? {
            Some(keep) => bound.min(keep),
            None => bound,
        };
        let _turn = self.sqlite_write_turn().await;
        let mut deleted = 0;
        // MariaDB's staged readings are left to the minute fold, which moves them into
        // `readings` (200,000 at a time, or once 30 s old): a purge runs per sensor, and would
        // scan that table, which has no index, once for each (a sensor's deletion deletes them
        // in its last transaction).
        let purged = |table: &&&str| !(self.dialect() == Dialect::MySql && **table == schema::MYSQL_STAGED_READINGS);
        for table in series.tables(self.dialect()).iter().filter(purged) {
            let left = limit - deleted as i64;
            if left <= 0 {
                break;
            }
            deleted += on_pool!(self, pool => {
                let mut delete = delete_chunk_head(self.dialect(), table);
                delete.push("sensor_id = ").push_bind(sensor_id).push(format!(" AND {column} < ")).push_bind(bound);
                delete_chunk_tail(self.dialect(), &mut delete, left);
                delete.build().execute(pool).await.map(|done| done.rows_affected()).map_err(query_err("purging old readings"))?
            });
        }
        Ok(deleted)
    }

    /// Deletes at most `limit` rejects received before `before`; returns how many.
    pub async fn purge_rejects_chunk(&self, before: TimestampMs, limit: i64) -> Result<u64, StoreError> {
        self.purge_log_chunk(("rejects", "received_at"), before, limit, "purging old rejects").await
    }

    /// Deletes at most `limit` alert history events from before `before`; returns how many.
    pub async fn purge_alert_events_chunk(&self, before: TimestampMs, limit: i64) -> Result<u64, StoreError> {
        self.purge_log_chunk(("alert_events", "at"), before, limit, "purging old alert history").await
    }

    /// A chunk of a log table (`(table, time column)`, names from this module) before `before`.
    async fn purge_log_chunk(
        &self,
        (table, column): (&str, &str),
        before: TimestampMs,
        limit: i64,
        doing: &'static str,
    ) -> Result<u64, StoreError> {
        let _turn = self.sqlite_write_turn().await;
        on_pool!(self, pool => {
            let mut delete = delete_chunk_head(self.dialect(), table);
            delete.push(format!("{column} < ")).push_bind(before.0);
            delete_chunk_tail(self.dialect(), &mut delete, limit);
            delete.build().execute(pool).await.map(|done| done.rows_affected()).map_err(query_err(doing))
        })
    }

    /// The start of the oldest row of a sensor's `series` that a purge can reach (through the
    /// index: one lookup per sensor): on MariaDB/MySQL not the staged readings, which a purge
    /// leaves to the minute fold.
    pub async fn oldest(&self, series: Series, sensor_id: i64) -> Result<Option<TimestampMs>, StoreError> {
        let (table, column) = (series.table(), series.period_column());
        let unfolded = if series == Series::Raw { None } else { super::fold::unfolded_readings_from(self).await? };
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("");
            if series == Series::Hours {
                // Minutes not folded into hours yet count (`store::fold`), and so do readings
                // not folded into minutes.
                super::fold::push_oldest_hour(&mut query, sensor_id, unfolded);
            } else {
                // Minutes: with the readings not folded into them yet.
                if unfolded.is_some() {
                    query.push(format!("SELECT MIN({column}) FROM ("));
                }
                query.push(format!("SELECT MIN({column}) AS {column} FROM {table} WHERE sensor_id = ")).push_bind(sensor_id);
                if let Some((_, since)) = unfolded {
                    super::fold::push_oldest_unfolded(&mut query, series, sensor_id, since);
                    query.push(") AS oldest");
                }
            }
            query
            .build()
            .fetch_one(pool)
            .await
            .and_then(|row| row.try_get::<Option<i64>, _>(0))
            .map(|ts| ts.map(TimestampMs))
            .map_err(query_err("finding the oldest reading"))
        })
    }

    /// The database's size, rows per table and the oldest reading. Counts every row: seconds
    /// on tens of millions, so the lifecycle task measures it now and then, not per request.
    pub async fn size(&self) -> Result<DatabaseSize, StoreError> {
        let mut rows = Vec::with_capacity(COUNTED.len());
        for table in COUNTED {
            let count =
                if table == Series::Raw.table() { self.count_readings().await? } else { self.count_rows(table, "counting rows").await? };
            rows.push((table, count));
        }
        let (bytes, free_bytes) = on_pool!(self, pool => {
            let (sql, free) = match self.dialect() {
                Dialect::Sqlite => (
                    "SELECT (SELECT page_count FROM pragma_page_count()) * (SELECT page_size FROM pragma_page_size()), \
                     (SELECT freelist_count FROM pragma_freelist_count()) * (SELECT page_size FROM pragma_page_size())",
                    true,
                ),
                Dialect::Postgres => ("SELECT pg_database_size(current_database()), NULL::BIGINT", false),
                Dialect::MySql => (
                    "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED), NULL FROM information_schema.tables \
                     WHERE table_schema = DATABASE()",
                    false,
                ),
            };
            let row = QueryBuilder::new(sql).build().fetch_one(pool).await.map_err(query_err("measuring the database"))?;
            let bytes: i64 = row.try_get(0).map_err(query_err("measuring the database"))?;
            let free: Option<i64> = if free { row.try_get(1).map_err(query_err("measuring the database"))? } else { None };
            (bytes.max(0) as u64, free.map(|f| f.max(0) as u64))
        });
        // The write-ahead log is part of a SQLite database's footprint until it is checkpointed.
        let wal = match self.url.sqlite_file() {
            Some(file) => tokio::fs::metadata(format!("{}-wal", file.display())).await.map_or(0, |m| m.len()),
            None => 0,
        };
        // Per sensor, through the (sensor_id, ts) index: there is no index on `ts` alone. On
        // SQLite and MariaDB the indexed table's, and the few staged readings' (through the
        // view of both, the server would scan every reading for each sensor).
        let oldest = match Series::Raw.tables(self.dialect()) {
            [staged, indexed] => format!(
                "SELECT MIN(oldest) FROM (SELECT (SELECT MIN(ts) FROM {indexed} r WHERE r.sensor_id = s.id) AS oldest FROM sensors s \
                 UNION ALL SELECT MIN(ts) FROM {staged}) AS t"
            ),
            _ => "SELECT MIN(oldest) FROM (SELECT (SELECT MIN(ts) FROM readings r WHERE r.sensor_id = s.id) AS oldest FROM sensors s) AS t"
                .to_owned(),
        };
        let oldest = on_pool!(self, pool => QueryBuilder::new(&oldest)
            .build()
            .fetch_one(pool)
            .await
            .and_then(|row| row.try_get::<Option<i64>, _>(0))
            .map_err(query_err("finding the oldest reading"))?);
        Ok(DatabaseSize { bytes: bytes + wal, free_bytes, rows, oldest_reading_ms: oldest })
    }

    /// Gives at most `pages` free pages back to the file system (SQLite with
    /// `auto_vacuum=INCREMENTAL`, which new databases have; elsewhere and on older SQLite files
    /// nothing). Returns the bytes freed.
    pub async fn vacuum_step(&self, pages: i64) -> Result<u64, StoreError> {
        let Pool::Sqlite(pool) = &self.pool else { return Ok(0) };
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(pool).await.map_err(query_err("reading auto_vacuum"))?;
        if mode != 2 {
            return Ok(0);
        }
        let free = |pool| async move {
            sqlx::query_scalar::<_, i64>("PRAGMA freelist_count").fetch_one(pool).await.map_err(query_err("counting free pages"))
        };
        let before = free(pool).await?;
        if before == 0 {
            return Ok(0);
        }
        let turn = self.sqlite_write_turn().await;
        sqlx::query(&format!("PRAGMA incremental_vacuum({})", pages.max(1))).execute(pool).await.map_err(query_err("vacuuming"))?;
        drop(turn);
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(pool).await.map_err(query_err("reading the page size"))?;
        Ok((before - free(pool).await?).max(0) as u64 * page_size.max(0) as u64)
    }
}

/// Rows a purge deletes per transaction: a few milliseconds of the write turn on SQLite.
pub const PURGE_CHUNK: i64 = 1000;

/// Runs `chunk` (one delete of at most [`PURGE_CHUNK`] rows) until a chunk deletes fewer or `stop`
/// is cancelled; returns the rows deleted. With a `pause`, each full chunk is followed by a wait
/// as long as the chunk took, and at least `pause`; with `Duration::ZERO`, none.
pub async fn in_chunks<F, Fut>(pause: Duration, stop: &CancellationToken, mut chunk: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let started = std::time::Instant::now();
        let deleted = chunk().await?;
        total += deleted;
        if deleted < PURGE_CHUNK as u64 || stop.is_cancelled() {
            return Ok(total);
        }
        if !pause.is_zero() {
            tokio::time::sleep(started.elapsed().max(pause)).await;
        }
    }
}

/// `DELETE ... WHERE` of at most some rows. SQLite and PostgreSQL have no LIMIT on DELETE: the
/// rows are picked by a subquery on their row id.
fn delete_chunk_head<'a, DB: sqlx::Database>(dialect: Dialect, table: &str) -> QueryBuilder<'a, DB> {
    match dialect {
        Dialect::Sqlite => QueryBuilder::new(format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE ")),
        // `= ANY(ARRAY(...))`: a TID scan of the rows picked, never a join over the table.
        Dialect::Postgres => QueryBuilder::new(format!("DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE ")),
        Dialect::MySql => QueryBuilder::new(format!("DELETE FROM {table} WHERE ")),
    }
}

fn delete_chunk_tail<'a, DB: sqlx::Database>(dialect: Dialect, delete: &mut QueryBuilder<'a, DB>, limit: i64)
where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    delete.push(" LIMIT ").push_bind(limit);
    delete.push(match dialect {
        Dialect::Sqlite => ")",
        Dialect::Postgres => "))",
        Dialect::MySql => "",
    });
}

impl SensorSettings {
    /// From the columns `display_name, unit, hidden, retention_ms`.
    pub(super) fn from_columns(display_name: Option<String>, unit: Option<String>, hidden: i16, retention_ms: Option<i64>) -> Self {
        Self { display_name, unit, hidden: hidden != 0, retention: retention_ms.map(Keep::from_ms) }
    }
}
