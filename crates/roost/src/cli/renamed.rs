//! Names that changed, accepted for one release with a warning: flags and environment
//! variables (rewritten here, before clap parses) and config file keys (`config_file` asks
//! [`config_key`]). One table; nothing else knows the old names.

use std::ffi::OsString;

/// A flag of some commands that has a new name.
struct RenamedFlag {
    /// The command path it belongs to, e.g. `["serve"]` or `["token", "create"]`.
    command: &'static [&'static str],
    old_flag: &'static str,
    new_flag: &'static str,
    /// The environment variable the old flag read, if it had one.
    old_env: Option<&'static str>,
    new_env: Option<&'static str>,
    /// Appended to a bare number given to the old flag (`--days 30` meant 30 days; the new
    /// flag takes a duration with a unit).
    unit: Option<&'static str>,
}

const SERVE: &[&str] = &["serve"];
const FLAGS: &[RenamedFlag] = &[
    RenamedFlag {
        command: SERVE,
        old_flag: "--mqtt",
        new_flag: "--mqtt-listen",
        old_env: Some("ROOST_MQTT"),
        new_env: Some("ROOST_MQTT_LISTEN"),
        unit: None,
    },
    RenamedFlag {
        command: SERVE,
        old_flag: "--mqtts",
        new_flag: "--mqtts-listen",
        old_env: Some("ROOST_MQTTS"),
        new_env: Some("ROOST_MQTTS_LISTEN"),
        unit: None,
    },
    RenamedFlag {
        command: SERVE,
        old_flag: "--mqtt-ws",
        new_flag: "--mqtt-ws-listen",
        old_env: Some("ROOST_MQTT_WS"),
        new_env: Some("ROOST_MQTT_WS_LISTEN"),
        unit: None,
    },
    RenamedFlag {
        command: SERVE,
        old_flag: "--http",
        new_flag: "--http-listen",
        old_env: Some("ROOST_HTTP"),
        new_env: Some("ROOST_HTTP_LISTEN"),
        unit: None,
    },
    RenamedFlag {
        command: &["simulate"],
        old_flag: "--mqtt",
        new_flag: "--broker",
        old_env: Some("ROOST_MQTT_URL"),
        new_env: Some("ROOST_BROKER"),
        unit: None,
    },
    RenamedFlag {
        command: &["bench"],
        old_flag: "--mqtt",
        new_flag: "--broker",
        old_env: Some("ROOST_MQTT_URL"),
        new_env: Some("ROOST_BROKER"),
        unit: None,
    },
    RenamedFlag {
        command: &["token", "create"],
        old_flag: "--days",
        new_flag: "--expires-in",
        old_env: None,
        new_env: None,
        unit: Some("d"),
    },
];

/// Config file keys that have a new name (`serve --config`).
const CONFIG_KEYS: &[(&str, &str)] = &[
    ("mqtt", "mqtt_listen"),
    ("mqtts", "mqtts_listen"),
    ("mqtt_ws", "mqtt_ws_listen"),
    ("http", "http_listen"),
    ("connect_timeout_secs", "connect_timeout"),
    ("sys_interval_secs", "sys_interval"),
    ("stale_after_secs", "stale_after"),
];

