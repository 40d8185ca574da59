//! The `roost` binary itself: bound addresses in the log, clean exit on SIGTERM, clear errors.

use crate::support::{output_with_input, pid, publish, Raw};
use mqtt_codec::{Ack, Packet, QoS};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The binary, run in a fresh directory (its default database `roost.db` lands there).
fn roost(dir: &tempfile::TempDir) -> Command {
    let mut cmd = crate::support::roost_command("info");
    cmd.current_dir(dir.path());
    cmd
}

/// Waits for the `roost-serve.json` a server writes into `data_dir` once it listens: its path
/// and what it says.
async fn running_server_file(data_dir: &std::path::Path) -> (std::path::PathBuf, serde_json::Value) {
    let file = data_dir.join("roost-serve.json");
    crate::support::eventually("roost-serve.json is written", || file.exists()).await;
    let described = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    (file, described)
}

/// Sends `server` SIGTERM and waits (`WAIT` at most) for it to exit; its exit status.
async fn stop_with_sigterm(server: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = server.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    tokio::time::timeout(crate::support::WAIT, server.wait()).await.expect("stops on SIGTERM").unwrap()
}

#[tokio::test]
async fn serve_logs_bound_addresses_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child =
        roost(&dir).args(["serve", "--allow-anonymous"]).args(crate::support::ANY_PORTS).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    tokio::time::timeout(crate::support::WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("MQTT listening") {
                let a = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap();
                addr = Some(a.parse::<std::net::SocketAddr>().unwrap());
            }
            if line.contains("MQTT over WebSocket listening") {
                return;
            }
        }
    })
    .await
    .expect("listeners logged");
    let addr = addr.expect("MQTT address logged");
    assert_ne!(addr.port(), 0, "the bound port is logged, not the requested 0");
    let (_client, _) = crate::support::Raw::mqtt(addr, "cli-test", true).await;
    let status = stop_with_sigterm(&mut child).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(dir.path().join("roost.db").exists(), "the default database is created in the working directory");
}

#[tokio::test]
async fn migrate_creates_the_schema_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // In a directory that does not exist yet: migrate creates it.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = roost(&dir).args(["migrate", "--database"]).arg(format!("sqlite://{}/m.db", file.display())).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&format!("{} is not a directory", file.display())), "{stderr}");
    let url = format!("sqlite://{}", dir.path().join("new/m.db").display());
    let out = roost(&dir).args(["migrate", "--database", &url]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("schema is up to date"), "{stderr}");
    let store = roost::store::Store::connect(&roost::store::DatabaseUrl::new(url)).await.unwrap();
    assert_eq!(store.count_readings().await.unwrap(), 0, "the tables exist");
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = roost(&dir)
        .args(["serve", "--database", "postgres://nobody@127.0.0.1:1/none"])
        .args(crate::support::ANY_PORTS)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("opening the database") && stderr.contains("connecting to postgres://nobody@127.0.0.1:1/none"), "{stderr}");
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = roost(&dir)
        .args([
            "serve",
            "--allow-anonymous",
            "--mqtt-listen",
            &format!("127.0.0.1:{port}"),
            "--mqtt-ws-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(&format!("binding the MQTT listener to 127.0.0.1:{port}")), "{line}");
    assert!(line.contains("choose another address with --mqtt-listen or ROOST_MQTT_LISTEN"), "says how to pick another: {line}");
    let created: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(created.is_empty(), "nothing is created on disk before the ports are bound: {created:?}");
}

#[tokio::test]
async fn bad_flags_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let out = roost(&dir).args(["serve", "--mqtt-listen", "not-an-address"]).output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'not-an-address' for '--mqtt-listen <ADDR>'"), "{stderr}");
}

