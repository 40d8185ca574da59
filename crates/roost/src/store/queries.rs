//! Reading what ingest wrote: sensors, readings, downsampled buckets, exports, rejects, counts.

use super::{decode_rows, query_err, Dialect, Pool, RejectRow, SensorRow, SensorSettings, Series, Store, StoreError};
use crate::model::{SensorKey, TimestampMs};
use sqlx::{QueryBuilder, Row};

/// `SELECT id FROM sensors` of one sensor (the caller may add a locking clause).
pub(super) fn select_sensor_id<'a, DB: sqlx::Database>(sensor: &'a SensorKey) -> QueryBuilder<'a, DB>
where
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = QueryBuilder::new("SELECT id FROM sensors WHERE ");
    push_sensor_key(&mut query, sensor);
    query
}

/// `owner = … AND place = … AND category = …` of one sensor.
fn push_sensor_key<'a, DB: sqlx::Database>(query: &mut QueryBuilder<'a, DB>, sensor: &'a SensorKey)
where
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push("owner = ").push_bind(sensor.owner.as_str());
    query.push(" AND place = ").push_bind(sensor.place.as_str());
    query.push(" AND category = ").push_bind(sensor.category.as_str());
}

/// The columns [`sensor_row!`] decodes, of every sensor (an `ORDER BY` may follow) or of the
/// one of `key`. On MariaDB and MySQL a sensor's latest value is the newer of its row's and its
/// newest staged reading the minute fold has not taken yet (a fleet's staged batches leave the
/// row to the fold: `fold::push_newest_staged`); for one sensor, only its staged readings are
/// sorted.
fn select_sensors<'a, DB: sqlx::Database>(dialect: Dialect, key: Option<&'a SensorKey>) -> QueryBuilder<'a, DB>
where
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    const SETTINGS: &str = "display_name, unit, hidden, retention_ms";
    let mut query = match dialect {
        Dialect::MySql => {
            let mut query = QueryBuilder::new(format!(
                "SELECT sensors.id, owner, place, category, \
                 IF(v.ts IS NOT NULL AND (last_seen IS NULL OR v.ts >= last_seen), v.value, last_value), \
                 GREATEST(COALESCE(last_seen, v.ts), COALESCE(v.ts, last_seen)), {SETTINGS} FROM sensors LEFT JOIN ("
            ));
            super::fold::push_newest_staged(&mut query, |query| {
                query.push(super::fold::STAGED_NOT_FOLDED);
                if let Some(key) = key {
                    query.push(" AND sensor_id = (SELECT id FROM sensors WHERE ");
                    push_sensor_key(query, key);
                    query.push(")");
                }
            });
            query.push(") AS v ON v.id = sensors.id");
            query
        }
        _ => QueryBuilder::new(format!("SELECT id, owner, place, category, last_value, last_seen, {SETTINGS} FROM sensors")),
    };
    if let Some(key) = key {
        query.push(" WHERE ");
        push_sensor_key(&mut query, key);
    }
    query
}

/// A [`SensorRow`] from a row of [`select_sensors`] (a macro: each backend's row type).
macro_rules! sensor_row {
    ($row:expr) => {
        Ok(SensorRow {
            id: $row.try_get(0)?,
            key: crate::store::sensor_key_at($row, 1)?,
            last_value: $row.try_get(4)?,
            last_seen: $row.try_get::<Option<i64>, _>(5)?.map(TimestampMs),
            settings: SensorSettings::from_columns($row.try_get(6)?, $row.try_get(7)?, $row.try_get(8)?, $row.try_get(9)?),
        })
    };
}

impl Store {
    pub async fn count_readings(&self) -> Result<i64, StoreError> {
        on_pool!(self, pool => QueryBuilder::new(format!("SELECT {}", count_readings_sql(self.dialect())))
            .build()
            .fetch_one(pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(query_err("counting readings")))
    }

    /// `SELECT COUNT(*)` of one of our tables (a name from this module, never user input).
    pub(super) async fn count_rows(&self, table: &'static str, doing: &'static str) -> Result<i64, StoreError> {
        on_pool!(self, pool => QueryBuilder::new(format!("SELECT COUNT(*) FROM {table}"))
            .build()
            .fetch_one(pool)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(query_err(doing)))
    }

    /// All sensors, ordered by owner, place, category.
    pub async fn sensors(&self) -> Result<Vec<SensorRow>, StoreError> {
        on_pool!(self, pool => {
            let rows = select_sensors(self.dialect(), None)
                .push(" ORDER BY owner, place, category")
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("listing sensors"))?;
            decode_rows(&rows, "reading sensors", |row| sensor_row!(row))
        })
    }

