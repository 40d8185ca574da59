//! User accounts and MQTT access control, over the wire, on every database: `roost user …`,
//! Argon2id hashes, CONNACK codes, per-owner ACLs for publish and subscribe, the first admin.

use crate::databases::{Backend, TestDb};
use crate::support::{add_user, eventually_async, output_with_input, pid, publish, roost_command, Raw, TestServer};
use mqtt_codec::*;
use roost::auth::password;
use roost::store::Store;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs `roost user ARGS --database URL` with `stdin`; returns (success, stdout, stderr).
async fn user_cli(db: &TestDb, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut user = roost_command("warn");
    user.arg("user").args(args).args(["--database", db.url.expose_secret()]);
    let out = output_with_input(&mut user, stdin.as_bytes(), Duration::from_secs(60)).await;
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A QoS 1 PUBLISH with packet id `id`.
fn publish_qos1(topic: &str, payload: &str, id: u16) -> Packet {
    publish(topic, payload, QoS::AtLeastOnce, Some(id), false)
}

async fn suback(raw: &mut Raw, id: u16, filter: &str) -> u8 {
    raw.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        filters: vec![(filter.into(), SubscriptionOptions::qos(QoS::AtLeastOnce))],
        properties: Properties::default(),
    }))
    .await;
    match raw.recv().await {
        Some(Packet::SubAck(ack)) => ack.codes[0],
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

async fn users_are_managed_from_the_cli_with_argon2id_hashes(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Account commands never create a database (cli::account_commands_never_create_an_empty_database):
    // create it first, as the README says.
    let migrated = roost_command("warn").args(["migrate", "--database", db.url.expose_secret()]).status().await.unwrap();
    assert!(migrated.success());
    let (ok, out, err) = user_cli(&db, &["add", "alice", "--password-stdin"], "alice-secret\n").await;
    assert!(ok, "{err}");
    assert!(out.contains("created user alice (device: iot/alice/#)"), "{out}");
    let (ok, out, err) = user_cli(&db, &["add", "root", "--admin"], "").await;
    assert!(ok, "{err}");
    let generated =
        out.lines().find_map(|l| l.strip_prefix("password (shown once): ")).expect("a generated password is shown once").to_owned();
    assert!(generated.len() >= 20);

    let store = Store::connect(&db.url).await.unwrap();
    let alice = store.user("alice").await.unwrap().unwrap();
    assert!(alice.password_hash.starts_with("$argon2id$v=19$"), "{}", alice.password_hash);
    assert!(!alice.password_hash.contains("alice-secret"));
    assert!(password::verify(generated.clone().into_bytes(), store.user("root").await.unwrap().unwrap().password_hash).await);

    let (_, out, _) = user_cli(&db, &["grant", "alice", "home/+/cmd", "--publish-only"], "").await;
    assert!(out.contains("alice may now publish home/+/cmd"), "{out}");
    let (ok, list, _) = user_cli(&db, &["list"], "").await;
    assert!(ok);
    assert!(list.lines().any(|l| l.starts_with("alice") && l.contains("device") && l.contains("publish home/+/cmd")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("root") && l.contains("admin")), "{list}");
    assert!(!list.contains("argon2"), "hashes are never listed: {list}");

    let (ok, _, err) = user_cli(&db, &["passwd", "alice", "--password-stdin"], "a-new-secret\n").await;
    assert!(ok, "{err}");
    let hash = store.user("alice").await.unwrap().unwrap().password_hash;
    assert!(password::verify(b"a-new-secret".to_vec(), hash.clone()).await && !password::verify(b"alice-secret".to_vec(), hash).await);

    // Clear refusals.
    let (ok, _, err) = user_cli(&db, &["add", "alice", "--password-stdin"], "whatever-long\n").await;
    assert!(!ok && err.contains("a user named \"alice\" already exists"), "{err}");
    let (ok, _, err) = user_cli(&db, &["add", "a/b"], "").await;
    assert!(!ok && err.contains("must be one topic level"), "{err}");
    let (ok, _, err) = user_cli(&db, &["add", "carol", "--password-stdin"], "short\n").await;
    assert!(!ok && err.contains("at least 8 characters"), "{err}");
    let (ok, _, err) = user_cli(&db, &["grant", "alice", "home/#/x"], "").await;
    assert!(!ok && err.contains("is not a topic filter"), "{err}");
    let (ok, _, err) = user_cli(&db, &["grant", "alice", &format!("home/{}/#", "x".repeat(200))], "").await;
    assert!(!ok && err.contains("at most 191 characters"), "refused alike on every database: {err}");

    let (ok, _, err) = user_cli(&db, &["remove", "alice"], "").await;
    assert!(ok, "{err}");
    assert!(store.user("alice").await.unwrap().is_none());
    let (ok, _, err) = user_cli(&db, &["remove", "alice"], "").await;
    assert!(!ok && err.contains("there is no user named \"alice\""), "{err}");
    let (ok, _, err) = user_cli(&db, &["remove", "root"], "").await;
    assert!(!ok && err.contains("root is the last admin"), "{err}");
    assert!(store.user("root").await.unwrap().is_some());
    store.close().await;
}

async fn logins_and_per_owner_acls_over_mqtt(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |a| a.allow_anonymous = false).await;
    add_user(&server.store, "alice", "alice-secret", false).await;
    add_user(&server.store, "bob", "bob-secret", false).await;
    add_user(&server.store, "root", "root-secret", true).await;

    // [MQTT-3.2.2-5] a refused CONNECT gets a non-zero return code, then the connection closes.
    let (mut anonymous, ack) = Raw::mqtt(server.mqtt, "anon", true).await;
    assert_eq!(ack.code, connect_return::NOT_AUTHORIZED, "no credentials: 0x05 not authorized");
    assert!(anonymous.expect_closed().await.is_empty());
    let (mut wrong, ack) = Raw::login(server.mqtt, "wrong", "alice", "not-her-password").await;
    assert_eq!(ack.code, connect_return::BAD_USERNAME_OR_PASSWORD);
    assert!(wrong.expect_closed().await.is_empty());
    let (_, ack) = Raw::login(server.mqtt, "nobody", "mallory", "whatever").await;
    assert_eq!(ack.code, connect_return::BAD_USERNAME_OR_PASSWORD, "unknown users get the same answer");

    let (mut admin, ack) = Raw::login(server.mqtt, "admin-sub", "root", "root-secret").await;
    assert_eq!(ack.code, connect_return::ACCEPTED);
    assert_eq!(suback(&mut admin, 1, "#").await, QoS::AtLeastOnce as u8, "admins may subscribe to everything");
    let (mut bob, _) = Raw::login(server.mqtt, "bob-sub", "bob", "bob-secret").await;
    assert_eq!(suback(&mut bob, 1, "iot/bob/#").await, QoS::AtLeastOnce as u8);

    let (mut alice, ack) = Raw::login(server.mqtt, "alice-board", "alice", "alice-secret").await;
    assert_eq!(ack.code, connect_return::ACCEPTED);
    // A denied subscription gets 0x80 [MQTT-3.9.3-2]; a filter reaching other owners is denied
    // even though it would also match alice's own topics.
    assert_eq!(suback(&mut alice, 1, "iot/bob/#").await, SUBACK_FAILURE);
    assert_eq!(suback(&mut alice, 2, "iot/+/sensor/#").await, SUBACK_FAILURE);
    assert_eq!(suback(&mut alice, 3, "iot/alice/#").await, QoS::AtLeastOnce as u8);

    // A cross-owner publish is acknowledged (3.1.1 has no negative PUBACK), not stored, not delivered.
    alice.send(&publish_qos1("iot/bob/sensor/kitchen/temperature", "99", 10)).await;
    assert!(matches!(alice.recv().await, Some(Packet::PubAck(a)) if a.packet_id == pid(10)));
    alice.send(&publish_qos1("iot/alice/sensor/kitchen/temperature", "21.5", 11)).await;
    // Her own subscription delivers the reading, in any order with the PUBACK (which waits
    // for the commit).
    let (first, second) = (alice.recv().await, alice.recv().await);
    let acked = |p: &Option<Packet>| matches!(p, Some(Packet::PubAck(a)) if a.packet_id == pid(11));
    let delivered = |p: &Option<Packet>| matches!(p, Some(Packet::Publish(p)) if p.payload.as_ref() == b"21.5");
    assert!((acked(&first) && delivered(&second)) || (delivered(&first) && acked(&second)), "{first:?} {second:?}");
    match admin.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic.unwrap().as_str(), "iot/alice/sensor/kitchen/temperature", "the denied publish is not delivered")
        }
        other => panic!("expected alice's publish, got {other:?}"),
    }
    // Bob's subscription sees nothing.
    bob.expect_silence(Duration::from_millis(300)).await;
    let sensors: Vec<String> = server.store.sensors().await.unwrap().into_iter().map(|s| s.key.to_string()).collect();
    assert_eq!(sensors, ["alice/kitchen/temperature"], "only the allowed reading is stored");
    let stats = server.broker.stats();
    assert_eq!((stats.publishes_denied, stats.subscriptions_denied, stats.connections_refused), (1, 2, 3));
    server.stop().await;
}

