//! The optional config file (`--config roost.toml`): the same settings as the `serve` flags.
//! Precedence: flags, then environment variables, then the file, then built-in defaults.

use crate::cli::{renamed, ServeArgs};
use crate::ingest::TopicTemplate;
use crate::lifecycle::RetentionRule;
use crate::model::Keep;
use crate::settings::{parse_duration, parse_keep};
use crate::store::DatabaseUrl;
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Every key is optional; unknown keys are an error (a typo must not be silently ignored).
/// Values are checked by `settings`, with the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    database: Option<String>,
    // Text, read as a flag's value is: a bad one is explained the same way.
    mqtt_listen: Option<String>,
    mqtt_ws_listen: Option<String>,
    http_listen: Option<String>,
    mqtts_listen: Option<String>,
    data_dir: Option<std::path::PathBuf>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    tls_check_interval: Option<DurationValue>,
    allow_anonymous: Option<bool>,
    demo: Option<bool>,
    templates: Option<Vec<String>>,
    max_payload: Option<usize>,
    ingest_queue: Option<u32>,
    max_packet_size: Option<u32>,
    connect_timeout: Option<DurationValue>,
    max_inflight: Option<u32>,
    max_queued: Option<u32>,
    max_queued_qos0: Option<u32>,
    sys_interval: Option<DurationValue>,
    max_connections_per_ip: Option<u32>,
    max_subscriptions: Option<u32>,
    session_expiry: Option<DurationValue>,
    max_retained: Option<u32>,
    max_retained_bytes: Option<u64>,
    max_login_failures: Option<u32>,
    max_login_failures_total: Option<u32>,
    login_failure_window: Option<DurationValue>,
    max_request_body: Option<u32>,
    stale_after: Option<DurationValue>,
    units: Option<std::collections::BTreeMap<String, String>>,
    /// Category → `"LOW..HIGH"`.
    normal_ranges: Option<std::collections::BTreeMap<String, String>>,
    /// `retention = "30d"`, or `[[retention]]` tables of `filter` and `keep` (without `filter`:
    /// the default), see [`RetentionValue`].
    retention: Option<toml::Value>,
    minute_rollup_retention: Option<String>,
    hourly_rollup_retention: Option<String>,
    low_disk_percent: Option<u8>,
    ha_discovery: Option<bool>,
    ha_discovery_prefix: Option<String>,
    /// `[[alert]]` tables.
    alert: Option<Vec<crate::alerts::rule::RuleSpec>>,
    upstream: Option<String>,
    upstream_username: Option<String>,
    upstream_password: Option<String>,
    upstream_ca_file: Option<std::path::PathBuf>,
    node_id: Option<String>,
    share_group: Option<String>,
    /// `"on"` or `"off"`, or a boolean.
    mqtt_listeners: Option<toml::Value>,
}

/// `retention` as the file gives it: the default for every sensor, or a list of rules where an
/// entry without a filter sets the default.
#[derive(Debug, Default, PartialEq)]
struct RetentionValue {
    default: Option<Keep>,
    rules: Vec<RetentionRule>,
}

impl RetentionValue {
    fn parse(value: toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(text) => Ok(Self { default: Some(parse_keep(&text)?), rules: Vec::new() }),
            toml::Value::Array(entries) => {
                let mut parsed = Self::default();
                for (i, entry) in entries.into_iter().enumerate() {
                    let at = |why: String| format!("[[retention]] entry {}: {why}", i + 1);
                    let toml::Value::Table(mut table) = entry else { return Err(at("must be a table of `filter` and `keep`".into())) };
                    let text = |table: &mut toml::Table, key: &str| match table.remove(key) {
                        None => Ok(None),
                        Some(toml::Value::String(s)) => Ok(Some(s)),
                        Some(other) => Err(at(format!("`{key}` must be a string, not {}", with_article(other.type_str())))),
                    };
                    let keep = text(&mut table, "keep")?.ok_or_else(|| at("needs `keep`, e.g. keep = \"7d\"".into()))?;
                    let filter = text(&mut table, "filter")?;
                    if let Some(unknown) = table.keys().next() {
                        return Err(at(format!("unknown key `{unknown}` (use `filter` and `keep`)")));
                    }
                    match filter {
                        Some(filter) => parsed.rules.push(RetentionRule::new(&filter, &keep).map_err(at)?),
                        None if parsed.default.is_some() => return Err(at("a second entry without `filter`".into())),
                        None => parsed.default = Some(parse_keep(&keep).map_err(at)?),
                    }
                }
                Ok(parsed)
            }
            other => Err(format!(
                "must be a duration such as \"30d\", \"forever\", or [[retention]] tables, not {}",
                with_article(other.type_str())
            )),
        }
    }
}

