//! The packets of a connected session: PUBLISH and its QoS handshakes both ways, SUBSCRIBE
//! and UNSUBSCRIBE, and moving queued messages into the write buffer within the in-flight
//! window. What must wait for a commit goes through the connection's [`AckQueue`].

use super::{Connection, End};
use crate::broker::acks::PendingAck;
use crate::broker::durability::{StateChange, MAX_STORED_FILTER};
use crate::broker::mailbox::{Delivery, PushOutcome};
use crate::broker::sessions::{Outbound, SessionState};
use crate::broker::stats::BrokerStats;
use crate::broker::Message;
use mqtt_codec::{Ack, Packet, PacketId, Publish, QoS, SubAck, Subscribe, SubscribeOutcome, TopicFilter, UnsubAck, Unsubscribe};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    pub(super) async fn handle_packet(&mut self, packet: Packet, state: &mut SessionState, username: Option<&str>) -> Result<(), End> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish, state, username).await?,
            Packet::PubAck(ack) => {
                // Unknown ids are tolerated: the client may be answering a resend.
                self.remove_outbound(state, ack.packet_id, false);
            }
            Packet::PubRec(ack) => {
                let mut released = None;
                if let Some(o) = state.outbound.iter_mut().find(|o| o.packet_id == ack.packet_id && !o.released) {
                    o.released = true;
                    released = o.delivery.seq;
                }
                // [MQTT-4.3.3-1] answer PUBREC with PUBREL; for a persistent session only once
                // the release is stored (a resend after a restart must be a PUBREL, not the
                // PUBLISH again).
                let pubrel = Packet::PubRel(Ack::new(ack.packet_id));
                match released {
                    Some(seq) => {
                        self.broker.durable.record(StateChange::Released { seq });
                        self.pending_acks.push(PendingAck::after_commit(pubrel, self.broker.durable.committed()));
                    }
                    None => self.queue(pubrel),
                }
            }
            Packet::PubComp(ack) => {
                self.remove_outbound(state, ack.packet_id, true);
            }
            Packet::PubRel(ack) => {
                // [MQTT-4.3.3-2] the id may be reused once released; answer PUBCOMP even for an
                // unknown id, since our PUBCOMP may have been lost.
                if state.inbound_qos2.remove(&ack.packet_id) && !state.clean {
                    let client_id = Arc::clone(&state.client_id);
                    self.broker.durable.record(StateChange::InboundReleased { client_id, packet_id: ack.packet_id });
                }
                self.pending_acks.push(PendingAck::now(Packet::PubComp(Ack::new(ack.packet_id))));
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe, state, username),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(unsubscribe, state),
            // [MQTT-3.12.4-1]
            Packet::PingReq => self.queue(Packet::PingResp),
            // [MQTT-3.14.4-3] the will is discarded.
            Packet::Disconnect(_) => return Err(End::Disconnect),
            // [MQTT-3.1.0-2]
            Packet::Connect(_) => return Err(End::Protocol("[MQTT-3.1.0-2] second CONNECT on a connection".into())),
            other => {
                return Err(End::Protocol(format!("[MQTT-4.8.0-1] a client may not send {}", other.name())));
            }
        }
        Ok(())
    }

    async fn handle_publish(&mut self, publish: Publish, state: &mut SessionState, username: Option<&str>) -> Result<(), End> {
        BrokerStats::incr(&self.broker.stats.messages_received);
        let topic = publish.topic.ok_or_else(|| End::Protocol("[MQTT-4.7.3-1] PUBLISH without a topic".into()))?;
        let message = Message { topic, payload: publish.payload, qos: publish.qos, retain: publish.retain };
        let allowed = self.broker.auth.may_publish(username, &message.topic);
        let packet_id = publish.packet_id;
        let mut stored = None;
        if let (QoS::AtLeastOnce, Some(id)) = (publish.qos, packet_id) {
            let hash = content_hash(&message);
            if publish.dup && state.stored_qos1.get(&id) == Some(&hash) {
                // A resend of a publish already committed (its PUBACK was lost): acknowledge
                // again, store and deliver nothing new.
                self.pending_acks.push(PendingAck::now(Packet::PubAck(Ack::new(id))));
                return Ok(());
            }
            stored = Some((id, hash));
        }
        let reply = match (publish.qos, packet_id) {
            (QoS::AtMostOnce, _) => None,
            (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(Ack::new(id))),
            (QoS::ExactlyOnce, Some(id)) => {
                if !state.inbound_qos2.insert(id) {
                    // A resend of a publish we already have: acknowledge again, route nothing
                    // [MQTT-4.3.3-2].
                    self.pending_acks.push(PendingAck::now(Packet::PubRec(Ack::new(id))));
                    return Ok(());
                }
                if !state.clean {
                    // Kept across a restart too: the PUBREC below waits for it to be stored.
                    let client_id = Arc::clone(&state.client_id);
                    self.broker.durable.record(StateChange::InboundQos2 { client_id, packet_id: id });
                }
                Some(Packet::PubRec(Ack::new(id)))
            }
            _ => return Err(End::Protocol("[MQTT-2.3.1-1] QoS > 0 PUBLISH without a packet identifier".into())),
        };
        let qos2_kept = publish.qos == QoS::ExactlyOnce && !state.clean;
        let (receipt, durable) = if allowed {
            let receipt = if self.broker.ingest.wants(message.topic.as_str()) {
                self.broker.ingest.offer(&state.client_id, &message).await
            } else {
                None
            };
            let routed = self.broker.router.route(Arc::new(message), &self.broker.stats, &self.broker.durable);
            self.congestion = self.congestion.max(routed.congestion);
            (receipt, routed.durable)
        } else {
            // 3.1.1 has no negative acknowledgement: a refused publish is acknowledged and
            // dropped (and counted), so the client does not resend it forever.
            BrokerStats::incr(&self.broker.stats.publishes_denied);
            debug!(client_id = %state.client_id, topic = %message.topic, "publish denied by ACL");
            (None, false)
        };
        if let Some(reply) = reply {
            let stored = if receipt.is_some() { stored } else { None };
            // Acknowledged means stored: what this publish changed in the broker's durable
            // state (a retained message, messages queued for persistent sessions) is
            // committed first.
            let committed = if durable || qos2_kept { self.broker.durable.committed() } else { None };
            self.pending_acks.push(PendingAck { reply, receipt, committed, stored, then_retained: Vec::new() });
        }
        Ok(())
    }

    fn handle_subscribe(&mut self, subscribe: Subscribe, state: &mut SessionState, username: Option<&str>) {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for (raw, options) in &subscribe.filters {
            let filter = match TopicFilter::parse(raw) {
                Ok(_) if raw.chars().count() > MAX_STORED_FILTER => {
                    info!(client_id = %state.client_id, limit = MAX_STORED_FILTER, "topic filter longer than the limit (characters); refused");
                    codes.push(SubscribeOutcome::Refused);
                    continue;
                }
                Ok(f) if state.subscriptions.len() >= self.broker.config.max_subscriptions && !state.subscriptions.contains_key(&f) => {
                    info!(client_id = %state.client_id, filter = %raw, limit = self.broker.config.max_subscriptions, "subscription limit reached; refused");
                    codes.push(SubscribeOutcome::Refused);
                    continue;
                }
                Ok(f) if self.broker.auth.may_subscribe(username, &f) => f,
                Ok(_) => {
                    BrokerStats::incr(&self.broker.stats.subscriptions_denied);
                    debug!(client_id = %state.client_id, filter = %raw, "subscription denied by ACL");
                    codes.push(SubscribeOutcome::Refused);
                    continue;
                }
                Err(e) => {
                    debug!(client_id = %state.client_id, filter = %raw, reason = %e, "invalid topic filter");
                    codes.push(SubscribeOutcome::Refused);
                    continue;
                }
            };
            let qos = options.qos;
            self.broker.router.subscribe(&filter, state.id, qos, Arc::clone(&state.mailbox));
            retained.extend(self.broker.router.retained_matching(&filter).into_iter().map(|m| (m, qos)));
            if let Some(owner) = state.mailbox.owner() {
                let client_id = Arc::clone(&owner.client_id);
                self.broker.durable.record(StateChange::Subscribed { client_id, filter: filter.clone(), qos });
            }
            state.subscriptions.insert(filter, qos);
            codes.push(SubscribeOutcome::Granted(qos));
        }
        // [MQTT-3.8.4-1, -5] one code per filter, in order; a persistent session's
        // subscriptions are stored first.
        let codes = codes.into_iter().map(SubscribeOutcome::code).collect();
        let suback = Packet::SubAck(SubAck { packet_id: subscribe.packet_id, codes, properties: Default::default() });
        match state.mailbox.owner().and_then(|_| self.broker.durable.committed()) {
            Some(committed) => {
                // The retained messages follow the SUBACK, as they do when it is sent at once.
                let then_retained = retained;
                self.pending_acks.push(PendingAck { then_retained, ..PendingAck::after_commit(suback, Some(committed)) });
            }
            None => {
                self.queue(suback);
                self.push_retained(state, retained);
            }
        }
    }

    /// Queues retained messages for a new subscription, each at the lower of its QoS and the
    /// granted one.
    pub(super) fn push_retained(&self, state: &SessionState, retained: Vec<(Arc<Message>, QoS)>) {
        for (message, granted) in retained {
            let qos = granted.min(message.qos);
            // [MQTT-3.3.1-8] retained messages go out with the retain flag set.
            let delivery = Delivery { message, qos, retain: true, seq: None };
            let (outcome, _) = crate::broker::router::push_delivery(&state.mailbox, delivery, &self.broker.durable);
            if let PushOutcome::DroppedQoS0 = outcome {
                BrokerStats::incr(&self.broker.stats.dropped_qos0);
            }
        }
    }

    fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe, state: &mut SessionState) {
        for raw in &unsubscribe.filters {
            if let Ok(filter) = TopicFilter::parse(raw) {
                self.broker.router.unsubscribe(&filter, state.id);
                if state.subscriptions.remove(&filter).is_some() {
                    if let Some(owner) = state.mailbox.owner() {
                        let client_id = Arc::clone(&owner.client_id);
                        self.broker.durable.record(StateChange::Unsubscribed { client_id, filter });
                    }
                }
            }
        }
        // [MQTT-3.10.4-4, -5] UNSUBACK even when nothing matched.
        let unsuback = Packet::UnsubAck(UnsubAck { packet_id: unsubscribe.packet_id, codes: Vec::new(), properties: Default::default() });
        // A persistent session's UNSUBACK once the removal is stored.
        match state.mailbox.owner().and_then(|_| self.broker.durable.committed()) {
            Some(committed) => self.pending_acks.push(PendingAck::after_commit(unsuback, Some(committed))),
            None => self.queue(unsuback),
        }
    }

    /// Moves what the session may send now (within its in-flight window) into the write buffer.
    pub(super) fn drain_mailbox(&mut self, state: &mut SessionState) -> Result<(), End> {
        let window = self.broker.config.max_inflight.saturating_sub(state.outbound.len());
        let mut batch = std::mem::take(&mut self.scratch);
        let overflowed = state.mailbox.drain_into(&mut batch, window);
        for delivery in batch.drain(..) {
            let packet_id = (delivery.qos != QoS::AtMostOnce).then(|| state.next_packet_id());
            let publish = publish_packet(&delivery, packet_id, false);
            match (delivery.seq, packet_id) {
                (Some(seq), Some(packet_id)) if delivery.qos == QoS::ExactlyOnce => {
                    // Exactly once across a restart: the packet id is stored before the PUBLISH
                    // leaves, so that a resend uses it again [MQTT-4.3.3-2].
                    self.broker.durable.record(StateChange::Sent { seq, packet_id });
                    self.pending_acks.push(PendingAck::after_commit(publish, self.broker.durable.committed()));
                }
                _ => self.queue(publish),
            }
            if let Some(packet_id) = packet_id {
                state.push_outbound(Outbound { packet_id, delivery, released: false });
            }
            BrokerStats::incr(&self.broker.stats.messages_sent);
        }
        self.scratch = batch;
        if overflowed {
            return Err(End::QueueOverflow);
        }
        Ok(())
    }

    /// Forgets an outgoing message the client acknowledged (PUBACK for QoS 1, PUBCOMP for
    /// QoS 2); a persistent session's copy is deleted too.
    fn remove_outbound(&self, state: &mut SessionState, packet_id: PacketId, released: bool) {
        if let Some(pos) = state.outbound.iter().position(|o| o.packet_id == packet_id) {
            let expected_qos = if released { QoS::ExactlyOnce } else { QoS::AtLeastOnce };
            let outbound = &state.outbound[pos];
            if outbound.delivery.qos == expected_qos && outbound.released == released {
                if let Some(seq) = state.remove_outbound_at(pos).and_then(|o| o.delivery.seq) {
                    self.broker.durable.record(StateChange::Delivered { seq });
                }
            }
        }
    }
}

fn content_hash(message: &Message) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message.topic.as_str().hash(&mut hasher);
    message.payload.hash(&mut hasher);
    hasher.finish()
}

pub(super) fn publish_packet(delivery: &Delivery, packet_id: Option<PacketId>, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos: delivery.qos,
        retain: delivery.retain,
        topic: Some(delivery.message.topic.clone()),
        packet_id,
        payload: delivery.message.payload.clone(),
        properties: Default::default(),
    })
}