#[tokio::test]
async fn the_first_start_creates_an_admin_whose_password_only_the_owner_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let url = roost::store::DatabaseUrl::new(format!("sqlite://{}", dir.path().join("roost.db").display()));
    let server = TestServer::start_on(url.clone(), |a| a.allow_anonymous = false).await;
    let file = dir.path().join("roost-admin-password");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let secret = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let (_, ack) = Raw::login(server.mqtt, "first-admin", "admin", &secret).await;
    assert_eq!(ack.code, connect_return::ACCEPTED);
    server.stop().await;
    // A second start finds a user and creates nothing.
    let server = TestServer::start_on(url.clone(), |a| a.allow_anonymous = false).await;
    assert_eq!(server.store.count_users().await.unwrap(), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), secret);
    server.stop().await;
    // `roost user passwd admin` removes the file, which would hold the old password.
    let mut child = roost_command("warn")
        .args(["user", "passwd", "admin", "--password-stdin", "--database", url.expose_secret()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    child.stdin.take().unwrap().write_all(b"the-admins-new-secret\n").await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("removed") && stdout.contains("it held the old password"), "{stdout}");
    assert!(!file.exists());
}

/// `roost user remove admin` (after another admin was made) removes the first start's password
/// file too: it would hold the password of a user that is gone.
#[tokio::test]
async fn removing_the_first_admin_removes_its_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = roost::store::DatabaseUrl::new(format!("sqlite://{}", dir.path().join("roost.db").display()));
    TestServer::start_on(url.clone(), |a| a.allow_anonymous = false).await.stop().await;
    let file = dir.path().join("roost-admin-password");
    assert!(file.exists());
    let user = |args: &[&str]| {
        let mut command = roost_command("warn");
        command.arg("user").args(args).args(["--database", url.expose_secret()]);
        command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        command.spawn().unwrap()
    };
    let mut add = user(&["add", "boss", "--admin", "--password-stdin"]);
    use tokio::io::AsyncWriteExt;
    add.stdin.take().unwrap().write_all(b"the-bosses-own-secret\n").await.unwrap();
    let out = add.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = user(&["remove", "admin"]).wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("removed user admin") && stdout.contains("held the password of the removed user"),
        "{stdout}"
    );
    assert!(!file.exists());
}