/// A duration in the file: `"10m"` (any unit `settings::parse_duration` takes), or a number of
/// seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Text(String),
    Seconds(f64),
}

impl DurationValue {
    fn parse(self) -> Result<Duration, String> {
        match self {
            Self::Text(text) => parse_duration(&text),
            Self::Seconds(secs) => parse_duration(&secs.to_string()),
        }
    }
}

/// The `[[alert]]` rules, owned by `admin` unless they name an owner; names unique per owner.
fn check_alerts(specs: &[crate::alerts::rule::RuleSpec]) -> Result<Vec<crate::model::AlertRule>, String> {
    let mut rules: Vec<crate::model::AlertRule> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let rule = spec.check("admin", true).map_err(|why| format!("[[alert]] entry {} ({:?}): {why}", i + 1, spec.name))?;
        if rules.iter().any(|r| r.owner == rule.owner && r.name == rule.name) {
            return Err(format!("[[alert]] entry {}: a second rule named {:?} for {}", i + 1, rule.name, rule.owner));
        }
        rules.push(rule);
    }
    Ok(rules)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is in the message, not also `source()`, so a report says it once.
    #[error("reading config file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("config file {path}: {cause}")]
    Parse { path: String, cause: toml::de::Error },
    #[error("invalid setting `{key}` (from config file {path}): {why}")]
    Value { path: String, key: &'static str, why: String },
    /// A key no setting has, close to one that some setting has.
    #[error("config file {path}: unknown key `{key}`: did you mean `{near}`?")]
    Misspelled { path: String, key: String, near: String },
}

/// For serde's "unknown field `x`, expected one of `a`, `b`, …": the known key closest to `x`,
/// if it is a likely typo of it (at most two edits, and fewer than half of its letters).
fn likely_meant(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, expected) = rest.split_once('`')?;
    let known = expected.split('`').skip(1).step_by(2);
    let (distance, near) = known.map(|key| (edit_distance(unknown, key), key)).min()?;
    (distance <= 2 && distance * 2 < unknown.chars().count()).then(|| (unknown.to_owned(), near.to_owned()))
}

/// Levenshtein distance: insertions, deletions and substitutions of one character.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            current.push((previous[j] + usize::from(ca != *cb)).min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

