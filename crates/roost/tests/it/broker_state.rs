//! Broker state across restarts and SIGKILL, on every database, with Mosquitto's own clients:
//! retained messages, persistent sessions (clean session 0) and their queued QoS 1/2
//! messages, session expiry, and wills of connections that died with the server.

use crate::crash::{spawn_roost, spawn_roost_with_logins};
use crate::databases::{Backend, TestDb};
use crate::support::{self, require_command, Raw, TestServer, WAIT};
use bytes::BytesMut;
use mqtt_codec::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

async fn mosquitto_pub(addr: SocketAddr, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .status()
        .await
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub {args:?} failed");
}

/// `mosquitto_sub` with `args`, for `seconds` at most (`-W`: from its connection on; `-C` or `-E`
/// may end it sooner); its output lines.
async fn mosquitto_sub(addr: SocketAddr, seconds: u32, args: &[&str]) -> Vec<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-W", &seconds.to_string()])
        .args(args)
        .output()
        .await
        .expect("mosquitto_sub runs");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

async fn sigkill(mut roost: Child) {
    roost.start_kill().unwrap();
    roost.wait().await.unwrap();
}

async fn sigterm(mut roost: Child) {
    let pid = roost.id().expect("running").to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().await.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), roost.wait()).await.expect("roost stops on SIGTERM").unwrap();
    assert!(status.success(), "roost exits cleanly on SIGTERM: {status}");
}

/// [MQTT-3.3.1-5] a retained message is stored and sent to future subscribers; [MQTT-3.3.1-10,
/// -11] an empty retained payload removes it. Both hold across a clean restart and SIGKILL:
/// a QoS 1 retained publish is stored before its PUBACK.
async fn retained_messages_survive_restart_and_sigkill(backend: Backend) {
    require_command("mosquitto_pub");
    let db = TestDb::new(backend).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    mosquitto_pub(addr, &["-t", "home/porch/status", "-m", "online", "-r", "-q", "1"]).await;
    mosquitto_pub(addr, &["-t", "home/garage/status", "-m", "open", "-r", "-q", "1"]).await;
    mosquitto_pub(addr, &["-t", "home/garage/status", "-n", "-r", "-q", "1"]).await;
    sigterm(roost).await;

    let (roost, addr) = spawn_roost(&db.url).await;
    let seen = mosquitto_sub(addr, 5, &["-t", "home/#", "-v", "-F", "%r %t %p"]).await;
    assert_eq!(seen, ["1 home/porch/status online"], "the cleared retained message stays cleared");
    // Acknowledged, then killed at once: the PUBACK came after the commit.
    mosquitto_pub(addr, &["-t", "home/porch/status", "-m", "away", "-r", "-q", "1"]).await;
    sigkill(roost).await;

    let (roost, addr) = spawn_roost(&db.url).await;
    let seen = mosquitto_sub(addr, 5, &["-t", "home/#", "-v", "-F", "%r %t %p"]).await;
    assert_eq!(seen, ["1 home/porch/status away"]);
    sigkill(roost).await;
}

/// A publisher of numbered messages on `topic` at `qos` (1 or 2), a few in flight, until the
/// connection dies. Returns the numbers acknowledged: PUBACK for QoS 1, PUBREC for QoS 2 (from
/// then on the server owns the message [MQTT-4.3.3-1]).
async fn publish_numbered_until_killed(addr: SocketAddr, topic: &str, qos: QoS, progress: Arc<AtomicUsize>) -> Vec<u64> {
    let mut acked = Vec::new();
    let Ok(mut stream) = TcpStream::connect(addr).await else { return acked };
    let mut out = BytesMut::new();
    let client_id = format!("numbered-{}", qos as u8);
    encode(&Packet::Connect(support::connect(&client_id, true)), ProtocolVersion::V311, &mut out).unwrap();
    if stream.write_all(&out).await.is_err() {
        return acked;
    }
    let topic = TopicName::parse(topic).unwrap();
    let (mut buf, mut inflight, mut next, mut connected) = (BytesMut::new(), HashMap::<u16, u64>::new(), 1u64, false);
    loop {
        out.clear();
        while connected && inflight.len() < 8 {
            let id = (next % 60_000 + 1) as u16;
            inflight.insert(id, next);
            let publish = Publish {
                dup: false,
                qos,
                retain: false,
                topic: Some(topic.clone()),
                packet_id: NonZeroU16::new(id),
                payload: next.to_string().into(),
                properties: Properties::default(),
            };
            encode(&Packet::Publish(publish), ProtocolVersion::V311, &mut out).unwrap();
            next += 1;
        }
        match decode(&mut buf, ProtocolVersion::V311, usize::MAX) {
            Ok(Some(Packet::ConnAck(_))) => connected = true,
            Ok(Some(Packet::PubAck(ack))) => {
                acked.extend(inflight.remove(&ack.packet_id.get()));
                progress.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(Packet::PubRec(ack))) => {
                acked.extend(inflight.remove(&ack.packet_id.get()));
                progress.fetch_add(1, Ordering::Relaxed);
                encode(&Packet::PubRel(Ack::new(ack.packet_id)), ProtocolVersion::V311, &mut out).unwrap();
            }
            Ok(Some(Packet::PubComp(_))) => {}
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => {
                if !out.is_empty() && stream.write_all(&out).await.is_err() {
                    return acked;
                }
                out.clear();
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return acked,
                    Ok(_) => {}
                }
            }
            Err(e) => panic!("bad packet from roost: {e}"),
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return acked;
        }
    }
}

