//! The command line: `roost serve` and its options. Flags beat environment variables.

use crate::ingest::TopicTemplate;
use crate::store::DatabaseUrl;
use clap::{Args, Parser, Subcommand};
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
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit (`serve` also does this at start).
    Migrate(DatabaseArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Where readings are stored: sqlite://FILE (created if missing), postgres://USER@HOST/DB
    /// or mysql://USER@HOST/DB (also mariadb://).
    #[arg(long, env = "ROOST_DATABASE", default_value = "sqlite://roost.db")]
    pub database: DatabaseUrl,
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
    #[arg(long, default_value_t = 4096)]
    pub max_payload: usize,

    /// Records waiting for the database writer. When full, publishers are held back.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ingest_queue: u32,
    /// Address for MQTT over TCP (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "ROOST_MQTT", default_value = "0.0.0.0:1883")]
    pub mqtt: SocketAddr,

    /// Address for MQTT over WebSocket, path /mqtt, subprotocol "mqtt".
    #[arg(long = "mqtt-ws", env = "ROOST_MQTT_WS", default_value = "0.0.0.0:9001")]
    pub mqtt_ws: SocketAddr,

    /// Address for the HTTP API, /healthz, /metrics and MQTT over WebSocket at /mqtt.
    #[arg(long, env = "ROOST_HTTP", default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,

    /// Seconds without a reading after which the dashboard marks a sensor stale.
    #[arg(long, default_value = "600", value_parser = parse_seconds)]
    pub stale_after: Duration,

    /// Unit the dashboard shows for a category, as CATEGORY=UNIT; repeat for several.
    /// [default: temperature=°C, humidity=%, illuminate=raw]
    #[arg(long = "unit", value_name = "CATEGORY=UNIT", value_parser = parse_unit)]
    pub units: Vec<(String, String)>,

    /// Let clients connect without credentials. Until user accounts exist (issue 5) this is
    /// the only mode, and it is what Roost runs in without the flag too, with a warning.
    #[arg(long)]
    pub allow_anonymous: bool,

    /// Largest MQTT packet accepted, in bytes.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(16..=268_435_460))]
    pub max_packet_size: u32,

    /// Seconds a new connection has to send CONNECT (and finish a WebSocket handshake).
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub connect_timeout: Duration,

    /// Unacknowledged QoS 1/2 messages in flight to one client.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub max_inflight: u32,

    /// QoS 1/2 messages queued per client; past it an online client is disconnected, an
    /// offline session drops (and counts) further messages.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queued: u32,

    /// QoS 0 messages queued per client; past it they are dropped and counted.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queued_qos0: u32,

    /// Seconds between updates of the $SYS/broker tree.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub sys_interval: Duration,
}

fn parse_unit(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((category, unit)) if !category.is_empty() => Ok((category.to_owned(), unit.to_owned())),
        _ => Err(format!("{s:?} is not CATEGORY=UNIT")),
    }
}

/// The units the dashboard shows when none are configured.
pub fn default_units() -> Vec<(String, String)> {
    [("humidity", "%"), ("illuminate", "raw"), ("temperature", "°C")].iter().map(|(c, u)| (c.to_string(), u.to_string())).collect()
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{s} must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Default for ServeArgs {
    fn default() -> Self {
        match Cli::parse_from(["roost", "serve"]).command {
            Command::Serve(args) => args,
            _ => unreachable!("parsed a serve command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_durations_are_refused_with_a_clear_message() {
        let err = Cli::try_parse_from(["roost", "serve", "--connect-timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("is not a number of seconds"), "{err}");
        let err = Cli::try_parse_from(["roost", "serve", "--connect-timeout", "0"]).unwrap_err();
        assert!(err.to_string().contains("between 0 and 86400"), "{err}");
    }

    #[test]
    fn bad_database_urls_and_templates_are_refused() {
        let err = Cli::try_parse_from(["roost", "serve", "--database", "redis://x"]).unwrap_err();
        assert!(err.to_string().contains("is not a sqlite://"), "{err}");
        let err = Cli::try_parse_from(["roost", "serve", "--template", "iot/{owner}"]).unwrap_err();
        assert!(err.to_string().contains("needs {owner} and {place}"), "{err}");
    }

    #[test]
    fn addresses_accept_port_zero() {
        let cli = Cli::try_parse_from(["roost", "serve", "--mqtt", "127.0.0.1:0", "--mqtt-ws", "[::1]:0"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!() };
        assert_eq!(args.mqtt.port(), 0);
        assert!(args.mqtt_ws.is_ipv6());
    }
}