impl ConfigFile {
    /// Reads and parses the file; keys with an old name (`cli::renamed`) are accepted with a
    /// warning.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read { path: shown.clone(), cause })?;
        Self::parse(&text, shown)
    }

    /// The file's text, `shown` as its name in errors.
    fn parse(text: &str, shown: String) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|cause| ConfigError::Parse { path: shown.clone(), cause })?;
        let old_keys: Vec<String> = table.keys().filter(|key| renamed::config_key(key).is_some()).cloned().collect();
        for old in old_keys {
            let (new, warning) = renamed::config_key(&old).expect("an old key");
            if table.contains_key(new) {
                return Err(ConfigError::Value { path: shown, key: new, why: format!("given twice, also under its old name `{old}`") });
            }
            tracing::warn!(file = %shown, "{warning}");
            let value = table.remove(&old).expect("the key is there");
            table.insert(new.to_owned(), value);
        }
        table.try_into().map_err(|cause: toml::de::Error| match likely_meant(cause.message()) {
            Some((key, near)) => ConfigError::Misspelled { path: shown, key, near },
            None => ConfigError::Parse { path: shown, cause },
        })
    }

    /// Fills every setting of `args` that came from a built-in default with the file's value.
    /// Returns the keys it filled (so that a bad value can be traced to the file).
    pub fn apply(self, args: &mut ServeArgs, matches: &ArgMatches, path: &Path) -> Result<BTreeSet<&'static str>, ConfigError> {
        let defaulted = |id: &str| matches!(matches.value_source(id), None | Some(ValueSource::DefaultValue));
        let bad = |key: &'static str, why: String| ConfigError::Value { path: path.display().to_string(), key, why };
        let mut filled = BTreeSet::new();
        // `key => target`: the value as it is; `key => target, convert`: through a parser.
        macro_rules! take {
            ($key:ident => $target:expr) => {
                take!($key => $target, |v| Ok::<_, String>(v))
            };
            ($key:ident => $target:expr, $convert:expr) => {
                if let Some(v) = self.$key {
                    if defaulted(stringify!($key)) {
                        $target = $convert(v).map_err(|why| bad(stringify!($key), why))?;
                        filled.insert(stringify!($key));
                    }
                }
            };
        }
        take!(database => args.db.database, |url: String| url.parse::<DatabaseUrl>());
        take!(templates => args.templates, |list: Vec<String>| {
            list.iter().map(|t| t.parse::<TopicTemplate>().map_err(|e| e.to_string())).collect::<Result<_, _>>()
        });
        take!(connect_timeout => args.connect_timeout, DurationValue::parse);
        take!(sys_interval => args.sys_interval, DurationValue::parse);
        take!(stale_after => args.stale_after, DurationValue::parse);
        take!(login_failure_window => args.login_failure_window, DurationValue::parse);
        take!(units => args.units, |units: std::collections::BTreeMap<String, String>| Ok::<_, String>(units.into_iter().collect()));
        take!(normal_ranges => args.normal_ranges, |ranges: std::collections::BTreeMap<String, String>| {
            ranges.into_iter().map(|(category, range)| crate::cli::parse_normal_range(&format!("{category}={range}"))).collect::<Result<_, _>>()
        });
        let listen = |text: String| crate::cli::parse_listen_addr(&text);
        take!(mqtt_listen => args.mqtt_listen, listen);
        take!(mqtt_ws_listen => args.mqtt_ws_listen, listen);
        take!(http_listen => args.http_listen, listen);
        take!(mqtts_listen => args.mqtts_listen, listen);
        take!(data_dir => args.db.dir.data_dir);
        take!(tls_cert => args.tls_cert, |p| Ok::<_, String>(Some(p)));
        take!(tls_key => args.tls_key, |p| Ok::<_, String>(Some(p)));
        take!(tls_check_interval => args.tls_check_interval, DurationValue::parse);
        take!(allow_anonymous => args.allow_anonymous);
        take!(demo => args.demo);
        take!(max_payload => args.max_payload);
        take!(ingest_queue => args.ingest_queue);
        take!(max_packet_size => args.max_packet_size);
        take!(max_inflight => args.max_inflight);
        take!(max_queued => args.max_queued);
        take!(max_queued_qos0 => args.max_queued_qos0);
        take!(max_connections_per_ip => args.max_connections_per_ip);
        take!(max_subscriptions => args.max_subscriptions);
        take!(session_expiry => args.session_expiry, DurationValue::parse);
        take!(max_retained => args.max_retained);
        take!(max_retained_bytes => args.max_retained_bytes);
        take!(max_login_failures => args.max_login_failures);
        take!(max_login_failures_total => args.max_login_failures_total);
        take!(max_request_body => args.max_request_body);
        take!(upstream => args.upstream, |url: String| url.parse::<crate::mqtt_client::BrokerUrl>().map(Some));
        take!(upstream_username => args.upstream_username, |v| Ok::<_, String>(Some(v)));
        take!(upstream_password => args.upstream_password, |v: String| Ok::<_, String>(Some(crate::mqtt_client::Secret::from_str(&v).expect("any text"))));
        take!(upstream_ca_file => args.upstream_ca_file, |v| Ok::<_, String>(Some(v)));
        take!(node_id => args.node_id);
        take!(share_group => args.share_group);
        take!(mqtt_listeners => args.mqtt_listeners, |v: toml::Value| match v {
            toml::Value::Boolean(on) => Ok(on),
            toml::Value::String(text) if text == "on" || text == "off" => Ok(text == "on"),
            other => Err(format!("must be \"on\" or \"off\", not {other:?}")),
        });
        take!(minute_rollup_retention => args.minute_rollup_retention, |text: String| parse_keep(&text));
        take!(hourly_rollup_retention => args.hourly_rollup_retention, |text: String| parse_keep(&text));
        take!(low_disk_percent => args.low_disk_percent);
        take!(ha_discovery => args.ha_discovery);
        take!(ha_discovery_prefix => args.ha_discovery_prefix);
        if let Some(specs) = self.alert {
            args.alerts = check_alerts(&specs).map_err(|why| bad("alert", why))?;
            filled.insert("alert");
        }
        if let Some(value) = self.retention {
            let retention = RetentionValue::parse(value).map_err(|why| bad("retention", why))?;
            if let Some(default) = retention.default.filter(|_| defaulted("retention")) {
                args.retention = default;
                filled.insert("retention");
            }
            if !retention.rules.is_empty() && defaulted("retention_rules") {
                args.retention_rules = retention.rules;
                filled.insert("retention_rules");
            }
        }
        Ok(filled)
    }
}

