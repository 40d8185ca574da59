//! `serve --upstream`: readings taken from an existing MQTT broker (a cluster's, or Mosquitto)
//! instead of, or besides, Roost's own. The node subscribes to each topic template's filter as
//! a shared subscription (`$share/<group>/<filter>`, QoS 1) in a persistent session named after
//! `--node-id`, so several nodes split the messages between them, and acknowledges each message
//! upstream only once its reading is committed: whatever the upstream broker accepted and a node
//! did not store, the broker sends again (to that node when it reconnects).
//!
//! A message committed whose acknowledgement was lost (a crash, a broken connection) comes back
//! marked DUP with the same packet id. Each committed message's packet id and a hash of its topic
//! and payload are recorded in the batch's transaction (`upstream_deliveries`); a DUP message
//! matching one of the node's last [`REMEMBERED`] deliveries is acknowledged without being
//! stored again, and counted. The broker numbers packet ids per session and reuses one only after
//! 65,535 others, so within that window an id and hash name one message (see the README for the
//! bound on what can still be stored twice).

use crate::broker::Message;
use crate::ingest::Ingest;
use crate::model::{fnv1a, UpstreamDelivery};
use crate::mqtt_client::ClientSettings;
use crate::store::Store;
use anyhow::Context;
use mqtt_codec::{QoS as CodecQoS, TopicName};
use rumqttc::{AsyncClient, Event, Packet, Publish, QoS, SubscribeReasonCode};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The latest committed deliveries a node remembers to recognise a message sent again. Far
/// below the 65,535 packet ids after which a broker reuses one, and far above any broker's
/// window of unacknowledged messages to one client (Mosquitto's `max_inflight_messages`, 20 by
/// default; a 5.0 client's receive maximum).
pub const REMEMBERED: usize = 10_000;
/// Reconnection delays: from the first to the last, doubling.
const RECONNECT_DELAYS: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// Requests (acknowledgements) queued for the connection: one per packet id, so an
/// acknowledgement never waits while the connection is held back by a full ingest queue.
const ACK_QUEUE: usize = 65_536;
/// The largest packet MQTT can express.
const MAX_MQTT_PACKET: usize = 268_435_460;
/// How long shutdown waits for the readings taken to commit and their acknowledgements to leave.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// `--upstream` and the node's identity.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub client: ClientSettings,
    /// `--node-id`: the session's client id is `roost-<node>`.
    pub node_id: Arc<str>,
    /// `--share-group`.
    pub share_group: String,
    /// The topic templates' filters.
    pub filters: Vec<String>,
    /// Largest packet taken from the upstream broker (`--max-packet-size`).
    pub max_packet_size: usize,
}

impl UpstreamConfig {
    pub fn client_id(&self) -> String {
        format!("roost-{}", self.node_id)
    }

    /// The shared subscriptions: `$share/<group>/<filter>`.
    pub fn subscriptions(&self) -> Vec<String> {
        self.filters.iter().map(|f| format!("$share/{}/{f}", self.share_group)).collect()
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub connected: AtomicBool,
    /// Messages received (QoS 0 and 1, first deliveries and again).
    pub received: AtomicU64,
    /// Messages acknowledged upstream after their reading (or reject) was committed.
    pub acknowledged: AtomicU64,
    /// Messages marked DUP (sent again by the upstream broker).
    pub redelivered: AtomicU64,
    /// Of those, the ones recognised as already stored: acknowledged, not stored twice.
    pub duplicates: AtomicU64,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
}

/// The node's last committed deliveries: packet id → (hash, seq), oldest evicted first.
#[derive(Debug, Default)]
struct Recent {
    by_id: HashMap<u16, (i64, i64)>,
    order: VecDeque<(u16, i64)>,
}

impl Recent {
    fn insert(&mut self, packet_id: u16, hash: i64, seq: i64) {
        self.by_id.insert(packet_id, (hash, seq));
        self.order.push_back((packet_id, seq));
        while self.order.len() > REMEMBERED {
            let Some((old_id, old_seq)) = self.order.pop_front() else { break };
            // Only if that id was not delivered again since.
            if self.by_id.get(&old_id).is_some_and(|(_, seq)| *seq == old_seq) {
                self.by_id.remove(&old_id);
            }
        }
    }