#[tokio::test]
async fn demo_boards_log_in_as_the_demo_user_when_authentication_is_on() {
    let server = TestServer::start_with(|a| {
        a.allow_anonymous = false;
        a.demo = true;
    })
    .await;
    let store = server.store.clone();
    eventually_async("demo readings arrive through the ACL", || {
        let store = store.clone();
        async move { store.sensors().await.unwrap().iter().filter(|s| s.key.owner == "demo").count() == 9 }
    })
    .await;
    let demo = server.store.user("demo").await.unwrap().expect("the demo user exists");
    assert!(!demo.is_admin, "the demo boards are an ordinary device user");
    assert_eq!(server.broker.stats().publishes_denied, 0);
    server.stop().await;
}

/// Publishes one QoS 1 message as `user` and waits for its PUBACK (the commit).
async fn publish_as(server: &TestServer, user: &str, secret: &str, topic: &str, payload: &str) {
    let (mut raw, ack) = Raw::login(server.mqtt, &format!("{user}-pub"), user, secret).await;
    assert_eq!(ack.code, connect_return::ACCEPTED);
    raw.send(&publish_qos1(topic, payload, 1)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(_))));
}

async fn dashboard_login_cookies_tokens_and_per_owner_views(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |a| a.allow_anonymous = false).await;
    add_user(&server.store, "alice", "alice-secret", false).await;
    add_user(&server.store, "root", "root-secret", true).await;
    publish_as(&server, "alice", "alice-secret", "iot/alice/sensor/kitchen/temperature", "21.5").await;
    publish_as(&server, "alice", "alice-secret", "iot/alice/sensor/kitchen/humidity", "abc").await;
    publish_as(&server, "root", "root-secret", "iot/bob/sensor/garage/temperature", "7.5").await;
    publish_as(&server, "root", "root-secret", "iot/bob/sensor/garage/humidity", "nan").await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", server.http);

    // Without credentials: 401 with a challenge, on the API and /metrics; public pages stay public.
    let response = http.get(url("/api/sensors")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"roost\"");
    assert!(response.text().await.unwrap().contains("log in first"));
    for path in ["/api/live", "/api/rejects", "/api/stats", "/api/me", "/metrics"] {
        assert_eq!(http.get(url(path)).send().await.unwrap().status(), 401, "{path}");
    }
    for path in ["/", "/healthz", "/api/config", "/api/openapi.json", "/static/app.js"] {
        assert_eq!(http.get(url(path)).send().await.unwrap().status(), 200, "{path}");
    }

    // Login: a wrong password is refused; the right one sets a cookie scripts cannot read.
    let login =
        |user: &str, secret: &str| http.post(url("/api/login")).json(&serde_json::json!({ "username": user, "password": secret })).send();
    for (user, secret) in [("alice", "wrong"), ("nobody", "alice-secret")] {
        let refused = login(user, secret).await.unwrap();
        assert_eq!(refused.status(), 401);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "wrong user name or password", "not 'log in first'");
    }
    let response = login("alice", "alice-secret").await.unwrap();
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
        assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "no Secure flag over plain HTTP (TLS is not implemented yet)");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let get = |path: &str, cookie: &str| http.get(url(path)).header("cookie", cookie).send();

    // A non-admin sees only their own sensors and rejects; another owner's sensor is "not found".
    let sensors: serde_json::Value = get("/api/sensors", &cookie).await.unwrap().json().await.unwrap();
    let owners: Vec<&str> = sensors.as_array().unwrap().iter().map(|s| s["owner"].as_str().unwrap()).collect();
    assert_eq!(owners, ["alice"], "{sensors}");
    assert_eq!(get("/api/sensors/alice/kitchen/temperature/readings", &cookie).await.unwrap().status(), 200);
    assert_eq!(get("/api/sensors/bob/garage/temperature/readings", &cookie).await.unwrap().status(), 404);
    assert_eq!(get("/api/sensors/bob/garage/temperature/readings.csv", &cookie).await.unwrap().status(), 404);
    let rejects: serde_json::Value = get("/api/rejects", &cookie).await.unwrap().json().await.unwrap();
    let topics: Vec<&str> = rejects.as_array().unwrap().iter().map(|r| r["topic"].as_str().unwrap()).collect();
    assert_eq!(topics, ["iot/alice/sensor/kitchen/humidity"], "{rejects}");
    assert_eq!(get("/api/stats", &cookie).await.unwrap().status(), 403);
    assert_eq!(get("/metrics", &cookie).await.unwrap().status(), 403);

    // /api/me hands the console an MQTT password that works for alice only.
    let me: serde_json::Value = get("/api/me", &cookie).await.unwrap().json().await.unwrap();
    assert_eq!((me["username"].as_str(), me["admin"].as_bool()), (Some("alice"), Some(false)));
    let console = me["mqtt_password"].as_str().unwrap();
    let (_, ack) = Raw::login(server.mqtt, "console", "alice", console).await;
    assert_eq!(ack.code, connect_return::ACCEPTED);
    let (_, ack) = Raw::login(server.mqtt, "console-2", "root", console).await;
    assert_eq!(ack.code, connect_return::BAD_USERNAME_OR_PASSWORD, "a console token is no password for another user");
    let session = cookie.split_once('=').unwrap().1;
    let (_, ack) = Raw::login(server.mqtt, "console-3", "alice", session).await;
    assert_eq!(ack.code, connect_return::BAD_USERNAME_OR_PASSWORD, "the session cookie is no MQTT password");

    // Logout ends the session, and with it the live feed it opened.
    let mut live = get("/api/live", &cookie).await.unwrap();
    assert_eq!(live.status(), 200);
    let feed = tokio::spawn(async move { while let Ok(Some(_)) = live.chunk().await {} });
    let response = http.post(url("/api/logout")).header("cookie", &cookie).send().await.unwrap();
    assert!(response.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(get("/api/sensors", &cookie).await.unwrap().status(), 401);
    tokio::time::timeout(crate::support::WAIT, feed).await.expect("the live feed ended with its session").unwrap();

    // API tokens from the CLI: an admin's token sees everything until it is revoked.
    let out = roost_command("warn")
        .args(["token", "create", "root", "--name", "grafana", "--database", db.url.expose_secret()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = stdout.lines().nth(1).unwrap().trim().to_owned();
    let bearer = |path: &str| http.get(url(path)).bearer_auth(&token).send();
    let sensors: serde_json::Value = bearer("/api/sensors").await.unwrap().json().await.unwrap();
    let owners: Vec<&str> = sensors.as_array().unwrap().iter().map(|s| s["owner"].as_str().unwrap()).collect();
    assert_eq!(owners, ["alice", "bob"], "an admin sees every owner");
    assert_eq!(bearer("/metrics").await.unwrap().status(), 200);
    let list = roost_command("warn").args(["token", "list", "--database", db.url.expose_secret()]).output().await.unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains("grafana") && !list.contains(&token), "{list}");
    let id = stdout.split_whitespace().nth(2).unwrap().to_owned();
    let out = roost_command("warn").args(["token", "revoke", &id, "--database", db.url.expose_secret()]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(bearer("/api/sensors").await.unwrap().status(), 401, "a revoked token stops working at once");
    server.stop().await;
}

/// Admins manage users from the dashboard's API with the CLI's rules; nobody else can; the
/// changes take effect at the user's next MQTT login.
async fn admins_manage_users_over_the_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |a| a.allow_anonymous = false).await;
    add_user(&server.store, "alice", "alice-secret", false).await;
    add_user(&server.store, "root", "root-secret", true).await;
    let http = reqwest::Client::new();
    let (alice, root) = (
        crate::support::dashboard_login(&http, &server, "alice", "alice-secret").await,
        crate::support::dashboard_login(&http, &server, "root", "root-secret").await,
    );
    let call = |method: reqwest::Method, path: &str, cookie: &str, body: Option<serde_json::Value>| {
        crate::support::api_call(&http, &server, method, path, cookie, body)
    };
    use reqwest::Method;
    assert_eq!(call(Method::GET, "/api/users", &alice, None).await.0, 403, "a device user may not list users");
    let carol = serde_json::json!({ "name": "carol" });
    assert_eq!(call(Method::POST, "/api/users", &alice, Some(carol.clone())).await.0, 403, "nor add one");

    let (status, made) = call(Method::POST, "/api/users", &root, Some(carol.clone())).await;
    assert_eq!((status, made["admin"].as_bool()), (200, Some(false)), "{made}");
    let generated = made["password"].as_str().expect("a generated password, answered once").to_owned();
    let (_, ack) = Raw::login(server.mqtt, "carol-1", "carol", &generated).await;
    assert_eq!(ack.code, connect_return::ACCEPTED, "the new user logs in over MQTT");
    assert_eq!(call(Method::POST, "/api/users", &root, Some(carol)).await.0, 400, "names are unique");
    for bad in [serde_json::json!({ "name": "a/b" }), serde_json::json!({ "name": "dave", "password": "short" })] {
        let (status, body) = call(Method::POST, "/api/users", &root, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    // A field the API does not know is refused, not ignored: `is_admin` (the field is `admin`)
    // made a device user (found by a new user's trial).
    let (status, body) = call(Method::POST, "/api/users", &root, Some(serde_json::json!({ "name": "frank", "is_admin": true }))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown field `is_admin`"), "{body}");

    let (status, listed) = call(Method::GET, "/api/users", &root, None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "alice", "carol", "root"], "with the first admin, made at start");
    assert!(listed.as_array().unwrap().iter().all(|u| u.get("password").is_none() && u.get("password_hash").is_none()));

    // Grants: a bad filter is refused; a good one lets carol subscribe outside iot/carol/#.
    let grant = |body| call(Method::POST, "/api/users/carol/grants", &root, Some(body));
    assert_eq!(grant(serde_json::json!({ "filter": "home/#/x" })).await.0, 400);
    let (status, body) = grant(serde_json::json!({ "filter": "cmd/#", "publish_only": true })).await;
    assert_eq!(status, 400, "not a grant to publish and subscribe: {body}");
    let (status, user) = grant(serde_json::json!({ "filter": "home/+/cmd", "publish": false })).await;
    assert_eq!((status, &user["grants"][0]["description"]), (200, &serde_json::json!("subscribe home/+/cmd")));
    let (mut board, _) = Raw::login(server.mqtt, "carol-2", "carol", &generated).await;
    assert_eq!(suback(&mut board, 1, "home/+/cmd").await, 1, "granted at QoS 1");
    let (status, user) = call(Method::DELETE, "/api/users/carol/grants?filter=home%2F%2B%2Fcmd", &root, None).await;
    assert_eq!((status, user["grants"].as_array().map(Vec::len)), (200, Some(0)));
    assert_eq!(call(Method::DELETE, "/api/users/carol/grants?filter=nope", &root, None).await.0, 404);

    // A reset password replaces the old one; a chosen one is not echoed.
    let (status, reset) =
        call(Method::POST, "/api/users/carol/password", &root, Some(serde_json::json!({ "password": "carol-new-secret" }))).await;
    assert_eq!((status, reset.get("password")), (200, None));
    let (_, ack) = Raw::login(server.mqtt, "carol-3", "carol", &generated).await;
    assert_eq!(ack.code, connect_return::BAD_USERNAME_OR_PASSWORD, "the old password stops working");
    let carol = crate::support::dashboard_login(&http, &server, "carol", "carol-new-secret").await;
    assert_eq!(call(Method::GET, "/api/me", &carol, None).await.0, 200);
    assert_eq!(call(Method::POST, "/api/users/carol/password", &root, Some(serde_json::json!({}))).await.0, 200);
    let (status, _) = call(Method::GET, "/api/me", &carol, None).await;
    assert_eq!(status, 401, "a new password ends the user's dashboard sessions");
    assert_eq!(
        call(Method::POST, "/api/users/carol/password", &root, Some(serde_json::json!({ "password": "carol-new-secret" }))).await.0,
        200
    );
    assert_eq!(call(Method::POST, "/api/users/nobody/password", &root, Some(serde_json::json!({}))).await.0, 404);
    let (status, _) = call(Method::POST, "/api/users/carol/password", &root, Some(serde_json::json!({ "pasword": "x" }))).await;
    assert_eq!(status, 400, "a misspelt field is not a request for a generated password");
    let (status, body) = call(Method::POST, "/api/users/carol/password", &root, Some(serde_json::json!([null]))).await;
    assert_eq!((status, &body["error"]), (400, &serde_json::json!("the body must be a JSON object")), "not an array for a struct");

    assert_eq!(call(Method::DELETE, "/api/users/root", &root, None).await.0, 400, "an admin cannot remove themself");
    assert_eq!(call(Method::DELETE, "/api/users/carol", &alice, None).await.0, 403);
    assert_eq!(call(Method::DELETE, "/api/users/carol", &root, None).await.0, 200);
    assert_eq!(call(Method::DELETE, "/api/users/carol", &root, None).await.0, 404);
    let (_, ack) = Raw::login(server.mqtt, "carol-4", "carol", "carol-new-secret").await;
    assert_eq!(ack.code, connect_return::BAD_USERNAME_OR_PASSWORD, "a removed user cannot log in");
    server.stop().await;
}

/// With `--allow-anonymous` everyone counts as an admin, and accounts outlive that mode: the
/// users API refuses to manage them.
#[tokio::test]
async fn accounts_are_not_managed_anonymously() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", server.http);
    assert_eq!(http.get(url("/api/users")).send().await.unwrap().status(), 403);
    let made = http.post(url("/api/users")).json(&serde_json::json!({ "name": "mallory", "admin": true })).send().await.unwrap();
    assert_eq!(made.status(), 403);
    assert!(made.text().await.unwrap().contains("--allow-anonymous"));
    assert!(server.store.user("mallory").await.unwrap().is_none());
    server.stop().await;
}

crate::on_every_database!(
    users_are_managed_from_the_cli_with_argon2id_hashes,
    logins_and_per_owner_acls_over_mqtt,
    dashboard_login_cookies_tokens_and_per_owner_views,
    admins_manage_users_over_the_api,
);

/// An outside scanner: schemathesis generates requests from the OpenAPI document (valid and
/// invalid ones, with and without credentials) and checks every answer against it.
/// `positive_data_acceptance` is left out: it counts `from` ≥ `to` (a 400 by design, a rule
/// between two parameters that OpenAPI cannot express) as a valid request refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_in_the_api() {
    crate::support::require_command("schemathesis");
    let server = TestServer::start_with(|a| a.allow_anonymous = false).await;
    add_user(&server.store, "root", "root-secret", true).await;
    let (token, hash) = roost::auth::tokens::generate();
    server.store.create_token("root", roost::store::TokenKind::Api, "scanner", &hash, None).await.unwrap();
    let (mut raw, _) = Raw::login(server.mqtt, "seed", "root", "root-secret").await;
    raw.send(&publish_qos1("iot/alice/sensor/kitchen/temperature", "21.5", 1)).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(_))));
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new("schemathesis")
            .args(["run", &format!("http://{}/api/openapi.json", server.http)])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", "25", "--seed", "1"])
            .current_dir(std::env::temp_dir())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("schemathesis finished in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    server.stop().await;
}

