//! Writing an ingest batch: one transaction whose statements do not grow with the number of
//! sensors. Each kind of work is one multi-row statement per chunk of rows (creating new
//! sensors, looking them up, readings, per-minute rollups, the sensors' latest values,
//! rejects), so a batch from a thousand devices costs about what a batch from one does. On
//! PostgreSQL the readings, rollups and latest values are one statement each over arrays
//! (`pg_array`), whatever the row count. A SQLite file's batches go to `sqlite_writer`, which
//! writes the same rows with one-row statements on a thread of its own; the column lists and
//! conflict clauses it uses are here.
//!
//! What can be worked out without the database (which sensors are new, the newest reading of
//! each sensor, the rollups) is, in [`Plan`], before the transaction starts. Rows are written
//! in key order, so two writers on one server database lock rows in the same order.

use super::{query_err, Batch, Commit, Dialect, Pool, Series, Store, StoreError};
use crate::model::{newest_per_key, Reading, SensorKey, TimestampMs, UpstreamDelivery};
use sqlx::{QueryBuilder, Row};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

/// Rows per multi-row statement: at most 6 binds each stays far below every backend's limit
/// (SQLite 32,766, PostgreSQL 65,535).
pub(super) const CHUNK: usize = 1000;

/// Tokens of committed batches are kept this long: a retry comes within seconds, not hours.
const TOKEN_RETENTION_MS: i64 = 3_600_000;

/// The rollup of one sensor's readings in a batch over one period (a minute, an hour).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rollup {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: i64,
}

/// A reading with its sensor's id: (sensor id, time in ms, value).
pub(super) type IdReading = (i64, i64, f64);

// The column lists of the batch's inserts, for the multi-row statements here and the
// single-row ones of `sqlite_writer`.
pub(super) const INSERT_SENSORS: &str = "INSERT INTO sensors (owner, place, category) ";
pub(super) const INSERT_REJECTS: &str = "INSERT INTO rejects (received_at, client_id, topic, payload, reason) ";
pub(super) const INSERT_DELIVERIES: &str = "INSERT INTO upstream_deliveries (node, packet_id, hash, seq) ";

/// A batch's readings are staged when it has fewer than this many per sensor on average: a
/// reading or two per sensor (a fleet, each board with one reading in flight) dirty an index
/// page each; a few sensors with hundreds of readings each dirty a few pages, and staging them
/// would only write them twice (SQLite, 8 publishers on 8 sensors: 202k/166k readings/s
/// written straight, 158k/126k staged, p99 16 → 91–106 ms). On SQLite and MariaDB/MySQL.
pub(super) const STAGE_BELOW_READINGS_PER_SENSOR: usize = 4;

/// Whether a batch of `readings` of `sensors` distinct sensors is staged: fewer than
/// [`STAGE_BELOW_READINGS_PER_SENSOR`] readings per sensor on average.
pub(super) fn stages(readings: usize, sensors: usize) -> bool {
    readings < STAGE_BELOW_READINGS_PER_SENSOR * sensors
}

/// The start of an insert of readings into `table`: `readings` on the server databases, or on
/// MariaDB/MySQL `readings_staged` for a fleet's batch; on SQLite, where `readings` is a view,
/// `readings_staged` from the writer thread and `readings_indexed` from here (an in-memory
/// database, which has no writer thread).
pub(super) fn insert_readings(table: &str) -> String {
    format!("INSERT INTO {table} (sensor_id, ts, value) ")
}

/// The start of a rollup upsert: `INSERT INTO readings_1m (sensor_id, minute, min, max, sum, count) `.
pub(super) fn insert_rollups(series: Series) -> String {
    format!("INSERT INTO {} (sensor_id, {}, min, max, sum, count) ", series.table(), series.period_column())
}

/// A batch's work, worked out in memory before the transaction.
pub(super) struct Plan<'a> {
    /// Sensors the id cache does not know, each once, in key order.
    pub unknown: Vec<&'a SensorKey>,
    /// Each reading's sensor: its id, or its index in `unknown`.
    pub sensors: Vec<Result<i64, usize>>,
}

