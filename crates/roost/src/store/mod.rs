//! The database: SQLite (embedded default), PostgreSQL, MariaDB/MySQL. The only module that
//! knows SQL. Each operation is written once (`on_pool!` instantiates it per backend); the
//! dialect differences are the DDL in `schema` and the upserts of `batch` (which writes ingest
//! batches). What a failed write means for its records is decided in `failure`.

mod failure;
mod schema;

pub use failure::Failure;

use crate::model::{Reading, Reject, SensorKey, TimestampMs};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{QueryBuilder, Row};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

/// Buckets at least this wide are computed from the per-minute rollups.
pub const ROLLUP_MIN_BUCKET_MS: i64 = 5 * 60_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0}: use sqlite://FILE, postgres://... or mysql:// (mariadb://)")]
    UnsupportedUrl(DatabaseUrl),
    #[error("invalid database URL {url}: {source}")]
    InvalidUrl { url: DatabaseUrl, source: sqlx::Error },
    #[error("connecting to {url}: {source}")]
    Connect { url: DatabaseUrl, source: sqlx::Error },
    #[error("migrating the schema to version {version}: {source}")]
    Migrate { version: usize, source: sqlx::Error },
    #[error("database error while {doing}: {source}")]
    Query { doing: &'static str, source: sqlx::Error },
}

fn query_err(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { doing, source }
}

/// Decodes every row with `decode`; a column that does not decode fails the whole answer.
fn decode_rows<R, T>(rows: &[R], doing: &'static str, decode: impl Fn(&R) -> Result<T, sqlx::Error>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(decode).collect::<Result<Vec<_>, _>>().map_err(query_err(doing))
}

/// A database URL; prints without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: only for handing to a driver or a child process.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    pub fn dialect(&self) -> Option<Dialect> {
        let scheme = self.0.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            _ => None,
        }
    }

    /// The file of a `sqlite://` URL (without query options); `None` for server databases.
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        let rest = self.0.strip_prefix("sqlite://").or_else(|| self.0.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
    }

    /// The URL the driver understands (`mariadb://` is MySQL's protocol).
    fn for_driver(&self) -> String {
        match self.0.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => self.0.clone(),
        }
    }

    fn redacted(&self) -> String {
        // scheme://user:password@host → scheme://user:***@host
        let Some((scheme, rest)) = self.0.split_once("://") else { return self.0.clone() };
        let Some((credentials, host)) = rest.rsplit_once('@') else { return self.0.clone() };
        match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => self.0.clone(),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = Self::new(s);
        url.dialect().map(|_| url).ok_or_else(|| format!("{s:?} is not a sqlite://, postgres:// or mysql:// (mariadb://) URL"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    /// How many ingest batches may be written at once. Two on PostgreSQL: one commits while the
    /// next is sent (a fleet of one-in-flight boards: 37k → 42k readings/s). One on SQLite,
    /// which has one writer at a time anyway, and on MariaDB/MySQL, where two batches on the
    /// same few sensors wait on each other's row and gap locks (8 busy sensors: 162k → 64k
    /// readings/s, p99 10 → 103 ms).
    pub fn concurrent_writes(self) -> usize {
        match self {
            Dialect::Postgres => 2,
            Dialect::Sqlite | Dialect::MySql => 1,
        }
    }
}

/// How a [`Store::write_batch_once`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Committed,
    /// An earlier attempt with the same token had committed (its answer was lost).
    AlreadyCommitted,
}

/// What one commit writes.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub readings: Vec<Reading>,
    pub rejects: Vec<Reject>,
}

/// A sensor with its latest reading.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorRow {
    pub id: i64,
    pub key: SensorKey,
    pub last_value: Option<f64>,
    pub last_seen: Option<TimestampMs>,
}