#[tokio::test]
async fn users_manage_their_own_api_tokens_and_admins_everyones() {
    let server = TestServer::start_with(|a| a.allow_anonymous = false).await;
    add_user(&server.store, "alice", "alice-secret", false).await;
    add_user(&server.store, "root", "root-secret", true).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", server.http);
    let (alice, root) = (
        crate::support::dashboard_login(&http, &server, "alice", "alice-secret").await,
        crate::support::dashboard_login(&http, &server, "root", "root-secret").await,
    );
    let create = |cookie: &str, name: &str| {
        http.post(url("/api/tokens")).header("cookie", cookie).json(&serde_json::json!({ "name": name, "days": 30 })).send()
    };
    let made: serde_json::Value = create(&alice, "alice's script").await.unwrap().json().await.unwrap();
    let root_made: serde_json::Value = create(&root, "grafana").await.unwrap().json().await.unwrap();
    assert_eq!(create(&alice, "").await.unwrap().status(), 400, "a name is required");
    // `expires_in` is not the API's field (`days` is): refused, not a token that never expires.
    let unknown = http.post(url("/api/tokens")).header("cookie", &alice).json(&serde_json::json!({ "name": "t", "expires_in": "90d" }));
    assert_eq!(unknown.send().await.unwrap().status(), 400);

    let list = |cookie: &str| http.get(url("/api/tokens")).header("cookie", cookie).send();
    let alices: serde_json::Value = list(&alice).await.unwrap().json().await.unwrap();
    assert_eq!(alices.as_array().unwrap().len(), 1, "alice sees her own token only: {alices}");
    assert!(alices[0].get("token").is_none(), "listing never shows the token");
    let everyone: serde_json::Value = list(&root).await.unwrap().json().await.unwrap();
    assert_eq!(everyone.as_array().unwrap().len(), 2, "an admin sees everyone's");

    // The token works as a bearer token and as alice's MQTT password.
    let token = made["token"].as_str().unwrap();
    assert_eq!(http.get(url("/api/sensors")).bearer_auth(token).send().await.unwrap().status(), 200);
    let (_, ack) = Raw::login(server.mqtt, "script", "alice", token).await;
    assert_eq!(ack.code, connect_return::ACCEPTED);

    let revoke = |cookie: &str, id: &serde_json::Value| http.delete(url(&format!("/api/tokens/{id}"))).header("cookie", cookie).send();
    assert_eq!(revoke(&alice, &root_made["id"]).await.unwrap().status(), 404, "alice cannot revoke root's token");
    assert_eq!(revoke(&root, &made["id"]).await.unwrap().status(), 200, "an admin can revoke alice's");
    assert_eq!(http.get(url("/api/sensors")).bearer_auth(token).send().await.unwrap().status(), 401);
    server.stop().await;
}

