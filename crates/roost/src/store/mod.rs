//! The database: SQLite (embedded default), PostgreSQL, MariaDB/MySQL. The only module that
//! knows SQL. Each operation is written once (`on_pool!` instantiates it per backend); the
//! dialect differences are the DDL in `schema` and the upserts of `batch` (which writes ingest
//! batches). Reads are in `queries`, accounts in `users` and `tokens`, URLs in `url`. What a
//! failed write means for its records is decided in `failure`.

mod failure;
mod schema;
mod sqlite_writer;
#[cfg(test)]
mod staging_tests;
mod url;

pub use failure::Failure;
pub use url::{DatabaseUrl, Dialect};

use crate::model::{Level, Reading, Reject, SensorKey, TimestampMs, UpstreamDelivery};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{QueryBuilder, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0}: use sqlite://FILE, postgres://... or mysql:// (mariadb://)")]
    UnsupportedUrl(DatabaseUrl),
    #[error("no database at {0}: run this where `roost serve` keeps its database, name it with --database (ROOST_DATABASE), or create it with `roost migrate`")]
    NoDatabase(String),
    // The cause is part of the message, and not also `source()`: a report of the chain would
    // say it twice.
    #[error("invalid database URL {url}: {cause}")]
    InvalidUrl { url: DatabaseUrl, cause: sqlx::Error },
    #[error("connecting to {url}: {cause}")]
    Connect { url: DatabaseUrl, cause: sqlx::Error },
    #[error("migrating the schema to version {version}: {cause}")]
    Migrate { version: usize, cause: sqlx::Error },
    /// The database was migrated by a newer Roost: this one would misread it.
    #[error("the database's schema is version {found}, newer than this Roost knows (version {known}): a newer Roost upgraded it. Run that version (or newer), or restore the backup taken before the upgrade")]
    NewerSchema { found: usize, known: usize },
    #[error("database error while {doing}: {cause}")]
    Query { doing: &'static str, cause: sqlx::Error },
    /// From the SQLite ingest writer's own connection (`sqlite_writer`).
    #[error("database error while {doing}: {cause}")]
    Sqlite { doing: &'static str, cause: rusqlite::Error },
    /// A sensor a batch names was deleted after the batch was planned (PostgreSQL: its
    /// readings have no foreign key to say so). The batch is planned again at once.
    #[error("a sensor was deleted while a batch of its readings was written")]
    SensorDeleted,
    /// An export's reader took nothing for this long: its database connection was given back.
    #[error("the export was ended: its download took nothing for {0:?}")]
    ExportStalled(Duration),
}

fn query_err(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |cause| StoreError::Query { doing, cause }
}

/// Decodes every row with `decode`; a column that does not decode fails the whole answer.
fn decode_rows<R, T>(rows: &[R], doing: &'static str, decode: impl Fn(&R) -> Result<T, sqlx::Error>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(decode).collect::<Result<Vec<_>, _>>().map_err(query_err(doing))
}

/// The sensor key in the three columns of `row` from `first` on (owner, place, category).
fn sensor_key_at<'r, R>(row: &'r R, first: usize) -> Result<SensorKey, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let level = |i: usize| row.try_get::<&str, _>(first + i).map(Level::from);
    Ok(SensorKey { owner: level(0)?, place: level(1)?, category: level(2)? })
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
    /// The upstream messages these came from (`serve --upstream`), recorded with them.
    pub deliveries: Vec<UpstreamDelivery>,
}

/// A sensor with its latest reading.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorRow {
    pub id: i64,
    pub key: SensorKey,
    pub last_value: Option<f64>,
    pub last_seen: Option<TimestampMs>,
    pub settings: SensorSettings,
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

/// The sensor-id cache: looked up for every reading of every batch, so hashed with ahash
/// (keyed per process) rather than SipHash.
type SensorIds = HashMap<SensorKey, i64, ahash::RandomState>;