/// A stored reject.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectRow {
    pub received_at: TimestampMs,
    pub client_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub reason: String,
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// Connection pools plus the cache of sensor ids (sensors are never deleted by Roost).
pub struct Store {
    pool: Pool,
    /// The connection ingest batches are written on, always the same one: SQLite keeps its
    /// page cache per connection and drops it when another connection has written.
    writer: Pool,
    url: DatabaseUrl,
    sensor_ids: Mutex<HashMap<SensorKey, i64>>,
    /// Batches written, to prune `ingest_commits` now and then.
    writes: std::sync::atomic::AtomicU64,
}

/// Runs `$body` with `$pool` bound to the backend's typed pool: the code is written once and
/// compiled per backend, so SQL logic has a single home.
/// `on_pool!(writer self, ...)` runs it on the ingest writer's connection.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        on_pool!(@match &$store.pool, $pool => $body)
    };
    (writer $store:expr, $pool:ident => $body:expr) => {
        on_pool!(@match &$store.writer, $pool => $body)
    };
    (@match $which:expr, $pool:ident => $body:expr) => {
        match $which {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
            Pool::MySql($pool) => $body,
        }
    };
}

mod batch;
mod tokens;
mod users;
pub use tokens::{TokenKind, TokenOwner, TokenRow};
pub use users::{Grant, UserError, UserRecord};

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared pool (connected now, so a bad URL fails at start) and the ingest writer's own
/// connections, one per concurrent batch (opened on the first writes, and kept).
async fn pools<DB: sqlx::Database>(
    options: <DB::Connection as sqlx::Connection>::Options,
    dialect: Dialect,
) -> Result<(sqlx::Pool<DB>, sqlx::Pool<DB>), sqlx::Error> {
    let shared = PoolOptions::<DB>::new().max_connections(4).acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options.clone()).await?;
    let writer = PoolOptions::<DB>::new()
        .max_connections(dialect.concurrent_writes() as u32)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options);
    Ok((shared, writer))
}

impl Store {
    /// Connects (creating a SQLite file if missing) and brings the schema up to date.
    pub async fn open(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    pub async fn connect(url: &DatabaseUrl) -> Result<Self, StoreError> {
        let driver_url = url.for_driver();
        let invalid = |source| StoreError::InvalidUrl { url: url.clone(), source };
        let connect = |source| StoreError::Connect { url: url.clone(), source };
        let (pool, writer) = match url.dialect() {
            Some(Dialect::Sqlite) => {
                // WAL with synchronous=FULL: a commit is on disk when it returns.
                let options = SqliteConnectOptions::from_str(&driver_url)
                    .map_err(invalid)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
                    // Statement journals (a multi-row statement's undo) in memory, not in a
                    // temporary file.
                    .pragma("temp_store", "memory")
                    // A batch from many sensors touches a page of the readings index and one of
                    // the rollups per sensor: keep those in memory (32 MiB, about 8,000 pages).
                    .pragma("cache_size", "-32768")
                    // Checkpoint every 10,000 WAL pages (40 MiB), not 1,000: a page rewritten by
                    // every batch is copied back once per checkpoint, so fewer checkpoints copy
                    // less.
                    .pragma("wal_autocheckpoint", "10000")
                    .page_size(1024);
                let (pool, writer) = pools(options, Dialect::Sqlite).await.map_err(connect)?;
                (Pool::Sqlite(pool), Pool::Sqlite(writer))
            }
            Some(Dialect::Postgres) => {
                let (pool, writer) =
                    pools(PgConnectOptions::from_str(&driver_url).map_err(invalid)?, Dialect::Postgres).await.map_err(connect)?;
                (Pool::Postgres(pool), Pool::Postgres(writer))
            }
            Some(Dialect::MySql) => {
                let (pool, writer) =
                    pools(MySqlConnectOptions::from_str(&driver_url).map_err(invalid)?, Dialect::MySql).await.map_err(connect)?;
                (Pool::MySql(pool), Pool::MySql(writer))
            }
            None => return Err(StoreError::UnsupportedUrl(url.clone())),
        };
        Ok(Self { pool, writer, url: url.clone(), sensor_ids: Mutex::default(), writes: Default::default() })
    }

    /// How many ingest batches may be written at once (see [`Dialect::concurrent_writes`]).
    pub fn concurrent_writes(&self) -> usize {
        self.dialect().concurrent_writes()
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::MySql(_) => Dialect::MySql,
        }
    }