    fn is_stored(&self, packet_id: u16, hash: i64) -> bool {
        self.by_id.get(&packet_id).is_some_and(|(h, _)| *h == hash)
    }

    /// A new message (not DUP) came with `packet_id`: the broker had the earlier one with that id
    /// acknowledged, so it can no longer come back. Whether the id was among the remembered
    /// ones: a broker that reuses ids that soon (the lowest free one, as HiveMQ does) defeats
    /// recognition by id, which is then turned off.
    fn reused(&mut self, packet_id: u16) -> bool {
        self.by_id.remove(&packet_id).is_some()
    }

    /// A new session on the broker: its packet ids start over.
    fn clear(&mut self) {
        self.by_id.clear();
        self.order.clear();
    }
}

/// A message taken, in arrival order, waiting for its commit before its acknowledgement.
struct Taken {
    publish: Publish,
    /// The connection it came on: an acknowledgement belongs on that connection only (after a
    /// reconnect the broker sends it again, and that copy is the one acknowledged).
    connection: u64,
    /// `None`: nothing to wait for (already stored).
    receipt: Option<crate::broker::Receipt>,
    /// What to remember once committed: packet id, hash, seq.
    delivery: Option<UpstreamDelivery>,
}

/// Messages taken and not yet acknowledged (or given up).
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    settled: Notify,
}

impl InFlight {
    async fn drained(&self) {
        loop {
            let settled = self.settled.notified();
            if self.count.load(Relaxed) == 0 {
                return;
            }
            settled.await;
        }
    }
}