/// Numbered QoS 1 and QoS 2 publishers on `{prefix}/q1` and `{prefix}/q2`, flat out, until
/// SIGKILL at a random moment once each had 150 acknowledged; returns what each had
/// acknowledged.
async fn publish_until_sigkill(roost: Child, addr: SocketAddr, prefix: &str) -> (Vec<u64>, Vec<u64>) {
    let publisher = |topic: String, qos| {
        let progress = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let progress = Arc::clone(&progress);
            async move { publish_numbered_until_killed(addr, &topic, qos, progress).await }
        });
        (task, progress)
    };
    let (q1, q1_progress) = publisher(format!("{prefix}/q1"), QoS::AtLeastOnce);
    let (q2, q2_progress) = publisher(format!("{prefix}/q2"), QoS::ExactlyOnce);
    let started = tokio::time::Instant::now();
    while [&q1_progress, &q2_progress].iter().any(|p| p.load(Ordering::Relaxed) < 150) && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let jitter = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis() % 200;
    tokio::time::sleep(Duration::from_millis(u64::from(jitter))).await;
    sigkill(roost).await;
    let acked = (q1.await.unwrap(), q2.await.unwrap());
    assert!(!acked.0.is_empty() && !acked.1.is_empty(), "both publishers were acknowledged before the kill");
    acked
}

