//! The dashboard in a real headless Chromium (Debian's, driven by playwright-core under
//! Node.js): the overview by owner and board, the chart, the MQTT console, user management
//! (logins on), a sensor's settings and deletion, rejects, and HTML in names and payloads staying
//! inert.
//! Saves screenshots (wide and phone sizes, light and dark) under target/screenshots, or with
//! `ROOST_UPDATE_SCREENSHOTS=1` as the README's, in docs/screenshots.

use crate::support::{require_command, TestServer};
use tokio::process::Command;

/// Runs `tests/js/SCRIPT BASE_URL ARGS… SCREENSHOT_DIR` under Node.js (Debian's Chromium via
/// playwright-core) and returns the JSON it prints; panics unless it says `"ok": true`.
async fn run_browser_script(script: &str, server: &TestServer, args: &[&str]) -> serde_json::Value {
    run_browser_script_at(script, &format!("http://{}", server.http), args).await
}

/// [`run_browser_script`] against the dashboard at `base` (`http://HOST:PORT`).
pub async fn run_browser_script_at(script: &str, base: &str, args: &[&str]) -> serde_json::Value {
    require_command("node");
    require_command("chromium");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let js = root.join("tests/js");
    assert!(js.join("node_modules/playwright-core").exists(), "run `npm ci` in tests/js (.ci/run does)");
    // The README's screenshots are refreshed on request; other runs leave the checkout as it was.
    let shots = match std::env::var("ROOST_UPDATE_SCREENSHOTS").as_deref() {
        Ok("1") => root.join("docs/screenshots"),
        _ => root.join("target/screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let run = Command::new("node").arg(script).arg(base).args(args).arg(&shots).current_dir(&js).kill_on_drop(true).output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(600), run).await.expect("the browser script finishes").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(result["ok"], true, "{result}\n{stderr}");
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_works_in_chromium() {
    let server = TestServer::start().await;
    let result = run_browser_script("dashboard-e2e.mjs", &server, &[]).await;
    // How fast the update arrived is reported, not asserted (timings belong in benchmarks).
    eprintln!("live update reached the page {} ms after the publish", result["live_update_ms"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_fills_the_dashboard_in_chromium() {
    let server = TestServer::start_with(|a| a.demo = true).await;
    let store = server.store.clone();
    crate::support::eventually_async("the demo's backfill is stored", || {
        let store = store.clone();
        async move { store.count_readings().await.unwrap() >= 9 * 288 }
    })
    .await;
    run_browser_script("demo-screenshots.mjs", &server, &[]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_page_and_a_device_users_view_in_chromium() {
    let server = TestServer::start_with(|a| a.allow_anonymous = false).await;
    for (name, admin) in [("alice", false), ("root", true)] {
        crate::support::add_user(&server.store, name, &format!("{name}-secret"), admin).await;
    }
    for (user, topic) in [("alice", "iot/alice/sensor/kitchen/temperature"), ("root", "iot/bob/sensor/garage/temperature")] {
        let (mut raw, ack) = crate::support::Raw::login(server.mqtt, user, user, &format!("{user}-secret")).await;
        assert_eq!(ack.code, 0);
        raw.send(&crate::support::publish(topic, "21.5", mqtt_codec::QoS::AtLeastOnce, Some(1), false)).await;
        assert!(matches!(raw.recv().await, Some(mqtt_codec::Packet::PubAck(_))));
    }
    run_browser_script("login-e2e.mjs", &server, &["alice", "alice-secret"]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensors_settings_in_chromium() {
    use roost::model::{Reading, SensorKey, TimestampMs};
    let server = TestServer::start().await;
    let sensor = SensorKey::new("yanjo", "desk", "illuminate").unwrap();
    let now = TimestampMs::now().0;
    let old = now - 40 * 86_400_000;
    // The last hour and an hour 40 days ago, a reading a minute.
    let readings = (0..60)
        .flat_map(|i| [now - 3_600_000 + i * 60_000, old + i * 60_000])
        .map(|ts| Reading { sensor: sensor.clone(), ts: TimestampMs(ts), value: 300.0 + ((ts / 60_000) % 17) as f64 * 10.0 })
        .collect();
    server.store.write_batch(&roost::store::Batch { readings, ..Default::default() }).await.unwrap();
    run_browser_script("sensor-settings-e2e.mjs", &server, &[&old.to_string()]).await;
    assert!(server.store.sensor(&sensor).await.unwrap().is_none(), "deleted from the page");
    server.stop().await;
}

/// Alert rules made, fired, acknowledged, changed and deleted from the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_in_chromium() {
    use roost::model::{Reading, SensorKey, TimestampMs};
    let server = TestServer::start().await;
    let sensor = SensorKey::new("yanjo", "gh", "temperature").unwrap();
    let readings = vec![Reading { sensor, ts: TimestampMs::now(), value: 31.0 }];
    server.store.write_batch(&roost::store::Batch { readings, ..Default::default() }).await.unwrap();
    run_browser_script("alerts-e2e.mjs", &server, &[]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_in_chromium() {
    let server = TestServer::start_with(|a| a.allow_anonymous = false).await;
    crate::support::add_user(&server.store, "root", "root-secret", true).await;
    run_browser_script("users-e2e.mjs", &server, &["root", "root-secret"]).await;
    server.stop().await;
}

#[tokio::test]
async fn pages_are_compressed_cached_and_revalidated() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let index = client.get(format!("http://{}/", server.http)).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-encoding"], "gzip");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let etag = index.headers()["etag"].clone();
    let again = client.get(format!("http://{}/", server.http)).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    let icon = client.get(format!("http://{}/static/favicon.svg", server.http)).send().await.unwrap();
    assert_eq!((icon.status().as_u16(), icon.headers()["content-type"].to_str().unwrap()), (200, "image/svg+xml"));
    let vendor = client.get(format!("http://{}/static/vendor/uPlot-1.6.31.iife.min.js", server.http)).send().await.unwrap();
    assert_eq!(vendor.status(), 200);
    assert_eq!(vendor.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(vendor.headers().get("content-encoding").is_none(), "plain for clients without gzip");
    let missing = client.get(format!("http://{}/static/nope.js", server.http)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}
