//! The one validated set of `serve` settings. Flags and `ROOST_*` environment variables (parsed
//! by clap), then the config file, then the built-in defaults are merged into a `ServeArgs`;
//! [`Settings::validate`] then checks every value against one table of rules, whatever its
//! source, and names the key and the source of a bad one. Nothing else makes a `Settings`, so
//! `App::build` never sees an unchecked value.

use crate::cli::{DatabaseArgs, ServeArgs};
use crate::config_file::{ConfigError, ConfigFile};
use crate::model::Keep;
use clap::parser::ValueSource;
use clap::ArgMatches;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// `ServeArgs` whose every value passed the rules.
#[derive(Debug, Clone)]
pub struct Settings(ServeArgs);

impl std::ops::Deref for Settings {
    type Target = ServeArgs;
    fn deref(&self) -> &ServeArgs {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    File(#[from] ConfigError),
    #[error("invalid setting `{key}` = {value} ({origin}): {why}")]
    Invalid { key: &'static str, value: String, origin: String, why: String },
}

/// Where a value came from, for error messages.
enum Origin<'a> {
    CommandLine(&'a ArgMatches),
    Program,
}

impl Settings {
    /// `roost serve`'s settings: `args` as clap parsed them from `matches`, merged with the
    /// `--config` file if one was given, then validated.
    pub fn from_command_line(mut args: ServeArgs, matches: &ArgMatches) -> Result<Self, SettingsError> {
        let mut from_file = BTreeSet::new();
        if let Some(path) = args.config.clone() {
            from_file = ConfigFile::load(&path)?.apply(&mut args, matches, &path)?;
        }
        // The data directory is the default database's home too.
        let database_given = from_file.contains("database")
            || matches!(matches.value_source("database"), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        if !database_given {
            args.db.database = DatabaseArgs::default_in(&args.db.dir.data_dir);
        }
        check(&args).map_err(|bad| bad.into_error(|key| origin(key, Origin::CommandLine(matches), &from_file, args.config.as_ref())))?;
        Ok(Self(args))
    }

    /// Settings a program made itself (tests, embedding): the same rules.
    pub fn validate(args: ServeArgs) -> Result<Self, SettingsError> {
        check(&args).map_err(|bad| bad.into_error(|key| origin(key, Origin::Program, &BTreeSet::new(), None)))?;
        Ok(Self(args))
    }
}

fn origin(key: &str, how: Origin<'_>, from_file: &BTreeSet<&'static str>, file: Option<&PathBuf>) -> String {
    if from_file.contains(key) {
        return format!("from config file {}", file.map(|p| p.display().to_string()).unwrap_or_default());
    }
    let Origin::CommandLine(matches) = how else { return "as given by the program".into() };
    let flag = key.replace('_', "-");
    match matches.value_source(key) {
        Some(ValueSource::CommandLine) => format!("from flag --{flag}"),
        Some(ValueSource::EnvVariable) => format!("from environment variable ROOST_{}", key.to_uppercase()),
        _ => "the default".into(),
    }
}

/// A rule that failed: the setting's key (its flag's id and its config file key), its value
/// as shown in the error, and why.
struct Bad {
    key: &'static str,
    value: String,
    why: String,
}

impl Bad {
    fn into_error(self, origin: impl Fn(&str) -> String) -> SettingsError {
        SettingsError::Invalid { origin: origin(self.key), key: self.key, value: self.value, why: self.why }
    }
}

/// Largest MQTT packet the protocol can express (a 4-byte remaining length plus its header).
const MAX_MQTT_PACKET: u64 = 268_435_460;
const DAY: Duration = Duration::from_secs(86_400);

/// Every rule, in one place.
fn check(args: &ServeArgs) -> Result<(), Bad> {
    range("max_payload", args.max_payload as u64, 1, MAX_MQTT_PACKET)?;
    range("ingest_queue", args.ingest_queue.into(), 1, 10_000_000)?;
    range("max_packet_size", args.max_packet_size.into(), 16, MAX_MQTT_PACKET)?;
    range("max_inflight", args.max_inflight.into(), 1, 65_535)?;
    range("max_queued", args.max_queued.into(), 1, 10_000_000)?;
    range("max_queued_qos0", args.max_queued_qos0.into(), 1, 10_000_000)?;
    range("max_subscriptions", args.max_subscriptions.into(), 1, 1_000_000)?;
    range("max_retained", args.max_retained.into(), 1, 100_000_000)?;
    range("max_retained_bytes", args.max_retained_bytes, 1, 1 << 40)?;
    range("max_request_body", args.max_request_body.into(), 1024, 1 << 30)?;
    range("max_login_failures_total", args.max_login_failures_total.into(), 1, 10_000_000)?;
    range("low_disk_percent", args.low_disk_percent.into(), 0, 99)?;
    span("connect_timeout", args.connect_timeout, DAY)?;
    span("sys_interval", args.sys_interval, DAY)?;
    span("stale_after", args.stale_after, 366 * DAY)?;
    span("login_failure_window", args.login_failure_window, DAY)?;
    span("session_expiry", args.session_expiry, 366 * DAY)?;
    span("tls_check_interval", args.tls_check_interval, DAY)?;
    let prefix = &args.ha_discovery_prefix;
    if prefix.is_empty() || mqtt_codec::TopicName::parse(&format!("{prefix}/status")).is_err() || prefix.contains(['+', '#']) {
        return Err(Bad { key: "ha_discovery_prefix", value: format!("{prefix:?}"), why: "must be a topic without wildcards".into() });
    }
    let node = &args.node_id;
    if node.is_empty() || node.chars().count() > 100 || node.contains(['+', '#', '/']) || node.chars().any(char::is_control) {
        let why = "must be 1 to 100 characters without / + # or control characters".into();
        return Err(Bad { key: "node_id", value: format!("{node:?}"), why });
    }
    let group = &args.share_group;
    if group.is_empty() || group.contains(['+', '#', '/']) || group.chars().any(char::is_control) {
        let why = "must be a topic level: not empty, without / + # or control characters".into();
        return Err(Bad { key: "share_group", value: format!("{group:?}"), why });
    }
    if !args.mqtt_listeners && args.upstream.is_none() {
        let why = "without --upstream, Roost's own listeners are where readings come in".into();
        return Err(Bad { key: "mqtt_listeners", value: "off".into(), why });
    }
    if args.upstream.is_none() {
        let given = [
            ("upstream_username", args.upstream_username.is_some()),
            ("upstream_password", args.upstream_password.is_some()),
            ("upstream_ca_file", args.upstream_ca_file.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|(_, given)| *given) {
            return Err(Bad { key, value: "(given)".into(), why: "only means something with --upstream".into() });
        }
    }
    // Two of Roost's own listeners on one port would fail at start as "another program
    // listens there".
    let mut listeners = vec![("http_listen", args.http_listen)];
    if args.mqtt_listeners {
        listeners.extend([("mqtt_listen", args.mqtt_listen), ("mqtt_ws_listen", args.mqtt_ws_listen)]);
        if args.tls_cert.is_some() {
            listeners.push(("mqtts_listen", args.mqtts_listen));
        }
    }
    // `0.0.0.0` takes the port on every IPv4 address; `[::]` on every address (Linux binds it
    // dual-stack by default).
    let covers = |wide: std::net::IpAddr, other: std::net::IpAddr| match wide {
        std::net::IpAddr::V6(v6) => v6.is_unspecified(),
        std::net::IpAddr::V4(v4) => v4.is_unspecified() && other.is_ipv4(),
    };
    for (n, (key, addr)) in listeners.iter().enumerate() {
        let overlaps = |other: &std::net::SocketAddr| {
            other.port() == addr.port() && (other.ip() == addr.ip() || covers(other.ip(), addr.ip()) || covers(addr.ip(), other.ip()))
        };
        if let Some((first, _)) = listeners[..n].iter().find(|(_, other)| addr.port() != 0 && overlaps(other)) {
            let why = format!("{first} listens there already: give each listener its own port");
            return Err(Bad { key, value: addr.to_string(), why });
        }
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        let key = if args.tls_cert.is_some() { "tls_cert" } else { "tls_key" };
        let value = format!("{:?}", (&args.tls_cert, &args.tls_key));
        return Err(Bad { key, value, why: "tls_cert and tls_key go together".into() });
    }
    Ok(())
}

fn range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), Bad> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(Bad { key, value: value.to_string(), why: format!("must be between {min} and {max}") })
}

fn span(key: &'static str, value: Duration, max: Duration) -> Result<(), Bad> {
    if !value.is_zero() && value <= max {
        return Ok(());
    }
    Err(Bad { key, value: format!("{value:?}"), why: format!("must be a duration above 0 and at most {}", describe(max)) })
}

fn describe(d: Duration) -> String {
    match d.as_secs() {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s => format!("{s}s"),
    }
}

/// A duration with a unit: `500ms`, `90s`, `10m`, `2h`, `30d`; a bare number is seconds.
/// At most a year; zero and negative durations are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_within(s, 366 * DAY, "a year")
}

/// The longest retention that is not `forever`: a hundred years.
const MAX_KEEP: Duration = Duration::from_secs(36_500 * 86_400);

/// How long to keep data: `forever`, or a duration with a unit (`30d`) of at most 36500d.
pub fn parse_keep(s: &str) -> Result<Keep, String> {
    if s.trim().eq_ignore_ascii_case("forever") {
        return Ok(Keep::Forever);
    }
    parse_duration_within(s, MAX_KEEP, "36500d; or `forever`").map(Keep::For)
}

fn parse_duration_within(s: &str, max: Duration, max_in_words: &str) -> Result<Duration, String> {
    let text = s.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, unit) = (text[..split].trim(), &text[split..]);
    let not_a_duration = || format!("{s:?} is not a duration such as 500ms, 90s, 10m, 2h or 30d (above 0, at most {max_in_words})");
    if number.is_empty() {
        return Err(not_a_duration());
    }
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * scale <= max.as_secs_f64() => Ok(Duration::from_secs_f64(n * scale)),
        _ => Err(not_a_duration()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_everywhere() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration(" 10m ").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("30d").unwrap(), 30 * DAY);
        assert!(parse_duration("3 weeks").unwrap_err().contains("unknown unit"));
        for bad in ["0", "-1s", "soon", "", "400d", "NaN", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retention_is_a_duration_or_forever() {
        assert_eq!(parse_keep("forever").unwrap(), Keep::Forever);
        assert_eq!(parse_keep("30d").unwrap(), Keep::For(30 * DAY));
        assert_eq!(parse_keep("3650d").unwrap(), Keep::For(3650 * DAY), "longer than a year is fine");
        for bad in ["0", "never", "36501d", "-1d"] {
            assert!(parse_keep(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn programs_get_the_same_rules_as_people() {
        let args = ServeArgs { ingest_queue: 0, ..ServeArgs::default() };
        let err = Settings::validate(args).unwrap_err().to_string();
        assert_eq!(err, "invalid setting `ingest_queue` = 0 (as given by the program): must be between 1 and 10000000");
        assert!(Settings::validate(ServeArgs::default()).is_ok(), "the defaults pass");
    }

    #[test]
    fn two_listeners_on_one_port_are_refused() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let same = ServeArgs { mqtt_ws_listen: addr("127.0.0.1:18080"), http_listen: addr("0.0.0.0:18080"), ..ServeArgs::default() };
        let err = Settings::validate(same).unwrap_err().to_string();
        assert!(err.contains("`mqtt_ws_listen` = 127.0.0.1:18080") && err.contains("http_listen listens there already"), "{err}");
        let apart = ServeArgs { mqtt_ws_listen: addr("127.0.0.1:18080"), http_listen: addr("127.0.0.2:18080"), ..ServeArgs::default() };
        assert!(Settings::validate(apart).is_ok(), "one port on two addresses");
        let v6 = ServeArgs { mqtt_ws_listen: addr("[::1]:18080"), http_listen: addr("0.0.0.0:18080"), ..ServeArgs::default() };
        assert!(Settings::validate(v6).is_ok(), "0.0.0.0 takes no IPv6 address");
        let dual = ServeArgs { mqtt_ws_listen: addr("127.0.0.1:18080"), http_listen: addr("[::]:18080"), ..ServeArgs::default() };
        assert!(Settings::validate(dual).is_err(), "[::] takes IPv4 addresses too");
        let any = ServeArgs { mqtt_listen: addr("127.0.0.1:0"), mqtt_ws_listen: addr("127.0.0.1:0"), ..ServeArgs::default() };
        assert!(Settings::validate(any).is_ok(), "port 0: each its own free port");
    }

    #[test]
    fn scale_out_settings_are_checked() {
        let err = |args: ServeArgs| Settings::validate(args).unwrap_err().to_string();
        let off = ServeArgs { mqtt_listeners: false, ..ServeArgs::default() };
        assert!(err(off).contains("`mqtt_listeners` = off"), "no listeners and no upstream: nowhere for readings to come in");
        let upstream = Some("mqtt://broker.example".parse().unwrap());
        assert!(Settings::validate(ServeArgs { mqtt_listeners: false, upstream: upstream.clone(), ..ServeArgs::default() }).is_ok());
        assert!(err(ServeArgs { node_id: "a/b".into(), upstream, ..ServeArgs::default() }).contains("`node_id`"));
        assert!(err(ServeArgs { share_group: "g+".into(), ..ServeArgs::default() }).contains("`share_group`"));
        let lonely = ServeArgs { upstream_username: Some("roost".into()), ..ServeArgs::default() };
        assert!(err(lonely).contains("only means something with --upstream"));
    }
}