/// With the user database unreachable, a login is answered "server unavailable" (CONNACK 3),
/// not "bad password", and does not count as a failed login; once it is back, logins work.
async fn logins_while_the_database_is_away_get_server_unavailable(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_, upstream) = db.server.clone().expect("a server database");
    let proxy = crate::proxy::Proxy::start(upstream.parse().unwrap()).await;
    let server = TestServer::start_on(db.via(proxy.addr), |a| {
        a.allow_anonymous = false;
        a.max_login_failures = 1;
    })
    .await;
    add_user(&server.store, "alice", "alice-secret", false).await;
    proxy.cut();
    for attempt in 0..2 {
        let (_, ack) = Raw::login(server.mqtt, &format!("away-{attempt}"), "alice", "alice-secret").await;
        assert_eq!(ack.code, connect_return::SERVER_UNAVAILABLE, "attempt {attempt}");
    }
    proxy.restore();
    let addr = server.mqtt;
    eventually_async("logins work again (and the outage did not count as failures)", || async move {
        Raw::login(addr, "back", "alice", "alice-secret").await.1.code == connect_return::ACCEPTED
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_during_login() {
    logins_while_the_database_is_away_get_server_unavailable(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_outage_during_login() {
    logins_while_the_database_is_away_get_server_unavailable(Backend::MariaDb).await;
}

/// A 3.1.1 board publishing outside its owner's topics is acknowledged and dropped (it has no
/// negative acknowledgement to hear): the server's log names it, once per user (a board may
/// take a new client id on every connection), so that a board with a wrong owner in its topics
/// does not look healthy (it was a debug line only).
#[tokio::test]
async fn a_denied_publish_is_logged_once_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = roost_command("info")
        .arg("serve")
        .args(crate::support::ANY_PORTS)
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let file = dir.path().join("roost-serve.json");
    crate::support::eventually("roost-serve.json is written", || file.exists()).await;
    let described: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let mqtt: std::net::SocketAddr = described["mqtt"].as_str().unwrap().trim_start_matches("mqtt://").parse().unwrap();
    let mut add = roost_command("warn")
        .args(["user", "add", "alice", "--password-stdin", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"alice-secret\n").await.unwrap();
    assert!(add.wait().await.unwrap().success());
    for client in ["board-1", "board-2"] {
        let (mut board, ack) = Raw::login(mqtt, client, "alice", "alice-secret").await;
        assert_eq!(ack.code, connect_return::ACCEPTED);
        for id in 1..=3 {
            board.send(&publish_qos1("iot/bob/sensor/kitchen/temperature", "21.5", id)).await;
            assert!(matches!(board.recv().await, Some(Packet::PubAck(ack)) if ack.packet_id == pid(id)), "acknowledged and dropped");
        }
    }
    let pid_arg = server.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-TERM", &pid_arg]).status().await.unwrap().success());
    let out = tokio::time::timeout(crate::support::WAIT, server.wait_with_output()).await.unwrap().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let denials: Vec<&str> = log.lines().filter(|line| line.contains("publish denied by the ACL")).collect();
    assert_eq!(denials.len(), 1, "once per user: {denials:#?}");
    assert!(
        ["WARN", "board-1", "alice", "iot/bob/sensor/kitchen/temperature"].iter().all(|part| denials[0].contains(part)),
        "{}",
        denials[0]
    );
}