/// Every setting with a value its rule refuses, given as a flag, as a `ROOST_*` environment
/// variable and in the config file: each time exit status 2, one `error:` line naming the key
/// and where the value came from, and never a panic. (`ingest_queue = 0` in the file used to
/// panic; `max_inflight = 0` was accepted.)
#[tokio::test]
async fn invalid_settings_from_any_source_name_the_key_and_exit_2() {
    // (key, value on the command line and in the environment, value in the TOML file)
    const CASES: &[(&str, &str, &str)] = &[
        ("ingest_queue", "0", "0"),
        ("max_payload", "0", "0"),
        ("max_packet_size", "8", "8"),
        ("max_inflight", "0", "0"),
        ("max_inflight", "70000", "70000"),
        ("max_queued", "0", "0"),
        ("max_queued_qos0", "0", "0"),
        ("max_subscriptions", "0", "0"),
        ("max_request_body", "100", "100"),
        ("max_login_failures_total", "0", "0"),
        ("connect_timeout", "2d", "\"2d\""),
        ("sys_interval", "3d", "\"3d\""),
        ("login_failure_window", "30d", "\"30d\""),
    ];
    let dir = tempfile::tempdir().unwrap();
    let listeners = crate::support::ANY_PORTS;
    for &(key, value, toml_value) in CASES {
        let flag = format!("--{}", key.replace('_', "-"));
        let env = format!("ROOST_{}", key.to_uppercase());
        let file = dir.path().join(format!("{key}.toml"));
        std::fs::write(&file, format!("{key} = {toml_value}\n")).unwrap();
        let from_flag = roost(&dir).arg("serve").args(listeners).args([&flag, value]).output();
        let from_env = roost(&dir).arg("serve").args(listeners).env(&env, value).output();
        let from_file = roost(&dir).arg("serve").args(listeners).arg("--config").arg(&file).output();
        for (source, out, named) in [
            ("flag", from_flag, format!("from flag {flag}")),
            ("environment", from_env, format!("from environment variable {env}")),
            ("file", from_file, format!("from config file {}", file.display())),
        ] {
            let out = tokio::time::timeout(Duration::from_secs(20), out).await.expect("exits at once").unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{key} from the {source}: {stderr}");
            assert!(!stderr.contains("panicked"), "{key} from the {source}: {stderr}");
            let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {stderr}"));
            assert!(error.contains(&format!("`{key}`")) && error.contains(&named), "{key} from the {source}: {error}");
        }
    }
}

/// Values that are not even of the setting's type are refused by the parser with the flag's
/// name, exit status 2, from any source; the file names its key.
#[tokio::test]
async fn unparsable_settings_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "max_queued = -5\n").unwrap();
    for (args, env, expected) in [
        (vec!["serve", "--max-queued", "many"], None, "--max-queued"),
        (
            vec!["serve"],
            Some(("ROOST_MAX_QUEUED", "many")),
            "error: invalid value 'many' for ROOST_MAX_QUEUED (environment variable for --max-queued): ",
        ),
        (
            vec!["serve"],
            Some(("ROOST_RETENTION", "abc")),
            "error: invalid value 'abc' for ROOST_RETENTION (environment variable for --retention): ",
        ),
        (vec!["serve", "--retention", "abc"], Some(("ROOST_RETENTION", "7d")), "for '--retention <RETENTION>'"),
        (vec!["serve", "--connect-timeout", "soon"], None, "is not a duration"),
        (vec!["serve", "--config", file.to_str().unwrap()], None, "max_queued"),
        (vec!["simulate", "--interval", "0s"], None, "is not a duration"),
    ] {
        let mut cmd = roost(&dir);
        cmd.args(&args);
        if let Some((name, value)) = env {
            cmd.env(name, value);
        }
        let out = tokio::time::timeout(Duration::from_secs(20), cmd.output()).await.expect("exits at once").unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected) && !stderr.contains("panicked"), "{args:?}: {stderr}");
        if env.is_some_and(|_| !args.contains(&"--retention")) {
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        }
    }
}