/// Takes readings from the upstream broker until `stop`; reconnects with backoff.
pub async fn run(config: UpstreamConfig, ingest: Arc<Ingest>, store: Arc<Store>, stats: Arc<UpstreamStats>, stop: CancellationToken) {
    loop {
        match consume(&config, Arc::clone(&ingest), &store, &stats, &stop).await {
            Ok(()) => return,
            Err(e) => error!(error = format!("{e:#}"), upstream = %config.client.url, "upstream ingest failed; starting it again in 5 s"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

async fn consume(
    config: &UpstreamConfig,
    ingest: Arc<Ingest>,
    store: &Store,
    stats: &Arc<UpstreamStats>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let node = Arc::clone(&config.node_id);
    let remembered = store.recent_deliveries(&node, REMEMBERED).await.context("reading this node's recent upstream deliveries")?;
    let mut next_seq = remembered.first().map_or(1, |d| d.seq + 1);
    let recent = Arc::new(Mutex::new(Recent::default()));
    {
        let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
        for d in remembered.iter().rev() {
            recent.insert(d.packet_id, d.hash, d.seq);
        }
    }
    let client_id = config.client_id();
    let mut options = config.client.mqtt_options(&client_id, 100)?;
    // Any size the protocol allows comes in (a payload over --max-payload becomes a reject,
    // recorded and acknowledged): a packet refused here would come back first on every
    // reconnect, and this node's share would never move again.
    options.set_clean_session(false).set_manual_acks(true).set_max_packet_size(MAX_MQTT_PACKET, config.max_packet_size);
    let (client, mut events) = AsyncClient::new(options, ACK_QUEUE);
    let in_flight = Arc::new(InFlight::default());
    let connection = Arc::new(AtomicU64::new(0));
    // Off once the broker is seen reusing packet ids soon (see [`Recent::reused`]).
    let mut recognise = true;
    let (taken_tx, taken_rx) = mpsc::unbounded_channel();
    let acker = tokio::spawn(acknowledge(
        client.clone(),
        taken_rx,
        Arc::clone(&recent),
        Arc::clone(stats),
        Arc::clone(&in_flight),
        Arc::clone(&connection),
    ));
    // Rejects of upstream messages are recorded under this name (the device's own client id is
    // not carried by MQTT).
    let source: Arc<str> = format!("{client_id} (upstream)").into();
    let subscriptions = config.subscriptions();
    let mut delay = RECONNECT_DELAYS.0;
    let mut failing = false;
    // SUBACKs received on this connection, one per subscription.
    let mut subscribed = 0;
    info!(upstream = %config.client.url, client_id, ?subscriptions, "upstream ingest: connecting");
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if connection.fetch_add(1, Relaxed) > 0 {
                    stats.reconnects.fetch_add(1, Relaxed);
                }
                stats.connected.store(true, Relaxed);
                info!(upstream = %config.client.url, session_present = ack.session_present, "upstream ingest: connected");
                if !ack.session_present {
                    // A new session (the broker lost or expired the old one): its packet ids
                    // start over, and what is remembered of the old ones means nothing.
                    recent.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    store.forget_deliveries(&node).await.context("forgetting the old session's deliveries")?;
                }
                failing = false;
                delay = RECONNECT_DELAYS.0;
                subscribed = 0;
                // Subscribing again in a session that has the subscriptions changes nothing.
                for filter in &subscriptions {
                    client.subscribe(filter.clone(), QoS::AtLeastOnce).await.context("subscribing upstream")?;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                    error!(upstream = %config.client.url, ?subscriptions,
                        "the upstream broker refused a shared subscription (does it support $share/, and may this user subscribe?)");
                } else {
                    subscribed += 1;
                    if subscribed == subscriptions.len() {
                        info!(upstream = %config.client.url, ?subscriptions, "upstream ingest: subscribed");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                stats.received.fetch_add(1, Relaxed);
                let hash = fnv1a(&[publish.topic.as_bytes(), &[0], &publish.payload]) as i64;
                let on = connection.load(Relaxed);
                let stored = {
                    let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
                    if !publish.dup && publish.qos != QoS::AtMostOnce && recent.reused(publish.pkid) && recognise {
                        recognise = false;
                        warn!(upstream = %config.client.url,
                            "the upstream broker reuses packet ids soon after they are acknowledged; messages it sends again are stored again (possible duplicates) rather than recognised by id");
                    }
                    recognise && publish.dup && recent.is_stored(publish.pkid, hash)
                };
                let taken = if stored {
                    stats.redelivered.fetch_add(1, Relaxed);
                    stats.duplicates.fetch_add(1, Relaxed);
                    Taken { publish, connection: on, receipt: None, delivery: None }
                } else {
                    if publish.dup {
                        stats.redelivered.fetch_add(1, Relaxed);
                    }
                    let Ok(topic) = TopicName::parse(&publish.topic) else {
                        warn!(topic = %publish.topic, "upstream sent a publish with an invalid topic; acknowledged and dropped");
                        in_flight.count.fetch_add(1, Relaxed);
                        let _ = taken_tx.send(Taken { publish, connection: on, receipt: None, delivery: None });
                        continue;
                    };
                    let qos = if publish.qos == QoS::AtMostOnce { CodecQoS::AtMostOnce } else { CodecQoS::AtLeastOnce };
                    let message = Message::new(topic, publish.payload.clone(), qos, publish.retain);
                    let delivery = (qos != CodecQoS::AtMostOnce).then(|| {
                        next_seq += 1;
                        UpstreamDelivery { node: Arc::clone(&node), packet_id: publish.pkid, hash, seq: next_seq - 1 }
                    });
                    // Waits while the ingest queue is full: the upstream broker is then held back.
                    let receipt = ingest.queue(&source, &message, delivery.clone()).await.receipt;
                    Taken { publish, connection: on, receipt: Some(receipt), delivery }
                };
                in_flight.count.fetch_add(1, Relaxed);
                let _ = taken_tx.send(taken);
            }
            Ok(_) => {}
            Err(e) => {
                stats.connected.store(false, Relaxed);
                if !failing {
                    warn!(upstream = %config.client.url, error = %e, "upstream ingest: connection lost or refused; retrying with backoff");
                    failing = true;
                }
                // What was taken settles before reconnecting: committed ones are remembered, and
                // the copies the broker sends again are recognised and acknowledged then.
                tokio::select! {
                    _ = in_flight.drained() => {}
                    _ = stop.cancelled() => break,
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => break,
                }
                delay = (delay * 2).min(RECONNECT_DELAYS.1);
            }
        }
    }
    // Stopping: what was taken commits (the writer stops after this task), its acknowledgements
    // leave, then a clean DISCONNECT; the session stays on the upstream broker.
    if tokio::time::timeout(STOP_GRACE, in_flight.drained()).await.is_err() {
        warn!("upstream ingest: stopping with readings not yet committed; the upstream broker sends them again");
    }
    drop(taken_tx);
    let _ = acker.await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(STOP_GRACE, async {
        while let Ok(event) = events.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    stats.connected.store(false, Relaxed);
    info!("upstream ingest stopped");
    Ok(())
}

/// Acknowledges taken messages upstream in the order they arrived (MQTT-4.6.0-2), each once its
/// reading is committed.
async fn acknowledge(
    client: AsyncClient,
    mut taken: mpsc::UnboundedReceiver<Taken>,
    recent: Arc<Mutex<Recent>>,
    stats: Arc<UpstreamStats>,
    in_flight: Arc<InFlight>,
    connection: Arc<AtomicU64>,
) {
    while let Some(Taken { publish, connection: on, receipt, delivery }) = taken.recv().await {
        let stored = match receipt {
            None => Ok(()),
            Some(receipt) => receipt.await.unwrap_or(Err(crate::broker::NotStored::Dropped)),
        };
        match stored {
            Ok(()) => {
                if let Some(d) = delivery {
                    recent.lock().unwrap_or_else(|e| e.into_inner()).insert(d.packet_id, d.hash, d.seq);
                }
                if publish.qos != QoS::AtMostOnce && on == connection.load(Relaxed) {
                    let _ = client.ack(&publish).await;
                    stats.acknowledged.fetch_add(1, Relaxed);
                }
            }
            Err(e) => {
                // Not acknowledged: the upstream broker sends it again when this node reconnects.
                warn!(error = %e, topic = %publish.topic, "upstream message not stored; left unacknowledged");
            }
        }
        in_flight.count.fetch_sub(1, Relaxed);
        in_flight.settled.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_recognised_by_id_and_hash_until_it_is_old() {
        let mut recent = Recent::default();
        recent.insert(7, 42, 1);
        assert!(recent.is_stored(7, 42));
        assert!(!recent.is_stored(7, 43), "same id, another message");
        assert!(!recent.is_stored(8, 42));
        for seq in 2..=REMEMBERED as i64 {
            recent.insert(1000 + (seq % 50_000) as u16, seq, seq);
        }
        assert!(recent.is_stored(7, 42), "still among the last {REMEMBERED}");
        recent.insert(9, 9, REMEMBERED as i64 + 1);
        assert!(!recent.is_stored(7, 42), "forgotten after {REMEMBERED} more");
        recent.insert(9, 10, REMEMBERED as i64 + 2);
        assert!(recent.is_stored(9, 10) && !recent.is_stored(9, 9), "an id delivered again holds its latest message");
        assert!(recent.reused(9), "a new message with a remembered id: that id was reused soon");
        assert!(!recent.is_stored(9, 10), "and the old message under it is forgotten");
        assert!(!recent.reused(9));
        recent.clear();
        assert!(recent.by_id.is_empty() && recent.order.is_empty(), "a new session forgets the old one's ids");
    }

    #[test]
    fn subscriptions_are_shared_per_template() {
        let config = UpstreamConfig {
            client: ClientSettings::new("localhost".parse().unwrap()),
            node_id: "a".into(),
            share_group: "roost".into(),
            filters: vec!["iot/+/sensor/+/+".into(), "iot/+/sensor/+".into()],
            max_packet_size: 1 << 20,
        };
        assert_eq!(config.subscriptions(), ["$share/roost/iot/+/sensor/+/+", "$share/roost/iot/+/sensor/+"]);
        assert_eq!(config.client_id(), "roost-a");
    }
}