    /// Creates or upgrades the schema; safe to run on every start.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let migrations = schema::migrations(self.dialect());
        on_pool!(self, pool => {
            sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                .execute(pool)
                .await
                .map_err(|source| StoreError::Migrate { version: 0, source })?;
            let current: Option<i64> = QueryBuilder::new("SELECT MAX(version) FROM schema_version")
                .build()
                .fetch_one(pool)
                .await
                .and_then(|row| row.try_get::<Option<i64>, _>(0))
                .map_err(|source| StoreError::Migrate { version: 0, source })?;
            let current = current.unwrap_or(0) as usize;
            for (index, statements) in migrations.iter().enumerate().skip(current) {
                let version = index + 1;
                let err = |source| StoreError::Migrate { version, source };
                let mut tx = pool.begin().await.map_err(err)?;
                for statement in *statements {
                    sqlx::query(statement).execute(&mut *tx).await.map_err(err)?;
                }
                QueryBuilder::new("INSERT INTO schema_version (version) VALUES (")
                    .push_bind(version as i64)
                    .push(")")
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                tx.commit().await.map_err(err)?;
                tracing::info!(version, database = %self.url, "schema migrated");
            }
            Ok(migrations.len())
        })
    }

    pub async fn count_readings(&self) -> Result<i64, StoreError> {
        self.count_rows("readings", "counting readings").await
    }

    /// `SELECT COUNT(*)` of one of our tables (a name from this module, never user input).
    async fn count_rows(&self, table: &'static str, doing: &'static str) -> Result<i64, StoreError> {
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
            let rows = QueryBuilder::new(
                "SELECT id, owner, place, category, last_value, last_seen FROM sensors ORDER BY owner, place, category",
            )
            .build()
            .fetch_all(pool)
            .await
            .map_err(query_err("listing sensors"))?;
            decode_rows(&rows, "reading sensors", |row| {
                    Ok(SensorRow {
                        id: row.try_get(0)?,
                        key: SensorKey { owner: row.try_get(1)?, place: row.try_get(2)?, category: row.try_get(3)? },
                        last_value: row.try_get(4)?,
                        last_seen: row.try_get::<Option<i64>, _>(5)?.map(TimestampMs),
                    })
                })
        })
    }

    /// Readings of one sensor with `from <= ts < to`, oldest first.
    pub async fn readings(&self, sensor: &SensorKey, from: TimestampMs, to: TimestampMs) -> Result<Vec<(TimestampMs, f64)>, StoreError> {
        on_pool!(self, pool => {
            let rows = QueryBuilder::new(
                "SELECT r.ts, r.value FROM readings r JOIN sensors s ON s.id = r.sensor_id WHERE s.owner = ",
            )
            .push_bind(sensor.owner.as_str())
            .push(" AND s.place = ").push_bind(sensor.place.as_str())
            .push(" AND s.category = ").push_bind(sensor.category.as_str())
            .push(" AND r.ts >= ").push_bind(from.0)
            .push(" AND r.ts < ").push_bind(to.0)
            .push(" ORDER BY r.ts")
            .build()
            .fetch_all(pool)
            .await
            .map_err(query_err("reading a sensor's history"))?;
            decode_rows(&rows, "decoding readings", |row| Ok((TimestampMs(row.try_get(0)?), row.try_get(1)?)))
        })
    }

    /// Every stored value of every sensor, for verification (tests, `roost bench`).
    pub async fn all_values(&self) -> Result<Vec<(SensorKey, f64)>, StoreError> {
        on_pool!(self, pool => {
            let rows = QueryBuilder::new(
                "SELECT s.owner, s.place, s.category, r.value FROM readings r JOIN sensors s ON s.id = r.sensor_id",
            )
            .build()
            .fetch_all(pool)
            .await
            .map_err(query_err("reading all values"))?;
            decode_rows(&rows, "decoding values", |row| Ok((SensorKey { owner: row.try_get(0)?, place: row.try_get(1)?, category: row.try_get(2)? }, row.try_get(3)?)))
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

    /// Checks the database answers (for `/healthz` and start-up).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(query_err("pinging")))
    }

    pub async fn close(&self) {
        on_pool!(writer self, pool => pool.close().await);
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_passwords() {
        let url = DatabaseUrl::new("postgres://roost:s3cret@db.lan:5432/roost");
        assert_eq!(url.to_string(), "postgres://roost:***@db.lan:5432/roost");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(DatabaseUrl::new("sqlite://roost.db").to_string(), "sqlite://roost.db");
    }

    #[test]
    fn schemes_select_the_dialect() {
        assert_eq!("mariadb://root@127.0.0.1/test".parse::<DatabaseUrl>().unwrap().dialect(), Some(Dialect::MySql));
        assert_eq!(DatabaseUrl::new("mariadb://x@h/db").for_driver(), "mysql://x@h/db");
        assert!("redis://localhost".parse::<DatabaseUrl>().unwrap_err().contains("is not a sqlite://"));
    }
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
        on_pool!(self, pool => QueryBuilder::new("SELECT id FROM sensors WHERE owner = ")
            .push_bind(sensor.owner.as_str())
            .push(" AND place = ").push_bind(sensor.place.as_str())
            .push(" AND category = ").push_bind(sensor.category.as_str())
            .build()
            .fetch_optional(pool)
            .await
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(query_err("looking up a sensor")))
    }

    /// Deletes sensors with all their readings and rollups, in one transaction (`roost bench`
    /// cleans up after itself). A running server keeps the ids in its cache, so only delete
    /// sensors that will not be published to again.
    pub async fn delete_sensors(&self, sensors: &[SensorKey]) -> Result<u64, StoreError> {
        let mut ids = Vec::with_capacity(sensors.len());
        for sensor in sensors {
            ids.extend(self.sensor_id(sensor).await?);
        }
        if ids.is_empty() {
            return Ok(0);
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_err("starting a transaction"))?;
            for table in ["readings", "readings_1m", "sensors"] {
                let column = if table == "sensors" { "id" } else { "sensor_id" };
                let mut query = QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
                let mut list = query.separated(", ");
                for id in &ids {
                    list.push_bind(*id);
                }
                query.push(")").build().execute(&mut *tx).await.map_err(query_err("deleting sensors"))?;
            }
            tx.commit().await.map_err(query_err("committing the deletion"))?;
            Ok(ids.len() as u64)
        })
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
            let rows = QueryBuilder::new("SELECT ts, value FROM readings WHERE sensor_id = ")
                .push_bind(sensor_id)
                .push(" AND ts >= ").push_bind(from.0)
                .push(" AND ts < ").push_bind(to.0)
                .push(" ORDER BY ts LIMIT ").push_bind(limit)
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("reading a sensor's history"))?;
            decode_rows(&rows, "decoding readings", |row| Ok((row.try_get(0)?, row.try_get(1)?)))
        })
    }

    /// Min/avg/max/count of a sensor's readings in buckets of `width_ms` from `from` to `to`;
    /// empty buckets are left out. The database does the grouping, so a month of 1-second
    /// data comes back as a few hundred rows.
    ///
    /// Buckets of at least [`ROLLUP_MIN_BUCKET_MS`] are computed from the per-minute rollups
    /// (`readings_1m`): min, max, mean and count stay exact, and each minute counts in the bucket
    /// where it starts (so a bucket edge is exact to the minute).
    pub async fn buckets(&self, sensor_id: i64, from: TimestampMs, to: TimestampMs, width_ms: i64) -> Result<Vec<Bucket>, StoreError> {
        // Integer division: `/` on integers in SQLite and PostgreSQL, `DIV` in MySQL/MariaDB.
        let div = if self.dialect() == Dialect::MySql { " DIV " } else { " / " };
        let (time, aggregates, table): (&str, &str, &str) = if width_ms >= ROLLUP_MIN_BUCKET_MS {
            // SUM of integers is NUMERIC/DECIMAL on PostgreSQL and MariaDB: cast it back.
            let aggregates = match self.dialect() {
                Dialect::Sqlite => " AS bucket, MIN(min), SUM(sum) / SUM(count), MAX(max), SUM(count) FROM readings_1m",
                Dialect::Postgres => " AS bucket, MIN(min), SUM(sum) / CAST(SUM(count) AS DOUBLE PRECISION), MAX(max), CAST(SUM(count) AS BIGINT) FROM readings_1m",
                Dialect::MySql => " AS bucket, MIN(min), SUM(sum) / SUM(count), MAX(max), CAST(SUM(count) AS SIGNED) FROM readings_1m",
            };
            ("minute", aggregates, "minute")
        } else {
            ("ts", " AS bucket, MIN(value), AVG(value), MAX(value), COUNT(*) FROM readings", "ts")
        };
        // The first minute may start before `from`: it counts in the first bucket (the division
        // truncates toward zero, and the width is over a minute).
        let lower = if table == "minute" { from.0 - from.0.rem_euclid(60_000) } else { from.0 };
        on_pool!(self, pool => {
            let rows = QueryBuilder::new(format!("SELECT ({time} - "))
                .push_bind(from.0)
                .push(")").push(div).push_bind(width_ms)
                .push(aggregates)
                .push(" WHERE sensor_id = ")
                .push_bind(sensor_id)
                .push(format!(" AND {table} >= ")).push_bind(lower)
                .push(format!(" AND {table} < ")).push_bind(to.0)
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
    /// size; stops early when the receiver is gone.
    pub async fn stream_readings(
        &self,
        sensor_id: i64,
        from: TimestampMs,
        to: TimestampMs,
        chunks: tokio::sync::mpsc::Sender<Result<Vec<(i64, f64)>, StoreError>>,
    ) {
        use futures_util::TryStreamExt;
        const CHUNK: usize = 4096;
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT ts, value FROM readings WHERE sensor_id = ");
            query.push_bind(sensor_id).push(" AND ts >= ").push_bind(from.0).push(" AND ts < ").push_bind(to.0).push(" ORDER BY ts");
            let mut rows = query.build().fetch(pool);
            let mut chunk = Vec::with_capacity(CHUNK);
            loop {
                match rows.try_next().await {
                    Ok(Some(row)) => match (row.try_get::<i64, _>(0), row.try_get::<f64, _>(1)) {
                        (Ok(ts), Ok(value)) => chunk.push((ts, value)),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = chunks.send(Err(query_err("decoding an export")(e))).await;
                            return;
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        let _ = chunks.send(Err(query_err("exporting readings")(e))).await;
                        return;
                    }
                }
                if chunk.len() == CHUNK && chunks.send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))).await.is_err() {
                    return;
                }
            }
            if !chunk.is_empty() {
                let _ = chunks.send(Ok(chunk)).await;
            }
        })
    }

    /// Counts for the stats endpoint: sensors, readings, rejects.
    pub async fn counts(&self) -> Result<(i64, i64, i64), StoreError> {
        on_pool!(self, pool => {
            let row = QueryBuilder::new("SELECT (SELECT COUNT(*) FROM sensors), (SELECT COUNT(*) FROM readings), (SELECT COUNT(*) FROM rejects)")
                .build()
                .fetch_one(pool)
                .await
                .map_err(query_err("counting"))?;
            (|| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))().map_err(query_err("decoding counts"))
        })
    }
}