/// JSON Lines piped into `roost import -` without `--format` is read as JSON Lines (it starts
/// with `{`), and a time in epoch seconds is read as a payload's `ts` is, not as January 1970.
#[tokio::test]
async fn json_lines_on_standard_input_are_imported_without_naming_their_format() {
    let (cwd, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let row = b"{\"owner\":\"o\",\"place\":\"p\",\"category\":\"t\",\"ts_ms\":1700000000,\"value\":1.5}\n";
    let out = output_with_input(roost(&cwd).args(["import", "-", "--data-dir"]).arg(data.path()), row, Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("imported 1 reading (1 new sensor)"), "{stderr}");
    let out = roost(&cwd).args(["export", "--data-dir"]).arg(data.path()).output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "time,owner,place,category,value\n2023-11-14T22:13:20Z,o,p,t,1.5\n");
}

/// A user's mistake is one `error:` line with its causes, never a backtrace, even with
/// RUST_BACKTRACE=1 set as on many developer machines.
#[tokio::test]
async fn user_errors_print_one_line_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let mut add = roost(&dir);
    add.args(["user", "add", "bob", "--password-stdin"]).env("RUST_BACKTRACE", "1");
    let out = output_with_input(&mut add, b"short\n", Duration::from_secs(30)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(!stderr.contains("Stack backtrace") && !stderr.contains("stack backtrace"), "{stderr}");
}

/// A database that cannot be reached is named with its cause, once, at once: not "pool timed
/// out" after five seconds.
#[tokio::test]
async fn an_unreachable_database_is_reported_with_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://root@127.0.0.1:{closed_port}/roost");
    let out = roost(&dir).args(["serve", "--database", &url]).args(crate::support::ANY_PORTS).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(&url) && line.contains("Connection refused"), "{line}");
    assert_eq!(line.matches("Connection refused").count(), 1, "the cause once: {line}");
    assert!(!line.contains("timed out"), "{line}");
}

/// `roost user`/`roost token` work on the database `roost serve` uses: run elsewhere, they
/// name the file they looked for and create nothing (they used to create an empty database
/// the server never saw).
#[tokio::test]
async fn account_commands_never_create_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["user", "list"][..], &["token", "list"][..]] {
        let out = roost(&dir).args(args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let expected = format!("no database at {}", dir.path().join("roost.db").display());
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
    let created: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(created.is_empty(), "{created:?}");
}

/// `roost serve` leaves `roost-serve.json` in its data directory: `simulate` and `user` run
/// beside it, without `--mqtt` or `--database`, reach the server on its own ports (here not
/// 1883, which another broker holds on this machine) and its database, and say so. The file
/// is gone once the server stops.
#[tokio::test]
async fn other_commands_find_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        roost(&dir).args(["serve", "--allow-anonymous"]).args(crate::support::ANY_PORTS).stderr(Stdio::null()).spawn().unwrap();
    let (file, described) = running_server_file(dir.path()).await;
    assert!(described["mqtt"].as_str().unwrap().starts_with("mqtt://127.0.0.1:"), "{described}");
    #[cfg(unix)]
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions()) & 0o777, 0o600);

    let out = roost(&dir).args(["simulate", "--devices", "1", "--count", "3", "--interval", "50ms"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("using the running server's broker"), "{stderr}");
    assert!(stderr.contains(described["mqtt"].as_str().unwrap()), "{stderr}");
    let out = roost(&dir).args(["user", "list"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("using the running server's database"), "{stderr}");
    // From another directory, naming this one: the server's database is found there too (the
    // file names it by its absolute path; it used to say `sqlite://roost.db`, which was then
    // looked for in the other directory).
    let elsewhere = tempfile::tempdir().unwrap();
    let out = roost(&elsewhere).args(["user", "list", "--data-dir"]).arg(dir.path()).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("using the running server's database"), "{stderr}");
    assert!(!elsewhere.path().join("roost.db").exists());
    // A second server on the same data directory is refused, and the first one's file stays.
    let second = roost(&dir).args(["serve", "--allow-anonymous"]).args(crate::support::ANY_PORTS).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(20), second).await.expect("the second server stops at once").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("another roost serve (pid {}) runs from this data directory", server.id().unwrap())), "{stderr}");
    assert!(file.exists(), "the first server's file is left alone");

    assert!(stop_with_sigterm(&mut server).await.success());
    assert!(!file.exists(), "removed when the server stops");
}

