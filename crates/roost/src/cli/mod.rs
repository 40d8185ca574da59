//! The command line: `roost serve`, `migrate`, `simulate`, `bench`, `user`, `token` and their
//! options. Flags beat environment variables. One naming scheme: a flag `--foo-bar`, its
//! environment variable `ROOST_FOO_BAR` and its config file key `foo_bar`; addresses Roost
//! listens on end in `-listen`, a broker to connect to is `--broker URL`; every duration takes a
//! unit. Names used before are accepted for one release, with a warning (`renamed`).

pub mod renamed;

use crate::api::NormalRange;
use crate::ingest::TopicTemplate;
use crate::lifecycle::RetentionRule;
use crate::model::Keep;
use crate::model::TimestampMs;
use crate::mqtt_client::{BrokerUrl, ClientSettings};
use crate::settings::{parse_duration, parse_keep};
use crate::store::DatabaseUrl;
use crate::transfer::Format;
use clap::{Args, Parser, Subcommand};
use mqtt_codec::TopicFilter;
use rumqttc::QoS;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "roost", version, about = "Self-hosted IoT sensor hub: MQTT broker, durable ingest, dashboard")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Roost: the MQTT broker (TCP and WebSocket) and durable ingest into the database.
    Serve(Box<ServeArgs>),
    /// Create or upgrade the database schema, then exit (`serve` also does this at start).
    Migrate(DatabaseArgs),
    /// Run virtual NodeMCU boards (DHT11 temperature/humidity, CdS light) that publish
    /// readings to a broker, like real ones would.
    Simulate(SimulateArgs),
    /// Check an installation: publish numbered readings, time the acknowledgements, then
    /// verify in the database that every acknowledged reading was stored.
    Bench(BenchArgs),
    /// Write readings to standard output as CSV or JSON Lines: a backup, a spreadsheet, or the
    /// way to another database (`roost import`). Progress on a terminal, a summary at the end.
    Export(ExportArgs),
    /// Load readings from a file written by `roost export` (or in its format) into the database:
    /// any of SQLite, PostgreSQL, MariaDB. Readings already stored are skipped, so importing a
    /// file twice adds nothing.
    Import(ImportArgs),
    /// Manage user accounts (MQTT and dashboard logins) in the database `serve` uses.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens (`Authorization: Bearer …` for scripts) in the database `serve` uses.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a token that acts as USER; it is shown once.
    Create {
        user: String,
        /// What it is for, shown by `list`.
        #[arg(long, default_value = "api")]
        name: String,
        /// How long until it expires, with a unit: e.g. 90d or 12h (at most 3650d). [default: never]
        #[arg(long, value_parser = parse_lifetime, value_name = "DURATION")]
        expires_in: Option<Duration>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List API tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a token by the id `list` shows; it stops working at once.
    Revoke {
        id: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create a user. A device user may publish and subscribe under iot/NAME/# only; an admin
    /// everywhere. Without --password-stdin a random password is generated and shown once.
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List users, their role and extra grants (never passwords).
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Delete a user and their grants.
    Remove {
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Set a new password (random and shown once, unless --password-stdin).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Also let a user publish and subscribe under a topic filter, e.g. home/+/cmd.
    Grant {
        name: String,
        filter: String,
        /// Publish only.
        #[arg(long, conflicts_with = "subscribe_only")]
        publish_only: bool,
        /// Subscribe only.
        #[arg(long)]
        subscribe_only: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Take back a grant.
    Revoke {
        name: String,
        filter: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Where a client connects and as whom. `Debug` leaves the password out.
#[derive(Clone, Args)]
pub struct ClientArgs {
    /// The broker to connect to: mqtt://HOST[:PORT], mqtts://…, ws://HOST[:PORT]/mqtt or
    /// wss://…. [default: the `roost serve` running from --data-dir, else mqtt://127.0.0.1:1883]
    #[arg(long = "broker", env = "ROOST_BROKER", default_value = "mqtt://127.0.0.1:1883", value_name = "URL", hide_default_value = true)]
    pub url: BrokerUrl,
    /// User name for CONNECT.
    #[arg(long, env = "ROOST_USERNAME")]
    pub username: Option<String>,
    /// Password for CONNECT (prefer the environment variable: flags show up in `ps`).
    #[arg(long, env = "ROOST_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// PEM file with the CA of the broker's TLS certificate (mqtts://, wss://); without it the
    /// system's trusted roots are used.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// MQTT version to speak: 3.1.1 (what PubSubClient boards speak) or 5.
    #[arg(long, value_enum, default_value = "3.1.1", env = "ROOST_PROTOCOL")]
    pub protocol: crate::mqtt_client::Protocol,
}

/// The same fields as `ClientSettings`, whose `Debug` redacts the password.
impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.settings(), f)
    }
}

impl ClientArgs {
    pub fn settings(&self) -> ClientSettings {
        let mut settings = ClientSettings::new(self.url.clone());
        settings.username = self.username.clone();
        settings.password = self.password.clone();
        settings.ca_file = self.ca_file.clone();
        settings.protocol = self.protocol;
        settings
    }
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    #[command(flatten)]
    pub dir: DataDirArgs,

    /// Owner in the topics. [default: the --username, else "demo"]
    #[arg(long)]
    pub owner: Option<String>,

    /// Number of boards; they are placed in livingroom, bedroom, kitchen, study, … .
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub devices: u32,

    /// Time between two reads of a board's sensors, e.g. 5s or 1m (each read publishes three
    /// readings).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Load mode: readings per second over all boards, instead of --interval.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// QoS of the publishes: 0, 1 or 2.
    #[arg(long, default_value = "1", value_parser = parse_qos)]
    pub qos: QoS,

    /// Stop after this many live readings in total (--backfill history not counted).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Stop after this long, e.g. 90s, 10m, 2h.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Share of sensor reads that fail, 0 to 1: a failed DHT11 read is published as "nan" (as
    /// a naive sketch does), a loose CdS wire as 1023.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub glitches: f64,

    /// Before going live, publish this much history with timestamps (e.g. 24h), so charts
    /// have something to show at once.
    #[arg(long, value_parser = parse_duration)]
    pub backfill: Option<Duration>,

    /// Random seed, for repeatable runs. [default: random]
    #[arg(long)]
    pub seed: Option<u64>,

    /// Topic template the boards publish on; must contain {category}.
    #[arg(long, default_value = "iot/{owner}/sensor/{place}/{category}")]
    pub template: TopicTemplate,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub client: ClientArgs,

    /// The database `roost serve` writes to, read back to verify the acknowledged readings.
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Concurrent MQTT clients.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,

    /// Readings in total.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// Readings per second over all clients. [default: flat out]
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// QoS 1 or 2 (QoS 0 is never acknowledged, so it cannot be verified).
    #[arg(long, default_value = "1", value_parser = parse_qos)]
    pub qos: QoS,

    /// Unacknowledged publishes per client.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,

    /// Owner in the bench's topics; each run publishes under places named run<time>-c<client>.
    /// [default: the --username (a device user may only publish under its own name), else
    /// "roost-bench"]
    #[arg(long)]
    pub owner: Option<String>,

    /// Keep the bench's sensors and readings in the database (they are deleted by default).
    #[arg(long)]
    pub keep: bool,

    /// Topic template the server ingests; must contain {category}.
    #[arg(long, default_value = "iot/{owner}/sensor/{place}/{category}")]
    pub template: TopicTemplate,
}

/// A listening address: an IP address and a port (`0.0.0.0:1883`, `127.0.0.1:0`, `[::]:1883`).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address and port, e.g. 0.0.0.0:1883 (every interface) or 127.0.0.1:0 (any free port)"))
}

/// Longest API token lifetime, in days (the API's `days` has the same limit).
pub const MAX_TOKEN_DAYS: u32 = 3650;

/// A token's lifetime: a duration with a unit, at most [`MAX_TOKEN_DAYS`]. A bare number is
/// refused: `--days 30` meant days, and 30 seconds would be a surprise.
fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if !text.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("{s:?} needs a unit, e.g. 90d or 12h"));
    }
    match text.strip_suffix('d').map(|n| n.trim().parse::<f64>()) {
        Some(Ok(days)) if days > 0.0 && days <= f64::from(MAX_TOKEN_DAYS) => Ok(Duration::from_secs_f64(days * 86_400.0)),
        Some(Ok(_)) => Err(format!("{s:?}: a token lives at most {MAX_TOKEN_DAYS}d")),
        _ => parse_duration(text),
    }
}

