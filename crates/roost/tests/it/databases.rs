//! Test databases: a fresh SQLite file, or a fresh database on the PostgreSQL / MariaDB server
//! named by `ROOST_TEST_POSTGRES_URL` / `ROOST_TEST_MYSQL_URL` (set by `.ci/run`). A missing
//! variable fails the test: nothing is skipped silently.

use roost::store::DatabaseUrl;
use sqlx::Connection;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MariaDb,
}

pub struct TestDb {
    pub url: DatabaseUrl,
    /// The server part (`postgres://user@host:port`) for proxying; `None` for SQLite.
    pub server: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("roost_t_{}_{}_{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn admin_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the tests with .ci/run, which sets it for this machine's server"))
}

/// `scheme://user@host:port/db` → (`scheme://user@`, `host:port`).
fn split_server(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (credentials, rest) = rest.rsplit_once('@').map(|(c, r)| (format!("{c}@"), r)).unwrap_or((String::new(), rest));
    let host = rest.split('/').next().unwrap();
    (format!("{scheme}://{credentials}"), host.to_owned())
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = DatabaseUrl::new(format!("sqlite://{}", dir.path().join("roost.db").display()));
                Self { url, server: None, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let admin = admin_url("ROOST_TEST_POSTGRES_URL");
                let name = unique_name();
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
                let (prefix, host) = split_server(&admin);
                Self { url: DatabaseUrl::new(format!("{prefix}{host}/{name}")), server: Some((prefix, host)), _dir: None }
            }
            Backend::MariaDb => {
                let admin = admin_url("ROOST_TEST_MYSQL_URL");
                let name = unique_name();
                let mut conn = sqlx::MySqlConnection::connect(&admin.replacen("mariadb:", "mysql:", 1))
                    .await
                    .unwrap_or_else(|e| panic!("MariaDB at {admin}: {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
                let (prefix, host) = split_server(&admin);
                Self { url: DatabaseUrl::new(format!("{prefix}{host}/{name}")), server: Some((prefix, host)), _dir: None }
            }
        }
    }

    /// Runs one statement on this database through a connection of its own (for a test to
    /// put the database in a state Roost would not leave it in).
    pub async fn execute(&self, sql: &str) {
        let url = self.url.expose_secret();
        match url.split_once("://").map(|(scheme, _)| scheme) {
            Some("sqlite") => sqlx::query(sql).execute(&mut sqlx::SqliteConnection::connect(url).await.unwrap()).await.map(drop),
            Some("postgres") => sqlx::query(sql).execute(&mut sqlx::PgConnection::connect(url).await.unwrap()).await.map(drop),
            _ => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                sqlx::query(sql).execute(&mut sqlx::MySqlConnection::connect(&url).await.unwrap()).await.map(drop)
            }
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// On PostgreSQL and MariaDB: polls (for up to `WAIT`) until a session on this database waits
    /// on a lock, or `finished` says the task expected to wait is done (wrongly, without
    /// waiting). Whether a wait was seen.
    pub async fn until_a_session_waits_on_a_lock(&self, finished: impl Fn() -> bool) -> bool {
        use sqlx::Row;
        let url = self.url.expose_secret().replacen("mariadb:", "mysql:", 1);
        // One watcher connection, asked every 25 ms.
        macro_rules! poll {
            ($conn:ty, |$watcher:ident| $waiting:expr) => {{
                let mut $watcher = <$conn>::connect(&url).await.unwrap();
                let deadline = tokio::time::Instant::now() + crate::support::WAIT;
                while tokio::time::Instant::now() < deadline {
                    if $waiting {
                        return true;
                    }
                    if finished() {
                        return false;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                false
            }};
        }
        if url.starts_with("postgres") {
            const WAITING: &str = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
            poll!(sqlx::PgConnection, |watcher| sqlx::query(WAITING).fetch_one(&mut watcher).await.unwrap().get::<i64, _>(0) > 0)
        } else {
            poll!(sqlx::MySqlConnection, |watcher| mysql_session_waits_on_a_lock(&mut watcher).await)
        }
    }

    /// The same database reached through `proxy_addr` instead of the server's own address.
    pub fn via(&self, proxy_addr: std::net::SocketAddr) -> DatabaseUrl {
        let (prefix, host) = self.server.as_ref().expect("only server databases can be proxied");
        DatabaseUrl::new(self.url.expose_secret().replacen(&format!("{prefix}{host}"), &format!("{prefix}{proxy_addr}"), 1))
    }
}

/// Generates one `#[tokio::test]` per backend for each listed `async fn name(Backend)`.
#[macro_export]
macro_rules! on_every_database {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $test() { super::$test($crate::databases::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $test() { super::$test($crate::databases::Backend::Postgres).await } )*
        }
        mod mariadb {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $test() { super::$test($crate::databases::Backend::MariaDb).await } )*
        }
    };
}

/// Whether a session on the watcher's MariaDB database waits on a row lock: InnoDB's
/// transactions (of sessions on this database: tests run side by side), or, where those do not
/// show it (an `INSERT … SELECT` waiting to insert was missing from them), InnoDB's status
/// report, whose waits name their table with its database.
async fn mysql_session_waits_on_a_lock(watcher: &mut sqlx::MySqlConnection) -> bool {
    use sqlx::Row;
    const WAITING: &str = "SELECT COUNT(*) FROM information_schema.INNODB_TRX t \
        JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
        WHERE t.trx_state = 'LOCK WAIT' AND p.DB = DATABASE()";
    if sqlx::query(WAITING).fetch_one(&mut *watcher).await.unwrap().get::<i64, _>(0) > 0 {
        return true;
    }
    let database: String = sqlx::query_scalar("SELECT DATABASE()").fetch_one(&mut *watcher).await.unwrap();
    let (_, _, status): (String, String, String) = sqlx::query_as("SHOW ENGINE INNODB STATUS").fetch_one(&mut *watcher).await.unwrap();
    let of_this_database = format!(" of table `{database}`.");
    status.lines().any(|line| line.contains(&of_this_database) && line.ends_with("waiting"))
}