/// A server whose standard error is closed (a pipe whose reader is gone) goes on serving and
/// stops cleanly: log lines it cannot write are dropped. tracing-subscriber reported each with
/// `eprintln!`, which panicked in the task that logged: every MQTT connection was dropped, and
/// SIGTERM did not stop the server (found by a new user's trial).
#[tokio::test]
async fn a_closed_standard_error_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server =
        roost(&dir).args(["serve", "--allow-anonymous"]).args(crate::support::ANY_PORTS).stderr(Stdio::piped()).spawn().unwrap();
    let (_, described) = running_server_file(dir.path()).await;
    drop(server.stderr.take());
    let mqtt: std::net::SocketAddr = described["mqtt"].as_str().unwrap().trim_start_matches("mqtt://").parse().unwrap();
    for n in 1..=3u16 {
        let (mut client, ack) = Raw::mqtt(mqtt, &format!("board{n}"), true).await;
        assert_eq!(ack.code, 0);
        client.send(&publish("iot/a/sensor/room/temperature", "21.5", QoS::AtLeastOnce, Some(n), false)).await;
        assert_eq!(client.recv().await, Some(Packet::PubAck(Ack::new(pid(n)))), "PUBACK {n}");
    }
    let status = stop_with_sigterm(&mut server).await;
    assert!(status.success(), "{status}");
}