impl<'a> Plan<'a> {
    fn new(readings: &'a [Reading], cache: &super::SensorIds) -> Self {
        // Each reading's key is hashed once: known ids now, unknown keys numbered below.
        let mut sensors: Vec<Result<i64, usize>> = readings.iter().map(|r| cache.get(&r.sensor).copied().ok_or(0)).collect();
        let mut unknown: Vec<&SensorKey> = readings.iter().zip(&sensors).filter(|(_, id)| id.is_err()).map(|(r, _)| &r.sensor).collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            unknown.dedup();
            for (slot, r) in sensors.iter_mut().zip(readings) {
                if slot.is_err() {
                    *slot = Err(unknown.binary_search(&&r.sensor).expect("every unknown sensor is listed"));
                }
            }
        }
        Self { unknown, sensors }
    }

    /// The sensor id of each reading, given the ids of the unknown sensors.
    fn ids(&self, unknown_ids: &[i64]) -> Vec<i64> {
        self.sensors.iter().map(|slot| slot.unwrap_or_else(|i| unknown_ids[i])).collect()
    }
}

/// Each reading with its sensor's id.
fn with_ids(ids: &[i64], readings: &[Reading]) -> Vec<IdReading> {
    ids.iter().zip(readings).map(|(&id, r)| (id, r.ts.0, r.value)).collect()
}

/// The newest reading of each sensor, by reading time (the later one in the batch on a tie),
/// ordered by sensor id.
pub(super) fn newest_per_sensor(readings: &[IdReading]) -> Vec<IdReading> {
    let newest = newest_per_key(readings.iter().map(|&(id, ts, value)| (id, TimestampMs(ts), value)));
    let mut newest: Vec<_> = newest.into_iter().map(|(id, (ts, value))| (id, ts.0, value)).collect();
    newest.sort_unstable_by_key(|&(id, ..)| id);
    newest
}

/// The rollups of a batch over periods of `period_ms`, keyed by (sensor id, start of the period
/// in ms), in key order.
pub(super) fn rollups(readings: &[IdReading], period_ms: i64) -> Vec<((i64, i64), Rollup)> {
    let mut minutes: HashMap<(i64, i64), Rollup, ahash::RandomState> =
        HashMap::with_capacity_and_hasher(readings.len(), Default::default());
    for &(id, ts, value) in readings {
        let minute = ts - ts.rem_euclid(period_ms);
        let m = minutes.entry((id, minute)).or_insert(Rollup { min: value, max: value, sum: 0.0, count: 0 });
        m.min = m.min.min(value);
        m.max = m.max.max(value);
        m.sum += value;
        m.count += 1;
    }
    let mut minutes: Vec<_> = minutes.into_iter().collect();
    minutes.sort_unstable_by_key(|&(key, _)| key);
    minutes
}

/// Inserts sensors that may exist already, leaving those untouched. Not MySQL's INSERT IGNORE:
/// it turns every error into a warning, and a key too long for its column was stored cut
/// short, then never found.
pub(super) fn insert_sensors_suffix(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::MySql => " ON DUPLICATE KEY UPDATE id = id",
        _ => " ON CONFLICT (owner, place, category) DO NOTHING",
    }
}

/// Merges a batch's rollups into a rollup table.
pub(super) fn upsert_rollups_suffix(dialect: Dialect, rollup: Series) -> String {
    let (table, period) = (rollup.table(), rollup.period_column());
    match dialect {
        Dialect::Sqlite => format!(
            " ON CONFLICT (sensor_id, {period}) DO UPDATE SET min = MIN(min, excluded.min), \
             max = MAX(max, excluded.max), sum = sum + excluded.sum, count = count + excluded.count"
        ),
        Dialect::Postgres => format!(
            " ON CONFLICT (sensor_id, {period}) DO UPDATE SET min = LEAST({table}.min, EXCLUDED.min), \
             max = GREATEST({table}.max, EXCLUDED.max), sum = {table}.sum + EXCLUDED.sum, \
             count = {table}.count + EXCLUDED.count"
        ),
        Dialect::MySql => " ON DUPLICATE KEY UPDATE min = LEAST(min, VALUES(min)), max = GREATEST(max, VALUES(max)), \
             sum = sum + VALUES(sum), count = count + VALUES(count)"
            .to_owned(),
    }
}