    /// One sensor with its latest reading and settings.
    pub async fn sensor(&self, key: &SensorKey) -> Result<Option<SensorRow>, StoreError> {
        on_pool!(self, pool => {
            let rows = select_sensors(self.dialect(), Some(key))
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("looking up a sensor"))?;
            Ok(decode_rows(&rows, "reading a sensor", |row| sensor_row!(row))?.pop())
        })
    }

    /// Every sensor's per-minute averages since `from` (the rollups, with the readings not
    /// folded into them yet), by sensor id then minute: the dashboard's trend lines, in one
    /// query however many tiles there are.
    pub async fn minute_averages(&self, from: TimestampMs) -> Result<Vec<(i64, f64)>, StoreError> {
        let minute = from.0 - from.0.rem_euclid(60_000);
        let unfolded = super::fold::unfolded_readings_from(self).await?;
        let sums: Vec<(i64, i64, f64, i64)> = on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT sensor_id, minute, sum, count FROM readings_1m WHERE minute >= ");
            query.push_bind(minute);
            if let Some((through, since)) = unfolded {
                // The readings not folded yet: in `readings` a range of the table's key from
                // `through` on, and the staged ones.
                for (table, unfolded) in super::fold::UNFOLDED_READINGS {
                    query.push(format!(" UNION ALL SELECT sensor_id, ts - ts % 60000, SUM(value), COUNT(*) FROM {table} WHERE id > "))
                        // The staged table's mark is in its condition.
                        .push_bind(if table == super::schema::MYSQL_STAGED_READINGS { 0 } else { through })
                        .push(" AND ts >= ")
                        .push_bind(minute.max(since))
                        .push(unfolded)
                        .push(" GROUP BY sensor_id, ts - ts % 60000");
                }
            }
            let rows = query
                .push(" ORDER BY 1, 2")
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("reading trends"))?;
            decode_rows(&rows, "reading trends", |row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)))?
        });
        Ok(averages_per_minute(sums))
    }

    /// Readings of one sensor with `from <= ts < to`, oldest first. The sensor's id is looked
    /// up first (`readings_by_id`): MariaDB reads a join through the view of the staged and
    /// indexed readings by copying every reading of the range into a temporary table.
    pub async fn readings(&self, sensor: &SensorKey, from: TimestampMs, to: TimestampMs) -> Result<Vec<(TimestampMs, f64)>, StoreError> {
        let Some(sensor_id) = self.sensor_id(sensor).await? else { return Ok(Vec::new()) };
        let readings = self.readings_by_id(sensor_id, from, to, i64::MAX).await?;
        Ok(readings.into_iter().map(|(ts, value)| (TimestampMs(ts), value)).collect())
    }

    /// Every stored value of every sensor, for verification (tests, `roost bench`).
    pub async fn all_values(&self) -> Result<Vec<(SensorKey, f64)>, StoreError> {
        on_pool!(self, pool => {
            let rows = QueryBuilder::new(format!(
                "SELECT s.owner, s.place, s.category, r.value FROM {} r JOIN sensors s ON s.id = r.sensor_id",
                Series::Raw.source(self.dialect())
            ))
            .build()
            .fetch_all(pool)
            .await
            .map_err(query_err("reading all values"))?;
            decode_rows(&rows, "decoding values", |row| Ok((super::sensor_key_at(row, 0)?, row.try_get(3)?)))
        })
    }

    /// The most recent rejects, newest first.
    pub async fn recent_rejects(&self, limit: i64) -> Result<Vec<RejectRow>, StoreError> {
        self.recent_rejects_under(None, limit).await
    }

    /// The most recent rejects whose topic starts with `prefix` (all of them for `None`).
    pub async fn recent_rejects_under(&self, prefix: Option<&str>, limit: i64) -> Result<Vec<RejectRow>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT received_at, client_id, topic, payload, reason FROM rejects");
            if let Some(prefix) = prefix {
                // SUBSTR, not LIKE: user names may contain LIKE's wildcards.
                query.push(" WHERE SUBSTR(topic, 1, ").push_bind(prefix.chars().count() as i32).push(") = ").push_bind(prefix);
            }
            let rows = query
                .push(" ORDER BY id DESC LIMIT ")
                .push_bind(limit)
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("listing rejects"))?;
            decode_rows(&rows, "decoding rejects", |row| {
                    Ok(RejectRow {
                        received_at: TimestampMs(row.try_get(0)?),
                        client_id: row.try_get(1)?,
                        topic: row.try_get(2)?,
                        payload: row.try_get(3)?,
                        reason: row.try_get(4)?,
                    })
                })
        })
    }
}