fn parse_qos(s: &str) -> Result<QoS, String> {
    match s {
        "0" => Ok(QoS::AtMostOnce),
        "1" => Ok(QoS::AtLeastOnce),
        "2" => Ok(QoS::ExactlyOnce),
        _ => Err(format!("{s:?} is not a QoS: use 0, 1 or 2")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0 => Ok(rate),
        _ => Err(format!("{s:?} is not a rate in readings per second (above 0, at most 10,000,000)")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction between 0 and 1 (0.01 = one read in a hundred)")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Readings from this time on: RFC 3339 (2026-01-31T00:00:00Z) or epoch milliseconds.
    /// [default: the oldest]
    #[arg(long, value_parser = TimestampMs::parse, value_name = "TIME")]
    pub from: Option<TimestampMs>,
    /// Readings before this time. [default: all]
    #[arg(long, value_parser = TimestampMs::parse, value_name = "TIME")]
    pub to: Option<TimestampMs>,
    /// Only the sensors whose topic matches this MQTT topic filter (e.g. 'iot/yanjo/#' or
    /// 'iot/+/sensor/+/temperature').
    #[arg(long, value_name = "TOPIC_FILTER", value_parser = parse_filter)]
    pub filter: Option<TopicFilter>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// The topic templates a sensor's topic is made with, for --filter (as `serve --template`).
    /// [default: iot/{owner}/sensor/{place}/{category}]
    #[arg(long = "template", value_name = "TEMPLATE")]
    pub templates: Vec<TopicTemplate>,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The file to read (CSV with a header, or JSON Lines), or - for standard input.
    pub file: std::path::PathBuf,
    /// [default: from the file's extension (.csv, .jsonl, .ndjson); for standard input, jsonl if it starts with `{`, else csv]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

fn parse_filter(s: &str) -> Result<TopicFilter, String> {
    TopicFilter::parse(s).map_err(|e| format!("{s:?} is not an MQTT topic filter: {e}"))
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Where readings are stored: sqlite://FILE, postgres://USER@HOST/DB or mysql://USER@HOST/DB
    /// (also mariadb://). `serve` and `migrate` create a missing SQLite file; `user`, `token`
    /// and `bench` refuse one. [default: the database of the `roost serve` running from
    /// --data-dir, else roost.db in --data-dir]
    #[arg(long, env = "ROOST_DATABASE", default_value = "sqlite://roost.db", hide_default_value = true)]
    pub database: DatabaseUrl,

    #[command(flatten)]
    pub dir: DataDirArgs,
}

/// Roost's data directory, shared by every command.
#[derive(Debug, Clone, Args)]
pub struct DataDirArgs {
    /// Roost's data directory: the default SQLite database (roost.db), the first admin's
    /// password file, and `roost-serve.json`, through which the other commands find the
    /// `roost serve` running from the same directory (its broker and database).
    #[arg(long, env = "ROOST_DATA_DIR", value_name = "DIR", default_value = ".")]
    pub data_dir: std::path::PathBuf,
}

impl DatabaseArgs {
    /// Makes the data directory and a SQLite file's directory where they are missing, for the
    /// commands that create the database (`serve`, `migrate`): a first start with
    /// `--data-dir /var/lib/roost` or `--database sqlite:///srv/roost/roost.db` works, where it
    /// used to fail with SQLite's "unable to open database file".
    pub async fn create_directories(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        let sqlite_dir = self.database.sqlite_file().and_then(|file| file.parent().map(std::path::Path::to_path_buf));
        for dir in std::iter::once(self.dir.data_dir.clone()).chain(sqlite_dir) {
            if dir.as_os_str().is_empty() {
                continue;
            }
            if let Ok(found) = tokio::fs::metadata(&dir).await {
                anyhow::ensure!(found.is_dir(), "{} is not a directory (--data-dir, or the SQLite file's directory)", dir.display());
                continue;
            }
            tokio::fs::create_dir_all(&dir).await.with_context(|| format!("creating the directory {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), "created the directory");
        }
        Ok(())
    }

    /// The default database of the data directory (`sqlite://DIR/roost.db`), used by every
    /// command when no database was given (and, for the client commands, no server runs there).
    pub fn default_in(dir: &std::path::Path) -> DatabaseUrl {
        if dir == std::path::Path::new(".") {
            return DatabaseUrl::new("sqlite://roost.db".to_owned());
        }
        DatabaseUrl::new(format!("sqlite://{}", dir.join("roost.db").display()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (see roost.example.toml). Flags and environment
    /// variables override it.
    #[arg(long, env = "ROOST_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Topic template whose publishes become readings; repeat for several. Levels are literals
    /// or {owner}, {place}, {category}; without {category} the payload is a JSON object of
    /// category → number. [default: iot/{owner}/sensor/{place}/{category} and iot/{owner}/sensor/{place}]
    #[arg(long = "template", value_name = "TEMPLATE")]
    pub templates: Vec<TopicTemplate>,

    /// Largest payload accepted as a reading, in bytes; larger ones are rejected.
    #[arg(long, env = "ROOST_MAX_PAYLOAD", default_value_t = 4096)]
    pub max_payload: usize,

    /// Records waiting for the database writer. When full, publishers are held back.
    #[arg(long, env = "ROOST_INGEST_QUEUE", default_value_t = 100_000)]
    pub ingest_queue: u32,
    /// Address to listen on for MQTT over TCP (port 0 picks a free port; the bound address is
    /// logged).
    #[arg(long, env = "ROOST_MQTT_LISTEN", default_value = "0.0.0.0:1883", value_name = "ADDR", value_parser = parse_listen_addr)]
    pub mqtt_listen: SocketAddr,

    /// Address to listen on for MQTT over WebSocket, path /mqtt, subprotocol "mqtt".
    #[arg(long, env = "ROOST_MQTT_WS_LISTEN", default_value = "0.0.0.0:9001", value_name = "ADDR", value_parser = parse_listen_addr)]
    pub mqtt_ws_listen: SocketAddr,

    /// Address to listen on for the dashboard, the HTTP API, /healthz, /metrics and MQTT over
    /// WebSocket at /mqtt.
    #[arg(long, env = "ROOST_HTTP_LISTEN", default_value = "0.0.0.0:8080", value_name = "ADDR", value_parser = parse_listen_addr)]
    pub http_listen: SocketAddr,

    /// PEM certificate chain. With --tls-key: MQTT over TLS on --mqtts-listen, and the WebSocket and
    /// HTTP listeners speak TLS (wss://, https://). Reloaded on SIGHUP or when the file changes.
    #[arg(long, env = "ROOST_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "ROOST_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// How often the certificate files are checked for changes (e.g. 5s, 1m); SIGHUP reloads
    /// them at once.
    #[arg(long, env = "ROOST_TLS_CHECK_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub tls_check_interval: Duration,

    /// Address to listen on for MQTT over TLS (only with --tls-cert and --tls-key).
    #[arg(long, env = "ROOST_MQTTS_LISTEN", default_value = "0.0.0.0:8883", value_name = "ADDR", value_parser = parse_listen_addr)]
    pub mqtts_listen: SocketAddr,

    /// How long without a reading before the dashboard marks a sensor stale (e.g. 10m).
    #[arg(long, env = "ROOST_STALE_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub stale_after: Duration,

    /// How long raw readings and rejects are kept, by reading time: a duration (30d) or
    /// `forever`. Older ones are deleted by a purge at start and every hour, in small
    /// transactions; the per-minute and hourly summaries keep charts of older ranges.
    #[arg(long, env = "ROOST_RETENTION", default_value = "30d", value_parser = parse_keep)]
    pub retention: Keep,

    /// A retention for the sensors whose topic matches a filter, as FILTER=KEEP (e.g.
    /// 'iot/+/sensor/+/illuminate=7d'); repeat for several, the first match wins. A sensor's
    /// own retention (dashboard, API) comes before these; --retention after them.
    #[arg(long = "retention-rule", value_name = "FILTER=KEEP", value_parser = parse_retention_rule)]
    pub retention_rules: Vec<RetentionRule>,

    /// How long the per-minute summaries (min, max, mean, count) are kept.
    #[arg(long, env = "ROOST_MINUTE_ROLLUP_RETENTION", default_value = "365d", value_parser = parse_keep)]
    pub minute_rollup_retention: Keep,

    /// How long the hourly summaries are kept.
    #[arg(long, env = "ROOST_HOURLY_ROLLUP_RETENTION", default_value = "forever", value_parser = parse_keep)]
    pub hourly_rollup_retention: Keep,

    /// Warn (log, dashboard, /metrics) when the free space on the SQLite database's disk falls
    /// below this percentage (0: never).
    #[arg(long, env = "ROOST_LOW_DISK_PERCENT", default_value_t = 10, value_name = "PERCENT")]
    pub low_disk_percent: u8,

    /// Unit the dashboard shows for a category, as CATEGORY=UNIT; repeat for several.
    /// [default: temperature=°C, humidity=%, illuminate=raw]
    #[arg(long = "unit", value_name = "CATEGORY=UNIT", value_parser = parse_unit)]
    pub units: Vec<(String, String)>,

    /// A category's normal range, as CATEGORY=LOW..HIGH; the dashboard colours values below and
    /// above it. Repeat for several; the ranges given replace the defaults.
    /// [default: temperature=18..26, humidity=30..60]
    #[arg(long = "normal-range", value_name = "CATEGORY=LOW..HIGH", value_parser = parse_normal_range)]
    pub normal_ranges: Vec<(String, NormalRange)>,

    /// Let MQTT clients connect without credentials and use every topic. Without it, clients
    /// log in as a user (`roost user add`); on first start Roost creates `admin`.
    #[arg(long, env = "ROOST_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Announce every sensor to Home Assistant by MQTT discovery (retained configs under
    /// --ha-discovery-prefix), so it appears there without YAML.
    #[arg(long, env = "ROOST_HA_DISCOVERY")]
    pub ha_discovery: bool,

    /// Home Assistant's discovery prefix (its MQTT integration's setting).
    #[arg(long, env = "ROOST_HA_DISCOVERY_PREFIX", default_value = "homeassistant")]
    pub ha_discovery_prefix: String,

    /// Alert rules of the config file (`[[alert]]` tables); rules people make in the dashboard
    /// or the API are stored in the database.
    #[arg(skip)]
    pub alerts: Vec<crate::model::AlertRule>,

    /// Largest MQTT packet accepted, in bytes. Over WebSocket, a message over twice this (at
    /// least 64 KiB) also closes the connection.
    #[arg(long, env = "ROOST_MAX_PACKET_SIZE", default_value_t = 1024 * 1024)]
    pub max_packet_size: u32,

    /// How long a slow client gets (e.g. 10s): to send CONNECT, to finish a TLS or WebSocket
    /// handshake, and to send each HTTP request's headers.
    #[arg(long, env = "ROOST_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Unacknowledged QoS 1/2 messages in flight to one client.
    #[arg(long, env = "ROOST_MAX_INFLIGHT", default_value_t = 1000)]
    pub max_inflight: u32,

    /// QoS 1/2 messages queued per client; past it an online client is disconnected, an
    /// offline session drops (and counts) further messages.
    #[arg(long, env = "ROOST_MAX_QUEUED", default_value_t = 10_000)]
    pub max_queued: u32,

    /// QoS 0 messages queued per client; past it they are dropped and counted.
    #[arg(long, env = "ROOST_MAX_QUEUED_QOS0", default_value_t = 1000)]
    pub max_queued_qos0: u32,

    /// Open MQTT connections allowed from one IP address (all listeners together); 0: no limit.
    #[arg(long, env = "ROOST_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: u32,

    /// Subscriptions one MQTT client may hold; further filters are refused (SUBACK 0x80).
    #[arg(long, env = "ROOST_MAX_SUBSCRIPTIONS", default_value_t = 1000)]
    pub max_subscriptions: u32,

    /// A persistent session (clean session 0) offline for longer than this (e.g. 7d, 12h) is
    /// removed with its subscriptions and queued messages.
    #[arg(long, env = "ROOST_SESSION_EXPIRY", default_value = "7d", value_parser = parse_duration)]
    pub session_expiry: Duration,

    /// Retained messages kept; a retained publish to a new topic past it is delivered but not
    /// retained (counted and logged).
    #[arg(long, env = "ROOST_MAX_RETAINED", default_value_t = 1_000_000)]
    pub max_retained: u32,

    /// Payload bytes of all retained messages together; past it, as --max-retained.
    #[arg(long, env = "ROOST_MAX_RETAINED_BYTES", default_value_t = 1 << 30)]
    pub max_retained_bytes: u64,

    /// Largest HTTP request body accepted, in bytes.
    #[arg(long, env = "ROOST_MAX_REQUEST_BODY", default_value_t = 16 * 1024)]
    pub max_request_body: u32,

    /// Failed logins (MQTT and dashboard) allowed per IP address and user name within
    /// --login-failure-window; past it, that name's logins from that address are slowed down
    /// (one at a time, each waiting longer), never refused. Other users are not affected. 0: no limit.
    #[arg(long, env = "ROOST_MAX_LOGIN_FAILURES", default_value_t = 10)]
    pub max_login_failures: u32,

    /// Failed logins allowed from all addresses together within --login-failure-window (against
    /// password spraying); past it, logins by every address and name without a recent success
    /// are slowed down, one at a time.
    #[arg(long, env = "ROOST_MAX_LOGIN_FAILURES_TOTAL", default_value_t = 100)]
    pub max_login_failures_total: u32,

    /// How long failed logins are remembered (e.g. 1m).
    #[arg(long, env = "ROOST_LOGIN_FAILURE_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub login_failure_window: Duration,

    /// How often the $SYS/broker tree is updated (e.g. 10s).
    #[arg(long, env = "ROOST_SYS_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub sys_interval: Duration,

    /// Take readings from this MQTT broker (mqtt://HOST:PORT or mqtts://HOST:PORT; a
    /// cluster's, or Mosquitto), as well as from Roost's own: a shared subscription to each
    /// template's filter in a persistent session, each message acknowledged upstream once its
    /// reading is committed. Several nodes on one PostgreSQL database split the load.
    #[arg(long, env = "ROOST_UPSTREAM", value_name = "URL")]
    pub upstream: Option<crate::mqtt_client::BrokerUrl>,

    /// User name for --upstream.
    #[arg(long, env = "ROOST_UPSTREAM_USERNAME", value_name = "NAME")]
    pub upstream_username: Option<String>,

    /// Password for --upstream (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "ROOST_UPSTREAM_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub upstream_password: Option<crate::mqtt_client::Secret>,

    /// PEM file with the CA that signed the upstream broker's certificate (mqtts://); without
    /// it the system's roots are trusted.
    #[arg(long, env = "ROOST_UPSTREAM_CA_FILE", value_name = "FILE")]
    pub upstream_ca_file: Option<std::path::PathBuf>,

    /// This node's name, unique among the nodes of one database: the upstream session's client
    /// id is roost-NAME, and jobs that run on one node at a time (the purge, alerts, discovery)
    /// name their holder by it. [default: the host name]
    #[arg(long, env = "ROOST_NODE_ID", value_name = "NAME", default_value_t = default_node_id(), hide_default_value = true)]
    pub node_id: String,

    /// The shared subscription's group on the upstream broker ($share/GROUP/...): nodes in one
    /// group split the messages.
    #[arg(long, env = "ROOST_SHARE_GROUP", value_name = "GROUP", default_value = "roost")]
    pub share_group: String,

    /// Roost's own MQTT listeners (TCP, WebSocket, TLS): `off` with --upstream leaves MQTT to
    /// the upstream broker (the dashboard's console still connects at /mqtt on the HTTP port).
    #[arg(long, env = "ROOST_MQTT_LISTENERS", value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub mqtt_listeners: bool,

    /// Also run three simulated boards (owner "demo") against this server, with a day of
    /// history on the first start, so the dashboard has live data at once. With logins on,
    /// they log in as the device user `demo`, which is created (or given a new password).
    #[arg(long, env = "ROOST_DEMO")]
    pub demo: bool,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: use on or off")),
    }
}

/// The host name, or `roost` if it cannot be read.
fn default_node_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer it is given.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let name = if ok { String::from_utf8_lossy(buf.split(|b| *b == 0).next().unwrap_or_default()).into_owned() } else { String::new() };
    if name.is_empty() {
        "roost".to_owned()
    } else {
        name
    }
}

fn parse_unit(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((category, unit)) if !category.is_empty() => Ok((category.to_owned(), unit.to_owned())),
        _ => Err(format!("{s:?} is not CATEGORY=UNIT")),
    }
}

/// `temperature=18..26`: a category and the normal range of its values.
/// `FILTER=KEEP`: a topic filter and how long its sensors' readings are kept.
pub fn parse_retention_rule(s: &str) -> Result<RetentionRule, String> {
    let (filter, keep) = s.rsplit_once('=').ok_or_else(|| format!("{s:?} is not FILTER=KEEP, e.g. iot/+/sensor/+/illuminate=7d"))?;
    RetentionRule::new(filter, keep)
}

pub fn parse_normal_range(s: &str) -> Result<(String, NormalRange), String> {
    let bad = || format!("{s:?} is not CATEGORY=LOW..HIGH (e.g. temperature=18..26)");
    let (category, range) = s.split_once('=').filter(|(c, _)| !c.is_empty()).ok_or_else(bad)?;
    let (low, high) = range.split_once("..").ok_or_else(bad)?;
    let (low, high) = (low.trim().parse::<f64>().map_err(|_| bad())?, high.trim().parse::<f64>().map_err(|_| bad())?);
    if !(low.is_finite() && high.is_finite() && low < high) {
        return Err(format!("{s:?}: LOW must be below HIGH"));
    }
    Ok((category.to_owned(), NormalRange { low, high }))
}

/// The normal ranges the dashboard colours by when none are configured.
pub fn default_normal_ranges() -> Vec<(String, NormalRange)> {
    vec![("humidity".into(), NormalRange { low: 30.0, high: 60.0 }), ("temperature".into(), NormalRange { low: 18.0, high: 26.0 })]
}

/// The units the dashboard shows when none are configured.
pub fn default_units() -> Vec<(String, String)> {
    [("humidity", "%"), ("illuminate", "raw"), ("temperature", "°C")].iter().map(|(c, u)| (c.to_string(), u.to_string())).collect()
}

impl Default for ServeArgs {
    fn default() -> Self {
        match Cli::parse_from(["roost", "serve"]).command {
            Command::Serve(args) => *args,
            _ => unreachable!("parsed a serve command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_addresses_are_an_ip_and_a_port() {
        assert_eq!(parse_listen_addr("127.0.0.1:0"), Ok("127.0.0.1:0".parse().unwrap()));
        assert_eq!(parse_listen_addr("[::]:1883"), Ok("[::]:1883".parse().unwrap()));
        let e = parse_listen_addr("localhost").unwrap_err();
        assert!(e.contains("not an IP address and port, e.g. 0.0.0.0:1883"), "{e}");
    }

    #[test]
    fn bad_durations_are_refused_with_a_clear_message() {
        let err = Cli::try_parse_from(["roost", "serve", "--connect-timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("is not a duration such as"), "{err}");
        let Command::Simulate(args) = Cli::try_parse_from(["roost", "simulate", "--interval", "1s"]).unwrap().command else { panic!() };
        assert_eq!(args.interval, Duration::from_secs(1), "units on every duration");
    }

    #[test]
    fn bad_database_urls_and_templates_are_refused() {
        let err = Cli::try_parse_from(["roost", "serve", "--database", "redis://x"]).unwrap_err();
        assert!(err.to_string().contains("is not a sqlite://"), "{err}");
        let err = Cli::try_parse_from(["roost", "serve", "--template", "iot/{owner}"]).unwrap_err();
        assert!(err.to_string().contains("needs {owner} and {place}"), "{err}");
    }

    #[test]
    fn durations_rates_and_qos_parse_or_say_why_not() {
        assert!(parse_rate("0").is_err());
        assert!(parse_qos("3").unwrap_err().contains("use 0, 1 or 2"));
        assert!(parse_fraction("1.5").unwrap_err().contains("between 0 and 1"));
        let err = Cli::try_parse_from(["roost", "simulate", "--broker", "http://x"]).unwrap_err();
        assert!(err.to_string().contains("unknown scheme"), "{err}");
        let err = Cli::try_parse_from(["roost", "bench", "--qos", "5"]).unwrap_err();
        assert!(err.to_string().contains("is not a QoS"), "{err}");
    }

    #[test]
    fn token_lifetimes_need_a_unit() {
        assert_eq!(parse_lifetime("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_lifetime("3650d").unwrap(), Duration::from_secs(3650 * 86_400));
        assert_eq!(parse_lifetime("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert!(parse_lifetime("30").unwrap_err().contains("needs a unit"));
        assert!(parse_lifetime("3651d").unwrap_err().contains("at most 3650d"));
        assert!(parse_lifetime("0d").is_err());
    }

    #[test]
    fn normal_ranges_parse_or_say_why_not() {
        assert_eq!(parse_normal_range("temperature=18..26.5").unwrap(), ("temperature".into(), NormalRange { low: 18.0, high: 26.5 }));
        assert_eq!(parse_normal_range("t=-10..0").unwrap().1, NormalRange { low: -10.0, high: 0.0 });
        for bad in ["temperature", "=1..2", "t=1-2", "t=a..2", "t=5..1", "t=NaN..1"] {
            assert!(parse_normal_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let cli = Cli::try_parse_from(["roost", "simulate", "--password", "hunter2"]).unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"));
        let cli = Cli::try_parse_from(["roost", "serve", "--database", "postgres://roost:hunter2@db/roost"]).unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"));
    }

    #[test]
    fn addresses_accept_port_zero() {
        let cli = Cli::try_parse_from(["roost", "serve", "--mqtt-listen", "127.0.0.1:0", "--mqtt-ws-listen", "[::1]:0"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!() };
        assert_eq!(args.mqtt_listen.port(), 0);
        assert!(args.mqtt_ws_listen.is_ipv6());
    }
}