/// `an integer`, `a string`: a TOML type's name as the object of "not".
fn with_article(kind: &str) -> String {
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {kind}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, FromArgMatches};

    fn serve(argv: &[&str], file: &str) -> Result<ServeArgs, ConfigError> {
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let Command::Serve(mut args) = Cli::from_arg_matches(&matches).unwrap().command else { panic!() };
        let config = ConfigFile::parse(file, "roost.toml".into())?;
        config.apply(&mut args, matches.subcommand_matches("serve").unwrap(), Path::new("roost.toml"))?;
        Ok(*args)
    }

    #[test]
    fn the_file_fills_defaults_and_flags_win() {
        let file = r#"
            database = "postgres://roost@db/roost"
            mqtt = "127.0.0.1:1884"
            templates = ["home/{owner}/{place}/{category}"]
            max_payload = 100
            sys_interval_secs = 2.5
        "#;
        let args = serve(&["roost", "serve", "--mqtt-listen", "127.0.0.1:2000"], file).unwrap();
        assert_eq!(args.mqtt_listen.port(), 2000, "the flag beats the file");
        assert_eq!(args.db.database.expose_secret(), "postgres://roost@db/roost");
        assert_eq!(args.templates.len(), 1);
        assert_eq!(args.max_payload, 100);
        assert_eq!(args.sys_interval, Duration::from_millis(2500));
        let args = serve(&["roost", "serve"], file).unwrap();
        assert_eq!(args.mqtt_listen, "127.0.0.1:1884".parse().unwrap(), "from the file (under its old name)");
        // A listening address the file gets wrong is explained as a flag's is, in one line.
        let e = serve(&["roost", "serve"], "mqtt_listen = \"localhost:18832\"").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid setting `mqtt_listen` (from config file roost.toml): \"localhost:18832\" is not an IP address and port, \
             e.g. 0.0.0.0:1883 (every interface) or 127.0.0.1:0 (any free port)"
        );
    }

    #[test]
    fn alert_rules_from_the_file_and_their_errors() {
        let file = "[[alert]]\nname = \"hot\"\ntopic = \"iot/+/sensor/gh/temperature\"\nabove = 30.0\nfor = \"10m\"\n\n\
                    [[alert]]\nname = \"quiet\"\ntopic = \"iot/#\"\nstale = \"15m\"\nowner = \"kim\"\n";
        let args = serve(&["roost", "serve"], file).unwrap();
        let names: Vec<(&str, &str, bool)> = args.alerts.iter().map(|r| (r.owner.as_str(), r.name.as_str(), r.from_config)).collect();
        assert_eq!(names, [("admin", "hot", true), ("kim", "quiet", true)], "owned by admin unless they say");
        let bad = |file: &str| serve(&["roost", "serve"], file).unwrap_err().to_string();
        let e = bad("[[alert]]\nname = \"hot\"\ntopic = \"iot/#\"\nabove = 30.0\nclear = 31.0\n");
        assert!(e.contains("`alert`") && e.contains("entry 1") && e.contains("`clear`"), "{e}");
        let e = bad("[[alert]]\nname = \"hot\"\ntopic = \"iot/#\"\nabov = 30.0\n");
        assert!(e.contains("abov"), "a typo is named: {e}");
        let e = bad("[[alert]]\nname = \"a\"\ntopic = \"iot/#\"\nabove = 1.0\n[[alert]]\nname = \"a\"\ntopic = \"iot/#\"\nbelow = 1.0\n");
        assert!(e.contains("a second rule named"), "{e}");
    }

    /// The sample file documents the defaults: applying it changes nothing.
    #[test]
    fn the_example_file_states_the_defaults() {
        let example = include_str!("../../../roost.example.toml");
        let from_file = serve(&["roost", "serve"], example).unwrap();
        let defaults = serve(&["roost", "serve"], "").unwrap();
        let expected = ServeArgs {
            templates: TopicTemplate::defaults(),
            units: crate::cli::default_units(),
            normal_ranges: crate::cli::default_normal_ranges(),
            ..defaults
        };
        assert_eq!(format!("{from_file:?}"), format!("{expected:?}"));
    }

    #[test]
    fn retention_is_a_duration_or_a_list_of_rules() {
        let args = serve(&["roost", "serve"], "retention = \"90d\"\nhourly_rollup_retention = \"3650d\"").unwrap();
        assert_eq!(args.retention.to_string(), "90d");
        assert_eq!(args.hourly_rollup_retention.to_string(), "3650d");
        let file = r#"
            [[retention]]
            filter = "iot/+/sensor/+/illuminate"
            keep = "7d"
            [[retention]]
            keep = "forever"
        "#;
        let args = serve(&["roost", "serve"], file).unwrap();
        assert_eq!(args.retention, Keep::Forever, "an entry without a filter is the default");
        assert_eq!(args.retention_rules, [RetentionRule::new("iot/+/sensor/+/illuminate", "7d").unwrap()]);
        let args = serve(&["roost", "serve", "--retention-rule", "iot/a/#=1d", "--retention", "2d"], file).unwrap();
        assert_eq!(args.retention_rules, [RetentionRule::new("iot/a/#", "1d").unwrap()], "flags beat the file");
        assert_eq!(args.retention.to_string(), "2d");
        for (bad, says) in [
            ("retention = 5", "must be a duration such as \"30d\", \"forever\", or [[retention]] tables, not an integer"),
            ("retention = true", "not a boolean"),
            ("[[retention]]\nkeep = 7", "`keep` must be a string, not an integer"),
            ("[[retention]]\nfilter = \"a/#\"", "entry 1: needs `keep`"),
            ("[[retention]]\nkeep = \"1d\"\nfiltre = \"a\"", "unknown key `filtre`"),
            ("[[retention]]\nkeep = \"1d\"\nfilter = \"a/#/b\"", "not a topic filter"),
            ("[[retention]]\nkeep = \"1d\"\n[[retention]]\nkeep = \"2d\"", "a second entry without `filter`"),
        ] {
            let err = serve(&["roost", "serve"], bad).unwrap_err().to_string();
            assert!(err.contains("`retention`") && err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let err = serve(&["roost", "serve"], "mqttt = \"0.0.0.0:1\"").unwrap_err();
        assert!(err.to_string().contains("`mqttt`"), "{err}");
        let err = serve(&["roost", "serve"], "max_paylod = 100").unwrap_err();
        assert!(err.to_string().ends_with("unknown key `max_paylod`: did you mean `max_payload`?"), "{err}");
        let err = serve(&["roost", "serve"], "colour = 1").unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`, expected one of"), "nothing close: the list: {err}");
        let err = serve(&["roost", "serve"], "templates = [\"iot/{owner}\"]").unwrap_err();
        assert!(err.to_string().contains("`templates`"), "{err}");
        let err = serve(&["roost", "serve"], "connect_timeout_secs = -1").unwrap_err();
        assert!(err.to_string().contains("is not a duration"), "{err}");
        let args = serve(&["roost", "serve"], "connect_timeout = \"2m\"\nsys_interval_secs = 2.5").unwrap();
        assert_eq!((args.connect_timeout, args.sys_interval), (Duration::from_secs(120), Duration::from_millis(2500)));
        let args = serve(&["roost", "serve"], "http = \"127.0.0.1:1\"").unwrap();
        assert_eq!(args.http_listen.port(), 1, "an old key still counts");
        let err = serve(&["roost", "serve"], "http = \"127.0.0.1:1\"\nhttp_listen = \"127.0.0.1:2\"").unwrap_err();
        assert!(err.to_string().contains("given twice, also under its old name `http`"), "{err}");
    }
}