/// Every acknowledged number was delivered, and none of `{prefix}/q2` (QoS 2) twice.
fn assert_all_delivered_qos2_once(delivered: impl Iterator<Item = (String, u64)>, prefix: &str, acked_q1: &[u64], acked_q2: &[u64]) {
    let mut counts: HashMap<(String, u64), usize> = HashMap::new();
    for message in delivered {
        *counts.entry(message).or_default() += 1;
    }
    for (topic, acked) in [(format!("{prefix}/q1"), acked_q1), (format!("{prefix}/q2"), acked_q2)] {
        let missing: Vec<_> = acked.iter().filter(|n| !counts.contains_key(&(topic.clone(), **n))).collect();
        assert!(
            missing.is_empty(),
            "{topic}: {} of {} acknowledged messages lost, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
    }
    let qos2 = format!("{prefix}/q2");
    let twice: Vec<_> = counts.iter().filter(|((topic, _), n)| *topic == qos2 && **n > 1).collect();
    assert!(twice.is_empty(), "QoS 2 messages delivered more than once: {twice:?}");
}

/// A persistent session [MQTT-3.1.2-4] gets every QoS 1/2 message the server acknowledged
/// while it was offline, even when the server is killed right after: none missing, and at
/// QoS 2 none twice [MQTT-4.3.3]. Its subscription survives too (no new SUBSCRIBE).
async fn a_persistent_session_gets_every_acknowledged_message_after_sigkill(backend: Backend) {
    require_command("mosquitto_sub");
    let db = TestDb::new(backend).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    // Create the session and its subscription (-E: exit once subscribed), then go offline.
    mosquitto_sub(addr, 30, &["-E", "-c", "-i", "board-7", "-q", "2", "-t", "cmd/board-7/#"]).await;
    let (acked_q1, acked_q2) = publish_until_sigkill(roost, addr, "cmd/board-7").await;
    // What the session has queued, acknowledged or not (the PUBACK of the last may not have
    // left before the kill): each is delivered once, and mosquitto_sub exits after as many.
    let store = roost::store::Store::open(&db.url).await.unwrap();
    let queued = store.load_broker_state().await.unwrap().queue.iter().filter(|q| q.client_id == "board-7").count();
    store.close().await;
    assert!(queued >= acked_q1.len() + acked_q2.len(), "{queued} queued");

    let (roost, addr) = spawn_roost(&db.url).await;
    // The same client id, clean session 0, and no -t: only the stored subscription delivers.
    let count = queued.to_string();
    let lines = mosquitto_sub(addr, 60, &["-C", &count, "-c", "-i", "board-7", "-q", "2", "-v", "-t", "cmd/board-7/none"]).await;
    let received = lines.iter().map(|line| {
        let (topic, number) = line.split_once(' ').expect("topic and payload");
        (topic.to_owned(), number.parse().unwrap())
    });
    assert_all_delivered_qos2_once(received, "cmd/board-7", &acked_q1, &acked_q2);
    // Delivered and acknowledged: the queue is empty now, also after another restart.
    sigterm(roost).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    // A marker queued behind whatever is left: it must come first.
    mosquitto_pub(addr, &["-t", "cmd/board-7/end", "-m", "0", "-q", "1"]).await;
    let again = mosquitto_sub(addr, 30, &["-C", "1", "-c", "-i", "board-7", "-q", "2", "-v", "-t", "cmd/board-7/none"]).await;
    assert_eq!(again, ["cmd/board-7/end 0"], "messages delivered before were delivered again");
    sigkill(roost).await;
    eprintln!("{backend:?}: {} QoS 1 and {} QoS 2 acknowledged messages delivered after SIGKILL", acked_q1.len(), acked_q2.len());
}

/// What a subscriber that keeps its own session state (as MQTT asks of clients) got.
#[derive(Default)]
struct Received {
    /// (topic, number) in delivery order, each QoS 2 message once by the client's own rule.
    delivered: Vec<(String, u64)>,
    /// QoS 2 packet ids received and not yet released [MQTT-4.3.3-2]: a resend with one of
    /// these is not delivered again. Kept across connections, like the session.
    held: std::collections::HashSet<u16>,
}

/// A persistent subscriber (clean session 0) that acknowledges everything and keeps its QoS 2
/// state across reconnects. Connects to the addresses it is given in turn (the server's, after
/// each restart), subscribing only the first time; on the last one, returns once it has every
/// message of `expected` (sent before the last address) and three quiet seconds showed no more,
/// or after a minute (the caller then finds what is missing).
async fn persistent_subscriber(
    mut addrs: tokio::sync::mpsc::UnboundedReceiver<SocketAddr>,
    subscribed: tokio::sync::oneshot::Sender<()>,
    mut expected: tokio::sync::oneshot::Receiver<std::collections::HashSet<(String, u64)>>,
) -> Received {
    let quiet = Duration::from_secs(3);
    let mut last: Option<(std::collections::HashSet<(String, u64)>, tokio::time::Instant)> = None;
    let mut received = Received::default();
    let mut first = true;
    let mut subscribed = Some(subscribed);
    while let Some(addr) = addrs.recv().await {
        let (mut client, ack) = Raw::mqtt(addr, "live-board", false).await;
        assert_eq!(ack.session_present, !first, "[MQTT-3.2.2-2] the session is resumed after a restart");
        if first {
            client.send(&support::subscribe(1, &[("live/#", QoS::ExactlyOnce)])).await;
            first = false;
        }
        loop {
            let packet = match client.recv_within(quiet).await {
                Ok(Some(packet)) => packet,
                // The server died: wait for the next address.
                Ok(None) => break,
                Err(()) if addrs.is_closed() && addrs.is_empty() => {
                    let (expected, give_up) = last.get_or_insert_with(|| {
                        let expected = expected.try_recv().expect("the expected messages come before the last address");
                        (expected, tokio::time::Instant::now() + Duration::from_secs(60))
                    });
                    if expected.iter().all(|m| received.delivered.contains(m)) || tokio::time::Instant::now() >= *give_up {
                        return received;
                    }
                    continue;
                }
                Err(()) => continue,
            };
            match packet {
                Packet::Publish(p) => {
                    let message =
                        (p.topic.as_ref().unwrap().as_str().to_owned(), std::str::from_utf8(&p.payload).unwrap().parse().unwrap());
                    let id = p.packet_id.unwrap();
                    match p.qos {
                        QoS::AtLeastOnce => {
                            received.delivered.push(message);
                            client.try_send(&Packet::PubAck(Ack::new(id))).await;
                        }
                        QoS::ExactlyOnce => {
                            if received.held.insert(id.get()) {
                                received.delivered.push(message);
                            }
                            client.try_send(&Packet::PubRec(Ack::new(id))).await;
                        }
                        QoS::AtMostOnce => panic!("QoS 0 publish to a QoS 2 subscription of QoS 1/2 publishers"),
                    }
                }
                Packet::PubRel(ack) => {
                    received.held.remove(&ack.packet_id.get());
                    client.try_send(&Packet::PubComp(Ack::new(ack.packet_id))).await;
                }
                Packet::SubAck(_) => {
                    if let Some(subscribed) = subscribed.take() {
                        let _ = subscribed.send(());
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    received
}

/// The in-flight messages of an online persistent session survive a SIGKILL too: a
/// subscriber connected while publishers run flat out, then killed with the server and
/// reconnected to the new one, has every acknowledged message, QoS 2 exactly once [MQTT-4.3.3]
/// (it keeps its packet-id state, as a client must; the server resends a QoS 2 PUBLISH with its
/// stored packet id, and a released one as PUBREL only [MQTT-4.4.0-1]).
async fn an_online_persistent_session_loses_nothing_across_sigkill(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    let (addrs, addr_queue) = tokio::sync::mpsc::unbounded_channel();
    addrs.send(addr).unwrap();
    let (subscribed, is_subscribed) = tokio::sync::oneshot::channel();
    let (expect, expected) = tokio::sync::oneshot::channel();
    let subscriber = tokio::spawn(persistent_subscriber(addr_queue, subscribed, expected));
    tokio::time::timeout(WAIT, is_subscribed).await.expect("SUBACK in time").unwrap();
    let (acked_q1, acked_q2) = publish_until_sigkill(roost, addr, "live").await;
    let numbered = |topic: &str, acked: &[u64]| acked.iter().map(|&n| (topic.to_owned(), n)).collect::<Vec<_>>();
    expect.send(numbered("live/q1", &acked_q1).into_iter().chain(numbered("live/q2", &acked_q2)).collect()).unwrap();
    let (roost, addr) = spawn_roost(&db.url).await;
    addrs.send(addr).unwrap();
    drop(addrs);
    let received = subscriber.await.unwrap();
    assert_all_delivered_qos2_once(received.delivered.iter().cloned(), "live", &acked_q1, &acked_q2);
    sigkill(roost).await;
    eprintln!(
        "{backend:?}: {} QoS 1 and {} QoS 2 acknowledged while the subscriber was online; {} deliveries in all",
        acked_q1.len(),
        acked_q2.len(),
        received.delivered.len()
    );
}

/// Connects with `connect` and a retained QoS 1 will "offline" on `topic`; returns once the
/// server has stored the will (it answered a PINGREQ after the CONNACK).
async fn connect_with_will(addr: SocketAddr, mut connect: Connect, topic: &str) -> Raw {
    let mut board = Raw::connect(addr).await;
    connect.will = Some(LastWill {
        topic: TopicName::parse(topic).unwrap(),
        payload: "offline".into(),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    });
    board.send(&Packet::Connect(connect)).await;
    assert!(matches!(board.recv().await, Some(Packet::ConnAck(ConnAck { code: 0, .. }))));
    board.send(&Packet::PingReq).await;
    assert_eq!(board.recv().await, Some(Packet::PingResp), "connected, and its will stored");
    board
}

/// A will whose connection died with the server (SIGKILL) is published when the server starts
/// again: the connection closed without DISCONNECT [MQTT-3.1.2-8].
async fn a_will_is_published_after_the_server_died_with_its_connection(backend: Backend) {
    require_command("mosquitto_sub");
    let db = TestDb::new(backend).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    let board = connect_with_will(addr, support::connect("board-9", true), "status/board-9").await;
    sigkill(roost).await;
    drop(board);
    let (roost, addr) = spawn_roost(&db.url).await;
    let seen = mosquitto_sub(addr, 5, &["-t", "status/#", "-v"]).await;
    assert_eq!(seen, ["status/board-9 offline"], "the will, retained, is there after the restart");
    sigterm(roost).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    let seen = mosquitto_sub(addr, 5, &["-t", "status/#", "-v"]).await;
    assert_eq!(seen, ["status/board-9 offline"], "published once: the will itself is gone, its retained message stays");
    sigkill(roost).await;
}

/// The same with logins required (the default): the ACL a will is checked against is its
/// user's, read from the database at start, before anyone has logged in again. The will of a
/// user who may not publish on its topic is not published.
async fn a_users_will_is_published_after_the_server_died_with_its_connection(backend: Backend) {
    require_command("mosquitto_sub");
    let db = TestDb::new(backend).await;
    let store = roost::store::Store::open(&db.url).await.unwrap();
    support::add_user(&store, "alice", "alice-secret", false).await;
    support::add_user(&store, "root", "root-secret", true).await;
    drop(store);
    let (roost, addr) = spawn_roost_with_logins(&db.url).await;
    let mut boards = Vec::new();
    for (client_id, topic) in [("board-1", "iot/alice/status/board-1"), ("board-2", "iot/bob/status/board-2")] {
        let mut connect = support::connect(client_id, true);
        connect.username = Some("alice".into());
        connect.password = Some(b"alice-secret".to_vec().into());
        boards.push(connect_with_will(addr, connect, topic).await); // connected until the server dies
    }
    sigkill(roost).await;
    drop(boards);
    let (roost, addr) = spawn_roost_with_logins(&db.url).await;
    let seen = mosquitto_sub(addr, 5, &["-u", "root", "-P", "root-secret", "-t", "iot/#", "-v"]).await;
    assert_eq!(seen, ["iot/alice/status/board-1 offline"], "alice's will on her own topics, and not the one on bob's");
    sigkill(roost).await;
}

/// `--session-expiry`: a persistent session offline for longer is removed with its queue, in
/// memory and in the database; the client then starts afresh (session present 0).
async fn an_expired_session_is_removed_with_its_queue(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start_on(db.url.clone(), |args| {
        // Long enough for the checks below to run before it is over, on a busy machine too.
        args.session_expiry = Duration::from_secs(6);
        args.sys_interval = Duration::from_millis(200);
    })
    .await;
    let (mut sub, _) = Raw::mqtt(server.mqtt, "resting", false).await;
    sub.send(&support::subscribe(1, &[("cmd/#", QoS::AtLeastOnce)])).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    sub.send(&Packet::Disconnect(Default::default())).await;
    drop(sub);
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "pub", true).await;
    publisher.send(&support::publish("cmd/x", "1", QoS::AtLeastOnce, Some(1), false)).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    let sessions = server.broker.persistent_sessions();
    assert_eq!((sessions.len(), sessions[0].queued, sessions[0].online), (1, 1, false), "{sessions:?}");
    let stored = server.store.load_broker_state().await.unwrap();
    assert_eq!((stored.sessions.len(), stored.queue.len()), (1, 1));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !server.broker.persistent_sessions().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the session did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = server.store.load_broker_state().await.unwrap();
        if stored.sessions.is_empty() && stored.queue.is_empty() && stored.subscriptions.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the expired session is still stored: {stored:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.broker.stats().sessions_expired, 1);
    let (mut sys, _) = Raw::mqtt(server.mqtt, "sys-watcher", true).await;
    sys.send(&support::subscribe(1, &[("$SYS/broker/clients/expired", QoS::AtMostOnce)])).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "$SYS/broker/clients/expired never said 1");
        if let Ok(Some(Packet::Publish(p))) = sys.recv_within(WAIT).await {
            if &p.payload[..] == b"1" {
                break;
            }
        }
    }
    let (_sub, ack) = Raw::mqtt(server.mqtt, "resting", false).await;
    assert!(!ack.session_present, "[MQTT-3.2.2-3] no session present after expiry");
    server.stop().await;
}

/// MQTT 5.0 state across SIGKILL: a retained message keeps its properties; a persistent
/// session keeps its queued message (with its properties and what is left of its expiry), its
/// subscription options and identifier [MQTT-3.3.4-3, MQTT-3.8.3-3, MQTT-3.3.1-12], and its own
/// session expiry interval [MQTT-3.1.2-23].
async fn mqtt5_state_survives_sigkill(backend: Backend) {
    require_command("mosquitto_pub");
    let db = TestDb::new(backend).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    mosquitto_pub(
        addr,
        &[
            "-V",
            "mqttv5",
            "-t",
            "home/porch/status",
            "-m",
            "online",
            "-r",
            "-q",
            "1",
            "-D",
            "publish",
            "user-property",
            "by",
            "door",
            "-D",
            "publish",
            "content-type",
            "text/plain",
        ],
    )
    .await;
    let session = |id: &str, clean_start, seconds| support::connect_v5(id, clean_start, vec![Property::SessionExpiryInterval(seconds)]);
    let (mut sub, _) = Raw::mqtt5(addr, session("keeper5", true, 300)).await;
    let options = SubscriptionOptions { no_local: true, retain_as_published: true, ..SubscriptionOptions::qos(QoS::AtLeastOnce) };
    let subscription_id = Properties(vec![Property::SubscriptionIdentifier(77)]);
    sub.send(&Packet::Subscribe(Subscribe {
        packet_id: support::pid(1),
        filters: vec![("cmd5/#".into(), options)],
        properties: subscription_id,
    }))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(a)) if a.codes == [1]));
    sub.send(&Packet::Disconnect(Default::default())).await;
    let (mut short, _) = Raw::mqtt5(addr, session("short5", true, 3)).await;
    short.send(&Packet::Disconnect(Default::default())).await;
    let (mut publisher, _) = Raw::mqtt5(addr, support::connect_v5("pub5", true, vec![])).await;
    let queued = Publish {
        properties: Properties(vec![Property::UserProperty("k".into(), "v".into()), Property::MessageExpiryInterval(600)]),
        ..support::publish_message("cmd5/x", "go", QoS::AtLeastOnce, Some(1), false)
    };
    publisher.send(&Packet::Publish(queued)).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))), "queued and stored before the PUBACK");
    sigkill(roost).await;

    let (roost, addr) = spawn_roost(&db.url).await;
    let seen = mosquitto_sub(addr, 5, &["-V", "mqttv5", "-t", "home/#", "-F", "%r %t %p %P %C"]).await;
    assert_eq!(seen, ["1 home/porch/status online by:door text/plain"]);
    let (mut sub, ack) = Raw::mqtt5(addr, session("keeper5", false, 300)).await;
    assert!(ack.session_present);
    let Some(Packet::Publish(got)) = sub.recv().await else { panic!("the queued message") };
    assert_eq!(got.payload.as_ref(), b"go");
    assert!(got.properties.0.contains(&Property::UserProperty("k".into(), "v".into())));
    assert!(got.properties.0.contains(&Property::SubscriptionIdentifier(77)));
    assert!(got.properties.0.iter().any(|p| matches!(p, Property::MessageExpiryInterval(s) if *s <= 600 && *s > 500)));
    sub.send(&Packet::PubAck(Ack::new(got.packet_id.unwrap()))).await;
    // The options came back too: no local (its own publish is not sent back), retain as published.
    sub.send(&Packet::Publish(support::publish_message("cmd5/own", "mine", QoS::AtMostOnce, None, true))).await;
    let (mut other, _) = Raw::mqtt5(addr, support::connect_v5("other5", true, vec![])).await;
    other.send(&Packet::Publish(support::publish_message("cmd5/theirs", "yours", QoS::AtMostOnce, None, true))).await;
    let Some(Packet::Publish(got)) = sub.recv().await else { panic!("the other client's message") };
    assert_eq!((got.payload.as_ref(), got.retain), (&b"yours"[..], true));
    // The short session kept its own 3 s interval across the restart (the server's is 7 days).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_short, ack) = Raw::mqtt5(addr, session("short5", false, 3)).await;
    assert!(!ack.session_present, "expired by its own interval");
    sigkill(roost).await;
}

