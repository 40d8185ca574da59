//! Shared test harness: a Roost app on port 0 and a raw MQTT client.

use bytes::BytesMut;
use mqtt_codec::{decode, encode, Connect, Packet, Properties, ProtocolVersion};
use roost::app::App;
use roost::broker::Broker;
use roost::cli::ServeArgs;
use roost::store::{DatabaseUrl, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The most a test waits for something that should happen: a bound on a hang, never a timing
/// (tests return as soon as it happens). Generous, as CI runs the suite in parallel on two
/// cores, debug builds beside servers and headless browsers.
pub const WAIT: Duration = Duration::from_secs(30);

/// A running Roost; stopped when dropped.
pub struct TestServer {
    pub mqtt: SocketAddr,
    /// MQTT over TLS, when the server was started with a certificate.
    pub mqtts: Option<SocketAddr>,
    pub ws: SocketAddr,
    pub http: SocketAddr,
    pub broker: Arc<Broker>,
    pub store: Arc<Store>,
    _dir: Option<tempfile::TempDir>,
    _data_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server on a fresh SQLite database in a temporary directory.
    pub async fn start_with(adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::new(format!("sqlite://{}", dir.path().join("roost.db").display()));
        let mut server = Self::start_on(url, adjust).await;
        server._dir = Some(dir);
        server
    }

    /// A server on the given database. Files it writes itself (the first admin's password, for
    /// server databases) go to a temporary directory, never into the source tree.
    pub async fn start_on(database: DatabaseUrl, adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let any_port = "127.0.0.1:0".parse().unwrap();
        let mut args = ServeArgs {
            mqtt_listen: any_port,
            mqtt_ws_listen: any_port,
            http_listen: any_port,
            mqtts_listen: any_port,
            allow_anonymous: true,
            // Tests write readings with 2023 timestamps: the purge at start would race them.
            // The lifecycle tests set a retention of their own.
            retention: roost::model::Keep::Forever,
            ..ServeArgs::default()
        };
        args.db.database = database;
        args.db.dir.data_dir = data_dir.path().to_path_buf();
        adjust(&mut args);
        let settings = roost::settings::Settings::validate(args).expect("valid settings");
        let app = App::build(&settings).await.expect("app builds");
        let (mqtt, ws, http, broker, store) =
            (app.mqtt_addr().expect("MQTT on"), app.mqtt_ws_addr().expect("MQTT on"), app.http_addr(), app.broker(), app.store());
        let mqtts = app.mqtts_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { mqtt, mqtts, ws, http, broker, store, _dir: None, _data_dir: data_dir, shutdown, task: Some(task) }
    }

    /// Stops the server and waits until every connection is closed.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            // A shutdown that hangs fails the test that stopped the server, by name.
            let stopped = tokio::time::timeout(Duration::from_secs(60), task).await.expect("the server stopped within 60 s");
            stopped.expect("server task").expect("server stops cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A raw MQTT client for protocol-level tests: sends exactly the bytes we say.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        Self { stream, buf: BytesMut::new(), version: ProtocolVersion::V311 }
    }

    /// Connects and completes an MQTT CONNECT; returns the CONNACK.
    pub async fn mqtt(addr: SocketAddr, client_id: &str, clean: bool) -> (Self, mqtt_codec::ConnAck) {
        let mut raw = Self::connect(addr).await;
        raw.send(&Packet::Connect(connect(client_id, clean))).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects speaking MQTT 5.0 with `connect` (see [`connect_v5`]); returns the CONNACK.
    pub async fn mqtt5(addr: SocketAddr, connect: Connect) -> (Self, mqtt_codec::ConnAck) {
        let mut raw = Self::connect(addr).await;
        raw.version = ProtocolVersion::V5;
        raw.send(&Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with a user name and password; returns the CONNACK.
    pub async fn login(addr: SocketAddr, client_id: &str, username: &str, password: &str) -> (Self, mqtt_codec::ConnAck) {
        let mut raw = Self::connect(addr).await;
        let mut packet = connect(client_id, true);
        packet.username = Some(username.into());
        packet.password = Some(bytes::Bytes::copy_from_slice(password.as_bytes()));
        raw.send(&Packet::Connect(packet)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out).unwrap();
        self.send_bytes(&out).await;
    }

    /// Sends `packet`; false if the connection is gone.
    pub async fn try_send(&mut self, packet: &Packet) -> bool {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out).unwrap();
        self.stream.write_all(&out).await.is_ok()
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, or `None` once the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.recv_inner()).await.expect("server answered in time")
    }

    /// The next packet within `limit`: `Err(())` if none came in time, `Ok(None)` once the
    /// server closed the connection.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(limit, self.recv_inner()).await.map_err(|_| ())
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = decode(&mut self.buf, self.version, usize::MAX).expect("server sends valid packets") {
                return Some(packet);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Asserts the server closes the connection (after any packets, which are returned).
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = self.recv().await {
            seen.push(p);
        }
        seen
    }

    /// Asserts nothing arrives within `quiet`.
    pub async fn expect_silence(&mut self, quiet: Duration) {
        if let Ok(p) = tokio::time::timeout(quiet, self.recv_inner()).await {
            panic!("expected silence, got {p:?}");
        }
    }
}

pub fn connect(client_id: &str, clean: bool) -> Connect {
    Connect {
        protocol: ProtocolVersion::V311,
        clean_start: clean,
        keep_alive: Duration::from_secs(60),
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

/// A 5.0 CONNECT with these CONNECT properties.
pub fn connect_v5(client_id: &str, clean_start: bool, properties: Vec<mqtt_codec::Property>) -> Connect {
    Connect { protocol: ProtocolVersion::V5, properties: Properties(properties), ..connect(client_id, clean_start) }
}

pub fn pid(n: u16) -> mqtt_codec::PacketId {
    mqtt_codec::PacketId::new(n).expect("packet ids are non-zero")
}

/// A SUBSCRIBE of `filters`, each at its maximum QoS.
pub fn subscribe(id: u16, filters: &[(&str, mqtt_codec::QoS)]) -> Packet {
    Packet::Subscribe(mqtt_codec::Subscribe {
        packet_id: pid(id),
        filters: filters.iter().map(|(f, q)| (f.to_string(), mqtt_codec::SubscriptionOptions::qos(*q))).collect(),
        properties: Properties::default(),
    })
}

/// A PUBLISH; `id` is required for QoS 1 and 2.
pub fn publish(topic: &str, payload: impl AsRef<[u8]>, qos: mqtt_codec::QoS, id: Option<u16>, retain: bool) -> Packet {
    Packet::Publish(publish_message(topic, payload, qos, id, retain))
}

/// The PUBLISH itself, to change a field (`dup`) before sending it.
pub fn publish_message(topic: &str, payload: impl AsRef<[u8]>, qos: mqtt_codec::QoS, id: Option<u16>, retain: bool) -> mqtt_codec::Publish {
    mqtt_codec::Publish {
        dup: false,
        qos,
        retain,
        topic: Some(mqtt_codec::TopicName::parse(topic).unwrap()),
        packet_id: id.map(pid),
        payload: bytes::Bytes::copy_from_slice(payload.as_ref()),
        properties: Properties::default(),
    }
}

/// Creates a user with an Argon2id hash of `secret`, as `roost user add` does.
pub async fn add_user(store: &Store, name: &str, secret: &str, admin: bool) {
    let hash = roost::auth::password::hash(secret.into()).await.unwrap();
    store.create_user(name, &hash, admin).await.unwrap();
}

/// Waits until `check` holds, polling; panics with `what` after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether an external command exists; CI installs all of them, so a missing one fails there.
pub fn require_command(name: &str) {
    let found = std::process::Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().unwrap();
    assert!(found.status.success(), "`{name}` is needed by this test: run .ci/run or install it (see README)");
}

/// Waits until the async `check` holds, polling; panics with `what` after [`WAIT`].
pub async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `roost` binary as a child process: logging at `log`, none of the `ROOST_*` settings of
/// the environment running the tests (so they cannot change what a test means), killed when
/// dropped.
pub fn roost_command(log: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_roost"));
    cmd.env("RUST_LOG", log).kill_on_drop(true);
    for (key, _) in std::env::vars_os().filter(|(key, _)| key.to_string_lossy().starts_with("ROOST_")) {
        cmd.env_remove(key);
    }
    cmd
}

/// Runs `cmd` with `input` on its standard input (closed after it), for `limit` at most; what it
/// printed, and how it ended.
pub async fn output_with_input(cmd: &mut tokio::process::Command, input: &[u8], limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    tokio::time::timeout(limit, child.wait_with_output()).await.expect("the command ends in time").unwrap()
}

/// `roost serve` flags that put its plain listeners on free ports, for tests that run the binary.
pub const ANY_PORTS: [&str; 6] = ["--mqtt-listen", "127.0.0.1:0", "--mqtt-ws-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];

/// Logs in to the dashboard's API as `user` and returns the session cookie (`name=value`).
pub async fn dashboard_login(http: &reqwest::Client, server: &TestServer, user: &str, secret: &str) -> String {
    let response = http
        .post(format!("http://{}/api/login", server.http))
        .json(&serde_json::json!({ "username": user, "password": secret }))
        .send()
        .await
        .unwrap();
    response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
}

/// One JSON API request as the holder of `cookie`: the status and the JSON answer. The request
/// is built at once, so the future borrows nothing.
pub fn api_call(
    http: &reqwest::Client,
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    body: Option<serde_json::Value>,
) -> impl std::future::Future<Output = (u16, serde_json::Value)> + use<> {
    let mut request = http.request(method, format!("http://{}{path}", server.http)).header("cookie", cookie);
    if let Some(body) = body {
        request = request.json(&body);
    }
    async move {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    }
}

/// A free TCP port on loopback (for programs that cannot be told port 0, like Mosquitto).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts Mosquitto with `config` (written into `dir`), killed when dropped, once it listens
/// on every one of `ports`.
pub async fn spawn_mosquitto(dir: &std::path::Path, config: &str, ports: &[u16]) -> tokio::process::Child {
    require_command("mosquitto");
    std::fs::write(dir.join("mosquitto.conf"), config).unwrap();
    let child = tokio::process::Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for &port in ports {
        eventually_async("mosquitto listens", || async move { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() }).await;
    }
    child
}