/// The command line with old flag names replaced by new ones, and old environment variables
/// turned into the new flags (when neither the new flag nor the new variable is given), plus
/// one warning per old name used. `cli` says which of the current flags take a value (that
/// value is never taken for a flag name); `env` reads an environment variable.
pub fn upgrade_command_line(
    cli: &clap::Command,
    args: Vec<OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> (Vec<OsString>, Vec<String>) {
    let command: Vec<String> = args.iter().skip(1).map_while(|a| a.to_str().filter(|a| !a.starts_with('-')).map(str::to_owned)).collect();
    let renamed: Vec<&RenamedFlag> =
        FLAGS.iter().filter(|r| command.len() >= r.command.len() && command[..r.command.len()] == *r.command).collect();
    let mut subcommand = cli;
    for word in &command {
        match subcommand.find_subcommand(word) {
            Some(found) => subcommand = found,
            None => break,
        }
    }
    let takes_value = |flag: &str| {
        flag.strip_prefix("--")
            .is_some_and(|long| subcommand.get_arguments().any(|a| a.get_long() == Some(long) && a.get_action().takes_values()))
    };
    let mut warnings = Vec::new();
    let mut upgraded = Vec::with_capacity(args.len());
    let mut args = args.into_iter().peekable();
    let mut pending_unit: Option<&str> = None;
    while let Some(arg) = args.next() {
        if let Some(unit) = pending_unit.take().filter(|_| arg != "--") {
            upgraded.push(with_unit(arg, unit));
            continue;
        }
        if arg == "--" {
            upgraded.push(arg);
            upgraded.extend(args.by_ref());
            break;
        }
        let text = arg.to_string_lossy().into_owned();
        if takes_value(&text) {
            // A current flag: its value is passed on as it is, whatever it looks like.
            upgraded.push(arg);
            upgraded.extend(args.next());
            continue;
        }
        let (name, value) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (text.as_str(), None),
        };
        // `serve --mqtt on|off` is the listeners' switch (`--mqtt-listeners`), not the old name
        // of `--mqtt-listen`, whose values are addresses.
        let switch = |v: &str| v == "on" || v == "off";
        if command.first().map(String::as_str) == Some("serve") && name == "--mqtt" {
            let given = value.map(str::to_owned).or_else(|| args.peek().and_then(|a| a.to_str()).filter(|v| switch(v)).map(str::to_owned));
            if let Some(on_off) = given.filter(|v| switch(v)) {
                if value.is_none() {
                    args.next();
                }
                upgraded.push(format!("--mqtt-listeners={on_off}").into());
                continue;
            }
        }
        let Some(rename) = renamed.iter().find(|r| r.old_flag == name) else {
            upgraded.push(arg);
            continue;
        };
        warnings.push(format!("{} is now {}; the old name will stop working in the next release", rename.old_flag, rename.new_flag));
        match value {
            Some(value) => {
                upgraded.push(format!("{}={}", rename.new_flag, rename.unit.map_or(value.to_owned(), |u| add_unit(value, u))).into())
            }
            None => {
                upgraded.push(rename.new_flag.into());
                pending_unit = rename.unit;
            }
        }
    }
    // Flags made from old variables go before a `--`, where clap still reads flags.
    let flags_end = upgraded.iter().position(|a| a == "--").unwrap_or(upgraded.len());
    let mut from_env = Vec::new();
    for rename in renamed {
        let (Some(old_env), Some(new_env)) = (rename.old_env, rename.new_env) else { continue };
        let Some(value) = env(old_env) else { continue };
        let flag_given = upgraded[..flags_end]
            .iter()
            .any(|a| a.to_str().is_some_and(|a| a == rename.new_flag || a.starts_with(&format!("{}=", rename.new_flag))));
        if flag_given || env(new_env).is_some() {
            warnings.push(format!("{old_env} is ignored: {} or {new_env} is set (and {old_env} is the old name)", rename.new_flag));
            continue;
        }
        warnings.push(format!("{old_env} is now {new_env}; the old name will stop working in the next release"));
        let mut flag = OsString::from(format!("{}=", rename.new_flag));
        flag.push(value);
        from_env.push(flag);
    }
    upgraded.splice(flags_end..flags_end, from_env);
    (upgraded, warnings)
}

fn with_unit(value: OsString, unit: &str) -> OsString {
    match value.to_str() {
        Some(text) => add_unit(text, unit).into(),
        None => value,
    }
}

/// `30` → `30d`; a value that already has a unit (or is not a number) is left for the parser.
fn add_unit(value: &str, unit: &str) -> String {
    if value.trim().parse::<f64>().is_ok() {
        format!("{}{unit}", value.trim())
    } else {
        value.to_owned()
    }
}