/// The admin view of persistent sessions: listed online and offline with their queues, dropped
/// with their queue (an online one is disconnected first), and counted in `/metrics`.
#[tokio::test]
async fn admins_see_and_drop_persistent_sessions() {
    let server = TestServer::start().await;
    let subscribe = |id| support::subscribe(id, &[("cmd/#", QoS::AtLeastOnce)]);
    let (mut resting, _) = Raw::mqtt(server.mqtt, "resting", false).await;
    resting.send(&subscribe(1)).await;
    assert!(matches!(resting.recv().await, Some(Packet::SubAck(_))));
    resting.send(&Packet::Disconnect(Default::default())).await;
    drop(resting);
    let (mut online, _) = Raw::mqtt(server.mqtt, "online", false).await;
    online.send(&subscribe(1)).await;
    assert!(matches!(online.recv().await, Some(Packet::SubAck(_))));
    let (_clean, _) = Raw::mqtt(server.mqtt, "not-listed", true).await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "pub", true).await;
    publisher.send(&support::publish("cmd/x", "1", QoS::AtLeastOnce, Some(1), false)).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));

    let http = reqwest::Client::new();
    let base = format!("http://{}", server.http);
    let deadline = tokio::time::Instant::now() + WAIT;
    let listed = loop {
        let listed: serde_json::Value = http.get(format!("{base}/api/sessions")).send().await.unwrap().json().await.unwrap();
        if listed.as_array().unwrap().len() == 2 && !listed[1]["offline_since_ms"].is_null() {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "sessions: {listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed[0]["client_id"], "online");
    assert_eq!(listed[0]["online"], true);
    assert_eq!((listed[1]["client_id"].as_str(), listed[1]["queued"].as_u64()), (Some("resting"), Some(1)));
    assert!(listed[1]["expires_at_ms"].as_i64().unwrap() > listed[1]["offline_since_ms"].as_i64().unwrap());
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("roost_persistent_sessions{state=\"offline\"} 1"), "{metrics}");
    assert!(metrics.contains("roost_persistent_queued_messages 1"), "{metrics}");

    for client_id in ["resting", "online"] {
        let response = http.delete(format!("{base}/api/sessions/{client_id}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    online.expect_closed().await; // the online session is disconnected
    let deadline = tokio::time::Instant::now() + WAIT;
    while !server.broker.persistent_sessions().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "sessions left: {:?}", server.broker.persistent_sessions());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = http.delete(format!("{base}/api/sessions/resting")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let (_again, ack) = Raw::mqtt(server.mqtt, "resting", false).await;
    assert!(!ack.session_present, "a dropped session is gone [MQTT-3.2.2-3]");
    server.stop().await;
}

/// [MQTT-3.1.3-5] the server may refuse long client ids: sessions and wills are stored under
/// them, so over 191 characters gets CONNACK 0x02 (identifier rejected), on every database alike.
#[tokio::test]
async fn a_client_id_too_long_to_store_is_refused() {
    let server = TestServer::start().await;
    let (_, ack) = Raw::mqtt(server.mqtt, &"é".repeat(191), false).await;
    assert_eq!(ack.code, 0, "191 characters (382 bytes) are fine");
    let (mut refused, ack) = Raw::mqtt(server.mqtt, &"x".repeat(192), true).await;
    assert_eq!(ack.code, 2);
    refused.expect_closed().await;
    server.stop().await;
}

/// Python paho-mqtt (the client of the stack Roost replaces): a persistent session made with
/// `clean_session=False` receives, after a SIGKILL and restart, the QoS 1 messages published
/// to it while it was offline, without subscribing again.
#[tokio::test]
async fn paho_persistent_session_survives_sigkill() {
    const SCRIPT: &str = r#"
import sys, threading, paho.mqtt.client as mqtt
port, phase, expected = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
got, ready, done = [], threading.Event(), threading.Event()
api = getattr(mqtt, "CallbackAPIVersion", None)
c = mqtt.Client(api.VERSION2, client_id="paho-board", clean_session=False) if api else mqtt.Client(client_id="paho-board", clean_session=False)
def on_message(client, userdata, m):
    got.append(m.payload.decode())
    if len(got) == expected: done.set()
c.on_message = on_message
c.on_subscribe = lambda *a: ready.set()
c.on_connect = lambda client, userdata, flags, *a: print("session_present", int(flags.session_present if hasattr(flags, "session_present") else flags["session present"]), flush=True)
c.connect("127.0.0.1", port)
c.loop_start()
if phase == "subscribe":
    c.subscribe("cmd/paho/#", qos=1)
    assert ready.wait(10), "no SUBACK"
else:
    assert done.wait(10), f"only got {got}"
    print(sorted(got, key=int))
c.disconnect()
c.loop_stop()
"#;
    require_command("python3");
    let run = |addr: SocketAddr, phase: &'static str, expected: usize| async move {
        let port = addr.port().to_string();
        let out = Command::new("python3").args(["-c", SCRIPT, &port, phase, &expected.to_string()]).output().await.expect("python3 runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "paho script failed (pip install paho-mqtt, see .ci/run): {stderr}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let db = TestDb::new(Backend::Sqlite).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    assert_eq!(run(addr, "subscribe", 0).await, "session_present 0");
    for n in 1..=3 {
        mosquitto_pub(addr, &["-t", "cmd/paho/led", "-m", &n.to_string(), "-q", "1"]).await;
    }
    sigkill(roost).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    assert_eq!(run(addr, "receive", 3).await, "session_present 1\n['1', '2', '3']");
    sigkill(roost).await;
}

/// rumqttc with `clean_session(false)`: the retained message and the persistent session with
/// its QoS 2 messages are there after a SIGKILL and restart.
#[tokio::test]
async fn rumqttc_sees_retained_and_its_session_after_sigkill() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet as RPacket, QoS as RQoS};
    let options = |addr: SocketAddr, id: &str| {
        let mut o = MqttOptions::new(id, "127.0.0.1", addr.port());
        o.set_clean_session(false);
        o
    };
    let db = TestDb::new(Backend::Sqlite).await;
    let (roost, addr) = spawn_roost(&db.url).await;
    let (client, mut events) = AsyncClient::new(options(addr, "rumqttc-board"), 10);
    client.subscribe("cmd/rumqttc/#", RQoS::ExactlyOnce).await.unwrap();
    client.publish("state/rumqttc", RQoS::AtLeastOnce, true, "ready").await.unwrap();
    let (mut subacked, mut puback) = (false, false);
    tokio::time::timeout(WAIT, async {
        while !(subacked && puback) {
            match events.poll().await.unwrap() {
                Event::Incoming(RPacket::SubAck(_)) => subacked = true,
                Event::Incoming(RPacket::PubAck(_)) => puback = true,
                _ => {}
            }
        }
    })
    .await
    .expect("SUBACK and PUBACK");
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    for n in 1..=3 {
        mosquitto_pub(addr, &["-t", "cmd/rumqttc/set", "-m", &n.to_string(), "-q", "2"]).await;
    }
    sigkill(roost).await;

    let (roost, addr) = spawn_roost(&db.url).await;
    let (client, mut events) = AsyncClient::new(options(addr, "rumqttc-board"), 10);
    client.subscribe("state/#", RQoS::AtLeastOnce).await.unwrap();
    let (mut session_present, mut received) = (None, Vec::new());
    tokio::time::timeout(WAIT, async {
        while received.len() < 4 {
            match events.poll().await.unwrap() {
                Event::Incoming(RPacket::ConnAck(ack)) => session_present = Some(ack.session_present),
                Event::Incoming(RPacket::Publish(p)) => {
                    received.push((p.topic.clone(), String::from_utf8_lossy(&p.payload).into_owned(), p.retain))
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("got only {received:?}"));
    assert_eq!(session_present, Some(true), "[MQTT-3.2.2-2] the stored session is resumed");
    received.sort();
    let expected = |t: &str, p: &str, r| (t.to_owned(), p.to_owned(), r);
    assert_eq!(
        received,
        [
            expected("cmd/rumqttc/set", "1", false),
            expected("cmd/rumqttc/set", "2", false),
            expected("cmd/rumqttc/set", "3", false),
            expected("state/rumqttc", "ready", true)
        ]
    );
    sigkill(roost).await;
}

/// A database outage holds the acknowledgement of a retained publish (its commit waits), says
/// so in `/healthz`, and lets it go once the database is back: acknowledged means stored.
async fn a_database_outage_holds_broker_state_acks_until_it_is_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (_, upstream) = db.server.clone().expect("a server database");
    let proxy = crate::proxy::Proxy::start(upstream.parse().unwrap()).await;
    let server = TestServer::start_on(db.via(proxy.addr), |_| {}).await;
    let (mut publisher, _) = Raw::mqtt(server.mqtt, "door", true).await;
    proxy.cut();
    publisher.send(&support::publish("home/door", "open", QoS::AtLeastOnce, Some(1), true)).await;
    let health = format!("http://{}/healthz", server.http);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = reqwest::get(&health).await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        if status == 503 && body["broker_state"].as_str().is_some_and(|p| p.contains("commits failing")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/healthz never reported the broker state: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.expect_silence(Duration::from_millis(300)).await; // no PUBACK while it is not stored
    proxy.restore();
    assert_eq!(publisher.recv_within(Duration::from_secs(30)).await, Ok(Some(Packet::PubAck(Ack::new(support::pid(1))))));
    let stored = server.store.load_broker_state().await.unwrap();
    assert_eq!(stored.retained.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(), ["home/door"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reqwest::get(&health).await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "/healthz stayed degraded after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

mod outage {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        a_database_outage_holds_broker_state_acks_until_it_is_back(Backend::Postgres).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb() {
        a_database_outage_holds_broker_state_acks_until_it_is_back(Backend::MariaDb).await;
    }
}

crate::on_every_database!(
    retained_messages_survive_restart_and_sigkill,
    a_persistent_session_gets_every_acknowledged_message_after_sigkill,
    an_online_persistent_session_loses_nothing_across_sigkill,
    a_will_is_published_after_the_server_died_with_its_connection,
    a_users_will_is_published_after_the_server_died_with_its_connection,
    an_expired_session_is_removed_with_its_queue,
    mqtt5_state_survives_sigkill,
);
