//! The `roost` binary itself: bound addresses in the log, clean exit on SIGTERM, clear errors.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The binary, run in a fresh directory (its default database `roost.db` lands there).
fn roost(dir: &tempfile::TempDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roost"));
    cmd.env("RUST_LOG", "info").env_remove("ROOST_DATABASE").current_dir(dir.path()).kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn serve_logs_bound_addresses_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = roost(&dir)
        .args(["serve", "--allow-anonymous", "--mqtt", "127.0.0.1:0", "--mqtt-ws", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    tokio::time::timeout(Duration::from_secs(10), async {
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
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(dir.path().join("roost.db").exists(), "the default database is created in the working directory");
}

#[tokio::test]
async fn migrate_creates_the_schema_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
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
        .args([
            "serve",
            "--database",
            "postgres://nobody@127.0.0.1:1/none",
            "--mqtt",
            "127.0.0.1:0",
            "--mqtt-ws",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
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
        .args(["serve", "--allow-anonymous", "--mqtt", &format!("127.0.0.1:{port}"), "--mqtt-ws", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("binding the MQTT listener to 127.0.0.1:{port}")), "{stderr}");
}

#[tokio::test]
async fn bad_flags_explain_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let out = roost(&dir).args(["serve", "--mqtt", "not-an-address"]).output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'not-an-address' for '--mqtt <MQTT>'"), "{stderr}");
}