/// Connection pools plus the cache of sensor ids (`delete_sensor` removes a deleted one).
pub struct Store {
    pool: Pool,
    /// The connection ingest batches are written on, always the same one: SQLite keeps its
    /// page cache per connection and drops it when another connection has written.
    writer: Pool,
    url: DatabaseUrl,
    sensor_ids: Mutex<SensorIds>,
    /// Batches written, to prune `ingest_commits` now and then.
    writes: std::sync::atomic::AtomicU64,
    /// SQLite has one writer at a time. The ingest writer and the lifecycle's deletes take
    /// turns here, in order, rather than in SQLite's busy handler, which sleeps up to 100 ms
    /// between tries (measured: a purge beside ingest took p99 from 14 to 206 ms that way).
    sqlite_write_turn: tokio::sync::Mutex<()>,
    /// Exports running at once, at most (`Store::stream_readings`): each holds a connection of
    /// the shared pool for as long as its download takes, and logins, API requests and the
    /// broker's state need the others.
    exports: tokio::sync::Semaphore,
    /// SQLite's ingest batches are written by a thread of their own (a database file; an
    /// in-memory one is written through `writer`).
    sqlite_writer: Option<sqlite_writer::SqliteWriter>,
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

mod alerts;
mod batch;
mod broker_state;
mod cluster;
mod fold;
mod lifecycle;
mod queries;
mod tokens;
mod users;
pub use alerts::{AlertRuleError, AlertWrite};
pub use broker_state::{QueueRow, SessionRow, StateBatch, StoredBrokerState, StoredMessage, SubscriptionRow, WillRow};
pub use cluster::{DeliveryRow, Notifications};
pub use fold::Folded;
pub use lifecycle::{in_chunks, DatabaseSize, SensorChange, SensorSettings, Series, PURGE_CHUNK};
pub use queries::Bucket;
pub use tokens::{TokenKind, TokenOwner, TokenRow};
pub use users::{Grant, UserError, UserRecord};

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The shared pool's connections.
const SHARED_CONNECTIONS: u32 = 4;
/// Exports running at once: half the shared pool.
const EXPORTS_AT_ONCE: usize = SHARED_CONNECTIONS as usize / 2;

/// The shared pool (connected now, so a bad URL fails at start) and the ingest writer's own
/// connections, one per concurrent batch (opened on the first writes, and kept).
async fn pools<DB: sqlx::Database>(
    options: <DB::Connection as sqlx::Connection>::Options,
    dialect: Dialect,
) -> Result<(sqlx::Pool<DB>, sqlx::Pool<DB>), sqlx::Error> {
    // One direct connection first: a server that refuses, an unknown host or a wrong password
    // is reported at once and as itself (a pool retries for its acquire timeout and then says
    // only that it timed out).
    sqlx::Connection::close(<DB::Connection as sqlx::Connection>::connect_with(&options).await?).await?;
    let shared =
        PoolOptions::<DB>::new().max_connections(SHARED_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT).connect_with(options.clone()).await?;
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

    /// Opens a database that must exist already: for the commands that work on the one `roost
    /// serve` uses (`user`, `token`, `bench`), which must not quietly create an empty SQLite
    /// file somewhere else.
    pub async fn open_existing(url: &DatabaseUrl) -> Result<Self, StoreError> {
        if let Some(file) = url.sqlite_file() {
            if !file.exists() {
                let shown = std::path::absolute(&file).unwrap_or(file);
                return Err(StoreError::NoDatabase(shown.display().to_string()));
            }
        }
        let store = Self::open(url).await?;
        tracing::info!(database = %url, "using this database");
        Ok(store)
    }

    pub async fn connect(url: &DatabaseUrl) -> Result<Self, StoreError> {
        Self::connect_staging(url, sqlite_writer::StagingPeriods::default()).await
    }

    /// `open`, with the SQLite writer's moves of staged readings on `periods` (tests).
    #[cfg(test)]
    pub(crate) async fn open_staging(url: &DatabaseUrl, periods: sqlite_writer::StagingPeriods) -> Result<Self, StoreError> {
        let store = Self::connect_staging(url, periods).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn connect_staging(url: &DatabaseUrl, periods: sqlite_writer::StagingPeriods) -> Result<Self, StoreError> {
        let driver_url = url.for_driver();
        let invalid = |cause| StoreError::InvalidUrl { url: url.clone(), cause };
        let connect = |cause| StoreError::Connect { url: url.clone(), cause };
        let mut sqlite_writer = None;
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
                    // Checkpoint every 10,000 WAL pages, not 1,000: a page rewritten by every
                    // batch is copied back once per checkpoint, so fewer checkpoints copy less
                    // (the ingest writer's own connection lets the log grow further:
                    // `sqlite_writer::CHECKPOINT_AFTER_WAL_BYTES`).
                    .pragma("wal_autocheckpoint", "10000")
                    // New databases give pages freed by purges back to the file system
                    // (`Store::vacuum_step`); on an existing file this changes nothing.
                    .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental)
                    .page_size(1024);
                // The writer thread opens the file sqlx resolved (percent-decoded); a URL asking for
                // another mode (in memory, read-only) stays on sqlx's connections.
                let file = options.get_filename().to_owned();
                let query = driver_url.split_once('?').map(|(_, query)| query).unwrap_or_default();
                let own_thread = url.sqlite_file().is_some() && !query.contains("mode=memory") && !query.contains("mode=ro");
                let (pool, writer) = pools(options, Dialect::Sqlite).await.map_err(connect)?;
                if own_thread {
                    sqlite_writer = Some(sqlite_writer::SqliteWriter::start(&file, periods).await?);
                }
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
        Ok(Self {
            pool,
            writer,
            url: url.clone(),
            sensor_ids: Mutex::default(),
            writes: Default::default(),
            sqlite_write_turn: tokio::sync::Mutex::new(()),
            exports: tokio::sync::Semaphore::new(EXPORTS_AT_ONCE),
            sqlite_writer,
        })
    }

    /// The turn to write on SQLite (held for one transaction); `None` on the server databases,
    /// whose row locks let a purge of old rows and inserts of new ones run side by side.
    async fn sqlite_write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.sqlite_write_turn.lock().await),
            _ => None,
        }
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
        // Nodes that start together on one server database migrate one after the other: a
        // session lock, held by the connection that migrates (and gone with it).
        let (lock, unlock) = match self.dialect() {
            Dialect::Postgres => (Some("SELECT 1::BIGINT FROM pg_advisory_lock(7346863)"), "SELECT pg_advisory_unlock(7346863)"),
            Dialect::MySql => (Some("SELECT CAST(GET_LOCK('roost_migrate', 600) AS SIGNED)"), "SELECT RELEASE_LOCK('roost_migrate')"),
            Dialect::Sqlite => (None, ""),
        };
        on_pool!(self, pool => {
            let setup = |cause| StoreError::Migrate { version: 0, cause };
            let mut conn = pool.acquire().await.map_err(setup)?;
            // On any error the connection is closed, not given back to the pool: that ends its
            // session, and with it the migration lock, which would otherwise stay held by an
            // idle pooled connection (and `pg_advisory_lock` waits for ever).
            let migrated: Result<(), StoreError> = async {
                if let Some(lock) = lock {
                    // 1 when taken; MariaDB's GET_LOCK gives 0 on timeout and NULL on error.
                    let taken: Option<i64> = sqlx::query_scalar(lock).fetch_one(&mut *conn).await.map_err(setup)?;
                    if taken != Some(1) {
                        return Err(StoreError::Migrate { version: 0, cause: sqlx::Error::Protocol("another process held the migration lock for 10 minutes".into()) });
                    }
                }
                sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                    .execute(&mut *conn)
                    .await
                    .map_err(setup)?;
                let current: Option<i64> = QueryBuilder::new("SELECT MAX(version) FROM schema_version")
                    .build()
                    .fetch_one(&mut *conn)
                    .await
                    .and_then(|row| row.try_get::<Option<i64>, _>(0))
                    .map_err(setup)?;
                let current = current.unwrap_or(0) as usize;
                if current > migrations.len() {
                    return Err(StoreError::NewerSchema { found: current, known: migrations.len() });
                }
                for (index, statements) in migrations.iter().enumerate().skip(current) {
                    let version = index + 1;
                    let err = |cause| StoreError::Migrate { version, cause };
                    let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(err)?;
                    for statement in *statements {
                        match sqlx::query(statement).execute(&mut *tx).await {
                            // MariaDB commits each DDL statement on its own: a start cut off in the
                            // middle of a migration left its first statements done and its version
                            // unrecorded. Run again, such a statement finds its change there. Only
                            // the first migration not recorded can have been cut off so.
                            Err(e) if self.dialect() == Dialect::MySql && version == current + 1 && failure::already_applied_on_mysql(&e) => {
                                tracing::info!(version, statement, error = %e, "a statement of an interrupted migration had run; going on");
                            }
                            done => {
                                done.map_err(err)?;
                            }
                        }
                    }
                    QueryBuilder::new("INSERT INTO schema_version (version) VALUES (")
                        .push_bind(version as i64)
                        .push(")")
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                    tx.commit().await.map_err(err)?;
                    // A new database is created in one line below; an upgrade reports each step
                    // (some take seconds on a large database).
                    if current > 0 {
                        tracing::info!(version, database = %self.url, "schema migrated");
                    }
                }
                if current == 0 {
                    tracing::info!(version = migrations.len(), database = %self.url, "schema created");
                }
                if lock.is_some() {
                    sqlx::query(unlock).execute(&mut *conn).await.map_err(setup)?;
                }
                Ok(())
            }
            .await;
            if migrated.is_err() {
                conn.close_on_drop();
            }
            migrated?;
            Ok(migrations.len())
        })
    }

    /// Checks the database answers (for `/healthz` and start-up).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(query_err("pinging")))
    }

    pub async fn close(&self) {
        if let Some(writer) = &self.sqlite_writer {
            writer.close().await;
        }
        on_pool!(writer self, pool => pool.close().await);
        on_pool!(self, pool => pool.close().await)
    }
}
