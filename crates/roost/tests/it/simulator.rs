//! `roost simulate`, `roost serve --demo` and `roost bench`, run as the real binary against a
//! running Roost on every database.

use crate::databases::{Backend, TestDb};
use crate::support::{eventually_async, roost_command, TestServer};
use roost::model::{SensorKey, TimestampMs};
use roost::sim::board::{HUMIDITY_RANGE, LIGHT_RANGE, TEMPERATURE_RANGE};
use roost::store::Store;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::Command;

async fn run(cmd: &mut Command, limit: Duration) -> Output {
    tokio::time::timeout(limit, cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output())
        .await
        .expect("the command finished in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The stored values of every sensor of `owner`, by category.
async fn values_by_category(store: &Store, owner: &str) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    for sensor in store.sensors().await.unwrap().into_iter().filter(|s| s.key.owner == owner) {
        let rows = store.readings(&sensor.key, TimestampMs(0), TimestampMs(i64::MAX)).await.unwrap();
        out.push((sensor.key.category.to_string(), rows.into_iter().map(|(_, v)| v).collect()));
    }
    out
}

async fn simulated_boards_store_all_three_categories_in_range(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let out = run(
        roost_command("warn")
            .args(["simulate", "--broker", &format!("mqtt://{}", server.mqtt), "--devices", "3", "--interval", "0.05"])
            .args(["--count", "90", "--seed", "7", "--owner", "yanjo"]),
        Duration::from_secs(60),
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Not a terminal: plain progress lines, the last one with the totals.
    assert!(stderr.lines().any(|l| l.starts_with("simulate: sent 90 · acked 90")), "{stderr}");

    let sensors = values_by_category(&server.store, "yanjo").await;
    assert_eq!(sensors.len(), 9, "3 boards × temperature, humidity, illuminate: {sensors:?}");
    let total: usize = sensors.iter().map(|(_, v)| v.len()).sum();
    assert_eq!(total, 90, "every acknowledged reading is stored");
    for (category, values) in &sensors {
        let range = match category.as_str() {
            "temperature" => TEMPERATURE_RANGE,
            "humidity" => HUMIDITY_RANGE,
            "illuminate" => LIGHT_RANGE,
            other => panic!("unexpected category {other}"),
        };
        assert!(!values.is_empty(), "{category} has readings");
        assert!(values.iter().all(|v| (range.0..=range.1).contains(v)), "{category}: {values:?}");
    }
    let places: std::collections::BTreeSet<_> = server.store.sensors().await.unwrap().into_iter().map(|s| s.key.place).collect();
    assert_eq!(places.into_iter().collect::<Vec<_>>(), ["bedroom", "kitchen", "livingroom"]);
    server.stop().await;
}

async fn bench_verifies_every_acknowledged_reading_and_cleans_up(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let out = run(
        roost_command("warn").args(["bench", "--broker", &server.mqtt.to_string(), "--database", db.url.expose_secret()]).args([
            "--count",
            "3000",
            "--clients",
            "3",
            "--qos",
            "2",
        ]),
        Duration::from_secs(120),
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("published 3,000, acknowledged 3,000"), "{stdout}");
    assert!(stdout.contains("latency publish → ack: p50"), "{stdout}");
    assert!(stdout.contains("verified: all 3,000 acknowledged readings are stored"), "{stdout}");
    let left = server.store.sensors().await.unwrap().into_iter().filter(|s| s.key.owner == "roost-bench").count();
    assert_eq!(left, 0, "the bench removes its sensors unless --keep");
    assert_eq!(server.store.count_readings().await.unwrap(), 0, "and their readings");
    server.stop().await;
}

/// Deletes one stored bench reading behind Roost's back, the way a faulty sink would lose it.
async fn delete_one_bench_reading(db: &TestDb, backend: Backend) -> bool {
    use sqlx::{Connection, Row};
    // Readings published in one burst can share a millisecond, so exactly one row is deleted: by
    // its row id on SQLite (where `readings` is a view over two tables, schema migration 12) and
    // PostgreSQL, with `LIMIT 1` on MariaDB (where `readings_all` is the view of `readings` and
    // the staged ones, schema migration 17).
    let (all, tables): (&str, &[&str]) = match backend {
        Backend::Sqlite => ("readings", &["readings_staged", "readings_indexed"]),
        Backend::Postgres => ("readings", &["readings"]),
        Backend::MariaDb => ("readings_all", &["readings_staged", "readings"]),
    };
    let find = format!("SELECT r.sensor_id, r.ts FROM {all} r JOIN sensors s ON s.id = r.sensor_id WHERE s.owner = 'roost-bench' LIMIT 1");
    let delete = |(id, ts): (i64, i64), table: &str| {
        let one = format!("sensor_id = {id} AND ts = {ts}");
        match backend {
            Backend::Sqlite => format!("DELETE FROM {table} WHERE rowid = (SELECT rowid FROM {table} WHERE {one} LIMIT 1)"),
            Backend::Postgres => format!("DELETE FROM {table} WHERE ctid = (SELECT ctid FROM {table} WHERE {one} LIMIT 1)"),
            Backend::MariaDb => format!("DELETE FROM {table} WHERE {one} LIMIT 1"),
        }
    };
    let url = db.url.expose_secret().replacen("mariadb:", "mysql:", 1);
    macro_rules! with {
        ($conn:ty) => {{
            let mut conn = <$conn>::connect(&url).await.unwrap();
            let Some(row) = sqlx::query(&find).fetch_optional(&mut conn).await.unwrap() else { return false };
            let key = (row.get::<i64, _>(0), row.get::<i64, _>(1));
            for table in tables {
                if sqlx::query(&delete(key, table)).execute(&mut conn).await.unwrap().rows_affected() == 1 {
                    return true;
                }
            }
            false
        }};
    }
    match backend {
        Backend::Sqlite => with!(sqlx::SqliteConnection),
        Backend::Postgres => with!(sqlx::PgConnection),
        Backend::MariaDb => with!(sqlx::MySqlConnection),
    }
}

async fn bench_reports_a_reading_deleted_mid_run(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let bench = roost_command("warn")
        .args(["bench", "--broker", &server.mqtt.to_string(), "--database", db.url.expose_secret()])
        .args(["--count", "2000", "--clients", "2", "--rate", "500", "--keep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually_async("a bench reading was stored and then deleted", || delete_one_bench_reading(&db, backend)).await;
    let out = tokio::time::timeout(Duration::from_secs(60), bench.wait_with_output()).await.unwrap().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("verification FAILED: 1 of 2,000 acknowledged readings are missing"), "{stdout}");
    assert!(stdout.contains("missing: roost-bench/run"), "the missing reading is named: {stdout}");
    server.stop().await;
}

crate::on_every_database!(
    simulated_boards_store_all_three_categories_in_range,
    bench_verifies_every_acknowledged_reading_and_cleans_up,
    bench_reports_a_reading_deleted_mid_run,
);

#[tokio::test]
async fn simulator_reconnects_with_backoff_until_the_broker_is_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    use tokio::io::AsyncBufReadExt;
    let mut sim = roost_command("warn")
        .args(["simulate", "--broker", &format!("mqtt://127.0.0.1:{port}"), "--devices", "2", "--interval", "0.05", "--count", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nothing listens yet: the boards fail, back off and retry. Start the broker once a
    // failure was logged.
    let (failed, has_failed) = tokio::sync::oneshot::channel();
    let mut lines = tokio::io::BufReader::new(sim.stderr.take().unwrap()).lines();
    let stderr = tokio::spawn(async move {
        let (mut all, mut failed) = (String::new(), Some(failed));
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("connection failed") {
                failed.take().map(|f| f.send(()));
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    tokio::time::timeout(Duration::from_secs(30), has_failed).await.expect("a failed connection is logged").unwrap();
    let server = TestServer::start_with(|a| a.mqtt_listen = format!("127.0.0.1:{port}").parse().unwrap()).await;
    let status = tokio::time::timeout(Duration::from_secs(60), sim.wait()).await.unwrap().unwrap();
    let stderr = stderr.await.unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("connection failed"), "failures are logged: {stderr}");
    let last = stderr.lines().rev().find(|l| l.starts_with("simulate:")).unwrap();
    assert!(last.starts_with("simulate: sent 30 · acked 30"), "{last}");
    assert!(!last.contains("errors 0"), "the failed attempts are counted: {last}");
    assert_eq!(server.store.count_readings().await.unwrap(), 30);
    server.stop().await;
}

#[tokio::test]
async fn simulator_speaks_websocket_and_qos_2_and_publishes_glitches_as_a_naive_sketch_would() {
    let server = TestServer::start().await;
    let out = run(
        roost_command("warn")
            .args(["simulate", "--broker", &format!("ws://{}/mqtt", server.ws), "--qos", "2", "--glitches", "0.3"])
            .args(["--devices", "1", "--interval", "0.02", "--count", "60", "--seed", "3"]),
        Duration::from_secs(60),
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("simulate: sent 60 · acked 60"), "{stderr}");
    let stored = server.store.count_readings().await.unwrap();
    let rejects = server.store.recent_rejects(1000).await.unwrap();
    assert!(!rejects.is_empty(), "DHT11 failures arrive as \"nan\" and are quarantined");
    assert!(rejects.iter().all(|r| r.topic.ends_with("/temperature") || r.topic.ends_with("/humidity")), "{rejects:?}");
    assert_eq!(stored as usize + rejects.len(), 60, "every publish is either a reading or a reject");
    server.stop().await;
}

/// `--protocol 5`: the simulator and the bench speak MQTT 5.0. Publishes that are no reading
/// (a DHT11 failure sent as "nan") are refused in their PUBACK (0x99), which 3.1.1 cannot say:
/// the simulator counts them as errors, not as acknowledged.
#[tokio::test]
async fn simulate_and_bench_speak_mqtt_5() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start_on(db.url.clone(), |_| {}).await;
    let out = run(
        roost_command("warn").args(["simulate", "--broker", &server.mqtt.to_string(), "--protocol", "5", "--glitches", "0.3"]).args([
            "--devices",
            "1",
            "--interval",
            "0.02",
            "--count",
            "60",
            "--seed",
            "3",
        ]),
        Duration::from_secs(60),
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stored = server.store.count_readings().await.unwrap();
    let rejects = server.store.recent_rejects(1000).await.unwrap().len();
    assert!(rejects > 0 && stored as usize + rejects == 60, "{stored} readings, {rejects} rejects");
    assert!(stderr.contains(&format!("simulate: sent 60 · acked {stored} · ")), "{stderr}");
    assert!(stderr.contains(&format!("errors {rejects}")), "the refused publishes are errors: {stderr}");
    let out = run(
        roost_command("warn")
            .args(["bench", "--broker", &server.mqtt.to_string(), "--database", db.url.expose_secret(), "--protocol", "5"])
            .args(["--count", "600", "--clients", "2"]),
        Duration::from_secs(120),
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("verified: all 600 acknowledged readings are stored"), "{stdout}");
    server.stop().await;
}

#[tokio::test]
async fn demo_mode_shows_a_day_of_history_and_live_readings_at_once() {
    let server = TestServer::start_with(|a| a.demo = true).await;
    let store = server.store.clone();
    eventually_async("nine demo sensors with a day of history", || {
        let store = store.clone();
        async move {
            let sensors = store.sensors().await.unwrap();
            if sensors.iter().filter(|s| s.key.owner == "demo").count() != 9 {
                return false;
            }
            let key = SensorKey { owner: "demo".into(), place: "livingroom".into(), category: "temperature".into() };
            let now = TimestampMs::now().0;
            let old = store.readings(&key, TimestampMs(now - 25 * 3_600_000), TimestampMs(now - 23 * 3_600_000)).await.unwrap();
            let recent = store.readings(&key, TimestampMs(now - 60_000), TimestampMs(now + 1000)).await.unwrap();
            !old.is_empty() && !recent.is_empty()
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn bench_and_simulate_refuse_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let out = run(roost_command("warn").args(["bench", "--database", &missing]), Duration::from_secs(30)).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no database at"), "{}", text(&out.stderr));
    assert!(!dir.path().join("nope.db").exists(), "the bench does not create an empty database");

    let out = run(roost_command("warn").args(["simulate", "--glitches", "2"]), Duration::from_secs(30)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a fraction between 0 and 1"), "{}", text(&out.stderr));
    let out = run(roost_command("warn").args(["simulate", "--template", "iot/{owner}/sensor/{place}"]), Duration::from_secs(30)).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("has no {category} level"), "{}", text(&out.stderr));
    let out = run(roost_command("warn").args(["bench", "--qos", "0"]), Duration::from_secs(30)).await;
    assert!(!out.status.success());
    // QoS is checked before the database is looked for.
    assert!(text(&out.stderr).contains("QoS 0 is never acknowledged"), "{}", text(&out.stderr));

    for command in ["simulate", "bench"] {
        let out = run(roost_command("warn").args([command, "--help"]), Duration::from_secs(30)).await;
        let help = text(&out.stdout);
        assert!(out.status.success());
        for flag in ["--broker", "--username", "--password", "--ca-file", "--count", "--rate", "--qos"] {
            assert!(help.contains(flag), "{command} --help lists {flag}");
        }
    }
}

#[tokio::test]
async fn the_nodemcu_sketch_passes_its_syntax_check_and_publishes_the_simulators_topics() {
    crate::support::require_command("g++");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nodemcu");
    let out = run(&mut Command::new(root.join("syntax-check/check.sh")), Duration::from_secs(60)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sketch = std::fs::read_to_string(root.join("roost_nodemcu/roost_nodemcu.ino")).unwrap();
    assert!(sketch.contains(r#""iot/%s/sensor/%s/%s""#), "the default template iot/{{owner}}/sensor/{{place}}/{{category}}");
    for category in roost::sim::CATEGORIES {
        assert!(sketch.contains(&format!(r#"publishReading("{category}""#)), "the sketch publishes {category}");
    }
    assert!(sketch.contains("DHT dht(DHT_PIN, DHT11)") && sketch.contains("= D7;") && sketch.contains("= A0;"));
}

/// A test CA and a `localhost` certificate it signed, made with the openssl CLI: `ca.pem`,
/// `server.pem`, `server.key` in `dir`.
pub async fn make_certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(dir);
        cmd
    };
    let ca = [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=roost-test-ca",
        "-days",
        "2",
    ];
    assert!(run(&mut openssl(&ca), Duration::from_secs(30)).await.status.success());
    let server = [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.pem",
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ];
    assert!(run(&mut openssl(&server), Duration::from_secs(30)).await.status.success());
}

/// Roost's own listeners have no TLS yet (the security issue), so Mosquitto with a test CA is
/// the TLS peer here: MQTT over TLS and WebSocket over TLS, trusted through --ca-file.
#[tokio::test]
async fn simulator_connects_over_tls_and_wss_with_the_given_ca() {
    crate::support::require_command("openssl");
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path()).await;
    let (tls_port, wss_port) = (crate::support::free_port(), crate::support::free_port());
    let d = dir.path().display();
    let tls = format!("cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n");
    let config = format!(
        "allow_anonymous true\nuser root\nlistener {tls_port} 127.0.0.1\n{tls}listener {wss_port} 127.0.0.1\nprotocol websockets\n{tls}"
    );
    let _mosquitto = crate::support::spawn_mosquitto(dir.path(), &config, &[tls_port, wss_port]).await;
    let ca = dir.path().join("ca.pem");
    for url in [format!("mqtts://localhost:{tls_port}"), format!("wss://localhost:{wss_port}/")] {
        let out = run(
            roost_command("warn").args(["simulate", "--broker", &url, "--ca-file"]).arg(&ca).args(["--count", "9", "--interval", "0.05"]),
            Duration::from_secs(60),
        )
        .await;
        let stderr = text(&out.stderr);
        assert!(out.status.success() && stderr.contains("simulate: sent 9 · acked 9 · "), "{url}: {stderr}");
    }
    // Without the CA the certificate is refused, and the log says why.
    let out = run(
        roost_command("warn").args(["simulate", "--broker", &format!("mqtts://localhost:{tls_port}"), "--duration", "2s"]),
        Duration::from_secs(60),
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid peer certificate: UnknownIssuer"), "{stderr}");
    assert!(stderr.contains("simulate: sent 0 · acked 0"), "{stderr}");
    assert!(!out.status.success() && stderr.contains("nothing was acknowledged"), "{stderr}");
}

/// A refused login stops the boards, never whoever runs them: `serve --demo` hands them the
/// server's own shutdown token (a demo user reset from the dashboard stopped the server).
#[tokio::test]
async fn a_refused_login_stops_the_boards_and_nothing_else() {
    let server = TestServer::start_with(|a| a.allow_anonymous = false).await;
    crate::support::add_user(&server.store, "demo", "demo-secret", false).await;
    let mut client = roost::mqtt_client::ClientSettings::new(format!("mqtt://{}", server.mqtt).parse().unwrap());
    client.username = Some("demo".into());
    client.password = Some("not-the-demo-secret".into());
    let config = roost::sim::FleetConfig {
        client,
        template: roost::ingest::TopicTemplate::defaults().swap_remove(0),
        owner: "demo".into(),
        boards: 2,
        interval: Duration::from_millis(50),
        rate: None,
        qos: rumqttc::QoS::AtLeastOnce,
        count: None,
        glitches: 0.0,
        seed: 1,
        utc_offset_secs: 0,
        backfill: None,
        client_id_prefix: "refused".into(),
    };
    let server_shutdown = tokio_util::sync::CancellationToken::new();
    let counters = std::sync::Arc::new(roost::progress::Counters::default());
    let ran = tokio::time::timeout(Duration::from_secs(30), roost::sim::run(config, counters, server_shutdown.clone())).await;
    assert!(ran.expect("the boards stop by themselves").is_ok());
    assert!(!server_shutdown.is_cancelled(), "the token the boards were given is left alone");
    server.stop().await;
}

#[tokio::test]
async fn bench_and_simulate_log_in_and_publish_under_their_own_name() {
    let server = TestServer::start_with(|a| a.allow_anonymous = false).await;
    crate::support::add_user(&server.store, "carol", "carol-secret", false).await;
    let db = server.store.url().expose_secret().to_owned();
    let bench = |count: &str, clients: &str, password: &str| {
        let mut command = roost_command("warn");
        command
            .args(["bench", "--broker", &server.mqtt.to_string(), "--database", &db, "--count", count, "--clients", clients])
            .args(["--username", "carol"])
            .env("ROOST_PASSWORD", password);
        command
    };
    let out = run(&mut bench("500", "2", "carol-secret"), Duration::from_secs(60)).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success() && stdout.contains("verified: all 500 acknowledged readings are stored"), "{stdout}{}", text(&out.stderr));
    assert!(stdout.ends_with("bench passed\n"), "{stdout}");
    // A refused login fails the bench, and says so last, with what to do.
    let out = run(&mut bench("50", "1", "not-carols"), Duration::from_secs(60)).await;
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("nothing was acknowledged, so nothing could be verified"), "{stdout}");
    assert!(stdout.contains("hint: the server refused the login"), "{stdout}");
    assert!(stdout.ends_with("bench FAILED: 50 of 50 publishes unacknowledged\n"), "{stdout}");
    // So does simulate, which stops at once instead of trying again for ever.
    let out = run(
        roost_command("warn")
            .args(["simulate", "--broker", &server.mqtt.to_string(), "--username", "carol", "--interval", "0.05"])
            .env("ROOST_PASSWORD", "not-carols"),
        Duration::from_secs(60),
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("the broker refused the login") && stderr.contains("nothing was acknowledged"), "{stderr}");
    let out = run(
        roost_command("warn")
            .args(["simulate", "--broker", &server.mqtt.to_string(), "--username", "carol", "--count", "9", "--interval", "0.05"])
            .env("ROOST_PASSWORD", "carol-secret"),
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let owners: std::collections::BTreeSet<String> =
        server.store.sensors().await.unwrap().into_iter().map(|s| s.key.owner.into()).collect();
    assert_eq!(owners.into_iter().collect::<Vec<_>>(), ["carol"], "the owner is the user name");
    assert_eq!(server.broker.stats().publishes_denied, 0);
    server.stop().await;
}