/// The upsert of `rollups` of `series`, keyed by (sensor id, start of the period), as one
/// multi-row statement (at most [`CHUNK`] rows at a time).
pub(super) fn upsert_rollups<'a, DB: sqlx::Database>(
    dialect: Dialect,
    series: Series,
    rollups: &[((i64, i64), Rollup)],
) -> QueryBuilder<'a, DB>
where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    f64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut upsert = QueryBuilder::new(insert_rollups(series));
    upsert.push_values(rollups, |mut row, ((id, start), m)| {
        row.push_bind(*id).push_bind(*start).push_bind(m.min).push_bind(m.max).push_bind(m.sum).push_bind(m.count);
    });
    upsert.push(upsert_rollups_suffix(dialect, series));
    upsert
}

/// A PostgreSQL array literal, `{1,2.5,3}`, bound as text and cast (`BIGINT_ARRAY`,
/// `FLOAT_ARRAY`) for `UNNEST`: the statement's text does not depend on how many rows it
/// writes, so each connection prepares and plans it once. (A multi-row VALUES list was a new
/// statement for every batch size: parsed, described and planned again, 3,000 parameters at a
/// time.) `Debug` of a float is its shortest round-trip form, so values arrive exact.
fn pg_array<T: std::fmt::Debug>(values: impl Iterator<Item = T>) -> String {
    use std::fmt::Write;
    let mut text = String::from("{");
    for (i, value) in values.enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{value:?}");
    }
    text.push('}');
    text
}

const BIGINT_ARRAY: &str = "::TEXT::BIGINT[]";
const FLOAT_ARRAY: &str = "::TEXT::DOUBLE PRECISION[]";

/// Records the latest delivery of each (node, packet id).
pub(super) fn upsert_deliveries_suffix(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::MySql => " ON DUPLICATE KEY UPDATE hash = VALUES(hash), seq = VALUES(seq)",
        _ => " ON CONFLICT (node, packet_id) DO UPDATE SET hash = excluded.hash, seq = excluded.seq",
    }
}

/// Sets a sensor's latest value unless it has a newer one. On SQLite one sensor per statement
/// (`sqlite_writer`'s cached statement), binding (id, ts, value) as ?1, ?2, ?3.
pub(super) const UPDATE_LATEST_SQLITE: &str =
    "UPDATE sensors SET last_value = ?3, last_seen = ?2 WHERE id = ?1 AND (last_seen IS NULL OR last_seen <= ?2)";

/// Sets each listed sensor's latest value unless it has a newer one: the statement before and
/// after the table of `(id, ts, value)` rows.
pub(super) fn update_latest_sql(dialect: Dialect) -> (&'static str, &'static str) {
    match dialect {
        // SQLite names the columns of a VALUES list column1, column2, ...
        Dialect::Sqlite => (
            "UPDATE sensors SET last_value = v.column3, last_seen = v.column2 FROM (",
            ") AS v WHERE sensors.id = v.column1 AND (sensors.last_seen IS NULL OR sensors.last_seen <= v.column2)",
        ),
        // Columns of arrays (`pg_array`). Every listed sensor's row is updated (locked until the
        // commit), newer values or not: a sensor whose row is not there was deleted, and its
        // readings have no foreign key to fail on there (schema migration 13).
        Dialect::Postgres => (
            "UPDATE sensors SET last_value = CASE WHEN sensors.last_seen IS NULL OR sensors.last_seen <= v.ts \
             THEN v.value ELSE sensors.last_value END, last_seen = GREATEST(sensors.last_seen, v.ts) FROM UNNEST(",
            ") AS v (id, ts, value) WHERE sensors.id = v.id",
        ),
        // Every listed sensor's row too, so that the count of rows found (sqlx asks MariaDB for
        // found rows, not changed ones) says whether one was deleted. Staged batches, whose
        // readings have no foreign key to fail on (schema migration 17), do not run it: they
        // check their sensors in share mode, and the minute fold runs it from the staged
        // readings (`fold::push_newest_staged`). A multi-table UPDATE sets its columns in no set
        // order; either order gives the same row, as `last_seen` only grows.
        Dialect::MySql => (
            "UPDATE sensors JOIN (",
            ") AS v ON sensors.id = v.id SET \
             sensors.last_value = IF(sensors.last_seen IS NULL OR sensors.last_seen <= v.ts, v.value, sensors.last_value), \
             sensors.last_seen = GREATEST(COALESCE(sensors.last_seen, v.ts), v.ts)",
        ),
    }
}