/// A command whose standard output is closed (`roost user list | head -0`) fails with one
/// error line, exit 1; `println!` panicked there (exit 101 and a panic message).
#[tokio::test]
async fn a_closed_standard_output_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    assert!(roost(&dir).arg("migrate").output().await.unwrap().status.success());
    let mut list = roost(&dir).args(["user", "list"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(list.stdout.take());
    let out = tokio::time::timeout(Duration::from_secs(20), list.wait_with_output()).await.expect("exits").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: writing to standard output: Broken pipe") && !stderr.contains("panicked"), "{stderr}");
}

/// `--data-dir` is the default database's home: `serve --data-dir D` from elsewhere keeps
/// roost.db, its admin password and roost-serve.json in D, nothing in the working directory.
/// D need not exist: serve creates it (it used to fail with "unable to open database file").
#[tokio::test]
async fn the_data_directory_holds_the_default_database() {
    let (cwd, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data = root.path().join("var/lib/roost");
    let mut server =
        roost(&cwd).args(["serve"]).args(crate::support::ANY_PORTS).arg("--data-dir").arg(&data).stderr(Stdio::null()).spawn().unwrap();
    running_server_file(&data).await;
    assert!(data.join("roost.db").exists() && data.join("roost-admin-password").exists());
    let in_cwd: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(in_cwd.is_empty(), "{in_cwd:?}");
    let out = roost(&cwd).env("ROOST_DATA_DIR", &data).args(["user", "list"]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("admin"), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stop_with_sigterm(&mut server).await.success());
    // Stopped: the flag names the directory, and its database is the default.
    let out = roost(&cwd).args(["user", "list", "--data-dir"]).arg(&data).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("admin"), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let out = roost(&cwd).args(["token", "list", "--data-dir"]).arg(cwd.path().join("nowhere")).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no database at") && stderr.contains("nowhere"), "refuses, naming the path: {stderr}");
}

/// Names from before the one naming scheme (`--mqtt` as a listen address, `ROOST_MQTT`,
/// `--days`) still work for one release, each with a warning naming the new one.
#[tokio::test]
async fn old_names_work_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let listeners = ["--mqtt-ws-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
    let by_flag = roost(&dir).args(["serve", "--mqtt", &taken]).args(listeners).output().await.unwrap();
    let by_env = roost(&dir).env("ROOST_MQTT", &taken).arg("serve").args(listeners).output().await.unwrap();
    for (out, warning) in [(by_flag, "--mqtt is now --mqtt-listen"), (by_env, "ROOST_MQTT is now ROOST_MQTT_LISTEN")] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(warning), "{stderr}");
        assert!(stderr.contains(&format!("binding the MQTT listener to {taken}")), "the old name's value is used: {stderr}");
    }
    // `--days 30` still means 30 days.
    assert!(roost(&dir).arg("migrate").output().await.unwrap().status.success());
    assert!(roost(&dir).args(["user", "add", "alice"]).output().await.unwrap().status.success());
    let out = roost(&dir).args(["token", "create", "alice", "--days", "30"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("--days is now --expires-in"), "{stderr}");
    let list = roost(&dir).args(["token", "list"]).output().await.unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    let in_30_days = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let date = format!("{:04}-{:02}-{:02}", in_30_days.year(), in_30_days.month() as u8, in_30_days.day());
    assert!(listed.lines().any(|l| l.starts_with("1 ") && l.contains(&date)), "expires on {date}: {listed}");
}

/// `roost import` and `roost export` as a person runs them: a file into the data directory's
/// database (created), out again as JSON Lines with a filter and a range, the same file a second
/// time (nothing added), a bad line (its number, exit 1), a bad flag (exit 2), and an export from
/// a directory without a database (refused, naming the path).
#[tokio::test]
async fn export_and_import_from_the_command_line() {
    let (cwd, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let csv = cwd.path().join("readings.csv");
    std::fs::write(
        &csv,
        "time,owner,place,category,value\n\
         2026-01-01T00:00:00Z,yanjo,kitchen,temperature,21.5\n\
         2026-01-01T00:00:05.250Z,yanjo,kitchen,temperature,21.75\n\
         2026-01-02T00:00:00Z,kim,shed,humidity,40\n",
    )
    .unwrap();
    let import = |file: &std::path::Path| roost(&cwd).arg("import").arg(file).arg("--data-dir").arg(data.path()).output();
    let out = import(&csv).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("imported 3 readings (2 new sensors)"), "{stderr}");
    let out = import(&csv).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("imported 0 readings (0 new sensors); 3 of 3 rows were stored already"));

    let out = roost(&cwd)
        .args(["export", "--format", "jsonl", "--filter", "iot/yanjo/#", "--from", "2026-01-01T00:00:01Z", "--data-dir"])
        .arg(data.path())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"category\":\"temperature\",\"owner\":\"yanjo\",\"place\":\"kitchen\",\"time\":\"2026-01-01T00:00:05.25Z\",\"value\":21.75}\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 1 reading of 1 sensor"));

    let bad = cwd.path().join("bad.csv");
    std::fs::write(&bad, "time,owner,place,category,value\n2026-01-03T00:00:00Z,yanjo,kitchen,temperature,22\nnoon,a,b,c,1\n").unwrap();
    let out = import(&bad).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 3: `time` must be epoch milliseconds or an RFC 3339 time") && stderr.contains("(1 new readings)"),
        "{stderr}"
    );

    let out = roost(&cwd).args(["export", "--from", "yesterday"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = roost(&cwd)
        .args(["export", "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z", "--data-dir"])
        .arg(data.path())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--from must be before --to"), "a range that holds nothing: {stderr}");
    // `roost export | head`: the reader closing the pipe is the end, not an error.
    let mut export = roost(&cwd).arg("export").arg("--data-dir").arg(data.path()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    drop(export.stdout.take());
    let out = export.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("Broken pipe"), "{stderr}");
    let out = roost(&cwd).args(["export", "--data-dir"]).arg(cwd.path().join("nowhere")).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no database at") && stderr.contains("nowhere"), "{stderr}");
}
