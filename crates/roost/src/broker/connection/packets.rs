//! The packets of a connected session: PUBLISH and its QoS handshakes both ways, SUBSCRIBE
//! and UNSUBSCRIBE, and moving queued messages into the write buffer within the in-flight
//! window. What must wait for a commit goes through the connection's [`AckQueue`]. MQTT 5.0
//! adds reason codes, properties, topic aliases and flow control (see `v5`).

use super::v5::{reason, server_receive_maximum};
use super::{Connection, End};
use crate::broker::acks::PendingAck;
use crate::broker::durability::{StateChange, MAX_STORED_FILTER};
use crate::broker::mailbox::{Delivery, DeliveryExtra, PushOutcome};
use crate::broker::sessions::{unix_ms, Outbound, SessionState};
use crate::broker::stats::BrokerStats;
use crate::broker::subscription::{SharedFilter, Subscription};
use crate::broker::{Message, MessageProperties};
use mqtt_codec::{
    encoded_len, Ack, Packet, PacketId, Properties, Property, Publish, QoS, SubAck, Subscribe, SubscribeOutcome, TopicFilter, TopicName,
    UnsubAck, Unsubscribe,
};
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Handles a packet, but for a PUBLISH, which it hands back for `handle_publish`: the one
    /// packet whose handling may wait (for room in the ingest queue).
    pub(super) fn handle_packet(
        &mut self,
        packet: Packet,
        state: &mut SessionState,
        username: Option<&str>,
    ) -> Result<Option<Publish>, End> {
        match packet {
            Packet::Publish(publish) => return Ok(Some(publish)),
            Packet::PubAck(ack) => {
                // Unknown ids are tolerated: the client may be answering a resend.
                self.remove_outbound(state, ack.packet_id, false);
            }
            Packet::PubRec(ack) if ack.reason >= 0x80 => {
                // 5.0: a PUBREC with an error code ends the exchange; no PUBREL (§4.3.3).
                if let Some(pos) = state.outbound.iter().position(|o| o.packet_id == ack.packet_id && !o.released) {
                    self.forget_outbound_at(state, pos);
                }
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
                // unknown id, since our PUBCOMP may have been lost (5.0 says so: 0x92).
                let known = state.inbound_qos2.remove(&ack.packet_id);
                if let Some(v5) = self.v5.as_deref_mut() {
                    v5.unreleased_qos2.remove(&ack.packet_id);
                }
                if known && !state.clean {
                    let client_id = Arc::clone(&state.client_id);
                    self.broker.durable.record(StateChange::InboundReleased { client_id, packet_id: ack.packet_id });
                }
                let code = if known { 0 } else { reason::PACKET_ID_NOT_FOUND };
                self.pending_acks.push(PendingAck::now(Packet::PubComp(self.ack(ack.packet_id, code, None))));
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe, state, username)?,
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(unsubscribe, state),
            // [MQTT-3.12.4-1]
            Packet::PingReq => self.queue(Packet::PingResp),
            Packet::Disconnect(disconnect) => {
                if let Some(v5) = self.v5.as_deref_mut() {
                    v5.update_session_expiry(&disconnect.properties, &self.broker.config).map_err(End::protocol)?;
                    state.clean = v5.session_expiry == 0;
                }
                // [MQTT-3.14.4-3] the will is discarded after a normal disconnection (0x00) only;
                // a 5.0 client's 0x04 (disconnect with will) or error code keeps it [MQTT-3.1.2-8].
                return Err(End::Disconnect { will: disconnect.reason != 0 });
            }
            // [MQTT-3.1.0-2]
            Packet::Connect(_) => return Err(End::protocol("[MQTT-3.1.0-2] second CONNECT on a connection")),
            // No enhanced authentication was started: an AUTH is out of place [MQTT-4.12.0-?].
            Packet::Auth(_) => return Err(End::protocol("AUTH without enhanced authentication (§4.12)")),
            other => {
                return Err(End::protocol(format!("[MQTT-4.8.0-1] a client may not send {}", other.name())));
            }
        }
        Ok(None)
    }

    /// An acknowledgement with a 5.0 reason code, and a reason string if the client wants
    /// problem information [MQTT-3.1.2-29]. Plain for 3.1.1.
    fn ack(&self, packet_id: PacketId, code: u8, why: Option<&str>) -> Ack {
        match &self.v5 {
            Some(v5) => {
                let properties = match why {
                    Some(why) if v5.problem_information => Properties(vec![Property::ReasonString(why.to_owned())]),
                    _ => Properties::default(),
                };
                Ack { packet_id, reason: code, properties }
            }
            None => Ack::new(packet_id),
        }
    }

    /// The topic of a PUBLISH, through the topic aliases of a 5.0 connection.
    fn publish_topic(&mut self, topic: Option<TopicName>, properties: &Properties) -> Result<TopicName, End> {
        match self.v5.as_deref_mut() {
            Some(v5) => v5.resolve_topic(topic, properties).map_err(|(code, why)| End::violation(code, why)),
            None => topic.ok_or_else(|| End::protocol("[MQTT-4.7.3-1] PUBLISH without a topic")),
        }
    }

    pub(super) async fn handle_publish(&mut self, publish: Publish, state: &mut SessionState, username: Option<&str>) -> Result<(), End> {
        BrokerStats::incr(&self.broker.stats.messages_received);
        if self.v5.is_some() && publish.properties.0.iter().any(|p| matches!(p, Property::SubscriptionIdentifier(_))) {
            return Err(End::protocol("[MQTT-3.3.4-6] a PUBLISH from a client with a subscription identifier"));
        }
        let topic = self.publish_topic(publish.topic, &publish.properties)?;
        let properties = match self.v5 {
            Some(_) => MessageProperties::from_publish(&publish.properties, unix_ms()),
            None => None,
        };
        let message = Message { topic, payload: publish.payload, qos: publish.qos, retain: publish.retain, properties };
        let allowed = self.broker.auth.may_publish(username, &message.topic);
        let packet_id = publish.packet_id;
        if publish.qos != QoS::AtMostOnce && packet_id.is_none() {
            return Err(End::protocol("[MQTT-2.3.1-1] QoS > 0 PUBLISH without a packet identifier"));
        }
        let mut stored = None;
        if let (QoS::AtLeastOnce, Some(id)) = (publish.qos, packet_id) {
            let hash = content_hash(&message);
            if publish.dup && state.stored_qos1.holds(id, hash) {
                // A resend of a publish already committed (its PUBACK was lost): acknowledge
                // again, store and deliver nothing new.
                self.pending_acks.push(PendingAck::now(Packet::PubAck(Ack::new(id))));
                return Ok(());
            }
            stored = Some((id, hash));
        }
        if let (QoS::ExactlyOnce, Some(id)) = (publish.qos, packet_id) {
            if state.inbound_qos2.contains(&id) {
                // A resend of a publish we already have: acknowledge again, route nothing
                // [MQTT-4.3.3-2].
                self.pending_acks.push(PendingAck::now(Packet::PubRec(Ack::new(id))));
                return Ok(());
            }
        }
        if let (true, Some(v5)) = (publish.qos != QoS::AtMostOnce, &self.v5) {
            // [MQTT-3.3.4-7] a client must not send more unacknowledged QoS 1/2 publishes than
            // the server's receive maximum; one that does is disconnected with 0x93 (§3.3.4).
            let unacknowledged = self.pending_acks.pubacks() + v5.unreleased_qos2.len();
            if unacknowledged >= usize::from(server_receive_maximum(&self.broker.config)) {
                return Err(End::violation(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    "more unacknowledged QoS 1/2 publishes than the receive maximum",
                ));
            }
        }
        if !allowed {
            BrokerStats::incr(&self.broker.stats.publishes_denied);
            // Once per user (a client id may be new on every connection).
            let who: Arc<str> = username.map_or_else(|| Arc::clone(&state.client_id), Arc::from);
            if self.broker.denials_logged.first(who) {
                // A board with a wrong owner in its topics hears nothing over 3.1.1: say it here.
                warn!(client_id = %state.client_id, ?username, topic = %message.topic,
                    "publish denied by the ACL: this user may not publish there; not stored (logged once per user, counted in publishes_denied)");
            } else {
                debug!(client_id = %state.client_id, topic = %message.topic, "publish denied by ACL");
            }
        }
        if self.v5.is_some() {
            // 5.0 says no: 0x87 for a publish the ACL denies, 0x99 for a payload that is not the
            // UTF-8 its format indicator promises (§3.3.2.3.2). Nothing is stored or routed.
            let refusal = if !allowed {
                Some((reason::NOT_AUTHORIZED, "not authorized to publish on this topic"))
            } else if declares_utf8(&message) && std::str::from_utf8(&message.payload).is_err() {
                Some((reason::PAYLOAD_FORMAT_INVALID, "payload format indicator 1 but the payload is not UTF-8"))
            } else {
                None
            };
            if let Some((code, why)) = refusal {
                if let Some(id) = packet_id {
                    let ack = self.ack(id, code, Some(why));
                    let reply = if publish.qos == QoS::AtLeastOnce { Packet::PubAck(ack) } else { Packet::PubRec(ack) };
                    self.pending_acks.push(PendingAck::now(reply));
                }
                return Ok(());
            }
        }
        let reply = match (publish.qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(Ack::new(id))),
            (QoS::ExactlyOnce, Some(id)) => {
                state.inbound_qos2.insert(id);
                if let Some(v5) = self.v5.as_deref_mut() {
                    v5.unreleased_qos2.insert(id);
                }
                if !state.clean {
                    // Kept across a restart too: the PUBREC below waits for it to be stored.
                    let client_id = Arc::clone(&state.client_id);
                    self.broker.durable.record(StateChange::InboundQos2 { client_id, packet_id: id });
                }
                Some(Packet::PubRec(Ack::new(id)))
            }
            _ => None,
        };
        let qos2_kept = publish.qos == QoS::ExactlyOnce && !state.clean;
        let (offered, durable) = if allowed {
            let offered = if self.broker.ingest.wants(message.topic.as_str()) {
                self.broker.ingest.offer(&state.client_id, &message).await
            } else {
                None
            };
            // A 5.0 publish that is no reading is refused (QoS 1/2: 0x99 below; QoS 0 has no
            // acknowledgement to say so): it is not delivered either (still recorded in
            // `rejects`).
            let refused = self.v5.is_some() && offered.as_ref().is_some_and(|o| o.quarantined.is_some());
            if refused {
                (offered, false)
            } else {
                let routed = self.broker.router.route(Arc::new(message), Some(state.id), &self.broker.stats, &self.broker.durable);
                self.congestion = self.congestion.max(routed.congestion);
                (offered, routed.durable)
            }
        } else {
            // 3.1.1 has no negative acknowledgement: a refused publish is acknowledged and
            // dropped (and counted), so the client does not resend it forever.
            (None, false)
        };
        if let Some(mut reply) = reply {
            let (receipt, quarantined) = match offered {
                Some(offered) => (Some(offered.receipt), offered.quarantined),
                None => (None, None),
            };
            if let (Some(why), Some(id), true) = (quarantined, packet_id, self.v5.is_some()) {
                // 5.0: still recorded in `rejects`, and the client hears it was not a reading.
                let ack = self.ack(id, reason::PAYLOAD_FORMAT_INVALID, Some(&why));
                reply = match reply {
                    Packet::PubAck(_) => Packet::PubAck(ack),
                    _ => {
                        // A PUBREC with an error code ends the QoS 2 exchange (no PUBREL).
                        state.inbound_qos2.remove(&id);
                        if let Some(v5) = self.v5.as_deref_mut() {
                            v5.unreleased_qos2.remove(&id);
                        }
                        if !state.clean {
                            let client_id = Arc::clone(&state.client_id);
                            self.broker.durable.record(StateChange::InboundReleased { client_id, packet_id: id });
                        }
                        Packet::PubRec(ack)
                    }
                };
            }
            let stored = if receipt.is_some() { stored } else { None };
            // Acknowledged means stored: what this publish changed in the broker's durable
            // state (a retained message, messages queued for persistent sessions) is
            // committed first.
            let committed = if durable || qos2_kept { self.broker.durable.committed() } else { None };
            self.pending_acks.push(PendingAck { reply, receipt, committed, stored, then_retained: Vec::new() });
        }
        Ok(())
    }

    fn handle_subscribe(&mut self, subscribe: Subscribe, state: &mut SessionState, username: Option<&str>) -> Result<(), End> {
        let id = subscription_identifier(&subscribe.properties)?;
        // Protocol errors end the connection before any filter of the packet is subscribed.
        for (raw, options) in &subscribe.filters {
            if options.retain_handling > 2 {
                return Err(End::protocol("retain handling 3 (§3.8.3.1)"));
            }
            let shared = raw.starts_with("$share/");
            if shared && options.no_local {
                return Err(End::protocol("[MQTT-3.8.3-4] no local set on a shared subscription"));
            }
        }
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
                    codes.push(SubscribeOutcome::QuotaExceeded);
                    continue;
                }
                Ok(f) => f,
                Err(e) => {
                    debug!(client_id = %state.client_id, filter = %raw, reason = %e, "invalid topic filter");
                    codes.push(SubscribeOutcome::TopicFilterInvalid);
                    continue;
                }
            };
            let shared = match SharedFilter::parse(&filter) {
                None => None,
                Some(Ok(shared)) => Some(shared),
                Some(Err(why)) => {
                    debug!(client_id = %state.client_id, filter = %raw, why, "invalid shared subscription");
                    codes.push(SubscribeOutcome::TopicFilterInvalid);
                    continue;
                }
            };
            // The ACL judges the filter a shared subscription shares.
            let acl_filter = shared.as_ref().map_or(&filter, |s| &s.filter);
            if !self.broker.auth.may_subscribe(username, acl_filter) {
                BrokerStats::incr(&self.broker.stats.subscriptions_denied);
                debug!(client_id = %state.client_id, filter = %raw, "subscription denied by ACL");
                codes.push(SubscribeOutcome::NotAuthorized);
                continue;
            }
            let qos = options.qos;
            let subscription = Subscription { qos, no_local: options.no_local, retain_as_published: options.retain_as_published, id };
            let existed = self.broker.router.is_subscribed(&filter, state.id);
            self.broker.router.subscribe(&filter, state.id, subscription, Arc::clone(&state.mailbox));
            // Retained messages [MQTT-3.3.1-9, -10, -11]: per retain handling, and never on a
            // shared subscription.
            let send_retained = shared.is_none() && (options.retain_handling == 0 || (options.retain_handling == 1 && !existed));
            if send_retained {
                let matching = self.broker.router.retained_matching(&filter, &self.broker.durable);
                retained.extend(matching.into_iter().map(|m| (m, subscription)));
            }
            if let Some(owner) = state.mailbox.owner() {
                let client_id = Arc::clone(&owner.client_id);
                self.broker.durable.record(StateChange::Subscribed { client_id, filter: filter.clone(), subscription });
            }
            state.subscriptions.insert(filter, subscription);
            codes.push(SubscribeOutcome::Granted(qos));
        }
        // [MQTT-3.8.4-1, -5] one code per filter, in order; a persistent session's
        // subscriptions are stored first.
        let codes = codes.into_iter().map(|outcome| outcome.code(self.version)).collect();
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
        Ok(())
    }

    /// Queues retained messages for a new subscription, each at the lower of its QoS and the
    /// granted one, with the subscription's identifier.
    pub(super) fn push_retained(&self, state: &SessionState, retained: Vec<(Arc<Message>, Subscription)>) {
        for (message, subscription) in retained {
            let qos = subscription.qos.min(message.qos);
            let extra = subscription.id.map(|id| Box::new(DeliveryExtra { subscription_ids: vec![id.get()], shared: None }));
            // [MQTT-3.3.1-8] retained messages go out with the retain flag set.
            let delivery = Delivery { message, qos, retain: true, seq: None, extra };
            let (outcome, _) = crate::broker::router::push_delivery(&state.mailbox, delivery, &self.broker.durable);
            if let PushOutcome::DroppedQoS0 = outcome {
                BrokerStats::incr(&self.broker.stats.dropped_qos0);
            }
        }
    }

    fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe, state: &mut SessionState) {
        let mut codes = Vec::with_capacity(unsubscribe.filters.len());
        for raw in &unsubscribe.filters {
            let Ok(filter) = TopicFilter::parse(raw) else {
                codes.push(reason::TOPIC_FILTER_INVALID);
                continue;
            };
            self.broker.router.unsubscribe(&filter, state.id);
            if state.subscriptions.remove(&filter).is_some() {
                codes.push(0);
                if let Some(owner) = state.mailbox.owner() {
                    let client_id = Arc::clone(&owner.client_id);
                    self.broker.durable.record(StateChange::Unsubscribed { client_id, filter });
                }
            } else {
                codes.push(reason::NO_SUBSCRIPTION_EXISTED);
            }
        }
        // [MQTT-3.10.4-4, -5] UNSUBACK even when nothing matched; 5.0 says per filter [MQTT-3.11.3-1].
        let codes = if self.v5.is_some() { codes } else { Vec::new() };
        let unsuback = Packet::UnsubAck(UnsubAck { packet_id: unsubscribe.packet_id, codes, properties: Default::default() });
        // A persistent session's UNSUBACK once the removal is stored.
        match state.mailbox.owner().and_then(|_| self.broker.durable.committed()) {
            Some(committed) => self.pending_acks.push(PendingAck::after_commit(unsuback, Some(committed))),
            None => self.queue(unsuback),
        }
    }

    /// How many QoS 1/2 messages may be in flight to the client: the server's window, and a 5.0
    /// client's receive maximum [MQTT-3.3.4-9].
    pub(super) fn inflight_limit(&self) -> usize {
        let window = self.broker.config.max_inflight;
        self.v5.as_ref().map_or(window, |v5| window.min(usize::from(v5.client_receive_maximum)))
    }

    /// Sends again what a resumed session had in flight, while the client's receive maximum
    /// leaves room (the messages not sent again yet count as in flight).
    pub(super) fn resend_within_window(&mut self, state: &mut SessionState) {
        let limit = self.inflight_limit();
        let mut index = 0;
        while self.pending_resends > 0 && index < state.outbound.len() && state.outbound.len() - self.pending_resends < limit {
            if !state.outbound[index].unsent {
                index += 1;
                continue;
            }
            state.outbound[index].unsent = false;
            self.pending_resends -= 1;
            let outbound = &state.outbound[index];
            let packet = if outbound.released {
                Some(Packet::PubRel(Ack::new(outbound.packet_id)))
            } else {
                self.publish_for(&outbound.delivery, Some(outbound.packet_id), true, false)
            };
            match packet {
                Some(packet) => {
                    self.queue(packet);
                    index += 1;
                }
                None => {
                    // [MQTT-3.1.2-25] too large for the client: dropped as if delivered.
                    BrokerStats::incr(&self.broker.stats.dropped_too_large);
                    if let Some(seq) = state.remove_outbound_at(index).and_then(|o| o.delivery.seq) {
                        self.broker.durable.record(StateChange::Delivered { seq });
                    }
                }
            }
        }
    }

    /// Moves what the session may send now (within its in-flight window) into the write buffer.
    pub(super) fn drain_mailbox(&mut self, state: &mut SessionState) -> Result<(), End> {
        if self.pending_resends > 0 {
            self.resend_within_window(state);
        }
        let window = self.inflight_limit().saturating_sub(state.outbound.len());
        let mut batch = std::mem::take(&mut self.scratch);
        let overflowed = state.mailbox.drain_into(&mut batch, window);
        let now = if self.v5.is_some() || batch.iter().any(|d| d.message.properties.is_some()) { unix_ms() } else { 0 };
        for delivery in batch.drain(..) {
            if delivery.message.expired(now) {
                // [MQTT-3.3.2-5] an expired message is not delivered.
                if let Some(seq) = delivery.seq {
                    self.broker.durable.record(StateChange::Delivered { seq });
                }
                continue;
            }
            let packet_id = (delivery.qos != QoS::AtMostOnce).then(|| state.next_packet_id());
            let waits_for_commit = delivery.seq.is_some() && delivery.qos == QoS::ExactlyOnce;
            // A packet held back for a commit must not carry a new topic alias: later packets
            // written before it would use the alias first.
            let Some(publish) = self.publish_for(&delivery, packet_id, false, !waits_for_commit) else {
                // [MQTT-3.1.2-25] too large for the client: dropped as if delivered.
                debug!(client_id = %state.client_id, topic = %delivery.message.topic, "message larger than the client's maximum packet size; dropped");
                BrokerStats::incr(&self.broker.stats.dropped_too_large);
                if let Some(seq) = delivery.seq {
                    self.broker.durable.record(StateChange::Delivered { seq });
                }
                continue;
            };
            match (delivery.seq, packet_id) {
                (Some(seq), Some(packet_id)) if waits_for_commit => {
                    // Exactly once across a restart: the packet id is stored before the PUBLISH
                    // leaves, so that a resend uses it again [MQTT-4.3.3-2].
                    self.broker.durable.record(StateChange::Sent { seq, packet_id });
                    self.pending_acks.push(PendingAck::after_commit(publish, self.broker.durable.committed()));
                }
                _ => self.queue(publish),
            }
            if let Some(packet_id) = packet_id {
                state.push_outbound(Outbound { packet_id, delivery, released: false, unsent: false });
            }
            BrokerStats::incr(&self.broker.stats.messages_sent);
        }
        self.scratch = batch;
        if overflowed {
            return Err(End::QueueOverflow);
        }
        Ok(())
    }

    /// The PUBLISH that sends `delivery`. To a 5.0 client it carries the message's properties,
    /// what is left of its expiry interval [MQTT-3.3.2-6], its subscription identifiers
    /// [MQTT-3.3.4-3], and (with `use_alias`) a topic alias. `None` if it is larger than the
    /// client's maximum packet size [MQTT-3.1.2-24].
    pub(super) fn publish_for(&mut self, delivery: &Delivery, packet_id: Option<PacketId>, dup: bool, use_alias: bool) -> Option<Packet> {
        let mut publish = Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: Some(delivery.message.topic.clone()),
            packet_id,
            payload: delivery.message.payload.clone(),
            properties: Properties::default(),
        };
        let Some(v5) = self.v5.as_deref_mut() else { return Some(Packet::Publish(publish)) };
        let properties = &mut publish.properties.0;
        if let Some(kept) = delivery.message.properties.as_deref() {
            properties.extend(kept.forwarded.0.iter().cloned());
            if let Some(seconds) = kept.remaining_expiry(unix_ms()) {
                properties.push(Property::MessageExpiryInterval(seconds));
            }
        }
        if let Some(extra) = delivery.extra.as_deref() {
            properties.extend(extra.subscription_ids.iter().map(|&id| Property::SubscriptionIdentifier(id)));
        }
        let max = v5.client_maximum_packet_size;
        let mut packet = Packet::Publish(publish);
        if encoded_len(&packet, self.version) > max {
            return None;
        }
        if let (Some((alias, new)), Packet::Publish(publish)) =
            (v5.outbound_alias(&delivery.message.topic).filter(|_| use_alias), &mut packet)
        {
            publish.properties.0.push(Property::TopicAlias(alias));
            // §3.3.2.3.4: an alias the client knows stands for the topic.
            let topic = if new { None } else { publish.topic.take() };
            // An alias can make a packet larger (a new one; a known one for a very short topic):
            // it is used only if the packet still fits.
            if encoded_len(&packet, self.version) <= max {
                if new {
                    v5.remember_alias(&delivery.message.topic, alias);
                }
            } else if let Packet::Publish(publish) = &mut packet {
                publish.properties.0.pop();
                if topic.is_some() {
                    publish.topic = topic;
                }
            }
        }
        Some(packet)
    }

    /// At the end of a connection: the shared-subscription messages this session has queued,
    /// or was sent at QoS 1 and did not acknowledge, go to another member of their shared
    /// subscription (§4.8.2), each recorded as done here only once another member took it; what
    /// no other member takes stays with the session. A QoS 2 message whose delivery started
    /// stays too: it is completed with this client [MQTT-4.8.2-4, -5].
    pub(super) fn hand_over_shared(&self, state: &mut SessionState) {
        if state.clean {
            // Leaving for good: out of its shared subscriptions first, so that nothing new is
            // chosen for it while it leaves.
            for filter in state.subscriptions.keys().filter(|f| SharedFilter::parse(f).is_some()) {
                self.broker.router.unsubscribe(filter, state.id);
            }
        }
        let router = &self.broker.router;
        let durable = &self.broker.durable;
        let session = state.id;
        let hand_over =
            |delivery: &Delivery| delivery.shared().is_some_and(|key| router.redeliver_shared(key, &delivery.message, session, durable));
        let mut index = 0;
        while index < state.outbound.len() {
            let outbound = &state.outbound[index];
            if outbound.delivery.qos == QoS::AtLeastOnce && hand_over(&outbound.delivery) {
                if let Some(seq) = state.remove_outbound_at(index).and_then(|o| o.delivery.seq) {
                    durable.record(StateChange::Delivered { seq });
                }
                // (The connection is over: `pending_resends` no longer matters.)
            } else {
                index += 1;
            }
        }
        let mut kept = Vec::new();
        for delivery in state.mailbox.take_shared() {
            if hand_over(&delivery) {
                if let Some(seq) = delivery.seq {
                    durable.record(StateChange::Delivered { seq });
                }
            } else {
                debug!(client_id = %state.client_id, "no other member took a shared message; it stays queued here");
                kept.push(delivery);
            }
        }
        // Back at the head of the queue, whatever its limit (its stored copy, if any, was never
        // removed).
        state.mailbox.put_back(kept);
    }

    /// Forgets an outgoing message the client acknowledged (PUBACK for QoS 1, PUBCOMP for
    /// QoS 2); a persistent session's copy is deleted too.
    fn remove_outbound(&mut self, state: &mut SessionState, packet_id: PacketId, released: bool) {
        if let Some(pos) = state.outbound.iter().position(|o| o.packet_id == packet_id) {
            let expected_qos = if released { QoS::ExactlyOnce } else { QoS::AtLeastOnce };
            let outbound = &state.outbound[pos];
            if outbound.delivery.qos == expected_qos && outbound.released == released {
                self.forget_outbound_at(state, pos);
            }
        }
    }

    /// Removes the in-flight message at `pos` (done with), and its stored copy.
    fn forget_outbound_at(&mut self, state: &mut SessionState, pos: usize) {
        let Some(outbound) = state.remove_outbound_at(pos) else { return };
        if outbound.unsent {
            // Acknowledged before it was sent again (the client had it from before).
            self.pending_resends -= 1;
        }
        if let Some(seq) = outbound.delivery.seq {
            self.broker.durable.record(StateChange::Delivered { seq });
        }
    }
}

/// The subscription identifier of a SUBSCRIBE; 0, or more than one, is a protocol error
/// (§3.8.2.1.2).
fn subscription_identifier(properties: &Properties) -> Result<Option<NonZeroU32>, End> {
    let mut ids = properties.0.iter().filter_map(|p| match p {
        Property::SubscriptionIdentifier(id) => Some(*id),
        _ => None,
    });
    let (first, second) = (ids.next(), ids.next());
    if second.is_some() {
        return Err(End::protocol("more than one subscription identifier (§3.8.2.1.2)"));
    }
    first.map(|id| NonZeroU32::new(id).ok_or_else(|| End::protocol("subscription identifier 0 (§3.8.2.1.2)"))).transpose()
}

/// Whether the publisher said the payload is UTF-8 text (payload format indicator 1).
fn declares_utf8(message: &Message) -> bool {
    message.properties.as_deref().is_some_and(|p| p.forwarded.0.contains(&Property::PayloadFormatIndicator(1)))
}

fn content_hash(message: &Message) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message.topic.as_str().hash(&mut hasher);
    message.payload.hash(&mut hasher);
    hasher.finish()
}