/// `(sensor id, minute, average)` from rows of `(sensor id, minute, sum, count)` in that
/// order, merging the rows of one minute (its rollup and its readings not folded yet).
fn averages_per_minute(sums: Vec<(i64, i64, f64, i64)>) -> Vec<(i64, f64)> {
    let mut merged: Vec<(i64, i64, f64, i64)> = Vec::with_capacity(sums.len());
    for (sensor, minute, sum, count) in sums {
        match merged.last_mut() {
            Some(last) if (last.0, last.1) == (sensor, minute) => {
                last.2 += sum;
                last.3 += count;
            }
            _ => merged.push((sensor, minute, sum, count)),
        }
    }
    merged.into_iter().map(|(sensor, _, sum, count)| (sensor, sum / count as f64)).collect()
}

/// One bucket of a downsampled series: readings with `start <= ts < start + width`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Bucket {
    pub start: i64,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    pub count: i64,
}

impl Store {
    /// The id of a sensor, if it exists.
    pub async fn sensor_id(&self, sensor: &SensorKey) -> Result<Option<i64>, StoreError> {
        on_pool!(self, pool => select_sensor_id(sensor)
            .build()
            .fetch_optional(pool)
            .await
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(query_err("looking up a sensor")))
    }

    /// Deletes sensors with all their readings and rollups (`roost bench` cleans up after
    /// itself); returns how many existed.
    pub async fn delete_sensors(&self, sensors: &[SensorKey]) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for sensor in sensors {
            if let Some(id) = self.sensor_id(sensor).await? {
                self.delete_sensor(sensor, id).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Readings of a sensor with `from <= ts < to`, oldest first, at most `limit`.
    pub async fn readings_by_id(
        &self,
        sensor_id: i64,
        from: TimestampMs,
        to: TimestampMs,
        limit: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT ts, value FROM ");
            if self.dialect() == Dialect::MySql {
                // Each table on its own, `readings` in its index's order up to the limit: MariaDB
                // would copy the whole range into a temporary table to sort it through the view.
                // Readings of one millisecond in the order they came (staged ones are newer).
                query.push("((SELECT ts, value, id, 0 AS part FROM readings WHERE sensor_id = ").push_bind(sensor_id)
                    .push(" AND ts >= ").push_bind(from.0)
                    .push(" AND ts < ").push_bind(to.0)
                    .push(" ORDER BY ts, id LIMIT ").push_bind(limit)
                    .push(format!(") UNION ALL (SELECT ts, value, id, 1 FROM {} WHERE sensor_id = ", super::schema::MYSQL_STAGED_READINGS))
                    .push_bind(sensor_id)
                    .push(" AND ts >= ").push_bind(from.0)
                    .push(" AND ts < ").push_bind(to.0)
                    .push(")) AS r ORDER BY ts, part, id LIMIT ").push_bind(limit);
            } else {
                query.push("readings WHERE sensor_id = ").push_bind(sensor_id)
                    .push(" AND ts >= ").push_bind(from.0)
                    .push(" AND ts < ").push_bind(to.0)
                    .push(" ORDER BY ts LIMIT ").push_bind(limit);
            }
            let rows = query
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("reading a sensor's history"))?;
            decode_rows(&rows, "decoding readings", |row| Ok((row.try_get(0)?, row.try_get(1)?)))
        })
    }

    /// Min/avg/max/count of a sensor's readings in buckets of `width_ms` from `from` to `to`,
    /// computed from `series`; empty buckets are left out. The database does the grouping, so
    /// a month of 1-second data comes back as a few hundred rows.
    ///
    /// From a rollup series, min, max, mean and count stay exact, and each rollup row counts in
    /// the bucket where its period starts (so a bucket edge is exact to the minute or the hour).
    pub async fn buckets(
        &self,
        series: Series,
        sensor_id: i64,
        from: TimestampMs,
        to: TimestampMs,
        width_ms: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        // Integer division: `/` on integers in SQLite and PostgreSQL, `DIV` in MySQL/MariaDB.
        let div = if self.dialect() == Dialect::MySql { " DIV " } else { " / " };
        let (table, time) = (series.source(self.dialect()), series.period_column());
        let aggregates = if series == Series::Raw {
            " AS bucket, MIN(value), AVG(value), MAX(value), COUNT(*)".to_owned()
        } else {
            // SUM of integers is NUMERIC/DECIMAL on PostgreSQL and MariaDB: cast it back.
            match self.dialect() {
                Dialect::Sqlite => " AS bucket, MIN(min), SUM(sum) / SUM(count), MAX(max), SUM(count)",
                Dialect::Postgres => {
                    " AS bucket, MIN(min), SUM(sum) / CAST(SUM(count) AS DOUBLE PRECISION), MAX(max), CAST(SUM(count) AS BIGINT)"
                }
                Dialect::MySql => " AS bucket, MIN(min), SUM(sum) / SUM(count), MAX(max), CAST(SUM(count) AS SIGNED)",
            }
            .to_owned()
        };
        // The first period may start before `from`: it counts in the first bucket (the division
        // truncates toward zero, and the width is at least a period).
        let lower = from.0 - from.0.rem_euclid(series.period_ms());
        let unfolded = if series == Series::Raw { None } else { super::fold::unfolded_readings_from(self).await? };
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new(format!("SELECT ({time} - "));
            query.push_bind(from.0).push(")").push(div).push_bind(width_ms).push(&aggregates).push(" FROM ");
            if series == Series::Hours {
                // With the minutes not folded into hours yet (`store::fold`).
                super::fold::push_hours_of_sensor(&mut query, sensor_id, (lower, to.0), unfolded);
            } else {
                // Minutes: with the readings not folded into them yet (`store::fold`).
                if unfolded.is_some() {
                    query.push(format!("(SELECT {time}, min, max, sum, count FROM "));
                }
                query.push(format!("{table} WHERE sensor_id = ")).push_bind(sensor_id)
                    .push(format!(" AND {time} >= ")).push_bind(lower)
                    .push(format!(" AND {time} < ")).push_bind(to.0);
                if let Some((_, since)) = unfolded {
                    super::fold::push_unfolded_readings(&mut query, series, sensor_id, since, (lower, to.0));
                    query.push(") AS minutes");
                }
            }
            let rows = query
                .push(" GROUP BY bucket ORDER BY bucket")
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("downsampling readings"))?;
            decode_rows(&rows, "decoding buckets", |row| {
                    let bucket: i64 = row.try_get(0)?;
                    Ok(Bucket { start: from.0 + bucket * width_ms, min: row.try_get(1)?, avg: row.try_get(2)?, max: row.try_get(3)?, count: row.try_get(4)? })
                })
        })
    }

    /// Streams a sensor's readings in `[from, to)` in chunks, oldest first, for exports of any
    /// size; stops early when the receiver is gone. With `stalled_after`, a receiver that takes
    /// no chunk for that long (a download that stopped reading) gets `StoreError::ExportStalled`
    /// when it reads again, and the export's connection is given back at once. At most
    /// `EXPORTS_AT_ONCE` run at once; others wait their turn.
    pub async fn stream_readings(
        &self,
        sensor_id: i64,
        from: TimestampMs,
        to: TimestampMs,
        chunks: tokio::sync::mpsc::Sender<Result<Vec<(i64, f64)>, StoreError>>,
        stalled_after: Option<std::time::Duration>,
    ) {
        let Ok(turn) = self.exports.acquire().await else { return };
        let stalled = self.stream_readings_now(sensor_id, from, to, &chunks, stalled_after).await;
        if let Some(limit) = stalled {
            drop(turn);
            tracing::warn!(stalled_for = ?limit, "an export's download took nothing; ended it");
            let _ = chunks.send(Err(StoreError::ExportStalled(limit))).await;
        }
    }

    /// [`Store::stream_readings`] with its turn; `Some(limit)` when the receiver stalled.
    async fn stream_readings_now(
        &self,
        sensor_id: i64,
        from: TimestampMs,
        to: TimestampMs,
        chunks: &tokio::sync::mpsc::Sender<Result<Vec<(i64, f64)>, StoreError>>,
        stalled_after: Option<std::time::Duration>,
    ) -> Option<std::time::Duration> {
        use futures_util::TryStreamExt;
        const CHUNK: usize = 4096;
        // Whether to go on: the receiver took `chunk` (in time).
        let stalled = std::sync::atomic::AtomicBool::new(false);
        let send = |chunk| async {
            match stalled_after {
                None => chunks.send(chunk).await.is_ok(),
                Some(limit) => match tokio::time::timeout(limit, chunks.send(chunk)).await {
                    Ok(sent) => sent.is_ok(),
                    Err(_) => {
                        stalled.store(true, std::sync::atomic::Ordering::Relaxed);
                        false
                    }
                },
            }
        };
        // How the export ended: `Some(limit)` when the receiver stalled.
        let stalled_for = || stalled_after.filter(|_| stalled.load(std::sync::atomic::Ordering::Relaxed));
        on_pool!(self, pool => {
            // One transaction, so that on MariaDB both reads see one snapshot: a move between
            // them would take staged readings into `readings`.
            let mut tx = match pool.begin().await {
                Ok(tx) => tx,
                Err(e) => {
                    send(Err(query_err("starting an export")(e))).await;
                    return stalled_for();
                }
            };
            // MariaDB's staged readings (up to a few hundred thousand) first, merged in below by time:
            // the rest streams from `readings` in its index's order, where a query through the
            // view of both would copy the whole range into a temporary table to sort it.
            let mut staged = std::collections::VecDeque::new();
            if self.dialect() == Dialect::MySql {
                let read = QueryBuilder::new(format!("SELECT ts, value FROM {} WHERE sensor_id = ", super::schema::MYSQL_STAGED_READINGS))
                    .push_bind(sensor_id).push(" AND ts >= ").push_bind(from.0).push(" AND ts < ").push_bind(to.0).push(" ORDER BY ts, id")
                    .build()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(query_err("exporting staged readings"))
                    .and_then(|rows| decode_rows(&rows, "decoding an export", |row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<f64, _>(1)?))));
                match read {
                    Ok(rows) => staged.extend(rows),
                    Err(e) => {
                        send(Err(e)).await;
                        return stalled_for();
                    }
                }
            }
            let mut query = QueryBuilder::new("SELECT ts, value FROM readings WHERE sensor_id = ");
            query.push_bind(sensor_id).push(" AND ts >= ").push_bind(from.0).push(" AND ts < ").push_bind(to.0).push(" ORDER BY ts");
            let mut rows = query.build().fetch(&mut *tx);
            let mut chunk = Vec::with_capacity(CHUNK);
            loop {
                let next = match rows.try_next().await {
                    Ok(Some(row)) => match (row.try_get::<i64, _>(0), row.try_get::<f64, _>(1)) {
                        (Ok(ts), Ok(value)) => Some((ts, value)),
                        (Err(e), _) | (_, Err(e)) => {
                            send(Err(query_err("decoding an export")(e))).await;
                            return stalled_for();
                        }
                    },
                    Ok(None) => None,
                    Err(e) => {
                        send(Err(query_err("exporting readings")(e))).await;
                        return stalled_for();
                    }
                };
                // Staged readings before this one (after those of its millisecond, as they came later).
                while let Some(&early) = staged.front().filter(|s| next.is_none_or(|(ts, _)| s.0 < ts)) {
                    chunk.push(early);
                    staged.pop_front();
                }
                let Some(reading) = next else { break };
                chunk.push(reading);
                if chunk.len() >= CHUNK && !send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))).await {
                    return stalled_for();
                }
            }
            if !chunk.is_empty() {
                send(Ok(chunk)).await;
            }
            stalled_for()
        })
    }

    /// Counts for the stats endpoint: sensors, readings, rejects.
    pub async fn counts(&self) -> Result<(i64, i64, i64), StoreError> {
        on_pool!(self, pool => {
            let row = QueryBuilder::new(format!(
                "SELECT (SELECT COUNT(*) FROM sensors), {}, (SELECT COUNT(*) FROM rejects)",
                count_readings_sql(self.dialect())
            ))
                .build()
                .fetch_one(pool)
                .await
                .map_err(query_err("counting"))?;
            (|| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))().map_err(query_err("decoding counts"))
        })
    }
}

/// The number of readings as a scalar expression: each table that holds them counted on its own
/// (a count through MariaDB's view of two tables would copy every reading into a temporary
/// table first).
fn count_readings_sql(dialect: Dialect) -> String {
    let counts: Vec<String> = Series::Raw.tables(dialect).iter().map(|table| format!("(SELECT COUNT(*) FROM {table})")).collect();
    format!("({})", counts.join(" + "))
}
