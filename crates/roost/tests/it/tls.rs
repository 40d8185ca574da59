//! Roost's own TLS (`--tls-cert`, `--tls-key`): MQTT over TLS, WebSocket over TLS and HTTPS,
//! checked with outside clients (mosquitto_pub, curl, and rumqttc via `roost simulate`), and the
//! certificate reload when its files change.

use crate::simulator::make_certificates;
use crate::support::{eventually_async, require_command, roost_command, TestServer};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

async fn output(cmd: &mut Command) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).output())
        .await
        .expect("finished in time")
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `mosquitto_pub` over TLS, trusting `ca`; true if the QoS 1 publish went through.
async fn mosquitto_pub_tls(port: u16, ca: &Path, topic: &str) -> (bool, String) {
    output(Command::new("mosquitto_pub").args(["-h", "localhost", "-p", &port.to_string(), "--cafile"]).arg(ca).args([
        "-u",
        "alice",
        "-P",
        "alice-secret",
        "-q",
        "1",
        "-t",
        topic,
        "-m",
        "21.5",
    ]))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_wss_and_https_over_tls_with_certificate_reload() {
    for command in ["openssl", "mosquitto_pub", "curl"] {
        require_command(command);
    }
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path()).await;
    let (cert, key, ca) = (dir.path().join("server.pem"), dir.path().join("server.key"), dir.path().join("ca.pem"));
    let server = TestServer::start_with(|a| {
        a.allow_anonymous = false;
        a.tls_cert = Some(cert.clone());
        a.tls_key = Some(key.clone());
        a.tls_check_interval = Duration::from_millis(200);
    })
    .await;
    crate::support::add_user(&server.store, "alice", "alice-secret", false).await;
    let mqtts = server.mqtts.expect("an MQTT-over-TLS listener").port();

    // MQTT over TLS with Mosquitto's client; plain MQTT stays available.
    let (ok, out) = mosquitto_pub_tls(mqtts, &ca, "iot/alice/sensor/tls/temperature").await;
    assert!(ok, "{out}");
    let (ok, out) = mosquitto_pub_tls(mqtts, &dir.path().join("server.pem"), "iot/alice/sensor/tls/temperature").await;
    assert!(!ok, "a client that does not trust the CA is refused: {out}");

    // WebSocket over TLS with rumqttc (roost simulate).
    let (ok, out) = output(
        roost_command("warn")
            .args(["simulate", "--broker", &format!("wss://localhost:{}/mqtt", server.ws.port()), "--ca-file"])
            .arg(&ca)
            .args(["--username", "alice", "--password", "alice-secret", "--count", "6", "--interval", "0.05", "--devices", "2"]),
    )
    .await;
    assert!(ok && out.contains("simulate: sent 6 · acked 6"), "{out}");

    // HTTPS with curl: the API answers, and the login cookie carries Secure.
    let https = format!("https://localhost:{}", server.http.port());
    let (ok, out) = output(Command::new("curl").args(["-sS", "--cacert"]).arg(&ca).arg(format!("{https}/healthz"))).await;
    assert!(ok && out.contains("\"status\""), "{out}");
    let (ok, out) = output(
        Command::new("curl")
            .args(["-sS", "-i", "--cacert"])
            .arg(&ca)
            .args(["-H", "content-type: application/json", "-d", r#"{"username":"alice","password":"alice-secret"}"#])
            .arg(format!("{https}/api/login")),
    )
    .await;
    assert!(ok, "{out}");
    let set_cookie = out.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap_or_default();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict") && set_cookie.contains("; Secure"), "{out}");
    let stored = server.store.count_readings().await.unwrap();
    assert_eq!(stored, 7, "one reading from mosquitto_pub, six from the simulator");

    // A renewed certificate from another CA is picked up without a restart.
    let renewed = tempfile::tempdir().unwrap();
    make_certificates(renewed.path()).await;
    for name in ["server.pem", "server.key"] {
        let staged = dir.path().join(format!("{name}.new"));
        std::fs::copy(renewed.path().join(name), &staged).unwrap();
        std::fs::rename(&staged, dir.path().join(name)).unwrap();
    }
    let new_ca = renewed.path().join("ca.pem");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out) = mosquitto_pub_tls(mqtts, &new_ca, "iot/alice/sensor/tls/humidity").await;
        if ok {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate was not served: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ok, _) = mosquitto_pub_tls(mqtts, &ca, "iot/alice/sensor/tls/humidity").await;
    assert!(!ok, "the old certificate is no longer served");
    let store = server.store.clone();
    eventually_async("the publish over the renewed certificate is stored", || {
        let store = store.clone();
        async move { store.count_readings().await.unwrap() == 8 }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn tls_settings_that_cannot_work_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let roost = || {
        let mut cmd = roost_command("info");
        cmd.current_dir(dir.path()).args(["serve", "--mqtts-listen", "127.0.0.1:0"]).args(crate::support::ANY_PORTS);
        cmd
    };
    let (ok, out) = output(roost().args(["--tls-cert", "cert.pem"])).await;
    assert!(!ok && out.contains("--tls-key"), "a certificate needs its key: {out}");
    let (ok, out) = output(roost().args(["--tls-cert", "missing.pem", "--tls-key", "missing.key"])).await;
    assert!(!ok && out.contains("loading the TLS certificate") && out.contains("reading missing.pem"), "{out}");
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
    let (ok, out) = output(roost().args(["--tls-cert", "garbage.pem", "--tls-key", "garbage.pem"])).await;
    assert!(!ok && out.contains("garbage.pem: no certificate in the file"), "{out}");
}

/// SIGHUP reloads the certificate even when the files' modification times say nothing changed
/// (so this is the signal at work, not the file watch).
#[tokio::test]
async fn sighup_reloads_the_certificate() {
    for command in ["openssl", "mosquitto_pub", "kill", "touch"] {
        require_command(command);
    }
    let (first, renewed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_certificates(first.path()).await;
    make_certificates(renewed.path()).await;
    let dir = first.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = roost_command("info")
        .current_dir(dir)
        .args([
            "serve",
            "--allow-anonymous",
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--mqtts-listen",
            &format!("127.0.0.1:{port}"),
            "--tls-check-interval",
            "200ms",
        ])
        .args(crate::support::ANY_PORTS)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually_async(
        "roost listens for MQTT over TLS",
        || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() },
    )
    .await;
    let publish = |ca: std::path::PathBuf| async move {
        output(
            Command::new("mosquitto_pub")
                .args(["-h", "localhost", "-p", &port.to_string(), "--cafile"])
                .arg(ca)
                .args(["-t", "t", "-m", "1"]),
        )
        .await
        .0
    };
    assert!(publish(dir.join("ca.pem")).await);
    // New contents with the old modification times, swapped in by rename (no moment in between).
    for name in ["server.pem", "server.key"] {
        let staged = dir.join(format!("{name}.new"));
        std::fs::write(&staged, std::fs::read(renewed.path().join(name)).unwrap()).unwrap();
        assert!(output(Command::new("touch").arg("-r").arg(dir.join(name)).arg(&staged)).await.0);
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }
    // Longer than the file watch's period (200 ms here): it sees no change, so nothing is
    // reloaded yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!publish(renewed.path().join("ca.pem")).await, "reloaded without a signal");
    let pid = child.id().unwrap().to_string();
    assert!(output(Command::new("kill").args(["-HUP", &pid])).await.0);
    let renewed_ca = renewed.path().join("ca.pem");
    eventually_async("the renewed certificate is served after SIGHUP", || publish(renewed_ca.clone())).await;
    child.kill().await.unwrap();
}