/// The current name of a config file key: `Some((new, warning))` when `key` is an old name.
pub fn config_key(key: &str) -> Option<(&'static str, String)> {
    CONFIG_KEYS
        .iter()
        .find(|(old, _)| *old == key)
        .map(|(old, new)| (*new, format!("config key `{old}` is now `{new}`; the old name will stop working in the next release")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(args: &[&str], env: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let cli = <crate::cli::Cli as clap::CommandFactory>::command();
        let (args, warnings) = upgrade_command_line(&cli, args.iter().map(OsString::from).collect(), |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| OsString::from(v))
        });
        (args.into_iter().map(|a| a.into_string().unwrap()).collect(), warnings)
    }

    #[test]
    fn old_flags_become_new_ones_with_a_warning() {
        let (args, warnings) = upgrade(&["roost", "serve", "--mqtt", "0.0.0.0:1884", "--http=127.0.0.1:0", "--mqtt-ws-listen", "x"], &[]);
        assert_eq!(args, ["roost", "serve", "--mqtt-listen", "0.0.0.0:1884", "--http-listen=127.0.0.1:0", "--mqtt-ws-listen", "x"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("--mqtt is now --mqtt-listen"), "{warnings:?}");
        let (args, _) = upgrade(&["roost", "simulate", "--mqtt", "mqtt://h:1884"], &[]);
        assert_eq!(args, ["roost", "simulate", "--broker", "mqtt://h:1884"], "the same old name means the broker URL for a client");
    }

    #[test]
    fn values_and_other_commands_are_left_alone() {
        let (args, warnings) = upgrade(&["roost", "user", "add", "--mqtt"], &[]);
        assert_eq!(args, ["roost", "user", "add", "--mqtt"], "not a renamed flag of `user add`: clap says so");
        assert!(warnings.is_empty());
        let (args, warnings) = upgrade(&["roost", "simulate", "--password", "--mqtt", "--owner", "--days"], &[]);
        assert_eq!(args, ["roost", "simulate", "--password", "--mqtt", "--owner", "--days"], "values of current flags");
        assert!(warnings.is_empty(), "{warnings:?}");
        let (args, _) = upgrade(&["roost", "token", "create", "u", "--name", "--days", "--days", "7"], &[]);
        assert_eq!(args, ["roost", "token", "create", "u", "--name", "--days", "--expires-in", "7d"]);
        let (args, _) = upgrade(&["roost", "serve", "--", "--mqtt"], &[("ROOST_MQTT", "a:1")]);
        assert_eq!(args, ["roost", "serve", "--mqtt-listen=a:1", "--", "--mqtt"], "after `--` nothing is a flag");
    }

    #[test]
    fn mqtt_on_or_off_switches_the_listeners() {
        for args in [&["roost", "serve", "--mqtt", "off"][..], &["roost", "serve", "--mqtt=off"]] {
            let (upgraded, warnings) = upgrade(args, &[]);
            assert_eq!(upgraded, ["roost", "serve", "--mqtt-listeners=off"]);
            assert!(warnings.is_empty());
        }
        let (upgraded, _) = upgrade(&["roost", "serve", "--mqtt", "127.0.0.1:1884"], &[]);
        assert_eq!(upgraded, ["roost", "serve", "--mqtt-listen", "127.0.0.1:1884"], "an address: the old name of --mqtt-listen");
    }

    #[test]
    fn bare_days_keep_their_meaning() {
        let (args, _) = upgrade(&["roost", "token", "create", "alice", "--days", "30"], &[]);
        assert_eq!(args, ["roost", "token", "create", "alice", "--expires-in", "30d"]);
        let (args, _) = upgrade(&["roost", "token", "create", "alice", "--days=7"], &[]);
        assert_eq!(args, ["roost", "token", "create", "alice", "--expires-in=7d"]);
    }

    #[test]
    fn old_environment_variables_count_unless_the_new_name_is_given() {
        let (args, warnings) = upgrade(&["roost", "simulate"], &[("ROOST_MQTT_URL", "mqtt://h:1")]);
        assert_eq!(args, ["roost", "simulate", "--broker=mqtt://h:1"]);
        assert!(warnings[0].contains("ROOST_MQTT_URL is now ROOST_BROKER"), "{warnings:?}");
        let (args, warnings) = upgrade(&["roost", "simulate"], &[("ROOST_MQTT_URL", "mqtt://h:1"), ("ROOST_BROKER", "mqtt://h:2")]);
        assert_eq!(args, ["roost", "simulate"], "clap reads ROOST_BROKER itself");
        assert!(warnings[0].contains("ROOST_MQTT_URL is ignored"), "{warnings:?}");
        let (args, _) = upgrade(&["roost", "serve", "--mqtt-listen", "a"], &[("ROOST_MQTT", "b")]);
        assert_eq!(args, ["roost", "serve", "--mqtt-listen", "a"], "the flag wins, as over any variable");
    }

    #[test]
    fn old_config_keys_are_named() {
        assert_eq!(config_key("stale_after_secs").map(|(new, _)| new), Some("stale_after"));
        assert_eq!(config_key("http").map(|(new, _)| new), Some("http_listen"));
        assert!(config_key("http_listen").is_none());
    }
}