impl Store {
    /// Writes a batch in one transaction: new sensors, readings, rollups, the sensors' latest
    /// values, rejects. Either all of it is committed or none.
    pub async fn write_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        self.write(batch, None).await.map(|_| ())
    }

    /// [`write_batch`](Self::write_batch) that can be retried after a failure whose outcome is
    /// unknown: the connection broke after COMMIT was sent, and the server may have committed.
    /// `token` identifies the batch across its attempts (pick it at random, once per batch); it
    /// is recorded in the same transaction, so an attempt that finds it writes nothing.
    pub async fn write_batch_once(&self, batch: &Batch, token: i64) -> Result<Commit, StoreError> {
        self.write(batch, Some(token)).await
    }

    async fn write(&self, batch: &Batch, token: Option<i64>) -> Result<Commit, StoreError> {
        match self.write_attempt(batch, token).await {
            // A sensor in the id cache was deleted (`delete_sensor`) after this batch was
            // planned: forget every cached id and plan again, creating it anew. The failed
            // attempt rolled back, token and all.
            Err(e) if e.names_a_deleted_sensor() => {
                tracing::debug!("a cached sensor was deleted; looking the sensors up again");
                self.sensor_ids.lock().unwrap_or_else(|e| e.into_inner()).clear();
                self.write_attempt(batch, token).await
            }
            other => other,
        }
    }

    async fn write_attempt(&self, batch: &Batch, token: Option<i64>) -> Result<Commit, StoreError> {
        let _turn = self.sqlite_write_turn().await;
        // Old tokens are deleted now and then.
        let prune_before = self.writes.fetch_add(1, Relaxed).is_multiple_of(1000).then(|| TimestampMs::now().0 - TOKEN_RETENTION_MS);
        let plan = Plan::new(&batch.readings, &self.sensor_ids.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(writer) = &self.sqlite_writer {
            let rows = super::sqlite_writer::Rows {
                token: token.map(|token| (token, TimestampMs::now().0)),
                prune_before,
                unknown: plan.unknown.iter().map(|key| (*key).clone()).collect(),
                readings: plan.sensors.iter().zip(&batch.readings).map(|(&sensor, r)| (sensor, r.ts.0, r.value)).collect(),
                rejects: batch.rejects.clone(),
                deliveries: batch.deliveries.clone(),
            };
            return match writer.write(rows).await? {
                Some(unknown_ids) => Ok(self.committed(&plan, unknown_ids)),
                None => Ok(Commit::AlreadyCommitted),
            };
        }
        let dialect = self.dialect();
        // The transaction runs on the writer's connection. If anything fails, that connection is
        // closed rather than returned to its pool: a failed COMMIT (disk full) can leave its
        // transaction open on the connection, and whatever ran on it next would nest inside
        // the transaction that never committed, or wait on its lock.
        let unknown_ids = on_pool!(writer self, pool => {
            let mut conn = pool.acquire().await.map_err(query_err("getting a connection"))?;
            let written: Result<Option<Vec<i64>>, StoreError> = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(query_err("starting a transaction"))?;

                if let Some(token) = token {
                    // An earlier attempt that committed has recorded the token: this one is
                    // refused as a duplicate (after waiting for that attempt, if it is still
                    // committing) and writes nothing.
                    let recorded = QueryBuilder::new("INSERT INTO ingest_commits (token, committed_at) VALUES (")
                        .push_bind(token).push(", ").push_bind(TimestampMs::now().0).push(")")
                        .build()
                        .execute(&mut *tx)
                        .await;
                    match recorded {
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            tx.rollback().await.map_err(query_err("rolling back"))?;
                            return Ok(None);
                        }
                        other => other.map_err(query_err("recording the commit"))?,
                    };
                    if let Some(before) = prune_before {
                        QueryBuilder::new("DELETE FROM ingest_commits WHERE committed_at < ")
                            .push_bind(before)
                            .build()
                            .execute(&mut *tx)
                            .await
                            .map_err(query_err("forgetting old commits"))?;
                    }
                }

                // Which rollups are folded already (`store::fold`): locked in share mode until the
                // commit on the server databases, so a fold waits for this batch.
                let watermarks = sqlx::query(super::fold::select_watermarks(dialect))
                    .fetch_one(&mut *tx)
                    .await
                    .and_then(|row| {
                        let minutes_before = if super::fold::folds_minutes(dialect) { Some(row.try_get(1)?) } else { None };
                        Ok(super::fold::Watermarks { hours_before: row.try_get(0)?, minutes_before })
                    })
                    .map_err(query_err("reading which rollups are folded"))?;

                // New sensors: created if absent (another writer may have just created one),
                // then their ids looked up.
                let mut unknown_ids = vec![None; plan.unknown.len()];
                for (chunk_index, chunk) in plan.unknown.chunks(CHUNK).enumerate() {
                    let mut insert = QueryBuilder::new(INSERT_SENSORS);
                    insert.push_values(chunk, |mut row, key| {
                        row.push_bind(key.owner.as_str()).push_bind(key.place.as_str()).push_bind(key.category.as_str());
                    });
                    insert.push(insert_sensors_suffix(dialect));
                    insert.build().execute(&mut *tx).await.map_err(query_err("creating sensors"))?;
                    // SQLite wants a subquery right of a row-value IN; MariaDB and MySQL spell a
                    // table of values differently, and take a plain list.
                    let mut select = QueryBuilder::new("SELECT id, owner, place, category FROM sensors WHERE (owner, place, category) IN (");
                    if dialect != Dialect::MySql {
                        select.push("VALUES ");
                    }
                    let mut keys = select.separated(", ");
                    for key in chunk {
                        keys.push("(")
                            .push_bind_unseparated(key.owner.as_str())
                            .push_unseparated(", ")
                            .push_bind_unseparated(key.place.as_str())
                            .push_unseparated(", ")
                            .push_bind_unseparated(key.category.as_str())
                            .push_unseparated(")");
                    }
                    select.push(")");
                    // A locking read sees rows other transactions committed after this one's
                    // snapshot (MariaDB's REPEATABLE READ).
                    if dialect == Dialect::MySql {
                        select.push(" LOCK IN SHARE MODE");
                    }
                    let rows = select.build().fetch_all(&mut *tx).await.map_err(query_err("looking up new sensors"))?;
                    let offset = chunk_index * CHUNK;
                    for row in &rows {
                        let (id, key) = (|| Ok((row.try_get::<i64, _>(0)?, super::sensor_key_at(row, 1)?)))()
                            .map_err(query_err("decoding sensors"))?;
                        if let Ok(slot) = chunk.binary_search(&&key) {
                            unknown_ids[offset + slot] = Some(id);
                        }
                    }
                    // A key that came back spelled differently (MariaDB's case-insensitive
                    // collation matches `Kitchen` to `kitchen`) is looked up on its own.
                    for (slot, key) in chunk.iter().enumerate() {
                        if unknown_ids[offset + slot].is_some() {
                            continue;
                        }
                        let mut select = super::queries::select_sensor_id(key);
                        if dialect == Dialect::MySql {
                            select.push(" LOCK IN SHARE MODE");
                        }
                        let id: i64 = select
                            .build()
                            .fetch_one(&mut *tx)
                            .await
                            .and_then(|row| row.try_get(0))
                            .map_err(query_err("looking up a sensor"))?;
                        unknown_ids[offset + slot] = Some(id);
                    }
                }
                let unknown_ids: Vec<i64> = unknown_ids.into_iter().map(|id| id.expect("every new sensor was looked up")).collect();
                let readings = with_ids(&plan.ids(&unknown_ids), &batch.readings);
                // The hours of the minutes not folded yet are the fold's to write, and so are the
                // minutes of the readings from `minutes_before` on where minutes are folded.
                let late_for_hours = super::fold::late_readings(&readings, watermarks.hours_before);
                let late_for_minutes = watermarks.minutes_before.map(|before| super::fold::late_readings(&readings, before));
                let rollup_source = |rollup: Series| match rollup {
                    Series::Hours => &late_for_hours[..],
                    _ => late_for_minutes.as_deref().unwrap_or(&readings),
                };

                // PostgreSQL: the readings, rollups and latest values as columns of arrays
                // (`pg_array`), one statement text whatever the row count.
                if dialect == Dialect::Postgres {
                    if !readings.is_empty() {
                        // One statement, one round trip: the readings and the rollups are inserted
                        // by data-modifying WITH clauses of the latest-value UPDATE.
                        let mut write = QueryBuilder::new("WITH new_readings AS (");
                        write.push(insert_readings("readings")).push("SELECT * FROM UNNEST(")
                            .push_bind(pg_array(readings.iter().map(|r| r.0))).push(BIGINT_ARRAY).push(", ")
                            .push_bind(pg_array(readings.iter().map(|r| r.1))).push(BIGINT_ARRAY).push(", ")
                            .push_bind(pg_array(readings.iter().map(|r| r.2))).push(FLOAT_ARRAY).push("))");
                        for rollup in [Series::Minutes, Series::Hours] {
                            let rollups = rollups(rollup_source(rollup), rollup.period_ms());
                            write.push(format!(", new_{} AS (", rollup.table())).push(insert_rollups(rollup)).push("SELECT * FROM UNNEST(")
                                .push_bind(pg_array(rollups.iter().map(|((id, _), _)| id))).push(BIGINT_ARRAY).push(", ")
                                .push_bind(pg_array(rollups.iter().map(|((_, start), _)| start))).push(BIGINT_ARRAY).push(", ")
                                .push_bind(pg_array(rollups.iter().map(|(_, m)| m.min))).push(FLOAT_ARRAY).push(", ")
                                .push_bind(pg_array(rollups.iter().map(|(_, m)| m.max))).push(FLOAT_ARRAY).push(", ")
                                .push_bind(pg_array(rollups.iter().map(|(_, m)| m.sum))).push(FLOAT_ARRAY).push(", ")
                                .push_bind(pg_array(rollups.iter().map(|(_, m)| m.count))).push(BIGINT_ARRAY).push(")")
                                .push(upsert_rollups_suffix(dialect, rollup)).push(")");
                        }
                        let newest = newest_per_sensor(&readings);
                        let (head, tail) = update_latest_sql(dialect);
                        write.push(" ").push(head)
                            .push_bind(pg_array(newest.iter().map(|r| r.0))).push(BIGINT_ARRAY).push(", ")
                            .push_bind(pg_array(newest.iter().map(|r| r.1))).push(BIGINT_ARRAY).push(", ")
                            .push_bind(pg_array(newest.iter().map(|r| r.2))).push(FLOAT_ARRAY)
                            .push(tail);
                        let updated = write.build().execute(&mut *tx).await.map_err(query_err("writing readings, rollups and latest values"))?;
                        // The row of a sensor deleted since the batch was planned is gone (the
                        // update waits for a deletion in progress, which locks the row first).
                        if updated.rows_affected() != newest.len() as u64 {
                            return Err(StoreError::SensorDeleted);
                        }
                    }
                } else {
                    // Multi-row VALUES lists. On MariaDB a fleet's readings are staged (schema
                    // migration 17), and the minute fold moves them into `readings`.
                    let newest = newest_per_sensor(&readings);
                    let table = match dialect {
                        Dialect::Sqlite => super::schema::SQLITE_INDEXED_READINGS,
                        Dialect::MySql if stages(readings.len(), newest.len()) => super::schema::MYSQL_STAGED_READINGS,
                        _ => "readings",
                    };
                    // A fleet's staged batch leaves its sensors' latest values to the minute fold,
                    // which sets them from the staged readings it folds; until then readers take
                    // the newest of those (`fold::push_newest_staged`). It only makes sure first
                    // that each sensor is still there, in share mode: a deletion under way waits for
                    // this commit (and deletes these readings with the sensor), or came first, and
                    // the batch is planned again. First, so that a deletion by hand which locked the
                    // sensor's row and then deletes its staged readings does not meet this batch's.
                    let staged = table == super::schema::MYSQL_STAGED_READINGS;
                    if staged {
                        let mut there = 0;
                        for chunk in newest.chunks(CHUNK) {
                            let mut check = QueryBuilder::new("SELECT COUNT(*) FROM sensors WHERE id IN (");
                            let mut ids = check.separated(", ");
                            for (id, _, _) in chunk {
                                ids.push_bind(*id);
                            }
                            check.push(") LOCK IN SHARE MODE");
                            let count: i64 = check.build().fetch_one(&mut *tx).await.and_then(|row| row.try_get(0))
                                .map_err(query_err("making sure the sensors are there"))?;
                            there += count as u64;
                        }
                        if there != newest.len() as u64 {
                            return Err(StoreError::SensorDeleted);
                        }
                    }
                    let insert = insert_readings(table);
                    for chunk in readings.chunks(CHUNK) {
                        QueryBuilder::new(&insert)
                            .push_values(chunk, |mut row, (id, ts, value)| {
                                row.push_bind(*id).push_bind(*ts).push_bind(*value);
                            })
                            .build()
                            .execute(&mut *tx)
                            .await
                            .map_err(query_err("inserting readings"))?;
                    }

                    for rollup in [Series::Minutes, Series::Hours] {
                        for chunk in rollups(rollup_source(rollup), rollup.period_ms()).chunks(CHUNK) {
                            upsert_rollups(dialect, rollup, chunk).build().execute(&mut *tx).await.map_err(query_err("updating rollups"))?;
                        }
                    }

                    // Batches that are not staged set their sensors' latest values themselves.
                    if !staged {
                        let (head, tail) = update_latest_sql(dialect);
                        let mut found = 0;
                        for chunk in newest.chunks(CHUNK) {
                            let mut update = QueryBuilder::new(head);
                            // MariaDB and MySQL spell a table of values differently: a UNION ALL of
                            // SELECTs works in both.
                            if dialect != Dialect::MySql {
                                update.push("VALUES ");
                                let mut rows = update.separated(", ");
                                for (id, ts, value) in chunk {
                                    rows.push("(").push_bind_unseparated(*id).push_unseparated(", ").push_bind_unseparated(*ts)
                                        .push_unseparated(", ").push_bind_unseparated(*value).push_unseparated(")");
                                }
                            } else {
                                let mut rows = update.separated(" UNION ALL ");
                                for (i, (id, ts, value)) in chunk.iter().enumerate() {
                                    let names = if i == 0 { [" AS id, ", " AS ts, ", " AS value"] } else { [", ", ", ", ""] };
                                    rows.push("SELECT ").push_bind_unseparated(*id).push_unseparated(names[0]).push_bind_unseparated(*ts)
                                        .push_unseparated(names[1]).push_bind_unseparated(*value).push_unseparated(names[2]);
                                }
                            }
                            update.push(tail);
                            found += update.build().execute(&mut *tx).await.map_err(query_err("updating the sensors' latest values"))?.rows_affected();
                        }
                        // A sensor deleted since the batch was planned (the update waits for a
                        // deletion in progress, which locks the row first).
                        if dialect == Dialect::MySql && found != newest.len() as u64 {
                            return Err(StoreError::SensorDeleted);
                        }
                    }
                }

                for chunk in batch.rejects.chunks(CHUNK) {
                    QueryBuilder::new(INSERT_REJECTS)
                        .push_values(chunk, |mut row, r| {
                            row.push_bind(r.received_at.0)
                                .push_bind(r.client_id.as_str())
                                .push_bind(r.topic.as_str())
                                .push_bind(r.payload_prefix.as_slice())
                                .push_bind(r.reason.as_str());
                        })
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err("inserting rejects"))?;
                }

                for chunk in latest_deliveries(&batch.deliveries).chunks(CHUNK) {
                    let mut upsert = QueryBuilder::new(INSERT_DELIVERIES);
                    upsert.push_values(chunk, |mut row, d| {
                        row.push_bind(&*d.node).push_bind(i32::from(d.packet_id)).push_bind(d.hash).push_bind(d.seq);
                    });
                    upsert.push(upsert_deliveries_suffix(dialect));
                    upsert.build().execute(&mut *tx).await.map_err(query_err("recording upstream deliveries"))?;
                }

                tx.commit().await.map_err(query_err("committing"))?;
                Ok(Some(unknown_ids))
            }
            .await;
            match written {
                Ok(Some(ids)) => ids,
                Ok(None) => return Ok(Commit::AlreadyCommitted),
                Err(e) => {
                    let _ = conn.close().await;
                    return Err(e);
                }
            }
        });
        Ok(self.committed(&plan, unknown_ids))
    }

    /// After a commit: the new sensors' ids enter the cache (only committed ones do).
    fn committed(&self, plan: &Plan, unknown_ids: Vec<i64>) -> Commit {
        let mut cache = self.sensor_ids.lock().unwrap_or_else(|e| e.into_inner());
        cache.extend(plan.unknown.iter().map(|key| (*key).clone()).zip(unknown_ids));
        Commit::Committed
    }
}

/// The latest delivery of each (node, packet id) in a batch: an upsert may touch a row once.
pub(super) fn latest_deliveries(deliveries: &[UpstreamDelivery]) -> Vec<&UpstreamDelivery> {
    let mut latest: HashMap<(&str, u16), &UpstreamDelivery> = HashMap::with_capacity(deliveries.len());
    for d in deliveries {
        let slot = latest.entry((&*d.node, d.packet_id)).or_insert(d);
        if d.seq > slot.seq {
            *slot = d;
        }
    }
    // Key order, like every other row a batch writes.
    let mut latest: Vec<_> = latest.into_iter().collect();
    latest.sort_unstable_by_key(|(key, _)| *key);
    latest.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(owner: &str, ts: i64, value: f64) -> Reading {
        Reading { sensor: SensorKey::new(owner, "room", "t").unwrap(), ts: TimestampMs(ts), value }
    }

    #[test]
    fn a_plan_lists_each_unknown_sensor_once_in_key_order() {
        let readings = [reading("b", 1, 1.0), reading("a", 2, 2.0), reading("c", 3, 3.0), reading("b", 4, 4.0)];
        let cache = super::super::SensorIds::from_iter([(SensorKey::new("c", "room", "t").unwrap(), 7)]);
        let plan = Plan::new(&readings, &cache);
        assert_eq!(plan.unknown.iter().map(|k| k.owner.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(plan.ids(&[10, 11]), [11, 10, 7, 11]);
    }

    #[test]
    fn postgres_arrays_are_exact_literals() {
        assert_eq!(pg_array([1i64, -2, i64::MAX].into_iter()), "{1,-2,9223372036854775807}");
        assert_eq!(pg_array([23.5f64, 0.1, 1e300, -1e-7].into_iter()), "{23.5,0.1,1e300,-1e-7}");
        assert_eq!(pg_array(std::iter::empty::<i64>()), "{}");
    }

    #[test]
    fn the_newest_reading_wins_by_time_then_by_arrival() {
        let readings = [reading("a", 5, 1.0), reading("a", 3, 2.0), reading("b", 1, 3.0), reading("a", 5, 4.0)];
        let ids = [2, 2, 1, 2];
        assert_eq!(newest_per_sensor(&with_ids(&ids, &readings)), [(1, 1, 3.0), (2, 5, 4.0)]);
    }

    #[test]
    fn rollups_group_by_sensor_and_minute() {
        let readings = [reading("a", 59_999, 1.0), reading("a", 0, 3.0), reading("a", 60_000, 5.0), reading("b", 10, 2.0)];
        let ids = [1, 1, 1, 2];
        assert_eq!(
            rollups(&with_ids(&ids, &readings), 60_000),
            [
                ((1, 0), Rollup { min: 1.0, max: 3.0, sum: 4.0, count: 2 }),
                ((1, 60_000), Rollup { min: 5.0, max: 5.0, sum: 5.0, count: 1 }),
                ((2, 0), Rollup { min: 2.0, max: 2.0, sum: 2.0, count: 1 }),
            ]
        );
    }
}
